"""The budget head's PPO on Stable-Baselines3: :class:`~rlprune.train.kinds.budget_head.BudgetEnv`
copies sharing one set of Lagrange multipliers, in this process (``SB3_KINDS["budget"]``)."""

from __future__ import annotations

from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from rlprune.policies.budget_head import BudgetHead
from rlprune.progress import Progress
from rlprune.train.kinds.budget_head import BudgetEnv, Duals, Outcomes, export_head
from rlprune.train.recipe import BudgetHeadConfig


def learn_budget(config: BudgetHeadConfig, train: Outcomes, show_progress: bool = True) -> tuple[BudgetHead, Duals]:
    """PPO with Stable-Baselines3 on :class:`BudgetEnv` copies sharing one set of multipliers."""
    duals = Duals(config.targets, config.dual_rate, config.initial_price)
    envs = DummyVecEnv(
        [
            lambda i=i: BudgetEnv(train, config.targets, duals, config.seed + i, config.reward, config.thrift)
            for i in range(config.n_envs)
        ]
    )
    model = PPO(
        "MlpPolicy",
        envs,
        n_steps=config.n_steps,
        batch_size=config.n_steps,
        n_epochs=5,
        learning_rate=config.learning_rate,
        gamma=0.0,  # one step per episode
        ent_coef=config.entropy,
        policy_kwargs={"net_arch": {"pi": list(config.hidden), "vf": list(config.hidden)}, "activation_fn": nn.Tanh},
        seed=config.seed,
        device="cpu",
    )

    class Advance(BaseCallback):
        def _on_step(self) -> bool:
            progress.update(bar, completed=self.num_timesteps)
            return True

    with Progress(disable=not show_progress) as progress:
        bar = progress.add_task("PPO on the budget (sb3)", total=config.timesteps)
        model.learn(config.timesteps, callback=Advance())
    head = BudgetHead(config.grid, config.hidden)
    actor = model.policy.mlp_extractor.policy_net
    linears = [module for module in actor if isinstance(module, nn.Linear)]
    for mine, theirs in zip([m for m in head.trunk if isinstance(m, nn.Linear)], linears, strict=True):
        mine.load_state_dict(theirs.state_dict())
    head.logits.load_state_dict(model.policy.action_net.state_dict())
    return export_head(head, train, config.targets), duals

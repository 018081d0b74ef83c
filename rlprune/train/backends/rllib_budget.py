"""PPO for the budget head on Ray env runners (RLlib's new API stack): ``RLLIB_KINDS["budget"]``.

The RLModule holds the same :class:`~rlprune.policies.budget_head.BudgetHead` as ``self.budget``
(its weights export as they are) and a value network beside it. Each env runner builds
:class:`~rlprune.train.kinds.budget_head.BudgetEnv` from the outcome table sent in its config (a few
hundred rows of numbers) and keeps its own Lagrange multipliers; the driver reports the mean of
the runners' prices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ray.rllib.algorithms.ppo import PPOConfig as RLlibPPOConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.tune.registry import register_env
from torch import nn

from rlprune.policies.budget_head import BUDGET_FEATURES, BudgetHead
from rlprune.progress import Progress
from rlprune.train.kinds.budget_head import BudgetEnv, Duals, export_head

if TYPE_CHECKING:
    from rlprune.train.kinds.budget_head import Outcomes
    from rlprune.train.recipe import BudgetHeadConfig

ENV_NAME = "rlprune-budget"
RUNNERS = 2


class BudgetRLModule(TorchRLModule, ValueFunctionAPI):
    """A :class:`BudgetHead` (logits over its grid) and a tanh value network of the same widths."""

    def setup(self) -> None:
        grid, hidden = self.model_config["grid"], self.model_config["hidden"]
        self.budget = BudgetHead(grid, hidden)
        widths = (len(BUDGET_FEATURES), *hidden)
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:], strict=False):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.value = nn.Sequential(*layers, nn.Linear(widths[-1], 1))
        self.action_dist_cls = TorchCategorical

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.budget(batch[Columns.OBS])}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        return self.value(batch[Columns.OBS].float()).squeeze(-1)


def _runner_prices(runner: Any) -> list[dict[float, float]]:
    """The multipliers of every :class:`BudgetEnv` in one env runner's vector env."""
    return [env.unwrapped.duals.prices for env in getattr(runner.env.unwrapped, "envs", [])]


def learn_budget(config: BudgetHeadConfig, train: Outcomes, show_progress: bool = True) -> tuple[BudgetHead, Duals]:
    """PPO with RLlib on :data:`RUNNERS` env runners; the learned head and the runners' mean prices."""
    from rlprune.train.backends.rllib import init_ray  # that module's kind table holds this function

    started, cpus = init_ray(None, RUNNERS)
    env_config = {
        "outcomes": train.to_lists(),
        "targets": list(config.targets),
        "dual_rate": config.dual_rate,
        "initial_price": config.initial_price,
        "seed": config.seed,
        "reward": config.reward,
        "thrift": config.thrift,
    }
    register_env(ENV_NAME, BudgetEnv.from_config)
    algorithm = (
        RLlibPPOConfig()
        .environment(ENV_NAME, env_config=env_config, disable_env_checking=True)
        .env_runners(
            num_env_runners=RUNNERS,
            num_envs_per_env_runner=config.n_envs // RUNNERS or 1,
            num_cpus_per_env_runner=cpus,
            rollout_fragment_length=config.n_steps,
        )
        .training(
            lr=config.learning_rate,
            train_batch_size_per_learner=config.n_steps * max(config.n_envs, RUNNERS),
            minibatch_size=config.n_steps,
            num_epochs=5,
            gamma=0.0,  # one step per episode
            entropy_coeff=config.entropy,
            use_kl_loss=False,
            vf_clip_param=float("inf"),
        )
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=BudgetRLModule, model_config={"grid": list(config.grid), "hidden": list(config.hidden)}
            )
        )
        .learners(num_learners=0)
        .debugging(seed=config.seed, log_level="ERROR")
        .build_algo()
    )
    try:
        steps = 0
        with Progress(disable=not show_progress) as progress:
            bar = progress.add_task("PPO on the budget (ray)", total=config.timesteps)
            while steps < config.timesteps:
                result = algorithm.train()
                steps += int(result.get("env_runners", {}).get("num_env_steps_sampled", 0))
                progress.update(bar, completed=min(steps, config.timesteps))
        weights = algorithm.learner_group.get_weights()[DEFAULT_MODULE_ID]
        head = BudgetHead(config.grid, config.hidden)
        state = {
            k[len("budget.") :]: torch.as_tensor(np.asarray(v)) for k, v in weights.items() if k.startswith("budget.")
        }
        head.load_state_dict(head.state_dict() | state)  # the normalisation buffers are set below
        prices = algorithm.env_runner_group.foreach_env_runner(_runner_prices, local_env_runner=False)
    finally:
        algorithm.stop()
        if started:
            import ray

            ray.shutdown()
    duals = Duals(config.targets, config.dual_rate, config.initial_price)
    runner_prices = [p for runner in prices for p in runner if p]
    for target in duals.prices:
        duals.prices[target] = float(np.mean([p[target] for p in runner_prices])) if runner_prices else float("nan")
    return export_head(head, train, config.targets), duals

"""PPO on Ray env runners (RLlib) with the tiny model: a run survives a killed runner, exports
exactly the RLModule's policy, and resumes; token-level policies train and export exactly too."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from ray.rllib.core import DEFAULT_MODULE_ID  # noqa: E402
from ray.rllib.core.columns import Columns  # noqa: E402

from rlprune import load_model, load_policy  # noqa: E402
from rlprune.envs import EnvConfig, TokenLevelEnv, TokenReductionEnv  # noqa: E402
from rlprune.policies import TokenReductionPolicy  # noqa: E402
from rlprune.train.backends.rllib import MaskedObservation, ReductionRLModule, TokenRLModule, module_spec  # noqa: E402
from rlprune.train.recipe import Recipe  # noqa: E402
from rlprune.train.trainer import TrainOptions, train  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("refs"))


@pytest.fixture(scope="module")
def killed_run(local_ray, cache_dir, tmp_path_factory):
    """A 2-runner run in which one env runner is killed after the first iteration."""
    run = tmp_path_factory.mktemp("ray") / "run"
    seen: dict = {"killed": None, "restored": []}

    def on_iteration(algo, result):
        if seen["killed"] is None:
            pids = algo.env_runner_group.foreach_env_runner(lambda runner: os.getpid(), local_env_runner=False)
            os.kill(pids[0], signal.SIGKILL)
            seen["killed"] = pids[0]
        elif not seen["restored"]:  # the kill has been noticed: wait until Ray has brought the runner back
            deadline = time.time() + 240
            while not seen["restored"] and time.time() < deadline:
                seen["restored"] = algo.restore_env_runners(algo.env_runner_group)
                time.sleep(1)
        seen["weights"] = {k: np.array(v) for k, v in algo.learner_group.get_weights()[DEFAULT_MODULE_ID].items()}

    summary = train(
        TrainOptions(
            env="smoke",
            recipe="smoke",
            out=run,
            timesteps=768,
            workers=2,
            cache_dir=cache_dir,
            quiet=True,
            on_iteration=on_iteration,
            backend="ray",
        )
    )
    return run, summary, seen


def test_a_run_with_a_killed_env_runner_finishes_and_exports(killed_run):
    run, summary, seen = killed_run
    assert seen["killed"] is not None
    assert summary["timesteps"] >= 768 and summary["backend"] == "ray" and summary["env_runners"] == 2
    assert seen["restored"] and summary["env_runner_restarts"] >= 1  # the runner came back and sampled again
    policy = load_policy(run / "policy")
    assert policy.layers == (1, 2, 3)
    saved = json.loads((run / "summary.json").read_text())
    assert saved["final_validation"]["per_budget"] and (run / "tensorboard").is_dir()
    assert (run / "last" / "trainer.safetensors").is_file()


def test_the_exported_policy_acts_like_the_rlmodule(killed_run, cache_dir):
    run, _, seen = killed_run
    env = MaskedObservation(TokenReductionEnv("smoke", cache_dir=cache_dir))
    spec = module_spec(EnvConfig.load("smoke"), Recipe.load("smoke"))
    module = ReductionRLModule(
        observation_space=env.observation_space, action_space=env.action_space, model_config=spec.model_config
    )
    module.set_state({k: torch.as_tensor(v) for k, v in seen["weights"].items()})
    exported = load_policy(run / "last")  # the checkpoint taken after the last iteration
    rng = np.random.default_rng(0)
    observations = rng.uniform(-1.5, 1.5, (64, 18)).astype(np.float32)
    masks = np.ones((64, 13), dtype=np.float32)
    masks[:32, 1:3] = 0.0  # half of them may only keep
    out = module.forward_inference(
        {Columns.OBS: {"observations": torch.as_tensor(observations), "action_mask": torch.as_tensor(masks)}}
    )
    logits = out[Columns.ACTION_DIST_INPUTS]
    rllib_actions = torch.stack([part.argmax(-1) for part in logits.split(list(exported.nvec), -1)], -1).numpy()
    ours = np.stack([exported.predict(o, m.astype(bool)) for o, m in zip(observations, masks, strict=True)])
    np.testing.assert_array_equal(rllib_actions, ours)
    assert (ours[:32, 0] == 0).all()


def test_a_ray_run_resumes_its_step_count(killed_run, cache_dir):
    run, summary, _ = killed_run
    resumed = train(
        TrainOptions(
            env="smoke",
            recipe="smoke",
            out=run,
            timesteps=summary["timesteps"] + 128,
            workers=2,
            resume=True,
            cache_dir=cache_dir,
            quiet=True,
            backend="ray",
        )
    )
    assert resumed["resumed_from"] == summary["timesteps"]
    assert resumed["timesteps"] >= summary["timesteps"] + 128


# -- token-level policies ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_env(cache_dir):
    model, tokenizer = load_model("tiny-random")
    return TokenLevelEnv(TokenReductionEnv("smoke", model=model, tokenizer=tokenizer, cache_dir=cache_dir))


def token_module(env: TokenLevelEnv, weights: dict) -> TokenRLModule:
    """The token RLModule the ``token-smoke`` recipe trains, holding ``weights``."""
    spec = module_spec(EnvConfig.load("smoke"), Recipe.load("token-smoke"))
    module = TokenRLModule(
        observation_space=env.observation_space, action_space=env.action_space, model_config=spec.model_config
    )
    module.set_state({k: torch.as_tensor(v) for k, v in weights.items()})
    return module


def module_action(module: TokenRLModule, obs: dict, *, explore: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What an env runner does with the module's output: an action and its log-probability."""
    batch = {Columns.OBS: {k: torch.as_tensor(v)[None] for k, v in obs.items()}}
    with torch.no_grad():
        out = module.forward_exploration(batch) if explore else module.forward_inference(batch)
        dist = module.get_exploration_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
        dist = dist if explore else dist.to_deterministic()
        action = dist.sample()
        return action, dist.logp(action)


def test_the_token_distribution_is_the_sb3_backends(token_env):
    """Same weights, same observation: RLlib's and SB3's token-level PPO give an action the same
    log-probability and the same entropy bonus's op and share parts (one distribution for both)."""
    from stable_baselines3.common.utils import obs_as_tensor

    from rlprune.train.backends.sb3_tokens import SB3TokenPolicy

    sb3 = SB3TokenPolicy(
        token_env.observation_space,
        token_env.action_space,
        lambda _: 1e-3,
        hidden=(32, 32),
        token_hidden=(16, 16),
        decision_layers=(1, 2, 3),
    )
    weights = {f"reduction.{k}": v for k, v in sb3.reduction.state_dict().items()}
    module = token_module(token_env, weights)
    obs, _ = token_env.reset(seed=0, options={"budget": 0.4})
    torch.manual_seed(0)
    action, logp = module_action(module, obs, explore=True)
    batch = {k: v[None] for k, v in obs_as_tensor(obs, "cpu").items()}
    with torch.no_grad():
        _, sb3_logp, _ = sb3.evaluate_actions(batch, action)
    torch.testing.assert_close(logp, sb3_logp)
    assert torch.isfinite(logp).all() and (logp <= 0).all()


@pytest.fixture(scope="module")
def token_run(local_ray, cache_dir, tmp_path_factory):
    """The ``token-smoke`` recipe on one env runner; the learner's weights after its last iteration."""
    run = tmp_path_factory.mktemp("raytok") / "run"
    seen: dict = {}

    def on_iteration(algo, result):
        seen["weights"] = {k: np.array(v) for k, v in algo.learner_group.get_weights()[DEFAULT_MODULE_ID].items()}

    summary = train(
        TrainOptions(
            env="smoke",
            recipe="token-smoke",
            out=run,
            cache_dir=cache_dir,
            quiet=True,
            on_iteration=on_iteration,
            backend="ray",
        )
    )
    return run, summary, seen


def test_a_token_level_ray_run_trains_and_exports(token_run):
    run, summary, _ = token_run
    assert summary["backend"] == "ray" and summary["timesteps"] == Recipe.load("token-smoke").run.timesteps
    assert summary["warm_start"]["token_samples"] > 0  # the teacher fitted the token head first
    assert isinstance(load_policy(run / "policy"), TokenReductionPolicy)
    assert (run / "last" / "trainer.safetensors").is_file()


def test_the_exported_token_policy_acts_like_the_learner(token_run, token_env):
    """Deterministic actions of the learner's RLModule, decoded by the environment, equal the
    exported checkpoint's actions on the same features, layer by layer."""
    run, _, seen = token_run
    module, exported = token_module(token_env, seen["weights"]), load_policy(run / "last")
    acted = 0
    for seed in range(4):
        obs, _ = token_env.reset(seed=seed, options={"budget": 0.4})
        done = False
        while not done:
            action, _ = module_action(module, obs, explore=False)
            trained = token_env.decode(action[0].numpy())
            ours = exported.act(token_env.features(), token_env.base.budget)
            assert (trained.op, trained.ratio) == (ours.op, ours.ratio)
            if not ours.is_noop:
                acted += 1
                torch.testing.assert_close(trained.token_scores, ours.token_scores)
            obs, _, done, _, _ = token_env.step(action[0].numpy())
    assert acted  # the comparison covered the token head, not only "keep"


def test_budget_head_trains_on_env_runners(local_ray):
    """The budget head learns the synthetic table's split on RLlib as on SB3: the head it returns holds
    the learner's weights, so it gives the hard prompts more than the easy ones and keeps their answers."""
    from test_budget_head import _synthetic

    from rlprune.train.backends.rllib import RLLIB_KINDS
    from rlprune.train.kinds.budget_head import choices, measure
    from rlprune.train.kinds.budget_train import budget_kind
    from rlprune.train.recipe import BudgetHeadConfig

    table = _synthetic()
    config = BudgetHeadConfig(grid=(0.2, 0.4, 0.6, 0.8, 1.0), targets=(0.5,), hidden=(16,), timesteps=4096,
                              n_envs=4, n_steps=128, learning_rate=3e-3, entropy=0.0)  # fmt: skip
    assert budget_kind("ray") is RLLIB_KINDS["budget"]
    head, duals = RLLIB_KINDS["budget"].learn(config, table, show_progress=False)
    report = measure(head, table, (0.5,))["0.5"]
    assert report["fixed_kept"] < 0.6 and report["adaptive_kept"] > 0.9, report
    picked = table.ratios[torch.arange(len(table)), choices(head, table, 0.5)]
    hard = table.features[:, 1] > 0.5
    assert picked[hard].mean() >= picked[~hard].mean() + 0.2
    assert duals.price(0.5) >= 0.0

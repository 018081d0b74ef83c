"""PPO on Ray env runners (RLlib) with the tiny model: a run survives a killed runner, exports
exactly the RLModule's policy, and resumes."""

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

from rlprune import load_policy  # noqa: E402
from rlprune.envs import EnvConfig, TokenReductionEnv  # noqa: E402
from rlprune.train.recipe import Recipe  # noqa: E402
from rlprune.train.rllib import MaskedObservation, ReductionRLModule, module_spec, train  # noqa: E402


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
        "smoke", "smoke", run, timesteps=768, workers=2, cache_dir=cache_dir, quiet=True, on_iteration=on_iteration
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
        "smoke",
        "smoke",
        run,
        timesteps=summary["timesteps"] + 128,
        workers=2,
        resume=True,
        cache_dir=cache_dir,
        quiet=True,
    )
    assert resumed["resumed_from"] == summary["timesteps"]
    assert resumed["timesteps"] >= summary["timesteps"] + 128

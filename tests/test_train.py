"""PPO training on the tiny model: a run exports a working policy, and a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from rlprune import Reducer, load_model, load_policy
from rlprune.engine.features import OBSERVATION_SIZE
from rlprune.errors import RLPruneError
from rlprune.train.recipe import Recipe
from rlprune.train.trainer import TrainOptions, train


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("refs"))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cache_dir):
    run = tmp_path_factory.mktemp("runs") / "smoke"
    summary = train(TrainOptions(env="smoke", recipe="smoke", out=run, cache_dir=cache_dir, quiet=True))
    return run, summary


def test_a_smoke_run_exports_a_policy_that_loads_and_runs(smoke_run):
    run, summary = smoke_run
    assert summary["timesteps"] == Recipe.load("smoke").run.timesteps
    assert {"last", "best", "policy", "summary.json", "run.json", "tensorboard"} <= {p.name for p in run.iterdir()}
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    model, tokenizer = load_model("tiny-random")
    policy = load_policy(run / "policy", model)
    for checkpoint in ("best", "last"):  # training's own checkpoints name the model too, so they load onto it
        load_policy(run / checkpoint, model)
    config = json.loads((run / "policy" / "config.json").read_text())
    assert config["model"]["architecture"] == "llama" and config["training"]["run"]["timesteps"] == 256
    reducer = Reducer(model)
    ids = tokenizer("the boat is in the town " * 8, return_tensors="pt").input_ids
    out = reducer.run(ids, policy=policy, budget=0.5)
    assert out.logits.shape[-1] == model.config.vocab_size


def test_the_export_acts_like_the_trained_sb3_policy(smoke_run, cache_dir, tmp_path):
    from sb3_contrib import MaskablePPO

    from rlprune.train.backends.sb3 import SB3ReductionPolicy, load_sb3_checkpoint

    run, _ = smoke_run
    from rlprune.envs import TokenReductionEnv

    env = TokenReductionEnv("smoke", cache_dir=cache_dir)
    model = MaskablePPO(
        SB3ReductionPolicy,
        env,
        n_steps=64,
        batch_size=32,
        policy_kwargs={"hidden": (32, 32), "decision_layers": (1, 2, 3)},
        device="cpu",
    )
    load_sb3_checkpoint(model, run / "last")
    exported = load_policy(run / "last")
    observations = np.random.default_rng(0).uniform(-1.5, 1.5, (100, OBSERVATION_SIZE)).astype(np.float32)
    sb3_actions, _ = model.predict(observations, deterministic=True)
    ours = np.stack([exported.predict(o) for o in observations])
    np.testing.assert_array_equal(sb3_actions, ours)
    logits_sb3 = model.policy.action_net(model.policy.mlp_extractor.forward_actor(torch.as_tensor(observations)))
    torch.testing.assert_close(logits_sb3, exported(torch.as_tensor(observations))[0])


def test_resume_continues_the_timestep_count(tmp_path, cache_dir):
    run = tmp_path / "run"
    first = train(TrainOptions(env="smoke", recipe="smoke", out=run, timesteps=128, cache_dir=cache_dir, quiet=True))
    assert first["timesteps"] == 128
    second = train(
        TrainOptions(env="smoke", recipe="smoke", out=run, timesteps=256, resume=True, cache_dir=cache_dir, quiet=True)
    )
    assert second["resumed_from"] == 128 and second["timesteps"] == 256
    with pytest.raises(RLPruneError, match="--resume"):
        train(TrainOptions(env="smoke", recipe="smoke", out=run, cache_dir=cache_dir, quiet=True))
    with pytest.raises(RLPruneError, match="nothing to resume"):
        train(
            TrainOptions(
                env="smoke", recipe="smoke", out=tmp_path / "empty", resume=True, cache_dir=cache_dir, quiet=True
            )
        )


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, cache_dir, sig):
    run = tmp_path / "run"
    script = (
        "from rlprune.train.trainer import TrainOptions, train\n"
        f"train(TrainOptions(env='smoke', recipe='smoke', out={str(run)!r}, timesteps=1_000_000, "
        f"cache_dir={cache_dir!r}, quiet=True))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    state = run / "last" / "state.json"
    deadline = time.time() + 300  # generous: a busy CI machine is slow, a healthy run needs seconds
    while time.time() < deadline:
        if state.is_file() and json.loads(state.read_text())["timesteps"] >= 256:
            break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("the run wrote no checkpoint in time")
    process.send_signal(sig)
    process.wait(timeout=60)
    saved = json.loads(state.read_text())["timesteps"]
    resumed = train(
        TrainOptions(
            env="smoke", recipe="smoke", out=run, timesteps=saved + 128, resume=True, cache_dir=cache_dir, quiet=True
        )
    )
    assert resumed["resumed_from"] == saved
    assert resumed["timesteps"] == saved + 128
    assert (run / "policy" / "policy.safetensors").is_file()


def test_behaviour_cloning_warm_start_imitates_the_baseline(cache_dir):
    import dataclasses

    from rlprune.envs import TokenReductionEnv
    from rlprune.policies import ReductionPolicy
    from rlprune.train.kinds.warm_start import behaviour_clone
    from rlprune.train.recipe import WarmStart

    recipe = dataclasses.replace(
        Recipe.load("smoke"), warm_start=WarmStart("static:1:prune:0.5:relevance", episodes=30, epochs=30)
    )
    env = TokenReductionEnv("smoke", cache_dir=cache_dir, budget=0.6)
    policy = ReductionPolicy(decision_layers=(1, 2, 3))
    result = behaviour_clone(policy, env, recipe)
    assert result["samples"] == 90 and result["op_accuracy"] > 0.9
    obs, _ = env.reset(seed=123)
    action = policy.act(env.features(), env.budget)
    assert action.op == "prune" and action.scorer == "relevance"


def token_actions_case(seed: int = 0):
    """A batch of two token-level decisions: 3 ops (keep masked in neither), 2 shares, 4 tokens."""
    from rlprune.train.kinds.token_actions import TokenActions

    generator = torch.Generator().manual_seed(seed)
    op_logits = torch.randn(2, 3, generator=generator, requires_grad=True)
    share_logits = torch.randn(2, 2, generator=generator)
    counts = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]).expand(2, 3, 2)  # every acting choice removes one
    removable = torch.tensor([[True, True, True, False], [False, True, True, True]])
    scores = torch.randn(2, 4, generator=generator)
    return TokenActions(op_logits, share_logits, counts, removable, scores, keep=0)


def test_the_token_entropy_bonus_is_exact_for_one_draw_and_never_rewards_acting():
    """With one token removed per acting choice the removal order's entropy is the first draw's, so
    the bonus is H(op) + P(act) (H(share) + H(draw)); its gradient on the op logits is H(op)'s alone."""
    from torch.distributions import Categorical

    actions = token_actions_case()
    entropy = actions.entropy()
    ops, shares = Categorical(logits=actions.op_logits), Categorical(logits=actions.share_logits)
    draw = Categorical(logits=(-actions.scores).masked_fill(~actions.removable, -float("inf"))).entropy()
    acting = 1 - ops.probs[:, 0]
    torch.testing.assert_close(entropy, ops.entropy() + acting * (shares.entropy() + draw))
    (gradient,) = torch.autograd.grad(entropy.sum(), actions.op_logits)
    (expected,) = torch.autograd.grad(Categorical(logits=actions.op_logits).entropy().sum(), actions.op_logits)
    torch.testing.assert_close(gradient, expected)


def test_token_actions_survive_packing_and_act_deterministically_on_the_most_likely_choices():
    from rlprune.train.kinds.token_actions import TokenActions

    actions = token_actions_case(1)
    unpacked = TokenActions.unpack(actions.pack(), ops=3, shares=2)
    sampled = actions.sample()
    torch.testing.assert_close(unpacked.log_prob(sampled), actions.log_prob(sampled))
    best = actions.sample(deterministic=True)
    assert torch.equal(best[:, 0], actions.op_logits.argmax(-1).float())
    assert torch.equal(best[:, 1], actions.share_logits.argmax(-1).float()) and torch.equal(best[:, 2:], actions.scores)
    torch.manual_seed(0)
    packed_entropy = unpacked.entropy()
    torch.manual_seed(0)
    torch.testing.assert_close(packed_entropy, actions.entropy())


def _budget_recipe(folder, model_dir, span) -> str:
    """A budget-head recipe for the tiny model and a span head saved for it: a few prompts, a few PPO steps."""
    path = folder / "budget-tiny.toml"
    path.write_text(
        f"""policy = "budget"
[budget_head]
model = "{model_dir}"
span_policy = "{span}"
grid = [0.6, 0.8, 1.0]
targets = [0.8]
hidden = [4]
long_kinds = []
short_items = 4
short_tokens = [40, 80]
validation_items = 2
timesteps = 64
n_envs = 1
n_steps = 32
"""
    )
    return str(path)


def test_rlprune_train_dispatches_a_budget_recipe_and_refuses_what_does_not_apply(tmp_path, tiny_model_dir):
    """`rlprune train --recipe` trains a budget head through the same entry as every kind; the span head
    comes back with it in one checkpoint of kind span."""
    from conftest import tiny_model
    from hostile.test_inputs_and_faults import assert_clean_error, invoke

    from rlprune.policies import SpanHeadPolicy, save_policy

    model = tiny_model("llama")
    span = save_policy(
        SpanHeadPolicy(64, decision_layer=1, rank=4, channels=2, kernel=3), tmp_path / "span", model=model
    )
    recipe = _budget_recipe(tmp_path, tiny_model_dir, span)
    result = invoke("train", "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "policy" / "config.json").read_text())
    assert config["kind"] == "span" and config["network"]["budget_grid"] == [0.6, 0.8, 1.0]
    assert load_policy(tmp_path / "run" / "policy", model).budget_head.grid == (0.6, 0.8, 1.0)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["policy_kind"] == "budget" and summary["config"]["backend"] == "sb3"
    unused = invoke("train", "--recipe", recipe, "--env", "smoke", "--workers", 2, "--out", tmp_path / "other")
    assert_clean_error(unused, "--env, --workers do not apply to a budget-head recipe")
    assert not (tmp_path / "other").exists()


def test_every_kind_is_trainable_or_refused_up_front(tmp_path):
    """Each recipe kind names a trainer that imports; a backend a kind cannot use is refused with its reason
    before any work, as is an unknown kind or backend."""
    from rlprune.config import ConfigError
    from rlprune.errors import InvalidActionError
    from rlprune.policies.kinds import TRAINERS
    from rlprune.train.recipe import Recipe
    from rlprune.train.trainer import trainer_for

    assert all(callable(trainer_for(kind)) for kind in TRAINERS)
    with pytest.raises(InvalidActionError, match="unknown backend 'tf'; use one of sb3, ray"):
        train(TrainOptions(recipe="smoke", backend="tf", out=tmp_path / "tf"))
    with pytest.raises(InvalidActionError, match="--address needs --backend ray"):
        train(TrainOptions(env="smoke", recipe="smoke", address="auto", out=tmp_path / "a"))
    bad = tmp_path / "bad.toml"
    bad.write_text('policy = "mlp"\n')
    with pytest.raises(ConfigError, match="policy = 'mlp' is unknown; use one of layer, token, span, budget"):
        train(TrainOptions(recipe=bad, out=tmp_path / "bad"))
    with pytest.raises(InvalidActionError, match="--workers do not apply to a span-head recipe"):
        train(TrainOptions(recipe=Recipe(policy="span"), workers=2, out=tmp_path / "w"))
    assert not any((tmp_path / name).exists() for name in ("span", "tf", "a", "bad", "w"))


@pytest.mark.parametrize(("recipe", "kind"), [("smoke", "layer"), ("token-smoke", "token")])
def test_rlprune_train_dispatches_layer_and_token_recipes(tmp_path, recipe, kind):
    from hostile.test_inputs_and_faults import invoke

    out = tmp_path / "run"
    result = invoke("train", "--env", "smoke", "--recipe", recipe, "--out", out, "--timesteps", 64)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["policy_kind"] == kind
    assert json.loads((out / "policy" / "config.json").read_text())["kind"] == kind

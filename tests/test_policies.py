"""Policies: the learned network, baselines at matched budgets, and safe checkpoints."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import random_ids, tiny_model

from rlprune import LayerAction, Reducer, load_model
from rlprune.engine.features import OBSERVATION_SIZE, ActionSpec, Features
from rlprune.policies import (
    BASELINES,
    BaselineError,
    PolicyError,
    ReductionPolicy,
    load_policy,
    make_baseline,
    resolve_policy,
    save_policy,
)


def random_observations(count: int = 100, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.5, 1.5, size=(count, OBSERVATION_SIZE)).astype(np.float32)


def trained_like(seed: int = 0) -> ReductionPolicy:
    """A policy with random weights everywhere, so its actions vary with the observation; it decides
    at layers the 4-layer tiny models have."""
    policy = ReductionPolicy(decision_layers=(1, 2, 3))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return policy


def test_network_is_small_and_starts_by_keeping_everything():
    policy = ReductionPolicy()
    assert policy.num_parameters() <= 100_000
    for observation in random_observations():
        assert policy.predict(observation)[0] == ActionSpec().ops.index("keep")


def test_save_then_load_gives_identical_actions(tmp_path):
    policy = trained_like()
    model, _ = load_model("tiny-random")
    save_policy(policy, tmp_path / "policy", model=model, reward_preset="smoke", training={"timesteps": 0})
    loaded = load_policy(tmp_path / "policy", model)
    observations = random_observations()
    actions = [policy.predict(o) for o in observations]
    assert len({tuple(a) for a in actions}) > 3  # the check is not trivial
    for observation, action in zip(observations, actions, strict=True):
        np.testing.assert_array_equal(loaded.predict(observation), action)
    obs = torch.as_tensor(observations)
    torch.testing.assert_close(loaded(obs), policy(obs), rtol=0, atol=0)
    config = json.loads((tmp_path / "policy" / "config.json").read_text())
    assert config["reward_preset"] == "smoke" and config["model"]["layers"] == 4 and config["created"]


def test_loading_reads_only_safetensors_and_json(tmp_path, monkeypatch):
    save_policy(trained_like(), tmp_path / "p")

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint load tried to unpickle")

    for target, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(target, name, forbidden)
    load_policy(tmp_path / "p")
    assert {p.suffix for p in (tmp_path / "p").iterdir()} == {".json", ".safetensors"}


def test_a_policy_for_another_model_is_refused(tmp_path):
    model, _ = load_model("tiny-random")
    save_policy(trained_like(), tmp_path / "p", model=model)
    other = tiny_model("llama", vocab_size=259)
    with pytest.raises(PolicyError, match="trained for another model"):
        load_policy(tmp_path / "p", other)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "policy.safetensors").write_bytes((d / "policy.safetensors").read_bytes()[:100]), "truncated"),
        (lambda d: (d / "policy.safetensors").unlink(), "missing"),
        (lambda d: (d / "config.json").unlink(), "missing"),
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: _edit(d, format_version=99), "format version 99"),
        (lambda d: _edit(d, spec_version=0), "spec 0"),
        (lambda d: _edit(d, network={"observation_size": 5, "hidden": [64, 64], "nvec": [3, 6, 4]}), "does not match"),
        (lambda d: _edit(d, format="something-else"), "not an rlprune policy"),
    ],
)
def test_broken_checkpoints_fail_clearly(tmp_path, damage, message):
    folder = save_policy(trained_like(), tmp_path / "p")
    damage(folder)
    with pytest.raises(PolicyError, match=message):
        load_policy(folder)


def _edit(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_missing_checkpoint_folder(tmp_path):
    with pytest.raises(PolicyError, match="no policy checkpoint"):
        load_policy(tmp_path / "nothing")


def test_baseline_specs():
    assert str(make_baseline("fastv:layer=3,ratio=0.4")) == "fastv:layer=3,ratio=0.4"
    assert make_baseline("static:2:prune:0.5,3:merge:0.2").schedule(1.0, 4)[3] == LayerAction("merge", 0.2)
    names = {"none", "random", "fastv", "snapkv", "gemfilter", "pyramid", "tome", "static", "best-static"}
    assert set(BASELINES) == names
    for spec, message in [
        ("magic", "unknown baseline"),
        ("fastv:depth=2", "bad parameter"),
        ("fastv:layer=two", "must be an integer"),
        ("snapkv:ratio=1.5", "outside"),
    ]:
        with pytest.raises(BaselineError, match=message):
            make_baseline(spec)
    with pytest.raises(PolicyError, match="neither a policy checkpoint"):
        resolve_policy("not-a-thing")


BUDGET_SPECS = ["random", "fastv", "snapkv", "pyramid", "tome", "static:2:prune:0.5,6:merge:0.3"]
BUDGET_SPECS += ["gemfilter:layer=2", "gemfilter:layer=4,pool=9"]


@pytest.mark.parametrize("spec", BUDGET_SPECS)
@pytest.mark.parametrize("budget", [0.4, 0.6, 0.8])
def test_baselines_meet_the_budget_they_are_asked_for(spec, budget):
    model = tiny_model("llama", layers=12, max_position_embeddings=1024)
    reducer = Reducer(model)
    baseline = make_baseline(spec)
    out = reducer.run(random_ids(512, seed=40), policy=baseline, budget=budget)
    assert out.flops_ratio == pytest.approx(budget, abs=0.03)


def test_baselines_without_a_budget_use_their_own_ratio(llama):
    reducer = Reducer(llama)
    out = reducer.run(
        random_ids(90),
        policy=make_baseline("fastv:layer=2,ratio=0.5"),
        budget=None,
        protect_last=8,
    )
    assert out.tokens_per_layer == [90, 90, 90 - round(0.5 * 81), 90 - round(0.5 * 81)]


def test_ratio_after_predicts_what_the_reducer_does(llama):
    reducer = Reducer(llama)
    schedule = {1: LayerAction("prune", 0.3, "attention"), 2: LayerAction("merge", 0.5, "similarity")}
    state = reducer.start(random_ids(70), decision_layers=[1, 2])
    predicted = Features(reducer, state, 1.0).ratio_after(schedule)
    assert reducer.run(random_ids(70), schedule).flops_ratio == pytest.approx(predicted, rel=1e-9)


def test_learned_policy_acts_through_the_reducer(llama):
    reducer = Reducer(llama)
    policy = trained_like(seed=3)
    policy.layers = (1, 2)
    out = reducer.run(random_ids(60), policy=policy, budget=0.5)
    assert set(out.state.actions) == {1, 2}
    with pytest.raises(Exception, match="lacks"):
        ReductionPolicy(decision_layers=(9,)).decision_layers(4)

"""The policy-kind registry: every kind saves and loads through it, records its kind, and old or
unknown configs are migrated or refused clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_model

import rlprune
from rlprune.errors import InvalidArgumentError
from rlprune.policies import (
    PolicyError,
    ReductionPolicy,
    SpanHeadPolicy,
    TokenReductionPolicy,
    load_policy,
    save_policy,
)
from rlprune.policies.checkpoint import read_config
from rlprune.policies.kinds import KINDS, TRAINERS, expect_kind, kind_of, migrate

ROOT = Path(__file__).resolve().parents[1]


def _policies() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "layer": ReductionPolicy(decision_layers=(1, 2)),
        "token": TokenReductionPolicy(decision_layers=(1, 2)),
        "span": SpanHeadPolicy(64, decision_layer=2, rank=4, channels=2, kernel=3),
        "span+budget": SpanHeadPolicy(
            64, decision_layer=1, rank=4, channels=2, kernel=3, budget_grid=(0.3, 0.6, 1.0), budget_hidden=(4,)
        ),
    }


@pytest.mark.parametrize("name", list(_policies()))
def test_every_kind_round_trips_with_its_kind_recorded(tmp_path, name):
    policy = _policies()[name]
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    model = tiny_model("llama")
    folder = save_policy(policy, tmp_path / "p", model=model)
    config = json.loads((folder / "config.json").read_text())
    kind = name.split("+")[0]
    assert config["kind"] == kind == kind_of(policy).name
    assert config["spec_version"] == KINDS[kind].spec_version
    loaded = load_policy(folder, model)
    assert type(loaded) is type(policy) and kind_of(loaded) is KINDS[kind]
    state, original = loaded.state_dict(), policy.state_dict()
    assert state.keys() == original.keys()
    for key, tensor in original.items():
        torch.testing.assert_close(state[key], tensor, rtol=0, atol=0)


def test_an_old_layer_checkpoint_without_kind_migrates(tmp_path):
    folder = shutil.copytree(ROOT / "policies" / "smollm2-135m-grounded", tmp_path / "p")
    assert "kind" not in json.loads((folder / "config.json").read_text())  # written before kinds were recorded
    assert read_config(folder)["kind"] == "layer"
    assert type(load_policy(folder)) is ReductionPolicy
    fresh = save_policy(ReductionPolicy(decision_layers=(1, 2)), tmp_path / "q")
    config = json.loads((fresh / "config.json").read_text())
    del config["kind"]
    assert migrate(config, fresh)["kind"] == "layer"
    (fresh / "config.json").write_text(json.dumps(config))
    assert type(load_policy(fresh)) is ReductionPolicy


@pytest.mark.parametrize("kind", ["budget", "Layer", 3, None])
def test_an_unknown_kind_is_refused_clearly(tmp_path, kind):
    folder = save_policy(ReductionPolicy(decision_layers=(1, 2)), tmp_path / "p")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"kind": kind}))
    with pytest.raises(PolicyError, match=rf"holds a policy of kind {kind!r}; this rlprune reads the kinds layer, "):
        load_policy(folder)


def test_a_kind_that_contradicts_its_spec_version_is_refused(tmp_path):
    folder = save_policy(TokenReductionPolicy(decision_layers=(1, 2)), tmp_path / "p")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"kind": "span"}))
    with pytest.raises(PolicyError, match="kind is 'span' but spec_version 3 is a token-level policy"):
        load_policy(folder)


def test_only_learned_policies_have_a_kind():
    baseline = rlprune.make_baseline("fastv")
    with pytest.raises(PolicyError, match="not a learned policy; checkpoints hold the kinds layer, token, span"):
        kind_of(baseline)
    with pytest.raises(PolicyError, match="not a learned policy"):
        save_policy(baseline, "unused")
    head = _policies()["span"]
    assert expect_kind(head, "span", "why") is head
    with pytest.raises(InvalidArgumentError, match="tunes a span head; this is a token-level policy"):
        expect_kind(TokenReductionPolicy(decision_layers=(1,)), "span", "tunes a span head")
    with pytest.raises(InvalidArgumentError, match="this is a FastV"):
        expect_kind(baseline, "span", "tunes a span head")


def test_every_checkpoint_kind_is_trainable_and_the_protocol_is_public():
    assert set(KINDS) <= set(TRAINERS) and "budget" in TRAINERS
    assert {"Policy", "SpanHeadPolicy", "ReductionPolicy", "TokenReductionPolicy"} <= set(rlprune.__all__)
    doc = rlprune.Policy.__doc__
    assert "default_budget" in doc and "propose_budget" in doc

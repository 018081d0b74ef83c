"""Hostile policy checkpoints and adapters: every damaged or hand-edited file is refused clearly.

Each case starts from a valid checkpoint of a tiny policy, breaks one thing, and checks that loading
raises a :class:`PolicyError` naming the problem, builds no network when the config is at fault,
and leaves the files exactly as they were.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model
from safetensors.torch import load_file, save_file

from rlprune.engine.features import OBSERVATION_SIZE, TOKEN_FEATURE_SIZE, ActionSpec
from rlprune.errors import RLPruneError
from rlprune.output.adapter import without_checkpointing_renames
from rlprune.policies import PolicyError, ReductionPolicy, TokenReductionPolicy, load_policy, save_policy
from rlprune.policies import checkpoint as checkpoint_module

ROOT = Path(__file__).resolve().parents[2]
Mutation = Callable[[Path], None]


def randomised(policy: ReductionPolicy, seed: int = 0) -> ReductionPolicy:
    """``policy`` with random weights everywhere, so its outputs vary with the input."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return policy


@pytest.fixture(scope="module")
def sources(tmp_path_factory, llama) -> dict[str, Path]:
    """Valid checkpoints, saved once per module: a layer policy and a token policy for ``llama``."""
    root = tmp_path_factory.mktemp("sources")
    return {
        "layer": save_policy(randomised(ReductionPolicy(decision_layers=(1, 2))), root / "layer", model=llama),
        "token": save_policy(randomised(TokenReductionPolicy(decision_layers=(1, 2))), root / "token", model=llama),
    }


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes (``None`` for a folder), to prove loading changes nothing."""
    return {p.name: (p.read_bytes() if p.is_file() else None) for p in sorted(folder.iterdir())}


# -- mutations ----------------------------------------------------------------------------------


def _read(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _write(folder: Path, config: object) -> None:
    (folder / "config.json").write_text(json.dumps(config))


def top(**changes) -> Mutation:
    return lambda folder: _write(folder, _read(folder) | changes)


def drop(key: str) -> Mutation:
    return lambda folder: _write(folder, {k: v for k, v in _read(folder).items() if k != key})


def section(name: str, **changes) -> Mutation:
    """Set keys of ``network`` or ``action_spec``; a value of ``...`` removes the key."""

    def mutate(folder: Path) -> None:
        config = _read(folder)
        part = config[name] | changes
        config[name] = {k: v for k, v in part.items() if v is not ...}
        _write(folder, config)

    return mutate


def raw(data: bytes, name: str = "config.json") -> Mutation:
    return lambda folder: (folder / name).write_bytes(data)


def remove(name: str) -> Mutation:
    return lambda folder: (folder / name).unlink()


def tensors(change: Callable[[dict[str, torch.Tensor]], None]) -> Mutation:
    def mutate(folder: Path) -> None:
        state = load_file(folder / "policy.safetensors")
        change(state)
        save_file(state, folder / "policy.safetensors")

    return mutate


def poke(name: str, value: float) -> Mutation:
    def change(state: dict[str, torch.Tensor]) -> None:
        state[name] = state[name].clone()
        state[name].view(-1)[0] = value

    return tensors(change)


def other_fingerprint(folder: Path) -> None:
    config = _read(folder)
    config["model"]["vocab_size"] = 999
    _write(folder, config)


def truncate(folder: Path) -> None:
    path = folder / "policy.safetensors"
    path.write_bytes(path.read_bytes()[:200])


def repeat_key(folder: Path) -> None:
    """A second ``action_spec`` after the first: json would silently keep the last."""
    text = (folder / "config.json").read_text().rstrip().removesuffix("}")
    (folder / "config.json").write_text(text + ', "action_spec": {"ops": ["keep"], "shares": [5.0]}}')


def config_folder(folder: Path) -> None:
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()


# (id, source, mutation, message fragment, load with the model, the config is at fault)
LAYER = "layer"
TOKEN = "token"
CASES: list[tuple[str, str, Mutation, str, bool, bool]] = [
    # the model it is for
    ("model-null", LAYER, top(model=None), "does not say which model", True, True),
    ("model-missing", LAYER, drop("model"), "does not say which model", True, True),
    ("model-string", LAYER, top(model="smollm2-135m"), "does not say which model", True, True),
    ("model-string-no-model", LAYER, top(model="smollm2-135m"), "does not say which model", False, True),
    ("model-empty-dict", LAYER, top(model={}), "does not say which model", True, True),
    ("model-other", LAYER, other_fingerprint, "trained for another model", True, True),
    ("token-model-null", TOKEN, top(model=None), "does not say which model", True, True),
    # shares
    ("shares-5", LAYER, section("action_spec", shares=[0.5, 5.0]), "shares[1] is 5.0", True, True),
    ("shares-negative", LAYER, section("action_spec", shares=[-1.0]), "shares[0] is -1.0", True, True),
    ("shares-zero", LAYER, section("action_spec", shares=[0]), "in (0, 1]", True, True),
    ("shares-nan", LAYER, section("action_spec", shares=[math.nan]), "shares[0] is nan", True, True),
    ("shares-inf", LAYER, section("action_spec", shares=[math.inf]), "shares[0] is inf", True, True),
    ("shares-string", LAYER, section("action_spec", shares="abc"), "not a non-empty list", True, True),
    ("shares-string-item", LAYER, section("action_spec", shares=["abc"]), "shares[0] is 'abc'", True, True),
    ("shares-bool", LAYER, section("action_spec", shares=[True]), "shares[0] is True", True, True),
    ("shares-empty", LAYER, section("action_spec", shares=[]), "not a non-empty list", True, True),
    ("shares-repeated", LAYER, section("action_spec", shares=[0.5, 0.5]), "repeats", True, True),
    ("token-shares-5", TOKEN, section("action_spec", shares=[5.0]), "shares[0] is 5.0", True, True),
    # ops and scorers
    ("ops-unknown", LAYER, section("action_spec", ops=["keep", "explode", "merge"]), "'explode'", True, True),
    ("ops-without-keep", LAYER, section("action_spec", ops=["prune", "merge"]), "'keep'", True, True),
    ("ops-empty", LAYER, section("action_spec", ops=[]), "not a non-empty list", True, True),
    ("ops-repeated", LAYER, section("action_spec", ops=["keep", "keep", "merge"]), "repeats", True, True),
    ("scorers-unknown", LAYER, section("action_spec", scorers=["attention", "telepathy"]), "telepathy", True, True),
    ("scorers-learned-in-layer", LAYER, section("action_spec", scorers=["learned"]), "'learned'", True, True),
    ("scorers-not-list", LAYER, section("action_spec", scorers={"a": 1}), "scorers", True, True),
    ("token-scorers", TOKEN, section("action_spec", scorers=["attention"]), "'attention'", True, True),
    ("action-spec-missing", LAYER, drop("action_spec"), "action_spec is None", True, True),
    ("action-spec-list", LAYER, top(action_spec=["keep"]), "action_spec is ['keep']", True, True),
    ("action-spec-extra-key", LAYER, section("action_spec", temperature=2), "unknown key", True, True),
    # network sizes
    ("hidden-huge", LAYER, section("network", hidden=[8000, 8000]), "hidden[0] is 8000", True, True),
    ("hidden-negative", LAYER, section("network", hidden=[-5]), "hidden[0] is -5", True, True),
    ("hidden-empty", LAYER, section("network", hidden=[]), "not a non-empty list", True, True),
    ("hidden-string", LAYER, section("network", hidden="abc"), "not a non-empty list", True, True),
    ("hidden-float", LAYER, section("network", hidden=[1.5]), "hidden[0] is 1.5", True, True),
    ("hidden-bool", LAYER, section("network", hidden=[True]), "hidden[0] is True", True, True),
    ("hidden-deep", LAYER, section("network", hidden=[8] * 1000), "at most 16", True, True),
    ("hidden-too-many-params", LAYER, section("network", hidden=[4096] * 4), "parameters", True, True),
    ("network-missing", LAYER, drop("network"), "network is None", True, True),
    ("network-string", LAYER, top(network="abc"), "network is 'abc'", True, True),
    ("observation-size", LAYER, section("network", observation_size=17), "does not match", True, True),
    (
        "observation-size-float",
        LAYER,
        section("network", observation_size=18.0),
        "observation_size is 18.0, not an integer",
        True,
        True,
    ),
    (
        "observation-size-missing",
        LAYER,
        section("network", observation_size=...),
        "observation_size is None",
        True,
        True,
    ),
    ("nvec", LAYER, section("network", nvec=[3, 6, 5]), "nvec", True, True),
    ("parameters", LAYER, section("network", parameters=1), "parameters is 1", True, True),
    ("layer-with-token-keys", LAYER, section("network", token_hidden=[8]), "does not have", True, True),
    # decision layers
    ("layers-string", LAYER, top(decision_layers="abc"), "not a non-empty list", True, True),
    ("layers-empty", LAYER, top(decision_layers=[]), "not a non-empty list", True, True),
    ("layers-negative", LAYER, top(decision_layers=[-1]), "decision_layers[0] is -1", True, True),
    ("layers-bool", LAYER, top(decision_layers=[True]), "decision_layers[0] is True", True, True),
    ("layers-float", LAYER, top(decision_layers=[1.0]), "decision_layers[0] is 1.0", True, True),
    ("layers-repeated", LAYER, top(decision_layers=[1, 1]), "distinct", True, True),
    ("layers-unsorted", LAYER, top(decision_layers=[2, 1]), "increasing", True, True),
    ("layers-too-deep", LAYER, top(decision_layers=[1, 5000]), "0..1023", True, True),
    ("layers-missing", LAYER, drop("decision_layers"), "decision_layers", False, True),
    # versions, kinds and field names
    ("format", LAYER, top(format="something-else"), "not an rlprune policy", True, True),
    ("format-version", LAYER, top(format_version=99), "format version 99", True, True),
    ("format-version-string", LAYER, top(format_version="1"), "format version '1'", True, True),
    ("format-version-bool", LAYER, top(format_version=True), "format version True", True, True),
    ("spec-version-unknown", LAYER, top(spec_version=7), "spec 7", True, True),
    ("spec-version-float", LAYER, top(spec_version=2.0), "spec 2.0", True, True),
    ("kind-mixed", LAYER, top(kind="token"), "kind is 'token'", True, True),
    ("token-as-layer-spec", TOKEN, top(spec_version=2, kind="layer"), "does not have", True, True),
    ("observation-fields", LAYER, top(observation_fields=["a", "b"]), "observation_fields", True, True),
    ("token-fields-on-layer", LAYER, top(token_feature_fields=["a"]), "token_feature_fields", True, True),
    ("reward-preset", LAYER, top(reward_preset=5), "reward_preset", True, True),
    ("training", LAYER, top(training=[1]), "training", True, True),
    # token policies
    ("token-feature-size", TOKEN, section("network", token_feature_size=19), "does not match", True, True),
    ("token-hidden-huge", TOKEN, section("network", token_hidden=[8000]), "token_hidden[0] is 8000", True, True),
    ("token-hidden-missing", TOKEN, section("network", token_hidden=...), "token_hidden", True, True),
    ("token-hidden-bool", TOKEN, section("network", token_hidden=[True]), "token_hidden[0] is True", True, True),
    ("token-fields", TOKEN, top(token_feature_fields=["attention"]), "token_feature_fields", True, True),
    # the config file itself
    ("config-not-json", LAYER, raw(b"{not json"), "not valid JSON", True, True),
    ("config-empty", LAYER, raw(b""), "not valid JSON", True, True),
    ("config-list", LAYER, raw(b"[1, 2, 3]"), "not an rlprune policy", True, True),
    ("config-string", LAYER, raw(b'"rlprune-policy"'), "not an rlprune policy", True, True),
    ("config-null", LAYER, raw(b"null"), "not an rlprune policy", True, True),
    ("config-utf8", LAYER, raw(b'{"format": "\xff\xfe"}'), "not valid JSON", True, True),
    ("config-nested", LAYER, raw(b"[" * 200_000), "not valid JSON", True, True),
    ("config-huge", LAYER, raw(b" " * (5 << 20) + b"{}"), "too big", True, True),
    ("config-repeated-key", LAYER, repeat_key, "appear more than once", True, True),
    ("config-missing", LAYER, remove("config.json"), "missing", True, True),
    ("config-folder", LAYER, config_folder, "cannot be read", True, True),
    # the weights
    ("weights-nan", LAYER, poke("trunk.0.weight", math.nan), "NaN or infinite weights in trunk.0.weight", True, False),
    ("weights-inf", LAYER, poke("action_head.bias", -math.inf), "NaN or infinite", True, False),
    ("token-weights-nan", TOKEN, poke("token_net.0.weight", math.nan), "token_net.0.weight", True, False),
    (
        "weights-integer",
        LAYER,
        tensors(lambda s: s.update({"value_head.bias": torch.zeros(1, dtype=torch.int64)})),
        "floating point",
        True,
        False,
    ),
    ("weights-shape", LAYER, tensors(lambda s: s.update({"value_head.bias": torch.zeros(2)})), "shape", True, False),
    ("weights-missing-tensor", LAYER, tensors(lambda s: s.pop("value_head.bias")), "missing tensors", True, False),
    ("weights-extra-tensor", LAYER, tensors(lambda s: s.update({"x": torch.zeros(1)})), "unexpected", True, False),
    ("weights-truncated", LAYER, truncate, "truncated", True, False),
    ("weights-zero-bytes", LAYER, raw(b"", "policy.safetensors"), "corrupt", True, False),
    ("weights-garbage", LAYER, raw(bytes(range(256)) * 8, "policy.safetensors"), "corrupt", True, False),
    ("weights-pickle", LAYER, raw(pickle.dumps({"a": 1}), "policy.safetensors"), "corrupt", True, False),
    ("weights-missing", LAYER, remove("policy.safetensors"), "missing", True, False),
]


@pytest.mark.parametrize(
    ("source", "mutate", "message", "with_model", "config_fault"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_hostile_checkpoints_are_refused_clearly(
    sources, llama, tmp_path, monkeypatch, source, mutate, message, with_model, config_fault
):
    folder = tmp_path / "p"
    shutil.copytree(sources[source], folder)
    mutate(folder)
    before = snapshot(folder)
    if config_fault:  # a bad config is refused before any network is built

        def forbidden(*args, **kwargs):
            raise AssertionError("a network was built for an invalid config")

        monkeypatch.setattr(checkpoint_module, "build_policy", forbidden)
    for target, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(target, name, lambda *a, **k: pytest.fail("a checkpoint load tried to unpickle"))
    with pytest.raises(PolicyError) as raised:  # config faults: before any network is built (see above)
        load_policy(folder, llama if with_model else None)
    assert isinstance(raised.value, RLPruneError)
    assert message in str(raised.value), str(raised.value)
    assert "\n" not in str(raised.value)  # the CLI prints it as one `error:` line
    assert snapshot(folder) == before


def test_there_are_enough_hostile_cases():
    assert len(CASES) >= 40 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("kind", [LAYER, TOKEN])
def test_valid_checkpoints_load_and_act_identically(sources, llama, tmp_path, kind):
    folder = shutil.copytree(sources[kind], tmp_path / "p")
    before = snapshot(folder)
    loaded = load_policy(folder, llama)
    original = randomised(
        ReductionPolicy(decision_layers=(1, 2)) if kind == LAYER else TokenReductionPolicy(decision_layers=(1, 2))
    )
    assert type(loaded) is type(original) and loaded.layers == (1, 2)
    observations = torch.as_tensor(np.random.default_rng(0).uniform(-1.5, 1.5, (50, OBSERVATION_SIZE))).float()
    torch.testing.assert_close(loaded(observations), original(observations), rtol=0, atol=0)
    for observation in observations.numpy():
        np.testing.assert_array_equal(loaded.predict(observation), original.predict(observation))
    if kind == TOKEN:
        features = torch.randn(30, TOKEN_FEATURE_SIZE)
        torch.testing.assert_close(loaded.token_scores(features), original.token_scores(features), rtol=0, atol=0)
    assert snapshot(folder) == before


def test_a_checkpoint_without_a_model_loads_only_without_a_model(llama, tmp_path):
    """Training's own checkpoints record no model: resuming reads them; using one with a model is refused."""
    folder = save_policy(ReductionPolicy(decision_layers=(1, 2)), tmp_path / "p")
    assert _read(folder)["model"] is None
    assert type(load_policy(folder)) is ReductionPolicy
    with pytest.raises(PolicyError, match="does not say which model it is for.*rlprune export"):
        load_policy(folder, llama)


def test_a_checkpoint_for_another_model_is_refused(sources, tmp_path):
    folder = shutil.copytree(sources[LAYER], tmp_path / "p")
    with pytest.raises(PolicyError, match="trained for another model"):
        load_policy(folder, tiny_model("llama", seed=1))


@pytest.mark.parametrize("name", ["smollm2-135m-grounded", "smollm2-135m-mixed"])
def test_shipped_policies_pass_the_checks(name):
    folder = ROOT / "policies" / name
    checkpoint_module.validate_config(json.loads((folder / "config.json").read_text()), folder)
    assert load_policy(folder).layers


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"shares": (5.0,)}, "shares"),
        ({"shares": (-1.0,)}, "shares"),
        ({"shares": (math.nan,)}, "shares"),
        ({"shares": ()}, "shares"),
        ({"ops": ("prune", "merge")}, "keep"),
        ({"ops": ("keep", "explode")}, "explode"),
        ({"scorers": ()}, "scorer"),
        ({"scorers": ("telepathy",)}, "telepathy"),
    ],
)
def test_action_specs_refuse_impossible_choices(changes, message):
    with pytest.raises(ValueError, match=message):
        ActionSpec(**changes)


# -- adapters ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory) -> Path:
    """A tiny LoRA adapter with non-zero weights, saved as safetensors."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("adapter")
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    with without_checkpointing_renames():
        get_peft_model(tiny_model("llama", seed=1), config).save_pretrained(folder, safe_serialization=True)
    assert {p.name for p in folder.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    return folder


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make every way peft or torch could unpickle a ``.bin`` fail the test."""
    import peft.utils.save_and_load

    def forbidden(*args, **kwargs):
        raise AssertionError("an adapter load tried to unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(peft.utils.save_and_load, "torch_load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)


def _adapter_copy(adapter_dir: Path, tmp_path: Path, weights: bool = True, pickled: bool = False) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir()
    shutil.copy(adapter_dir / "adapter_config.json", folder)
    if weights:
        shutil.copy(adapter_dir / "adapter_model.safetensors", folder)
    if pickled:  # a pickle that runs code if ever unpickled
        (folder / "adapter_model.bin").write_bytes(pickle.dumps(print))
    return folder


def test_a_safetensors_adapter_merges_and_a_pickle_beside_it_is_never_read(adapter_dir, tmp_path, no_unpickling):
    from rlprune.output import apply_adapter

    folder = _adapter_copy(adapter_dir, tmp_path, pickled=True)
    before = snapshot(folder)
    base = tiny_model("llama")
    merged = apply_adapter(tiny_model("llama"), folder)
    assert type(merged) is type(base)
    ids = torch.tensor([[1, 5, 9, 12]])
    assert not torch.equal(merged(ids).logits, base(ids).logits)  # the adapter's weights went in
    assert snapshot(folder) == before


def test_an_adapter_with_only_a_pickle_is_refused_unread(adapter_dir, tmp_path, no_unpickling):
    from rlprune.output import apply_adapter

    folder = _adapter_copy(adapter_dir, tmp_path, weights=False, pickled=True)
    model = tiny_model("llama")
    with pytest.raises(RLPruneError, match="no adapter_model.safetensors .*adapter_model.bin.*re-save the adapter"):
        apply_adapter(model, folder)
    assert not any("lora" in name for name, _ in model.named_modules())  # the model was not touched


def test_an_adapter_without_weights_is_refused(adapter_dir, tmp_path, no_unpickling):
    from rlprune.output import apply_adapter

    with pytest.raises(RLPruneError, match="no adapter_model.safetensors; re-save"):
        apply_adapter(tiny_model("llama"), _adapter_copy(adapter_dir, tmp_path, weights=False))


@pytest.mark.parametrize("layout", ["no-config", "a-file", "missing"])
def test_what_is_not_an_adapter_folder_is_refused(adapter_dir, tmp_path, no_unpickling, layout):
    from rlprune.output import apply_adapter

    path = tmp_path / "x"
    if layout == "no-config":
        path.mkdir()
        shutil.copy(adapter_dir / "adapter_model.safetensors", path)
    elif layout == "a-file":
        path.write_text("{}")
    with pytest.raises(RLPruneError, match="not an adapter folder"):
        apply_adapter(tiny_model("llama"), path)


def test_a_corrupt_adapter_is_refused(adapter_dir, tmp_path, no_unpickling):
    from rlprune.output import apply_adapter

    folder = _adapter_copy(adapter_dir, tmp_path)
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(RLPruneError, match="corrupt"):
        apply_adapter(tiny_model("llama"), folder)

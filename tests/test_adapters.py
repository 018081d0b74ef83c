"""Every family through its adapter: masks, windows and FLOPs agree with what the model runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, random_ids, tiny_model

from rlprune import LayerAction, Reducer, flops
from rlprune.adapters import ADAPTERS, Gemma3Adapter, LlamaFamilyAdapter, adapter_for
from rlprune.errors import RLPruneError
from rlprune.models import load_model, resolve_device, resolve_dtype

FAMILIES = sorted(CONFIGS)
SCHEDULE = {1: LayerAction("prune", 0.5, "attention"), 2: LayerAction("merge", 0.5, "similarity")}


def test_each_family_has_its_adapter():
    assert isinstance(adapter_for(tiny_model("qwen3")), LlamaFamilyAdapter)
    adapter = adapter_for(tiny_model("gemma3"))
    assert isinstance(adapter, Gemma3Adapter)
    assert adapter.windows == (12, None, 12, None)
    assert adapter.rope_kinds == ("sliding_attention", "full_attention", "sliding_attention", "full_attention")
    assert adapter_for(tiny_model("mistral-sliding")).windows == (16,) * 4
    assert adapter_for(tiny_model("qwen2")).windows == (None,) * 4
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma3_text"} <= set(ADAPTERS)


@pytest.mark.parametrize("arch", FAMILIES)
def test_adapter_masks_equal_the_models_own_masks(arch):
    """The adapter's sliding-window causal mask (built from positions) gives the model's logits when
    forced on every layer, even where the kernel's causal default would do."""
    model = tiny_model(arch)
    ids = random_ids(40, seed=30)
    reducer = Reducer(model)
    adapter = reducer.adapter
    forced = type(adapter).attention_mask

    def always(self, layer, q, k, sizes, dtype, last_position=None, key_valid=None):
        mask = forced(self, layer, q, k, sizes, dtype, key_valid=key_valid)
        if mask is None:  # build it anyway, with a zero bias
            mask = forced(self, layer, q, k, torch.zeros(k.shape), dtype)
        return mask

    adapter.attention_mask = always.__get__(adapter)
    out = reducer.run(ids, logits="all")
    assert (out.logits - model(ids).logits).abs().max() <= 1e-4


def test_sliding_window_mask_hides_keys_outside_the_window():
    adapter = adapter_for(tiny_model("gemma3"))
    positions = torch.arange(20)
    mask = adapter.attention_mask(0, positions, positions, None, torch.float32)[0, 0]
    assert adapter.attention_mask(0, positions[None], positions[None], None, torch.float32).shape == (1, 1, 20, 20)
    visible = mask == 0
    assert visible[19].nonzero().flatten().tolist() == list(range(8, 20))  # window 12: itself and 11 before
    assert visible.sum(dim=1).tolist() == [min(i + 1, 12) for i in range(20)]
    assert adapter.attention_mask(1, positions, positions, None, torch.float32) is None  # global layer: causal


@pytest.mark.parametrize("window", [None, 1, 5, 12])
@pytest.mark.parametrize(("new", "cached"), [(1, 0), (7, 0), (20, 0), (1, 30), (6, 3), (4, 9)])
def test_windowed_attention_pairs_equal_brute_force(new, cached, window):
    keys = lambda j: cached + j + 1  # noqa: E731  keys the j-th new token sees causally
    expected = sum(keys(j) if window is None else min(keys(j), window) for j in range(new))
    assert flops.attention_pairs(new, cached, window=window) == expected


@pytest.mark.parametrize("arch", ["gemma3", "mistral-sliding"])
def test_full_prefill_flops_count_exactly_the_visible_pairs(arch):
    """On sliding layers the analytic count is the number of query-key pairs the masks allow."""
    model = tiny_model(arch)
    reducer = Reducer(model)
    n = 40
    out = reducer.run(random_ids(n, seed=31))
    positions = torch.arange(n)
    pairs = 0
    for layer in range(reducer.dims.layers):
        mask = reducer.adapter.attention_mask(layer, positions, positions, torch.zeros(n), torch.float32)
        pairs += int((mask == 0).sum())
    linear = reducer.dims.layers * flops.linear_flops(reducer.dims, n) + flops.lm_head_flops(reducer.dims, 1)
    assert out.flops == pytest.approx(linear + 4.0 * pairs * reducer.dims.q_width)
    assert out.flops < flops.full_prefill_flops(flops.ModelDims(**{**vars(reducer.dims), "windows": ()}), n)


@pytest.mark.parametrize("arch", FAMILIES)
def test_projection_equals_what_the_reducer_charges(arch):
    """One FLOPs truth: the projection a baseline or policy plans with is what the run costs."""
    from rlprune.engine.features import Features

    reducer = Reducer(tiny_model(arch))
    ids = random_ids(64, seed=33)
    state = reducer.start(ids, decision_layers=sorted(SCHEDULE))
    projected = Features(reducer, state, 0.5).ratio_after(SCHEDULE)
    assert reducer.run(ids, SCHEDULE).flops_ratio == pytest.approx(projected, rel=1e-12)


@pytest.mark.parametrize("arch", FAMILIES)
def test_reduced_decoding_is_causal_by_original_position(arch):
    """A token decoded from the reduced cache is unaffected by what comes after it."""
    model = tiny_model(arch)
    reducer = Reducer(model)
    ids = random_ids(50, seed=34)
    first = reducer.run(ids, SCHEDULE).state
    a = reducer.extend(first, [5, 6])
    second = reducer.run(ids, SCHEDULE).state
    b = reducer.extend(second, [5, 9])
    assert torch.equal(a[:, 0], b[:, 0]) and not torch.equal(a[:, 1], b[:, 1])


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_bfloat16_on_cpu_reproduces_the_model(arch):
    """In bfloat16 the reducer runs the same layers on the same inputs as the model's own forward,
    so without reduction the logits agree to within one bfloat16 step at their scale (2**-7 of the
    largest logit: the kernels may round differently, nothing more). A reduced run stays finite
    and its scorer statistics are computed in float32."""
    model = tiny_model(arch).to(torch.bfloat16)
    ids = random_ids(48, seed=35)
    expected = model(ids).logits.float()
    out = Reducer(model).run(ids, logits="all")
    assert out.logits.dtype == torch.bfloat16
    assert (out.logits.float() - expected).abs().max() <= 2**-7 * expected.abs().max()
    reduced = Reducer(model).run(ids, SCHEDULE, logits="all")
    assert torch.isfinite(reduced.logits.float()).all() and reduced.flops_ratio < 0.9
    assert reduced.kv_bytes * 2 == Reducer(tiny_model(arch)).run(ids, SCHEDULE).kv_bytes  # 2 bytes a value
    generated = Reducer(model).generate(ids, max_new_tokens=6, eos_token_id=[])
    hf = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(generated.sequences, hf)


MODEL_INTERNALS = re.compile(r"\bmodel\.model\b|\.embed_tokens\b|\.rotary_emb\b|\.input_layernorm\b|\.self_attn\b")


def test_only_the_adapters_reach_into_the_model():
    package = Path(__file__).resolve().parents[1] / "rlprune"
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        if "adapters" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if MODEL_INTERNALS.search(line)
    ]
    assert offenders == []


def test_devices_and_dtypes_fail_clearly():
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(RLPruneError, match="unknown dtype 'int8'"):
        resolve_dtype("int8")
    with pytest.raises(RLPruneError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RLPruneError, match="no CUDA GPU.*--device cpu"):
            load_model("tiny-random", device="cuda")
    model, _ = load_model("tiny-random", dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"


def test_a_policy_trained_in_float32_runs_on_the_model_in_bfloat16(tmp_path):
    from rlprune.models import fingerprint_id, model_fingerprint
    from rlprune.policies import ReductionPolicy, load_policy, save_policy

    model, _ = load_model("tiny-random")
    half, _ = load_model("tiny-random", dtype="bfloat16")
    assert model_fingerprint(model) == model_fingerprint(half)  # the same weights at bfloat16 precision
    assert fingerprint_id(model) != fingerprint_id(half)  # cached model outputs are kept apart by dtype
    save_policy(ReductionPolicy(decision_layers=(1, 2)), tmp_path / "policy", model=model)
    assert load_policy(tmp_path / "policy", model=half).decision_layers(4) == (1, 2)
    other, _ = load_model("tiny-random", dtype="float16")
    with pytest.raises(RLPruneError, match="trained for another model"):
        load_policy(tmp_path / "policy", model=other)

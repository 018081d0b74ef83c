"""Span-aware selection: pool shapes, sentence and chunk units, and the budget they still meet exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import random_ids, tiny_model, tiny_tokenizer
from test_runner import _record

from rlprune import LayerAction, Reducer, ReducerConfig
from rlprune.errors import InvalidActionError
from rlprune.policies.baselines import BaselineError, make_baseline
from rlprune.reduction import Pool, format_schedule, parse_schedule, parse_unit, sentence_end_ids, unit_ranking


def test_centred_pool_equals_the_classic_max_pool():
    scores = torch.randn(50, generator=torch.Generator().manual_seed(0))
    for width in (1, 2, 9, 10, 25):
        classic = F.max_pool1d(scores[None, None], width, 1, width // 2)[0, 0, :50]
        assert torch.equal(Pool.centred(width).apply(scores), classic)


def test_asymmetric_pool_reaches_further_after_a_high_score():
    scores = torch.zeros(40)
    scores[10] = 1.0
    pooled = Pool.parse("-4:+16").apply(scores)
    assert torch.equal(torch.nonzero(pooled == 1.0)[:, 0], torch.arange(6, 27))  # 10-4 .. 10+16


@pytest.mark.parametrize(
    ("text", "pool"),
    [("25", Pool(12, 12)), ("-4:+16", Pool(4, 16)), ("-4+16", Pool(4, 16)), (9, Pool(4, 4)), ("-0:+3", Pool(0, 3))],
)
def test_pool_parses_widths_and_reaches(text, pool):
    assert Pool.parse(text) == pool
    assert Pool.parse(str(pool)) == pool  # its text form reads back


@pytest.mark.parametrize("bad", ["", "x", "-4", "+16", "4:16", "-1:+99999", "0"])
def test_bad_pools_and_units_are_clear_errors(bad):
    with pytest.raises(InvalidActionError, match="pool"):
        Pool.parse(bad)
    with pytest.raises(InvalidActionError, match="unit"):
        parse_unit(bad if bad else "paragraph")


def test_schedule_text_carries_span_options_both_ways():
    text = "2:prune:0.5:attention:pool=-4:+16:unit=sentence,12:merge:0.3:similarity:unit=16"
    schedule = parse_schedule(text)
    assert schedule[2].pool == Pool(4, 16) and schedule[2].unit == "sentence"
    assert schedule[12].pool is None and schedule[12].unit == "16"
    assert parse_schedule(format_schedule(schedule)) == schedule
    with pytest.raises(InvalidActionError, match="pool=P"):
        parse_schedule("2:prune:0.5:attention:width=3")


def test_baseline_specs_take_pool_and_unit():
    snap = make_baseline("snapkv:layer=2,pool=-4:+16,unit=sentence")
    action = snap.schedule(0.5, 30)[2]
    assert (action.pool, action.unit) == (Pool(4, 16), "sentence")
    assert str(snap) == "snapkv:layer=2,ratio=0.5,pool=-4:+16,unit=sentence"
    assert str(make_baseline("snapkv")) == "snapkv:layer=2,ratio=0.5"  # plain specs read as before
    assert make_baseline("static:2:prune:0.5:relevance:pool=25").schedule(0.8, 30)[2].pool == Pool(12, 12)
    with pytest.raises(BaselineError, match="snapkv: bad pool"):
        make_baseline("snapkv:pool=wide")


def test_unit_ranking_removes_whole_units_and_cuts_at_most_one():
    scores = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.8, 0.05, 0.5, 0.6, 0.7])
    units = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])  # unit bests: 0.9, 0.8, 0.7
    ranked = unit_ranking(scores, units)
    order = ranked.argsort().tolist()
    assert order[:3] == [6, 7, 8]  # the weakest unit goes first, whole
    assert order[3:6] == [5, 3, 4]  # then the next, weakest token first


@pytest.mark.parametrize("unit", ["sentence", "5", "16"])
@pytest.mark.parametrize("ratio", [0.1, 0.37, 0.5, 0.9])
def test_units_meet_the_budget_exactly_and_drop_whole_units(unit, ratio):
    tokenizer = tiny_tokenizer()
    words = ("the keeper of the town was Ada . " * 6 + "the boat in the river is six . " * 6).split()
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(words)])
    ends = sentence_end_ids(tokenizer)
    reducer = Reducer(tiny_model("llama"), ReducerConfig(sentence_ends=ends))
    plans = _record(reducer)
    plain = Reducer(tiny_model("llama"))
    protect_last = 4
    out = reducer.run(ids, {2: LayerAction("prune", ratio, "attention", unit=unit)}, protect_last=protect_last)
    reference = plain.run(ids, {2: LayerAction("prune", ratio, "attention")}, protect_last=protect_last)
    assert out.flops == pytest.approx(reference.flops)  # the same count removed, the same FLOPs
    removable = ids.shape[1] - 1 - protect_last
    removed = plans[2].remove
    assert len(removed) == round(ratio * removable)
    # every unit is dropped whole or kept whole, except at most one
    if unit == "sentence":
        starts = torch.isin(ids[0], torch.tensor(ends)).long()
        unit_of = torch.cumsum(starts, 0) - starts
    else:
        unit_of = torch.arange(ids.shape[1]) // int(unit)
    removable_mask = torch.zeros(ids.shape[1], dtype=torch.bool)
    removable_mask[1 : ids.shape[1] - protect_last] = True
    gone = torch.zeros_like(removable_mask)
    gone[removed] = True
    cut = [u for u in unit_of.unique() if 0 < int(gone[(unit_of == u) & removable_mask].sum()) <
           int(((unit_of == u) & removable_mask).sum())]  # fmt: skip
    assert len(cut) <= 1


def test_sentence_unit_without_sentence_ends_says_how_to_fix_it():
    reducer = Reducer(tiny_model("llama"))
    with pytest.raises(InvalidActionError, match="sentence_end_ids"):
        reducer.run(random_ids(40), {2: LayerAction("prune", 0.5, unit="sentence")})


@pytest.mark.parametrize("pool", ["25", "-2:+12"])
def test_pool_shapes_meet_the_budget_exactly(pool):
    model = tiny_model("llama")
    reducer, plain = Reducer(model), Reducer(model)
    ids = random_ids(120, seed=4)
    spanned = make_baseline(f"snapkv:pool={pool}")
    for budget in (0.6, 0.7, 0.8):  # a 4-layer model pruned at layer 2 cannot go under about 0.55
        a = reducer.run(ids, policy=spanned, budget=budget)
        b = plain.run(ids, policy=make_baseline("snapkv"), budget=budget)
        assert a.flops_ratio == pytest.approx(b.flops_ratio)
        assert a.flops_ratio <= budget + 0.02


def test_best_static_grid_holds_span_shapes_and_each_candidate_parses():
    from rlprune.eval.best_static import SPAN_SCORERS, candidates

    texts = candidates((2, 4), ("pool=25", "pool=-4:+16", "unit=sentence"))
    schedules = [parse_schedule(text) for text in texts]
    spanned = [s for s in schedules if s[min(s)].pool is not None or s[min(s)].unit != "token"]
    assert len(spanned) == 2 * len(SPAN_SCORERS) * 3
    assert {str(s[min(s)].pool) for s in spanned if s[min(s)].pool} == {"25", "-4:+16"}


def test_best_static_search_runs_on_the_smoke_preset(tmp_path):
    from rlprune.eval.best_static import search

    result = search("smoke", (0.7,), items=2, layers=(1, 2), spans=("pool=-1:+3",), cache_dir=tmp_path,
                    show_progress=False)  # fmt: skip
    assert set(result["scores"]["0.7"]) >= {"1:prune:0.5:relevance:pool=-1:+3", "2:merge:0.5:similarity"}
    assert result["best"]["0.7"]["schedule"] in result["scores"]["0.7"]

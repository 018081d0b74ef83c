"""A policy meets a model it was not made for: every public entry point that takes a policy refuses
it at once, in one line naming the field and the model's value, before any layer runs. Baseline
arguments likewise: accepted up to the model's limits (and then really reducing there), refused
beyond them, without a model where none is needed.

The model is ``tiny-random`` (4 layers, 64 wide, a 259-token vocabulary, 4096 positions), so the
command line and the training entry points load it by name like any user's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from typer.testing import CliRunner

import rlprune
from rlprune import load_model
from rlprune.cli import app
from rlprune.engine import Reducer
from rlprune.eval import EvalConfig, Evaluation
from rlprune.models import model_fingerprint
from rlprune.policies import (
    BaselineError,
    IncompatiblePolicyError,
    PolicyError,
    ReductionPolicy,
    SpanHeadPolicy,
    TokenReductionPolicy,
    load_policy,
    make_baseline,
    resolve_policy,
    save_policy,
)
from rlprune.policies.compat import ModelShape, check_compatible
from rlprune.train.kinds.budget_train import train_budget_head
from rlprune.train.kinds.span_head import train_span_head
from rlprune.train.kinds.span_ppo import tune_span_head
from rlprune.train.recipe import BudgetHeadConfig, SpanHeadConfig, SpanPPOConfig

CONTEXT = "The keeper of the harbour is Ada Crane. Boats rest on the shingle. " * 3
QUESTION = "Who is the keeper?"
LATER = {"rank": 4, "channels": 4, "kernel": 3, "min_keep": 0.3}

FOREIGN: dict[str, tuple[Callable[[], object], str]] = {
    # policies built for a deeper model (6 layers), a wider one (96) and one with a larger vocabulary
    "span-later-deeper": (
        lambda: SpanHeadPolicy(64, 2, later={"decision_layer": 5, **LATER}),
        "later.decision_layer is 5",
    ),
    "span-deeper": (lambda: SpanHeadPolicy(64, 4), "decision_layer is 4"),
    "budget-head-deeper": (
        lambda: SpanHeadPolicy(64, 5, budget_grid=(0.3, 0.6, 1.0), budget_hidden=(8,)),
        "decision_layer is 5",
    ),
    "layer-policy-deeper": (lambda: ReductionPolicy(hidden=(8,), decision_layers=(1, 5)), "decision_layers is 5"),
    "token-policy-deeper": (lambda: TokenReductionPolicy(hidden=(8,), decision_layers=(2, 4)), "decision_layers is 4"),
    "span-wider": (lambda: SpanHeadPolicy(96, 1), "hidden_size is 96, but the model is 64 wide"),
    "span-other-vocabulary": (
        lambda: SpanHeadPolicy(64, 1, unit="sentence", sentence_ends=[4, 300]),
        "sentence_ends holds token id 300, but the vocabulary of the model has 259 ids",
    ),
}
"""Policies that do not fit the model, and what the refusal must name."""

BEYOND = {
    "fastv:layer=4": "layer is 4, but the model has 4 layers (0..3)",
    "gemfilter:layer=99": "layer is 99",
    "snapkv:layer=7,pool=9": "layer is 7",
    "random:layer=4": "layer is 4",
    "tome:start=4": "start is 4, but the model has 4 layers",
    "tome:start=99": "start is 99",
    "pyramid:stages=4": "stages is 4, but the model with 4 layers fits at most 3",
    "pyramid:stages=40": "stages is 40",
    "static:2:prune:0.5,4:merge:0.3": "layer is 4",
    "snapkv:pool=-0:+4095": "pool spans 4096 tokens, but the model takes at most 4096 positions",
    "snapkv:pool=8191": "pool spans 8191 tokens",
    "fastv:unit=4096": "unit spans 4096 tokens",
}
"""Baseline arguments beyond the 4-layer, 4096-position model, and what the refusal must name."""

AT_THE_LIMIT = {
    "fastv:layer=3": {3},
    "gemfilter:layer=3": {3},
    "snapkv:layer=0": {0},
    "tome:start=3": {3},
    "tome:start=0": {0, 1, 2, 3},
    "pyramid:stages=3": {1, 2, 3},
    "pyramid:stages=1": {2},
    "static:3:prune:0.5": {3},
    "snapkv:pool=-0:+4094": {2},
    "fastv:unit=4095": {2},
}
"""Baseline arguments at the model's limits, and the layers each must then reduce at."""

INVALID = {
    "pyramid:stages=0": "stages=0 must be a whole number >= 1",
    "pyramid:stages=-2": "stages=-2",
    "tome:start=-1": "start=-1 must be a whole number >= 0",
    "fastv:layer=-1": "layer=-1 must be a whole number >= 0",
    "snapkv:layer=-3": "layer=-3",
    "gemfilter:layer=-1": "layer=-1",
    "random:layer=-1": "layer=-1",
}
"""Baseline arguments no model has room for, refused as the spec is read."""


@pytest.fixture(scope="module")
def tiny() -> tuple:
    return load_model("tiny-random")


@contextmanager
def nothing_runs(model) -> Iterator[None]:
    """Fail if any token is embedded (any forward of the model, full or reduced) inside the block, or if
    the model is left patched."""
    calls: list[int] = []
    handle = model.model.embed_tokens.register_forward_hook(lambda *args: calls.append(1))
    try:
        yield
    finally:
        handle.remove()
    assert not calls, f"the model ran {len(calls)} time(s) before the refusal"
    assert "forward" not in model.__dict__, "the model was left patched"


def refused(error: pytest.ExceptionInfo, *fragments: str) -> None:
    """One line holding every fragment."""
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def ids(tokenizer) -> torch.Tensor:
    return tokenizer(CONTEXT + QUESTION, return_tensors="pt").input_ids


def run_apply(model, policy, input_ids: torch.Tensor) -> None:
    with rlprune.apply(model, policy, budget=0.5):
        model(input_ids)


def span_ppo() -> SpanPPOConfig:
    return SpanPPOConfig(updates=1, prompts=1, group=2, epochs=1, validation_tasks=1)


# -- a policy object meets the model ----------------------------------------------------------------

OBJECT_ENTRIES: dict[str, Callable] = {
    "apply": lambda m, t, p: run_apply(m, p, ids(t)),
    "generate": lambda m, t, p: rlprune.generate(m, t, QUESTION, context=CONTEXT, policy=p, max_new_tokens=2),
    "generate-a-list": lambda m, t, p: rlprune.generate(m, t, [QUESTION] * 2, context=CONTEXT, policy=p),
    "Reducer.run": lambda m, t, p: Reducer(m).run(ids(t), policy=p, budget=0.5),
    "Reducer.generate": lambda m, t, p: Reducer(m).generate(ids(t), policy=p, budget=0.5, max_new_tokens=2),
    "resolve_policy": lambda m, t, p: resolve_policy(p, m),
    "check_compatible": lambda m, t, p: check_compatible(p, m),
    "span-ppo-environment": lambda m, t, p: tune_span_head(p, m, t, span_ppo()),
}


@pytest.mark.parametrize("foreign", sorted(FOREIGN))
@pytest.mark.parametrize("entry", sorted(OBJECT_ENTRIES))
def test_a_policy_object_for_another_model_is_refused_before_anything_runs(tiny, entry, foreign):
    model, tokenizer = tiny
    build, named = FOREIGN[foreign]
    policy = build()
    if entry == "span-ppo-environment" and (not isinstance(policy, SpanHeadPolicy) or policy.later is not None):
        pytest.skip("PPO tunes a one-layer span head; it refuses the others by kind")
    with nothing_runs(model), pytest.raises(IncompatiblePolicyError) as error:
        OBJECT_ENTRIES[entry](model, tokenizer, policy)
    refused(error, named, "use a policy made for this model")


# -- a checkpoint meets the model -------------------------------------------------------------------


def edited_checkpoint(policy, folder: Path, model) -> Path:
    """``policy`` saved as if for ``model``: its config records the model's fingerprint (what a hand
    edit of a checkpoint made for ``model`` gives)."""
    save_policy(policy, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"] = model_fingerprint(model)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def checkpoints(tiny, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Every foreign policy as a checkpoint recording ``tiny``'s fingerprint, and one honestly saved for
    another model (6 layers)."""
    root = tmp_path_factory.mktemp("foreign")
    found = {name: (edited_checkpoint(make(), root / name, tiny[0]), named) for name, (make, named) in FOREIGN.items()}
    other = tiny_model("llama", layers=6, vocab_size=259, max_position_embeddings=4096)
    deeper = save_policy(ReductionPolicy(hidden=(8,), decision_layers=(1, 5)), root / "other-model", model=other)
    return found | {"other-model": (deeper, "trained for another model")}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "harbour.jsonl"
    path.write_text(json.dumps({"context": CONTEXT, "question": QUESTION, "answer": "Ada Crane"}) + "\n")
    return path


def cli_eval(suite: Path, out: Path, *method: str) -> object:
    args = ["eval", "--suite", suite, "--model", "tiny-random", *method, "--budgets", "0.5", "--out", out]
    return CliRunner().invoke(app, [str(a) for a in args])


FOLDER_ENTRIES: dict[str, Callable] = {
    "load_policy": lambda m, t, f, tmp, suite: load_policy(f, m),
    "resolve_policy": lambda m, t, f, tmp, suite: resolve_policy(str(f), m),
    "apply": lambda m, t, f, tmp, suite: run_apply(m, str(f), ids(t)),
    "generate": lambda m, t, f, tmp, suite: rlprune.generate(m, t, QUESTION, context=CONTEXT, policy=f),
    "eval-harness": lambda m, t, f, tmp, suite: Evaluation(
        EvalConfig(str(suite), model="tiny-random", policies=(str(f),), baselines=(), budgets=(0.5,)),
        tmp / "eval",
        model=m,
        tokenizer=t,
    ),
    "train-head-start": lambda m, t, f, tmp, suite: train_span_head(
        SpanHeadConfig(model="tiny-random"), tmp / "head", False, start=f, ppo=span_ppo()
    ),
    "train-budget-head": lambda m, t, f, tmp, suite: train_budget_head(
        BudgetHeadConfig(model="tiny-random", span_policy=str(f)), tmp / "budget", False
    ),
}


@pytest.mark.parametrize("foreign", [*sorted(FOREIGN), "other-model"])
@pytest.mark.parametrize("entry", sorted(FOLDER_ENTRIES))
def test_a_checkpoint_for_another_model_is_refused_before_anything_runs(
    tiny, checkpoints, suite, tmp_path, entry, foreign
):
    model, tokenizer = tiny
    folder, named = checkpoints[foreign]
    with nothing_runs(model), pytest.raises(PolicyError) as error:
        FOLDER_ENTRIES[entry](model, tokenizer, folder, tmp_path, suite)
    refused(error, named, str(folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "something was written before the refusal"


@pytest.mark.parametrize("foreign", sorted(FOREIGN))
def test_a_checkpoint_that_does_not_fit_the_model_it_records_is_refused_without_a_model(checkpoints, foreign):
    folder, named = checkpoints[foreign]
    with pytest.raises(IncompatiblePolicyError) as error:
        load_policy(folder)
    refused(error, named.replace("the model", "the model it records"), "export the policy again")


@pytest.mark.parametrize("foreign", sorted(FOREIGN))
def test_save_policy_writes_nothing_load_policy_would_refuse(tiny, tmp_path, foreign):
    build, named = FOREIGN[foreign]
    with pytest.raises(IncompatiblePolicyError) as error:
        save_policy(build(), tmp_path / "p", model=tiny[0])
    refused(error, named)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("foreign", ["span-later-deeper", "span-wider", "span-other-vocabulary", "other-model"])
def test_rlprune_eval_refuses_a_foreign_checkpoint_in_one_line_before_the_full_model_runs(
    checkpoints, suite, tmp_path, foreign
):
    folder, named = checkpoints[foreign]
    began = time.perf_counter()
    result = cli_eval(suite, tmp_path / "out", "--policy", folder, "--baselines", "none")
    assert result.exit_code == 1 and result.output.count("error:") == 1, result.output
    assert "Traceback" not in result.output
    assert named in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out" / "records.jsonl").exists()
    assert time.perf_counter() - began < 30


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--layer", "4", "decision_layer (--layer) is 4, but the model has 4 layers (0..3)"),
        ("--later-layer", "7", "later_layer (--later-layer) is 7, but the model has 4 layers (0..3)"),
        ("--later-layer", "40", "later_layer (--later-layer) is 40"),
    ],
)
def test_train_head_refuses_layers_beyond_the_model_at_once(tmp_path, option, value, named):
    began = time.perf_counter()
    args = ["train-head", "--model", "tiny-random", option, value, "--out", str(tmp_path / "head")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and result.output.count("error:") == 1, result.output
    assert named in " ".join(result.output.split()), result.output
    assert time.perf_counter() - began < 10  # before any supervision, not after the first head's
    assert not (tmp_path / "head").exists()


# -- baseline arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", sorted(INVALID))
def test_baseline_arguments_no_model_fits_are_refused_as_the_spec_is_read(spec):
    with pytest.raises(BaselineError) as error:
        make_baseline(spec)
    refused(error, INVALID[spec])


@pytest.mark.parametrize("spec", sorted(AT_THE_LIMIT))
def test_baseline_arguments_at_the_models_limits_run_and_reduce_where_they_say(tiny, spec):
    model, tokenizer = tiny
    baseline = resolve_policy(spec, model)
    reducer = Reducer(model)
    prompt = ids(tokenizer)
    out = reducer.run(prompt, policy=baseline)
    acted = {layer for layer, action in out.state.actions.items() if not action.is_noop}
    assert acted == AT_THE_LIMIT[spec]
    assert out.tokens_per_layer[-1] < prompt.shape[1]  # tokens really went


BASELINE_ENTRIES: dict[str, Callable] = {
    "make_baseline+check_compatible": lambda m, t, s, tmp, suite: check_compatible(make_baseline(s), m),
    "resolve_policy": lambda m, t, s, tmp, suite: resolve_policy(s, m),
    "apply": lambda m, t, s, tmp, suite: run_apply(m, s, ids(t)),
    "generate": lambda m, t, s, tmp, suite: rlprune.generate(m, t, QUESTION, context=CONTEXT, policy=s),
    "Reducer.run": lambda m, t, s, tmp, suite: Reducer(m).run(ids(t), policy=make_baseline(s), budget=0.5),
    "eval-harness": lambda m, t, s, tmp, suite: Evaluation(
        EvalConfig(str(suite), model="tiny-random", baselines=(s,), budgets=(0.5,)), tmp / "eval", model=m, tokenizer=t
    ),
}


@pytest.mark.parametrize("spec", sorted(BEYOND))
@pytest.mark.parametrize("entry", sorted(BASELINE_ENTRIES))
def test_baseline_arguments_beyond_the_model_are_refused_before_anything_runs(tiny, suite, tmp_path, entry, spec):
    model, tokenizer = tiny
    with nothing_runs(model), pytest.raises(IncompatiblePolicyError) as error:
        BASELINE_ENTRIES[entry](model, tokenizer, spec, tmp_path, suite)
    refused(error, BEYOND[spec], "change the spec")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec", ["tome:start=99", "pyramid:stages=0", "pyramid:stages=4"])
def test_rlprune_eval_refuses_baseline_arguments_beyond_the_model_in_one_line(suite, tmp_path, spec):
    result = cli_eval(suite, tmp_path / "out", "--baselines", spec)
    assert result.exit_code == 1 and result.output.count("error:") == 1, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "records.jsonl").exists()


# -- the check itself -------------------------------------------------------------------------------


def test_a_policy_that_fits_passes_unchanged_and_the_shape_reads_every_source(tiny):
    model, _ = tiny
    policy = SpanHeadPolicy(64, 1, unit="sentence", sentence_ends=[4, 258], later={"decision_layer": 3, **LATER})
    assert check_compatible(policy, model) is policy
    assert ModelShape.of(model) == ModelShape.of(Reducer(model)) == ModelShape(4, 64, 259, 4096)
    assert ModelShape.recorded(model_fingerprint(model)) == ModelShape(4, 64, 259, source="the model it records")


def test_a_policy_of_no_known_kind_is_checked_by_its_decision_layers(tiny):
    class Deep:
        name = "mine"

        def decision_layers(self, num_layers: int) -> tuple[int, ...]:
            return (1, num_layers + 2)

        def act(self, features, budget, deterministic=True):
            raise AssertionError("never consulted")

    with pytest.raises(IncompatiblePolicyError) as error:
        rlprune.generate(*tiny, QUESTION, policy=Deep())
    refused(error, "mine: a decision layer is 6, but the model has 4 layers")


@pytest.mark.parametrize("fit", ["behaviour-cloning", "teacher"])
def test_a_warm_start_baseline_beyond_the_environments_model_is_refused_before_any_episode(tiny, tmp_path, fit):
    import dataclasses

    from rlprune.envs import TokenReductionEnv
    from rlprune.train.kinds.teacher import collect
    from rlprune.train.kinds.warm_start import behaviour_clone
    from rlprune.train.recipe import Recipe, WarmStart

    model, tokenizer = tiny
    env = TokenReductionEnv("smoke", model=model, tokenizer=tokenizer, cache_dir=tmp_path, budget=0.5)
    recipe = dataclasses.replace(Recipe.load("smoke"), warm_start=WarmStart("tome:start=9", episodes=2))
    policy = (ReductionPolicy if fit == "behaviour-cloning" else TokenReductionPolicy)(decision_layers=(1, 2, 3))
    with nothing_runs(model), pytest.raises(IncompatiblePolicyError) as error:
        (behaviour_clone if fit == "behaviour-cloning" else collect)(policy, env, recipe)
    refused(error, "tome:start=9,ratio=0.05: start is 9, but the model has 4 layers (0..3)")


GENERATED = ["span-later-deeper", "span-wider", "other-model", "tome:start=99", "fastv:unit=4096"]


@pytest.mark.parametrize("method", GENERATED)
def test_rlprune_generate_refuses_what_does_not_fit_in_one_line(checkpoints, method):
    policy, named = checkpoints[method] if method in checkpoints else (method, BEYOND[method])
    args = ["generate", QUESTION, "--model", "tiny-random", "--policy", str(policy), "--max-new-tokens", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and result.output.count("error:") == 1, result.output
    assert "Traceback" not in result.output
    assert named in " ".join(result.output.split()), result.output


@pytest.mark.parametrize("entry", ["apply", "generate", "Reducer.run", "check_compatible"])
def test_a_span_head_whose_weights_were_swapped_for_another_width_is_refused(tiny, entry):
    model, tokenizer = tiny
    policy = SpanHeadPolicy(64, 1)
    policy.question = torch.nn.Linear(96, policy.rank, bias=False)  # hidden_size still says 64
    with nothing_runs(model), pytest.raises(IncompatiblePolicyError) as error:
        OBJECT_ENTRIES[entry](model, tokenizer, policy)
    refused(error, "the width of question.weight is 96, but the model is 64 wide")

"""Hostile arguments through the Python API: rlprune.generate, rlprune.apply, Reducer and load_model.

Each bad argument raises an RLPruneError subclass whose one-line message names the argument, before
any layer runs; each good one (numpy numbers included) still gives the right result."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model

import rlprune
from rlprune import InvalidActionError, InvalidArgumentError, InvalidPromptError, RLPruneError, load_model
from rlprune.engine import Reducer, ReducerConfig
from rlprune.errors import UnsupportedModelError
from rlprune.policies import PolicyError, ReductionPolicy, make_baseline, save_policy
from rlprune.reduction import LayerAction

QUESTION = "What colour is the boat?"
CONTEXT = "the boat was in the town . " * 6
IDS = torch.arange(3, 40)[None]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random")


@pytest.fixture
def no_prefill(monkeypatch):
    """Make any prefill a test failure: the argument must be refused before a layer runs."""
    monkeypatch.setattr(Reducer, "select", lambda *a, **k: pytest.fail("the prefill ran"))


def assert_refused(call, error: type[Exception], fragment: str) -> None:
    """``call()`` raises ``error`` (an RLPruneError) with one line that contains ``fragment``."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert isinstance(caught.value, RLPruneError)
    assert "\n" not in message, message
    assert fragment in message, message


def enter_apply(model, policy, **kwargs) -> None:
    with rlprune.apply(model, policy, **kwargs):
        pass


# -- rlprune.generate: prompts and contexts ---------------------------------------------------------

BAD_PROMPTS = [
    ([], None, "prompt must be a str or a non-empty list of str"),
    ((), None, "prompt must be a str or a non-empty list of str"),
    ([None], None, "prompt[0] must be a str, got None"),
    ([QUESTION, 3], None, "prompt[1] must be a str, got 3"),
    (b"x", None, "prompt must be a str"),
    (None, None, "prompt must be a str"),
    (5, None, "prompt must be a str"),
    ({"q": QUESTION}, None, "prompt must be a str"),
    ("   ", None, "the prompt is empty"),
    (QUESTION, 5, "context must be None, a str or a list"),
    (QUESTION, b"x", "context must be None, a str or a list"),
    (QUESTION, [5], "context[0] must be a str, got 5"),
    (QUESTION, "   ", "the context is empty"),
    ([QUESTION, QUESTION], [CONTEXT], "context: 1 contexts for 2 prompts"),
    ([QUESTION], [CONTEXT, CONTEXT], "context: 2 contexts for 1 prompts"),
]


@pytest.mark.parametrize(("prompt", "context", "fragment"), BAD_PROMPTS, ids=[f for *_, f in BAD_PROMPTS])
def test_generate_refuses_bad_prompts_and_contexts(tiny, no_prefill, prompt, context, fragment):
    model, tokenizer = tiny
    assert_refused(
        lambda: rlprune.generate(model, tokenizer, prompt, context=context, max_new_tokens=2),
        InvalidPromptError,
        fragment,
    )


def test_generate_takes_a_tuple_of_prompts_with_a_context_each_or_none(tiny):
    model, tokenizer = tiny
    answers = rlprune.generate(model, tokenizer, (QUESTION, "Who?"), context=[CONTEXT, None], max_new_tokens=2)
    alone = [
        rlprune.generate(model, tokenizer, QUESTION, context=CONTEXT, max_new_tokens=2),
        rlprune.generate(model, tokenizer, "Who?", max_new_tokens=2),
    ]
    assert answers == alone


BAD_GENERATE_OPTIONS = [
    ({"temprature": 0.5}, InvalidArgumentError, "unknown sampling option(s) temprature"),
    ({"decision_layers": [1]}, InvalidArgumentError, "unknown sampling option(s) decision_layers"),
    ({"max_new_tokens": 2.5}, InvalidArgumentError, "max_new_tokens must be an integer >= 1, got 2.5"),
    ({"max_new_tokens": True}, InvalidArgumentError, "max_new_tokens must be an integer >= 1, got True"),
    ({"max_new_tokens": 0}, InvalidArgumentError, "max_new_tokens must be an integer >= 1, got 0"),
    ({"do_sample": "yes"}, InvalidArgumentError, "do_sample must be True or False"),
    ({"do_sample": True, "temperature": 0}, InvalidActionError, "temperature must be a positive number"),
]


@pytest.mark.parametrize(
    ("options", "error", "fragment"), BAD_GENERATE_OPTIONS, ids=[f for *_, f in BAD_GENERATE_OPTIONS]
)
def test_generate_refuses_bad_options(tiny, no_prefill, options, error, fragment):
    model, tokenizer = tiny
    options = {"max_new_tokens": 2} | options
    assert_refused(lambda: rlprune.generate(model, tokenizer, QUESTION, **options), error, fragment)


@pytest.mark.parametrize("tokenizer", [None, "gpt2", 5])
def test_generate_refuses_what_is_not_a_tokenizer(tiny, no_prefill, tokenizer):
    model, _ = tiny
    assert_refused(lambda: rlprune.generate(model, tokenizer, QUESTION), InvalidArgumentError, "tokenizer must be")


# -- apply and generate: the policy -----------------------------------------------------------------

BAD_POLICIES = [None, 123, 1.5, "", "   ", b"snapkv", ["snapkv"], object(), LayerAction("prune", 0.5)]


@pytest.mark.parametrize("policy", BAD_POLICIES, ids=repr)
def test_apply_refuses_what_is_not_a_policy_up_front(tiny, policy):
    model, _ = tiny
    assert_refused(lambda: enter_apply(model, policy), PolicyError, "policy must be a baseline spec")
    assert "forward" not in model.__dict__  # the model was never touched


@pytest.mark.parametrize("policy", [None, 123, ""], ids=repr)
def test_generate_refuses_what_is_not_a_policy(tiny, no_prefill, policy):
    model, tokenizer = tiny
    assert_refused(lambda: rlprune.generate(model, tokenizer, QUESTION, policy=policy), PolicyError, "policy must be")


def test_a_checkpoint_folder_is_a_policy_as_a_str_or_a_path(tiny, tmp_path):
    model, _ = tiny
    save_policy(ReductionPolicy(decision_layers=(1, 2)), tmp_path / "policy", model=model)
    outputs = []
    for folder in (tmp_path / "policy", str(tmp_path / "policy")):
        with rlprune.apply(model, folder, budget=np.float32(0.5)):
            outputs.append(model.generate(IDS, max_new_tokens=3, do_sample=False))
    assert torch.equal(*outputs)


def test_a_policy_object_and_its_spec_give_the_same_tokens(tiny):
    model, _ = tiny
    with rlprune.apply(model, "snapkv", budget=0.5):
        by_name = model.generate(IDS, max_new_tokens=4, do_sample=False)
    with rlprune.apply(model, make_baseline("snapkv"), budget=0.5):
        by_object = model.generate(IDS, max_new_tokens=4, do_sample=False)
    assert torch.equal(by_name, by_object)


# -- budgets: one check for apply, generate and the CLI ---------------------------------------------

BAD_BUDGETS = [True, False, 0, 0.0, -0.2, 1.5, math.nan, math.inf, "0.5", np.float32(1.5), np.float64(math.nan),
               torch.tensor(0.5), [0.5]]  # fmt: skip


@pytest.mark.parametrize("budget", BAD_BUDGETS, ids=repr)
def test_apply_refuses_bad_budgets(tiny, budget):
    model, _ = tiny
    assert_refused(
        lambda: enter_apply(model, "snapkv", budget=budget), InvalidArgumentError, "budget must be a number in (0, 1]"
    )
    assert "forward" not in model.__dict__


@pytest.mark.parametrize("budget", [True, 0, math.nan, "0.5"], ids=repr)
def test_generate_refuses_bad_budgets(tiny, no_prefill, budget):
    model, tokenizer = tiny
    assert_refused(
        lambda: rlprune.generate(model, tokenizer, QUESTION, policy="snapkv", budget=budget),
        InvalidArgumentError,
        "budget must be a number in (0, 1]",
    )


@pytest.mark.parametrize("budget", [np.float32(0.5), np.float64(0.5), np.float16(0.5)], ids=repr)
def test_numpy_budgets_run_like_floats(tiny, budget):
    model, tokenizer = tiny
    with rlprune.apply(model, "snapkv", budget=budget):
        numpy = model.generate(IDS, max_new_tokens=3, do_sample=False)
    with rlprune.apply(model, "snapkv", budget=0.5):
        plain = model.generate(IDS, max_new_tokens=3, do_sample=False)
    assert torch.equal(numpy, plain)
    text = rlprune.generate(
        model, tokenizer, QUESTION, context=CONTEXT, policy="snapkv", budget=budget, max_new_tokens=2
    )
    assert text == rlprune.generate(
        model, tokenizer, QUESTION, context=CONTEXT, policy="snapkv", budget=0.5, max_new_tokens=2
    )


def test_the_cli_and_the_harness_use_the_one_budget_check():
    from rlprune import inference, validate
    from rlprune.eval import harness

    assert inference.check_budget is validate.check_budget is harness.check_budget


@pytest.mark.parametrize("protect_last", [2.5, True, -1, "3"], ids=repr)
def test_apply_refuses_bad_protect_last_up_front(tiny, protect_last):
    model, _ = tiny
    assert_refused(
        lambda: enter_apply(model, "snapkv", protect_last=protect_last), InvalidActionError, "protect_last must be"
    )


# -- Reducer.run, start and step -------------------------------------------------------------------

BAD_RUN_ARGUMENTS = [
    ({"protect_last": 2.5}, InvalidActionError, "protect_last must be an integer >= 0, got 2.5"),
    ({"protect_last": True}, InvalidActionError, "protect_last must be an integer >= 0, got True"),
    ({"protect_last": -1}, InvalidActionError, "protect_last must be an integer >= 0, got -1"),
    ({"protect_last": "3"}, InvalidActionError, "protect_last must be an integer >= 0, got '3'"),
    ({"protect_last": np.float64(2.0)}, InvalidActionError, "protect_last must be an integer"),
    ({"prompt_length": 2.5}, InvalidPromptError, "prompt_length must be an integer >= 1, got 2.5"),
    ({"prompt_length": True}, InvalidPromptError, "prompt_length must be an integer >= 1, got True"),
    ({"prompt_length": 0}, InvalidPromptError, "prompt_length must be an integer >= 1, got 0"),
    ({"logits": "some"}, InvalidArgumentError, "logits must be 'last', 'all' or 'continuation'"),
    ({"logits": None}, InvalidArgumentError, "logits must be 'last', 'all' or 'continuation'"),
    ({"decision_layers": 2}, InvalidActionError, "decision_layers must be a list of layer numbers (ints), got 2"),
    ({"decision_layers": [1.5]}, InvalidActionError, "decision_layers must be a list of layer numbers"),
    ({"decision_layers": ["1"]}, InvalidActionError, "decision_layers must be a list of layer numbers"),
    ({"decision_layers": [True]}, InvalidActionError, "decision_layers must be a list of layer numbers"),
    ({"decision_layers": "12"}, InvalidActionError, "decision_layers must be a list of layer numbers"),
    ({"attention_mask": [[1] * 37]}, InvalidPromptError, "attention_mask goes with a (B, n) tensor"),
    ({"resume_from": "cached"}, InvalidArgumentError, "resume_from must be a hidden-state tensor"),
]


@pytest.mark.parametrize(("kwargs", "error", "fragment"), BAD_RUN_ARGUMENTS, ids=[f for *_, f in BAD_RUN_ARGUMENTS])
def test_run_refuses_bad_arguments(llama, kwargs, error, fragment):
    reducer = Reducer(llama)
    kwargs = {"decision_layers": [1]} | kwargs if "resume_from" in kwargs else kwargs
    actions = (lambda state: LayerAction("prune", 0.5)) if "decision_layers" in kwargs else None
    assert_refused(lambda: reducer.run(IDS, actions, **kwargs), error, fragment)


def test_a_bad_logits_choice_is_refused_before_the_prefill(llama, no_prefill):
    assert_refused(lambda: Reducer(llama).run(IDS, logits="every"), InvalidArgumentError, "logits must be")


BAD_BATCH_ARGUMENTS = [
    ({"protect_last": [1, 2.5]}, InvalidActionError, "protect_last must be an integer >= 0, got 2.5"),
    ({"protect_last": [1, None, 3]}, InvalidActionError, "protect_last has 3 items for 2 prompt"),
    ({"prompt_length": [2, True]}, InvalidPromptError, "prompt_length must be an integer >= 1, got True"),
]


@pytest.mark.parametrize(("kwargs", "error", "fragment"), BAD_BATCH_ARGUMENTS, ids=[f for *_, f in BAD_BATCH_ARGUMENTS])
def test_run_refuses_bad_per_prompt_arguments(llama, kwargs, error, fragment):
    assert_refused(lambda: Reducer(llama).run([[5, 6, 7, 8], [9, 10, 11]], **kwargs), error, fragment)


BAD_INPUT_IDS = [
    (None, "input_ids must be token ids"),
    ("hello", "input_ids must be token ids"),
    ([[1, 2], "ab"], "input_ids must be token ids"),
    ([], "the prompt is empty"),
    ([1.5, 2.5], "token ids must be integers"),
    (torch.rand(1, 5), "token ids must be integers"),
    ([True, False], "token ids must be integers"),
]


@pytest.mark.parametrize(("input_ids", "fragment"), BAD_INPUT_IDS, ids=[repr(i)[:20] for i, _ in BAD_INPUT_IDS])
def test_run_refuses_what_are_not_token_ids(llama, input_ids, fragment):
    assert_refused(lambda: Reducer(llama).run(input_ids), InvalidPromptError, fragment)


def test_numpy_integers_are_token_ids_protect_last_and_layers(llama):
    reducer = Reducer(llama)
    ids = IDS[0].tolist()
    plain = reducer.run(ids, {1: LayerAction("prune", 0.5)}, protect_last=4)
    numpy = reducer.run([np.int64(i) for i in ids], {np.int64(1): LayerAction("prune", 0.5)}, protect_last=np.int32(4))
    assert torch.equal(plain.logits, numpy.logits)
    decide = lambda state: LayerAction("prune", 0.5)  # noqa: E731
    by_numpy = reducer.run(IDS, decide, decision_layers=np.array([1, 2]), prompt_length=np.int64(30))
    by_list = reducer.run(IDS, decide, decision_layers=[1, 2], prompt_length=30)
    assert torch.equal(by_numpy.logits, by_list.logits)


BAD_STEPS = [
    ({"state": None}, InvalidArgumentError, "state must be what start() or step() returned"),
    ({"state": IDS}, InvalidArgumentError, "state must be what start() or step() returned"),
    ({"action": "prune:0.5"}, InvalidActionError, "expected a LayerAction"),
    ({"advance": "no"}, InvalidArgumentError, "advance must be True or False"),
]


@pytest.mark.parametrize(("kwargs", "error", "fragment"), BAD_STEPS, ids=[f for *_, f in BAD_STEPS])
def test_step_refuses_bad_arguments(llama, kwargs, error, fragment):
    reducer = Reducer(llama)
    arguments = {"state": reducer.start(IDS, decision_layers=[1]), "action": LayerAction("prune", 0.5)} | kwargs
    assert_refused(lambda: reducer.step(**arguments), error, fragment)


# -- Reducer.generate: numbers and sampling settings -----------------------------------------------

BAD_DECODING = [
    ({"max_new_tokens": 0}, InvalidArgumentError, "max_new_tokens must be an integer >= 1, got 0"),
    ({"max_new_tokens": 2.5}, InvalidArgumentError, "max_new_tokens must be an integer >= 1, got 2.5"),
    ({"max_new_tokens": "3"}, InvalidArgumentError, "max_new_tokens must be an integer >= 1, got '3'"),
    ({"max_new_tokens": True}, InvalidArgumentError, "max_new_tokens must be an integer >= 1, got True"),
    ({"do_sample": "yes"}, InvalidArgumentError, "do_sample must be True or False"),
    ({"do_sample": 1}, InvalidArgumentError, "do_sample must be True or False"),
    ({"do_sample": True, "temperature": "1"}, InvalidActionError, "temperature must be a positive number"),
    ({"do_sample": True, "temperature": True}, InvalidActionError, "temperature must be a positive number"),
    ({"do_sample": True, "temperature": math.inf}, InvalidActionError, "temperature must be a positive number"),
    ({"do_sample": True, "top_k": 2.5}, InvalidActionError, "top_k must be an integer >= 0, got 2.5"),
    ({"do_sample": True, "top_k": True}, InvalidActionError, "top_k must be an integer >= 0, got True"),
    ({"do_sample": True, "top_p": math.nan}, InvalidActionError, "top_p must be a number in (0, 1]"),
    ({"do_sample": True, "top_p": "0.9"}, InvalidActionError, "top_p must be a number in (0, 1]"),
    ({"do_sample": True, "generator": 5}, InvalidArgumentError, "generator must be a torch.Generator"),
    ({"eos_token_id": "x"}, InvalidArgumentError, "eos_token_id must be an integer >= 0"),
    ({"eos_token_id": [2, 1.5]}, InvalidArgumentError, "eos_token_id must be an integer >= 0, got 1.5"),
    ({"eos_token_id": -1}, InvalidArgumentError, "eos_token_id must be an integer >= 0, got -1"),
]


@pytest.mark.parametrize(("kwargs", "error", "fragment"), BAD_DECODING, ids=[f for *_, f in BAD_DECODING])
def test_generate_refuses_bad_settings_before_the_prefill(llama, no_prefill, kwargs, error, fragment):
    assert_refused(lambda: Reducer(llama).generate(IDS, **{"max_new_tokens": 2} | kwargs), error, fragment)


def test_numpy_sampling_settings_sample_like_floats(llama):
    reducer = Reducer(llama)

    def sample(**settings):
        generator = torch.Generator().manual_seed(0)
        return reducer.generate(IDS, max_new_tokens=5, do_sample=np.bool_(True), generator=generator, **settings)

    numpy = sample(temperature=np.float32(0.7), top_k=np.int64(10), top_p=np.float64(0.9))
    plain = sample(temperature=0.7, top_k=10, top_p=0.9)
    assert torch.equal(numpy.tokens, plain.tokens)
    assert reducer.generate(IDS, max_new_tokens=np.int64(3), eos_token_id=[]).tokens.shape == (1, 3)


# -- the Reducer's constructor and its config --------------------------------------------------------

BAD_CONFIGS = [
    ({"protect_last": 2.5}, "ReducerConfig.protect_last must be an integer >= 0, got 2.5"),
    ({"protect_first": True}, "ReducerConfig.protect_first must be an integer >= 0, got True"),
    ({"pool": 0}, "ReducerConfig.pool must be an integer >= 1, got 0"),
    ({"merge_window": "8"}, "ReducerConfig.merge_window must be an integer >= 1, got '8'"),
    ({"window": 0.5}, "ReducerConfig.window must be an integer >= 1, got 0.5"),
]


@pytest.mark.parametrize(("kwargs", "fragment"), BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_reducer_config_refuses_bad_numbers(kwargs, fragment):
    assert_refused(lambda: ReducerConfig(**kwargs), InvalidActionError, fragment)


@pytest.mark.parametrize("model", [None, "smollm2-135m", 5], ids=repr)
def test_reducer_refuses_what_is_not_a_model(model):
    assert_refused(lambda: Reducer(model), InvalidArgumentError, "model must be a Hugging Face causal LM")


@pytest.mark.parametrize("config", [5, {"protect_last": 2}], ids=repr)
def test_reducer_refuses_a_config_that_is_not_a_reducer_config(llama, config):
    assert_refused(lambda: Reducer(llama, config), InvalidArgumentError, "config must be a ReducerConfig")


def test_a_model_on_the_eager_kernel_is_refused():
    """The reducer leaves plain causal masking to SDPA: on the eager kernel it would attend to the future."""
    model = tiny_model("llama")
    model.config._attn_implementation = "eager"
    assert_refused(lambda: Reducer(model), UnsupportedModelError, "attn_implementation='sdpa'")


# -- load_model -----------------------------------------------------------------------------------

BAD_LOADS = [
    ({"name_or_path": 5}, "name_or_path must be a model alias"),
    ({"name_or_path": None}, "name_or_path must be a model alias"),
    ({"name_or_path": ""}, "name_or_path must be a model alias"),
    ({"name_or_path": b"tiny-random"}, "name_or_path must be a model alias"),
    ({"dtype": "int8"}, "unknown dtype 'int8'; use one of float32, bfloat16, float16"),
    ({"dtype": torch.int8}, "dtype torch.int8 is not supported"),
    ({"dtype": 5}, "unknown dtype 5"),
    ({"dtype": None}, "unknown dtype None"),
    ({"device": 5}, "device must be a str such as 'cpu'"),
    ({"device": []}, "device must be a str such as 'cpu'"),
    ({"device": "toaster"}, "unknown device 'toaster'"),
    ({"attn_implementation": "eager"}, "attn_implementation must be one of 'sdpa'"),
    ({"attn_implementation": 5}, "attn_implementation must be one of 'sdpa'"),
]


@pytest.mark.parametrize(("kwargs", "fragment"), BAD_LOADS, ids=[f for _, f in BAD_LOADS])
def test_load_model_refuses_bad_arguments_before_loading(monkeypatch, kwargs, fragment):
    monkeypatch.setattr("rlprune.models._load", lambda *a: pytest.fail("the model was loaded"))
    arguments = {"name_or_path": "tiny-random"} | kwargs
    assert_refused(lambda: load_model(**arguments), InvalidArgumentError, fragment)


def test_load_model_takes_a_path_a_torch_dtype_and_a_torch_device(tiny_model_dir):
    model, tokenizer = load_model(Path(tiny_model_dir), dtype=torch.bfloat16, device=torch.device("cpu"))
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    assert len(tokenizer("the town")["input_ids"]) == 2

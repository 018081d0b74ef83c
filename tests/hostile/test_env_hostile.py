"""Hostile input to the Gymnasium environments: actions outside the action space, bad reset options,
budgets and sizes each raise an RLPruneError naming the argument, and good input still works
(tiny random model, the "smoke" preset)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rlprune.config import ConfigError
from rlprune.envs import EnvConfig, EpisodeConfig, TokenLevelEnv, TokenReductionEnv, make_vector_env
from rlprune.errors import InvalidActionError, RLPruneError
from rlprune.models import load_model
from rlprune.reduction import LayerAction

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("references")


@pytest.fixture(scope="module")
def env(tiny, cache_dir):
    model, tokenizer = tiny
    return TokenReductionEnv("smoke", model=model, tokenizer=tokenizer, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def token_env(env):
    return TokenLevelEnv(env, max_tokens=1024)


@pytest.fixture(scope="module")
def vector(tiny, cache_dir):
    model, tokenizer = tiny
    return make_vector_env("smoke", num_envs=2, model=model, tokenizer=tokenizer, cache_dir=cache_dir)


def raises(error: type[Exception], *fragments: str):
    """``pytest.raises`` for an error whose one-line message holds every fragment."""
    return pytest.raises(error, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def first_layer(env: TokenReductionEnv) -> int:
    return env.config.episode.decision_layers[0]


# -- actions ----------------------------------------------------------------------------------------

BAD_ACTIONS = [
    pytest.param([-1, 0, 0], "must lie in", id="negative-wraps"),
    pytest.param([3, 0, 0], "must lie in", id="op-too-big"),
    pytest.param([0, 6, 0], "must lie in", id="share-too-big"),
    pytest.param([0, 0, 4], "must lie in", id="scorer-too-big"),
    pytest.param(np.array([0, 0, 2**40]), "must lie in", id="huge-int"),
    pytest.param([1.7, 2.2, 0.5], "integers", id="fractions-truncated"),
    pytest.param([1.0, 0.0, 0.0], "integers", id="integer-valued-floats"),
    pytest.param([True, False, False], "integers", id="booleans"),
    pytest.param(None, "integers", id="none"),
    pytest.param("prune", "integers", id="string"),
    pytest.param({"op": 1}, "integers", id="dict"),
    pytest.param([1, [2], 3], "integers", id="ragged"),
    pytest.param([0, 0], "shape", id="too-short"),
    pytest.param([0, 0, 0, 0], "shape", id="too-long"),
    pytest.param([[0, 0, 0]], "shape", id="batched"),
    pytest.param(1, "shape", id="scalar"),
]


@pytest.mark.parametrize(("action", "problem"), BAD_ACTIONS)
def test_actions_outside_the_space_are_refused_and_change_nothing(env, action, problem):
    env.reset(seed=0, options={"task_index": 0})
    with raises(InvalidActionError, "action", "MultiDiscrete([3 6 4])", problem):
        env.step(action)
    _, _, _, _, info = env.step([0, 0, 0])  # the episode is still at its first decision layer
    assert info["layer"] == first_layer(env)


@pytest.mark.parametrize(
    "action",
    [
        pytest.param([1, 2, 0], id="list"),
        pytest.param((2, 5, 3), id="tuple"),
        pytest.param(np.array([1, 0, 1], dtype=np.int32), id="int32"),
        pytest.param(np.array([1, 0, 1], dtype=np.uint8), id="uint8"),
        pytest.param(LayerAction("prune", 0.3), id="layer-action"),
    ],
)
def test_actions_in_the_space_step(env, action):
    env.reset(seed=0, options={"task_index": 1})
    _, reward, _, _, info = env.step(action)
    assert math.isfinite(reward) and info["layer"] == first_layer(env)


@pytest.mark.parametrize(
    ("action", "problem"),
    [
        pytest.param(np.zeros(5, dtype=np.float32), "shape", id="too-short"),
        pytest.param(np.full(1026, NAN, dtype=np.float32), "finite", id="nan"),
        pytest.param(np.full(1026, 1e3, dtype=np.float32), "finite", id="beyond-key-bound"),
        pytest.param(np.full(1026, -INF), "finite", id="minus-inf"),
        pytest.param("prune", "numbers", id="string"),
        pytest.param(None, "numbers", id="none"),
    ],
)
def test_token_env_refuses_actions_outside_its_box(token_env, action, problem):
    token_env.reset(seed=0, options={"task_index": 0})
    with raises(InvalidActionError, "action", "Box(-100.0, 100.0, (1026,), float32)", problem):
        token_env.step(action)


def test_token_env_takes_float64_keys_in_its_box(token_env):
    token_env.reset(seed=0, options={"task_index": 0})
    action = np.concatenate(([1.0, 3.0], np.linspace(-1, 1, token_env.max_tokens)))  # float64
    _, _, _, _, info = token_env.step(action)
    assert info["layer"] == first_layer(token_env.base) and "prune" in info["action"]


@pytest.mark.parametrize(
    ("actions", "problem"),
    [
        pytest.param(np.array([0, 0, 0]), "shape", id="one-row"),
        pytest.param(np.zeros((3, 3), dtype=np.int64), "shape", id="too-many-rows"),
        pytest.param(np.array([[0, 0, 0], [-1, 0, 0]]), "low and high", id="negative-row"),
        pytest.param(np.array([[0, 0, 0], [3, 0, 0]]), "low and high", id="op-too-big"),
        pytest.param(np.array([[0.0, 0, 0], [1.5, 0, 0]]), "integers", id="floats"),
        pytest.param([[0, 0, 0], None], "integers", id="none-row"),
    ],
)
def test_vector_env_refuses_actions_outside_its_batch_space(vector, actions, problem):
    vector.reset(seed=0)
    with raises(InvalidActionError, "actions", "(2, 3), int64", problem):
        vector.step(actions)
    _, _, _, _, infos = vector.step(np.zeros((2, 3), dtype=np.int32))  # still at the first layer
    assert list(infos["layer"]) == [first_layer(vector.envs[0])] * 2


# -- reset options --------------------------------------------------------------------------------

BAD_OPTIONS = [
    pytest.param({"task_index": 999}, "task_index", id="index-too-big"),
    pytest.param({"task_index": 8}, "task_index", id="index-one-past-the-end"),
    pytest.param({"task_index": -1}, "task_index", id="index-negative"),
    pytest.param({"task_index": 2.7}, "task_index", id="index-float"),
    pytest.param({"task_index": np.float64(1.0)}, "task_index", id="index-numpy-float"),
    pytest.param({"task_index": "1"}, "task_index", id="index-string"),
    pytest.param({"task_index": True}, "task_index", id="index-bool"),
    pytest.param({"task_index": None}, "task_index", id="index-none"),
    pytest.param({"budget": 0}, "budget", id="budget-zero"),
    pytest.param({"budget": 5}, "budget", id="budget-five"),
    pytest.param({"budget": -1}, "budget", id="budget-negative"),
    pytest.param({"budget": 1.0001}, "budget", id="budget-above-one"),
    pytest.param({"budget": NAN}, "budget", id="budget-nan"),
    pytest.param({"budget": INF}, "budget", id="budget-inf"),
    pytest.param({"budget": True}, "budget", id="budget-bool"),
    pytest.param({"budget": "0.5"}, "budget", id="budget-string"),
    pytest.param({"budget": None}, "budget", id="budget-none"),
    pytest.param({"budgett": 0.5}, "'budgett'", id="unknown-key"),
    pytest.param({"task_index": 0, "seed": 1}, "'seed'", id="unknown-key-beside-known"),
    pytest.param([("budget", 0.5)], "options must be a dict", id="not-a-dict"),
]


@pytest.mark.parametrize(("options", "name"), BAD_OPTIONS)
def test_bad_reset_options_are_refused_naming_the_option(env, options, name):
    with raises(RLPruneError, name):
        env.reset(seed=0, options=options)


def test_unknown_options_list_the_known_ones(env):
    with raises(RLPruneError, "budgett", "known: task_index, budget"):
        env.reset(options={"budgett": 0.5})


def test_task_index_error_says_how_many_tasks(env):
    with raises(RLPruneError, "task_index", "[0, 8)", "8 train tasks", "999"):
        env.reset(options={"task_index": 999})


@pytest.mark.parametrize("options", [BAD_OPTIONS[0].values[0], {"budget": 5}, {"budgett": 0.5}])
def test_vector_env_refuses_bad_options(vector, options):
    with pytest.raises(RLPruneError):
        vector.reset(seed=0, options=options)


@pytest.mark.parametrize(
    ("options", "task", "budget"),
    [
        pytest.param({"task_index": np.int64(3), "budget": np.float32(0.5)}, 3, 0.5, id="numpy-scalars"),
        pytest.param({"task_index": 7, "budget": 1}, 7, 1.0, id="last-task-full-budget"),
        pytest.param({"task_index": 0}, 0, None, id="index-only"),
        pytest.param({}, None, None, id="empty"),
    ],
)
def test_good_options_pick_that_task_and_budget(env, options, task, budget):
    _, info = env.reset(seed=0, options=options)
    if task is not None:
        assert info["task"] == env.tasks[task].uid
    if budget is not None:
        assert info["budget"] == pytest.approx(budget) and type(info["budget"]) is float
    else:
        assert 0.3 <= info["budget"] <= 0.9  # drawn from the preset's range


# -- budgets and sizes given to constructors ------------------------------------------------------


@pytest.mark.parametrize("budget", [0, -0.5, 1.5, NAN, INF, True, "0.5"])
def test_env_budget_argument_is_checked(tiny, cache_dir, budget):
    model, tokenizer = tiny
    with raises(RLPruneError, "budget", "(0, 1]"):
        TokenReductionEnv("smoke", model=model, tokenizer=tokenizer, budget=budget, cache_dir=cache_dir)


@pytest.mark.parametrize("text", ["budget = nan", "budget = [0.3, inf]", "budget = [-inf, 0.5]", "budget = [0.5, 1.5]"])
def test_preset_budget_range_is_checked(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(f'model = "tiny-random"\n[episode]\n{text}\n')
    with raises(ConfigError, "budget", "(0, 1]"):
        EnvConfig.load(path)


@pytest.mark.parametrize("budget", [(True,), (NAN,), (0.9, 0.3), ()])
def test_episode_config_budget_is_checked_from_python(budget):
    with raises(ValueError, "budget"):
        EpisodeConfig(budget=budget)


@pytest.mark.parametrize("num_envs", ["2", 0, -1, 2.0, True, None])
def test_make_vector_env_needs_a_positive_integer(num_envs):
    with raises(RLPruneError, "num_envs", "integer", repr(num_envs)):
        make_vector_env("smoke", num_envs)


def test_vector_env_seed_list_must_have_one_seed_per_row(vector):
    with raises(RLPruneError, "seed", "list of 2"):
        vector.reset(seed=[1, 2, 3])


@pytest.mark.parametrize("max_tokens", [0, "1024", 2.5])
def test_token_env_max_tokens_must_be_a_positive_integer(env, max_tokens):
    with raises(RLPruneError, "max_tokens"):
        TokenLevelEnv(env, max_tokens=max_tokens)


def test_the_checked_env_still_passes_the_gymnasium_checker(tiny, cache_dir):
    model, tokenizer = tiny
    check_env(TokenReductionEnv("smoke", model=model, tokenizer=tokenizer, cache_dir=cache_dir))

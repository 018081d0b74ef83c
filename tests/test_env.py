"""The Gymnasium environment: API conformance, determinism and reward sanity (tiny model)."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rlprune.envs  # noqa: F401  (registers the environment)
from rlprune.config import ConfigError
from rlprune.engine.features import OBSERVATION_FIELDS, OBSERVATION_SIZE, ActionSpec
from rlprune.envs import ENV_ID, EnvConfig, TokenReductionEnv
from rlprune.reduction import LayerAction


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("references")


@pytest.fixture
def env(cache_dir):
    return TokenReductionEnv("smoke", cache_dir=cache_dir)


def play(env, actions, **options):
    """One episode with fixed actions; returns (observations, rewards, final info)."""
    obs, _ = env.reset(seed=options.pop("seed", 0), options=options)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        if terminated:
            return observations, rewards, info
    raise AssertionError("the episode did not end")


KEEP3 = [LayerAction()] * 3


def test_passes_the_gymnasium_checker(cache_dir):
    check_env(gym.make(ENV_ID, preset="smoke", cache_dir=cache_dir).unwrapped)


def test_is_registered(cache_dir):
    env = gym.make(ENV_ID, preset="smoke", cache_dir=cache_dir)
    obs, info = env.reset(seed=1)
    assert obs.shape == (OBSERVATION_SIZE,) == (len(OBSERVATION_FIELDS),)
    assert env.action_space.nvec.tolist() == ActionSpec().nvec


def test_same_seed_same_observations_and_rewards(cache_dir):
    actions = [LayerAction("prune", 0.5, "relevance"), LayerAction("merge", 0.35), LayerAction("prune", 0.2)]
    first = play(TokenReductionEnv("smoke", cache_dir=cache_dir), actions, seed=3)
    second = play(TokenReductionEnv("smoke", cache_dir=cache_dir), actions, seed=3)
    for a, b in zip(first[0], second[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert first[1] == second[1]
    assert first[2]["kl"] == second[2]["kl"]


def test_random_actions_from_many_seeds_stay_in_the_spaces(env):
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            assert env.observation_space.contains(obs)
            mask = env.action_masks()
            assert mask.shape == (sum(env.action_spec.nvec),) and mask[0]
            obs, reward, done, _, info = env.step(env.action_space.sample())
            assert math.isfinite(reward)
        assert 0 < info["flops_ratio"] <= 1.05 and info["kl"] >= 0


def test_no_reduction_costs_nothing_and_changes_nothing(env):
    for index in range(4):
        _, rewards, info = play(env, KEEP3, task_index=index)
        assert info["kl"] < 1e-6
        assert info["agreement"] == 1.0
        assert info["hallucination_excess"] < 1e-6
        assert info["flops_ratio"] == pytest.approx(1.0)
        assert rewards[:-1] == [0.0, 0.0]


def test_savings_are_paid_per_step_as_earned_down_to_the_budget(env):
    actions = [LayerAction("prune", 0.5), LayerAction(), LayerAction("prune", 0.5)]
    _, rewards, info = play(env, actions, task_index=0, budget=0.05)
    assert rewards[0] > 0 and rewards[1] == 0.0
    before_last = rewards[0] + rewards[1]
    assert 0 < before_last < 1 - info["flops_ratio"]  # the last step's savings come with the final reward
    _, capped, capped_info = play(env, actions, task_index=0, budget=0.9)
    assert capped[0] == pytest.approx(0.1 * env.config.reward.flops, abs=1e-9)  # nothing below the budget
    assert capped[1] == 0.0 and capped_info["flops_ratio"] < 0.9


def test_heavy_early_pruning_hurts_far_more_than_light_late_pruning(env):
    kls_heavy, kls_light = [], []
    for index in range(4):
        heavy = [LayerAction("prune", 1.0, "attention"), LayerAction(), LayerAction()]
        light = [LayerAction(), LayerAction(), LayerAction("prune", 0.1, "attention")]
        kls_heavy.append(play(env, heavy, task_index=index)[2]["kl"])
        kls_light.append(play(env, light, task_index=index)[2]["kl"])
    assert np.mean(kls_heavy) > 10 * np.mean(kls_light)


def test_going_over_the_budget_is_penalised(env):
    actions = [LayerAction("prune", 0.35), LayerAction(), LayerAction()]
    _, loose, info = play(env, actions, task_index=1, budget=1.0)
    _, tight, _ = play(env, actions, task_index=1, budget=0.3)
    over = info["flops_ratio"] - 0.3
    assert over > 0
    weights = env.config.reward
    # the tight budget pays for every saving but charges for ending above it; the loose one neither
    expected = weights.over_budget * over - weights.flops * (1 - info["flops_ratio"])
    assert sum(loose) - sum(tight) == pytest.approx(expected)


def test_fixed_budget_and_drawn_budgets(cache_dir):
    fixed = TokenReductionEnv("smoke", cache_dir=cache_dir, budget=0.5)
    assert {fixed.reset(seed=s)[1]["budget"] for s in range(3)} == {0.5}
    drawn = TokenReductionEnv("smoke", cache_dir=cache_dir)
    budgets = {drawn.reset(seed=s)[1]["budget"] for s in range(5)}
    assert len(budgets) == 5 and all(0.3 <= b <= 0.9 for b in budgets)


def test_only_keep_applies_when_nothing_is_removable(env):
    env.reset(seed=0, options={"task_index": 0})
    assert env.action_masks()[:3].tolist() == [True, True, True]
    env.reducer.step(env._state, LayerAction("prune", 1.0))  # beyond the largest ratio bin
    assert env.action_masks()[:3].tolist() == [True, False, False]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model = "tiny-random"\nbogus = 1\n', "unknown key(s) bogus"),
        ("[episode]\nbudget = [0.5, 1.5]\n", "(0, 1]"),
        ("[episode]\nbudget = 0\n", "(0, 1]"),
        ("[episode]\ndecision_layers = [4, 2]\n", "ascending"),
        ("[tasks]\nmix = { riddles = 1.0 }\n", "unknown task kind(s) riddles"),
        ("[reward]\nkl = -1.0\n", "non-negative"),
        ('[reward]\nkl = "high"\n', "must be a number"),
        ("[tasks]\ntrain_size = 2.5\n", "must be an integer"),
        ("[episode\n", "not valid TOML"),
        ('[episode]\nscorers = ["relevance:unit=sentence"]\n', "offers chunks"),
        ('[episode]\nscorers = ["relevance:size=3"]\n', "bad span options"),
    ],
)
def test_bad_presets_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        EnvConfig.load(path)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="grounded-qa.*smoke"):
        EnvConfig.load("no-such-preset")


def test_decision_layers_must_exist_in_the_model(tmp_path, cache_dir):
    config = EnvConfig.load("smoke")
    path = tmp_path / "deep.toml"
    path.write_text('model = "tiny-random"\n[episode]\ndecision_layers = [1, 9]\n')
    with pytest.raises(ConfigError, match="decision layer 9 does not exist"):
        TokenReductionEnv(path, cache_dir=cache_dir)
    assert config.episode.decision_layers == (1, 2, 3)


def test_a_preset_can_offer_span_shaped_scorers(tmp_path, cache_dir):
    from rlprune.policies import ReductionPolicy, load_policy, save_policy

    path = tmp_path / "spans.toml"
    smoke = (Path(rlprune.envs.__file__).parents[2] / "envs" / "smoke.toml").read_text()
    path.write_text(
        smoke.replace("protect_first = 1", 'protect_first = 1\nscorers = ["relevance", "relevance:unit=16"]')
    )
    env = TokenReductionEnv(path, cache_dir=cache_dir, budget=0.5)
    spec = env.action_spec
    assert env.action_space.nvec.tolist() == [len(spec.ops), len(spec.shares), 2]
    env.reset(seed=0, options={"task_index": 0})
    features = env.features()
    choice = [spec.ops.index("prune"), spec.shares.index(1.0)]
    plain, chunked = (spec.decode([*choice, scorer], features) for scorer in (0, 1))
    assert (chunked.scorer, chunked.unit, plain.unit) == ("relevance", "16", "token")
    assert features.ratio_after({env._state.layer: chunked}) == features.ratio_after({env._state.layer: plain})
    env.step(np.array([*choice, 1]))
    state = env._state
    gone = sorted(set(range(state.prompt_length)) - set(state.positions.tolist()))
    chunks = {p // 16 for p in gone}
    protected = set(range(state.protect_first)) | set(
        range(state.prompt_length - state.protect_last, state.prompt_length)
    )
    cut = [c for c in chunks if set(range(16 * c, min(16 * c + 16, state.prompt_length))) - protected - set(gone)]
    assert gone and len(cut) <= 1  # whole chunks of 16 went, but the one cut to meet the budget
    policy = ReductionPolicy(hidden=(8,), decision_layers=(1, 2, 3), action_spec=spec)
    save_policy(policy, tmp_path / "policy")
    assert load_policy(tmp_path / "policy").action_spec == spec  # the choices travel with the checkpoint


def test_shipped_presets_load():
    for name in ("grounded-qa", "mixed", "smoke"):
        config = EnvConfig.load(name)
        assert config.reward.over_budget > 0 and config.tasks.train_size >= 1


@pytest.mark.parametrize("budget", [0.4, 0.6, 0.8])
def test_closing_the_gap_meets_the_budget(env, budget):
    spec = env.action_spec
    for index in range(3):
        env.reset(seed=index, options={"task_index": index, "budget": budget})
        _, _, _, _, info = env.step(spec.encode("prune", 1.0, "relevance"))
        assert info["flops_projected"] == pytest.approx(budget, abs=0.02)
        assert env.action_masks()[:3].tolist() == [True, False, False]  # nothing more to save
        while True:
            _, _, done, _, info = env.step(spec.encode("keep", 0.1, "relevance"))
            if done:
                break
        assert info["flops_ratio"] == pytest.approx(budget, abs=0.02)


def test_a_share_makes_that_part_of_the_needed_savings(env):
    spec = env.action_spec
    env.reset(seed=0, options={"task_index": 2, "budget": 0.4})
    _, _, _, _, info = env.step(spec.encode("merge", 0.5, "similarity"))
    assert info["flops_projected"] == pytest.approx(0.7, abs=0.02)
    _, _, _, _, info = env.step(spec.encode("prune", 0.5, "attention"))
    assert info["flops_projected"] == pytest.approx(0.55, abs=0.02)


def test_the_vector_env_gives_each_row_the_single_envs_rewards(tmp_path):
    """N episodes through one batched reducer score exactly as N single environments with the same seeds."""
    from rlprune.envs import TokenReductionEnv, make_vector_env

    vector = make_vector_env("smoke", num_envs=3, cache_dir=tmp_path)
    singles = [
        TokenReductionEnv("smoke", cache_dir=tmp_path, model=vector.reducer.model, tokenizer=vector.envs[0].tokenizer)
        for _ in range(3)
    ]
    rng = np.random.default_rng(0)
    obs, infos = vector.reset(seed=11)
    single_obs = [env.reset(seed=11 + i)[0] for i, env in enumerate(singles)]
    assert np.allclose(obs, np.stack(single_obs), atol=1e-4)
    assert list(infos["task"]) == [env.episode_info()["task"] for env in singles]
    totals, single_totals = np.zeros(3), np.zeros(3)
    for _ in range(len(vector.envs[0].config.episode.decision_layers)):
        masks = vector.action_masks()
        assert masks.shape == (3, sum(vector.single_action_space.nvec))
        actions = np.stack([vector.single_action_space.sample() for _ in range(3)])
        actions[:, 0] = rng.integers(1, 3, size=3)  # prune or merge, so rows keep different tokens
        obs, rewards, terminated, truncated, infos = vector.step(actions)
        totals += rewards
        for i, env in enumerate(singles):
            single_totals[i] += env.step(actions[i])[1]
    assert terminated.all() and not truncated.any()
    assert np.allclose(totals, single_totals, atol=1e-4)
    final = infos["final_info"]
    assert final["_flops_ratio"].all() and np.all(final["flops_ratio"] <= 1.0)
    assert obs.shape == (3, vector.single_observation_space.shape[0])  # the next episodes already began


def test_final_info_says_whether_the_gold_answer_survived(cache_dir):
    env = TokenReductionEnv("smoke", cache_dir=cache_dir)
    index = next(i for i, task in enumerate(env.tasks) if env.references.get(task).evidence is not None)
    _, _, kept_all = play(env, KEEP3, task_index=index, budget=1.0)
    assert kept_all["evidence_kept"] == 1.0 and kept_all["evidence_share"] == 1.0
    _, _, pruned = play(env, [LayerAction("prune", 1.0, "random")] * 3, task_index=index, budget=0.3)
    assert pruned["evidence_kept"] == 0.0 and pruned["evidence_share"] == 0.0  # every removable token went


def test_evidence_weight_adds_the_share_kept_to_the_reward(cache_dir):
    from dataclasses import replace

    plain = TokenReductionEnv("smoke", cache_dir=cache_dir)
    index = next(i for i, task in enumerate(plain.tasks) if plain.references.get(task).evidence is not None)
    config = replace(plain.config, reward=replace(plain.config.reward, evidence=3.0))
    weighted = TokenReductionEnv(config, cache_dir=cache_dir)
    _, base, info = play(plain, KEEP3, task_index=index, budget=1.0)
    _, more, _ = play(weighted, KEEP3, task_index=index, budget=1.0)
    assert sum(more) - sum(base) == pytest.approx(3.0 * info["evidence_share"])

"""Token-level policies: the Plackett-Luce removal distribution, per-token features, the network,
its checkpoints, the token-level environment and PPO on it."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import random_ids
from gymnasium.utils.env_checker import check_env

from rlprune import LayerAction, Reducer, load_model
from rlprune.engine.features import TOKEN_FEATURE_SIZE, token_features
from rlprune.engine.policy import consult
from rlprune.envs import TokenReductionEnv
from rlprune.envs.token_env import TokenLevelEnv
from rlprune.errors import InvalidActionError
from rlprune.policies import (
    BaselineError,
    PolicyError,
    ReductionPolicy,
    TokenReductionPolicy,
    load_policy,
    make_baseline,
    save_policy,
)
from rlprune.policies.plackett_luce import log_prob_and_entropy, perturb, removal_order


def _sequence_keys(n: int, sequence: tuple[int, ...]) -> torch.Tensor:
    """Keys whose ascending order starts with ``sequence``."""
    keys = torch.full((1, n), 50.0)
    for rank, index in enumerate(sequence):
        keys[0, index] = -10.0 + rank
    return keys


@pytest.fixture
def tiny_case():
    scores = torch.tensor([[0.3, -1.2, 2.0, 0.0, -0.4, 1.1]])
    valid = torch.tensor([[True, True, False, True, True, True]])
    return scores, valid, [i for i in range(6) if valid[0, i]]


def test_sequence_probabilities_sum_to_one_and_entropy_matches_enumeration(tiny_case):
    scores, valid, pool = tiny_case
    for k in (1, 2, 3):
        total = entropy = estimate = 0.0
        for sequence in itertools.permutations(pool, k):
            log_prob, step_entropy = log_prob_and_entropy(scores, _sequence_keys(6, sequence), valid, torch.tensor([k]))
            p = float(log_prob.exp())
            total, entropy, estimate = total + p, entropy - p * float(log_prob), estimate + p * float(step_entropy)
        assert total == pytest.approx(1.0, abs=1e-5)
        assert estimate == pytest.approx(entropy, abs=1e-4)  # the chain-rule estimate is unbiased


def test_log_probability_is_the_plackett_luce_product_by_hand(tiny_case):
    scores, valid, _ = tiny_case
    sequence = (4, 0)
    weights = {i: math.exp(-float(scores[0, i])) for i in (0, 1, 3, 4, 5)}
    expected = weights[4] / sum(weights.values()) * weights[0] / (sum(weights.values()) - weights[4])
    log_prob, _ = log_prob_and_entropy(scores, _sequence_keys(6, sequence), valid, torch.tensor([2]))
    assert float(log_prob.exp()) == pytest.approx(expected, rel=1e-5)


def test_gumbel_sampling_draws_sets_with_their_enumerated_probability(tiny_case):
    scores, valid, pool = tiny_case
    k, draws = 2, 20000
    generator = torch.Generator().manual_seed(0)
    seen = Counter()
    for _ in range(draws):
        order = removal_order(perturb(scores, generator), valid)[0, :k].tolist()
        seen[frozenset(order)] += 1
    for subset in itertools.combinations(pool, k):
        exact = sum(
            float(log_prob_and_entropy(scores, _sequence_keys(6, seq), valid, torch.tensor([k]))[0].exp())
            for seq in itertools.permutations(subset)
        )
        assert seen[frozenset(subset)] / draws == pytest.approx(exact, abs=0.012)
    assert all(2 not in s for s in seen)  # a token outside the pool is never drawn


def test_gradients_are_finite_with_padding_and_nothing_drawn():
    scores = torch.randn(3, 8, requires_grad=True)
    valid = torch.rand(3, 8) > 0.3
    log_prob, entropy = log_prob_and_entropy(scores, perturb(scores.detach()), valid, torch.tensor([0, 2, 3]))
    (log_prob.sum() + entropy.sum()).backward()
    assert torch.isfinite(scores.grad).all() and log_prob[0] == 0 and entropy[0] == 0


def test_learned_scores_remove_exactly_the_lowest_removable_tokens(llama):
    reducer = Reducer(llama)
    n, protect_last = 40, 5
    scores = torch.randn(n, generator=torch.Generator().manual_seed(1))
    out = reducer.run(
        random_ids(n, seed=2), {2: LayerAction("prune", 0.5, "learned", token_scores=scores)}, protect_last=protect_last
    )
    removable = torch.arange(n)[1 : n - protect_last]
    lowest = removable[scores[removable].argsort()[: round(0.5 * removable.numel())]]
    assert not set(lowest.tolist()) & set(out.state.positions.tolist())
    with pytest.raises(ValueError, match="token scores"):
        reducer.run(random_ids(n, seed=2), {2: LayerAction("prune", 0.5, "learned")})
    with pytest.raises(InvalidActionError, match="one per prompt token"):
        reducer.run(random_ids(n, seed=2), {2: LayerAction("prune", 0.5, "learned", token_scores=scores[:-1])})


def test_token_features_are_finite_and_follow_their_tokens(llama):
    reducer = Reducer(llama)
    state = reducer.start(random_ids(50, seed=3), decision_layers=[2], protect_last=6)
    features = token_features(reducer, state, 0.5)
    assert features.shape == (50, TOKEN_FEATURE_SIZE) and torch.isfinite(features).all()
    protected = features[:, -1]
    assert protected[0] == 1 and (protected[-6:] == 1).all() and protected[1:-6].sum() == 0
    assert torch.equal(features[1:, 2], features[:-1, 0])  # attention_lag1 is the previous token's attention


def trained_like(seed: int = 0) -> TokenReductionPolicy:
    policy = TokenReductionPolicy(decision_layers=(1, 2))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
        policy.action_head.weight[:3] = 0.0  # always prune, so the token head decides every time
        policy.action_head.bias[:3] = torch.tensor([0.0, 20.0, 0.0])
    return policy


def _removed(reducer, policy, ids, budget, deterministic=True):
    if deterministic:
        out = reducer.run(ids, policy=policy, budget=budget)
    else:  # sampled actions: the decision the reducer consults, drawing the removed tokens
        layers, decide = consult(policy, reducer, budget, deterministic=False)
        out = reducer.run(ids, decide, decision_layers=layers)
    return out.state.positions.tolist(), out.flops_ratio


def test_token_policy_is_small_acts_reproducibly_and_round_trips(llama, tmp_path):
    policy = trained_like()
    assert policy.num_parameters() <= 100_000
    reducer = Reducer(llama)
    ids = random_ids(60, seed=4)
    first, ratio = _removed(reducer, policy, ids, 0.5)
    assert first == _removed(reducer, policy, ids, 0.5)[0]
    folder = save_policy(policy, tmp_path / "p", model=llama)
    loaded = load_policy(folder, llama)
    assert isinstance(loaded, TokenReductionPolicy)
    assert json.loads((folder / "config.json").read_text())["kind"] == "token"
    assert _removed(reducer, loaded, ids, 0.5) == (first, ratio)
    sampled = {tuple(_removed(reducer, policy, ids, 0.5, deterministic=False)[0]) for _ in range(4)}
    assert len(sampled) > 1  # sampling draws different sets


def test_layer_policies_still_load_and_unknown_specs_fail_clearly(tmp_path):
    folder = save_policy(ReductionPolicy(), tmp_path / "layer")
    assert type(load_policy(folder)) is ReductionPolicy
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "spec_version": 7}))
    with pytest.raises(PolicyError, match="reads specs 2 .*3 "):
        load_policy(folder)


def test_shipped_layer_policy_still_loads():
    assert type(load_policy("policies/smollm2-135m-grounded")) is ReductionPolicy


def test_token_level_env_passes_the_checker_and_decodes_removal_orders():
    model, tokenizer = load_model("tiny-random")
    env = TokenLevelEnv(TokenReductionEnv("smoke", model=model, tokenizer=tokenizer), max_tokens=1024)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0, options={"budget": 0.5})
    p = int(np.count_nonzero(obs["tokens"].any(axis=1)))
    keys = np.random.default_rng(0).normal(size=env.max_tokens).astype(np.float32)
    action = np.concatenate(([1.0, 3.0], keys)).astype(np.float32)
    decoded = env.decode(action)
    assert decoded.op == "prune" and decoded.token_scores.shape == (p,)
    count = obs["counts"].reshape(3, -1)[1, 3]
    state = env.base._state
    before = set(state.positions.tolist())
    env.step(action)
    removable = [i for i in range(p) if obs["removable"][i]]
    expected = sorted(removable, key=lambda i: keys[i])[: int(count)]
    assert before - set(env.base._state.positions.tolist()) == set(expected)


def test_best_static_reads_its_table_and_meets_the_budget(llama, tmp_path):
    table = tmp_path / "table.json"
    best = {"0.3": {"schedule": "1:prune:0.5:relevance"}, "0.6": {"schedule": "2:merge:0.5:similarity"}}
    table.write_text(json.dumps({"best": best}))
    baseline = make_baseline(f"best-static:{table}")
    assert baseline.decision_layers(4) == (1, 2)
    reducer = Reducer(llama)
    for budget, layer in ((0.4, 1), (0.6, 2)):
        out = reducer.run(random_ids(80, seed=5), policy=baseline, budget=budget)
        assert out.flops_ratio <= budget + 0.02 and set(out.state.actions) == {1, 2}
        assert not out.state.actions[3 - layer].ratio  # only the chosen schedule's layer acts
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(BaselineError, match="not a best-static table"):
        make_baseline(f"best-static:{tmp_path / 'bad.json'}")
    with pytest.raises(BaselineError, match="rlprune best-static"):
        make_baseline(f"best-static:{tmp_path / 'missing.json'}")


def test_token_level_training_runs_and_exports(tmp_path):
    from rlprune.train.trainer import TrainOptions, train

    summary = train(
        TrainOptions(
            env="smoke", recipe="token-smoke", out=tmp_path / "run", cache_dir=str(tmp_path / "refs"), quiet=True
        )
    )
    assert summary["warm_start"]["token_samples"] > 0
    policy = load_policy(tmp_path / "run" / "policy")
    assert isinstance(policy, TokenReductionPolicy)
    assert summary["warm_start"]["op_accuracy"] == 1.0  # the layer head learned the schedule's choices
    best = load_policy(tmp_path / "run" / "best")
    exported, kept = policy.state_dict(), best.state_dict()
    assert exported.keys() == kept.keys() and all(torch.equal(exported[k], kept[k]) for k in kept)


def test_teacher_importance_is_per_prompt_token_and_leaves_the_model_untouched():
    from rlprune.envs import ReferenceCache, generate_task
    from rlprune.train.kinds.teacher import token_importance

    model, tokenizer = load_model("tiny-random")
    reducer = Reducer(model)
    cache = ReferenceCache(reducer, tokenizer, first_layer=1, continuation_tokens=4, folder=None)
    reference = cache.compute(generate_task("grounded", "train", 0, tokens=(40, 60)))
    importance = token_importance(reducer, reference, (1, 2))
    for layer in (1, 2):
        assert importance[layer].shape == (reference.prompt_length,)
        assert torch.isfinite(importance[layer]).all() and (importance[layer] >= 0).all()
        assert importance[layer].max() > 0
    assert not any(layer._forward_pre_hooks for layer in reducer.layers)
    assert not any(p.requires_grad for p in model.parameters())


def test_the_sb3_policy_acts_like_its_exported_network():
    from stable_baselines3.common.utils import obs_as_tensor

    from rlprune.train.backends.sb3_tokens import SB3TokenPolicy

    model, tokenizer = load_model("tiny-random")
    env = TokenLevelEnv(TokenReductionEnv("smoke", model=model, tokenizer=tokenizer), max_tokens=1024)
    sb3 = SB3TokenPolicy(env.observation_space, env.action_space, lambda _: 1e-3, decision_layers=(1, 2, 3))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in sb3.reduction.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
        sb3.reduction.action_head.weight[:3] = 0.0
        sb3.reduction.action_head.bias[:3] = torch.tensor([0.0, 20.0, 0.0])
    for seed in range(3):
        obs, _ = env.reset(seed=seed, options={"budget": 0.5})
        batch = {k: v[None] for k, v in obs_as_tensor(obs, "cpu").items()}
        with torch.no_grad():
            action, _, log_prob = sb3(batch, deterministic=True)
            _, evaluated, _ = sb3.evaluate_actions(batch, action)
        assert torch.allclose(log_prob, evaluated)
        trained = env.decode(action[0].numpy())
        exported = sb3.reduction.act(env.features(), env.base.budget)
        assert (trained.op, trained.ratio) == (exported.op, exported.ratio)
        assert torch.allclose(trained.token_scores, exported.token_scores)

"""The span head's RL stage: the label-free likelihood reward, group-relative advantages, the KL
penalty to the supervised start, seeded plays and the long-text training environment."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_model

from rlprune.envs import EnvConfig, TaskConfig
from rlprune.errors import InvalidArgumentError
from rlprune.metrics import answer_likelihood, greedy_reproduced
from rlprune.policies import load_policy
from rlprune.policies.span_head import SpanHeadPolicy
from rlprune.train.recipe import SpanPPOConfig


def _head(model) -> SpanHeadPolicy:
    torch.manual_seed(0)
    return SpanHeadPolicy(model.config.hidden_size, decision_layer=1, rank=8, channels=4, kernel=5)


def _tiny_env(tmp_path, layers: tuple[int, ...] = (1,)):
    """The tiny model, and the smoke preset's tasks on it deciding at ``layers``."""
    from conftest import tiny_tokenizer

    from rlprune.envs import TokenReductionEnv

    model = tiny_model("llama")
    preset = EnvConfig.load("smoke")
    preset = dataclasses.replace(preset, episode=dataclasses.replace(preset.episode, decision_layers=layers))
    return model, TokenReductionEnv(preset, model=model, tokenizer=tiny_tokenizer(), cache_dir=tmp_path)


def _played(head: SpanHeadPolicy, rewards: list[float], seed: int, start: SpanHeadPolicy | None = None):
    """One prompt of random states played len(rewards) times, with the given rewards."""
    from rlprune.policies.plackett_luce import draws, perturb
    from rlprune.train.kinds.span_ppo import Played

    generator = torch.Generator().manual_seed(seed)
    normed = torch.randn(40, head.hidden_size, generator=generator)
    valid = torch.ones(40, dtype=torch.bool)
    valid[-4:] = False  # the question
    count, group = torch.full((len(rewards),), 20), len(rewards)
    with torch.no_grad():
        scores = head.scores(normed, normed[-4:])
        keys = torch.stack([perturb(scores, generator) for _ in rewards])
        log_prob, _, _ = draws(scores.expand(group, -1), keys, valid.expand(group, -1), count)
        start_scores = (start or head).scores(normed, normed[-4:])
        start_log_prob, _, _ = draws(start_scores.expand(group, -1), keys, valid.expand(group, -1), count)
    return Played(normed, 4, valid, count, keys, log_prob, start_log_prob, torch.tensor(rewards))


def test_answer_likelihood_is_the_mean_floored_log_probability():
    logprobs = torch.log_softmax(torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, -30.0]]), dim=-1)
    targets = torch.tensor([0, 2])
    expected = (logprobs[0, 0] + torch.tensor(-5.0)) / 2  # the second token's -30 is floored at -5
    assert answer_likelihood(logprobs, targets, floor=5.0) == pytest.approx(float(expected))
    assert answer_likelihood(logprobs, targets, floor=100.0) < answer_likelihood(logprobs, targets, floor=5.0)
    assert answer_likelihood(logprobs, targets[:0], floor=5.0) == 0.0


def test_greedy_reproduced_is_what_greedy_decoding_says_again():
    """Decoding greedily from teacher-forced logits: row i is the model's next-token distribution after
    the answer's first i tokens, so the decoded answer is the reference's for as long as each row's
    top-1 is its token, whatever comes after the first miss."""
    from rlprune.envs.rewards import greedy_share

    targets = torch.tensor([3, 1, 4, 1, 5])
    logprobs = torch.log_softmax(torch.full((5, 8), -4.0), dim=-1)
    logprobs[torch.arange(5), targets] = 0.0  # every row's top-1 is its token
    assert greedy_reproduced(logprobs, targets) == 5
    logprobs[2, 0] = 1.0  # the third token is not the top-1: decoding leaves the answer there
    assert greedy_reproduced(logprobs, targets) == 2
    assert greedy_reproduced(logprobs, targets[:0]) == 0

    def reference(mask: list[bool]) -> SimpleNamespace:  # what greedy_share reads of a Reference
        return SimpleNamespace(continuation=targets, answer_mask=torch.tensor(mask))

    assert greedy_share(logprobs, reference([False] * 5)) == pytest.approx(2 / 5)  # no gold: the whole answer
    assert greedy_share(logprobs, reference([False, True, False, False, False])) == 1.0  # the gold answer said
    assert greedy_share(logprobs, reference([False, False, False, True, False])) == pytest.approx(2 / 4)


def test_group_advantages_sum_to_zero_in_every_group():
    from rlprune.train.kinds.span_ppo import advantages

    head = _head(tiny_model("llama"))
    groups = [[1.0, 0.0, 0.2], [5.0, 4.0, 4.5], [0.3, 0.3, 0.9]]
    batch = [_played(head, rewards, seed) for seed, rewards in enumerate(groups)]
    for advantage in advantages(batch):
        assert abs(float(advantage.sum())) < 1e-5
    assert float(advantages(batch)[1][0]) > 0 > float(advantages(batch)[1][1])  # ranked within its own group


def test_kl_to_the_start_is_zero_at_the_first_step_and_holds_the_head_near_it():
    from rlprune.train.kinds.span_ppo import ppo_update

    model = tiny_model("llama")
    start = _head(model)
    one_step = SpanPPOConfig(epochs=1, learning_rate=1e-2, kl_start=1.0)
    head = copy.deepcopy(start)
    stats = ppo_update(head, torch.optim.Adam(head.parameters(), lr=1e-2), [_played(head, [1.0, 0.0], 0)], one_step)
    assert stats["kl_start"] == 0.0  # measured before the only step: the head is its start

    drift = {}
    for weight in (0.0, 50.0):
        torch.manual_seed(0)
        head = copy.deepcopy(start)
        config = SpanPPOConfig(epochs=6, learning_rate=1e-2, kl_start=weight)
        optimizer = torch.optim.Adam(head.parameters(), lr=config.learning_rate)
        for update in range(3):
            batch = [_played(head, [1.0, 0.0, 0.5, -1.0], 10 * update + p, start) for p in range(2)]
            stats = ppo_update(head, optimizer, batch, config)
        drift[weight] = stats["kl_start"]
    assert drift[0.0] > 0 and drift[50.0] < drift[0.0]  # the penalty keeps the head closer to its start


def test_plays_seeded_alike_draw_alike(tmp_path):
    from rlprune.train.kinds.span_ppo import play

    model, env = _tiny_env(tmp_path)
    head = _head(model)
    first, again = (play(env, head, 0, 0.4, 3, seed=7) for _ in range(2))
    other = play(env, head, 0, 0.4, 3, seed=8)
    assert torch.equal(first.keys, again.keys) and torch.equal(first.rewards, again.rewards)
    assert not torch.equal(first.keys, other.keys)
    assert torch.equal(first.start_log_prob, first.log_prob)  # no start head given: the head is its own start
    assert all("likelihood" in info for info in first.infos)


@pytest.mark.parametrize("decode_tokens", [0, 4])
def test_a_group_played_as_one_batch_pays_each_play_what_a_single_environment_pays(tmp_path, decode_tokens):
    from conftest import tiny_tokenizer

    from rlprune.envs import RewardConfig, TokenReductionEnv, TokenReductionVectorEnv
    from rlprune.errors import RLPruneError
    from rlprune.reduction import LayerAction
    from rlprune.train.kinds.span_ppo import play

    model = tiny_model("llama")
    preset = EnvConfig.load("smoke")
    preset = dataclasses.replace(preset, episode=dataclasses.replace(preset.episode, decision_layers=(1,)))
    if decode_tokens:  # the reduced model's own answer, judged as evaluation judges it
        reward = dataclasses.replace(preset.reward, **dict.fromkeys(RewardConfig.TEACHER_FORCED, 0.0), confidence=1.0)
        episode = dataclasses.replace(preset.episode, decode_tokens=decode_tokens)
        preset = dataclasses.replace(preset, episode=episode, reward=reward)
    env = TokenReductionEnv(preset, model=model, tokenizer=tiny_tokenizer(), cache_dir=tmp_path)
    head = _head(model)
    played = play(env, head, 1, 0.7, 3, seed=5)  # about half the removable tokens go
    order = played.keys.masked_fill(~played.valid, float("inf")).argsort(-1)
    removed = {tuple(sorted(row[: int(n)].tolist())) for row, n in zip(order, played.count, strict=True)}
    assert len(removed) > 1  # the rows removed different tokens
    for row, keys in enumerate(played.keys):  # each sample alone, step by step, in the single environment
        env.reset(options={"task_index": 1, "budget": 0.7})
        total, done = 0.0, False  # the episode starts at its one decision layer
        action = dataclasses.replace(env.features().action_for_share("prune", "learned", 1.0), token_scores=keys)
        while not done:
            _, reward, done, _, info = env.step(action)
            total, action = total + reward, LayerAction()
        assert float(played.rewards[row]) == pytest.approx(total, abs=1e-4)
        assert played.infos[row]["flops_ratio"] == pytest.approx(info["flops_ratio"], abs=1e-9)
        if decode_tokens:
            assert played.infos[row]["answer"] == info["answer"]
    with pytest.raises(RLPruneError, match="rows beside an environment take its split"):
        TokenReductionVectorEnv(env, 3, budget=0.5)
    with pytest.raises(InvalidArgumentError, match="a group of 3 plays needs as many rows, not 2"):
        play(TokenReductionVectorEnv(env, 2), head, 1, 0.4, 3)


def test_the_environment_mixes_long_grids_into_every_split():
    config = TaskConfig(
        mix={"grounded": 1.0},
        train_size=4,
        validation_size=2,
        test_size=2,
        long_kinds=("niah-multiquery", "cloze"),
        long_lengths=(256,),
    )
    train = config.tasks("train")
    kinds = [t.kind for t in train]
    assert len(train) == 4 + 2 * 5 and kinds.count("cloze") == 5 and kinds.count("niah-multiquery") == 5
    assert [t.uid for t in config.tasks("train")] == [t.uid for t in train]  # shuffled the same way every time
    assert not {t.context for t in train} & {t.context for t in config.tasks("test")}
    with pytest.raises(ValueError, match="unknown long kind"):
        TaskConfig(long_kinds=("haystack",))
    with pytest.raises(ValueError, match="kl_start"):
        SpanPPOConfig(kl_start=-1.0)


def test_own_prompts_without_answers_join_the_train_split_only(tmp_path):
    own = tmp_path / "own.jsonl"
    lines = [
        {"context": f"The {c} kettle is in the shed.", "question": "Where is the kettle?"} for c in ("red", "blue")
    ]
    own.write_text("".join(json.dumps(line) + "\n" for line in lines))
    base = TaskConfig(
        mix={"grounded": 1.0}, train_size=4, validation_size=2, test_size=2, long_kinds=("cloze",), long_lengths=(256,)
    )
    config = dataclasses.replace(base, train_jsonl=str(own), train_jsonl_repeat=3)
    train = config.tasks("train")
    assert len(train) == len(base.tasks("train")) + 2 * 3
    assert sorted(t.context for t in train if "kettle" in t.context) == sorted(3 * [line["context"] for line in lines])
    assert all(not t.answer for t in train if "kettle" in t.context)  # the stage needs no label
    assert [t.uid for t in config.tasks("train")] == [t.uid for t in train]  # shuffled the same way every time
    for split in ("validation", "test"):
        assert [t.uid for t in config.tasks(split)] == [t.uid for t in base.tasks(split)]
    with pytest.raises(ValueError, match="at least 1"):
        TaskConfig(train_jsonl=str(own), train_jsonl_repeat=0)
    with pytest.raises(ValueError, match="set one of them"):
        TaskConfig(jsonl=str(own), train_jsonl=str(own))


@pytest.mark.integration
def test_a_cut_that_removes_the_answer_earns_less_than_one_that_keeps_it(smollm2, tmp_path):
    """The label-free reward on the real model: same budget, same count removed, only where. Judged on
    the prompts whose full-model answer is right (a wrong one does not rest on the gold evidence)."""
    from rlprune.envs import TokenReductionEnv, generate_suite

    model, tokenizer = smollm2
    preset = EnvConfig.load("span-rl")
    tasks = generate_suite({"grounded": 1.0}, "validation", 6, tokens=(150, 250))
    env = TokenReductionEnv(preset, model=model, tokenizer=tokenizer, tasks=tasks, cache_dir=tmp_path)
    judged, greedy = 0, {True: 0.0, False: 0.0}
    for index in range(len(tasks)):
        env.reset(options={"task_index": index, "budget": 0.5})
        if not env.reference.full_correct:
            continue
        judged += 1
        results = {}
        for keep_answer in (True, False):
            env.reset(options={"task_index": index, "budget": 0.5})
            evidence = env.reference.evidence
            assert evidence is not None
            features = env.features()
            n = env.reference.prompt_length  # the carried prompt tokens (the answer is teacher-forced after them)
            answer = evidence.occurrences.any(0)[:n]
            scores = torch.linspace(-1, 1, n)  # otherwise the earliest tokens go first
            scores[answer] = 5.0 if keep_answer else -5.0
            action = features.action_for_share("prune", "learned", 1.0)
            _, reward, done, _, info = env.step(dataclasses.replace(action, token_scores=scores))
            assert done
            results[keep_answer] = (reward, info["likelihood"])
            greedy[keep_answer] += info["greedy"]
        assert results[True][1] > results[False][1] and results[True][0] > results[False][0]
    assert judged >= 3
    assert greedy[True] > greedy[False]  # decoding from the cut without the answer says it less often


def test_a_head_that_cuts_by_units_is_sampled_over_whole_units(tmp_path):
    """The stage samples the choices the exported head makes: whole units go, the last one perhaps in
    part, and the log-probability is of the units drawn."""
    from rlprune.envs import TokenReductionVectorEnv
    from rlprune.policies.plackett_luce import draws
    from rlprune.train.kinds.span_ppo import _scores, play

    model, env = _tiny_env(tmp_path)
    head = _head(model)
    head.select_by("8")
    rows = TokenReductionVectorEnv(env, 3)
    played = play(rows, head, 0, 0.5, 3, seed=2)
    units, removable = played.units, played.removable
    assert units is not None and played.keys.shape == (3, int(units.max()) + 1)
    reached = rows.envs[-1].features().state.reaches_top()[: units.shape[0]]  # the last play's
    gone = removable & ~reached
    touched = units[gone].unique()
    assert len(touched) == int(played.count[-1]) > 1
    whole = [bool(gone[(units == u) & removable].all()) for u in touched.tolist()]
    assert sum(not w for w in whole) <= 1  # every unit touched went whole but one
    order = played.keys[-1].masked_fill(~played.valid, float("inf")).argsort()[: int(played.count[-1])]
    assert set(order.tolist()) == set(touched.tolist())  # the lowest keys' units went
    with torch.no_grad():
        scores = _scores(head, played.normed, played.window, units, removable)
    log_prob, _, _ = draws(scores.expand(3, -1), played.keys, played.valid.expand(3, -1), played.count)
    assert torch.allclose(log_prob, played.log_prob)


def test_a_higher_temperature_draws_more_varied_keep_sets_from_the_same_scores(tmp_path):
    from rlprune.policies.plackett_luce import draws
    from rlprune.train.kinds.span_ppo import _scores, play, ppo_update

    model, env = _tiny_env(tmp_path)
    head = _head(model)
    distinct = {}
    for temperature in (1e-4, 100.0):
        played = play(env, head, 0, 0.5, 6, seed=3, temperature=temperature)
        order = played.keys.masked_fill(~played.valid, float("inf")).argsort(-1)
        removed = {tuple(sorted(row[: int(n)].tolist())) for row, n in zip(order, played.count, strict=True)}
        distinct[temperature] = len(removed)
        with torch.no_grad():
            scores = _scores(head, played.normed, played.window) / temperature
        log_prob, _, _ = draws(scores.expand(6, -1), played.keys, played.valid.expand(6, -1), played.count)
        assert torch.allclose(log_prob, played.log_prob)  # the update's distribution is the one sampled
        config = SpanPPOConfig(epochs=1, temperature=temperature)
        tuned = copy.deepcopy(head)
        stats = ppo_update(tuned, torch.optim.Adam(tuned.parameters(), lr=0.0), [played], config)
        assert stats["clip_fraction"] == 0.0 and abs(stats["approx_kl"]) < 1e-5  # ratio 1 before any step
    assert distinct[1e-4] == 1 < distinct[100.0]
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "2"):
        with pytest.raises(InvalidArgumentError, match="temperature"):
            play(env, head, 0, 0.5, 2, temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        SpanPPOConfig(temperature=0.0)


def test_a_layered_head_is_played_and_tuned_where_it_cuts(tmp_path):
    """A head with a later head is sampled where the exported head cuts: at the later layer when the
    budget hands the cut over, at its own otherwise; an update moves only the head that drew."""
    from test_span_head import _layered

    from rlprune.policies.plackett_luce import draws
    from rlprune.train.kinds.span_ppo import _scores, cutter, play, ppo_update

    model, env = _tiny_env(tmp_path, (1, 2))
    head = _layered(model, min_keep=0.3)
    for budget, layer in ((0.9, 2), (0.3, None)):
        played = play(env, head, 0, budget, 3, seed=1)
        assert played.layer == layer and cutter(head, played) is (head.later if layer else head)
        env.reset(options={"task_index": 0, "budget": budget})
        assert head.hands_over(env.features()) == (layer is not None)
        kept = [info["tokens_per_layer"] for info in played.infos]
        cut_at = 2 if layer else 1  # tokens go at the cutting layer, none before it
        assert all(k[cut_at] < k[0] and k[cut_at - 1] == k[0] for k in kept)
        with torch.no_grad():
            scores = _scores(cutter(head, played), played.normed, played.window, played.units, played.removable)
        log_prob, _, _ = draws(scores.expand(3, -1), played.keys, played.valid.expand(3, -1), played.count)
        assert torch.allclose(log_prob, played.log_prob)

        tuned = copy.deepcopy(head)
        ranked = dataclasses.replace(played, rewards=torch.tensor([1.0, 0.0, -1.0]))
        ppo_update(tuned, torch.optim.Adam(tuned.parameters(), lr=1e-2), [ranked], SpanPPOConfig(epochs=2))
        moved = {
            name for name, weight in tuned.state_dict().items() if not torch.equal(weight, head.state_dict()[name])
        }
        assert moved and all(name.startswith("later.") == (layer is not None) for name in moved)
    _, one_layer = _tiny_env(tmp_path / "one")  # deciding at layer 1 only: the later head could not cut
    with pytest.raises(InvalidArgumentError, match="decides at"):
        play(one_layer, head, 0, 0.9, 2)


def test_rlprune_train_reports_the_rl_stage_from_its_start(tmp_path, tiny_model_dir, monkeypatch):
    from hostile.test_inputs_and_faults import invoke
    from test_span_head import _span_recipe

    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path / "home"))
    recipe = _span_recipe(tmp_path, tiny_model_dir)
    stage = 'env = "smoke"\nupdates = 2\nprompts = 2\ngroup = 2\nvalidation_tasks = 1\nvalidation_budgets = [0.6]'
    open(recipe, "a").write(f"[span_ppo]\n{stage}\neval_every = 2\nkl_start = 0.1\n")
    result = invoke("train", "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "RL stage, validation at step 0 -> 8: reward" in " ".join(result.output.split())
    start = load_policy(tmp_path / "run" / "start", tiny_model("llama"))  # the supervised start, kept to compare
    assert isinstance(start, SpanHeadPolicy) and start.unit == "sentence"
    updates = __import__("json").loads((tmp_path / "run" / "summary.json").read_text())["ppo"]["ppo_updates"]
    assert 0.0 <= updates[0]["kl_start"] < 1e-3  # the first update starts at its start: its mean KL stays near 0


def test_rlprune_train_tunes_a_layered_head_and_starts_from_one(tmp_path, tiny_model_dir, monkeypatch):
    """A recipe with a later head and an RL stage tunes both heads; ``--start`` tunes a head already
    trained (its weights are the stage's start); a recipe without a span head refuses ``--start``."""
    from hostile.test_inputs_and_faults import assert_clean_error, invoke
    from test_span_head import _span_recipe

    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path / "home"))
    recipe = _span_recipe(tmp_path, tiny_model_dir)
    stage = 'env = "smoke"\nupdates = 2\nprompts = 2\ngroup = 2\nvalidation_tasks = 1\nvalidation_budgets = [0.9]'
    text = open(recipe).read()
    open(recipe, "w").write(text + f"later_layer = 2\nmin_keep = 0.3\n[span_ppo]\n{stage}\neval_every = 2\n")
    result = invoke("train", "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    model = tiny_model("llama")
    tuned, start = (load_policy(tmp_path / "run" / name, model) for name in ("last", "start"))
    assert tuned.layers == start.layers == (1, 2)

    plain = tmp_path / "plain.toml"  # the same stage, no supervision: it starts from the head above
    plain.write_text(text + f"[span_ppo]\n{stage}\neval_every = 2\n")
    result = invoke("train", "--recipe", plain, "--start", tmp_path / "run" / "policy", "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    began, given = (
        load_policy(p, model).state_dict() for p in (tmp_path / "again" / "start", tmp_path / "run" / "policy")
    )
    assert began.keys() == given.keys() and all(torch.equal(began[k], given[k]) for k in began)
    # resumed, the run goes on from its checkpoint, and says that --start is not used
    resumed = invoke(
        "train", "--recipe", plain, "--start", tmp_path / "run" / "policy", "--out", tmp_path / "again", "--resume"
    )
    assert resumed.exit_code == 0, resumed.output
    assert "is not used: the run resumes from its checkpoint" in " ".join(resumed.output.split())
    refused = invoke("train", "--recipe", "smoke", "--start", tmp_path / "run" / "policy", "--out", tmp_path / "no")
    assert_clean_error(refused, "--start tunes a span head")
    missing = invoke("train", "--recipe", plain, "--start", tmp_path / "nothing", "--out", tmp_path / "no")
    assert_clean_error(missing, "no policy checkpoint there")


def _benchmark(name: str):
    """A script of benchmarks/ as a module."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_reward_ranking_samples_one_keep_set_per_seed_in_generation_and_teacher_forcing_alike():
    """benchmarks/reward_ranking.py scores a sampled keep-set's answers by teacher-forcing them under the
    same keep-set: a seed draws the same cut however long the continuation, and as many tokens as the head."""
    from test_span_head import _layered

    from rlprune.engine import Reducer

    ranking = _benchmark("reward_ranking")
    model = tiny_model("llama")
    reducer = Reducer(model)
    head = _layered(model)
    ids = torch.randint(3, 64, (1, 90), generator=torch.Generator().manual_seed(2))
    answer = torch.randint(3, 64, (1, 6), generator=torch.Generator().manual_seed(3))
    for budget in (0.5, 0.85):  # cut by the first head, and by the later one
        own = reducer.run(ids, policy=head, budget=budget, protect_last=5).state.reaches_top()
        kept = {}
        for seed in range(4):
            prompt_only = reducer.run(ids, policy=ranking.Sampled(head, seed), budget=budget, protect_last=5)
            forced = reducer.run(
                torch.cat((ids, answer), 1), policy=ranking.Sampled(head, seed), budget=budget, protect_last=5,
                prompt_length=90, logits="continuation",
            )  # fmt: skip
            kept[seed] = prompt_only.state.reaches_top()[:90]
            assert torch.equal(forced.state.reaches_top()[:90], kept[seed])
            assert int(kept[seed].sum()) == int(own[:90].sum())
        assert len({tuple(k.tolist()) for k in kept.values()}) > 1  # seeds draw different keep-sets


def test_reward_ranking_counts_how_often_a_right_play_outscores_a_wrong_one():
    ranking = _benchmark("reward_ranking")
    groups = [[(True, 1.0), (False, 0.5), (False, 2.0)], [(True, 0.3), (False, 0.3)], [(True, 1.0), (True, 2.0)]]
    share, pairs = ranking.pairwise(groups)
    assert pairs == 3 and share == pytest.approx((1 + 0 + 0.5) / 3)
    assert math.isnan(ranking.pairwise([[(False, 1.0)]])[0])

"""The budget head: what it reads, its outcome table, its PPO training under the average, its checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from conftest import tiny_model, tiny_tokenizer
from hostile.test_inputs_and_faults import assert_clean_error, invoke
from test_span_head import _head, _tasks

from rlprune import Reducer, ReducerConfig
from rlprune.budget import AverageBudget, BudgetController
from rlprune.data.evidence import locate_evidence
from rlprune.data.tasks import answer_correct
from rlprune.engine.features import Features
from rlprune.errors import InvalidActionError, InvalidArgumentError
from rlprune.metrics import evidence_kept
from rlprune.policies import PolicyError, SpanHeadPolicy, load_policy, save_policy
from rlprune.policies.budget_head import BUDGET_FEATURES, BudgetHead, budget_features
from rlprune.prompts import build_prompt
from rlprune.reduction import sentence_end_ids
from rlprune.train.kinds.budget_head import (
    BudgetEnv,
    Duals,
    Outcomes,
    export_head,
    measure,
    normalization,
    oracle_kept,
    outcomes,
    reduced_answers,
)
from rlprune.train.recipe import BudgetHeadConfig, Recipe

GRID = (0.6, 0.7, 0.8, 0.9, 1.0)  # a 4-layer model cut at layer 2 cannot go much under 0.55


def test_features_follow_how_concentrated_the_scores_are():
    peaked = budget_features(torch.tensor([9.0] + [0.0] * 99), 0.3, 0.2)
    flat = budget_features(torch.zeros(100), 0.3, 0.2)
    assert peaked.shape == (len(BUDGET_FEATURES),)
    assert peaked[0] == pytest.approx(math.log(0.3)) and peaked[-1] == pytest.approx(math.log(0.2))
    names = list(BUDGET_FEATURES)
    assert peaked[names.index("log_mass_50")] == pytest.approx(math.log(0.01))  # one token holds most of the mass
    assert flat[names.index("log_mass_50")] == pytest.approx(math.log(0.5), abs=0.03)
    assert peaked[names.index("entropy")] < 0.2 < 0.99 < flat[names.index("entropy")]


def test_grid_and_widths_are_checked():
    with pytest.raises(ValueError, match="increasing"):
        BudgetHead((0.5, 0.3))
    with pytest.raises(ValueError, match="increasing"):
        BudgetHead((0.0, 0.5))
    with pytest.raises(ValueError, match="both"):
        SpanHeadPolicy(64, budget_grid=(0.5, 1.0))
    assert BudgetHead((0.2, 0.5), (4,)).choose(torch.zeros(len(BUDGET_FEATURES))) in (0.2, 0.5)


def _setup():
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    reducer = Reducer(model, ReducerConfig(sentence_ends=sentence_end_ids(tokenizer)))
    return model, tokenizer, reducer, _head(model)


def test_outcome_table_is_what_the_reducer_does():
    """Every grid ratio's realised ratio and evidence equal a real selection's at that budget."""
    model, tokenizer, reducer, head = _setup()
    tasks = _tasks(4)
    table = outcomes(reducer, tokenizer, head, tasks, GRID, quality="answer", show_progress=False)
    assert len(table) == 4 and table.features.shape == (4, len(BUDGET_FEATURES) - 1)
    assert ((table.answer > 0) & (table.answer <= 1)).all()
    for row, task in enumerate(tasks):
        prompt = build_prompt(tokenizer, task.question, task.context)
        evidence = locate_evidence(prompt, task)
        for column, ratio in enumerate(GRID):
            state = reducer.select(prompt.input_ids, policy=head, budget=ratio,
                                   protect_last=prompt.protect_last)  # fmt: skip
            realised = reducer.project_flops(state, {}) / reducer.full_flops(state)
            assert float(table.ratios[row, column]) == pytest.approx(realised, abs=1e-6)
            assert bool(table.kept[row, column]) == evidence_kept(evidence, state.reaches_top())[0]
        # the likelihood is that of a whole reduced prefill, teacher-forced on the gold answer
        gold = tokenizer.encode(task.answer, add_special_tokens=False)
        out = reducer.run(prompt.input_ids, policy=head, budget=GRID[0],
                          protect_last=prompt.protect_last)  # fmt: skip
        logits = torch.cat([out.logits[0, -1:], reducer.extend(out.state, gold[:-1])[0]])
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(gold)[:, None]).mean().exp()
        assert float(table.answer[row, 0]) == pytest.approx(float(expected), rel=1e-4)


def test_correct_quality_is_each_ratios_own_generation():
    """The batched answers (one row per grid ratio) are what the head generates alone at each ratio."""
    model, tokenizer, reducer, head = _setup()
    tasks = _tasks(2)
    table = outcomes(reducer, tokenizer, head, tasks, GRID, quality="correct", answer_tokens=6, show_progress=False)
    for row, task in enumerate(tasks):
        prompt = build_prompt(tokenizer, task.question, task.context)
        state = reducer.start(prompt.input_ids, decision_layers=head.layers, protect_last=prompt.protect_last)
        scores = head.token_scores(Features(reducer, state, 1.0))
        actions = [
            dataclasses.replace(
                Features(reducer, state, r).action_for_share(head.op, "learned", 1.0), token_scores=scores
            )
            for r in GRID
        ]
        texts = reduced_answers(reducer, tokenizer, prompt, head.decision_layer, actions, 6)
        for column, ratio in enumerate(GRID):
            alone = reducer.generate(prompt.input_ids, policy=head, budget=ratio,
                                     protect_last=prompt.protect_last, max_new_tokens=6)  # fmt: skip
            assert texts[column] == tokenizer.decode(alone.tokens[0], skip_special_tokens=True)
            assert float(table.answer[row, column]) == float(bool(answer_correct(texts[column], task)))


def test_outcome_tables_round_trip_through_safetensors(tmp_path):
    table = _synthetic(12)
    table.save(tmp_path / "t.safetensors")
    again = Outcomes.load(tmp_path / "t.safetensors")
    for name in ("features", "ratios", "kept", "answer"):
        assert torch.equal(getattr(again, name), getattr(table, name))
    with pytest.raises(Exception, match="quality"):
        outcomes(None, None, None, [], GRID, quality="bleu")
    with pytest.raises(InvalidArgumentError, match="answer_tokens"):
        BudgetHeadConfig(reward="correct", answer_tokens=0)


def _synthetic(prompts: int = 400) -> Outcomes:
    """Half the prompts keep their answer from the lowest ratio, half only from 0.8; a feature tells them apart."""
    generator = torch.Generator().manual_seed(0)
    hard = torch.rand(prompts, generator=generator) < 0.5
    features = torch.rand(prompts, len(BUDGET_FEATURES) - 1, generator=generator) * 0.1
    features[:, 1] += hard.float()  # log_mass_50: a hard prompt's mass is spread
    grid = torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0])
    ratios = grid.expand(prompts, -1).clone()
    kept = (grid >= 0.8) | ~hard[:, None]
    return Outcomes(features, ratios, kept, kept.float())


def test_env_rewards_quality_minus_the_price_of_the_ratio():
    table = _synthetic(8)
    duals = Duals((0.5,), rate=0.1, initial=2.0)
    env = BudgetEnv(table, (0.5,), duals, seed=0, thrift=0.05)
    observation, _ = env.reset(seed=3)
    prompt = env._prompt
    raw = torch.cat([torch.tensor([math.log(0.5)]), table.features[prompt]])
    center, scale = normalization(table, (0.5,))
    assert observation.shape == (len(BUDGET_FEATURES),)
    assert torch.allclose(torch.from_numpy(observation), (raw - center) / scale)  # centred and scaled
    head = BudgetHead(GRID, (4,))
    trunk_logits = head.logits(head.trunk(torch.from_numpy(observation)))
    assert torch.allclose(export_head(head, table, (0.5,))(raw), trunk_logits)  # the export reads raw features
    _, reward, done, truncated, info = env.step(4)  # ratio 1.0
    assert done and not truncated
    assert reward == pytest.approx(float(table.kept[prompt, 4]) - 2.0 * 0.5 - 0.05)
    assert duals.price(0.5) == pytest.approx(2.0 + 0.1 * 0.5)  # above the target: the price rises
    env.reset()
    with pytest.raises(InvalidActionError, match="grid index"):
        env.step(5)
    env.step(0)  # ratio 0.2, below: it falls
    assert duals.price(0.5) == pytest.approx(2.05 - 0.1 * 0.3)


def test_ppo_learns_to_spend_where_the_answer_needs_it():
    """On a table where half the prompts need 0.8 and a feature says which, PPO under a 0.5 average
    gives the hard ones 0.8 and the easy ones the least: all answers kept where one ratio keeps half.
    It trains through the sb3 backend's kind table, the entry a budget recipe on sb3 uses."""
    from rlprune.train.backends.sb3 import SB3_KINDS
    from rlprune.train.kinds.budget_train import budget_kind

    table = _synthetic()
    config = BudgetHeadConfig(grid=(0.2, 0.4, 0.6, 0.8, 1.0), targets=(0.5,), hidden=(16,), timesteps=12_000,
                              n_envs=4, n_steps=128, learning_rate=3e-3, entropy=0.0)  # fmt: skip
    assert budget_kind("sb3") is SB3_KINDS["budget"]
    head, duals = SB3_KINDS["budget"].learn(config, table, show_progress=False)
    report = measure(head, table, (0.5,))["0.5"]
    assert report["fixed_kept"] < 0.6  # one ratio near 0.5 keeps only the easy half
    assert report["adaptive_kept"] > 0.95
    assert report["adaptive_mean"] < 0.55
    assert report["oracle_kept_at_adaptive_mean"] >= report["adaptive_kept"] - 0.01


def test_oracle_takes_the_cheapest_needs_first():
    ratios = torch.tensor([[0.2, 0.5, 1.0]] * 4)
    kept = torch.tensor([[True, True, True], [False, True, True], [False, False, True], [False, False, False]])
    table = Outcomes(torch.zeros(4, 8), ratios, kept, kept.float())
    assert oracle_kept(table, 0.2) == 0.25  # only the prompt kept at the lowest ratio
    assert oracle_kept(table, 0.275) == 0.5  # + the one needing 0.5: mean (0.2 + 0.5 + 0.2 + 0.2) / 4
    assert oracle_kept(table, 1.0) == 0.75  # the last one is kept at no ratio


def test_exported_budget_head_proposes_as_trained(tmp_path):
    model, tokenizer, reducer, head = _setup()
    torch.manual_seed(3)
    policy = SpanHeadPolicy(**(head.config() | {"budget_grid": GRID, "budget_hidden": [8]}))
    policy.load_state_dict(head.state_dict(), strict=False)
    save_policy(policy, tmp_path / "adaptive", model=model)
    loaded = load_policy(tmp_path / "adaptive", model)
    assert loaded.budget_head is not None and loaded.budget_head.grid == GRID
    ids = torch.randint(3, 64, (1, 90), generator=torch.Generator().manual_seed(1))
    for target in (0.6, 0.9):
        ratios = []
        for candidate in (policy, loaded):
            controller = BudgetController(AverageBudget(target, floor=0.5))
            out = reducer.run(ids, policy=candidate, budget=controller, protect_last=6)
            ratios.append((controller.pending[0], out.flops_ratio))
        assert ratios[0] == ratios[1] and ratios[0][0] in GRID  # the proposal is a grid ratio


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"budget_grid": [0.5, 0.3]}, "increasing"),
        ({"budget_grid": "0.5"}, "non-empty list"),
        ({"budget_hidden": [0]}, "widths"),
    ],
)
def test_damaged_budget_heads_are_refused(tmp_path, change, message):
    model = tiny_model("llama")
    policy = SpanHeadPolicy(**(_head(model).config() | {"budget_grid": GRID, "budget_hidden": [8]}))
    folder = save_policy(policy, tmp_path / "p", model=model)
    config = json.loads((folder / "config.json").read_text())
    config["network"] |= change
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PolicyError, match=message):
        load_policy(folder, model)
    del config["network"]["budget_hidden"]
    config["network"]["budget_grid"] = list(GRID)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PolicyError, match="both"):
        load_policy(folder, model)


def test_config_is_checked():
    with pytest.raises(Exception, match="backend"):
        Recipe(policy="budget", backend="tf")
    with pytest.raises(Exception, match="reward"):
        BudgetHeadConfig(reward="bleu")
    with pytest.raises(Exception, match="targets"):
        BudgetHeadConfig(targets=(0.0,))


@pytest.mark.integration
def test_shipped_adaptive_policy_proposes_per_prompt_and_acts_like_the_span_head(smollm2):
    """The shipped budget head proposes different ratios for different prompts at one target, more at
    a looser target on average; its token choices at a given ratio are the span head's own."""
    from rlprune.eval.suites import load_suite

    model, tokenizer = smollm2
    adaptive, span = load_policy("smollm2-135m-adaptive", model), load_policy("smollm2-135m-span", model)
    assert adaptive.unit == "token" and span.unit == "sentence"
    span.select_by("token")  # the adaptive policy was measured token by token, as the span head first shipped
    reducer = Reducer(model, ReducerConfig(sentence_ends=sentence_end_ids(tokenizer)))
    tasks = load_suite("grounded-qa", limit=6)[1] + load_suite("niah", per_cell=1, depths=(0.5,))[1][:2]
    proposals = {0.2: [], 0.4: []}
    for task in tasks:
        prompt = build_prompt(tokenizer, task.question, task.context)
        for target, row in proposals.items():
            controller = BudgetController(AverageBudget(target))
            reducer.select(prompt.input_ids, policy=adaptive, budget=controller,
                           protect_last=prompt.protect_last)  # fmt: skip
            row.append(controller.pending[0])
        held = [reducer.select(prompt.input_ids, policy=p, budget=0.3,
                               protect_last=prompt.protect_last) for p in (adaptive, span)]  # fmt: skip
        assert torch.equal(held[0].reaches_top(), held[1].reaches_top())
    assert all(p in adaptive.budget_head.grid for row in proposals.values() for p in row)
    assert len(set(proposals[0.2])) > 1  # per prompt, not one ratio for all
    assert sum(proposals[0.4]) >= sum(proposals[0.2])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--backend", "tf"], "unknown backend 'tf'; use one of sb3, ray"),
        (["--reward", "bleu"], "reward must be one of correct, answer, evidence"),
        (["--grid", "0.2,x"], "--grid '0.2,x' must be comma-separated numbers"),
        (["--grid", "0.5,0.3"], "increasing"),
    ],
)
def test_train_budget_cli_refuses_bad_settings_in_one_line(tmp_path, args, fragment):
    assert_clean_error(invoke("train-budget", "--out", tmp_path / "b", *args), fragment)
    assert not (tmp_path / "b").exists()


def test_train_budget_cli_keeps_an_existing_policy(tmp_path):
    save_policy(_head(tiny_model("llama")), tmp_path / "p", model=tiny_model("llama"))
    before = (tmp_path / "p" / "config.json").read_bytes()
    assert_clean_error(invoke("train-budget", "--out", tmp_path / "p"), "--force")
    assert (tmp_path / "p" / "config.json").read_bytes() == before


def test_outcome_table_key_follows_the_span_head_and_the_table_settings_not_ppo():
    from rlprune.train.kinds.budget_train import _table_key

    head = _head(tiny_model("llama"))
    config = BudgetHeadConfig()
    key = _table_key(config, head, "train")
    assert _table_key(dataclasses.replace(config, timesteps=10, entropy=0.5), head, "train") == key
    assert _table_key(config, head, "validation") != key
    assert _table_key(dataclasses.replace(config, grid=(0.2, 0.5, 1.0)), head, "train") != key
    with torch.no_grad():
        next(head.parameters()).add_(1.0)
    assert _table_key(config, head, "train") != key

"""The span head: question-conditioned scores from hidden states, its training, its checkpoints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_model, tiny_tokenizer

from rlprune import Reducer, ReducerConfig
from rlprune.data.tasks import Task
from rlprune.errors import InvalidActionError, InvalidArgumentError
from rlprune.models import model_fingerprint
from rlprune.policies import PolicyError, SpanHeadPolicy, load_policy, save_policy
from rlprune.reduction import sentence_end_ids
from rlprune.train.common.folder import RunFolderError
from rlprune.train.kinds.span_head import collect, fit
from rlprune.train.kinds.span_ppo import tune_span_head
from rlprune.train.recipe import SpanHeadConfig, SpanPPOConfig

WORDS = "the town was on the river . the keeper of the boat rang bells in the year . the name was a keeper".split()


def _tasks(count: int) -> list[Task]:
    """Short grounded tasks whose answer (a varying word pair) sits at varying places in the context."""
    answers = ["six bells", "boat keeper", "river town", "name year"]
    tasks = []
    for i in range(count):
        words = WORDS[i % 7 :] + WORDS[: i % 7]
        spot = (3 * i) % len(words)
        answer = answers[i % len(answers)]
        context = " ".join(words[:spot] + answer.split() + ["."] + words[spot:])
        tasks.append(Task("grounded", "name of the keeper", context, answer, (answer,)))
    return tasks


def _head(model, layer: int = 2) -> SpanHeadPolicy:
    torch.manual_seed(0)
    return SpanHeadPolicy(model.config.hidden_size, decision_layer=layer, rank=8, channels=4, kernel=5)


def test_head_meets_the_budget_and_decides_only_at_its_layer():
    model = tiny_model("llama")
    reducer = Reducer(model)
    head = _head(model)
    ids = torch.randint(3, 64, (1, 120), generator=torch.Generator().manual_seed(1))
    for budget in (0.6, 0.7, 0.9):
        out = reducer.run(ids, policy=head, budget=budget, protect_last=6)
        assert out.flops_ratio == pytest.approx(budget, abs=0.02)
        assert list(out.state.actions) == [2]
    head.default_budget = 0.7  # a 4-layer model cut at layer 2 cannot go under about 0.55
    without = reducer.run(ids, policy=head, budget=None, protect_last=6)
    assert without.flops_ratio == pytest.approx(0.7, abs=0.02)  # its own budget, not 1.0
    with pytest.raises(ValueError, match="layer 2"):
        head.decision_layers(2)


def test_scores_depend_on_the_question():
    head = _head(tiny_model("llama"))
    states = torch.randn(30, 64, generator=torch.Generator().manual_seed(2))
    a = head.scores(states, states[-4:])
    b = head.scores(states, torch.randn(4, 64))
    assert a.shape == (30,) and not torch.allclose(a, b)


def test_training_raises_the_evidence_above_the_rest():
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    reducer = Reducer(model, ReducerConfig(sentence_ends=sentence_end_ids(tokenizer)))
    examples = collect(reducer, tokenizer, _tasks(24), layer=2, show_progress=False)
    assert len(examples) == 24 and all(1 <= e.answer.sum() <= 2 for e in examples)
    head = _head(model)
    history = fit(head, examples, SpanHeadConfig(epochs=15, learning_rate=1e-2), show_progress=False)
    assert history[-1] < 0.7 * history[0]
    # after training, the answer's tokens rank in the top third of the removable tokens on most items
    ranked = 0
    for example in examples:
        scores = head.scores(example.normed.float(), example.normed[-example.window :].float()).detach()
        scores = scores.masked_fill(~example.removable, float("-inf"))
        top = scores.topk(int(example.removable.sum()) // 3).indices
        ranked += bool(example.answer[top].sum() == example.answer.sum())
    assert ranked >= 16


def test_exported_head_acts_exactly_like_the_trained_one(tmp_path):
    model = tiny_model("llama")
    reducer = Reducer(model)
    head = _head(model)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    save_policy(head, tmp_path / "head", model=model, training={"epochs": 1})
    loaded = load_policy(tmp_path / "head", model)
    assert isinstance(loaded, SpanHeadPolicy) and loaded.config() == head.config()
    ids = torch.randint(3, 64, (1, 90), generator=torch.Generator().manual_seed(3))
    a = reducer.run(ids, policy=head, budget=0.7, protect_last=5, logits="all")
    b = reducer.run(ids, policy=loaded, budget=0.7, protect_last=5, logits="all")
    assert torch.equal(a.state.positions, b.state.positions) and torch.equal(a.logits, b.logits)
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["kind"] == "span" and config["model"] == model_fingerprint(model)


def test_a_sentence_head_drops_whole_sentences_meets_the_budget_and_exports(tmp_path):
    model = tiny_model("llama")
    reducer = Reducer(model)  # no sentence ends: the head brings its own
    head = _head(model)
    period = 4  # the tiny tokenizer's "."
    ids = torch.randint(6, 64, (1, 100), generator=torch.Generator().manual_seed(5))
    ids[0, 9:90:10] = period  # ten sentences of ten tokens, then the question
    token = reducer.run(ids, policy=head, budget=0.7, protect_last=10)
    head.select_by("sentence", [period])
    out = reducer.run(ids, policy=head, budget=0.7, protect_last=10)
    assert out.flops_ratio == pytest.approx(token.flops_ratio, abs=1e-9)  # the same cut, other tokens

    def cut_sentences(positions: torch.Tensor) -> int:
        kept = torch.zeros(100, dtype=torch.bool)
        kept[positions] = True
        sentences = [kept[max(s, 1) : s + 10] for s in range(0, 90, 10)]  # position 0 is always kept
        return sum(not (sentence.all() or not sentence.any()) for sentence in sentences)

    assert cut_sentences(token.state.positions) > 1  # token by token, sentences are left in fragments
    assert cut_sentences(out.state.positions) <= 1  # whole sentences, but the one cut to meet the budget
    save_policy(head, tmp_path / "head", model=model)
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["network"]["unit"] == "sentence" and config["network"]["sentence_ends"] == [period]
    again = reducer.run(ids, policy=load_policy(tmp_path / "head", model), budget=0.7, protect_last=10)
    assert torch.equal(again.state.positions, out.state.positions)
    with pytest.raises(ValueError, match="sentence ends"):
        head.select_by("sentence")
    head.select_by("16")  # a chunk size needs no tokenizer
    assert head.config()["unit"] == "16" and "sentence_ends" not in head.config()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"unit": "paragraph"}, "network.unit"),
        ({"unit": "sentence"}, "sentence_ends"),
        ({"unit": "sentence", "sentence_ends": [-1]}, "sentence_ends"),
        ({"unit": "token", "sentence_ends": [4]}, "not sentence"),
    ],
)
def test_damaged_unit_settings_are_refused(tmp_path, change, message):
    model = tiny_model("llama")
    save_policy(_head(model), tmp_path / "head", model=model)
    path = tmp_path / "head" / "config.json"
    config = json.loads(path.read_text())
    config["network"] |= change
    path.write_text(json.dumps(config))
    with pytest.raises(PolicyError, match=message):
        load_policy(tmp_path / "head", model)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kernel", 4, "odd"),
        ("rank", 0, "rank"),
        ("op", "keep", "prunes or merges"),
        ("default_budget", 1.5, "default_budget"),
        ("parameters", 7, "parameters"),
        ("extra", 1, "exactly the keys"),
    ],
)
def test_damaged_span_configs_are_refused_before_allocation(tmp_path, field, value, message):
    model = tiny_model("llama")
    save_policy(_head(model), tmp_path / "head", model=model)
    path = tmp_path / "head" / "config.json"
    config = json.loads(path.read_text())
    config["network"][field] = value
    path.write_text(json.dumps(config))
    with pytest.raises(PolicyError, match=message):
        load_policy(tmp_path / "head", model)


def test_span_head_for_another_model_is_refused(tmp_path):
    save_policy(_head(tiny_model("llama")), tmp_path / "head", model=tiny_model("llama"))
    with pytest.raises(PolicyError, match="another model"):
        load_policy(tmp_path / "head", tiny_model("llama", seed=1))


def _played(head: SpanHeadPolicy, rewards: list[float], seed: int = 3):
    """One prompt of random states played len(rewards) times, with the given rewards."""
    from rlprune.policies.plackett_luce import draws, perturb
    from rlprune.train.kinds.span_ppo import Played

    torch.manual_seed(seed)
    normed = torch.randn(40, head.hidden_size)
    valid = torch.ones(40, dtype=torch.bool)
    valid[-4:] = False  # the question
    with torch.no_grad():
        scores = head.scores(normed, normed[-4:])
    keys = torch.stack([perturb(scores) for _ in rewards])
    group, count = len(rewards), torch.full((len(rewards),), 20)
    log_prob, _, _ = draws(scores.expand(group, -1), keys, valid.expand(group, -1), count)
    return Played(normed, 4, valid, count, keys, log_prob, log_prob, torch.tensor(rewards))


def test_ppo_update_makes_the_better_sample_more_likely():
    from rlprune.policies.plackett_luce import log_prob_and_entropy
    from rlprune.train.kinds.span_ppo import ppo_update

    head = _head(tiny_model("llama"))
    played = _played(head, [1.0, 0.0, 0.5, 0.5])
    config = SpanPPOConfig(epochs=3, learning_rate=1e-3)
    stats = ppo_update(head, torch.optim.Adam(head.parameters(), lr=config.learning_rate), [played], config)
    with torch.no_grad():
        scores = head.scores(played.normed.float(), played.normed[-4:].float())
        after, _ = log_prob_and_entropy(
            scores.expand(4, -1), played.keys, played.valid.expand(4, -1), torch.full((4,), 20)
        )
    gain = after - played.log_prob.sum(-1)
    assert gain[0] > 0 > gain[1]  # the rewarded removal gained probability, the penalised one lost it
    assert 0 <= stats["clip_fraction"] <= 1


def test_a_group_of_equal_rewards_teaches_nothing():
    from rlprune.train.kinds.span_ppo import advantages

    head = _head(tiny_model("llama"))
    same = _played(head, [0.7, 0.7, 0.7])
    varied = _played(head, [1.0, 0.0, 0.5], seed=4)
    flat, spread = advantages([same, varied])
    assert torch.equal(flat, torch.zeros(3))
    assert spread[0] > spread[2] > spread[1] and spread.sum().abs() < 1e-6
    with pytest.raises(ValueError, match="group"):
        SpanPPOConfig(group=1)
    with pytest.raises(ValueError, match="validation_budgets"):
        SpanPPOConfig(validation_budgets=())


def test_ppo_tunes_a_head_on_the_environment_and_exports_it(tmp_path, monkeypatch):
    from rlprune.envs import EnvConfig, TokenReductionEnv, TokenReductionVectorEnv
    from rlprune.policies.plackett_luce import draws
    from rlprune.train.kinds.span_ppo import play

    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    head = _head(model, layer=1)
    start = {k: v.clone() for k, v in head.state_dict().items()}
    config = SpanPPOConfig(
        env="smoke", updates=2, prompts=2, group=2, validation_tasks=2, validation_budgets=(0.6,), learning_rate=1e-2
    )
    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path))
    summary = tune_span_head(head, model, tokenizer, config, show_progress=False)
    updates = summary["ppo_updates"]
    assert len(updates) == 2 and all(torch.isfinite(torch.tensor(h["reward"])) for h in updates)
    assert summary["timesteps"] == 2 * 2 * 2 and summary["backend"] == "sb3" and summary["policy_kind"] == "span"
    assert set(summary["final_validation"]) >= {"reward", "kl", "top1"}
    assert any(not torch.equal(start[k], v) for k, v in head.state_dict().items())
    preset = EnvConfig.load("smoke")
    preset = dataclasses.replace(preset, episode=dataclasses.replace(preset.episode, decision_layers=(1,)))
    env = TokenReductionEnv(preset, split="validation", model=model, tokenizer=tokenizer)
    rows = TokenReductionVectorEnv(env, 3)  # the group's plays, one batch
    played = play(rows, head, 0, 0.6, 3)
    with torch.no_grad():
        scores = head.scores(played.normed.float(), played.normed[-played.window :].float())
    count = played.count
    log_prob, _, drawn = draws(scores.expand(3, -1), played.keys, played.valid.expand(3, -1), count)
    assert torch.equal(log_prob, played.log_prob)  # PPO's first ratios are exactly 1
    assert played.count.gt(0).all() and drawn.sum(-1).eq(played.count).all()
    reached = rows.envs[-1].features().state.reaches_top()[: played.valid.shape[0]]
    assert int((played.valid & ~reached).sum()) == played.count[-1]  # what the reducer removed is what was drawn
    lowest = played.keys[-1].masked_fill(~played.valid, float("inf")).argsort()[: played.count[-1]]
    assert not reached[lowest].any()  # the lowest keys went: the log-probability is of the action taken
    with pytest.raises(InvalidArgumentError, match="group"):
        play(env, head, 0, 0.6, 0)
    with pytest.raises(InvalidArgumentError, match="span head"):
        tune_span_head(torch.nn.Linear(2, 2), model, tokenizer, config, show_progress=False)
    save_policy(head.eval(), tmp_path / "tuned", model=model)
    loaded = load_policy(tmp_path / "tuned", model)
    env.reset(options={"task_index": 0, "budget": 0.6})
    features = env.features()
    assert torch.equal(loaded.act(features, 0.6).token_scores, head.act(features, 0.6).token_scores)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--unit", "paragraph"], "bad unit"),
        (["--ppo-updates", "2", "--ppo-env", "no-such-preset"], "no-such-preset"),
        (["--ppo-updates", "2", "--ppo-lr", "0"], "learning_rate"),
        (["--start", "no/such/head", "--ppo-updates", "2"], "no policy checkpoint there"),
        (["--later-layer", "2"], "later_layer = 2 must be at least 3"),
        (["--later-layer", "8", "--min-keep", "1.5"], "min_keep"),
        (["--later-layer", "8", "--start", "smollm2-135m-span"], "drop --start"),
    ],
)
def test_train_head_cli_refuses_bad_ppo_settings_in_one_line(tmp_path, args, fragment):
    from hostile.test_inputs_and_faults import assert_clean_error, invoke

    assert_clean_error(invoke("train-head", "--out", tmp_path / "h", *args), fragment)
    assert not (tmp_path / "h").exists()


def _span_recipe(folder, model_dir) -> str:
    """A span-head recipe for the tiny model: a few short grounded tasks, two epochs."""
    path = folder / "span-tiny.toml"
    path.write_text(
        f"""policy = "span"
[span_head]
model = "{model_dir}"
decision_layer = 1
rank = 4
channels = 2
kernel = 3
long_kinds = []
short_items = 6
short_tokens = [40, 80]
epochs = 2
"""
    )
    return str(path)


def test_rlprune_train_with_a_span_recipe_exports_a_sentence_head(tmp_path, tiny_model_dir):
    from hostile.test_inputs_and_faults import assert_clean_error, invoke

    recipe = _span_recipe(tmp_path, tiny_model_dir)
    result = invoke("train", "--recipe", recipe, "--out", tmp_path / "run", "--seed", 3)
    assert result.exit_code == 0, result.output
    model = tiny_model("llama")
    head = load_policy(tmp_path / "run" / "policy", model)
    assert isinstance(head, SpanHeadPolicy) and head.decision_layer == 1 and head.unit == "sentence"
    assert set(head.sentence_ends) == set(sentence_end_ids(tiny_tokenizer()))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["seed"] == 3 and len(summary["loss"]) == 2 and summary["seconds"] > 0
    assert_clean_error(invoke("train", "--recipe", recipe, "--out", tmp_path / "run"), "remove them or choose another")
    unused = invoke("train", "--recipe", recipe, "--env", "smoke", "--timesteps", 5, "--out", tmp_path / "other")
    assert_clean_error(unused, "--env, --timesteps do not apply to a span-head recipe")
    assert_clean_error(invoke("train", "--recipe", "span-rl", "--model", "gemma3-270m"), "its RL stage plays")
    assert_clean_error(invoke("train", "--recipe", recipe, "--resume", "--out", tmp_path / "run"), "run it again")
    assert not (tmp_path / "other").exists()


def test_model_option_trains_a_span_recipe_for_another_model(tmp_path, tiny_model_dir):
    from hostile.test_inputs_and_faults import invoke

    recipe = tmp_path / "span-other.toml"
    text = Path(_span_recipe(tmp_path, tiny_model_dir)).read_text()
    recipe.write_text(text.replace(str(tiny_model_dir), "smollm2-135m"))
    result = invoke("train", "--recipe", recipe, "--model", tiny_model_dir, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    head = load_policy(tmp_path / "run" / "policy", tiny_model("llama"))  # refused were it SmolLM2's
    assert head.decision_layer == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["model"] == str(tiny_model_dir)


def test_span_recipes_refuse_bad_settings(tmp_path):
    from rlprune.config import ConfigError
    from rlprune.train.recipe import Recipe

    bad = [("epochs = 0", "epochs"), ('unit = "paragraph"', "bad unit"), ('long_kinds = ["haystack"]', "haystack")]
    for table, message in [*bad, ("short_mix = { riddles = 1.0 }", "riddles")]:
        path = tmp_path / "bad.toml"
        path.write_text(f'policy = "span"\n[span_head]\n{table}\n')
        with pytest.raises((ConfigError, InvalidActionError), match=message):
            Recipe.load(path)


def test_ppo_runs_refuse_a_span_recipe_and_token_runs_refuse_preset_scorers(tmp_path):
    from rlprune.config import ConfigError, find_config
    from rlprune.train.common.setup import start_run
    from rlprune.train.recipe import Recipe

    options = {"backend": "sb3", "overrides": {}, "resume": False, "cache_dir": None}
    with pytest.raises(ConfigError, match="not a PPO run"):
        start_run("smoke", Recipe(policy="budget"), tmp_path / "a", **options)
    preset = tmp_path / "spans.toml"
    text = find_config("smoke", "envs").read_text()
    preset.write_text(text.replace("protect_first = 1", 'protect_first = 1\nscorers = ["relevance:unit=16"]'))
    with pytest.raises(ConfigError, match="layer policies only"):
        start_run(preset, Recipe(policy="token"), tmp_path / "b", **options)
    assert start_run(preset, Recipe(), tmp_path / "c", **options).new_policy().action_spec.scorers == (
        "relevance:unit=16",
    )


def test_sentence_ends_must_be_token_ids():
    head = _head(tiny_model("llama"))
    for ends in ([4.5], [-1], [True]):
        with pytest.raises(ValueError, match="token ids"):
            head.select_by("sentence", ends)
    assert head.unit == "token"  # a refused unit leaves the head as it was


def _layered(model, min_keep: float = 0.25) -> SpanHeadPolicy:
    """A head at layer 1 that hands the cut over to a head at layer 2 when the budget allows."""
    head, later = _head(model, 1), _head(model, 2)
    with torch.no_grad():
        for parameter in later.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    head.hand_over(later, min_keep)
    return head


def test_a_later_head_cuts_when_the_budget_lets_it_keep_enough_and_the_first_otherwise():
    model = tiny_model("llama")
    reducer = Reducer(model)
    head = _layered(model)
    ids = torch.randint(3, 64, (1, 120), generator=torch.Generator().manual_seed(1))
    layers = head.decision_layers(4)
    assert layers == (1, 2)
    for budget, cut_at in ((0.9, 2), (0.75, 2), (0.5, 1), (0.4, 1)):
        out = reducer.run(ids, policy=head, budget=budget, protect_last=6)
        assert out.flops_ratio == pytest.approx(budget, abs=0.02)
        assert [layer for layer, action in out.state.actions.items() if not action.is_noop] == [cut_at]
        # the later head cuts exactly where, cutting alone at its layer, it keeps min_keep of the removable tokens
        alone = reducer.run(ids, policy=head.later, budget=budget, protect_last=6)
        removable, kept = alone.tokens_per_layer[0] - 6, alone.tokens_per_layer[-1] - 6
        assert (kept >= 0.25 * removable) == (cut_at == 2)
    # the later head alone, at its layer, picks exactly the tokens the layered head keeps
    alone = head.later
    a = reducer.run(ids, policy=head, budget=0.8, protect_last=6)
    b = reducer.run(ids, policy=alone, budget=0.8, protect_last=6)
    assert torch.equal(a.state.positions, b.state.positions)
    with pytest.raises(ValueError, match="layer 1 and 2"):
        head.decision_layers(2)


def test_a_layered_head_exports_and_acts_the_same(tmp_path):
    model = tiny_model("llama")
    reducer = Reducer(model)
    head = _layered(model)
    save_policy(head, tmp_path / "head", model=model)
    loaded = load_policy(tmp_path / "head", model)
    assert isinstance(loaded, SpanHeadPolicy) and loaded.config() == head.config()
    assert loaded.later is not None and loaded.later.decision_layer == 2 and loaded.min_keep == 0.25
    ids = torch.randint(3, 64, (1, 90), generator=torch.Generator().manual_seed(3))
    for budget in (0.5, 0.85):
        a = reducer.run(ids, policy=head, budget=budget, protect_last=5, logits="all")
        b = reducer.run(ids, policy=loaded, budget=budget, protect_last=5, logits="all")
        assert torch.equal(a.state.positions, b.state.positions) and torch.equal(a.logits, b.logits)
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["decision_layers"] == [1, 2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"decision_layer": 1}, "must come after"),
        ({"min_keep": 1.0}, "min_keep"),
        ({"kernel": 4}, "odd"),
        ({"rank": 0}, "network.later.rank"),
        ({"extra": 1}, "exactly the keys"),
    ],
)
def test_damaged_later_heads_are_refused(tmp_path, change, message):
    model = tiny_model("llama")
    save_policy(_layered(model), tmp_path / "head", model=model)
    path = tmp_path / "head" / "config.json"
    config = json.loads(path.read_text())
    config["network"]["later"] |= change
    path.write_text(json.dumps(config))
    with pytest.raises(PolicyError, match=message):
        load_policy(tmp_path / "head", model)
    config["network"]["later"] = {"decision_layer": 2}  # parameters no longer add up either
    path.write_text(json.dumps(config))
    with pytest.raises(PolicyError, match="exactly the keys"):
        load_policy(tmp_path / "head", model)


def test_hand_over_refuses_what_cannot_follow():
    model = tiny_model("llama")
    for first, later, min_keep, message in (
        (1, _head(model, 1), 0.25, "after layer 1"),
        (1, _head(model, 2), 1.0, "min_keep"),
        (0, _layered(model), 0.25, "plain span head"),
    ):
        with pytest.raises(InvalidArgumentError, match=message):
            _head(model, first).hand_over(later, min_keep)
    hidden = model.config.hidden_size
    shape = {"decision_layer": 2, "rank": 4, "channels": 2, "kernel": 3, "min_keep": 0.25}
    for change, message in (
        ({"min_keep": float("nan")}, "min_keep"),
        ({"min_keep": "0.25"}, "min_keep"),
        ({"decision_layer": 2.7}, "whole numbers"),
        ({"rank": True}, "whole numbers"),
        ({"kernel": None}, "whole numbers"),
    ):
        with pytest.raises(InvalidArgumentError, match=message):
            SpanHeadPolicy(hidden, 1, 4, 2, 3, later=shape | change)
    with pytest.raises(InvalidArgumentError, match="exactly"):
        SpanHeadPolicy(hidden, 1, 4, 2, 3, later={k: v for k, v in shape.items() if k != "min_keep"})
    with pytest.raises(InvalidArgumentError, match="no later head"):
        _head(model, 1).later_config()
    assert SpanHeadPolicy(hidden, 1, 4, 2, 3, later=shape).later_config() == shape


def test_a_span_recipe_with_a_later_layer_trains_both_heads(tmp_path, tiny_model_dir):
    from hostile.test_inputs_and_faults import invoke

    recipe = _span_recipe(tmp_path, tiny_model_dir)
    with open(recipe, "a") as file:
        file.write("later_layer = 2\nmin_keep = 0.3\n")
    result = invoke("train", "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    model = tiny_model("llama")
    head = load_policy(tmp_path / "run" / "policy", model)
    assert head.layers == (1, 2) and head.min_keep == 0.3 and head.later.unit == "sentence"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["later_loss"]) == 2
    # the later head is the one a recipe deciding at layer 2 alone trains
    text = open(recipe).read().replace("decision_layer = 1", "decision_layer = 2").replace("later_layer = 2\n", "")
    alone = tmp_path / "alone.toml"
    alone.write_text(text)
    assert invoke("train", "--recipe", alone, "--out", tmp_path / "alone").exit_code == 0
    single = load_policy(tmp_path / "alone" / "policy", model)
    weights, later = single.state_dict(), head.later.state_dict()
    assert weights.keys() == later.keys() and all(torch.equal(weights[k], later[k]) for k in weights)


def test_a_later_head_that_does_not_learn_is_left_out(tmp_path, tiny_model_dir, monkeypatch):
    from hostile.test_inputs_and_faults import invoke

    from rlprune.train.kinds import span_head

    fit, fits = span_head.fit, []

    def rising_on_the_second(head, examples, config, show_progress=True):
        fits.append(fit(head, examples, config, show_progress))
        return fits[-1] if len(fits) == 1 else [1.0, 2.0]  # the later head's loss rose

    monkeypatch.setattr(span_head, "fit", rising_on_the_second)
    recipe = _span_recipe(tmp_path, tiny_model_dir)
    with open(recipe, "a") as file:
        file.write("later_layer = 2\n")
    result = invoke("train", "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "did not learn" in " ".join(result.output.split())
    head = load_policy(tmp_path / "run" / "policy", tiny_model("llama"))
    assert head.layers == (1,) and head.later is None
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["later_dropped"] is True
    assert span_head.learned([2.0, 1.5]) and span_head.learned([2.0])  # one epoch has nothing to compare
    assert not span_head.learned([2.0, 2.0]) and not span_head.learned([2.0, float("nan")])


def test_span_recipes_refuse_a_later_layer_that_does_not_follow(tmp_path):
    from rlprune.config import ConfigError
    from rlprune.train.recipe import Recipe

    for table, message in (("later_layer = 2", "later_layer"), ("later_layer = 5\nmin_keep = 1.0", "min_keep")):
        path = tmp_path / "bad.toml"
        path.write_text(f'policy = "span"\n[span_head]\ndecision_layer = 2\n{table}\n')
        with pytest.raises((ConfigError, ValueError), match=message):
            Recipe.load(path)


def test_a_layered_head_in_a_batch_acts_on_each_row_as_alone():
    model = tiny_model("llama")
    reducer = Reducer(model)
    head = _layered(model)
    rows = [torch.randint(3, 64, (n,), generator=torch.Generator().manual_seed(n)) for n in (60, 90, 120)]
    for budget in (0.5, 0.8):
        batch = reducer.run(rows, policy=head, budget=budget, protect_last=5)
        for ids, out in zip(rows, batch, strict=True):
            alone = reducer.run(ids, policy=head, budget=budget, protect_last=5)
            assert torch.equal(out.state.positions, alone.state.positions)
            assert out.tokens_per_layer == alone.tokens_per_layer


def test_dropping_the_later_head_cuts_at_the_first_layer_at_every_budget(tmp_path):
    model = tiny_model("llama")
    reducer = Reducer(model)
    head = _layered(model)
    head.drop_later()
    assert head.layers == (1,) and "later" not in head.config()
    ids = torch.randint(3, 64, (1, 120), generator=torch.Generator().manual_seed(1))
    out = reducer.run(ids, policy=head, budget=0.9, protect_last=6)
    assert [layer for layer, action in out.state.actions.items() if not action.is_noop] == [1]
    save_policy(head, tmp_path / "head", model=model)
    assert load_policy(tmp_path / "head", model).layers == (1,)


def test_a_span_ppo_stage_checkpoints_and_resumes_through_the_shared_loop(tmp_path, tiny_model_dir, monkeypatch):
    from rlprune.train.kinds import span_ppo
    from rlprune.train.trainer import TrainOptions, train

    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path / "home"))
    recipe = _span_recipe(tmp_path, tiny_model_dir)
    with open(recipe, "a") as file:
        file.write('[span_ppo]\nenv = "smoke"\nupdates = 3\nprompts = 2\ngroup = 2\nvalidation_tasks = 1\n')
        file.write("validation_budgets = [0.6]\neval_every = 2\nlearning_rate = 0.01\n")
    whole = train(TrainOptions(recipe=recipe, out=tmp_path / "whole", quiet=True))
    assert whole["timesteps"] == 12 and len(whole["ppo"]["ppo_updates"]) == 3 and len(whole["loss"]) == 2
    whole_history = whole["ppo"]["validation_history"]
    assert [row["timesteps"] for row in whole_history] == [0, 8, 12]  # the start first
    assert (tmp_path / "whole" / "last" / "config.json").is_file() and (tmp_path / "whole" / "best").is_dir()
    run = json.loads((tmp_path / "whole" / "run.json").read_text())
    assert run["decision_layers"] == [1] and run["recipe"]["policy"] == "span"  # the head's layer, not the preset's

    update = span_ppo.ppo_update
    calls = []

    def killed_on_the_third(*args, **kwargs):  # the process dies during the third update
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return update(*args, **kwargs)

    monkeypatch.setattr(span_ppo, "ppo_update", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        train(TrainOptions(recipe=recipe, out=tmp_path / "cut", quiet=True))
    assert json.loads((tmp_path / "cut" / "last" / "state.json").read_text())["timesteps"] == 8
    monkeypatch.setattr(span_ppo, "ppo_update", update)
    resumed = train(TrainOptions(out=tmp_path / "cut", resume=True, quiet=True))
    assert resumed["ppo"]["resumed_from"] == 8 and resumed["timesteps"] == 12
    assert len(resumed["ppo"]["ppo_updates"]) == 1  # the supervision was not run again
    model = tiny_model("llama")
    done, again = (load_policy(tmp_path / name / "policy", model).state_dict() for name in ("whole", "cut"))
    assert all(torch.equal(done[key], again[key]) for key in done)  # the same head as the run never cut
    assert resumed["ppo"]["validation_history"] == whole["ppo"]["validation_history"]

    longer = train(TrainOptions(out=tmp_path / "whole", resume=True, timesteps=18, quiet=True))  # a finished run
    assert longer["ppo"]["resumed_from"] == 12 and longer["timesteps"] == 20  # 18 episodes, in whole updates of 4
    assert len(longer["ppo"]["ppo_updates"]) == 2 and longer["ppo"]["validation_history"][:3] == whole_history
    assert json.loads((tmp_path / "whole" / "run.json").read_text())["recipe"]["span_ppo"]["updates"] == 5
    with pytest.raises(RunFolderError, match="span_ppo.learning_rate"):  # what it learns stays the run's
        edited = Path(recipe).read_text().replace("learning_rate = 0.01", "learning_rate = 0.02")
        (tmp_path / "edited.toml").write_text(edited)
        train(TrainOptions(recipe=tmp_path / "edited.toml", out=tmp_path / "whole", resume=True, quiet=True))

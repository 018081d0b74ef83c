"""The span head: question-conditioned scores from hidden states, its training, its checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model, tiny_tokenizer

from rlprune import Reducer, ReducerConfig
from rlprune.data.tasks import Task
from rlprune.models import model_fingerprint
from rlprune.policies import PolicyError, SpanHeadPolicy, decider, load_policy, save_policy
from rlprune.reduction import sentence_end_ids
from rlprune.train.span_head import SpanHeadConfig, collect, fit

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
        out = reducer.run(ids, decider(head, reducer, budget), decision_layers=head.decision_layers(4), protect_last=6)
        assert out.flops_ratio == pytest.approx(budget, abs=0.02)
        assert list(out.state.actions) == [2]
    head.default_budget = 0.7  # a 4-layer model cut at layer 2 cannot go under about 0.55
    without = reducer.run(ids, decider(head, reducer, None), decision_layers=(2,), protect_last=6)
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
    a = reducer.run(ids, decider(head, reducer, 0.7), decision_layers=(2,), protect_last=5, logits="all")
    b = reducer.run(ids, decider(loaded, reducer, 0.7), decision_layers=(2,), protect_last=5, logits="all")
    assert torch.equal(a.state.positions, b.state.positions) and torch.equal(a.logits, b.logits)
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["kind"] == "span" and config["model"] == model_fingerprint(model)


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

"""``SpanHeadPolicy``: a small head on the model's own hidden states, conditioned on the question.

At its decision layer the head reads every carried prompt token's state (after the layer's input
norm) and the question's states (the protected tail), and scores each token by a low-rank
bilinear match against the question tokens; a light 1-D convolution over neighbours then turns
those matches into span scores, so the value that *follows* a matching cue ("... for Humhumqua is
4018627") is kept with it. The plain cosine match to the question (the ``relevance`` scorer) is one more
input, so the head starts from the strongest fixed rule and learns where to depart from it. The
reducer removes the lowest-scored tokens, as many as the budget requires at that layer (one cut,
like the strongest fixed rules). A head may hand over to a ``later`` head at a deeper layer: when the
budget lets that layer keep at least ``min_keep`` of the removable tokens, the cut waits for it, so the
kept tokens are seen by more full-context layers instead of keeping more of them.

It is trained by supervision on where the evidence is (:mod:`rlprune.train.kinds.span_head`): the gold
answer's tokens and the sentence around them are known from each training task, never from the
prompt. Its cost is a few thousand FLOPs per token, well under 1% of the reduced forward.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlprune.engine.features import Features
from rlprune.errors import InvalidArgumentError
from rlprune.policies.budget_head import BudgetHead, budget_features
from rlprune.reduction import LayerAction, Pool, parse_unit, unit_ids, unit_ranking

if TYPE_CHECKING:
    from rlprune.policies.compat import ModelShape

SPAN_SPEC_VERSION = 4
"""Inputs and outputs of span-head policies (layer- and token-level policies have their own)."""

DEFAULT_BUDGET = 0.5
"""The FLOPs ratio a span head runs at when no budget is given."""

NEED_MASS = 0.5
"""A prompt's need is the share of its removable tokens that hold this much of the head's softmax mass."""

NEED_SCALE = 8.0
"""How many times its need a prompt proposes to keep in average-budget mode (:meth:`SpanHeadPolicy.propose_budget`)."""

MIXER_INPUTS = 8
"""Channels into the mixer: best and soft-mean learned match, the plain cosine match to the question
and that match carried over the next 8 tokens, and four question-free channels."""


class SpanHeadPolicy(nn.Module):
    """Question-conditioned token scores from the hidden states at one decision layer."""

    name = "span-head"
    kind = "span"

    def __init__(
        self,
        hidden_size: int,
        decision_layer: int = 2,
        rank: int = 32,
        channels: int = 16,
        kernel: int = 15,
        op: str = "prune",
        default_budget: float = DEFAULT_BUDGET,
        budget_grid: Sequence[float] | None = None,
        budget_hidden: Sequence[int] | None = None,
        unit: str = "token",
        sentence_ends: Sequence[int] | None = None,
        later: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.later: SpanHeadPolicy | None = None
        self.min_keep = 1.0
        self.select_by(unit, sentence_ends)
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"the mixer's kernel must be a positive odd width, got {kernel}")
        if op not in ("prune", "merge"):
            raise ValueError(f"a span head prunes or merges, not {op!r}")
        self.hidden_size, self.decision_layer, self.rank = hidden_size, decision_layer, rank
        self.channels, self.kernel, self.op, self.default_budget = channels, kernel, op, default_budget
        self.token = nn.Linear(hidden_size, rank, bias=False)  # what a context token offers
        self.question = nn.Linear(hidden_size, rank, bias=False)  # what the question asks for
        self.local = nn.Linear(hidden_size, 4)  # question-free cues (punctuation, digits, names)
        self.mixer = nn.Sequential(
            nn.Conv1d(MIXER_INPUTS, channels, kernel, padding=kernel // 2),
            nn.GELU(),
            nn.Conv1d(channels, 1, kernel, padding=kernel // 2),
        )
        if (budget_grid is None) != (budget_hidden is None):
            raise ValueError("a budget head needs both its grid and its hidden widths")
        # proposes each prompt's ratio in average-budget mode; without one, the mass heuristic does
        self.budget_head = None if budget_grid is None else BudgetHead(budget_grid, budget_hidden)  # type: ignore[arg-type]
        if later is not None:
            shape_keys = ("decision_layer", "rank", "channels", "kernel")
            if set(later) != {*shape_keys, "min_keep"}:
                raise InvalidArgumentError(f"later names {sorted(later)}; it needs exactly {[*shape_keys, 'min_keep']}")
            shape = {key: later[key] for key in shape_keys}
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape.values()):
                raise InvalidArgumentError(f"the later head's layer and widths are whole numbers, got {shape}")
            self.hand_over(
                SpanHeadPolicy(hidden_size, **shape, op=op, default_budget=default_budget), later["min_keep"]
            )

    def hand_over(self, later: SpanHeadPolicy, min_keep: float) -> None:
        """Let ``later`` (a head at a deeper layer) make the cut whenever the budget still lets it keep
        ``min_keep`` of the removable tokens there; this head cuts at tighter budgets."""
        if later.decision_layer <= self.decision_layer:
            raise InvalidArgumentError(
                f"a later head decides after layer {self.decision_layer}, not at {later.decision_layer}"
            )
        if later.later is not None or later.budget_head is not None or later.hidden_size != self.hidden_size:
            raise InvalidArgumentError("a later head is a plain span head of the same width")
        if not isinstance(min_keep, int | float) or isinstance(min_keep, bool) or not 0 < min_keep < 1:
            raise InvalidArgumentError(f"min_keep is a share of the removable tokens in (0, 1), got {min_keep!r}")
        later.op, later.default_budget = self.op, self.default_budget
        later.select_by(self.unit, self.sentence_ends)
        self.later, self.min_keep = later, float(min_keep)

    def drop_later(self) -> None:
        """Cut at this head's own layer at every budget, as a :class:`BudgetHead` is trained to."""
        self.later, self.min_keep = None, 1.0

    def head_at(self, layer: int) -> SpanHeadPolicy:
        """The head that cuts at ``layer``: this one, or its later head."""
        for head in (self, self.later):
            if head is not None and head.decision_layer == layer:
                return head
        raise InvalidArgumentError(f"the span head cuts at layer {' or '.join(map(str, self.layers))}, not {layer}")

    @property
    def layers(self) -> tuple[int, ...]:
        return (self.decision_layer,) + (() if self.later is None else self.later.layers)

    def decision_layers(self, num_layers: int) -> tuple[int, ...]:
        if not 0 <= self.layers[-1] < num_layers:
            at = " and ".join(str(layer) for layer in self.layers)
            raise ValueError(f"the span head decides at layer {at}; the model has {num_layers} layers")
        return self.layers

    def check_model(self, shape: ModelShape) -> None:
        """Refuse a model this head cannot read (:func:`~rlprune.policies.compat.check_compatible`): its
        layers (the budget head proposes at the first), its width and its sentence ends must fit."""
        shape.layer("decision_layer", self.decision_layer)
        if self.later is not None:
            shape.layer("later.decision_layer", self.later.decision_layer)
        shape.width("hidden_size", self.hidden_size)
        heads = {"": self} | ({} if self.later is None else {"later.": self.later})
        for prefix, head in heads.items():  # the weights, should they have been swapped after construction
            for name in ("token", "question", "local"):
                shape.width(f"the width of {prefix}{name}.weight", getattr(head, name).in_features)
        if self.sentence_ends:
            shape.token_ids("sentence_ends", self.sentence_ends)
        if self.unit.isdigit():
            shape.reach("unit", int(self.unit))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def scores(self, normed: Tensor, question: Tensor) -> Tensor:
        """Keep scores ``(n,)`` of the context states ``(n, hidden)`` given the question's ``(w, hidden)``."""
        device = self.token.weight.device
        normed, question = normed.to(device, torch.float32), question.to(device, torch.float32)
        match = self.token(normed) @ self.question(question).T / math.sqrt(self.rank)  # (n, w)
        cosine = (F.normalize(normed, dim=-1) @ F.normalize(question, dim=-1).T).amax(-1)  # the relevance scorer's
        columns = (
            match.amax(-1),
            match.logsumexp(-1) - math.log(match.shape[1]),
            cosine,
            Pool.forward(9).apply(cosine),
            *self.local(normed).T,
        )
        return self.mixer(torch.stack(columns)[None])[0, 0]

    def head_flops(self, tokens: int, window: int) -> float:
        """What scoring ``tokens`` tokens against a ``window``-token question costs."""
        per_token = 2 * self.hidden_size * (self.rank + 4 + window) + 2 * self.rank * window
        mixer = 2 * self.kernel * (MIXER_INPUTS * self.channels + self.channels)
        return float(tokens * (per_token + mixer) + 2 * window * self.hidden_size * self.rank)

    def inputs(self, features: Features) -> tuple[Tensor, int]:
        """What the head reads at the decision layer ``features`` describe: the carried prompt tokens'
        states after the layer's input norm ``(n, hidden)``, and how many final ones are the question."""
        ctx = features.reducer.score_context(features.state)
        normed = ctx.normed[0]
        return normed, min(ctx.window, normed.shape[0])

    def token_scores(self, features: Features) -> Tensor:
        """The keep score of every carried token at the decision layer ``features`` describe."""
        normed, window = self.inputs(features)
        return self.scores(normed, normed[-window:]).to(normed.device)

    @torch.no_grad()
    def propose_budget(self, features: Features) -> float:
        """The FLOPs ratio this prompt asks for in average-budget mode (``features.budget`` is the target).

        With a trained :class:`BudgetHead` (:attr:`budget_head`), the grid ratio it picks from the scores'
        :func:`budget_features`. Without one, :data:`NEED_SCALE` times the share of tokens that hold
        :data:`NEED_MASS` of the head's mass (a confident head needs few): over held-out grounded
        questions and needles that share ranks prompts like the share an oracle must keep to hold the
        whole answer (Spearman 0.84 on 78 items, ``benchmarks/adaptive_budget.py --need``).
        :class:`~rlprune.budget.BudgetController` shifts the proposals so their mean meets the target.
        """
        if features.layer != self.decision_layer:
            raise ValueError(f"the span head proposes its budget at layer {self.decision_layer}, not {features.layer}")
        removable = features.state.removable()
        count = int(removable.sum())
        if count == 0:
            return features.ratio_after({})
        scores = self.token_scores(features)[removable]
        if self.budget_head is not None:
            return self.budget_head.choose(self.budget_features(features, scores))
        mass = torch.softmax(scores.float(), 0).sort(descending=True).values.cumsum(0)
        need = (int((mass < NEED_MASS).sum()) + 1) / count
        keep = min(need * NEED_SCALE, 1.0)
        return features.ratio_after({self.decision_layer: LayerAction(self.op, 1.0 - keep, "learned")})

    def budget_features(self, features: Features, scores: Tensor) -> Tensor:
        """What a :class:`BudgetHead` reads for this prompt: ``scores`` are the removable tokens'."""
        everything = LayerAction(self.op, 1.0, "learned")
        return budget_features(scores, features.budget, features.ratio_after({self.decision_layer: everything}))

    def hands_over(self, features: Features) -> bool:
        """Whether the later head makes this prompt's cut: the budget, ``features.budget``, still lets
        it keep :attr:`min_keep` of the removable tokens at its layer."""
        if self.later is None:
            return False
        budget = self.default_budget if features.budget is None else features.budget  # as act() reads it
        cut = LayerAction(self.op, 1.0 - self.min_keep, "learned")
        return features.ratio_after({self.later.decision_layer: cut}) <= budget

    @torch.no_grad()
    def act(self, features: Features, budget: float | None, deterministic: bool = True) -> LayerAction:
        if budget is None:
            features = dataclasses.replace(features, budget=self.default_budget)
        if self.later is not None and features.layer == self.later.decision_layer:
            return self.later.act(features, features.budget)  # nothing left to remove if this head cut
        if features.layer != self.decision_layer or self.hands_over(features):
            return LayerAction()
        action = features.action_for_share(self.op, "learned", 1.0)
        if action.is_noop:
            return LayerAction()
        return dataclasses.replace(action, token_scores=self.unit_scores(features, self.token_scores(features)))

    def select_by(self, unit: str, sentence_ends: Sequence[int] | None = None) -> None:
        """Keep and drop whole ``unit``s: ``token``, ``sentence`` (given the tokenizer's sentence-end
        ids, :func:`~rlprune.reduction.sentence_end_ids`) or a chunk size such as ``"16"``."""
        unit = parse_unit(unit)
        if unit == "sentence" and not sentence_ends:
            raise InvalidArgumentError(
                "unit='sentence' needs the tokenizer's sentence ends (rlprune.reduction.sentence_end_ids)"
            )
        if unit == "sentence" and not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in sentence_ends
        ):
            raise InvalidArgumentError(
                f"sentence_ends are token ids (whole numbers >= 0), got {list(sentence_ends)[:8]}"
            )
        self.unit = unit
        self.sentence_ends = tuple(int(i) for i in sentence_ends) if unit == "sentence" else None
        if self.later is not None:
            self.later.select_by(unit, sentence_ends)

    def unit_scores(self, features: Features, scores: Tensor) -> Tensor:
        """``scores`` re-ranked so whole units (sentences or chunks) go together, weakest first; the
        scores themselves for ``unit="token"``."""
        if self.unit == "token":
            return scores
        return unit_ranking(scores, self.units(features, scores.numel())).to(scores.device)

    def units(self, features: Features, count: int) -> Tensor | None:
        """The unit of each of the first ``count`` carried tokens, ``(count,)`` ids, ``None`` for ``unit="token"``."""
        if self.unit == "token":
            return None
        state = features.state
        positions = state.positions[:count]
        ends = torch.tensor(self.sentence_ends or (), dtype=torch.long, device=positions.device)
        return unit_ids(self.unit, positions, state.input_ids[0], ends)

    def config(self) -> dict[str, object]:
        """The shape of the network, as a checkpoint records it."""
        network = {
            "hidden_size": self.hidden_size,
            "decision_layer": self.decision_layer,
            "rank": self.rank,
            "channels": self.channels,
            "kernel": self.kernel,
            "op": self.op,
            "default_budget": self.default_budget,
        }
        unit = {} if self.unit == "token" else self.unit_config()
        budget = {} if self.budget_head is None else self.budget_head.config()
        return network | unit | budget | ({} if self.later is None else {"later": self.later_config()})

    def later_config(self) -> dict[str, float]:
        """What a checkpoint records of the later head (it shares this head's width, op and unit)."""
        later = self.later
        if later is None:
            raise InvalidArgumentError("this span head cuts at one layer: it has no later head to record")
        shape = {"decision_layer": later.decision_layer, "rank": later.rank, "channels": later.channels}
        return shape | {"kernel": later.kernel, "min_keep": self.min_keep}

    def unit_config(self) -> dict[str, object]:
        """What a checkpoint records of a head that selects whole units."""
        return {"unit": self.unit} | ({"sentence_ends": list(self.sentence_ends)} if self.sentence_ends else {})


def listwise_loss(scores: Tensor, targets: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Cross-entropy of a softmax over all tokens against uniform mass on each target set.

    Pushes every target token (the answer's, then its sentence's) above the rest, which is what a
    top-k selection at any budget needs.
    """
    logprobs = F.log_softmax(scores, dim=-1)
    loss = scores.new_zeros(())
    for mask, weight in zip(targets, weights, strict=True):
        if mask.any():
            loss = loss - weight * logprobs[mask].mean()
    return loss

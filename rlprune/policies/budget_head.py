"""``BudgetHead``: how much of the prefill a prompt needs, picked from a grid of FLOPs ratios.

In average-budget mode (:mod:`rlprune.budget`) a policy proposes each prompt's ratio at its first
decision layer. A span head's own scores already say how concentrated the evidence is: when a
handful of tokens hold most of the mass, keeping few loses little; when the mass is spread, more
must stay. The budget head reads a few statistics of those scores (:func:`budget_features`) and the
target average, and picks one ratio of its grid. It is trained with PPO under a constraint on the
average (:mod:`rlprune.train.kinds.budget_head`); a :class:`~rlprune.budget.BudgetController` then holds
the realised mean on the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rlprune.errors import InvalidArgumentError

BUDGET_FEATURES = (
    "log_target",  # the average FLOPs ratio the stream must hold
    "log_mass_25",  # share of removable tokens holding 25% of the span head's softmax mass
    "log_mass_50",
    "log_mass_75",
    "log_mass_90",
    "log_top_probability",  # the single best token's mass
    "entropy",  # of the mass, over log(tokens)
    "log_tokens",  # log(removable tokens) / 10
    "log_min_ratio",  # the FLOPs ratio left when every removable token goes
)
"""What a budget head reads, in order: shares and ratios as logs, so that a share of 0.5% and one of
2% (a confident and a hesitant head) are as far apart as the network can see."""

MASS_LEVELS = (0.25, 0.5, 0.75, 0.9)

DEFAULT_GRID = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
"""The FLOPs ratios a budget head chooses from."""


def target_feature(target: float) -> float:
    """The first of :data:`BUDGET_FEATURES`: how a budget head reads its target."""
    return math.log(max(target, 1e-6))


def budget_features(scores: Tensor, target: float, min_ratio: float) -> Tensor:
    """The :data:`BUDGET_FEATURES` of one prompt from the span head's scores over its removable tokens."""
    count = int(scores.numel())
    if count == 0:
        return torch.tensor([target_feature(target), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, math.log(min_ratio)])
    probs = torch.softmax(scores.detach().float(), 0).sort(descending=True).values
    mass = probs.cumsum(0)
    shares = [math.log((int((mass < level).sum()) + 1) / count) for level in MASS_LEVELS]
    entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum()) / math.log(max(count, 2))
    top = math.log(max(float(probs[0]), 1e-12))
    return torch.tensor(
        [target_feature(target), *shares, top, entropy, math.log(count) / 10, math.log(max(min_ratio, 1e-6))]
    )


MAX_GRID = 64
"""Most ratios a budget grid may hold (a checkpoint with more is refused at load, so none is made)."""


class BudgetHead(nn.Module):
    """A small tanh MLP from :data:`BUDGET_FEATURES` to logits over a grid of FLOPs ratios.

    The features are centred and scaled first (:attr:`center`, :attr:`scale`: the training prompts'
    mean and spread, saved with the weights): raw log-shares sit around -5 and would saturate tanh.
    """

    def __init__(self, grid: Sequence[float] = DEFAULT_GRID, hidden: Sequence[int] = (32, 32)) -> None:
        super().__init__()
        grid, hidden = tuple(float(g) for g in grid), tuple(int(h) for h in hidden)
        if not grid or any(not 0 < g <= 1 for g in grid) or list(grid) != sorted(set(grid)):
            raise InvalidArgumentError(f"a budget grid is increasing FLOPs ratios in (0, 1], got {list(grid)}")
        if len(grid) > MAX_GRID:
            raise InvalidArgumentError(f"a budget grid (--grid) holds at most {MAX_GRID} ratios, got {len(grid)}")
        if not hidden or any(h < 1 for h in hidden):
            raise InvalidArgumentError(f"a budget head needs hidden layers of positive width, got {list(hidden)}")
        self.grid, self.hidden = grid, hidden
        widths = (len(BUDGET_FEATURES), *hidden)
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:], strict=False):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.trunk = nn.Sequential(*layers)
        self.logits = nn.Linear(widths[-1], len(grid))
        self.register_buffer("center", torch.zeros(len(BUDGET_FEATURES)))
        self.register_buffer("scale", torch.ones(len(BUDGET_FEATURES)))

    def normalized(self, features: Tensor) -> Tensor:
        """``features`` as the trunk reads them (what the training environment observes)."""
        return (features.to(self.center.dtype) - self.center) / self.scale

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``(..., len(grid))`` for raw features ``(..., len(BUDGET_FEATURES))``."""
        return self.logits(self.trunk(self.normalized(features)))

    @torch.no_grad()
    def choose(self, features: Tensor) -> float:
        """The grid ratio with the highest logit."""
        return self.grid[int(self(features).argmax(-1))]

    def config(self) -> dict[str, object]:
        return {"budget_grid": list(self.grid), "budget_hidden": list(self.hidden)}

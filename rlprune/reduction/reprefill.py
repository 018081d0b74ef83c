"""Re-prefill (GemFilter-style selection): choose tokens at a middle layer, then run the prompt
again from layer 0 on the chosen tokens only, at their original positions.

The layers before the decision layer run twice: once on every token (to score them) and once on
the tokens kept, so the KV cache of every layer holds only those. What it buys over pruning at the
same layer is a cache without the dropped tokens' traces in the early layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from rlprune import flops
from rlprune.reduction.ops import Op, Planning, Price, ReductionPlan, register_op

if TYPE_CHECKING:
    from rlprune.reduction.action import LayerAction


@register_op
class Reprefill(Op):
    """Keep the tokens the scorer ranks highest and restart the prefill from layer 0 on them alone."""

    name = "reprefill"

    def finish(self, planning: Planning, action: LayerAction, remove: Tensor) -> ReductionPlan:
        return ReductionPlan(remove, flops=self.cost(action, planning.price(len(remove))), restart=True)

    def cost(self, action: LayerAction, price: Price) -> float:
        """Choosing the tokens, plus the layers before the decision layer run again on the kept ones."""
        if price.count == 0:
            return 0.0
        rerun = flops.layers_flops(price.dims, 0, price.layer, price.tokens - price.count)
        return super().cost(action, price) + rerun

"""The config schema of span heads (:class:`SpanHeadPolicy`, with its optional budget head and later
head): what ``config.json`` records, how the head is rebuilt, and how every field is checked (the
parameter count worked out before anything is allocated).

A budget head (:class:`~rlprune.policies.budget_head.BudgetHead`) is checkpointed here, inside its
span head's ``network`` (``budget_grid``, ``budget_hidden``): it has no checkpoint of its own.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

from rlprune.errors import InvalidActionError
from rlprune.policies.budget_head import BUDGET_FEATURES, MAX_GRID
from rlprune.policies.checkpoint_config import (
    COMMON_KEYS,
    MAX_LAYER,
    MAX_PARAMETERS,
    MAX_WIDTH,
    check_list,
    check_widths,
    invalid,
    is_int,
    is_number,
    same_ints,
    show_value,
)
from rlprune.policies.span_head import MIXER_INPUTS, SpanHeadPolicy
from rlprune.reduction import parse_unit

TOP_KEYS = COMMON_KEYS
"""A span head's top-level keys (it keeps its default budget in ``network``)."""
SPAN_NETWORK_KEYS = frozenset(
    {"hidden_size", "decision_layer", "rank", "channels", "kernel", "op", "default_budget", "parameters"}
)
SPAN_BUDGET_KEYS = frozenset({"budget_grid", "budget_hidden"})
"""Optional in a span head's network, together: the budget head that proposes ratios in average mode."""
SPAN_UNIT_KEYS = frozenset({"unit", "sentence_ends"})
"""Optional in a span head's network: the unit it selects by, and the sentence ends of ``unit="sentence"``."""
SPAN_LATER_KEYS = frozenset({"decision_layer", "rank", "channels", "kernel", "min_keep"})
"""A span head's optional ``network.later``: the deeper head it hands the cut over to, and when."""
MAX_TOKEN_ID, MAX_SENTENCE_ENDS = 1 << 31, 1 << 20
"""Bounds on a recorded token id and on how many sentence-end ids a checkpoint may list."""
MAX_HIDDEN_SIZE, MAX_KERNEL = 65536, 255
"""Bounds on the model width a span head reads and on its mixer's kernel (a budget grid's: MAX_GRID)."""


def describe(policy: SpanHeadPolicy, training: dict[str, Any]) -> dict[str, Any]:
    """What ``config.json`` records of ``policy`` besides the header and provenance."""
    return {
        "network": policy.config() | {"parameters": policy.num_parameters()},
        "decision_layers": list(policy.layers),
    }


def build(config: dict[str, Any], folder: Path) -> SpanHeadPolicy:
    """A fresh head of the shape a validated ``config`` describes."""
    return SpanHeadPolicy(**{k: v for k, v in config["network"].items() if k != "parameters"})


def default_budget(config: dict[str, Any]) -> float:
    """A span head's ``network.default_budget``."""
    return float(config["network"]["default_budget"])


def validate(config: dict[str, Any], folder: Path) -> None:
    """A span head's shape: every field typed and bounded, the parameter count worked out before allocation."""
    network = config.get("network")
    optional = SPAN_BUDGET_KEYS | SPAN_UNIT_KEYS | {"later"}
    if not isinstance(network, dict) or set(network) - optional != SPAN_NETWORK_KEYS:
        raise invalid(folder, f"network of a span head must have exactly the keys {sorted(SPAN_NETWORK_KEYS)}")
    if not is_int(network["hidden_size"]) or not 1 <= network["hidden_size"] <= MAX_HIDDEN_SIZE:
        raise invalid(
            folder,
            f"network.hidden_size is {show_value(network['hidden_size'])}; it is an integer in 1..{MAX_HIDDEN_SIZE}",
        )
    budget = _validate_budget_head(network, folder)
    _validate_unit(network, folder)
    parameters = _head_parameters(network, network["hidden_size"], folder, "network") + budget
    layers = [network["decision_layer"]]
    if "later" in network:
        later = network["later"]
        if not isinstance(later, dict) or set(later) != SPAN_LATER_KEYS:
            raise invalid(folder, f"network.later must have exactly the keys {sorted(SPAN_LATER_KEYS)}")
        parameters += _head_parameters(later, network["hidden_size"], folder, "network.later")
        if later["decision_layer"] <= network["decision_layer"]:
            raise invalid(folder, "network.later.decision_layer must come after network.decision_layer")
        if not is_number(later["min_keep"]) or not 0 < later["min_keep"] < 1:
            raise invalid(folder, f"network.later.min_keep is {show_value(later['min_keep'])}; it is a share in (0, 1)")
        layers.append(later["decision_layer"])
    if network["op"] not in ("prune", "merge"):
        raise invalid(folder, f"network.op is {show_value(network['op'])}; a span head prunes or merges")
    if not is_number(network["default_budget"]) or not 0 < network["default_budget"] <= 1:
        raise invalid(
            folder, f"network.default_budget is {show_value(network['default_budget'])}; budgets lie in (0, 1]"
        )
    if parameters > MAX_PARAMETERS:
        raise invalid(folder, f"the network would have {parameters:,} parameters, over the {MAX_PARAMETERS:,} allowed")
    if not same_ints(network["parameters"], parameters):
        raise invalid(
            folder, f"network.parameters is {show_value(network['parameters'])} but its layers have {parameters}"
        )
    if not same_ints(config.get("decision_layers"), layers):
        raise invalid(folder, f"decision_layers must be {layers}, the span head's layers")


def _head_parameters(shape: dict[str, Any], hidden: int, folder: Path, where: str) -> int:
    """The parameters of one head of ``shape`` (decision layer, rank, channels, kernel), each checked."""
    bounds = {"decision_layer": MAX_LAYER - 1, "rank": MAX_WIDTH, "channels": MAX_WIDTH, "kernel": MAX_KERNEL}
    for key, high in bounds.items():
        low = 0 if key == "decision_layer" else 1
        if not is_int(shape[key]) or not low <= shape[key] <= high:
            raise invalid(folder, f"{where}.{key} is {show_value(shape[key])}; it is an integer in {low}..{high}")
    if shape["kernel"] % 2 == 0:
        raise invalid(folder, f"{where}.kernel is {shape['kernel']}; the mixer's kernel is odd")
    r, c, k = (shape[key] for key in ("rank", "channels", "kernel"))
    return 2 * hidden * r + 4 * hidden + 4 + MIXER_INPUTS * c * k + c + c * k + 1


def _validate_unit(network: dict[str, Any], folder: Path) -> None:
    """A span head's optional selection unit; ``unit="sentence"`` lists its tokenizer's sentence-end ids."""
    unit = network.get("unit", "token")
    try:
        unit = parse_unit(unit) if isinstance(unit, (str, int)) and not isinstance(unit, bool) else None
    except InvalidActionError:
        unit = None
    if unit is None:
        shown = show_value(network.get("unit"))
        raise invalid(folder, f"network.unit is {shown}; use token, sentence or a chunk size")
    if unit != "sentence":
        if "sentence_ends" in network:
            raise invalid(folder, "network.sentence_ends is set but network.unit is not sentence")
        return
    ends = network.get("sentence_ends")
    if (
        not isinstance(ends, list)
        or not 0 < len(ends) <= MAX_SENTENCE_ENDS
        or not all(is_int(i) and 0 <= i < MAX_TOKEN_ID for i in ends)
    ):
        raise invalid(
            folder, "network.sentence_ends must list the tokenizer's sentence-end token ids (unit = sentence)"
        )


def _validate_budget_head(network: dict[str, Any], folder: Path) -> int:
    """A span head's optional budget head: an increasing grid of ratios in (0, 1] and MLP widths; its parameters."""
    present = SPAN_BUDGET_KEYS & set(network)
    if not present:
        return 0
    if present != SPAN_BUDGET_KEYS:
        raise invalid(folder, f"a span head's budget head needs both {sorted(SPAN_BUDGET_KEYS)}")
    grid = check_list(folder, "network.budget_grid", network["budget_grid"])
    if (
        len(grid) > MAX_GRID
        or not all(is_number(g) and 0 < g <= 1 for g in grid)
        or any(a >= b for a, b in pairwise(grid))
    ):
        raise invalid(
            folder,
            f"network.budget_grid is {show_value(grid)}; it is at most {MAX_GRID} increasing FLOPs ratios in (0, 1]",
        )
    hidden = check_widths(folder, "network.budget_hidden", network["budget_hidden"])
    widths = [len(BUDGET_FEATURES), *hidden, len(grid)]
    return sum(a * b + b for a, b in pairwise(widths))

"""Where a policy meets a model: one check, before any work, that everything the policy names fits.

A policy (learned or rule-based) names layers, a width, token ids and reaches; a model has so many
layers, one hidden width, a vocabulary and a context length. Each policy kind answers for its own
fields in a ``check_model(shape)`` method, reading the model as a :class:`ModelShape`; :func:`check_fits`
runs it (the reducer before any layer, :func:`rlprune.policies.compat.check_compatible` for every other
caller). The result is one line naming the field, its value and the model's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from rlprune.adapters import adapter_for
from rlprune.errors import InvalidArgumentError, PolicyError, RLPruneError
from rlprune.flops import ModelDims

FIT_HINT = "use a policy made for this model, or train one for it"
"""What a refusal advises unless the policy says otherwise (its ``fit_hint``)."""


class IncompatiblePolicyError(PolicyError, InvalidArgumentError):
    """A policy or baseline names a layer, width, token id or reach that the model it meets lacks."""


@dataclass(frozen=True)
class ModelShape:
    """What a policy must fit: the model's layer count, hidden width, vocabulary and context length.

    Each method refuses one kind of field with a message naming it, its value and the model's.
    """

    layers: int
    hidden: int
    vocab: int
    positions: int | None = None
    """The longest sequence the model takes (``None`` when unknown, as in a checkpoint's record)."""
    source: str = "the model"

    @classmethod
    def of(cls, model: Any) -> ModelShape:
        """The shape of a loaded model, a :class:`~rlprune.engine.Reducer` (anything with ``dims``) or a shape."""
        if isinstance(model, ModelShape):
            return model
        dims = getattr(model, "dims", None)
        if isinstance(dims, ModelDims):  # a Reducer
            return cls(dims.layers, dims.hidden, dims.vocab, getattr(model, "max_positions", None) or None)
        dims = adapter_for(model).dims()
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        return cls(dims.layers, dims.hidden, dims.vocab, int(positions) if positions else None)

    @classmethod
    def recorded(cls, fingerprint: Mapping[str, Any]) -> ModelShape:
        """The shape a checkpoint's model fingerprint records (no context length)."""
        return cls(
            int(fingerprint["layers"]),
            int(fingerprint["hidden_size"]),
            int(fingerprint["vocab_size"]),
            source="the model it records",
        )

    def layer(self, field: str, value: int) -> None:
        """Refuse a layer number outside ``0..layers-1``."""
        if not 0 <= value < self.layers:
            raise IncompatiblePolicyError(
                f"{field} is {value}, but {self.source} has {self.layers} layers (0..{self.layers - 1})"
            )

    def width(self, field: str, value: int) -> None:
        """Refuse a width other than the model's hidden size."""
        if value != self.hidden:
            raise IncompatiblePolicyError(f"{field} is {value}, but {self.source} is {self.hidden} wide (hidden_size)")

    def token_ids(self, field: str, ids: Iterable[int]) -> None:
        """Refuse token ids outside the model's vocabulary."""
        bad = sorted({int(i) for i in ids if not 0 <= int(i) < self.vocab})
        if bad:
            shown = ", ".join(map(str, bad[:4])) + (" ..." if len(bad) > 4 else "")
            raise IncompatiblePolicyError(
                f"{field} holds token id {shown}, but the vocabulary of {self.source} has {self.vocab} ids "
                f"(0..{self.vocab - 1})"
            )

    def reach(self, field: str, value: int) -> None:
        """Refuse a reach (a pool's side, a chunk) as long as the model's whole context or longer."""
        if self.positions is not None and value >= self.positions:
            raise IncompatiblePolicyError(
                f"{field} spans {value} tokens, but {self.source} takes at most {self.positions} positions"
            )

    def at_most(self, field: str, value: int, most: int, why: str) -> None:
        """Refuse a count above what the model leaves room for (``why`` says what room)."""
        if value > most:
            raise IncompatiblePolicyError(
                f"{field} is {value}, but {self.source} with {self.layers} layers fits at most {most} ({why})"
            )


def check_fits(policy: Any, model: Any, *, label: str | None = None, hint: str | None = None) -> Any:
    """``policy`` unchanged if everything it names fits ``model`` (a model, a Reducer or a
    :class:`ModelShape`); else an :class:`IncompatiblePolicyError` of one line.

    The policy's own ``check_model(shape)`` checks its kind's fields; every policy's ``decision_layers``
    must then lie inside the model. ``label`` names the policy in the message
    (default: its ``fit_label``, else its name); ``hint`` says what to do (default: its ``fit_hint``).
    """
    shape = ModelShape.of(model)
    who = label or str(getattr(policy, "fit_label", None) or getattr(policy, "name", type(policy).__name__))
    hint = hint or getattr(policy, "fit_hint", FIT_HINT)
    try:
        check = getattr(policy, "check_model", None)
        if callable(check):
            check(shape)
        for layer in _decision_layers(policy, shape):
            shape.layer("a decision layer", layer)
    except IncompatiblePolicyError as error:
        raise IncompatiblePolicyError(f"{who}: {error}; {hint}") from None
    return policy


def _decision_layers(policy: Any, shape: ModelShape) -> tuple[int, ...]:
    """The layers ``policy`` decides at on a model of ``shape``, its own refusal as an incompatibility."""
    try:
        layers = tuple(policy.decision_layers(shape.layers))
    except (ValueError, RLPruneError) as error:
        raise IncompatiblePolicyError(str(error).rstrip(".")) from None
    if not all(isinstance(layer, Integral) and not isinstance(layer, bool) for layer in layers):
        raise IncompatiblePolicyError(f"decision_layers gave {list(layers)[:8]}, not layer numbers")
    return tuple(int(layer) for layer in layers)

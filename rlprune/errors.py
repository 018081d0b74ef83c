"""User-facing errors: each message says what is wrong and what to do about it."""

from __future__ import annotations


class RLPruneError(Exception):
    """Base class for errors caused by user input or the environment, not by a bug.

    The CLI prints these as one readable line and exits non-zero, without a traceback.
    """


class ModelNotFoundError(RLPruneError):
    """The requested model (alias, folder or file) is not available on this machine."""


class UnsupportedModelError(RLPruneError):
    """The model's architecture cannot be run by the reducer."""


class InvalidPromptError(RLPruneError):
    """The prompt is empty, too long for the model, or otherwise unusable."""


class InvalidActionError(RLPruneError):
    """A reduction action or schedule is malformed (unknown op or scorer, ratio out of range)."""

"""One forward per model that routes each call to the calling context's innermost ``apply`` block.

While any :func:`rlprune.apply` block on a model is open, the model's ``forward`` is a
:class:`Dispatcher`, installed by the first block and removed by the last one to exit, whatever
order blocks exit in; it then gives back exactly the forward the first block found. Which blocks are
open is kept per thread and asyncio task (a context variable), so a call runs the reduced forward of
the innermost block its own context entered on that model, and a call from anywhere else (another
thread, a task started before the block) runs the forward the model had.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

_OPEN: ContextVar[tuple[_Block, ...]] = ContextVar("rlprune_apply_blocks", default=())
"""The blocks the current context has entered and not left, innermost last."""
_INSTALLING = threading.Lock()


class Dispatcher:
    """A model's forward while ``apply`` blocks on it are open."""

    def __init__(self, model: torch.nn.Module, found: Callable | None) -> None:
        self.model, self.found, self.open = model, found, 0  # found: the instance's own forward, if it had one
        try:  # generate() reads the forward's signature to choose its arguments: show it the model's own
            self.__signature__ = inspect.signature(self.plain())
        except (TypeError, ValueError):  # a forward without one: generate() sees (*args, **kwargs)
            pass

    def plain(self) -> Callable:
        """The forward the model had before the first block."""
        return self.found if self.found is not None else type(self.model).forward.__get__(self.model)

    def current(self) -> Callable | None:
        """The forward of the innermost block this context has open on the model (``None`` if none)."""
        for block in reversed(_OPEN.get()):
            if block.dispatcher is self and not block.closed:
                return block.forward
        return None

    @property
    def state(self):
        """What the current block last prefilled in this thread (``model.generate`` decodes from it)."""
        return getattr(self.current(), "state", None)

    def __call__(self, *args, **kwargs):
        return (self.current() or self.plain())(*args, **kwargs)


@dataclass(eq=False)
class _Block:
    dispatcher: Dispatcher
    forward: Callable
    closed: bool = False  # exited, perhaps from another context than the one that entered it


@contextmanager
def scope(model: torch.nn.Module, forward: Callable) -> Iterator[None]:
    """Within the block, ``model``'s calls from this context run ``forward``; on exit (also after an
    exception) the model's forward is the one this block found, once no other block on it is open."""
    block = _Block(_install(model), forward)
    _OPEN.set((*_OPEN.get(), block))
    try:
        yield
    finally:
        block.closed = True
        _OPEN.set(tuple(b for b in _OPEN.get() if b is not block))
        _uninstall(block.dispatcher)


def _install(model: torch.nn.Module) -> Dispatcher:
    with _INSTALLING:
        current = model.__dict__.get("forward")
        if isinstance(current, Dispatcher) and current.model is model:
            dispatcher = current
        else:
            dispatcher = Dispatcher(model, current)
            model.forward = dispatcher
        dispatcher.open += 1
        return dispatcher


def _uninstall(dispatcher: Dispatcher) -> None:
    with _INSTALLING:
        dispatcher.open -= 1
        model = dispatcher.model
        if dispatcher.open or model.__dict__.get("forward") is not dispatcher:
            return  # a block is still open, or someone else has set the forward since: theirs stays
        if dispatcher.found is None:
            del model.forward
        else:
            model.forward = dispatcher.found

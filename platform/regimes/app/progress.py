"""Progress reporting the use cases accept without knowing who shows it.

A :data:`Progress` is called with a description and a total and returns a context
manager yielding ``tick(n)``; the CLI passes bars on stderr, tests and flows pass
nothing (:func:`no_progress`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

Tick = Callable[[int], Any]
Progress = Callable[[str, int], AbstractContextManager[Tick]]
Notify = Callable[[str], None]

_T = TypeVar("_T")


@contextmanager
def no_progress(description: str, total: int) -> Iterator[Tick]:
    """A :data:`Progress` that shows nothing."""
    yield lambda n=1: None


def silent(message: str) -> None:
    """A :data:`Notify` that says nothing."""


def ticking(items: Sequence[_T], tick: Tick) -> Iterable[_T]:
    """``items`` again, calling ``tick(1)`` after each one is consumed (the shape of the
    core's ``progress(items)`` hook)."""
    for item in items:
        yield item
        tick(1)


def items_progress(progress: Progress, description: str):
    """The core's ``progress(items) -> iterable`` hook on top of a :data:`Progress`."""

    def wrap(items: Sequence[_T]) -> Iterable[_T]:
        with progress(description, len(items)) as tick:
            yield from ticking(items, tick)

    return wrap

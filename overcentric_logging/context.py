"""Request- and task-scoped fields that every event picks up.

``bind()``, ``unbind()`` and ``bound()`` keep identity and context fields (``user_id``,
``device_id``, ``session_id``, ``url``, ...) in one :mod:`contextvars` variable, so each thread,
each asyncio task and each request sees its own. The stored mapping is never mutated in place:
every change installs a new dict, which lets the logging call snapshot the current fields by
reference (no copy on the caller's hot path) and lets a task inherit its parent's fields
without sharing later changes.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["bind", "bound", "get_bound", "unbind"]

_EMPTY: Mapping[str, Any] = {}
_bound: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "overcentric_logging_bound", default=_EMPTY
)


def get_bound() -> Mapping[str, Any]:
    """Return the fields bound in the current context (a read-only snapshot)."""
    return _bound.get()


def bind(**fields: Any) -> None:
    """Add or replace fields for every event logged later in this context."""
    merged = dict(_bound.get())
    merged.update(fields)
    _bound.set(merged)


def unbind(*keys: str) -> None:
    """Remove fields bound earlier in this context; unknown keys are ignored."""
    current = _bound.get()
    if any(k in current for k in keys):
        _bound.set({k: v for k, v in current.items() if k not in keys})


def clear() -> None:
    """Remove every bound field in this context."""
    _bound.set(_EMPTY)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Bind ``fields`` for the duration of a ``with`` block, then restore what was there."""
    merged = dict(_bound.get())
    merged.update(fields)
    token = _bound.set(merged)
    try:
        yield
    finally:
        _bound.reset(token)

"""Testing helpers: capture events in memory instead of sending them.

``capture_events()`` makes every live client in the process (or one given client) map its
events synchronously, in the calling thread, and append the exact JSON body it would have
POSTed to a :class:`CapturedEvents` list; nothing goes over the network while it is active.
Captured events count as ``sent`` in ``stats()``. The pytest fixture ``overcentric_events``
(see :mod:`overcentric_logging.pytest_plugin`) wraps it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any, overload

from .client import Client
from .sender import Sender, capture_sinks

__all__ = ["CapturedEvents", "capture_events"]

_MISSING = object()


class CapturedEvents:
    """The bodies captured so far, oldest first; a read-only sequence of dicts."""

    def __init__(self) -> None:
        self._bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _append(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._bodies.append(body)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._bodies)

    def __len__(self) -> int:
        return len(self._bodies)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.bodies)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self.bodies[index]

    def __repr__(self) -> str:
        return f"<CapturedEvents {self.names()!r}>"

    def clear(self) -> None:
        with self._lock:
            self._bodies.clear()

    def names(self) -> list[str]:
        """Event names in the order they were tracked."""
        return [body["event"]["name"] for body in self.bodies]

    def find(self, name: str) -> list[dict[str, Any]]:
        """Every captured body whose event has this name."""
        return [body for body in self.bodies if body["event"]["name"] == name]

    def assert_tracked(self, name: str, **properties: Any) -> dict[str, Any]:
        """Assert that an event ``name`` was tracked whose properties include ``properties``.

        Returns the first matching body. The failure message lists what was tracked instead.
        """
        candidates = self.find(name)
        for body in candidates:
            props = body["event"].get("properties", {})
            if all(props.get(k, _MISSING) == v for k, v in properties.items()):
                return body
        if not candidates:
            tracked = ", ".join(repr(n) for n in self.names()) or "nothing"
            raise AssertionError(f"event {name!r} was not tracked; tracked: {tracked}")
        lines = [f"event {name!r} was tracked, but not with properties {properties!r}:"]
        for body in candidates:
            props = body["event"].get("properties", {})
            diff = {
                k: props.get(k, "<missing>") for k, v in properties.items()
                if props.get(k, _MISSING) != v
            }
            lines.append(
                f"  properties={json.dumps(props, sort_keys=True, default=str)} "
                f"(differs: {diff!r})"
            )
        raise AssertionError("\n".join(lines))

    def assert_not_tracked(self, name: str) -> None:
        found = self.find(name)
        if found:
            raise AssertionError(f"event {name!r} was tracked {len(found)} time(s)")


def _sender_of(target: Any) -> Sender | None:
    client = target if isinstance(target, Client) else getattr(target, "client", None)
    if not isinstance(client, Client):
        raise TypeError(f"capture_events() takes a Client, handler or processor, got {target!r}")
    return client._sender


@contextlib.contextmanager
def capture_events(target: Any = None) -> Iterator[CapturedEvents]:
    """Capture the events of every client (or of ``target``: a client, handler or processor)."""
    events = CapturedEvents()
    sender = None if target is None else _sender_of(target)
    if target is not None and sender is None:
        # A disabled client sends nothing; capture nothing from it either.
        yield events
        return
    entry = (sender, events._append)
    capture_sinks.append(entry)
    try:
        yield events
    finally:
        capture_sinks.remove(entry)

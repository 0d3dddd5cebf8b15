"""Helpers shared by the recognition, mapping, setup and structlog tests.

``FAST`` keeps retries and deadlines short; :func:`delivered` flushes and returns the bodies
the loopback server accepted, each checked against the documented schema; :class:`WayIn`
drives one of the three ways in (stdlib handler, structlog processor, ``Client.track``) with
the same call. The module-level callables (``record_error``, ``tag_before_send``,
``drop_before_send``) exist so that ``dictConfig``/``fileConfig`` tests can name them as
``ext://oc_helpers.record_error`` (this directory is on ``sys.path`` while pytest runs).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from loopback import LoopbackServer

import overcentric_logging
from overcentric_logging import Client, OvercentricHandler, OvercentricProcessor
from overcentric_logging.schema import validate_payload

__all__ = [
    "FAST",
    "WAYS",
    "WayIn",
    "attached",
    "checked",
    "delivered",
    "drop_before_send",
    "errors_seen",
    "ordered",
    "props",
    "record_error",
    "tag_before_send",
    "unique_logger_name",
]

FAST: dict[str, Any] = {
    "timeout": 0.5,
    "backoff_base": 0.01,
    "backoff_max": 0.05,
    "shutdown_timeout": 1.0,
}
"""Options that keep a test quick when something goes wrong."""

WAIT = 10.0
"""Watchdog for every flush/wait: generous, it only turns a hang into a failure."""

WAYS = ("handler", "processor", "track")

# -- ext:// targets for dictConfig / fileConfig -------------------------------------------

errors_seen: list[tuple[Any, BaseException]] = []


def record_error(payload: Any, error: BaseException) -> None:
    """An ``on_error`` callback that records its calls in :data:`errors_seen`."""
    errors_seen.append((payload, error))


def tag_before_send(payload: dict[str, Any]) -> dict[str, Any]:
    """A ``before_send`` that marks every event with ``properties.tagged = True``."""
    payload["event"]["properties"]["tagged"] = True
    return payload


def drop_before_send(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A ``before_send`` that drops events whose name ends in ``_secret``."""
    if payload["event"]["name"].endswith("_secret"):
        return None
    return payload


# -- delivery -----------------------------------------------------------------------------


def checked(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assert that every body matches the documented schema; return them."""
    for body in bodies:
        problems = validate_payload(body)
        assert problems == [], (problems, body)
    return bodies


def delivered(server: LoopbackServer, *clients: Client) -> list[dict[str, Any]]:
    """Flush ``clients`` (all live ones when none given) and return the accepted bodies.

    Every request the server recorded is checked against the schema, not only the 2xx ones.
    """
    if clients:
        for client in clients:
            assert client.flush(WAIT), f"flush timed out: {client.stats()}"
    else:
        assert overcentric_logging.flush(WAIT)
    assert server.schema_errors() == []
    return checked(server.events)


def unique_logger_name(prefix: str = "octest") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def attached(
    handler: logging.Handler, name: str | None = None, *, close_client: bool = True
) -> Iterator[logging.Logger]:
    """A fresh, non-propagating DEBUG logger with ``handler`` on it; cleaned up after
    (the handler closed and, unless ``close_client=False``, its client too)."""
    logger = logging.getLogger(name or unique_logger_name())
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()
        if close_client and isinstance(handler, OvercentricHandler):
            handler.client.close(WAIT)


class WayIn:
    """One of the three ways in, driven with ``emit(name, **fields)``.

    ``handler``: ``logger.info(name, extra=fields)``; ``processor``: a structlog logger with
    the processor in its chain, ``log.info(name, **fields)``; ``track``:
    ``client.track(name, **fields)``. ``options`` are the client keywords.
    """

    def __init__(self, way: str, server: LoopbackServer, **options: Any) -> None:
        self.way = way
        self.server = server
        opts: dict[str, Any] = {"endpoint": server.url, **FAST, **options}
        opts.setdefault("project_id", "proj_1")
        self._logger: logging.Logger | None = None
        self._handler: OvercentricHandler | None = None
        if way == "handler":
            self._handler = OvercentricHandler(**opts)
            self.client = self._handler.client
            self._logger = logging.getLogger(unique_logger_name())
            self._logger.setLevel(logging.DEBUG)
            self._logger.propagate = False
            self._logger.addHandler(self._handler)
        elif way == "processor":
            import structlog
            from structlog.testing import CapturingLogger

            self.processor = OvercentricProcessor(**opts)
            self.client = self.processor.client
            self.output = CapturingLogger()
            self._log = structlog.wrap_logger(
                self.output,
                processors=[structlog.processors.add_log_level, self.processor],
            )
        elif way == "track":
            self.client = Client(**opts)
        else:  # pragma: no cover
            raise ValueError(way)

    def emit(self, name: str, **fields: Any) -> None:
        if self.way == "handler":
            assert self._logger is not None
            self._logger.info(name, extra=fields)
        elif self.way == "processor":
            self._log.info(name, **fields)
        else:
            self.client.track(name, **fields)

    def bodies(self) -> list[dict[str, Any]]:
        return delivered(self.server, self.client)

    def one(self) -> dict[str, Any]:
        bodies = self.bodies()
        assert len(bodies) == 1, bodies
        return bodies[0]

    def close(self) -> None:
        if self._logger is not None and self._handler is not None:
            self._logger.removeHandler(self._handler)
            self._handler.close()
        self.client.close(WAIT)

    def __enter__(self) -> WayIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ordered(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bodies sorted by their ``seq`` property (which is then removed).

    Events travel concurrently, so arrival order is not logging order; tests that log
    several events tag each with ``seq=i`` and read them back with this.
    """
    for body in bodies:
        assert "seq" in props(body), body
    out = sorted(bodies, key=lambda b: props(b)["seq"])
    for body in out:
        del body["event"]["properties"]["seq"]
    return out


def props(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``event.properties`` of one body."""
    value = body["event"].get("properties", {})
    assert isinstance(value, dict)
    return value

"""structlog: processor mode, both stdlib bridge modes with only the handler, no duplicates."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from loopback import LoopbackServer
from oc_helpers import FAST, delivered, ordered, props, unique_logger_name
from structlog.stdlib import ProcessorFormatter, render_to_log_kwargs
from structlog.testing import CapturingLogger

from overcentric_logging import Client, OvercentricHandler, OvercentricProcessor

BOOKKEEPING = {"event", "level", "log_level", "logger", "logger_name", "timestamp", "exc_info",
               "exception", "stack_info", "stack", "_record", "_from_structlog", "_logger",
               "_name", "positional_args"}


@pytest.fixture
def stdlib_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(unique_logger_name("bridge"))
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
            if isinstance(handler, OvercentricHandler):
                handler.client.close(5)


def _bridge(logger: logging.Logger, *processors: Any) -> Any:
    return structlog.wrap_logger(
        logger,
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso"),
            *processors,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


# -- processor mode ---------------------------------------------------------------------------


def test_processor_returns_event_dict_unchanged(server: LoopbackServer) -> None:
    processor = OvercentricProcessor("proj_1", endpoint=server.url, **FAST)
    try:
        event_dict: dict[str, Any] = {"event": "$signup", "user_id": "u1", "plan": "free",
                                      "nested": {"a": [1, 2]}, "password": "hunter2"}
        before = copy.deepcopy(event_dict)
        result = processor(None, "info", event_dict)
        assert result is event_dict
        assert event_dict == before  # nothing added, nothing removed, nothing filtered
        plain = {"event": "hello"}
        assert processor(None, "info", plain) is plain
        assert plain == {"event": "hello"}
        (body,) = delivered(server, processor.client)
    finally:
        processor.client.close(5)
    assert body["identity"]["unique_identifier"] == "u1"
    assert props(body)["password"] == "[Filtered]"


def test_processor_in_chain_output_unchanged(server: LoopbackServer) -> None:
    processor = OvercentricProcessor("proj_1", endpoint=server.url, **FAST)
    out = CapturingLogger()
    log = structlog.wrap_logger(out, processors=[processor])
    try:
        log.info("$signup", plan="free")
        log.info("just a log line", n=1)
        assert len(delivered(server, processor.client)) == 1
    finally:
        processor.client.close(5)
    assert [(c.method_name, c.kwargs) for c in out.calls] == [
        ("info", {"event": "$signup", "plan": "free"}),
        ("info", {"event": "just a log line", "n": 1}),
    ]


def test_processor_drop_removes_tracked_events_from_output(server: LoopbackServer) -> None:
    processor = OvercentricProcessor("proj_1", endpoint=server.url, drop=True, **FAST)
    out = CapturingLogger()
    log = structlog.wrap_logger(out, processors=[processor])
    try:
        log.info("$signup", plan="free")
        log.info("just a log line")
        log.info("m", event_name="document_created")
        bodies = delivered(server, processor.client)
    finally:
        processor.client.close(5)
    assert sorted(b["event"]["name"] for b in bodies) == ["$signup", "document_created"]
    assert [c.kwargs["event"] for c in out.calls] == ["just a log line"]


def test_processor_never_raises_into_the_chain(server: LoopbackServer) -> None:
    processor = OvercentricProcessor("proj_1", endpoint=server.url, **FAST)

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

        def __str__(self) -> str:
            raise RuntimeError("no str")

    try:
        event_dict = {"event": "$signup", "weird": Hostile(), 3: "int key"}
        assert processor(None, "info", event_dict) is event_dict
        assert processor(None, "info", {"event": "x", "event_name": Hostile()}) is not None
        assert processor.client.flush(10)
        stats = processor.client.stats()
    finally:
        processor.client.close(5)
    assert stats["pending"] == 0
    assert stats["tracked"] == stats["sent"] + stats["failed"] + stats["dropped"]
    assert server.schema_errors() == []


# -- stdlib bridge, handler only ----------------------------------------------------------------


def test_wrap_for_formatter_with_only_the_handler(server: LoopbackServer,
                                                  stdlib_logger: logging.Logger) -> None:
    handler = OvercentricHandler("proj_1", endpoint=server.url, **FAST)
    handler.setFormatter(ProcessorFormatter(processors=[
        ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()]))
    stdlib_logger.addHandler(handler)
    log = _bridge(stdlib_logger, ProcessorFormatter.wrap_for_formatter)
    log.info("$subscription_purchase", plan="premium", price=9.99, user_id="user_123",
             seq=0)
    log.info("something", event_name="document_created", doc="d1", seq=1)
    try:
        raise ValueError("declined")
    except ValueError:
        log.exception("$subscription_cancel", seq=2)
    log.info("not an event", plan="x")
    bodies = ordered(delivered(server, handler.client))
    assert [b["event"]["name"] for b in bodies] == [
        "$subscription_purchase", "document_created", "$subscription_cancel"]
    purchase, created, cancel = bodies
    assert props(purchase) == {"plan": "premium", "price": 9.99}
    assert purchase["identity"]["unique_identifier"] == "user_123"
    assert props(created) == {"doc": "d1"}
    assert props(cancel) == {"exception_type": "ValueError", "exception_message": "declined"}
    for body in bodies:
        assert not BOOKKEEPING & set(props(body))


def test_render_to_log_kwargs_with_only_the_handler(server: LoopbackServer,
                                                    stdlib_logger: logging.Logger) -> None:
    handler = OvercentricHandler("proj_1", endpoint=server.url, **FAST)
    stdlib_logger.addHandler(handler)
    log = _bridge(stdlib_logger, render_to_log_kwargs)
    log.info("$subscription_purchase", plan="premium", price=9.99, user_id="user_123",
             user_email="u@example.com", seq=0)
    log.info("something", event_name="document_created", doc="d1", seq=1)
    try:
        raise ValueError("declined")
    except ValueError:
        log.exception("$subscription_cancel", seq=2)
    log.info("not an event", plan="x")
    bodies = ordered(delivered(server, handler.client))
    assert [b["event"]["name"] for b in bodies] == [
        "$subscription_purchase", "document_created", "$subscription_cancel"]
    purchase, created, cancel = bodies
    assert props(purchase) == {"plan": "premium", "price": 9.99}
    assert purchase["identity"] == {"unique_identifier": "user_123", "email": "u@example.com",
                                    "project_id": "proj_1"}
    assert props(created) == {"doc": "d1"}
    assert props(cancel) == {"exception_type": "ValueError", "exception_message": "declined"}


def test_bridge_contextvars_reach_the_handler(server: LoopbackServer,
                                              stdlib_logger: logging.Logger) -> None:
    handler = OvercentricHandler("proj_1", endpoint=server.url, **FAST)
    stdlib_logger.addHandler(handler)
    log = structlog.wrap_logger(
        stdlib_logger,
        processors=[structlog.contextvars.merge_contextvars, ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    structlog.contextvars.bind_contextvars(user_id="ctx_user", session_id="ctx_ses")
    try:
        log.info("$login")
    finally:
        structlog.contextvars.clear_contextvars()
    (body,) = delivered(server, handler.client)
    assert body["identity"]["unique_identifier"] == "ctx_user"
    assert body["event"]["session_id"] == "ctx_ses"


# -- processor and handler in one pipeline: exactly once ---------------------------------------


@pytest.mark.parametrize("mode", ["wrap_for_formatter", "render_to_log_kwargs"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-client", "two-clients"])
def test_processor_and_handler_send_each_event_once(
    server: LoopbackServer, stdlib_logger: logging.Logger, mode: str, shared: bool
) -> None:
    if shared:
        client = Client("proj_1", endpoint=server.url, **FAST)
        processor = OvercentricProcessor(client=client)
        handler = OvercentricHandler(client=client)
    else:
        processor = OvercentricProcessor("proj_1", endpoint=server.url, **FAST)
        handler = OvercentricHandler("proj_1", endpoint=server.url, **FAST)
    stdlib_logger.addHandler(handler)
    renderer = ProcessorFormatter.wrap_for_formatter if mode == "wrap_for_formatter" \
        else render_to_log_kwargs
    log = _bridge(stdlib_logger, processor, renderer)
    try:
        for i in range(5):
            log.info("$login", user_id=f"u{i}", seq=i)
        log.info("$login", user_id="u0", seq=5)  # same content again is a second event
        log.info("plain line")
        # A stdlib call that bypasses structlog still reaches the handler.
        stdlib_logger.info("$signup", extra={"seq": 6})
        bodies = ordered(delivered(server, processor.client, handler.client))
        tracked = processor.client.stats()["tracked"] + (
            0 if shared else handler.client.stats()["tracked"])
    finally:
        processor.client.close(5)
    assert [b["event"]["name"] for b in bodies] == ["$login"] * 6 + ["$signup"]
    assert [b.get("identity", {}).get("unique_identifier") for b in bodies] == [
        "u0", "u1", "u2", "u3", "u4", "u0", None]
    assert tracked == 7
    assert len(server.requests) == 7


# -- structlog absent ---------------------------------------------------------------------------

_NO_STRUCTLOG = """
import sys
sys.modules["structlog"] = None
import overcentric_logging
from overcentric_logging import OvercentricProcessor
assert OvercentricProcessor is overcentric_logging.OvercentricProcessor
p = OvercentricProcessor("proj_1", endpoint=sys.argv[1], timeout=0.5)
d = {"event": "$signup", "plan": "free"}
assert p(None, "info", d) is d
assert p.client.flush(10)
print("STATS", p.client.stats()["sent"])
try:
    OvercentricProcessor("proj_1", endpoint=sys.argv[1], drop=True)
except ValueError as exc:
    print("DROP-ERROR", "structlog" in str(exc))
"""

_NOT_IMPORTED = """
import sys
import overcentric_logging
h = overcentric_logging.OvercentricHandler("proj_1", enabled=False)
print("IMPORTED", "structlog" in sys.modules)
"""


def test_processor_importable_without_structlog(server: LoopbackServer) -> None:
    result = subprocess.run([sys.executable, "-c", _NO_STRUCTLOG, server.url],
                            capture_output=True, text=True, timeout=60, env=_env())
    assert result.returncode == 0, result.stderr
    assert "STATS 1" in result.stdout
    assert "DROP-ERROR True" in result.stdout
    assert server.names() == ["$signup"]
    assert server.schema_errors() == []


def test_structlog_not_imported_by_the_package() -> None:
    result = subprocess.run([sys.executable, "-c", _NOT_IMPORTED], capture_output=True,
                            text=True, timeout=60, env=_env())
    assert result.returncode == 0, result.stderr
    assert "IMPORTED False" in result.stdout


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OVERCENTRIC_")}


def test_event_filtered_by_stdlib_level_does_not_swallow_a_later_event(
    server: LoopbackServer,
) -> None:
    """The processor's "already tracked" mark must not match an unrelated stdlib record.

    Here the structlog call is tracked by the processor but its stdlib record is dropped by
    the logger's level, so the mark is never consumed; a later plain stdlib call with the
    same message on another logger is a different event and must be sent.
    """
    client = Client("proj_1", endpoint=server.url, **FAST)
    handler = OvercentricHandler(client=client)
    quiet = logging.getLogger(unique_logger_name("quiet"))
    loud = logging.getLogger(unique_logger_name("loud"))
    for logger, level in ((quiet, logging.WARNING), (loud, logging.INFO)):
        logger.setLevel(level)
        logger.propagate = False
        logger.addHandler(handler)
    log = structlog.wrap_logger(quiet, processors=[OvercentricProcessor(client=client),
                                                   render_to_log_kwargs],
                                wrapper_class=structlog.stdlib.BoundLogger)
    try:
        log.info("$signup")
        loud.info("$signup")
        bodies = delivered(server, client)
        stats = client.stats()
    finally:
        quiet.removeHandler(handler)
        loud.removeHandler(handler)
        client.close(5)
    assert [b["event"]["name"] for b in bodies] == ["$signup", "$signup"]
    assert stats["tracked"] == 2


@pytest.mark.parametrize("mode", ["wrap_for_formatter", "render_to_log_kwargs"])
def test_no_duplicate_when_a_later_processor_copies_the_event_dict(
    server: LoopbackServer, stdlib_logger: logging.Logger, mode: str
) -> None:
    """Processors may return a new dict (``{**event_dict, ...}``); still exactly once."""
    client = Client("proj_1", endpoint=server.url, **FAST)
    stdlib_logger.addHandler(OvercentricHandler(client=client))

    def copy_and_add(_logger: Any, _name: str, event_dict: Any) -> Any:
        return {**event_dict, "added_later": True}

    renderer = ProcessorFormatter.wrap_for_formatter if mode == "wrap_for_formatter" \
        else render_to_log_kwargs
    log = _bridge(stdlib_logger, OvercentricProcessor(client=client), copy_and_add, renderer)
    log.info("$login", user_id="u1")
    bodies = delivered(server, client)
    assert [b["event"]["name"] for b in bodies] == ["$login"]
    assert client.stats()["tracked"] == 1


@pytest.mark.parametrize("mode", ["wrap_for_formatter", "render_to_log_kwargs"])
def test_no_duplicate_for_name_key_events_through_both(
    server: LoopbackServer, stdlib_logger: logging.Logger, mode: str
) -> None:
    client = Client("proj_1", endpoint=server.url, **FAST)
    stdlib_logger.addHandler(OvercentricHandler(client=client))
    renderer = ProcessorFormatter.wrap_for_formatter if mode == "wrap_for_formatter" \
        else render_to_log_kwargs
    log = _bridge(stdlib_logger, OvercentricProcessor(client=client), renderer)
    log.info("user exported a report", event_name="report_exported", fmt="csv")
    bodies = delivered(server, client)
    assert [b["event"]["name"] for b in bodies] == ["report_exported"]
    assert props(bodies[0]) == {"fmt": "csv"}
    assert client.stats()["tracked"] == 1


def test_processor_on_a_non_stdlib_logger_leaves_no_mark(
    server: LoopbackServer, stdlib_logger: logging.Logger
) -> None:
    # A structlog call that never becomes a LogRecord (PrintLogger, CapturingLogger) must not
    # make a handler skip a later, unrelated stdlib record with the same name.
    client = Client("proj_marks", endpoint=server.url, **FAST)
    processor = OvercentricProcessor(client=client)
    processor(CapturingLogger(), "info", {"event": "$signup"})
    stdlib_logger.addHandler(OvercentricHandler(client=client))
    stdlib_logger.info("$signup")
    bodies = delivered(server, client)
    assert [b["event"]["name"] for b in bodies] == ["$signup", "$signup"]
    client.close(5)

"""The systems under test, each built behind one small interface (:class:`Prepared`).

Every builder takes the local sink's base URL and returns the caller-side calls that a user
would write (``event`` for the business event with its four fields, ``plain`` for an ordinary
non-event log record, ``None`` where the system has no logging side), plus ``flush``,
``close`` and introspection of what the system holds in memory. Peers are configured to talk
only to the local sink, with their extra network features (feature flags, GeoIP, remote
configuration, exception autocapture) off. A builder raises when its package is missing; the
harness records that instead of failing.
"""

from __future__ import annotations

import http.client
import inspect
import json
import logging
import logging.handlers
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from server import (
    BASELINE_PATH,
    LOGTAIL_PATH,
    OTLP_LOGS_PATH,
    OVERCENTRIC_PATH,
    STDLIB_PATH,
)

PROJECT_ID = "bench_project"
EVENT_NAME = "$subscription_purchase"


def _none() -> int | None:
    return None


def _noop_flush(timeout: float) -> None:
    return None


def _noop() -> None:
    return None


@dataclass
class Prepared:
    """A built system: what the caller calls, and how the harness drives and inspects it."""

    event: Callable[[], None]
    plain: Callable[[], None] | None = None
    flush: Callable[[float], Any] = _noop_flush
    close: Callable[[], Any] = _noop
    backlog: Callable[[], int | None] = _none
    dropped: Callable[[], int | None] = _none
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    build: Callable[[str], Prepared]
    # Sends one request at a time in its own thread or in the caller's: 20 ms runs use fewer
    # events for it, since 5,000 x 20 ms would take 100 s.
    sequential: bool = False
    # Has a logging side (a non-event record makes sense for it).
    logging: bool = True
    baseline: bool = False


def _logger(name: str, handler: logging.Handler | None) -> logging.Logger:
    log = logging.getLogger(f"bench.{name}")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    if handler is not None:
        log.addHandler(handler)
    return log


def logging_calls(log: logging.Logger) -> tuple[Callable[[], None], Callable[[], None]]:
    """The two stdlib calls of the benchmark, written as a user writes them."""

    def event() -> None:
        log.info(
            "$subscription_purchase",
            extra={
                "plan": "premium",
                "price": 9.99,
                "user_id": "user_123",
                "user_email": "u@example.com",
            },
        )

    def plain() -> None:
        log.info("user %s logged in", "user_123")

    return event, plain


def _join_queue(q: queue.Queue[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with q.all_tasks_done:
        while q.unfinished_tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            q.all_tasks_done.wait(left)


# --- floors -----------------------------------------------------------------------------


def build_null(base: str) -> Prepared:
    event, plain = logging_calls(_logger("null", logging.NullHandler()))
    return Prepared(event=event, plain=plain, backlog=lambda: 0, dropped=lambda: 0)


def build_structlog_floor(base: str) -> Prepared:
    import structlog

    def drop(logger: Any, method: str, event_dict: Any) -> Any:
        raise structlog.DropEvent

    log = structlog.wrap_logger(
        structlog.PrintLogger(open(os.devnull, "w")),  # noqa: SIM115
        processors=[drop],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
    return Prepared(event=_structlog_event(log), plain=_structlog_plain(log))


def _structlog_event(log: Any) -> Callable[[], None]:
    def event() -> None:
        log.info(
            "$subscription_purchase",
            plan="premium",
            price=9.99,
            user_id="user_123",
            user_email="u@example.com",
        )

    return event


def _structlog_plain(log: Any) -> Callable[[], None]:
    def plain() -> None:
        log.info("user %s logged in", "user_123")

    return plain


# --- overcentric-logging ----------------------------------------------------------------


def _oc_stats_fns(client: Any) -> tuple[Callable[[], int | None], Callable[[], int | None]]:
    def backlog() -> int | None:
        return int(client.stats()["pending"])

    def dropped() -> int | None:
        return int(client.stats()["dropped"])

    return backlog, dropped


def build_oc_handler(base: str) -> Prepared:
    import overcentric_logging as oc

    handler = oc.OvercentricHandler(project_id=PROJECT_ID, endpoint=base + OVERCENTRIC_PATH)
    event, plain = logging_calls(_logger("oc_handler", handler))
    backlog, dropped = _oc_stats_fns(handler.client)
    return Prepared(
        event=event,
        plain=plain,
        flush=lambda t: handler.client.flush(t),
        close=handler.close,
        backlog=backlog,
        dropped=dropped,
        info={"stats": handler.client.stats},
    )


def build_oc_processor(base: str) -> Prepared:
    import structlog

    import overcentric_logging as oc

    proc = oc.OvercentricProcessor(project_id=PROJECT_ID, endpoint=base + OVERCENTRIC_PATH)

    def drop(logger: Any, method: str, event_dict: Any) -> Any:
        raise structlog.DropEvent

    log = structlog.wrap_logger(
        structlog.PrintLogger(open(os.devnull, "w")),  # noqa: SIM115
        processors=[proc, drop],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
    backlog, dropped = _oc_stats_fns(proc.client)
    return Prepared(
        event=_structlog_event(log),
        plain=_structlog_plain(log),
        flush=lambda t: proc.client.flush(t),
        close=proc.client.close,
        backlog=backlog,
        dropped=dropped,
        info={"stats": proc.client.stats},
    )


def build_oc_client(base: str) -> Prepared:
    import overcentric_logging as oc

    client = oc.Client(project_id=PROJECT_ID, endpoint=base + OVERCENTRIC_PATH)
    params = inspect.signature(client.track).parameters
    takes_email = "user_email" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )
    track = client.track

    if takes_email:

        def event() -> None:
            track(
                "$subscription_purchase",
                {"plan": "premium", "price": 9.99},
                user_id="user_123",
                user_email="u@example.com",
            )
    else:

        def event() -> None:
            track(
                "$subscription_purchase",
                {"plan": "premium", "price": 9.99, "user_email": "u@example.com"},
                user_id="user_123",
            )

    backlog, dropped = _oc_stats_fns(client)
    return Prepared(
        event=event,
        flush=lambda t: client.flush(t),
        close=client.close,
        backlog=backlog,
        dropped=dropped,
        info={"stats": client.stats},
    )


# --- stdlib -----------------------------------------------------------------------------


def _http_handler(base: str) -> logging.handlers.HTTPHandler:
    return logging.handlers.HTTPHandler(urlsplit(base).netloc, STDLIB_PATH, method="POST")


def build_stdlib_http(base: str) -> Prepared:
    event, plain = logging_calls(_logger("stdlib_http", _http_handler(base)))
    return Prepared(event=event, plain=plain, backlog=lambda: 0)


def build_stdlib_queue(base: str) -> Prepared:
    q: queue.Queue[Any] = queue.Queue()
    listener = logging.handlers.QueueListener(q, _http_handler(base))
    listener.start()
    event, plain = logging_calls(_logger("stdlib_queue", logging.handlers.QueueHandler(q)))
    return Prepared(
        event=event,
        plain=plain,
        flush=lambda t: _join_queue(q, t),
        close=listener.stop,
        backlog=q.qsize,
        dropped=lambda: 0,
    )


# --- peers ------------------------------------------------------------------------------


def build_posthog(base: str) -> Prepared:
    from posthog import Posthog

    ph = Posthog(
        "phc_bench_local",
        host=base,
        disable_geoip=True,
        enable_exception_autocapture=False,
        enable_local_evaluation=False,
        personal_api_key=None,
    )
    capture = ph.capture

    def event() -> None:
        capture(
            "$subscription_purchase",
            distinct_id="user_123",
            properties={"plan": "premium", "price": 9.99, "email": "u@example.com"},
        )

    lane = getattr(ph, "_analytics_lane", None)

    def backlog() -> int | None:
        return lane.queue.qsize() if lane is not None else None

    return Prepared(
        event=event,
        flush=lambda t: ph.flush(t),
        close=ph.shutdown,
        backlog=backlog,
    )


def build_segment(base: str) -> Prepared:
    from segment.analytics import Client  # type: ignore[import-untyped]

    seg = Client(write_key="bench_local", host=base)
    track = seg.track

    def event() -> None:
        track(
            user_id="user_123",
            event="$subscription_purchase",
            properties={"plan": "premium", "price": 9.99, "email": "u@example.com"},
        )

    def flush(timeout: float) -> None:
        # Segment's flush() has no timeout; join its queue with one instead.
        _join_queue(seg.queue, timeout)

    return Prepared(event=event, flush=flush, close=seg.shutdown, backlog=seg.queue.qsize)


def build_logtail(base: str) -> Prepared:
    from logtail import LogtailHandler

    handler = LogtailHandler(source_token="bench_local", host=base + LOGTAIL_PATH)
    event, plain = logging_calls(_logger("logtail", handler))

    def flush(timeout: float) -> None:
        handler.flush()

    return Prepared(
        event=event,
        plain=plain,
        flush=flush,
        close=handler.close,
        backlog=handler.pipe.qsize,
        dropped=lambda: int(handler.dropcount),
    )


def build_otel(base: str) -> Prepared:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}))
    processor = BatchLogRecordProcessor(OTLPLogExporter(endpoint=base + OTLP_LOGS_PATH))
    provider.add_log_record_processor(processor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    event, plain = logging_calls(_logger("otel", handler))
    inner = getattr(processor, "_batch_processor", None)

    def backlog() -> int | None:
        q = getattr(inner, "_queue", None)
        return len(q) if q is not None else None

    return Prepared(
        event=event,
        plain=plain,
        flush=lambda t: provider.force_flush(int(t * 1000)),
        close=provider.shutdown,
        backlog=backlog,
    )


# --- baselines: the bare HTTP cost of one keep-alive POST per event ---------------------

BASELINE_BODY = json.dumps(
    {
        "event": {
            "name": EVENT_NAME,
            "properties": {"plan": "premium", "price": 9.99},
            "project_id": PROJECT_ID,
            "device_id": "d6b0f1c8-4a55-4b8e-9a57-1d3f6f0a0d11",
            "session_id": "0b8a0a3e-2f4f-4f55-8d0e-7a6f9c1b2e33",
            "context": "product",
        },
        "identity": {
            "unique_identifier": "user_123",
            "email": "u@example.com",
            "project_id": PROJECT_ID,
        },
    }
).encode()
_BASELINE_HEADERS = {"Content-Type": "application/json"}


def build_urllib3_loop(base: str) -> Prepared:
    import urllib3

    pm = urllib3.PoolManager()
    url = base + BASELINE_PATH

    def event() -> None:
        pm.request("POST", url, body=BASELINE_BODY, headers=_BASELINE_HEADERS)

    return Prepared(event=event, close=pm.clear)


def build_httpclient_loop(base: str) -> Prepared:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    lock = threading.Lock()

    def event() -> None:
        with lock:
            conn.request("POST", BASELINE_PATH, body=BASELINE_BODY, headers=_BASELINE_HEADERS)
            conn.getresponse().read()

    return Prepared(event=event, close=conn.close)


SPECS: dict[str, Spec] = {
    s.key: s
    for s in [
        Spec("oc_handler", "overcentric-logging: handler", build_oc_handler),
        Spec("oc_processor", "overcentric-logging: structlog processor", build_oc_processor),
        Spec("oc_client", "overcentric-logging: Client.track()", build_oc_client, logging=False),
        Spec("null", "logging.NullHandler (floor)", build_null),
        Spec("structlog_floor", "structlog, DropEvent only (floor)", build_structlog_floor),
        Spec("stdlib_http", "stdlib HTTPHandler", build_stdlib_http, sequential=True),
        Spec(
            "stdlib_queue",
            "stdlib QueueHandler + QueueListener → HTTPHandler",
            build_stdlib_queue,
            sequential=True,
        ),
        Spec("posthog", "PostHog capture()", build_posthog, logging=False),
        Spec("segment", "Segment track()", build_segment, logging=False),
        Spec("logtail", "Better Stack LogtailHandler", build_logtail),
        Spec("otel", "OpenTelemetry LoggingHandler + BatchLogRecordProcessor", build_otel),
        Spec(
            "urllib3_loop",
            "baseline: urllib3 PoolManager.request loop",
            build_urllib3_loop,
            sequential=True,
            logging=False,
            baseline=True,
        ),
        Spec(
            "httpclient_loop",
            "baseline: http.client keep-alive loop",
            build_httpclient_loop,
            sequential=True,
            logging=False,
            baseline=True,
        ),
    ]
}

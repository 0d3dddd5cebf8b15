"""The sender's lifecycle promises in one process: the bounded queue, hostile callbacks,
``flush``/``close`` deadlines, closed intake, ``sync=True``, ``enabled=False`` and the worker
pool growing under load and shrinking when idle. Every scenario ends with the ``stats()``
invariant ``tracked == sent + failed + dropped + pending``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from delivery_support import (
    ErrorLog,
    assert_invariant,
    assert_schema_ok,
    assert_sent_once,
    assert_settled,
    make_client,
    run_bounded,
    seq_of,
    track_seqs,
    wait_until,
)
from loopback import LoopbackServer, delay, hang, status

import overcentric_logging
from overcentric_logging import EventDropped, EventRejected
from overcentric_logging import sender as sender_module
from overcentric_logging.diagnostics import RateLimiter


@pytest.fixture
def clients() -> Iterator[list[overcentric_logging.Client]]:
    made: list[overcentric_logging.Client] = []
    yield made
    for client in made:
        run_bounded(lambda c=client: c.close(timeout=2.0))  # type: ignore[misc]
        assert_invariant(client)


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh rate limiter, so warnings already given by other tests do not hide ours."""
    monkeypatch.setattr(sender_module, "_warner", RateLimiter())


def new_client(clients: list[overcentric_logging.Client], endpoint: str, **options: Any
               ) -> overcentric_logging.Client:
    client = make_client(endpoint, **options)
    clients.append(client)
    return client


def private_logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test_queue.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def threads_of(client: overcentric_logging.Client) -> list[threading.Thread]:
    """The live worker threads of this client's sender (not other tests' clients)."""
    sender = client._sender
    if sender is None:
        return []
    return [
        t for t in threading.enumerate()
        if t.is_alive() and getattr(getattr(t, "_target", None), "__self__", None) is sender
    ]


# -- the bounded queue --------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_warnings")
def test_queue_full_drops_the_newest_counts_and_warns_once(
    server: LoopbackServer, clients: list[overcentric_logging.Client],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="overcentric_logging")
    errors = ErrorLog()
    server.script(delay(1.0))
    client = new_client(clients, server.url, max_workers=1, max_queue_size=5, timeout=5.0,
                        on_error=errors)
    track_seqs(client, [0])
    assert server.wait_for_requests(1)  # event 0 is in flight, its answer 1 s away
    run_bounded(lambda: track_seqs(client, range(1, 50)))  # the app goes on, never blocked
    stats = assert_invariant(client)
    # max_queue_size bounds every event held in memory, the one in flight included.
    assert stats["dropped"] == 45
    assert client.dropped_reasons == {"queue_full": 45}
    stats = assert_settled(client)
    assert stats["sent"] == 5 and stats["failed"] == 0
    assert_sent_once(server, range(5))  # the oldest were kept, the newest dropped
    drops = errors.errors_of(EventDropped)
    assert drops and all(isinstance(e, EventDropped) and e.reason == "queue_full"
                         for _, e in drops)
    assert sum(e.count for _, e in drops if isinstance(e, EventDropped)) == 45
    warnings = [r for r in caplog.records if "queue_full" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert_schema_ok(server)


# -- callbacks that raise or are slow -----------------------------------------------------


class Boom(Exception):
    pass


def _raise_boom(*_: Any) -> None:
    raise Boom("callback failed")


def _raise_system_exit(*_: Any) -> None:
    raise SystemExit(3)


def _slow(*_: Any) -> None:
    threading.Event().wait(0.3)


ON_ERROR_VARIANTS: dict[str, Callable[..., None]] = {
    "raises": _raise_boom,
    "system_exit": _raise_system_exit,
    "slow": _slow,
}


@pytest.mark.parametrize("variant", sorted(ON_ERROR_VARIANTS))
def test_on_error_that_raises_or_is_slow_cannot_kill_the_sender(
    server: LoopbackServer, clients: list[overcentric_logging.Client], variant: str
) -> None:
    seen = ErrorLog()
    behaviour = ON_ERROR_VARIANTS[variant]

    def on_error(payload: Any, error: BaseException) -> None:
        seen(payload, error)
        behaviour()

    server.script(status(400, b"bad"), status(400, b"bad"))
    client = new_client(clients, server.url, max_workers=1, on_error=on_error)
    track_seqs(client, range(6))
    stats = assert_settled(client)
    assert stats["failed"] == 2 and stats["sent"] == 4
    assert len(seen.errors_of(EventRejected)) == 2
    # Later events still flow after the callback misbehaved.
    track_seqs(client, range(6, 9))
    stats = assert_settled(client)
    assert stats["sent"] == 7
    accepted = {seq_of(b) for b in server.events}
    assert set(range(6, 9)) <= accepted
    assert_sent_once(server, accepted)


def _before_send_raising_on_seq0(payload: dict[str, Any]) -> dict[str, Any]:
    if seq_of(payload) == 0:
        raise Boom("scrubber crashed")
    return payload


def _before_send_system_exit_on_seq0(payload: dict[str, Any]) -> dict[str, Any]:
    if seq_of(payload) == 0:
        raise SystemExit(3)
    return payload


def _before_send_slow(payload: dict[str, Any]) -> dict[str, Any]:
    threading.Event().wait(0.05)
    return payload


@pytest.mark.parametrize(
    ("hook", "lost"),
    [(_before_send_raising_on_seq0, 1), (_before_send_system_exit_on_seq0, 1),
     (_before_send_slow, 0)],
    ids=["raises", "system_exit", "slow"],
)
def test_before_send_that_raises_or_is_slow_cannot_kill_the_sender(
    server: LoopbackServer, clients: list[overcentric_logging.Client],
    hook: Callable[[dict[str, Any]], dict[str, Any]], lost: int,
) -> None:
    errors = ErrorLog()
    client = new_client(clients, server.url, max_workers=1, before_send=hook, on_error=errors)
    run_bounded(lambda: track_seqs(client, range(5)))
    stats = assert_settled(client)
    assert stats["sent"] == 5 - lost
    assert stats["failed"] + stats["dropped"] == lost
    assert len(errors.snapshot()) == lost
    if lost:
        payload, _ = errors.snapshot()[0]
        assert seq_of(payload) == 0, "on_error gets the payload the hook could not scrub"
    assert_sent_once(server, range(lost, 5))
    assert_schema_ok(server)


@pytest.mark.parametrize(
    "returned",
    ["not a payload", ["a", "list"], {"unexpected": "shape"}, {"event": "x"}],
    ids=["str", "list", "wrong-keys", "event-not-object"],
)
def test_before_send_returning_garbage_is_not_sent(
    server: LoopbackServer, clients: list[overcentric_logging.Client], returned: Any
) -> None:
    errors = ErrorLog()

    def hook(payload: dict[str, Any]) -> Any:
        return returned if seq_of(payload) == 0 else payload

    client = new_client(clients, server.url, max_workers=1, before_send=hook, on_error=errors)
    track_seqs(client, range(3))
    stats = assert_settled(client)
    assert stats["sent"] == 2
    assert stats["failed"] + stats["dropped"] == 1
    assert len(errors.snapshot()) == 1
    assert_sent_once(server, [1, 2])
    assert_schema_ok(server)


# -- flush and close ----------------------------------------------------------------------


def test_flush_returns_false_while_a_request_hangs_and_true_once_done(
    server: LoopbackServer, clients: list[overcentric_logging.Client]
) -> None:
    server.script(hang())
    client = new_client(clients, server.url, timeout=0.5)
    track_seqs(client, [0])
    assert server.wait_for_requests(1)
    assert client.flush(0.05) is False
    assert assert_invariant(client)["pending"] == 1
    assert client.flush(10) is True  # the hung attempt timed out and the retry got through
    assert_sent_once(server, [0])
    assert_invariant(client)


@pytest.mark.usefixtures("fresh_warnings")
def test_close_with_the_server_down_is_bounded_and_reports_the_unsent(
    refused_url: str, clients: list[overcentric_logging.Client]
) -> None:
    errors = ErrorLog()
    client = new_client(clients, refused_url, max_retries=100_000, retry_budget=600.0,
                        backoff_max=0.02, shutdown_timeout=0.5, on_error=errors)
    track_seqs(client, range(5))
    assert wait_until(lambda: client.stats()["retries"] >= 5)
    assert run_bounded(client.close, timeout=5.0) is False
    stats = assert_invariant(client)
    assert stats["pending"] == 0 and stats["dropped"] == 5 and stats["sent"] == 0
    assert client.dropped_reasons == {"shutdown": 5}
    drops = errors.errors_of(EventDropped)
    assert [(e.reason, e.count) for _, e in drops if isinstance(e, EventDropped)] == [
        ("shutdown", 5)]


def test_close_while_a_request_hangs_is_bounded(
    server: LoopbackServer, clients: list[overcentric_logging.Client]
) -> None:
    server.default = hang()
    errors = ErrorLog()
    client = new_client(clients, server.url, timeout=30.0, shutdown_timeout=0.3,
                        on_error=errors)
    track_seqs(client, [0, 1])
    assert server.wait_for_requests(1)
    assert run_bounded(client.close, timeout=5.0) is False
    stats = assert_invariant(client)
    assert stats["pending"] == 0 and stats["dropped"] == 2
    assert client.dropped_reasons == {"shutdown": 2}
    assert any(isinstance(e, EventDropped) and e.reason == "shutdown" and e.count == 2
               for _, e in errors.snapshot())


def test_close_and_flush_are_idempotent_and_immediate_after_close(
    server: LoopbackServer, clients: list[overcentric_logging.Client]
) -> None:
    client = new_client(clients, server.url)
    track_seqs(client, range(3))
    assert client.close() is True
    assert_sent_once(server, range(3))
    server.default = hang()  # nothing may reach the server any more anyway

    def again() -> tuple[bool, bool, bool]:
        return client.close(), client.flush(), client.close(timeout=0)

    assert run_bounded(again, timeout=2.0) == (True, True, True)
    stats = assert_invariant(client)
    assert stats == {"tracked": 3, "sent": 3, "failed": 0, "dropped": 0, "retries": 0,
                     "pending": 0}
    assert wait_until(lambda: threads_of(client) == [], timeout=5.0)


def test_events_after_close_are_dropped_as_closed_and_reported(
    server: LoopbackServer, clients: list[overcentric_logging.Client]
) -> None:
    errors = ErrorLog()
    client = new_client(clients, server.url, on_error=errors)
    handler = overcentric_logging.OvercentricHandler(client=client)
    logger = private_logger(handler)
    logger.info("$signup", extra={"seq": 0})
    assert client.flush(10)
    handler.close()
    run_bounded(lambda: logger.info("$signup", extra={"seq": 1}))  # closed handler
    client.close()
    run_bounded(lambda: client.track("$signup", {"seq": 2}))  # closed client
    client.flush(1.0)
    stats = assert_invariant(client)
    assert stats["sent"] == 1 and stats["dropped"] == 2 and stats["tracked"] == 3
    assert client.dropped_reasons == {"closed": 2}
    reported = sum(e.count for _, e in errors.errors_of(EventDropped)
                   if isinstance(e, EventDropped) and e.reason == "closed")
    assert reported == 2
    assert_sent_once(server, [0])


def test_handler_built_client_close_drops_later_events(server: LoopbackServer) -> None:
    handler = overcentric_logging.OvercentricHandler(
        "proj_test", endpoint=server.url, backoff_base=0.01, timeout=0.5)
    logger = private_logger(handler)
    logger.info("$signup", extra={"seq": 0})
    assert handler.client.flush(10)
    handler.close()
    handler.close()  # idempotent
    logger.info("$signup", extra={"seq": 1})
    assert handler.client.flush(5)
    stats = assert_invariant(handler.stats())
    assert stats["sent"] == 1 and stats["dropped"] == 1
    assert handler.client.dropped_reasons == {"closed": 1}
    assert_sent_once(server, [0])


# -- sync=True and enabled=False ----------------------------------------------------------


def test_sync_sends_in_the_caller_thread(
    server: LoopbackServer, clients: list[overcentric_logging.Client]
) -> None:
    client = new_client(clients, server.url, sync=True)
    handler = overcentric_logging.OvercentricHandler(client=client)
    logger = private_logger(handler)
    before = {t.ident for t in threading.enumerate()}
    logger.info("$signup", extra={"seq": 0})
    assert len(server.requests) == 1, "the request has arrived when the call returns"
    client.track("$login", {"seq": 1})
    assert len(server.requests) == 2
    assert_sent_once(server, [0, 1])
    assert threads_of(client) == []
    assert not [t for t in threading.enumerate()
                if t.ident not in before and t.name == "overcentric-sender"]
    stats = assert_settled(client)
    assert stats["sent"] == 2
    assert_schema_ok(server)


def test_sync_with_the_server_down_never_raises(
    refused_url: str, clients: list[overcentric_logging.Client]
) -> None:
    errors = ErrorLog()
    client = new_client(clients, refused_url, sync=True, max_retries=2, on_error=errors)
    handler = overcentric_logging.OvercentricHandler(client=client)
    logger = private_logger(handler)
    run_bounded(lambda: logger.info("$signup", extra={"seq": 0}))
    run_bounded(lambda: client.track("$signup", {"seq": 1}))
    stats = assert_invariant(client)
    assert stats["failed"] == 2 and stats["pending"] == 0 and stats["retries"] == 4
    assert sorted(seq_of(p) for p, _ in errors.snapshot()) == [0, 1]


def test_sync_with_a_rejecting_server_reports_and_goes_on(
    server: LoopbackServer, clients: list[overcentric_logging.Client]
) -> None:
    errors = ErrorLog()
    server.script(status(422, b'{"error": "bad"}'))
    client = new_client(clients, server.url, sync=True, on_error=errors)
    run_bounded(lambda: track_seqs(client, range(3)))
    stats = assert_invariant(client)
    assert stats["failed"] == 1 and stats["sent"] == 2
    ((_, error),) = errors.errors_of(EventRejected)
    assert isinstance(error, EventRejected) and error.status == 422


def test_disabled_client_sends_nothing(server: LoopbackServer) -> None:
    client = make_client(server.url, enabled=False)
    handler = overcentric_logging.OvercentricHandler(client=client)
    logger = private_logger(handler)
    logger.info("$signup", extra={"seq": 0})
    client.track("$signup", {"seq": 1})
    assert client.flush(1.0) is True
    assert client.enabled is False
    assert threads_of(client) == []
    assert assert_invariant(client)["tracked"] == 0
    assert client.close() is True
    # The same calls on an enabled client do reach this server: the negative is meaningful.
    control = make_client(server.url)
    control.track("$signup", {"seq": 2})
    assert control.close()
    assert_sent_once(server, [2])


def test_disabled_by_environment(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
                                 ) -> None:
    monkeypatch.setenv("OVERCENTRIC_DISABLED", "1")
    client = make_client(server.url)
    client.track("$signup", {"seq": 0})
    assert client.flush(1.0) and client.enabled is False
    assert server.requests == []


# -- concurrency and the worker pool ------------------------------------------------------


def test_several_requests_in_flight_then_workers_shrink(
    server: LoopbackServer, clients: list[overcentric_logging.Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender_module, "IDLE_SECONDS", 0.2)
    server.default = delay(0.5)
    client = new_client(clients, server.url, max_workers=4, timeout=5.0)
    track_seqs(client, range(12))
    assert server.wait_for_requests(2)
    # A second request was read before the first was answered: two were in flight.
    assert server.requests[0].status is None
    stats = assert_settled(client)
    assert stats["sent"] == 12
    assert_sent_once(server, range(12))
    connections = set(server.connection_ids())
    assert 2 <= len(connections) <= 4, connections
    # Idle workers exit; at most one stays (started again lazily on the next event).
    assert wait_until(lambda: len(threads_of(client)) <= 1, timeout=10.0), threads_of(client)
    server.default = status(200)
    track_seqs(client, [12])
    assert_settled(client)
    assert_sent_once(server, range(13))


def test_max_workers_one_means_one_request_at_a_time(
    server: LoopbackServer, clients: list[overcentric_logging.Client]
) -> None:
    server.default = delay(0.05)
    client = new_client(clients, server.url, max_workers=1)
    track_seqs(client, range(6))
    assert_settled(client)
    assert len(set(server.connection_ids())) == 1
    assert len(threads_of(client)) <= 1
    assert_sent_once(server, range(6))


def test_a_hung_request_does_not_hold_up_the_backlog(
    server: LoopbackServer, clients: list[overcentric_logging.Client]
) -> None:
    # Regression: a new worker was started only when none existed, so one hung request kept
    # every later event waiting for the whole request timeout.
    server.script(hang())
    client = new_client(clients, server.url, max_workers=4, timeout=20.0, shutdown_timeout=0.5)
    track_seqs(client, [0])
    assert server.wait_for_requests(1)  # the only worker is now stuck on event 0
    track_seqs(client, range(1, 4))
    assert server.wait_for_events(3, timeout=10.0), [r.status for r in server.requests]
    assert server.requests[0].status is None
    assert_sent_once(server, range(1, 4))
    assert client.flush(0.05) is False  # event 0 is still in flight
    assert_invariant(client)

"""The fault matrix: what happens to every event when the server or the network misbehaves.

Each test drives real HTTP against the loopback server (``tests/loopback.py``), logs events
carrying a unique ``seq`` property, and asserts the outcome of every one of them: accepted by
the server exactly once, failed (with ``on_error`` called with the payload and an
``EventRejected`` / ``RetriesExhausted``), or dropped and counted; that the logging call
returned normally; that every body on the wire passes the documented schema; and that
``stats()`` keeps ``tracked == sent + failed + dropped + pending``.
"""

from __future__ import annotations

import email.utils
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

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
    wait_until,
)
from loopback import LoopbackServer, close_after, drip, hang, reset, status

import overcentric_logging
from overcentric_logging import EventRejected, RetriesExhausted

TRANSIENT = [500, 502, 503, 504, 408, 429]
PERMANENT = [400, 401, 403, 404, 413, 422]


class Rig:
    """A client with an ``on_error`` recorder, a handler sharing it, and a private logger."""

    def __init__(self, endpoint: str, **options: Any) -> None:
        self.errors = ErrorLog()
        self.client = make_client(endpoint, on_error=self.errors, **options)
        self.handler = overcentric_logging.OvercentricHandler(client=self.client)
        self.logger = logging.getLogger(f"test_delivery.{uuid.uuid4().hex}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)

    def log(self, *seqs: int, name: str = "$signup") -> None:
        """Log one event per seq through the stdlib; the calls must return normally."""

        def calls() -> None:
            for seq in seqs:
                self.logger.info(name, extra={"seq": seq, "user_id": f"user_{seq}"})

        run_bounded(calls)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()
        self.client.close(timeout=2.0)


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()
        assert_invariant(rig.client)


def rig_for(rigs: list[Rig], endpoint: str, **options: Any) -> Rig:
    rig = Rig(endpoint, **options)
    rigs.append(rig)
    return rig


# -- transient statuses -------------------------------------------------------------------


@pytest.mark.parametrize("code", TRANSIENT)
def test_transient_status_is_retried_and_delivered_once(
    server: LoopbackServer, rigs: list[Rig], code: int
) -> None:
    server.script(status(code, b'{"error": "busy"}'), status(code))
    rig = rig_for(rigs, server.url, max_workers=1)
    rig.log(*range(5))
    stats = assert_settled(rig.client)
    assert_sent_once(server, range(5))
    assert stats["sent"] == 5 and stats["failed"] == 0 and stats["dropped"] == 0
    assert stats["retries"] == 2
    assert len(server.requests) == 7
    assert [r.status for r in server.requests[:2]] == [code, code]
    assert rig.errors.snapshot() == []
    assert_schema_ok(server)


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_seconds_is_honoured(
    server: LoopbackServer, rigs: list[Rig], code: int
) -> None:
    server.script(status(code, headers={"Retry-After": "1"}))
    rig = rig_for(rigs, server.url)
    rig.log(0)
    stats = assert_settled(rig.client)
    assert_sent_once(server, [0])
    first, second = server.requests
    # The retry came no earlier than Retry-After said (a lower bound, not a duration).
    assert second.arrived - first.arrived >= 0.95
    assert stats["retries"] == 1 and stats["failed"] == 0
    assert_schema_ok(server)


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_http_date_is_honoured(
    server: LoopbackServer, rigs: list[Rig], code: int
) -> None:
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    server.script(status(code, headers={"Retry-After": when}))
    rig = rig_for(rigs, server.url)
    rig.log(0)
    stats = assert_settled(rig.client)
    assert_sent_once(server, [0])
    first, second = server.requests
    # The date has one-second resolution: 3 s ahead is at least 2 s away when it is read.
    assert second.arrived - first.arrived >= 1.0
    assert stats["retries"] == 1
    assert_schema_ok(server)


def test_retry_after_in_the_past_retries_at_once(
    server: LoopbackServer, rigs: list[Rig]
) -> None:
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    server.script(status(503, headers={"Retry-After": past}), status(429, headers={
        "Retry-After": "not a date"}))
    rig = rig_for(rigs, server.url)
    rig.log(0)
    stats = assert_settled(rig.client)
    assert_sent_once(server, [0])
    assert stats["retries"] == 2


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_beyond_the_retry_budget_fails_at_once(
    server: LoopbackServer, rigs: list[Rig], code: int
) -> None:
    server.script(status(code, b"slow down", headers={"Retry-After": "3600"}))
    rig = rig_for(rigs, server.url, retry_budget=2.0)
    rig.log(7)
    stats = assert_settled(rig.client)
    assert stats["failed"] == 1 and stats["sent"] == 0
    assert len(server.requests) == 1, "no retry that the budget cannot afford"
    failures = rig.errors.errors_of(RetriesExhausted)
    assert len(failures) == 1
    payload, error = failures[0]
    assert seq_of(payload) == 7
    assert isinstance(error, RetriesExhausted)
    assert error.status == code and error.attempts == 1
    assert_schema_ok(server)


def test_retries_exhausted_after_max_retries(server: LoopbackServer, rigs: list[Rig]) -> None:
    server.default = status(500, b'{"error": "boom"}')
    rig = rig_for(rigs, server.url, max_retries=2)
    rig.log(1)
    stats = assert_settled(rig.client)
    assert stats["failed"] == 1 and stats["retries"] == 2
    assert len(server.requests) == 3
    ((payload, error),) = rig.errors.errors_of(RetriesExhausted)
    assert seq_of(payload) == 1
    assert isinstance(error, RetriesExhausted)
    assert error.attempts == 3 and error.status == 500
    assert "boom" in error.last_error
    assert_schema_ok(server)


# -- permanent rejections -----------------------------------------------------------------


@pytest.mark.parametrize("code", PERMANENT)
def test_permanent_4xx_is_not_retried_and_reported(
    server: LoopbackServer, rigs: list[Rig], code: int
) -> None:
    body = b'{"error": "unknown project proj_test"}' + b"x" * 5000
    server.script(status(code, body))
    rig = rig_for(rigs, server.url, max_workers=1)
    rig.log(*range(4))
    stats = assert_settled(rig.client)
    assert stats["failed"] == 1 and stats["sent"] == 3 and stats["retries"] == 0
    assert len(server.requests) == 4
    rejected = rig.errors.errors_of(EventRejected)
    assert len(rejected) == 1
    payload, error = rejected[0]
    assert isinstance(error, EventRejected)
    assert error.status == code
    assert error.body.startswith(b'{"error": "unknown project proj_test"}')
    assert len(error.body) < len(body), "only the start of the body is kept"
    assert seq_of(payload) == seq_of(server.requests[0].json)
    accepted = {seq_of(b) for b in server.events}
    assert accepted | {seq_of(payload)} == set(range(4))
    assert_sent_once(server, accepted)
    assert_schema_ok(server)


# -- the network --------------------------------------------------------------------------


def test_connection_refused_retries_then_fails(refused_url: str, rigs: list[Rig]) -> None:
    rig = rig_for(rigs, refused_url, max_retries=3)
    rig.log(0, 1)
    stats = assert_settled(rig.client)
    assert stats["failed"] == 2 and stats["sent"] == 0
    assert stats["retries"] == 6
    failures = rig.errors.errors_of(RetriesExhausted)
    assert sorted(seq_of(p) for p, _ in failures) == [0, 1]
    for _, error in failures:
        assert isinstance(error, RetriesExhausted)
        assert error.status is None and error.attempts == 4


def test_server_down_then_back_on_the_same_port(server: LoopbackServer, rigs: list[Rig]) -> None:
    port = server.port
    server.stop()
    rig = rig_for(rigs, server.url, max_retries=10_000, retry_budget=30.0)
    rig.log(*range(10))
    assert wait_until(lambda: rig.client.stats()["retries"] >= 10), rig.client.stats()
    assert server.requests == []
    server.start()
    assert server.port == port
    stats = assert_settled(rig.client)
    assert stats["sent"] == 10 and stats["failed"] == 0
    assert_sent_once(server, range(10))
    assert rig.errors.snapshot() == []
    assert_schema_ok(server)


def test_reset_before_the_response(server: LoopbackServer, rigs: list[Rig]) -> None:
    server.script(reset(), reset())
    rig = rig_for(rigs, server.url, max_workers=1)
    rig.log(*range(3))
    stats = assert_settled(rig.client)
    assert stats["sent"] == 3 and stats["retries"] == 2
    assert [r.status for r in server.requests[:2]] == [None, None]
    assert_sent_once(server, range(3))
    assert_schema_ok(server)


def test_response_never_comes_times_out_and_retries(
    server: LoopbackServer, rigs: list[Rig]
) -> None:
    server.script(hang())
    rig = rig_for(rigs, server.url, max_workers=1, timeout=0.3)
    rig.log(0, 1)
    stats = assert_settled(rig.client)
    assert stats["sent"] == 2 and stats["retries"] == 1
    assert server.requests[0].action == "hang" and server.requests[0].status is None
    assert_sent_once(server, [0, 1])
    assert_schema_ok(server)


def test_slow_drip_response_within_the_read_timeout_is_accepted(
    server: LoopbackServer, rigs: list[Rig]
) -> None:
    # Every byte arrives well within ``timeout``: the response is slow but alive.
    server.script(drip(200))
    rig = rig_for(rigs, server.url, max_workers=1, timeout=0.5)
    rig.log(0)
    stats = assert_settled(rig.client)
    assert stats["sent"] == 1 and stats["retries"] == 0
    assert_sent_once(server, [0])


def test_drip_slower_than_the_timeout_is_abandoned_and_retried(
    server: LoopbackServer, rigs: list[Rig]
) -> None:
    server.script(drip(2))  # one byte every 0.5 s against a 0.2 s timeout
    rig = rig_for(rigs, server.url, max_workers=1, timeout=0.2)
    rig.log(0)
    stats = assert_settled(rig.client)
    assert stats["sent"] == 1 and stats["retries"] >= 1
    assert server.requests[0].status is None
    assert_sent_once(server, [0])


def test_stale_keep_alive_connection_still_delivers_once(
    server: LoopbackServer, rigs: list[Rig]
) -> None:
    server.script(close_after(200))
    rig = rig_for(rigs, server.url, max_workers=1)
    rig.log(0)
    assert rig.client.flush(10)
    first_cid = server.requests[0].connection_id
    assert server.wait_connection_closed(first_cid)
    rig.log(1, 2)
    stats = assert_settled(rig.client)
    assert stats["sent"] == 3 and stats["failed"] == 0
    assert_sent_once(server, range(3))
    assert server.requests[-1].connection_id != first_cid
    assert rig.errors.snapshot() == []


def test_keep_alive_reuses_one_connection(server: LoopbackServer, rigs: list[Rig]) -> None:
    rig = rig_for(rigs, server.url, max_workers=1)
    for seq in range(5):
        rig.log(seq)
        assert rig.client.flush(10)
    assert_sent_once(server, range(5))
    assert len(set(server.connection_ids())) == 1


# -- a 429 pauses the whole sender --------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["1", "http-date"])
def test_429_pauses_every_event_not_just_one(
    server: LoopbackServer, rigs: list[Rig], retry_after: str
) -> None:
    pause = 1.0
    header = (
        "1" if retry_after == "1" else email.utils.formatdate(time.time() + 3, usegmt=True)
    )
    if retry_after != "1":
        pause = 1.0  # at least 2 s away when read; assert the conservative bound
    server.script(status(429, headers={"Retry-After": header}))
    rig = rig_for(rigs, server.url, max_workers=4)
    rig.log(0)
    assert wait_until(lambda: rig.client.stats()["retries"] >= 1), rig.client.stats()
    rig.log(*range(1, 8))  # logged during the pause: they must wait too
    stats = assert_settled(rig.client)
    assert stats["sent"] == 8 and stats["failed"] == 0
    assert_sent_once(server, range(8))
    first, *later = server.requests
    assert first.status == 429
    early = [r.index for r in later if r.arrived < first.arrived + pause - 0.05]
    assert early == [], f"requests {early} arrived while the sender should be paused"
    assert_schema_ok(server)

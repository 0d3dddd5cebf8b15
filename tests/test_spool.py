"""The durable spool (``spool_path=``): persistence, outcomes, bounds, recovery, the CLI."""

from __future__ import annotations

import glob
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from loopback import LoopbackServer, status

import overcentric_logging
from overcentric_logging.errors import EventDropped, EventRejected
from overcentric_logging.schema import validate_payload
from overcentric_logging.spool import SpoolSender, connect_spool
from overcentric_logging.spool_cli import spool_main

pytestmark = pytest.mark.timeout(60)

FAST: dict[str, Any] = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 0.5,
                        "shutdown_timeout": 1.0}
SLOW_RETRY: dict[str, Any] = {"backoff_base": 30.0, "backoff_max": 30.0, "timeout": 0.5,
                              "shutdown_timeout": 0.2}


@pytest.fixture
def spool(tmp_path: Any) -> str:
    return str(tmp_path / "events.spool")


@pytest.fixture
def clients() -> Iterator[list[overcentric_logging.Client]]:
    made: list[overcentric_logging.Client] = []
    yield made
    for client in made:
        client.close(0.2)


def make(clients: list[overcentric_logging.Client], **options: Any) -> overcentric_logging.Client:
    client = overcentric_logging.Client("proj_spool", **options)
    clients.append(client)
    return client


def rows(path: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY id")]
    finally:
        conn.close()


def check_invariant(stats: dict[str, int]) -> None:
    assert stats["tracked"] == (
        stats["sent"] + stats["failed"] + stats["dropped"] + stats["pending"]
    ), stats
    assert stats["pending"] >= 0, stats


def delivered_seqs(server: LoopbackServer) -> list[int]:
    assert server.schema_errors() == []
    return [body["event"]["properties"]["seq"] for body in server.events]


def test_uses_spool_sender(clients: list[overcentric_logging.Client], spool: str,
                           server: LoopbackServer) -> None:
    client = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    assert isinstance(client._sender, SpoolSender)


def test_env_var_turns_the_spool_on(monkeypatch: pytest.MonkeyPatch, spool: str,
                                    clients: list[overcentric_logging.Client],
                                    server: LoopbackServer) -> None:
    monkeypatch.setenv("OVERCENTRIC_SPOOL_PATH", spool)
    client = make(clients, endpoint=server.url, **FAST)
    assert isinstance(client._sender, SpoolSender)
    client.track("$signup", {"seq": 1})
    assert client.flush(10)
    assert delivered_seqs(server) == [1]


@pytest.mark.parametrize(
    ("key", "value"),
    [("spool_sync", "sometimes"), ("spool_sync", 1), ("max_spool_events", 0),
     ("max_spool_bytes", 100), ("max_spool_bytes", "lots")],
)
def test_bad_spool_options_raise(key: str, value: Any, spool: str) -> None:
    with pytest.raises(ValueError, match=key):
        overcentric_logging.Client("proj_spool", spool_path=spool, **{key: value})


def test_spool_options_accept_dictconfig_strings(spool: str) -> None:
    from overcentric_logging.config import build_config

    cfg = build_config(project_id="p", spool_path=spool, spool_sync="FULL",
                       max_spool_events="10", max_spool_bytes="65536")
    assert (cfg.spool_sync, cfg.max_spool_events, cfg.max_spool_bytes) == ("full", 10, 65536)


def test_event_is_persisted_before_the_call_returns(
    clients: list[overcentric_logging.Client], spool: str, refused_url: str
) -> None:
    client = make(clients, endpoint=refused_url, spool_path=spool, **SLOW_RETRY)
    client.track("$subscription_purchase", {"plan": "premium", "seq": 7}, user_id="u_1")
    # Read with a separate connection, right after the call: the row is committed.
    found = rows(spool)
    assert len(found) == 1
    body = json.loads(found[0]["body"])
    assert validate_payload(body) == []
    assert body["event"]["name"] == "$subscription_purchase"
    assert body["event"]["properties"]["seq"] == 7
    assert body["identity"]["unique_identifier"] == "u_1"
    stats = client.stats()
    check_invariant(stats)
    assert stats["tracked"] == 1 and stats["pending"] == 1


def test_handler_events_are_spooled(spool: str, refused_url: str) -> None:
    handler = overcentric_logging.OvercentricHandler(
        "proj_spool", endpoint=refused_url, spool_path=spool, **SLOW_RETRY
    )
    log = logging.getLogger("test_spool.handler")
    try:
        # Straight to the handler: other tests may have reconfigured logging globally.
        handler.handle(log.makeRecord(log.name, logging.INFO, __file__, 1, "$login", (), None,
                                      extra={"seq": 3, "user_id": "u_9"}))
        found = rows(spool)
        assert [json.loads(r["body"])["event"]["properties"]["seq"] for r in found] == [3]
        assert validate_payload(json.loads(found[0]["body"])) == []
    finally:
        handler.close()


def test_2xx_deletes_the_row(clients: list[overcentric_logging.Client], spool: str,
                             server: LoopbackServer) -> None:
    client = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    for i in range(20):
        client.track("$signup", {"seq": i}, user_id=f"u_{i}")
    assert client.flush(10)
    assert sorted(delivered_seqs(server)) == list(range(20))
    assert rows(spool) == []
    stats = client.stats()
    check_invariant(stats)
    assert stats == {**stats, "tracked": 20, "sent": 20, "pending": 0, "failed": 0}


def test_permanent_4xx_marks_failed_and_reports(
    clients: list[overcentric_logging.Client], spool: str, server: LoopbackServer
) -> None:
    errors: list[tuple[Any, BaseException]] = []
    server.script(status(400, '{"error": "bad project"}'))
    client = make(clients, endpoint=server.url, spool_path=spool,
                  on_error=lambda p, e: errors.append((p, e)), **FAST)
    client.track("$signup", {"seq": 1})
    assert client.flush(10)
    assert len(server.requests) == 1  # not retried
    assert server.schema_errors() == []
    found = rows(spool)
    assert len(found) == 1 and found[0]["state"] == 1
    assert "400" in found[0]["last_error"]
    stats = client.stats()
    check_invariant(stats)
    assert stats["failed"] == 1 and stats["pending"] == 0 and stats["sent"] == 0
    assert len(errors) == 1
    payload, error = errors[0]
    assert isinstance(error, EventRejected) and error.status == 400
    assert validate_payload(payload) == []


def test_503_is_retried_until_2xx(clients: list[overcentric_logging.Client], spool: str,
                                  server: LoopbackServer) -> None:
    server.script(status(503), status(503))
    client = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    client.track("$signup", {"seq": 5})
    assert client.flush(10)
    assert [r.status for r in server.requests] == [503, 503, 200]
    assert server.schema_errors() == []
    assert delivered_seqs(server) == [5]
    assert rows(spool) == []
    stats = client.stats()
    check_invariant(stats)
    assert stats["retries"] == 2 and stats["sent"] == 1


def test_transient_errors_keep_the_event_in_the_spool(
    clients: list[overcentric_logging.Client], spool: str, refused_url: str
) -> None:
    client = make(clients, endpoint=refused_url, spool_path=spool,
                  **{**FAST, "max_retries": 1, "retry_budget": 0.0})
    client.track("$signup", {"seq": 1})
    assert client.flush(0.5) is False  # not deliverable: it waits in the spool
    found = rows(spool)
    assert len(found) == 1 and found[0]["state"] == 0 and found[0]["attempts"] >= 1
    assert "Error" in (found[0]["last_error"] or "")
    stats = client.stats()
    check_invariant(stats)
    assert stats["failed"] == 0 and stats["pending"] == 1


def test_full_spool_drops_new_events_and_reports(
    clients: list[overcentric_logging.Client], spool: str, refused_url: str
) -> None:
    errors: list[BaseException] = []
    client = make(clients, endpoint=refused_url, spool_path=spool, max_spool_events=3,
                  on_error=lambda p, e: errors.append(e), **SLOW_RETRY)
    for i in range(5):
        client.track("$signup", {"seq": i})
    kept = [json.loads(r["body"])["event"]["properties"]["seq"] for r in rows(spool)]
    assert kept == [0, 1, 2]  # the oldest are kept, the new ones dropped
    stats = client.stats()
    check_invariant(stats)
    assert stats["dropped"] == 2 and stats["pending"] == 3
    assert client.dropped_reasons == {"spool_full": 2}
    client.flush(0.05)  # reports the drops
    assert any(isinstance(e, EventDropped) and e.reason == "spool_full" for e in errors)


def test_byte_bound(clients: list[overcentric_logging.Client], spool: str,
                    refused_url: str) -> None:
    client = make(clients, endpoint=refused_url, spool_path=spool, max_spool_bytes=4096,
                  **SLOW_RETRY)
    for i in range(40):
        client.track("$signup", {"seq": i, "pad": "x" * 200})
    found = rows(spool)
    assert 0 < len(found) < 40
    assert sum(len(r["body"]) for r in found) <= 4096
    stats = client.stats()
    check_invariant(stats)
    assert stats["dropped"] == 40 - len(found)


def test_bounds_are_per_client_on_a_shared_file(
    clients: list[overcentric_logging.Client], spool: str, refused_url: str
) -> None:
    # Each client's bound is checked in its own INSERT's transaction (a TEMP trigger on its
    # connections), against the rows of every client sharing the file.
    small = make(clients, endpoint=refused_url, spool_path=spool, max_spool_events=4,
                 **SLOW_RETRY)
    large = make(clients, endpoint=refused_url, spool_path=spool, max_spool_events=6,
                 **SLOW_RETRY)
    for i in range(3):
        small.track("$signup", {"seq": i})
    for i in range(5):
        large.track("$signup", {"seq": 10 + i})
    small.track("$signup", {"seq": 3})  # 6 rows in the file: over small's bound of 4
    kept = [json.loads(r["body"])["event"]["properties"]["seq"] for r in rows(spool)]
    assert kept == [0, 1, 2, 10, 11, 12]
    assert small.stats()["dropped"] == 1 and large.stats()["dropped"] == 2
    for client in (small, large):
        check_invariant(client.stats())


def test_wal_stays_bounded_while_the_server_is_down(
    clients: list[overcentric_logging.Client], spool: str, refused_url: str
) -> None:
    # The application's threads leave checkpoints to the (paused) sender thread, which must
    # still run them: without, 3000 events of ~3 pages each grow the WAL past 8 MiB.
    client = make(clients, endpoint=refused_url, spool_path=spool, **SLOW_RETRY)
    for i in range(3000):
        client.track("$signup", {"seq": i, "pad": "x" * 100})
    client.flush(0.0)
    assert os.path.getsize(spool + "-wal") < 8 * 1024 * 1024
    assert len(rows(spool)) == 3000


def test_corrupt_spool_is_moved_aside(clients: list[overcentric_logging.Client], spool: str,
                                      server: LoopbackServer,
                                      caplog: pytest.LogCaptureFixture) -> None:
    garbage = b"this is not a database" * 100
    with open(spool, "wb") as fh:
        fh.write(garbage)
    caplog.set_level(logging.WARNING, logger="overcentric_logging")
    client = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    client.track("$signup", {"seq": 1})
    assert client.flush(10)
    assert delivered_seqs(server) == [1]
    aside = glob.glob(spool + ".corrupt-*")
    assert len(aside) == 1
    with open(aside[0], "rb") as fh:
        assert fh.read() == garbage
    assert any("moved it to" in r.getMessage() for r in caplog.records)
    connect_spool(spool, create=False).close()  # a new, valid spool is in place


def test_spool_corrupted_while_running_is_replaced(
    clients: list[overcentric_logging.Client], spool: str, server: LoopbackServer
) -> None:
    client = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    client.track("$signup", {"seq": 1})
    assert client.flush(10)
    sender = client._sender
    assert isinstance(sender, SpoolSender)
    # Another party clobbers the file; the next write notices and starts a new spool.
    for suffix in ("-wal", "-shm"):
        if os.path.exists(spool + suffix):
            os.remove(spool + suffix)
    with open(spool, "wb") as fh:
        fh.write(b"\0garbage" * 2000)
    sender._db_gen += 1  # as a fresh connection (a new thread, a restart) would see it
    client.track("$signup", {"seq": 2})
    assert client.flush(10)
    assert sorted(delivered_seqs(server)) == [1, 2]
    assert glob.glob(spool + ".corrupt-*")


def test_unusable_spool_falls_back_to_memory(clients: list[overcentric_logging.Client],
                                             tmp_path: Any, server: LoopbackServer) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    # The spool's directory is a regular file: no spool can ever be created there.
    client = make(clients, endpoint=server.url, spool_path=str(blocker / "spool.db"), **FAST)
    client.track("$signup", {"seq": 4})
    assert client.flush(10)
    assert delivered_seqs(server) == [4]
    stats = client.stats()
    check_invariant(stats)
    assert stats["sent"] == 1 and stats["tracked"] == 1


def test_restart_sends_leftovers_first(clients: list[overcentric_logging.Client], spool: str,
                                       refused_url: str, server: LoopbackServer) -> None:
    first = make(clients, endpoint=refused_url, spool_path=spool, **SLOW_RETRY)
    for i in range(3):
        first.track("$signup", {"seq": i})
    assert first.close(0.2) is False
    stats = first.stats()
    check_invariant(stats)
    assert stats["pending"] == 3 and stats["dropped"] == 0  # left in the spool, not lost
    assert len(rows(spool)) == 3

    second = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    for i in range(3, 6):
        second.track("$signup", {"seq": i})
    assert second.flush(10)  # waits for the leftovers it found too
    seqs = delivered_seqs(server)
    assert sorted(seqs) == list(range(6))
    assert seqs[:3] == [0, 1, 2]
    assert rows(spool) == []
    stats = second.stats()
    check_invariant(stats)
    assert stats["tracked"] == 3 and stats["sent"] == 3


def test_shared_spool_counts_what_a_sibling_sent(
    clients: list[overcentric_logging.Client], spool: str, server: LoopbackServer
) -> None:
    producer = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    sender = producer._sender
    assert isinstance(sender, SpoolSender)
    sender._threads_unavailable = True  # this one never sends: its sibling does
    sibling = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    sibling.track("$signup", {"seq": -1})  # its sender runs (and polls the shared spool)
    for i in range(4):
        producer.track("$signup", {"seq": i})
    assert producer.flush(15)
    assert sorted(delivered_seqs(server)) == [-1, 0, 1, 2, 3]
    stats = producer.stats()
    check_invariant(stats)
    assert stats["sent"] == 4 and stats["pending"] == 0


def test_closed_client_drops_with_reason(clients: list[overcentric_logging.Client], spool: str,
                                         server: LoopbackServer) -> None:
    client = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    client.close(1.0)
    client.track("$signup", {"seq": 1})
    assert rows(spool) == []
    assert client.dropped_reasons == {"closed": 1}
    check_invariant(client.stats())


def test_sync_mode_sends_in_the_callers_thread(clients: list[overcentric_logging.Client],
                                               spool: str, server: LoopbackServer) -> None:
    client = make(clients, endpoint=server.url, spool_path=spool, sync=True, **FAST)
    client.track("$signup", {"seq": 1})
    assert delivered_seqs(server) == [1]  # no flush needed
    assert rows(spool) == []


def test_capture_events_bypasses_the_spool(spool: str, refused_url: str) -> None:
    testing = pytest.importorskip("overcentric_logging.testing")
    client = overcentric_logging.Client("proj_spool", endpoint=refused_url, spool_path=spool,
                                        **SLOW_RETRY)
    try:
        with testing.capture_events() as captured:
            client.track("$signup", {"seq": 1})
        assert rows(spool) == []
        assert [e["event"]["properties"]["seq"] for e in captured] == [1]
    finally:
        client.close(0.2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_uses_its_own_connection(clients: list[overcentric_logging.Client],
                                              spool: str, server: LoopbackServer) -> None:
    client = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    client.track("$signup", {"seq": 0})
    assert client.flush(10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            client.track("$signup", {"seq": 1})
            code = 0 if client.flush(10) else 3
        finally:
            os._exit(code)
    _, wait_status = os.waitpid(pid, 0)
    assert os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0
    client.track("$signup", {"seq": 2})
    assert client.flush(10)
    assert sorted(delivered_seqs(server)) == [0, 1, 2]
    assert rows(spool) == []


# -- the command line -------------------------------------------------------------------------


def test_cli_shows_counts_and_retries_failed(
    clients: list[overcentric_logging.Client], spool: str, server: LoopbackServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.script(status(400, "bad project id"), status(400, "bad project id"))
    client = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    client.track("$signup", {"seq": 1})
    client.track("$signup", {"seq": 2})
    assert client.flush(10)
    client.close(1.0)

    assert spool_main([spool]) == 0
    text = capsys.readouterr().out
    assert "failed:  2" in text and "queued:  0" in text
    assert "bad project id" in text and "--retry-failed" in text

    assert spool_main([spool, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == 2 and report["queued"] == 0 and report["claimed"] == 0
    assert report["oldest_age_seconds"] is not None and report["oldest_age_seconds"] >= 0
    assert len(report["last_errors"]) == 2 and "400" in report["last_errors"][0]["error"]

    assert spool_main([spool, "--retry-failed", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["requeued"] == 2 and report["failed"] == 0 and report["queued"] == 2

    # The cause is fixed (the server accepts now): the next process sends them first.
    server.clear()
    again = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    assert again.flush(10)
    assert sorted(delivered_seqs(server)) == [1, 2]
    assert rows(spool) == []


def test_cli_purge_failed(clients: list[overcentric_logging.Client], spool: str,
                          server: LoopbackServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.script(status(422))
    client = make(clients, endpoint=server.url, spool_path=spool, **FAST)
    client.track("$signup", {"seq": 1})
    assert client.flush(10)
    assert spool_main([spool, "--purge-failed"]) == 0
    assert "purged 1 failed event(s)" in capsys.readouterr().out
    assert rows(spool) == []


def test_cli_missing_or_bad_file(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert spool_main([str(tmp_path / "nope.db")]) == 2
    assert "no spool file" in capsys.readouterr().err
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    assert spool_main([str(bad)]) == 2
    assert "not a readable" in capsys.readouterr().err
    assert bad.read_bytes() == b"garbage" * 1000  # the CLI never moves or creates files


def test_cli_through_python_m(spool: str, refused_url: str) -> None:
    client = overcentric_logging.Client("proj_spool", endpoint=refused_url, spool_path=spool,
                                        **SLOW_RETRY)
    try:
        client.track("$signup", {"seq": 1})
    finally:
        client.close(0.1)
    proc = subprocess.run(
        [sys.executable, "-m", "overcentric_logging", "spool", spool, "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["queued"] == 1 and report["failed"] == 0

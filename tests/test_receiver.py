"""Tests of the local development receiver (``python -m overcentric_logging serve``)."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from urllib3.exceptions import NewConnectionError, ProtocolError

from overcentric_logging.receiver import Receiver, serve_main

ROOT = Path(__file__).resolve().parent.parent

VALID: dict[str, Any] = {
    "event": {
        "name": "$subscription_purchase",
        "properties": {"plan": "premium", "price": 9.99},
        "project_id": "proj_1",
        "device_id": "dev_1",
        "session_id": "sess_1",
        "context": "product",
    },
    "identity": {"unique_identifier": "user_123", "project_id": "proj_1"},
}
INVALID: dict[str, Any] = {"event": {**VALID["event"], "context": "backend"}}


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def receiver(out: io.StringIO) -> Iterator[Receiver]:
    with Receiver(stream=out) as rcv:
        yield rcv


@pytest.fixture
def pool(receiver: Receiver) -> Iterator[urllib3.HTTPConnectionPool]:
    with urllib3.HTTPConnectionPool("127.0.0.1", receiver.port, maxsize=1, retries=False,
                                    timeout=5.0) as p:
        yield p


def post(pool: urllib3.HTTPConnectionPool, body: object, path: str = "/api/v1/event",
         content_type: str = "application/json") -> urllib3.BaseHTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return pool.request("POST", path, body=data, headers={"Content-Type": content_type})


def test_url_is_the_loopback_event_endpoint(receiver: Receiver) -> None:
    assert receiver.url == f"http://127.0.0.1:{receiver.port}/api/v1/event"
    assert receiver.port > 0


def test_valid_event_is_accepted_and_kept(receiver: Receiver,
                                          pool: urllib3.HTTPConnectionPool) -> None:
    resp = post(pool, VALID)
    assert resp.status == 200
    assert resp.json() == {"ok": True}
    assert resp.headers["Content-Type"] == "application/json"
    assert receiver.events == [VALID]
    [record] = receiver.records
    assert record.ok and record.status == 200 and record.errors == []


def test_invalid_event_is_rejected_with_errors(receiver: Receiver,
                                               pool: urllib3.HTTPConnectionPool) -> None:
    resp = post(pool, INVALID)
    assert resp.status == 400
    payload = resp.json()
    assert payload["ok"] is False
    assert len(payload["errors"]) == 1 and payload["errors"][0].startswith("event.context:")
    assert receiver.events == [INVALID]  # kept, with its verdict
    assert receiver.records[0].ok is False


def test_body_that_is_not_json(receiver: Receiver, pool: urllib3.HTTPConnectionPool) -> None:
    resp = post(pool, b"{not json")
    assert resp.status == 400
    assert resp.json()["errors"][0].startswith("body: not valid JSON")
    assert receiver.events == []
    assert receiver.records[0].body is None


def test_content_type_must_be_json(receiver: Receiver, pool: urllib3.HTTPConnectionPool) -> None:
    assert post(pool, VALID, content_type="text/plain").status == 415
    assert post(pool, VALID, content_type="application/json; charset=utf-8").status == 200
    assert [r.status for r in receiver.records] == [415, 200]


def test_other_paths_and_methods(receiver: Receiver, pool: urllib3.HTTPConnectionPool) -> None:
    assert post(pool, VALID, path="/api/v1/events").status == 404
    assert pool.request("GET", "/").status == 404
    resp = pool.request("GET", "/api/v1/event")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    assert pool.request("HEAD", "/api/v1/event").status == 405
    # The connection survived all of the above and still serves events.
    assert post(pool, VALID).status == 200
    assert pool.num_connections == 1
    assert len(receiver.records) == 1


def test_keep_alive_connection_is_reused(receiver: Receiver,
                                         pool: urllib3.HTTPConnectionPool) -> None:
    for _ in range(5):
        assert post(pool, VALID).status == 200
    assert pool.num_connections == 1
    assert len(receiver.events) == 5


def test_concurrent_senders(receiver: Receiver) -> None:
    errors: list[BaseException] = []

    def send(n: int) -> None:
        try:
            with urllib3.HTTPConnectionPool("127.0.0.1", receiver.port, retries=False,
                                            timeout=5.0) as p:
                for i in range(n):
                    body = copy_with_name(VALID, f"e{i}")
                    assert post(p, body).status == 200
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(10,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10.0)
    assert errors == []
    assert receiver.wait_for(40, timeout=5.0)
    assert len(receiver.events) == 40


def copy_with_name(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {**body, "event": {**body["event"], "name": name}}


def test_summary_line_format(receiver: Receiver, pool: urllib3.HTTPConnectionPool,
                             out: io.StringIO) -> None:
    post(pool, VALID)
    post(pool, INVALID)
    post(pool, b"[]")
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        'OK  $subscription_purchase  user=user_123  properties={"plan": "premium", "price": 9.99}'
    )
    assert lines[1].startswith(
        "REJECTED 400  $subscription_purchase  user=-  properties="
    )
    assert "errors: event.context: must be exactly" in lines[1]
    assert lines[2].startswith("REJECTED 400  <no event>  errors: body: must be a JSON object")
    assert len(lines) == 3


def test_long_properties_are_shortened(receiver: Receiver, pool: urllib3.HTTPConnectionPool,
                                       out: io.StringIO) -> None:
    post(pool, {"event": {**VALID["event"], "properties": {"blob": "x" * 5000}}})
    [line] = out.getvalue().splitlines()
    assert line.endswith("...") and len(line) < 600


def test_json_output_prints_one_json_object_per_event(out: io.StringIO) -> None:
    with Receiver(stream=out, json_output=True) as rcv, \
            urllib3.HTTPConnectionPool("127.0.0.1", rcv.port, retries=False, timeout=5.0) as p:
        post(p, VALID)
        post(p, INVALID)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {"ok": True, "status": 200, "errors": [], "body": VALID}
    assert second["ok"] is False and second["body"] == INVALID and second["errors"]


def test_quiet_prints_nothing_but_keeps_events(out: io.StringIO) -> None:
    with Receiver(stream=out, quiet=True) as rcv, \
            urllib3.HTTPConnectionPool("127.0.0.1", rcv.port, retries=False, timeout=5.0) as p:
        post(p, VALID)
        assert rcv.events == [VALID]
    assert out.getvalue() == ""


def test_wait_for(receiver: Receiver, pool: urllib3.HTTPConnectionPool) -> None:
    assert receiver.wait_for(1, timeout=0.05) is False
    threading.Thread(target=post, args=(pool, VALID), daemon=True).start()
    assert receiver.wait_for(1, timeout=5.0) is True


def test_events_is_a_copy_and_clear_forgets(receiver: Receiver,
                                            pool: urllib3.HTTPConnectionPool) -> None:
    post(pool, VALID)
    receiver.events.clear()
    assert len(receiver.events) == 1
    receiver.clear()
    assert receiver.events == [] and receiver.records == []


def test_stop_closes_port_and_keep_alive_connections(out: io.StringIO) -> None:
    rcv = Receiver(stream=out).start()
    with urllib3.HTTPConnectionPool("127.0.0.1", rcv.port, maxsize=1, retries=False,
                                    timeout=5.0) as p:
        assert post(p, VALID).status == 200
        rcv.stop()
        rcv.stop()  # idempotent
        with pytest.raises((NewConnectionError, ProtocolError)):
            post(p, VALID)
    with pytest.raises(RuntimeError):
        rcv.start()


def test_serve_main_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert serve_main(["--port", str(busy.getsockname()[1])]) == 1
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="signal delivery differs on Windows")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_main_end_to_end(signum: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    code = "import sys; from overcentric_logging.receiver import serve_main; " \
           "sys.exit(serve_main(['--port', '0']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        banner = lines.get(timeout=10.0)
        assert banner.startswith("Listening on http://127.0.0.1:")
        assert banner.rstrip().endswith("— set OVERCENTRIC_ENDPOINT to that URL")
        url = banner.split()[2]
        resp = urllib3.request("POST", url, body=json.dumps(VALID).encode(),
                               headers={"Content-Type": "application/json"},
                               retries=False, timeout=5.0)
        assert resp.status == 200
        assert lines.get(timeout=5.0).startswith("OK  $subscription_purchase  user=user_123")
        proc.send_signal(signum)
        try:
            code = proc.wait(timeout=30.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=5.0)
            pytest.fail(f"the receiver did not stop on {signum!r}; stderr: {err[-2000:]}")
        assert code == 0
        assert lines.get(timeout=5.0).strip() == "Received 1 event(s), 0 rejected."
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5.0)

"""Tests of the test suite's own loopback server: each scripted action does what it promises."""

from __future__ import annotations

import json
import socket
import threading
from email.utils import formatdate

import pytest
import urllib3
from loopback import (
    LoopbackServer,
    close_after,
    delay,
    drip,
    hang,
    refused_url,
    reset,
    status,
)
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError

VALID = {
    "event": {
        "name": "$signup",
        "project_id": "proj_1",
        "device_id": "dev_1",
        "session_id": "sess_1",
        "context": "product",
        "properties": {"plan": "free"},
    }
}


def _pool(srv: LoopbackServer, read: float = 5.0) -> urllib3.HTTPConnectionPool:
    return urllib3.HTTPConnectionPool(
        "127.0.0.1", srv.port, maxsize=1, retries=False,
        timeout=urllib3.Timeout(connect=2.0, read=read),
    )


def _post(pool: urllib3.HTTPConnectionPool, body: object = VALID,
          headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
    return pool.request(
        "POST", "/api/v1/event", body=json.dumps(body).encode(),
        headers=headers or {"Content-Type": "application/json"},
    )


def _raw_request(port: int, body: bytes = b"{}") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    sock.sendall(
        b"POST /api/v1/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_default_answer_is_200_and_request_is_recorded(server: LoopbackServer) -> None:
    with _pool(server) as pool:
        resp = _post(pool, headers={"Content-Type": "application/json", "X-Test": "yes"})
    assert resp.status == 200
    [req] = server.requests
    assert (req.method, req.path) == ("POST", "/api/v1/event")
    assert req.headers["x-test"] == "yes"
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.body) == VALID
    assert req.json == VALID and req.json_error is None
    assert req.status == 200 and req.arrived > 0
    assert server.events == [VALID]
    assert server.names() == ["$signup"]
    assert server.url == f"http://127.0.0.1:{server.port}/api/v1/event"


def test_keep_alive_connection_is_reused(server: LoopbackServer) -> None:
    with _pool(server) as pool:
        for _ in range(3):
            assert _post(pool).status == 200
        assert pool.num_connections == 1
    ids = server.connection_ids()
    assert len(ids) == 3 and len(set(ids)) == 1


def test_client_connection_close_is_honoured(server: LoopbackServer) -> None:
    with _pool(server) as pool:
        resp = _post(pool, headers={"Content-Type": "application/json", "Connection": "close"})
        assert resp.headers.get("Connection") == "close"
        assert server.wait_connection_closed(server.requests[0].connection_id)
        assert _post(pool).status == 200
    first, second = server.connection_ids()
    assert first != second


def test_script_is_consumed_in_order_then_default(server: LoopbackServer) -> None:
    server.script(status(500), status(503, b'{"error": "busy"}'))
    with _pool(server) as pool:
        statuses = [_post(pool).status for _ in range(3)]
    assert statuses == [500, 503, 200]
    assert server.pending_actions() == 0
    assert len(server.requests) == 3
    assert server.events == [VALID]  # only the 2xx-answered one


@pytest.mark.parametrize("retry_after", ["1", formatdate(usegmt=True)])
def test_status_with_retry_after(server: LoopbackServer, retry_after: str) -> None:
    server.script(status(429, b'{"error": "slow down"}', {"Retry-After": retry_after}))
    with _pool(server) as pool:
        resp = _post(pool)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == retry_after
    assert resp.data == b'{"error": "slow down"}'
    assert server.events == []


def test_default_can_be_changed() -> None:
    with LoopbackServer(default=status(400, b"nope")) as srv, _pool(srv) as pool:
        assert _post(pool).status == 400
        srv.default = status(204)
        assert _post(pool).status == 204


def test_delay_then_answers(server: LoopbackServer) -> None:
    server.script(delay(0.05, then=status(202)))
    with _pool(server) as pool:
        assert _post(pool).status == 202
    assert server.requests[0].action == "delay"


def test_delay_longer_than_read_timeout_times_out(server: LoopbackServer) -> None:
    server.script(delay(30))
    with _pool(server, read=0.2) as pool, pytest.raises(ReadTimeoutError):
        _post(pool)
    assert server.wait_for_requests(1)
    assert server.requests[0].status is None


def test_reset_aborts_with_rst(server: LoopbackServer) -> None:
    server.script(reset())
    with _pool(server) as pool:
        with pytest.raises(ProtocolError) as info:
            _post(pool)
        assert isinstance(info.value.args[-1], ConnectionResetError)  # an RST, not a FIN
        # The next request is served normally on a fresh connection.
        assert _post(pool).status == 200
    assert [r.status for r in server.requests] == [None, 200]
    assert server.events == [VALID]


def test_hang_never_answers_and_does_not_block_stop() -> None:
    srv = LoopbackServer(default=hang()).start()
    sock = _raw_request(srv.port)
    try:
        assert srv.wait_for_requests(1)
        sock.settimeout(0.2)
        with pytest.raises(socket.timeout):
            sock.recv(1)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        stopper.join(timeout=5.0)
        assert not stopper.is_alive()
        sock.settimeout(5.0)
        assert _read_all(sock) == b""  # released without an answer
    finally:
        sock.close()
        srv.stop()
    assert srv.requests[0].status is None
    assert not srv.running


def test_hang_with_urllib3_times_out(server: LoopbackServer) -> None:
    server.script(hang())
    with _pool(server, read=0.2) as pool, pytest.raises(ReadTimeoutError):
        _post(pool)


def test_drip_sends_the_response_slowly_but_completely(server: LoopbackServer) -> None:
    server.script(drip(2))
    sock = _raw_request(server.port)
    try:
        first = sock.recv(65536)
        assert 0 < len(first) < len(b"HTTP/1.1 200")  # a byte or so, the rest is still coming
    finally:
        sock.close()

    server.script(drip(2000, body=b'{"ok": true}'))
    with _pool(server) as pool:
        resp = _post(pool)
    assert resp.status == 200 and resp.data == b'{"ok": true}'


def test_drip_trips_a_short_read_timeout(server: LoopbackServer) -> None:
    server.script(drip(2))
    with _pool(server, read=0.1) as pool, pytest.raises(ReadTimeoutError):
        _post(pool)


def test_close_after_answers_then_silently_closes(server: LoopbackServer) -> None:
    server.script(close_after())
    sock = _raw_request(server.port)
    try:
        response = _read_all(sock)  # ends because the server closed the connection
    finally:
        sock.close()
    assert response.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" not in response.lower()  # no notice: the client keeps it pooled


def test_close_after_leaves_a_stale_pooled_connection(server: LoopbackServer) -> None:
    server.script(close_after())
    with _pool(server) as pool:
        assert _post(pool).status == 200
        assert server.wait_connection_closed(server.requests[0].connection_id)
        # urllib3 notices the dead pooled connection and reconnects.
        assert _post(pool).status == 200
    first, second = server.connection_ids()
    assert first != second


def test_stop_then_start_on_the_same_port() -> None:
    srv = LoopbackServer().start()
    try:
        port = srv.port
        with _pool(srv) as pool:
            assert _post(pool).status == 200
            srv.stop()
            assert not srv.running
            with pytest.raises((NewConnectionError, ProtocolError)):
                _post(pool)
        srv.start()
        assert srv.port == port
        with _pool(srv) as pool:
            assert _post(pool).status == 200
    finally:
        srv.stop()
    ids = srv.connection_ids()
    assert len(srv.requests) == 2 and ids[0] != ids[1]


def test_stop_cuts_idle_keep_alive_connections() -> None:
    srv = LoopbackServer().start()
    sock = _raw_request(srv.port)
    try:
        assert srv.wait_for_events(1)
        sock.settimeout(5.0)
        # The event is recorded before its answer is written: read the answer first, so that
        # stop() cuts an idle keep-alive connection, which is what this test is about.
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 ")
        srv.stop()
        assert _read_all(sock) == b""  # EOF, not a hang
    finally:
        sock.close()
        srv.stop()


def test_refused_url_refuses(refused_url: str) -> None:
    http = urllib3.PoolManager(retries=False, timeout=2.0)
    with pytest.raises(NewConnectionError):
        http.request("POST", refused_url, body=b"{}")


def test_refused_url_context_manager() -> None:
    with refused_url("/x") as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/x")


def test_schema_errors_reports_each_bad_body(server: LoopbackServer) -> None:
    with _pool(server) as pool:
        _post(pool)
        assert server.schema_errors() == []
        _post(pool, {"event": {**VALID["event"], "context": "backend"}})
        pool.request("POST", "/api/v1/event", body=b"not json")
    errors = server.schema_errors()
    assert len(errors) == 2
    assert errors[0].startswith("request 1: event.context:")
    assert errors[1].startswith("request 2: body is not JSON")


def test_chunked_request_body_is_decoded(server: LoopbackServer) -> None:
    data = json.dumps(VALID).encode()
    with _pool(server) as pool:
        resp = pool.request(
            "POST", "/api/v1/event", body=iter([data[:10], data[10:]]), chunked=True,
            headers={"Content-Type": "application/json"},
        )
    assert resp.status == 200
    assert server.requests[0].headers["transfer-encoding"] == "chunked"
    assert server.events == [VALID]


def test_waits_time_out_with_false(server: LoopbackServer) -> None:
    assert server.wait_for_requests(1, timeout=0.05) is False
    assert server.wait_for_events(1, timeout=0.05) is False
    assert server.wait_connection_closed(12345, timeout=0.05) is False

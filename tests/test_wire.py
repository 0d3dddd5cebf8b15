"""The hand-written HTTP/1.1 exchange (overcentric_logging.wire) against raw scripted answers:
chunked bodies, interim 1xx answers, close-delimited bodies, Connection: close, HTTP/1.0,
garbage, oversized heads and bodies, a stale keep-alive connection, and the total deadline."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import urllib3

from overcentric_logging.wire import ProtocolError, build_head, exchange


class RawServer:
    """Accepts connections on 127.0.0.1 and answers each request with the next scripted bytes
    (None: close the connection without answering)."""

    def __init__(self, answers: list[bytes | None], close_after_each: bool = False) -> None:
        self.answers = list(answers)
        self.close_after_each = close_after_each
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                while self.answers:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if not data:
                        break
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(body) < length:
                        body += conn.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + body)
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    conn.sendall(answer)
                    if self.close_after_each:
                        break

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[list[RawServer]]:
    servers: list[RawServer] = []
    yield servers
    for s in servers:
        s.close()


def _post(server: RawServer, body: bytes = b'{"a":1}', timeout: float = 5.0,
          pool: urllib3.HTTPConnectionPool | None = None) -> tuple[int, bytes, str | None]:
    url = f"http://127.0.0.1:{server.port}/api/v1/event"
    pool = pool or urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=2)
    head = build_head(url, {"Content-Type": "application/json", "User-Agent": "t"})
    return exchange(pool, head, body, timeout, 512)


def test_request_bytes_are_well_formed(raw: list[RawServer]) -> None:
    server = RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"])
    raw.append(server)
    assert _post(server, b'{"x":"\xc3\xa9"}') == (200, b"{}", None)
    request = server.requests[0]
    assert request.startswith(b"POST /api/v1/event HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in request
    assert b"Content-Type: application/json\r\n" in request
    assert request.endswith(b'Content-Length: 10\r\n\r\n{"x":"\xc3\xa9"}')


def test_chunked_interim_and_retry_after(raw: list[RawServer]) -> None:
    answer = (b"HTTP/1.1 100 Continue\r\n\r\n"
              b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
              b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
    server = RawServer([answer, b"HTTP/1.1 204 No Content\r\n\r\n"])
    raw.append(server)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=2)
    assert _post(server, pool=pool) == (429, b"hello world", "7")
    assert _post(server, pool=pool) == (204, b"", None)
    assert server.connections == 1  # the chunked answer left the connection reusable


def test_connection_close_and_close_delimited_bodies(raw: list[RawServer]) -> None:
    server = RawServer([b"HTTP/1.1 400 Bad\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbad",
                        b"HTTP/1.0 500 Oops\r\n\r\nno length here"], close_after_each=True)
    raw.append(server)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=2)
    assert _post(server, pool=pool) == (400, b"bad", None)
    assert _post(server, pool=pool) == (500, b"no length here", None)
    assert server.connections == 2


@pytest.mark.parametrize("answer", [
    b"SMTP ready\r\n\r\n",
    b"HTTP/1.1 abc\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_garbage_is_a_protocol_error(raw: list[RawServer], answer: bytes) -> None:
    server = RawServer([answer])
    raw.append(server)
    with pytest.raises(ProtocolError):
        _post(server)


def test_oversized_head_and_body(raw: list[RawServer]) -> None:
    huge_head = b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"
    big_body = b"HTTP/1.1 413 Too Large\r\nContent-Length: 2000000\r\n\r\n" + b"b" * 600
    server = RawServer([huge_head, big_body], close_after_each=True)
    raw.append(server)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=2)
    with pytest.raises(ProtocolError):
        _post(server, pool=pool)
    status, preview, _ = _post(server, pool=pool)
    assert (status, preview) == (413, b"b" * 512)  # only the preview is read


def test_stale_keep_alive_connection_is_retried_once(raw: list[RawServer]) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    # Second request: the server reads it and closes without a word (a keep-alive timeout).
    server = RawServer([ok, None, ok])
    raw.append(server)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=2)
    assert _post(server, pool=pool)[0] == 200
    assert _post(server, pool=pool)[0] == 200
    assert server.connections == 2


def test_total_deadline_bounds_a_drip(raw: list[RawServer]) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                if stop.wait(0.05):
                    return
                conn.sendall(bytes([byte]))

    threading.Thread(target=drip, daemon=True).start()
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)
    head = build_head(f"http://127.0.0.1:{port}/e", {})
    try:
        with pytest.raises(TimeoutError):
            exchange(pool, head, b"{}", 0.3, 512)  # each byte is quick, the whole is not
    finally:
        stop.set()
        listener.close()


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError):
        build_head("http://127.0.0.1:1/e", {"X-Evil": "a\r\nHost: elsewhere"})
    head = build_head("https://[::1]:443/api/v1/event?x=1", {"Host": "ignored"})
    assert head.startswith(b"POST /api/v1/event?x=1 HTTP/1.1\r\nHost: [::1]\r\n")
    assert b"ignored" not in head

"""One POST on a pooled urllib3 connection, with the request and response handled by hand.

The API takes one small JSON event per request, so per-request overhead is the sender's CPU
bill: at 1,000 events/s it is what the sender takes from the application's GIL. urllib3's
``urlopen`` builds a header dict, a ``Timeout``, a ``Retry`` and a response object per request,
and ``http.client`` parses response headers with the ``email`` package. Here urllib3 still
owns the connections (pooling, keep-alive, TLS and certificate checks, detection of dropped
connections); this module writes a request head built once per sender plus the body in one
``sendall``, and reads the response with a minimal HTTP/1.1 parser: status line, headers,
``Content-Length`` or chunked body (keeping only the first bytes), and whether the connection
can be reused. The whole exchange is bounded by one deadline, so a server that drips bytes
cannot hold a request past ``timeout``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ProtocolError", "build_head", "exchange"]

MAX_HEAD = 64 * 1024
MAX_DRAIN = 1024 * 1024  # larger bodies are not read: the connection is closed instead


class ProtocolError(ConnectionError):
    """The server's answer was not HTTP/1.x we can use; the connection is closed."""


def build_head(endpoint: str, headers: Mapping[str, str]) -> bytes:
    """The request line and headers up to ``Content-Length: `` (the length follows)."""
    parts = urlsplit(endpoint)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    if parts.port and parts.port != default_port:
        host = f"{host}:{parts.port}"
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    skip = ("host", "content-length")
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in skip]
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError(f"header line {line!r} contains a line break")
    return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


class _Reader:
    """Buffered reads from a socket, each bounded by the exchange's deadline."""

    __slots__ = ("buf", "deadline", "got", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.got = False  # whether any byte of an answer arrived

    def _more(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete response within the timeout")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:  # an alias of TimeoutError only from Python 3.10
            raise TimeoutError("no complete response within the timeout") from None
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self.got = True
        self.buf += chunk

    def until(self, marker: bytes, limit: int) -> bytes:
        while True:
            at = self.buf.find(marker)
            if at > limit:
                raise ProtocolError("response head too large")
            if at >= 0:
                out, self.buf = self.buf[:at], self.buf[at + len(marker) :]
                return out
            if len(self.buf) > limit:
                raise ProtocolError("response head too large")
            self._more()

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def to_eof(self, limit: int) -> bytes:
        try:
            while len(self.buf) <= limit:
                self._more()
        except ConnectionResetError:
            pass
        return self.buf


def _read_response(reader: _Reader, preview: int) -> tuple[int, dict[bytes, bytes], bytes, bool]:
    """(status, lower-cased headers, first ``preview`` body bytes, connection reusable)."""
    while True:
        head = reader.until(b"\r\n\r\n", MAX_HEAD)
        status_line, _, header_block = head.partition(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        code_text = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code_text.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(code_text)
        headers: dict[bytes, bytes] = {}
        for line in header_block.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200 and status != 101:
            continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        break
    connection = headers.get(b"connection", b"").lower()
    reusable = connection != b"close" if version == b"HTTP/1.1" else connection == b"keep-alive"
    if status in (204, 304):
        return status, headers, b"", reusable and not reader.buf
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = b""
        drained = 0
        while True:
            size_line = reader.until(b"\r\n", 1024)
            size_text = size_line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
            if size == 0:
                while reader.until(b"\r\n", MAX_HEAD):
                    pass  # trailer fields, up to the empty line
                break
            drained += size
            if drained > MAX_DRAIN:
                return status, headers, body[:preview], False
            chunk = reader.exactly(size)
            if len(body) < preview:
                body += chunk[: preview - len(body)]
            reader.exactly(2)
        return status, headers, body, reusable and not reader.buf
    length_text = headers.get(b"content-length")
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError:
            raise ProtocolError(f"bad Content-Length {length_text[:40]!r}") from None
        if length < 0:
            raise ProtocolError("negative Content-Length")
        if length > MAX_DRAIN:
            return status, headers, reader.exactly(min(preview, length)), False
        body = reader.exactly(length)
        return status, headers, body[:preview], reusable and not reader.buf
    # No length: the body runs to the end of the connection, which cannot be reused.
    return status, headers, reader.to_eof(MAX_DRAIN)[:preview], False


def exchange(
    pool: Any, head: bytes, body: bytes, timeout: float, preview: int
) -> tuple[int, bytes, str | None]:
    """POST ``body`` on a connection of ``pool``; (status, body preview, Retry-After).

    Network and protocol errors raise (``OSError`` subclasses); the connection is then closed,
    not returned to the pool. A request that fails on a reused keep-alive connection before
    any answer arrived (the server had closed it) is sent once more on a new connection.
    """
    request = head + str(len(body)).encode("ascii") + b"\r\n\r\n" + body
    for _ in range(2):
        conn = pool._get_conn()
        reused = conn.sock is not None
        reader: _Reader | None = None
        try:
            deadline = time.monotonic() + timeout
            if not reused:
                conn.connect()
            sock = conn.sock
            sock.settimeout(timeout)
            sock.sendall(request)
            reader = _Reader(sock, deadline)
            status, headers, data, reusable = _read_response(reader, preview)
        except (ConnectionResetError, BrokenPipeError):
            conn.close()
            pool._put_conn(conn)
            if reused and (reader is None or not reader.got):
                continue  # the server had closed this keep-alive connection: one fresh try
            raise
        except BaseException:
            conn.close()
            pool._put_conn(conn)
            raise
        if not reusable:
            conn.close()
        pool._put_conn(conn)
        retry_after = headers.get(b"retry-after")
        return status, data, None if retry_after is None else retry_after.decode("latin-1")
    raise ConnectionResetError("unreachable")  # pragma: no cover

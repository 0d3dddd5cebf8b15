"""A scriptable, fault-injecting HTTP/1.1 server on 127.0.0.1 for the test suite.

Tests talk real HTTP to a ``LoopbackServer``: it records every request (method, path, headers,
raw and decoded body, arrival time, and the id of the TCP connection it came on, so keep-alive
reuse is visible) and answers each one with the next *action* from a script, falling back to a
default (``status(200)``). The actions reproduce what a real network does to a client: error
statuses with ``Retry-After``, latency (``delay``), a connection reset (``reset``), a server that
never answers (``hang``), a trickling response (``drip``) and a keep-alive connection the server
silently closes (``close_after``). ``stop()`` takes the server down (connections are refused)
and ``start()`` brings it back on the same port; ``refused_url()`` gives a URL nothing listens
on. Built on raw sockets and one thread per connection, so resets are real RSTs and a hung
request never delays ``stop()``, which returns within a second.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from overcentric_logging.schema import validate_payload

__all__ = [
    "Action",
    "LoopbackServer",
    "Request",
    "close_after",
    "delay",
    "drip",
    "hang",
    "refused_url",
    "reset",
    "status",
]

EVENT_PATH = "/api/v1/event"
_MAX_HEADER_LINE = 65536
_JOIN_BUDGET = 1.0


@dataclass(frozen=True)
class Action:
    """How to answer one request; build these with the module-level helpers."""

    kind: str
    code: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    then: Action | None = None
    bytes_per_second: float = 0.0


def status(code: int = 200, body: bytes | str = b"", headers: dict[str, str] | None = None
           ) -> Action:
    """Answer with ``code``, ``body`` and extra ``headers`` (e.g. ``{"Retry-After": "1"}``)."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    return Action("status", code=code, body=data, headers=tuple((headers or {}).items()))


def delay(seconds: float, then: Action | None = None) -> Action:
    """Wait ``seconds`` after reading the request, then do ``then`` (default ``status(200)``)."""
    return Action("delay", seconds=seconds, then=then or status(200))


def reset() -> Action:
    """Read the request, then abort the connection with a TCP RST and no response."""
    return Action("reset")


def hang() -> Action:
    """Read the request and never answer; the connection is released when the server stops."""
    return Action("hang")


def drip(bytes_per_second: float, code: int = 200, body: bytes = b'{"ok": true}') -> Action:
    """Send the whole response (status line included) at ``bytes_per_second``."""
    return Action("drip", code=code, body=body, bytes_per_second=bytes_per_second)


def close_after(code: int = 200, body: bytes = b"") -> Action:
    """Answer normally (keep-alive implied), then close the connection without notice.

    The client keeps the connection in its pool, as it would with a server whose idle timeout
    expired; the next request on it meets a closed socket.
    """
    return Action("close_after", code=code, body=body)


@dataclass
class Request:
    """One request as the server saw it."""

    index: int
    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased; a repeated header keeps its last value."""
    body: bytes
    json: Any
    """The decoded body, or ``None`` when it is not JSON (see ``json_error``)."""
    json_error: str | None
    arrived: float
    """``time.monotonic()`` when the request had been read in full."""
    connection_id: int
    action: str
    status: int | None = None
    """The status sent back; ``None`` while pending or when reset, hung or cut."""

    @property
    def answered_ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class _Connection:
    sock: socket.socket
    cid: int
    thread: threading.Thread | None = None


@dataclass
class _Run:
    """State of one start()..stop() period; a restart gets fresh state on the same port."""

    listener: socket.socket
    stopping: threading.Event = field(default_factory=threading.Event)
    waker: tuple[socket.socket, socket.socket] = field(default_factory=socket.socketpair)
    threads: list[threading.Thread] = field(default_factory=list)
    connections: dict[int, _Connection] = field(default_factory=dict)


class _Closed(Exception):
    """The peer went away or the server is stopping."""


class LoopbackServer:
    """The server; ``start()`` binds 127.0.0.1 (port 0 picks one, kept across restarts)."""

    def __init__(self, default: Action | None = None, port: int = 0) -> None:
        self.default: Action = default or status(200)
        self._port = port
        self._script: deque[Action] = deque()
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._next_cid = 0
        self._closed_cids: set[int] = set()
        self._run: _Run | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """The event endpoint on this server (what ``endpoint=`` should be)."""
        return self.base_url + EVENT_PATH

    @property
    def running(self) -> bool:
        return self._run is not None

    # -- scripting -------------------------------------------------------------------------

    def script(self, *actions: Action) -> LoopbackServer:
        """Queue ``actions``, consumed one per request before falling back to ``default``."""
        with self._lock:
            self._script.extend(actions)
        return self

    def pending_actions(self) -> int:
        with self._lock:
            return len(self._script)

    def _next_action(self) -> Action:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    # -- what happened ---------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Decoded bodies of the requests answered with a 2xx, in arrival order."""
        with self._lock:
            return [r.json for r in self._requests if r.answered_ok and isinstance(r.json, dict)]

    def names(self) -> list[str]:
        """The event names of ``events``."""
        names = []
        for body in self.events:
            event = body.get("event")
            names.append(str(event.get("name")) if isinstance(event, dict) else "")
        return names

    def connection_ids(self) -> list[int]:
        with self._lock:
            return [r.connection_id for r in self._requests]

    def schema_errors(self) -> list[str]:
        """Schema problems of every recorded body, each prefixed with its request index."""
        problems: list[str] = []
        for r in self.requests:
            if r.json_error is not None:
                problems.append(f"request {r.index}: body is not JSON ({r.json_error})")
                continue
            problems.extend(f"request {r.index}: {p}" for p in validate_payload(r.json))
        return problems

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` requests have been read; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= n, timeout)

    def wait_for_events(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` requests have been answered with a 2xx; False on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: sum(1 for r in self._requests if r.answered_ok) >= n, timeout
            )

    def wait_connection_closed(self, connection_id: int, timeout: float = 5.0) -> bool:
        """Wait until the server has closed connection ``connection_id``; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: connection_id in self._closed_cids, timeout)

    def clear(self) -> None:
        """Forget recorded requests and queued actions."""
        with self._lock:
            self._requests.clear()
            self._script.clear()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        """Listen (again) on 127.0.0.1; after a stop(), on the same port as before."""
        if self._run is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Without it a restart fails while the previous run's connections sit in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self._port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        self._port = listener.getsockname()[1]
        run = _Run(listener)
        acceptor = threading.Thread(
            target=self._accept_loop, args=(run,), name=f"loopback-accept-{self._port}",
            daemon=True,
        )
        run.threads.append(acceptor)
        self._run = run
        acceptor.start()
        return self

    def stop(self) -> None:
        """Refuse new connections, cut open ones (hung ones too); returns within ~1 s."""
        run = self._run
        if run is None:
            return
        self._run = None
        with self._lock:
            # Under the lock the accept loop also registers connections in, so each one is
            # either in this snapshot or closed by the loop on sight of the flag.
            run.stopping.set()
            connections = list(run.connections.values())
        with contextlib.suppress(OSError):
            run.waker[1].send(b"x")
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _JOIN_BUDGET
        with self._lock:
            threads = list(run.threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for sock in (run.listener, *run.waker):
            sock.close()
        with self._changed:
            self._changed.notify_all()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------------

    def _accept_loop(self, run: _Run) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(run.listener, selectors.EVENT_READ)
            selector.register(run.waker[0], selectors.EVENT_READ)
            while not run.stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is not run.listener or run.stopping.is_set():
                        continue
                    try:
                        sock, _addr = run.listener.accept()
                    except OSError:
                        continue
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with self._lock:
                        if run.stopping.is_set():
                            sock.close()
                            continue
                        self._next_cid += 1
                        conn = _Connection(sock, self._next_cid)
                        run.connections[conn.cid] = conn
                        thread = threading.Thread(
                            target=self._serve_connection, args=(run, conn),
                            name=f"loopback-conn-{conn.cid}", daemon=True,
                        )
                        conn.thread = thread
                        run.threads.append(thread)
                    thread.start()

    def _serve_connection(self, run: _Run, conn: _Connection) -> None:
        reader = conn.sock.makefile("rb")
        try:
            while not run.stopping.is_set():
                request = self._read_request(reader, conn.cid)
                if request is None:
                    break
                keep_open = self._answer(run, conn, request)
                if not keep_open:
                    break
        except (_Closed, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                reader.close()
            with contextlib.suppress(OSError):
                conn.sock.close()
            with self._changed:
                run.connections.pop(conn.cid, None)
                self._closed_cids.add(conn.cid)
                self._changed.notify_all()

    def _read_request(self, reader: Any, cid: int) -> Request | None:
        line = reader.readline(_MAX_HEADER_LINE)
        while line in (b"\r\n", b"\n"):  # tolerated between pipelined requests (RFC 9112)
            line = reader.readline(_MAX_HEADER_LINE)
        if not line:
            return None
        parts = line.decode("latin-1").split()
        if len(parts) != 3:
            raise _Closed(f"bad request line {line!r}")
        method, path, _version = parts
        headers: dict[str, str] = {}
        while True:
            raw = reader.readline(_MAX_HEADER_LINE)
            if not raw:
                raise _Closed("connection closed inside the headers")
            if raw in (b"\r\n", b"\n"):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked(reader)
        else:
            length = int(headers.get("content-length", "0") or "0")
            body = reader.read(length) if length else b""
            if len(body) < length:
                raise _Closed("connection closed inside the body")
        decoded: Any = None
        error: str | None = None
        try:
            decoded = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            error = str(exc)
        with self._changed:
            request = Request(
                index=len(self._requests), method=method, path=path, headers=headers,
                body=body, json=decoded, json_error=error, arrived=time.monotonic(),
                connection_id=cid, action="",
            )
            self._requests.append(request)
            self._changed.notify_all()
        return request

    @staticmethod
    def _read_chunked(reader: Any) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = reader.readline(_MAX_HEADER_LINE)
            if not size_line:
                raise _Closed("connection closed inside a chunked body")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while reader.readline(_MAX_HEADER_LINE) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(reader.read(size))
            reader.readline(_MAX_HEADER_LINE)

    def _set_status(self, request: Request, code: int | None) -> None:
        with self._changed:
            request.status = code
            self._changed.notify_all()

    def _answer(self, run: _Run, conn: _Connection, request: Request) -> bool:
        """Carry out the next action; True when the connection stays open for another request."""
        action = self._next_action()
        with self._lock:
            request.action = action.kind
        while action.kind == "delay":
            if run.stopping.wait(action.seconds):
                return False
            assert action.then is not None
            action = action.then
        if action.kind == "reset":
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            # The close itself happens on the way out of _serve_connection.
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if action.kind == "hang":
            run.stopping.wait()
            return False
        client_wants_close = request.headers.get("connection", "").lower() == "close"
        extra = list(action.headers)
        if client_wants_close:
            extra.append(("Connection", "close"))
        response = _render(action.code, action.body, extra)
        # The status is recorded before the response's last byte leaves, so a client that has
        # its response can already see the request among ``events``.
        if action.kind == "drip":
            interval = 1.0 / action.bytes_per_second
            for i in range(len(response) - 1):
                conn.sock.sendall(response[i : i + 1])
                if run.stopping.wait(interval):
                    return False
            self._set_status(request, action.code)
            conn.sock.sendall(response[-1:])
        else:
            self._set_status(request, action.code)
            conn.sock.sendall(response)
        return action.kind != "close_after" and not client_wants_close


def _render(code: int, body: bytes, headers: list[tuple[str, str]]) -> bytes:
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = "Unknown"
    names = {name.lower() for name, _ in headers}
    lines = [f"HTTP/1.1 {code} {reason}"]
    if body and "content-type" not in names:
        lines.append("Content-Type: application/json")
    if "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@contextlib.contextmanager
def refused_url(path: str = EVENT_PATH) -> Iterator[str]:
    """Yield a URL on 127.0.0.1 whose port refuses connections.

    The port stays bound (but not listening) for the duration, so no other process can start
    listening on it meanwhile and turn the refusal into a surprise answer.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}{path}"
    finally:
        sock.close()

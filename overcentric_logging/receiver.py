"""A local stand-in for the Overcentric event endpoint, for demos and development.

``Receiver`` is a small HTTP/1.1 keep-alive server (stdlib ``http.server``) that accepts
``POST /api/v1/event`` exactly as the real API documents it, checks every body with
:func:`overcentric_logging.schema.validate_payload`, answers ``200 {"ok": true}`` or
``400 {"ok": false, "errors": [...]}``, keeps every received event in memory and prints a
one-line summary of each (or the JSON, with ``json_output=True``). ``serve_main()`` is the
``python -m overcentric_logging serve`` command: point ``OVERCENTRIC_ENDPOINT`` at the URL it
prints and watch your application's events arrive. It binds to 127.0.0.1 unless told otherwise
and is not meant to face a network.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, TextIO
from urllib.parse import urlsplit

from .schema import validate_payload

__all__ = ["EVENT_PATH", "ReceivedEvent", "Receiver", "serve_main"]

EVENT_PATH = "/api/v1/event"
DEFAULT_PORT = 8787

# Real events are a few KiB (the library caps them at 64 KiB); anything far larger is a mistake,
# and reading it whole into memory would only hurt the developer's machine.
_MAX_BODY_BYTES = 8 * 1024 * 1024
_MAX_PROPERTIES_CHARS = 400
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class _BodyError(Exception):
    """The request body could not be read; carries the status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ReceivedEvent:
    """One request to the event path, with the receiver's verdict on it."""

    body: Any
    """The decoded JSON body (a dict for anything resembling an event), ``None`` if unreadable."""
    ok: bool
    status: int
    errors: list[str] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Joining handler threads on close would wait for idle keep-alive clients.
    block_on_close = False
    # The library sends with up to dozens of connections at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.receiver = receiver
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        """Cut every open keep-alive connection, so no handler thread outlives the server."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "overcentric-logging-receiver"
    # An idle keep-alive connection is dropped after this long, as real servers do.
    timeout = 75
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)
        if self.server.receiver._closed:
            # Accepted in the instant before stop(): close_connections() did not see it.
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        # The receiver prints its own per-event lines; access logs on stderr would drown them.
        return

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise _BodyError(400, f"body: invalid Content-Length {raw_length!r}") from None
        if length < 0:
            raise _BodyError(400, f"body: invalid Content-Length {raw_length!r}")
        if length > _MAX_BODY_BYTES:
            raise _BodyError(413, f"body: {length} bytes is more than this receiver accepts")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(400, "body: malformed chunked encoding") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > _MAX_BODY_BYTES:
                raise _BodyError(413, "body: more than this receiver accepts")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send_json(self, status: int, payload: dict[str, Any],
                   headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except _BodyError as exc:
            # The rest of the body is still on the wire: the connection cannot be reused.
            self.close_connection = True
            self._send_json(exc.status, {"ok": False, "errors": [str(exc)]})
            return
        path = urlsplit(self.path).path
        if path != EVENT_PATH:
            self._send_json(404, {"ok": False, "errors": [f"no such endpoint: {path}"]})
            return
        if self.command != "POST":
            self._send_json(
                405,
                {"ok": False, "errors": [f"{self.command} not allowed; use POST"]},
                {"Allow": "POST"},
            )
            return
        self.server.receiver._handle_event(self, body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


def _decode(content_type: str, body: bytes) -> tuple[int, Any, list[str]]:
    """Turn a raw request into (status, decoded body, problems)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        return 415, None, [
            f"Content-Type must be application/json (got {content_type or 'none'!r})"
        ]
    try:
        decoded = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return 400, None, [f"body: not valid JSON ({exc})"]
    problems = validate_payload(decoded)
    return (400 if problems else 200), decoded, problems


def _summary_line(record: ReceivedEvent) -> str:
    """One readable line per event: verdict, name, user, properties, and what is wrong."""
    verdict = "OK" if record.ok else f"REJECTED {record.status}"
    body = record.body
    if not isinstance(body, dict):
        return f"{verdict}  <no event>  errors: {'; '.join(record.errors)}"
    event = body.get("event")
    event = event if isinstance(event, dict) else {}
    identity = body.get("identity")
    identity = identity if isinstance(identity, dict) else {}
    name = event.get("name")
    user = identity.get("unique_identifier")
    properties = event.get("properties", {})
    props_text = json.dumps(properties, ensure_ascii=False, sort_keys=True, default=repr)
    if len(props_text) > _MAX_PROPERTIES_CHARS:
        props_text = props_text[: _MAX_PROPERTIES_CHARS - 3] + "..."
    line = (
        f"{verdict}  {name if isinstance(name, str) and name else '<no name>'}"
        f"  user={user if isinstance(user, str) and user else '-'}"
        f"  properties={props_text}"
    )
    if record.errors:
        line += f"  errors: {'; '.join(record.errors)}"
    return line


class Receiver:
    """A local HTTP server that accepts, validates, keeps and prints Overcentric events.

    Use it in a ``with`` block (or ``start()``/``stop()``) from tests and demos, or
    ``serve_forever()`` from the command line. ``port=0`` picks a free port; ``url`` gives the
    endpoint to configure. Printing goes to ``stream`` (default: ``sys.stdout`` at the time of
    each event) unless ``quiet``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        quiet: bool = False,
        json_output: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self._quiet = quiet
        self._json_output = json_output
        self._stream = stream
        self._records: list[ReceivedEvent] = []
        self._changed = threading.Condition()
        self._print_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._server = _Server((host, port), self)
        self._host = host
        self._port: int = self._server.server_address[1]

    @property
    def port(self) -> int:
        """The TCP port the receiver listens on."""
        return self._port

    @property
    def url(self) -> str:
        """The endpoint URL to configure (``OVERCENTRIC_ENDPOINT``)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}{EVENT_PATH}"

    @property
    def records(self) -> list[ReceivedEvent]:
        """Every request to the event path so far, with its verdict (a copy)."""
        with self._changed:
            return list(self._records)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The decoded bodies received so far, valid or not (a copy; see ``records``)."""
        with self._changed:
            return [r.body for r in self._records if isinstance(r.body, dict)]

    def clear(self) -> None:
        """Forget the events received so far."""
        with self._changed:
            self._records.clear()

    def start(self) -> Receiver:
        """Serve in a daemon thread and return ``self``."""
        if self._closed:
            raise RuntimeError("this Receiver has been stopped; create a new one")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"overcentric-receiver-{self._port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the port and every open connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5.0)
            self._thread = None
        self._server.server_close()
        self._server.close_connections()

    def serve_forever(self) -> None:
        """Serve in the calling thread until Ctrl-C (or ``stop()`` from another thread)."""
        if self._closed:
            raise RuntimeError("this Receiver has been stopped; create a new one")
        try:
            self._server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self._closed = True
            self._server.server_close()
            self._server.close_connections()

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` requests reached the event path; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._records) >= count, timeout)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _handle_event(self, handler: _Handler, body: bytes) -> None:
        status, decoded, errors = _decode(handler.headers.get("Content-Type", ""), body)
        record = ReceivedEvent(body=decoded, ok=status == 200, status=status, errors=errors)
        self._print(record)
        # Kept and announced before answering, so a client that got its response can rely on
        # the event being visible in ``events``.
        with self._changed:
            self._records.append(record)
            self._changed.notify_all()
        if record.ok:
            handler._send_json(200, {"ok": True})
        else:
            handler._send_json(status, {"ok": False, "errors": errors})

    def _print(self, record: ReceivedEvent) -> None:
        if self._quiet:
            return
        if self._json_output:
            line = json.dumps(
                {"ok": record.ok, "status": record.status, "errors": record.errors,
                 "body": record.body},
                ensure_ascii=False,
                default=repr,
            )
        else:
            line = _summary_line(record)
        stream = self._stream if self._stream is not None else sys.stdout
        with self._print_lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError, UnicodeError):
                # A closed pipe or an odd terminal must not turn into a 500 for the sender.
                pass


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_main(argv: list[str] | None = None) -> int:
    """Command line entry point of ``python -m overcentric_logging serve``."""
    parser = argparse.ArgumentParser(
        prog="python -m overcentric_logging serve",
        description=(
            "Run a local Overcentric event receiver that validates and prints every event "
            "it receives (for demos and development)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on; 0 picks a free one (default: {DEFAULT_PORT})")
    parser.add_argument("--json", action="store_true", dest="json_output",
                        help="print each event as one JSON object per line")
    parser.add_argument("--quiet", action="store_true",
                        help="print nothing per event (only the startup line and a summary)")
    args = parser.parse_args(argv)

    try:
        receiver = Receiver(args.host, args.port, quiet=args.quiet, json_output=args.json_output)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
              " (try another --port, or --port 0)", file=sys.stderr)
        return 1
    if args.host not in _LOOPBACK_HOSTS:
        print(f"warning: listening on {args.host}: this development receiver is reachable "
              "from other machines", file=sys.stderr)
    print(f"Listening on {receiver.url} — set OVERCENTRIC_ENDPOINT to that URL", flush=True)
    # A container or process manager stops us with SIGTERM: end as cleanly as on Ctrl-C.
    # SIGINT is installed explicitly too: a process started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt.
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _interrupt)
    try:
        receiver.serve_forever()
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)
    records = receiver.records
    rejected = sum(1 for r in records if not r.ok)
    print(f"Received {len(records)} event(s), {rejected} rejected.", flush=True)
    return 0

"""Loopback HTTP/1.1 keep-alive sink that counts what the benchmarked systems deliver.

The server runs in its own process (so it never competes with a client for the client's GIL)
on an asyncio loop: one coroutine per connection, keep-alive, an optional per-request latency
(``asyncio.sleep``, so 64+ connections at 20 ms cost it almost nothing) and a "down" mode that
closes the listening socket and every open connection (clients then see connection refused).
It answers each peer what that peer expects and counts *events*, not only requests: one per
Overcentric ``POST /api/v1/event``, the length of PostHog's and Segment's ``batch`` arrays,
the log records inside OTLP protobuf/JSON bodies and the items of Better Stack's msgpack
arrays. An event counts as delivered when its response is written. A second listener, the
control port, serves ``/stats``, ``/reset``, ``/config``, ``/down``, ``/up`` and ``/wait`` as
small JSON requests; :class:`ServerControl` is the client for it and :func:`start_server`
starts the process. Everything binds to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.client
import json
import os
import select
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"

OVERCENTRIC_PATH = "/api/v1/event"
POSTHOG_PATH = "/batch/"
SEGMENT_PATH = "/v1/batch"
OTLP_LOGS_PATH = "/v1/logs"
LOGTAIL_PATH = "/logtail"
STDLIB_PATH = "/log"
BASELINE_PATH = "/baseline"

_JSON = b"application/json"


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _count_otlp(body: bytes, content_type: str) -> int:
    if "json" in content_type:
        doc = json.loads(body)
        return sum(
            len(scope.get("logRecords", ()))
            for res in doc.get("resourceLogs", ())
            for scope in res.get("scopeLogs", ())
        )
    # Imported lazily: the server must still start when the OTel extra is not installed.
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )

    req = ExportLogsServiceRequest()
    req.ParseFromString(body)
    return sum(len(s.log_records) for r in req.resource_logs for s in r.scope_logs)


def count_events(path: str, headers: dict[str, str], body: bytes) -> tuple[int, bool]:
    """Return (events in this request body, whether the body was well formed)."""
    body = _decompress(body, headers.get("content-encoding", ""))
    if path.startswith(OVERCENTRIC_PATH):
        doc = json.loads(body)
        ok = isinstance(doc, dict) and isinstance(doc.get("event"), dict)
        return 1, ok
    if path.startswith(POSTHOG_PATH) or path.startswith(SEGMENT_PATH):
        return len(json.loads(body)["batch"]), True
    if path.startswith(OTLP_LOGS_PATH):
        return _count_otlp(body, headers.get("content-type", "")), True
    if path.startswith(LOGTAIL_PATH):
        import msgpack  # type: ignore[import-untyped]

        items = msgpack.unpackb(body, raw=False)
        return (len(items) if isinstance(items, list) else 1), True
    return 1, True


def _response_for(path: str) -> tuple[int, bytes, bytes]:
    """Status, content type and body that the peer posting to ``path`` expects."""
    if path.startswith(OTLP_LOGS_PATH):
        # An empty protobuf message is a valid ExportLogsServiceResponse.
        return 200, b"application/x-protobuf", b""
    if path.startswith(LOGTAIL_PATH):
        return 202, _JSON, b"{}"
    return 200, _JSON, b"{}"


_REASONS = {200: b"OK", 202: b"Accepted", 400: b"Bad Request", 404: b"Not Found"}


class _Sink:
    """State of the server process: counters, latency, listeners and open connections."""

    def __init__(self, port: int, control_port: int) -> None:
        self.port = port
        self.control_port = control_port
        self.latency = 0.0
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.changed = asyncio.Condition()
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.events = 0
        self.bad = 0
        self.connections_total = 0
        self.max_open = len(self.writers)
        self.inflight = 0
        self.max_inflight = 0
        self.by_path: dict[str, list[int]] = {}
        self.first_ts: float | None = None
        self.last_ts: float | None = None

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "events": self.events,
            "bad": self.bad,
            "connections_total": self.connections_total,
            "open_connections": len(self.writers),
            "max_open_connections": self.max_open,
            "max_inflight": self.max_inflight,
            "by_path": self.by_path,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "latency_ms": self.latency * 1000.0,
            "up": self.server is not None,
            "now": time.monotonic(),
        }

    async def up(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(
                self.serve_data, HOST, self.port, backlog=1024, reuse_address=True
            )

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            w.transport.abort()

    async def serve_data(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        self.connections_total += 1
        self.max_open = max(self.max_open, len(self.writers))
        try:
            await self._serve(reader, writer, self._handle_data)
        finally:
            self.writers.discard(writer)

    async def serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._serve(reader, writer, self._handle_control)

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handle: Callable[[str, str, dict[str, str], bytes], Any],
    ) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) < 3:
                    return
                method, target, version = parts[0], parts[1], parts[2]
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    key, sep, value = line.partition(":")
                    if sep:
                        headers[key.strip().lower()] = value.strip()
                body = await self._read_body(reader, headers)
                status, ctype, payload = await handle(method, target, headers, body)
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                out = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
                    status,
                    _REASONS.get(status, b"OK"),
                    ctype,
                    len(payload),
                    b"Connection: close\r\n" if close else b"",
                )
                writer.write(out + payload)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return b"".join(chunks)
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
        length = int(headers.get("content-length", "0") or 0)
        return await reader.readexactly(length) if length else b""

    async def _handle_data(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, bytes]:
        path = urlsplit(target).path
        try:
            n, ok = count_events(path, headers, body) if method == "POST" else (0, True)
        except Exception:
            n, ok = 1, False
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        if self.latency:
            try:
                await asyncio.sleep(self.latency)
            finally:
                self.inflight -= 1
        else:
            self.inflight -= 1
        now = time.monotonic()
        self.requests += 1
        self.events += n
        if not ok:
            self.bad += 1
        slot = self.by_path.setdefault(path, [0, 0])
        slot[0] += 1
        slot[1] += n
        if self.first_ts is None:
            self.first_ts = now
        self.last_ts = now
        async with self.changed:
            self.changed.notify_all()
        return _response_for(path)

    async def _handle_control(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, bytes]:
        url = urlsplit(target)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/reset":
            self.reset()
        elif url.path == "/config":
            self.latency = float(q.get("latency_ms", "0")) / 1000.0
        elif url.path == "/down":
            await self.down()
        elif url.path == "/up":
            await self.up()
        elif url.path == "/wait":
            await self._wait(
                int(q.get("events", "0")), float(q.get("timeout", "30")), float(q.get("quiet", "0"))
            )
        elif url.path != "/stats":
            return 404, _JSON, b"{}"
        return 200, _JSON, json.dumps(self.stats()).encode()

    async def _wait(self, events: int, timeout: float, quiet: float) -> None:
        """Return once ``events`` were counted, after ``timeout``, or after ``quiet`` s idle."""
        deadline = time.monotonic() + timeout
        async with self.changed:
            while self.events < events:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                step = min(left, quiet) if quiet > 0 else left
                before = self.events
                try:
                    await asyncio.wait_for(self.changed.wait(), step)
                except asyncio.TimeoutError:
                    if quiet > 0 and self.events == before:
                        return


async def _amain(port: int, control_port: int, ready: Callable[[int, int], None]) -> None:
    sink = _Sink(port, control_port)
    await sink.up()
    assert isinstance(sink.server, asyncio.Server)
    sink.port = sink.server.sockets[0].getsockname()[1]
    control = await asyncio.start_server(sink.serve_control, HOST, control_port)
    ready(sink.port, control.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


class ServerControl:
    """Client of the control port; usable from any process."""

    def __init__(self, control_port: int, data_port: int) -> None:
        self.control_port = control_port
        self.data_port = data_port
        self.base_url = f"http://{HOST}:{data_port}"

    def _call(self, path: str, timeout: float = 30.0) -> dict[str, Any]:
        conn = http.client.HTTPConnection(HOST, self.control_port, timeout=timeout + 10.0)
        try:
            conn.request("POST", path, body=b"")
            resp = conn.getresponse()
            data: dict[str, Any] = json.loads(resp.read())
            return data
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        return self._call("/stats")

    def reset(self) -> dict[str, Any]:
        return self._call("/reset")

    def config(self, latency_ms: float) -> dict[str, Any]:
        return self._call(f"/config?latency_ms={latency_ms}")

    def down(self) -> dict[str, Any]:
        return self._call("/down")

    def up(self) -> dict[str, Any]:
        return self._call("/up")

    def wait(self, events: int, timeout: float, quiet: float = 0.0) -> dict[str, Any]:
        """Block until the server counted ``events`` (or timeout / ``quiet`` idle seconds)."""
        return self._call(f"/wait?events={events}&timeout={timeout}&quiet={quiet}", timeout)


class ServerProcess:
    """The sink running as a child process (``python bench/server.py``); ``control`` talks to it."""

    def __init__(self, port: int = 0, control_port: int = 0) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--port",
                str(port),
                "--control-port",
                str(control_port),
                "--json",
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30.0)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError("benchmark server did not start within 30 s")
        ports = json.loads(line)
        self.control = ServerControl(ports["control_port"], ports["port"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10.0)


def start_server() -> ServerProcess:
    return ServerProcess()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the ports as one JSON line")
    args = parser.parse_args()

    def ready(p: int, c: int) -> None:
        if args.json:
            print(json.dumps({"port": p, "control_port": c}), flush=True)
        else:
            print(f"data http://{HOST}:{p}  control http://{HOST}:{c}", flush=True)

    try:
        asyncio.run(_amain(args.port, args.control_port, ready))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

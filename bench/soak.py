"""Soak: 30 minutes' worth of mixed traffic compressed into a few minutes, against a loopback
server that fails 20% of requests and is restarted twice. Not part of the test suite.

    python bench/soak.py [--duration 180] [--rate 300] [--out bench/soak-results.md]

The event server runs in its own process (``--serve``, asyncio, 127.0.0.1 only) so that it
never shares the client's GIL, RSS or thread count. It answers 80% of requests with 200 and
the rest with 500 / 503 / 429 (``Retry-After: 1``) or a dropped connection, and records the
``seq`` of every event it accepted; a restart stops it (SIGTERM: it writes what it accepted to
a file) and starts a new one on the same port a couple of seconds later.

The client process sends a mix through one shared ``Client``: stdlib records through an
``OvercentricHandler`` (with many ordinary, non-event log lines), structlog events through an
``OvercentricProcessor`` when structlog is installed, direct ``Client.track`` calls, bound
context, exceptions and properties of varied size. Every second it samples RSS and the thread
count; at the end it reports the least-squares slope of both (after a warm-up), the client's
stats, and compares the server's accepted ``seq`` set with what was tracked: nothing may be
lost, and an event accepted twice (the server wrote a 200 the client never read) is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


# -- the failing server (child process) ---------------------------------------------------


async def _serve(port: int, dump: str, fail_rate: float) -> None:
    accepted: list[int] = []
    requests = 0
    rng = random.Random(port)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                length = 0
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                requests += 1
                roll = rng.random()
                if roll < fail_rate:
                    kind = roll / fail_rate
                    # No 429 here: a 429 pauses the whole sender (by design), so a server
                    # answering one every few requests throttles it to a crawl.
                    if kind < 0.1:
                        writer.transport.abort()  # connection dropped, no response
                        return
                    if kind < 0.3:
                        code, extra = 503, b"Retry-After: 0\r\n"
                    elif kind < 0.5:
                        code, extra = 502, b""
                    else:
                        code, extra = 500, b""
                    writer.write(b"HTTP/1.1 %d Err\r\n%sContent-Length: 0\r\n\r\n" % (code, extra))
                    await writer.drain()
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
                try:
                    seq = json.loads(body)["event"]["properties"]["seq"]
                except (ValueError, KeyError, TypeError):
                    seq = -1
                accepted.append(seq)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    Path(dump).write_text(json.dumps({"accepted": accepted, "requests": requests}))


class FailingServer:
    """Controls the server process; the port survives restarts."""

    def __init__(self, fail_rate: float, workdir: str) -> None:
        self.fail_rate = fail_rate
        self.workdir = workdir
        import socket

        with socket.socket() as sock:
            sock.bind((HOST, 0))
            self.port = sock.getsockname()[1]
        self.runs = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/api/v1/event"

    def start(self) -> None:
        self.runs += 1
        dump = os.path.join(self.workdir, f"run{self.runs}.json")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.port), "--dump", dump,
             "--fail-rate", str(self.fail_rate)],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None

    def results(self) -> tuple[list[int], int]:
        accepted: list[int] = []
        requests = 0
        for n in range(1, self.runs + 1):
            data = json.loads(Path(self.workdir, f"run{n}.json").read_text())
            accepted.extend(data["accepted"])
            requests += data["requests"]
        return accepted, requests


# -- the client side ----------------------------------------------------------------------


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx if sxx else 0.0


def soak(duration: float, rate: float, fail_rate: float, out: Path) -> int:
    import overcentric_logging
    from overcentric_logging import Client, OvercentricHandler, OvercentricProcessor

    workdir = tempfile.mkdtemp(prefix="oc-soak-")
    server = FailingServer(fail_rate, workdir)
    server.start()
    errors: Counter[str] = Counter()

    def on_error(payload: Any, error: BaseException) -> None:
        errors[f"{type(error).__name__}: {str(error)[:100]}"] += 1

    # The library's default retry policy (backoff 0.5 s doubling to 30 s, 8 retries): a much
    # faster backoff burns its attempts inside a 2-s outage and then loses events to the 20%.
    client = Client(project_id="proj_soak", endpoint=server.url, timeout=5.0,
                    max_queue_size=100_000, on_error=on_error)
    handler = OvercentricHandler(client=client)
    app = logging.getLogger("soak.app")
    app.setLevel(logging.DEBUG)
    app.propagate = False
    app.addHandler(handler)
    structlog_log: Any = None
    try:
        import structlog

        structlog.configure(
            processors=[OvercentricProcessor(client=client, drop=True)],
            logger_factory=structlog.ReturnLoggerFactory(),
        )
        structlog_log = structlog.get_logger()
    except ImportError:
        pass

    counter = iter(range(10**9))
    counter_lock = threading.Lock()
    stop = threading.Event()
    app_threads = 4

    def next_seq() -> int:
        with counter_lock:
            return next(counter)

    def traffic(t: int) -> None:
        rng = random.Random(t)
        per_thread = rate / app_threads
        start = time.monotonic()
        sent = 0
        while not stop.is_set():
            # Pace: the event rate, with ~5 ordinary log lines per event (never sent).
            due = start + sent / per_thread
            now = time.monotonic()
            if due > now:
                stop.wait(due - now)
                continue
            sent += 1
            for _ in range(5):
                app.debug("ordinary line %s from %s", sent, t)
            seq = next_seq()
            kind = rng.random()
            user = f"user_{rng.randrange(5000)}"
            props = {"seq": seq, "plan": rng.choice(["free", "pro", "team"]),
                     "blob": "x" * rng.choice([0, 10, 200, 2000])}
            if kind < 0.5:
                with overcentric_logging.bound(session_id=f"s{t}-{sent // 50}"):
                    app.info("$login", extra={"user_id": user, **props})
            elif kind < 0.6:
                try:
                    raise ValueError("payment declined")
                except ValueError:
                    app.exception("payment_failed", extra={"event_name": "payment_failed",
                                                            "user_id": user, **props})
            elif kind < 0.8 and structlog_log is not None:
                structlog_log.info("$subscription_purchase", user_id=user, price=9.99,
                                   **props)
            else:
                client.track("document_created", props, user_id=user,
                             device_id=f"d{rng.randrange(100)}")

    samples: list[tuple[float, int, int]] = []
    began = time.monotonic()
    threads = [threading.Thread(target=traffic, args=(t,), name=f"app-{t}") for t in range(4)]
    for th in threads:
        th.start()
    restarts_at = {duration / 3, 2 * duration / 3}
    restarted = 0
    while (elapsed := time.monotonic() - began) < duration:
        samples.append((elapsed, _rss_bytes(), threading.active_count()))
        for at in sorted(restarts_at):
            if elapsed >= at:
                restarts_at.discard(at)
                server.stop()
                time.sleep(2.0)  # down for two seconds: connection refused meanwhile
                server.start()
                restarted += 1
        time.sleep(1.0)
    stop.set()
    for th in threads:
        th.join(30)
    drain_started = time.monotonic()
    flushed = client.flush(180)
    drain = time.monotonic() - drain_started
    stats = client.stats()
    samples.append((time.monotonic() - began, _rss_bytes(), threading.active_count()))
    server.stop()
    accepted, requests = server.results()
    tracked_seqs = next_seq()  # seqs 0..tracked_seqs-1 were handed out
    unique = set(accepted)
    missing = tracked_seqs - len(unique & set(range(tracked_seqs)))
    duplicates = len(accepted) - len(unique)

    warm = [s for s in samples if s[0] >= duration * 0.1]
    rss_slope = _slope([(t / 60, rss / 2**20) for t, rss, _ in warm])
    thr_slope = _slope([(t / 60, float(n)) for t, _, n in warm])
    rss_values = [rss / 2**20 for _, rss, _ in warm]
    thr_values = [n for _, _, n in warm]
    invariant = stats["tracked"] == stats["sent"] + stats["failed"] + stats["dropped"] + \
        stats["pending"]
    ok = flushed and missing == 0 and invariant and stats["failed"] == 0 and \
        stats["dropped"] == 0

    lines = [
        "## Soak (bench/soak.py)",
        "",
        f"Ran {duration:.0f} s of mixed traffic at ~{rate:.0f} events/s (plus ~5 ordinary log "
        f"lines per event, never sent), about {tracked_seqs / 30 / 60:.0f} events/s over 30 "
        f"minutes compressed {1800 / duration:.0f}x; one shared Client behind a stdlib handler, "
        f"{'a structlog processor, ' if structlog_log is not None else ''}and direct track(). "
        f"The loopback server failed {fail_rate:.0%} of requests (500/502/503 with "
        f"Retry-After: 0/dropped connection) and was restarted {restarted} times (down ~2 s "
        f"each). Python {sys.version.split()[0]}, 2 cores.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| events tracked | {stats['tracked']} |",
        f"| sent / failed / dropped / pending | {stats['sent']} / {stats['failed']} / "
        f"{stats['dropped']} / {stats['pending']} |",
        f"| retries | {stats['retries']} |",
        f"| requests the server saw | {requests} |",
        f"| distinct events the server accepted | {len(unique)} |",
        f"| events never accepted (lost) | {missing} |",
        f"| accepted twice (200 written, not read by the client: at-least-once) | "
        f"{duplicates} |",
        f"| final flush | {'ok' if flushed else 'TIMED OUT'} in {drain:.1f} s |",
        f"| RSS after warm-up: min / max / last (MiB) | {min(rss_values):.1f} / "
        f"{max(rss_values):.1f} / {rss_values[-1]:.1f} |",
        f"| RSS slope (least squares, after warm-up) | {rss_slope:+.3f} MiB/min |",
        f"| threads: min / max / last | {min(thr_values)} / {max(thr_values)} / "
        f"{thr_values[-1]} |",
        f"| thread-count slope | {thr_slope:+.3f} threads/min |",
        f"| samples | {len(samples)} (1 per second) |",
        f"| errors reported through on_error | {dict(errors.most_common(5)) or 'none'} |",
        f"| verdict | {'PASS' if ok else 'FAIL'}: tracked == sent + failed + dropped + pending "
        f"is {invariant}; nothing lost: {missing == 0} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out.write_text(text)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0)
    parser.add_argument("--rate", type=float, default=300.0, help="events per second")
    parser.add_argument("--fail-rate", type=float, default=0.2)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).with_name("soak-results.md"))
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(_serve(args.serve, args.dump, args.fail_rate))
        return 0
    return soak(args.duration, args.rate, args.fail_rate, args.out)


if __name__ == "__main__":
    sys.exit(main())

"""Kill tests for the durable spool: SIGKILL at random points loses no event.

A child process logs events into a spool and is SIGKILLed while logging (server down), while
sending (server up but slow) or while its events wait in a retry backoff (server down); then a
new process opens the same spool with the server up and must deliver every event whose logging
call had returned. Duplicates (possible only when a kill falls between the server's 2xx and
the row's DELETE) are counted and printed. The last test runs three real gunicorn workers on
one spool and SIGKILLs one of them mid-traffic. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from loopback import LoopbackServer, delay, status

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(
    not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")]

N = 200
SEED = int(os.environ.get("SPOOL_KILL_SEED", "0")) or random.randrange(1, 10**6)

CHILD = textwrap.dedent("""
    import sys, time, overcentric_logging
    spool, url, n, backoff = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    client = overcentric_logging.Client(
        "proj_kill", endpoint=url, spool_path=spool, timeout=0.5, backoff_base=backoff,
        backoff_max=backoff, shutdown_timeout=0.2)
    for i in range(n):
        client.track("$subscription_purchase", {"seq": i, "plan": "premium"}, user_id="u_1")
        print(i, flush=True)  # printed only once the call has returned
    print("logged", flush=True)
    deadline = time.monotonic() + 60
    while client.stats()["retries"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    print("backoff", flush=True)
    time.sleep(60)  # until killed
""")

RECOVER = textwrap.dedent("""
    import json, sys, overcentric_logging
    client = overcentric_logging.Client(
        "proj_kill", endpoint=sys.argv[2], spool_path=sys.argv[1], timeout=2.0,
        backoff_base=0.01, backoff_max=0.1)
    ok = client.flush(40)
    print(json.dumps({"flushed": ok, "stats": client.stats()}), flush=True)
""")


class _Child:
    """A child process whose stdout lines are read without buffering surprises."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     bufsize=0)
        self.lines: list[str] = []
        self._partial = b""

    def _read(self, timeout: float) -> bool:
        """Read what is there (waiting up to ``timeout``); False at end of output."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if not ready:
            return True
        data = os.read(fd, 65536)
        if not data:
            return False
        *complete, self._partial = (self._partial + data).split(b"\n")
        self.lines.extend(x.decode().strip() for x in complete)
        return True

    def wait_for(self, stop: Any, timeout: float) -> None:
        """Read lines until ``stop(lines)`` is true; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not stop(self.lines):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"child did not get there in {timeout}s: "
                                     f"{self.lines[-3:]}")
            if not self._read(left):
                raise AssertionError(f"child exited early: {self.proc.wait()} "
                                     f"{self.lines[-3:]}")

    def kill(self) -> set[int]:
        """SIGKILL; the seqs whose logging call returned (every number the child printed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        while self._read(0.0):
            assert self.proc.stdout is not None
            if not select.select([self.proc.stdout.fileno()], [], [], 0)[0]:
                break
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        assert self.proc.returncode == -signal.SIGKILL, self.proc.returncode
        return {int(x) for x in self.lines if x.isdigit()}


def _child(spool: str, url: str, backoff: float) -> _Child:
    return _Child([sys.executable, "-c", CHILD, spool, url, str(N), str(backoff)])


def _recover(spool: str, url: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", RECOVER, spool, url],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _delivered(server: LoopbackServer) -> collections.Counter[int]:
    assert server.schema_errors() == []
    return collections.Counter(b["event"]["properties"]["seq"] for b in server.events)


def _report(name: str, logged: set[int], counts: collections.Counter[int]) -> None:
    dups = sum(c - 1 for c in counts.values() if c > 1)
    print(f"\n[spool-kill seed={SEED}] {name}: logged={len(logged)} "
          f"delivered={len(set(counts) & logged)} lost={len(logged - set(counts))} "
          f"duplicates={dups}")


@pytest.mark.parametrize("round_", range(2))
def test_kill_while_logging(tmp_path: Any, server: LoopbackServer, refused_url: str,
                            round_: int) -> None:
    rng = random.Random(SEED * 10 + round_)
    spool = str(tmp_path / "spool.db")
    point = rng.randrange(1, N)
    child = _child(spool, refused_url, 0.05)
    try:
        child.wait_for(lambda ls: len(ls) >= point, 30)
    finally:
        logged = child.kill()
    assert len(logged) >= point
    result = _recover(spool, server.url)
    counts = _delivered(server)
    _report(f"kill while logging at {point}", logged, counts)
    assert result["flushed"] is True
    assert logged <= set(counts), sorted(logged - set(counts))[:10]
    assert max(counts.values()) == 1  # nothing was sent before the kill: no duplicates


@pytest.mark.parametrize("round_", range(2))
def test_kill_while_sending(tmp_path: Any, round_: int) -> None:
    rng = random.Random(SEED * 10 + 5 + round_)
    spool = str(tmp_path / "spool.db")
    server = LoopbackServer(default=delay(0.02)).start()
    try:
        child = _child(spool, server.url, 0.05)
        point = rng.randrange(1, N // 2)
        try:
            child.wait_for(lambda ls: "logged" in ls, 30)
            assert server.wait_for_requests(point, 30)
        finally:
            logged = child.kill()
        assert logged == set(range(N))
        sent_before = len(server.events)
        server.default = status(200)
        result = _recover(spool, server.url)
        counts = _delivered(server)
        _report(f"kill while sending after {point} requests ({sent_before} answered 2xx)",
                logged, counts)
        assert result["flushed"] is True
        assert logged <= set(counts), sorted(logged - set(counts))[:10]
        # A duplicate needs the kill between a 2xx and its DELETE: at most one per request
        # in flight at the kill.
        assert sum(c - 1 for c in counts.values()) <= 32
    finally:
        server.stop()


@pytest.mark.parametrize("round_", range(2))
def test_kill_during_retry_backoff(tmp_path: Any, server: LoopbackServer, refused_url: str,
                                   round_: int) -> None:
    rng = random.Random(SEED * 10 + 8 + round_)
    spool = str(tmp_path / "spool.db")
    child = _child(spool, refused_url, 30.0)  # long backoff: the events wait in it
    try:
        child.wait_for(lambda ls: "backoff" in ls, 30)
        time.sleep(rng.random() * 0.3)  # a random point inside the backoff
    finally:
        logged = child.kill()
    assert logged == set(range(N))
    result = _recover(spool, server.url)  # must not wait out the dead process's backoff
    counts = _delivered(server)
    _report("kill during retry backoff", logged, counts)
    assert result["flushed"] is True
    assert logged <= set(counts)
    assert max(counts.values()) == 1


# -- three gunicorn workers sharing one spool ----------------------------------------------

APP = textwrap.dedent("""
    import os
    import overcentric_logging

    client = overcentric_logging.Client(
        "proj_gunicorn", timeout=1.0, backoff_base=0.01, backoff_max=0.2, shutdown_timeout=2.0)

    def app(environ, start_response):
        seq = int(environ["QUERY_STRING"].partition("=")[2])
        client.track("$signup", {"seq": seq}, user_id=f"u_{seq}")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, seq: int) -> int | None:
    """One request; the worker's pid on 200, None when the request failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/?seq={seq}")
        resp = conn.getresponse()
        body = resp.read()
        return int(body) if resp.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def test_gunicorn_workers_share_a_spool_and_survive_a_kill(tmp_path: Any) -> None:
    pytest.importorskip("gunicorn")
    (tmp_path / "spool_app.py").write_text(APP)
    spool = str(tmp_path / "shared.spool")
    server = LoopbackServer(default=delay(0.01)).start()
    port = _free_port()
    env = {**os.environ, "OVERCENTRIC_ENDPOINT": server.url, "OVERCENTRIC_SPOOL_PATH": spool,
           "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    guni = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "3", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "5", "--log-level", "warning", "spool_app:app"],
        cwd=str(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while _get(port, -1) is None:
            assert guni.poll() is None, guni.stderr.read().decode() if guni.stderr else ""
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        accepted = {-1}
        pids: set[int] = set()
        killed: int | None = None
        total = 300
        for seq in range(total):
            pid = _get(port, seq)
            if pid is not None:
                accepted.add(seq)
                pids.add(pid)
            if seq == total // 2:
                # Kill a worker that has handled traffic, while events are still in flight.
                killed = sorted(pids)[0]
                os.kill(killed, signal.SIGKILL)
        assert killed is not None and len(pids) >= 2
        assert len(accepted) >= total * 0.9
        # Every accepted event arrives: the survivors (and the respawned worker) take over
        # the killed worker's rows once its claims are released.
        deadline = time.monotonic() + 45
        while not accepted <= set(_delivered(server)):
            assert time.monotonic() < deadline, sorted(accepted - set(_delivered(server)))[:20]
            server.wait_for_events(len(server.events) + 1, 0.5)
        counts = _delivered(server)
        _report(f"gunicorn x3, worker {killed} SIGKILLed", accepted, counts)
        assert accepted <= set(counts)
    finally:
        guni.send_signal(signal.SIGTERM)
        try:
            guni.wait(20)
        except subprocess.TimeoutExpired:
            guni.kill()
            guni.wait(10)
        if guni.stderr is not None:
            guni.stderr.close()
        server.stop()

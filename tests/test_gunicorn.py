"""A real gunicorn (SPEC §5, fork safety): three workers, with and without ``--preload``, sync
and gevent worker classes, serving a tiny WSGI app on 127.0.0.1 that logs one event per request
with the ``seq`` from its query string. After a graceful stop (SIGTERM to the master), every
event has been delivered exactly once, by the worker process that logged it.

The event server answers slowly, so the last events are still in flight when the workers are
told to stop: the workers' exit flush delivers them.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback import LoopbackServer, delay
from proc_helpers import free_port, received_seqs

pytest.importorskip("gunicorn")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="gunicorn needs fork"),
]

REQUESTS = 120
CLIENTS = 6
WATCHDOG = 60.0
SERVER_DELAY = 0.5

APP = textwrap.dedent(
    """
    import os
    if os.environ.get("OC_GEVENT_APP") == "1":
        from gevent import monkey
        monkey.patch_all()          # first thing, as gevent apps do

    import logging
    import time
    from urllib.parse import parse_qs

    from overcentric_logging import OvercentricHandler

    handler = OvercentricHandler(project_id="proj_test", endpoint=os.environ["OC_URL"],
                                 backoff_base=0.01, backoff_max=0.05, timeout=10,
                                 shutdown_timeout=20)
    log = logging.getLogger("app")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.propagate = False

    def app(environ, start_response):
        seq = int(parse_qs(environ.get("QUERY_STRING", ""))["seq"][0])
        log.info("$request_served", extra={"seq": seq, "pid": os.getpid()})
        # A busy worker leaves concurrent connections to the others: the kernel's accept()
        # would otherwise be free to hand every request to one worker.
        time.sleep(0.02)
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "ocapp.py").write_text(APP)
    return tmp_path


class _Gunicorn:
    def __init__(self, app_dir: Path, server: LoopbackServer, *args: str, gevent_app: bool
                 ) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCENTRIC_")}
        env.update(OC_URL=server.url, OC_GEVENT_APP="1" if gevent_app else "0")
        self.log_path = app_dir / "gunicorn.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}",
             "--workers", "3", "--graceful-timeout", "30", "--chdir", str(app_dir), *args,
             "ocapp:app"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def get(self, seq: int) -> int:
        """One request; returns the pid of the worker that served (and logged) it."""
        deadline = time.monotonic() + WATCHDOG
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WATCHDOG)
            try:
                conn.request("GET", f"/?seq={seq}", headers={"Connection": "close"})
                resp = conn.getresponse()
                assert resp.status == 200
                return int(resp.read())
            except ConnectionError:
                # Not listening yet (gunicorn is booting): bounded by the watchdog.
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)
            finally:
                conn.close()

    def stop(self) -> int:
        self.stopped_at = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(WATCHDOG)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def run_gunicorn(app_dir: Path, server: LoopbackServer) -> Iterator[type[_Gunicorn]]:
    started: list[_Gunicorn] = []

    class Factory(_Gunicorn):
        def __init__(self, *args: str, gevent_app: bool = False) -> None:
            super().__init__(app_dir, server, *args, gevent_app=gevent_app)
            started.append(self)

    yield Factory
    for g in started:
        if g.proc.poll() is None:
            g.proc.kill()
            g.proc.wait(10)


def _drive(g: _Gunicorn) -> dict[int, int]:
    """REQUESTS requests from CLIENTS concurrent clients; seq -> pid that served it."""
    served: dict[int, int] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(offset: int) -> None:
        try:
            for seq in range(offset, REQUESTS, CLIENTS):
                pid = g.get(seq)
                with lock:
                    served[seq] = pid
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WATCHDOG * 2)
    assert not any(t.is_alive() for t in threads), "requests stuck"
    assert not errors, (errors[:3], g.output()[-3000:])
    return served


def _scenario(server: LoopbackServer, g: _Gunicorn, *, must_spread: bool = True) -> None:
    served = _drive(g)
    assert len(served) == REQUESTS
    code = g.stop()
    out = g.output()
    assert code == 0, out[-3000:]
    # The scenario's point: some events were still in flight when the workers were stopped
    # (their answer, SERVER_DELAY after arrival, came after the SIGTERM).
    assert any(r.arrived + SERVER_DELAY > g.stopped_at for r in server.requests), (
        "nothing was in flight at SIGTERM: the exit flush was not exercised"
    )
    counts, pids = received_seqs(server)
    dupes = {seq: n for seq, n in counts.items() if n > 1}
    assert not dupes, f"sent more than once: {dupes}"
    missing = sorted(set(served) - set(counts))
    assert not missing, (f"{len(missing)} events lost: {missing[:20]}", out[-3000:])
    assert set(counts) == set(served)
    wrong = {seq: (pids[seq], pid) for seq, pid in served.items() if pids[seq] != pid}
    assert not wrong, f"delivered by another process than the one that logged it: {wrong}"
    if must_spread:
        assert len(set(served.values())) >= 2, "the requests did not spread over the workers"
    assert "Traceback" not in out, out[-3000:]


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_gunicorn_sync_workers(server: LoopbackServer, run_gunicorn: type[_Gunicorn],
                               preload: bool) -> None:
    server.default = delay(SERVER_DELAY)
    g = run_gunicorn(*(["--preload"] if preload else []))
    _scenario(server, g)


@pytest.mark.parametrize(
    ("preload", "app_patches"),
    [(False, True), (True, True), (True, False)],
    ids=["no-preload", "preload", "preload-app-not-patching"],
)
def test_gunicorn_gevent_workers(server: LoopbackServer, run_gunicorn: type[_Gunicorn],
                                 preload: bool, app_patches: bool) -> None:
    """``preload-app-not-patching``: the client (and its locks) is built in the unpatched
    master; gunicorn monkey-patches each worker only after the fork."""
    pytest.importorskip("gevent")
    server.default = delay(SERVER_DELAY)
    g = run_gunicorn("--worker-class", "gevent", *(["--preload"] if preload else []),
                     gevent_app=app_patches)
    # A gevent worker accepts greedily, so one worker may serve every request: the spread
    # over workers is up to the kernel, not to the library; the rest is checked all the same.
    _scenario(server, g, must_spread=False)

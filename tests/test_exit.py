"""Exit paths (SPEC §5): what is pending when a process ends is delivered within
``shutdown_timeout``, or counted and reported on stderr; exit never hangs or raises.

Every scenario runs in a child interpreter against the test's loopback server. The server
answers slowly (``delay``) so that events really are pending when the child starts to exit.
The library's warnings propagate to the root logger, so children call ``logging.basicConfig``
to see them on stderr.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
import urllib3
from loopback import LoopbackServer, delay, hang
from proc_helpers import PREAMBLE, received_seqs, run_child, stats_line

SLOW = delay(0.2)


def _delivered_once(server: LoopbackServer, seqs: set[int]) -> None:
    counts, _ = received_seqs(server)
    assert set(counts) == seqs, (sorted(counts), sorted(seqs))
    assert max(counts.values()) == 1


def _no_traceback_from_library(stderr: str) -> None:
    assert "Exception ignored" not in stderr, stderr
    assert "overcentric_logging/" not in stderr, stderr


LOG_TEN = """
logging.basicConfig(level=logging.WARNING)
handler, log = make_handler(shutdown_timeout=10)
for i in range(10):
    log.info("$exit_event", extra={"seq": i})
report("logged", stats=handler.stats())
"""


def test_normal_exit_delivers_pending_events(server: LoopbackServer) -> None:
    server.default = SLOW
    proc = run_child(LOG_TEN, server, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (logged,) = stats_line(proc, "logged")
    assert logged["stats"]["pending"] > 0, "nothing was pending at exit: the test proves nothing"
    _delivered_once(server, set(range(10)))
    _no_traceback_from_library(proc.stderr)
    assert "not delivered" not in proc.stderr


def test_sys_exit_delivers_pending_events(server: LoopbackServer) -> None:
    server.default = SLOW
    proc = run_child(LOG_TEN + "sys.exit(3)\n", server, timeout=60)
    assert proc.returncode == 3, proc.stderr
    _delivered_once(server, set(range(10)))
    _no_traceback_from_library(proc.stderr)


def test_unhandled_exception_delivers_pending_events(server: LoopbackServer) -> None:
    server.default = SLOW
    proc = run_child(LOG_TEN + "raise RuntimeError('boom')\n", server, timeout=60)
    assert proc.returncode == 1
    assert "RuntimeError: boom" in proc.stderr
    _delivered_once(server, set(range(10)))
    _no_traceback_from_library(proc.stderr)


def test_logging_shutdown_twice_then_exit(server: LoopbackServer) -> None:
    """logging.shutdown() closes the handler (intake stops) but does not wait on the network;
    the client's own exit flush still delivers what was pending. Calling it twice is harmless."""
    server.default = SLOW
    code = LOG_TEN + """
logging.shutdown()
logging.shutdown()
log.info("$after_shutdown", extra={"seq": 99})   # the handler is closed: dropped, counted
report("after", stats=handler.stats(), reasons=handler.client.dropped_reasons)
"""
    proc = run_child(code, server, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (after,) = stats_line(proc, "after")
    assert after["stats"]["tracked"] == 11 and after["stats"]["dropped"] == 1
    assert after["reasons"] == {"closed": 1}
    _delivered_once(server, set(range(10)))
    _no_traceback_from_library(proc.stderr)


def test_closed_handler_drops_and_reports(server: LoopbackServer) -> None:
    code = """
logging.basicConfig(level=logging.WARNING)
errors = []
handler, log = make_handler(on_error=lambda payload, error: errors.append(repr(error)))
log.info("$before_close", extra={"seq": 0})
handler.client.flush(10)
handler.close()
log.info("$after_close", extra={"seq": 1})
ok = handler.client.flush(10)
report("done", stats=handler.stats(), reasons=handler.client.dropped_reasons, errors=errors,
       ok=ok)
"""
    proc = run_child(code, server, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (done,) = stats_line(proc, "done")
    assert done["stats"] == {"tracked": 2, "sent": 1, "failed": 0, "dropped": 1, "retries": 0,
                             "pending": 0}
    assert done["reasons"] == {"closed": 1}
    assert len(done["errors"]) == 1 and "closed" in done["errors"][0]
    assert "closed" in proc.stderr  # the rate-limited warning, through the root logger
    _delivered_once(server, {0})


# -- signals ------------------------------------------------------------------------------

SIGNAL_CHILD = PREAMBLE + """
import signal
if sys.argv[1] == "handler":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
logging.basicConfig(level=logging.WARNING)
handler, log = make_handler(shutdown_timeout=10)
for i in range(5):
    log.info("$signal_event", extra={"seq": i})
time.sleep(60)      # killed long before this ends
"""


def _spawn(code: str, server: LoopbackServer, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCENTRIC_")}
    env["OC_URL"] = server.url
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_sigterm_with_exit_handler_delivers_pending(server: LoopbackServer,
                                                    reap: list[subprocess.Popen[str]]) -> None:
    """The recipe: a SIGTERM handler that calls sys.exit() turns the signal into a normal exit,
    so the exit flush runs and the in-flight events are delivered."""
    server.default = delay(0.5)
    proc = _spawn(SIGNAL_CHILD, server, "handler")
    reap.append(proc)
    assert server.wait_for_requests(5, timeout=30), proc.stderr
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    _delivered_once(server, set(range(5)))
    _no_traceback_from_library(stderr)


def test_sigterm_default_disposition_skips_exit_flush(server: LoopbackServer,
                                                      reap: list[subprocess.Popen[str]]) -> None:
    """The truth about the plain default: SIGTERM kills Python without running atexit, so
    nothing the process still held is delivered or reported. Install a handler (above)."""
    server.default = hang()
    proc = _spawn(SIGNAL_CHILD, server, "default")
    reap.append(proc)
    assert server.wait_for_requests(5, timeout=30), proc.stderr
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    assert server.events == []          # in flight when the process died: lost
    assert "not delivered" not in stderr  # and no exit flush ran to report it


# -- atexit on Python 3.12+ ---------------------------------------------------------------


def _interpreters() -> list[str]:
    """This interpreter, plus a Python 3.12+ one if the machine has it (threads cannot be
    started from atexit functions there)."""
    found = [sys.executable]
    if sys.version_info < (3, 12):
        pyenv = os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")
        candidates = sorted(glob.glob(pyenv))
        candidates += [shutil.which(f"python3.{minor}") or "" for minor in range(12, 16)]
        for candidate in candidates:
            if not candidate or "shims" in candidate or not os.access(candidate, os.X_OK):
                continue
            try:
                probe = subprocess.run(
                    [candidate, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                    capture_output=True, text=True, timeout=20,
                )
            except (OSError, subprocess.SubprocessError):
                continue
            if probe.stdout.strip() == "True":
                found.append(candidate)
                break
    return found


@pytest.fixture(scope="module")
def foreign_path() -> Iterator[str]:
    """A PYTHONPATH that lets another interpreter import this checkout and urllib3 (pure
    Python) without installing anything."""
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(os.path.dirname(urllib3.__file__), os.path.join(tmp, "urllib3"))
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        yield os.pathsep.join([root, tmp])


ATEXIT_LATE = """
import atexit, logging, os, sys
def late():
    try:
        log.info("$late_event", extra={"seq": 1})
        report("late", stats=handler.stats(), version=list(sys.version_info[:2]))
    except BaseException as exc:
        report("late", raised=repr(exc))
if sys.argv[1] == "before":
    atexit.register(late)   # registered BEFORE the client: runs AFTER its exit flush
"""


@pytest.mark.parametrize("order", ["before", "after", "first"])
@pytest.mark.parametrize("python", _interpreters(), ids=lambda p: os.path.basename(p))
def test_event_logged_from_atexit(server: LoopbackServer, foreign_path: str, python: str,
                                  order: str) -> None:
    code = PREAMBLE + ATEXIT_LATE + """
logging.basicConfig(level=logging.WARNING)
handler, log = make_handler(shutdown_timeout=5)
if sys.argv[1] in ("after", "first"):
    atexit.register(late)   # registered after the client: runs BEFORE its exit flush
if sys.argv[1] != "first":  # "first": the late event is the process's only one (no worker yet)
    log.info("$early_event", extra={"seq": 0})
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCENTRIC_")}
    env.update(OC_URL=server.url, PYTHONPATH=foreign_path)
    proc = subprocess.run([python, "-c", code, order], env=env, text=True, capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    (late,) = stats_line(proc, "late")
    assert "raised" not in late, late
    if order == "before":
        # After the exit flush has begun, a late event is sent inline, within the call
        # (the worker threads may be gone, and on 3.12+ no new one can start).
        assert late["stats"]["sent"] == 2 and late["stats"]["pending"] == 0, late
    if order == "first":
        # No sender thread exists yet. Where none can start (3.12; 3.13 lets atexit code
        # start threads again) the event is sent inline, within the call; elsewhere a
        # worker takes it and the exit flush waits for it. Never lost, never an exception.
        stats = late["stats"]
        assert stats["tracked"] == 1 and stats["failed"] == stats["dropped"] == 0, late
        assert stats["sent"] + stats["pending"] == 1, late
    _no_traceback_from_library(proc.stderr)
    # With a healthy server both arrive: the late one sent inline within the exit deadline
    # (or by a worker, where threads can still start).
    _delivered_once(server, {1} if order == "first" else {0, 1})


def test_event_logged_from_atexit_with_dead_server_is_counted(foreign_path: str,
                                                              refused_url: str) -> None:
    python = _interpreters()[-1]
    code = PREAMBLE + ATEXIT_LATE + """
logging.basicConfig(level=logging.WARNING)
handler, log = make_handler(shutdown_timeout=1)
log.info("$early_event", extra={"seq": 0})
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCENTRIC_")}
    env.update(OC_URL=refused_url, PYTHONPATH=foreign_path)
    proc = subprocess.run([python, "-c", code, "before"], env=env, text=True,
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    (late,) = stats_line(proc, "late")
    assert "raised" not in late, late
    stats = late["stats"]
    assert stats["tracked"] == 2 and stats["sent"] == 0 and stats["pending"] == 0
    assert stats["failed"] + stats["dropped"] == 2
    _no_traceback_from_library(proc.stderr)


# -- a dead server at exit ----------------------------------------------------------------


def test_dead_server_delays_exit_by_at_most_shutdown_timeout(server: LoopbackServer) -> None:
    """Requests that never get an answer: exit waits ``shutdown_timeout`` (2 s here), then
    counts the unsent events as dropped and says so on stderr. The generous bound of the
    subprocess timeout fails the test instead of hanging."""
    server.default = hang()
    code = """
logging.basicConfig(level=logging.WARNING)
handler, log = make_handler(shutdown_timeout=2, timeout=30)
for i in range(7):
    log.info("$doomed_event", extra={"seq": i})
report("logged", stats=handler.stats())
"""
    started = time.monotonic()
    proc = run_child(code, server, timeout=2 + 10)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert server.events == []
    # The count of what could not be sent, reported through the library's warning.
    assert re.search(r"\b7 events? dropped \(shutdown\)", proc.stderr), proc.stderr
    assert elapsed >= 2.0  # it did wait for the server, as long as it was allowed to


# -- setups without a handler -------------------------------------------------------------


def test_direct_client_flushes_at_exit(server: LoopbackServer) -> None:
    server.default = SLOW
    code = """
client = overcentric_logging.Client(project_id="proj_test", endpoint=URL, **FAST)
for i in range(10):
    client.track("$direct_event", {"seq": i})
report("logged", stats=client.stats())
"""
    proc = run_child(code, server, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stats_line(proc, "logged")[0]["stats"]["pending"] > 0
    _delivered_once(server, set(range(10)))


def test_processor_only_flushes_at_exit(server: LoopbackServer) -> None:
    pytest.importorskip("structlog")
    server.default = SLOW
    code = """
import structlog
processor = overcentric_logging.OvercentricProcessor(project_id="proj_test", endpoint=URL,
                                                     **FAST)
structlog.configure(processors=[processor, structlog.processors.KeyValueRenderer()],
                    logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
log = structlog.get_logger()
for i in range(10):
    log.info("$structlog_event", seq=i)
report("logged", stats=processor.client.stats())
"""
    proc = run_child(code, server, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stats_line(proc, "logged")[0]["stats"]["pending"] > 0
    _delivered_once(server, set(range(10)))

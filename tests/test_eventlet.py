"""eventlet monkey-patching (SPEC §5, "Works under gevent/eventlet monkey-patching").

Each scenario runs in a child interpreter that calls ``eventlet.monkey_patch()`` before anything
else, so the pytest process is never patched. There the sender's worker "threads", its
``Condition`` and its sockets are all green; the child logs 200 events with a unique ``seq``
from several green threads (``eventlet.spawn``) and from the main thread, against the test's
loopback server, which answers slowly so that requests really overlap. Every ``seq`` must
arrive exactly once, with an explicit ``flush()`` and with none (the exit flush delivers), and
the stats add up.
"""

from __future__ import annotations

import importlib.util
import subprocess
from typing import Any

import pytest
from loopback import LoopbackServer, delay
from proc_helpers import received_seqs, run_child, stats_line

from overcentric_logging.schema import validate_payload

# Not pytest.importorskip: importing eventlet here would load a few hundred modules (its own
# patched copy of dnspython among them) and warn about its deprecation inside the pytest
# process. Only the children import it.
if importlib.util.find_spec("eventlet") is None:
    pytest.skip("eventlet is not installed", allow_module_level=True)

EVENTS = 200
GREEN_THREADS = 4
PER_GREEN = 40  # the main thread logs the rest
WATCHDOG = 60.0
SERVER_DELAY = 0.02

# Runs before proc_helpers.PREAMBLE imports logging and the library.
PROLOGUE = """
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # "Eventlet is deprecated"
    import eventlet
eventlet.monkey_patch()
"""

CHILD = f"""
import atexit
import eventlet.patcher

MODE = os.environ["OC_MODE"]

def os_threads():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None

if MODE == "exit":
    # Registered before the handler's client registers its exit flush, so (atexit runs in
    # reverse order) this reports what that flush achieved.
    atexit.register(lambda: report("after_exit", stats=handler.stats()))

handler, log = make_handler(project_id="p", timeout=10.0, shutdown_timeout=30.0)

def burst(first, count):
    for seq in range(first, first + count):
        log.info("$green_event", extra={{"seq": seq, "source": "green"}})
        if seq % 5 == 0:
            eventlet.sleep(0)  # let the other green threads and the sender run in between

greenlets = [eventlet.spawn(burst, k * {PER_GREEN}, {PER_GREEN})
             for k in range({GREEN_THREADS})]
for seq in range({GREEN_THREADS * PER_GREEN}, {EVENTS}):
    log.info("$green_event", extra={{"seq": seq, "source": "main"}})
    if seq % 5 == 0:
        eventlet.sleep(0)
for g in greenlets:
    g.wait()

patched = {{name: eventlet.patcher.is_monkey_patched(name)
           for name in ("thread", "socket", "time", "select")}}
flushed = overcentric_logging.flush(10) if MODE == "flush" else None
report("before_exit", stats=handler.stats(), flushed=flushed, patched=patched,
       os_threads=os_threads())
"""


def _run(server: LoopbackServer, mode: str) -> subprocess.CompletedProcess[str]:
    server.default = delay(SERVER_DELAY)
    proc = run_child(CHILD, server, prologue=PROLOGUE, env={"OC_MODE": mode},
                     timeout=WATCHDOG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # A green thread that dies is printed by eventlet's hub, not turned into an exit status.
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def _one(proc: subprocess.CompletedProcess[str], tag: str) -> dict[str, Any]:
    lines = stats_line(proc, tag)
    assert len(lines) == 1, (tag, proc.stdout[-2000:], proc.stderr[-2000:])
    return lines[0]


def _check_stats(stats: dict[str, int]) -> None:
    assert stats["tracked"] == EVENTS, stats
    assert stats["tracked"] == (
        stats["sent"] + stats["failed"] + stats["dropped"] + stats["pending"]
    ), stats


def _check_patched(report: dict[str, Any]) -> None:
    # The scenario is only meaningful if the sender really ran on green threads and sockets.
    assert all(report["patched"].values()), report["patched"]
    if report["os_threads"] is not None:  # Linux: the workers are greenlets, not OS threads
        assert report["os_threads"] == 1, report


def _check_delivery(server: LoopbackServer) -> None:
    # Every answer has been sent before the child exited, so this wait returns at once.
    assert server.wait_for_events(EVENTS, timeout=10.0)
    for request in server.requests:
        assert request.json_error is None, request
        assert validate_payload(request.json) == [], request.json
    counts, _ = received_seqs(server)  # also checks server.schema_errors()
    assert set(counts) == set(range(EVENTS)), sorted(set(range(EVENTS)) - set(counts))
    assert max(counts.values()) == 1, [s for s, n in counts.items() if n > 1]
    # Nothing else became an event (urllib3's or the library's own records, say).
    assert set(server.names()) == {"$green_event"}
    sources = {body["event"]["properties"].get("source") for body in server.events}
    assert sources == {"green", "main"}


def test_eventlet_flush_delivers_everything(server: LoopbackServer) -> None:
    proc = _run(server, "flush")
    report = _one(proc, "before_exit")
    _check_patched(report)
    assert report["flushed"] is True, report
    stats = report["stats"]
    _check_stats(stats)
    assert stats["sent"] == EVENTS and stats["pending"] == 0, stats
    assert stats["failed"] == 0 and stats["dropped"] == 0, stats
    _check_delivery(server)


def test_eventlet_exit_flush_delivers_everything(server: LoopbackServer) -> None:
    proc = _run(server, "exit")
    before = _one(proc, "before_exit")
    _check_patched(before)
    _check_stats(before["stats"])  # whatever is still pending here, the exit flush sends
    stats = _one(proc, "after_exit")["stats"]
    _check_stats(stats)
    assert stats["sent"] == EVENTS and stats["pending"] == 0, stats
    assert stats["failed"] == 0 and stats["dropped"] == 0, stats
    _check_delivery(server)

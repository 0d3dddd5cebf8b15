"""Fork safety (SPEC §5): after a fork the child gets a fresh queue, pool and threads; every
event is delivered exactly once, by the process that logged it.

Each scenario runs in a child interpreter (forking pytest itself, with the loopback server's
threads, is asking for trouble) that talks to the test's loopback server. Events carry a unique
``seq`` and the ``pid`` of the process that logged them.
"""

from __future__ import annotations

import sys

import pytest
from loopback import LoopbackServer, delay
from proc_helpers import received_seqs, run_child, stats_line

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork")

# The parent's first request is held by the server so that the parent still has events queued
# (with one worker, they wait behind it) at the moment it forks: the child must not send them.
FORK_CHILD = """
handler, log = make_handler(max_workers=1)
parent = os.getpid()
for i in range(20):
    log.info("$parent_event", extra={"seq": i, "pid": os.getpid()})
queued_at_fork = handler.stats()["pending"]
pid = os.fork()
if pid == 0:
    for i in range(100, 120):
        log.info("$child_event", extra={"seq": i, "pid": os.getpid()})
    ok = overcentric_logging.flush(10)
    report("child", ok=ok, stats=handler.stats())
    os._exit(0)
_, status = os.waitpid(pid, 0)
ok = overcentric_logging.flush(10)
report("parent", ok=ok, stats=handler.stats(), queued_at_fork=queued_at_fork,
       child_status=status)
"""


# While the library is imported, os.register_at_fork does nothing: the sender's hook is never
# registered, as under uWSGI (whose fork happens in C). The standard library's own hooks
# (threading, logging, random) are registered first, as they are in a real worker.
NO_AT_FORK = """
import logging, os, random, threading
_real_register = os.register_at_fork
os.register_at_fork = lambda **kw: None
import overcentric_logging
os.register_at_fork = _real_register
"""


def _check_exactly_once(server: LoopbackServer, expected: dict[int, int | None]) -> None:
    counts, pids = received_seqs(server, ok_only=False)
    dupes = {seq: n for seq, n in counts.items() if n > 1}
    assert not dupes, f"sent more than once: {dupes}"
    assert set(counts) == set(expected), (
        f"missing {sorted(set(expected) - set(counts))}, "
        f"unexpected {sorted(set(counts) - set(expected), key=str)}"
    )
    for seq, pid in expected.items():
        if pid is not None:
            assert pids[seq] == pid, (seq, pids[seq], pid)


def test_fork_parent_and_child_each_deliver_their_own_events_once(server: LoopbackServer
                                                                   ) -> None:
    server.script(delay(0.5))
    proc = run_child(FORK_CHILD, server, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (parent,) = stats_line(proc, "parent")
    (child,) = stats_line(proc, "child")
    assert parent["queued_at_fork"] > 0, "the scenario needs events queued at fork time"
    assert parent["child_status"] == 0
    assert parent["ok"] and child["ok"]
    # The child's counters start from zero: it owns only what it logged itself.
    assert child["stats"] == {"tracked": 20, "sent": 20, "failed": 0, "dropped": 0,
                              "retries": 0, "pending": 0}
    assert parent["stats"]["sent"] == 20 and parent["stats"]["pending"] == 0
    expected: dict[int, int | None] = {i: parent["pid"] for i in range(20)}
    expected.update({i: child["pid"] for i in range(100, 120)})
    _check_exactly_once(server, expected)


def test_fork_without_at_fork_hook_reinitialises_on_pid_change(server: LoopbackServer) -> None:
    """uWSGI forks from C, so ``os.register_at_fork`` hooks never run: the pid check on the
    child's next event must re-initialise the sender (fresh queue, counters, pool, threads)."""
    server.script(delay(0.5))
    proc = run_child(FORK_CHILD, server, timeout=60, prologue=NO_AT_FORK)
    assert proc.returncode == 0, proc.stderr
    (parent,) = stats_line(proc, "parent")
    (child,) = stats_line(proc, "child")
    assert parent["queued_at_fork"] > 0
    assert child["stats"]["tracked"] == 20 and child["stats"]["sent"] == 20
    expected: dict[int, int | None] = {i: parent["pid"] for i in range(20)}
    expected.update({i: child["pid"] for i in range(100, 120)})
    _check_exactly_once(server, expected)


# multiprocessing with the fork start method. A multiprocessing child leaves through
# os._exit(), so the interpreter's atexit flush never runs there; the library registers a
# multiprocessing finalizer in each child that sends events, which Process._bootstrap runs
# before os._exit (bounded by shutdown_timeout). Work that ends in any other way (a Pool
# terminated by its ``with`` block, os._exit from user code) must call
# overcentric_logging.flush(timeout) itself.
MP_PROCESS = """
import multiprocessing
handler, log = make_handler()

def work(base, flush):
    for i in range(base, base + 25):
        log.info("$mp_event", extra={"seq": i, "pid": os.getpid()})
    if flush:
        overcentric_logging.flush(10)

ctx = multiprocessing.get_context("fork")
log.info("$mp_event", extra={"seq": -1, "pid": os.getpid()})
procs = [ctx.Process(target=work, args=(100 * (n + 1), n == 0)) for n in range(3)]
for p in procs:
    p.start()
for p in procs:
    p.join(30)
report("parent", codes=[p.exitcode for p in procs], pids=[p.pid for p in procs],
       ok=overcentric_logging.flush(10), stats=handler.stats())
"""


def test_multiprocessing_fork_children_deliver_their_events(server: LoopbackServer) -> None:
    proc = run_child(MP_PROCESS, server, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (parent,) = stats_line(proc, "parent")
    assert parent["codes"] == [0, 0, 0]
    assert parent["ok"]
    assert parent["stats"]["tracked"] == 1 and parent["stats"]["sent"] == 1
    expected: dict[int, int | None] = {-1: parent["pid"]}
    for n, pid in enumerate(parent["pids"]):
        expected.update({i: pid for i in range(100 * (n + 1), 100 * (n + 1) + 25)})
    _check_exactly_once(server, expected)


MP_POOL = """
import multiprocessing
handler, log = make_handler()

def task(i):
    log.info("$pool_event", extra={"seq": i, "pid": os.getpid()})
    return os.getpid()

ctx = multiprocessing.get_context("fork")
pool = ctx.Pool(3)
pids = pool.map(task, range(300), chunksize=10)
pool.close()      # not terminate(): workers then leave through the multiprocessing finalizers
pool.join()
report("parent", pids=pids, ok=overcentric_logging.flush(10), stats=handler.stats())
"""


def test_multiprocessing_pool_workers_deliver_their_events(server: LoopbackServer) -> None:
    proc = run_child(MP_POOL, server, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (parent,) = stats_line(proc, "parent")
    assert parent["stats"]["tracked"] == 0, "the parent logged nothing itself"
    expected: dict[int, int | None] = dict(enumerate(parent["pids"]))
    _check_exactly_once(server, expected)


OS_EXIT_WITHOUT_FLUSH = """
handler, log = make_handler()
pid = os.fork()
if pid == 0:
    for i in range(30):
        log.info("$lost_event", extra={"seq": i, "pid": os.getpid()})
    if len(sys.argv) > 1 and sys.argv[1] == "flush":
        overcentric_logging.flush(10)
    os._exit(0)
os.waitpid(pid, 0)
report("parent", stats=handler.stats())
"""


def test_os_exit_needs_an_explicit_flush(server: LoopbackServer) -> None:
    """A child of a bare os.fork() that leaves through os._exit() runs no exit hook at all:
    ``overcentric_logging.flush(timeout)`` before os._exit() is what delivers its events."""
    code = OS_EXIT_WITHOUT_FLUSH.replace('len(sys.argv) > 1 and sys.argv[1] == "flush"', "True")
    proc = run_child(code, server, timeout=60)
    assert proc.returncode == 0, proc.stderr
    _check_exactly_once(server, dict.fromkeys(range(30)))

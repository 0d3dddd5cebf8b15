"""Re-running ``dictConfig`` while events are pending (Django's autoreloader does it): the old
handler's flush()/close() run under logging's module lock and must not wait for the network,
and the events the replaced handler still held are delivered anyway (SPEC §5).

The child interpreter (dictConfig reconfigures the whole process, so not pytest's) steps
through the scenario on the test's command: the server hangs every request while the child
re-runs dictConfig; only after dictConfig has returned does the server come back.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from loopback import LoopbackServer, hang, status
from proc_helpers import PREAMBLE, received_seqs

WATCHDOG = 30.0

CHILD = PREAMBLE + """
import logging.config

def config():
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "overcentric": {
                "class": "overcentric_logging.OvercentricHandler",
                "project_id": "proj_test",
                "endpoint": URL,
                "shutdown_timeout": 20,
                "timeout": 60,            # the hung requests never time out by themselves
                "backoff_base": 0.01,
                "backoff_max": 0.05,
            },
        },
        "loggers": {"app": {"level": "INFO", "handlers": ["overcentric"], "propagate": False}},
    }

logging.config.dictConfig(config())
log = logging.getLogger("app")
old = log.handlers[0]
for i in range(5):
    log.info("$before_reload", extra={"seq": i})
report("logged", stats=old.stats())
sys.stdin.readline()                       # the test: every request is hanging now
logging.config.dictConfig(config())        # must return although the server never answers
new = log.handlers[0]
report("reconfigured", old=old.stats(), replaced=new is not old)
sys.stdin.readline()                       # the test: the server is back
for i in range(5, 10):
    log.info("$after_reload", extra={"seq": i})
ok = overcentric_logging.flush(20)
report("done", ok=ok, old=old.stats(), new=new.stats())
"""


class _Child:
    def __init__(self, server: LoopbackServer) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCENTRIC_")}
        env["OC_URL"] = server.url
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def expect(self, tag: str) -> dict[str, Any]:
        """The child's next report with ``tag``; fails (never hangs) after the watchdog."""
        while True:
            try:
                line = self.lines.get(timeout=WATCHDOG)
            except queue.Empty:
                pytest.fail(f"the child did not report {tag!r} within {WATCHDOG} s (stuck?)")
            if line.startswith("RESULT "):
                data: dict[str, Any] = json.loads(line[len("RESULT "):])
                if data["tag"] == tag:
                    return data

    def tell(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()


@pytest.fixture
def child(server: LoopbackServer) -> Iterator[_Child]:
    c = _Child(server)
    yield c
    if c.proc.poll() is None:
        c.proc.kill()
    c.proc.communicate(timeout=10)


def test_dictconfig_rerun_does_not_wait_and_old_events_still_arrive(
    server: LoopbackServer, child: _Child
) -> None:
    server.default = hang()
    child.expect("logged")
    assert server.wait_for_requests(5, timeout=WATCHDOG), "the events never reached the server"
    child.tell()
    # While every request hangs, dictConfig (which flushes and closes the old handler under
    # logging's module lock) returns: nothing in it waited for the network.
    reconfigured = child.expect("reconfigured")
    assert reconfigured["replaced"]
    assert reconfigured["old"]["pending"] == 5, "the replaced handler abandoned its events"
    assert reconfigured["old"]["dropped"] == 0
    assert server.events == []
    # The server comes back on the same port: the hung requests are cut and retried.
    server.stop()
    server.default = status(200)
    server.start()
    child.tell()
    done = child.expect("done")
    assert done["ok"]
    assert done["old"]["sent"] == 5 and done["old"]["pending"] == 0, done["old"]
    assert done["new"]["sent"] == 5 and done["new"]["pending"] == 0, done["new"]
    child.proc.wait(WATCHDOG)
    assert child.proc.returncode == 0
    counts, _ = received_seqs(server)
    assert set(counts) == set(range(10)) and max(counts.values()) == 1

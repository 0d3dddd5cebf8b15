"""Helpers for the process, thread and exit-path tests: run a child interpreter against a
``LoopbackServer``, and check that every event arrived exactly once, from the right process.

Child scripts get the server's event URL in the environment variable ``OC_URL`` and start
with :data:`PREAMBLE` (imports plus a ``make_handler()`` helper) when they ask for it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from typing import Any

from loopback import LoopbackServer

__all__ = [
    "PREAMBLE",
    "free_port",
    "received_seqs",
    "run_child",
    "stats_line",
]

# Small delays everywhere: the suite must stay fast on two shared cores.
PREAMBLE = textwrap.dedent(
    """
    import json, logging, os, sys, time
    import overcentric_logging
    from overcentric_logging import OvercentricHandler

    URL = os.environ["OC_URL"]
    FAST = dict(backoff_base=0.01, backoff_max=0.05, timeout=2.0)

    def make_handler(**kw):
        opts = dict(project_id="proj_test", endpoint=URL, **FAST)
        opts.update(kw)
        handler = OvercentricHandler(**opts)
        log = logging.getLogger("app")
        log.setLevel(logging.INFO)
        log.addHandler(handler)
        log.propagate = False
        return handler, log

    def report(tag, **values):
        print("RESULT " + json.dumps({"tag": tag, "pid": os.getpid(), **values}), flush=True)
    """
)


def run_child(
    code: str,
    server: LoopbackServer | str,
    *,
    timeout: float = 60.0,
    preamble: bool = True,
    env: dict[str, str] | None = None,
    executable: str | None = None,
    prologue: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (bounded by ``timeout``) with ``OC_URL`` set;
    ``prologue`` runs before the preamble imports the library."""
    url = server if isinstance(server, str) else server.url
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCENTRIC_")}
    full_env["OC_URL"] = url
    full_env["PYTHONUNBUFFERED"] = "1"
    if env:
        full_env.update(env)
    source = textwrap.dedent(prologue) + (PREAMBLE if preamble else "") + textwrap.dedent(code)
    return subprocess.run(
        [executable or sys.executable, "-c", source],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )


def stats_line(proc: subprocess.CompletedProcess[str], tag: str | None = None
               ) -> list[dict[str, Any]]:
    """The ``report(...)`` lines a child printed (optionally only those with ``tag``)."""
    found = []
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            data = json.loads(line[len("RESULT "):])
            if tag is None or data.get("tag") == tag:
                found.append(data)
    return found


def received_seqs(
    server: LoopbackServer, *, ok_only: bool = True
) -> tuple[Counter[Any], dict[Any, Any]]:
    """Every ``seq`` property the server accepted (with ``ok_only=False``: received with any
    answer) with its count, and the ``pid`` property that came with each; also asserts that
    every body the server saw passes the documented schema."""
    problems = server.schema_errors()
    assert not problems, problems[:5]
    counts: Counter[Any] = Counter()
    pids: dict[Any, Any] = {}
    for request in server.requests:
        if ok_only and not request.answered_ok:
            continue
        body = request.json
        assert isinstance(body, dict), request
        props = body["event"].get("properties", {})
        seq = props.get("seq")
        counts[seq] += 1
        pids[seq] = props.get("pid")
    return counts, pids


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (for servers that need a number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

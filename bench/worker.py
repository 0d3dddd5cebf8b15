"""One measurement of one system, in a fresh process; run by ``bench/run.py``.

A fresh interpreter per measurement keeps each system's threads, queues, memory and CPU
accounting apart from every other system's. The worker takes one JSON argument (mode,
system, sizes, the sink's ports), measures, and prints one ``RESULT {json}`` line. Modes:
``caller`` (ns per call against a NullHandler floor in the same process), ``burst`` (a burst
of events delivered to the sink: wall time, events/s, requests/s, whole-process CPU per
delivered event, and optionally the time ``flush()`` and ``close()`` take to drain a backlog),
``exit`` (log events with the sink down, then exit normally; the parent times the exit) and
``memory`` (RSS growth and what is kept or dropped after many events with the sink down).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from server import ServerControl
from systems import SPECS, Prepared

RESULT_PREFIX = "RESULT "


def _per_call_ns(fn: Callable[[], None], n: int) -> float:
    perf = time.perf_counter_ns
    t0 = perf()
    for _ in range(n):
        fn()
    return (perf() - t0) / n


def _per_call(fn: Callable[[], None], n: int) -> tuple[float, float]:
    """Wall ns and caller-thread CPU ns per call: the gap between the two is mostly time the
    caller waited for the GIL while other threads (a sender) ran."""
    perf, cpu = time.perf_counter_ns, time.thread_time_ns
    t0, c0 = perf(), cpu()
    for _ in range(n):
        fn()
    c1, t1 = cpu(), perf()
    return (t1 - t0) / n, (c1 - c0) / n


def _noop() -> None:
    return None


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5), so that the peak measured
    afterwards belongs to the measured loop, not to imports and set-up before it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss (KiB on Linux) is the lifetime peak: an over-estimate if the reset failed.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mode_caller(p: Prepared, floor: Prepared, args: dict[str, Any]) -> dict[str, Any]:
    ctl = ServerControl(args["control_port"], args["port"])
    blocks: int = args["blocks"]
    cap: int = args["n"]
    floor_n: int = args["floor_n"]
    # Size a block to about 40 ms of calls, within the system's queue bound, so a synchronous
    # peer (one HTTP request per call) does not take minutes. Warm up first: the first event
    # starts threads and connections.
    _per_call_ns(p.event, 5)
    p.flush(30.0)
    probe = max(_per_call_ns(p.event, 20), 1.0)
    n = int(min(cap, max(20, 40e6 / probe)))
    for fn in (p.event, p.plain):
        if fn is not None:
            _per_call_ns(fn, n)
    p.flush(30.0)
    kinds = ["noop", "floor_plain", "floor_event", "plain", "event"]
    rows: dict[str, list[float]] = {k: [] for k in kinds}
    cpu_rows: dict[str, list[float]] = {k: [] for k in kinds}

    def measure(kind: str, fn: Callable[[], None], count: int) -> None:
        wall, cpu = _per_call(fn, count)
        rows[kind].append(wall)
        cpu_rows[kind].append(cpu)

    for _ in range(blocks):
        # The floor runs with the system idle; the system's own block then pays for whatever
        # its background threads take from the caller while it runs.
        p.flush(30.0)
        gc.collect()
        measure("noop", _noop, floor_n)
        measure("floor_plain", floor.plain or _noop, floor_n)
        measure("floor_event", floor.event, floor_n)
        gc.collect()
        if p.plain is not None:
            measure("plain", p.plain, n)
            p.flush(30.0)
        measure("event", p.event, n)
    p.flush(30.0)
    out: dict[str, Any] = {"n": n, "blocks": blocks}
    for prefix, table in (("", rows), ("cpu_", cpu_rows)):
        med = {k: statistics.median(v) for k, v in table.items() if v}
        noop = med["noop"]
        out[f"{prefix}noop_ns"] = noop
        for kind in ("plain", "event"):
            f = med[f"floor_{kind}"] - noop
            out[f"{prefix}floor_{kind}_ns"] = f
            if kind in med:
                v = med[kind] - noop
                out[f"{prefix}{kind}_ns"] = v
                out[f"{prefix}{kind}_ratio"] = v / f if f > 0 else None
    out["dropped"] = p.dropped()
    out["server_bad"] = ctl.stats()["bad"]
    return out


def mode_burst(p: Prepared, args: dict[str, Any]) -> dict[str, Any]:
    ctl = ServerControl(args["control_port"], args["port"])
    n: int = args["n"]
    timeout: float = args.get("timeout", 60.0)
    # Warm up: connections, threads and lazy imports are not what the burst measures.
    for _ in range(5):
        p.event()
    p.flush(timeout)
    ctl.wait(5, 10.0, quiet=1.0)
    ctl.reset()
    gc.collect()
    event = p.event
    c0 = time.process_time()
    t0 = time.monotonic()
    for _ in range(n):
        event()
    t_called = time.monotonic()
    p.flush(timeout)
    st = ctl.wait(n, timeout, quiet=args.get("quiet", 2.0))
    c1 = time.process_time()
    delivered = int(st["events"])
    last = st["last_ts"] or t_called
    seconds = max(last - t0, 1e-9)
    out: dict[str, Any] = {
        "n": n,
        "delivered": delivered,
        "requests": st["requests"],
        "bad": st["bad"],
        "max_open_connections": st["max_open_connections"],
        "max_inflight": st["max_inflight"],
        "paths": sorted(st["by_path"]),
        "caller_s": t_called - t0,
        "seconds": seconds,
        "events_per_s": delivered / seconds,
        "requests_per_s": st["requests"] / seconds,
        "cpu_s": c1 - c0,
        "cpu_per_event_us": (c1 - c0) / delivered * 1e6 if delivered else None,
        "lost": n - delivered,
    }
    drain_n = args.get("drain_n")
    if drain_n:
        out.update(_drain(p, ctl, int(drain_n), timeout))
    return out


def _drain(p: Prepared, ctl: ServerControl, n: int, timeout: float) -> dict[str, Any]:
    ctl.reset()
    for _ in range(n):
        p.event()
    t0 = time.monotonic()
    p.flush(timeout)
    flush_s = time.monotonic() - t0
    flushed = ctl.stats()["events"]
    ctl.wait(n, 5.0, quiet=1.0)
    ctl.reset()
    for _ in range(n):
        p.event()
    t0 = time.monotonic()
    p.close()
    close_s = time.monotonic() - t0
    closed = ctl.stats()["events"]
    return {
        "drain_n": n,
        "flush_s": flush_s,
        "delivered_by_flush": flushed,
        "close_s": close_s,
        "delivered_by_close": closed,
    }


def mode_exit(p: Prepared, args: dict[str, Any]) -> None:
    # A typical application has a root handler: what each library warns at exit shows up.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for _ in range(args["n"]):
        p.event()
    print(RESULT_PREFIX + json.dumps({"logged_ts": time.monotonic()}), flush=True)
    # Return normally: atexit hooks and logging.shutdown() decide how long the exit takes.


def mode_memory(p: Prepared, args: dict[str, Any]) -> dict[str, Any]:
    n: int = args["n"]
    p.event()
    gc.collect()
    _reset_peak_rss()
    rss0 = _rss_bytes()
    event = p.event
    for _ in range(n):
        event()
    gc.collect()
    rss1 = _rss_bytes()
    peak = _peak_rss_bytes()
    kept = p.backlog()
    dropped = p.dropped()
    growth = max(peak - rss0, rss1 - rss0, 0)
    return {
        "n": n,
        "rss_growth_bytes": growth,
        "rss_now_growth_bytes": rss1 - rss0,
        "kept": kept,
        "dropped": dropped,
        "bytes_per_kept": growth / kept if kept else None,
    }


def main() -> None:
    args: dict[str, Any] = json.loads(sys.argv[1])
    base = f"http://127.0.0.1:{args['port']}"
    spec = SPECS[args["system"]]
    mode = args["mode"]
    if mode in ("exit", "memory"):
        # With the server down, the stdlib handlers would print a traceback per record.
        logging.raiseExceptions = False
    try:
        p = spec.build(base)
        if mode == "exit":
            mode_exit(p, args)
            return
        if mode == "caller":
            res = mode_caller(p, SPECS["null"].build(base), args)
        elif mode == "burst":
            res = mode_burst(p, args)
        elif mode == "memory":
            res = mode_memory(p, args)
        else:
            raise ValueError(f"unknown mode {mode!r}")
    except BaseException as exc:
        print(RESULT_PREFIX + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        raise
    print(RESULT_PREFIX + json.dumps(res), flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the systems' own exit hooks (measured separately, in "exit" mode).
    os._exit(0)


if __name__ == "__main__":
    main()

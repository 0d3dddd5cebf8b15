"""Entry point of the benchmark harness: ``.venv/bin/python bench/run.py [--quick]``.

Starts the loopback sink (``server.py``) in its own process, then for each figure runs every
system in a fresh worker process (``worker.py``), repeating the whole round of systems
several times in a rotated order so that machine noise spreads over all systems alike
(interleaved repeats). Results go to ``bench/results.json``; ``report.py`` turns them into
``BENCHMARKS.md`` and the charts under ``bench/charts/``. A worker that fails (a peer not
installed, the library mid-edit) is recorded as an error and the run goes on. ``--quick`` is
a smoke run of a few seconds over a few systems, which writes only ``bench/results-quick.json``
and prints the tables; it exits non-zero when an overcentric-logging measurement failed.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from report import write_report  # noqa: E402
from server import ServerControl, ServerProcess  # noqa: E402
from systems import SPECS  # noqa: E402
from worker import RESULT_PREFIX  # noqa: E402

OC = ["oc_handler", "oc_processor", "oc_client"]
PEERS = ["stdlib_http", "stdlib_queue", "posthog", "segment", "logtail", "otel"]
DELIVERING = OC + PEERS

FULL: dict[str, Any] = {
    "repeats": 5,
    "caller": {
        "systems": [*OC, "structlog_floor", *PEERS],
        "n": 600,
        "blocks": 5,
        "floor_n": 3000,
    },
    "burst0": {
        "systems": [*DELIVERING, "urllib3_loop", "httpclient_loop"],
        "n": 5000,
        "sequential_n": 2000,
    },
    "burst20": {"systems": DELIVERING, "n": 5000, "sequential_n": 150, "drain_n": 2000},
    "exit": {"systems": DELIVERING, "n": 1000, "cap_s": 8.0},
    "memory": {
        "systems": [s for s in DELIVERING if s != "stdlib_http"],
        "n": 100_000,
        "parallel": 2,
    },
}
QUICK: dict[str, Any] = {
    "repeats": 1,
    "caller": {
        "systems": ["oc_handler", "oc_processor", "oc_client", "stdlib_queue"],
        "n": 200,
        "blocks": 3,
        "floor_n": 1000,
    },
    "burst0": {"systems": ["oc_handler", "oc_client", "httpclient_loop"], "n": 300},
    "burst20": {"systems": ["oc_client"], "n": 300, "sequential_n": 50, "drain_n": 200},
    "exit": {"systems": ["oc_handler"], "n": 50, "cap_s": 10.0},
    "memory": {"systems": ["oc_client"], "n": 5_000, "parallel": 1},
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Loopback only: make sure no proxy setting can route a peer's request elsewhere.
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(key, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONHASHSEED"] = "0"
    env.pop("OVERCENTRIC_ENDPOINT", None)
    env.pop("OVERCENTRIC_DISABLED", None)
    return env


def _parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            data: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return data
    return None


def _tail(text: str, limit: int = 200) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[-limit:]


class Harness:
    def __init__(self, ctl: ServerControl, verbose: bool) -> None:
        self.ctl = ctl
        self.verbose = verbose
        self.t_start = time.monotonic()

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{time.monotonic() - self.t_start:6.1f}s] {msg}", flush=True)

    def _args(self, mode: str, system: str, **kw: Any) -> str:
        return json.dumps(
            {
                "mode": mode,
                "system": system,
                "port": self.ctl.data_port,
                "control_port": self.ctl.control_port,
                **kw,
            }
        )

    def run_worker(self, mode: str, system: str, wall_timeout: float, **kw: Any) -> dict[str, Any]:
        cmd = [sys.executable, os.path.join(HERE, "worker.py"), self._args(mode, system, **kw)]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=wall_timeout,
                env=_env(),
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {wall_timeout:.0f} s"}
        res = _parse_result(proc.stdout)
        if res is None:
            res = {"error": f"exit {proc.returncode}: {_tail(proc.stderr) or 'no result'}"}
        return res

    def start_worker(self, mode: str, system: str, **kw: Any) -> subprocess.Popen[str]:
        cmd = [sys.executable, os.path.join(HERE, "worker.py"), self._args(mode, system, **kw)]
        return subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            stdin=subprocess.DEVNULL,
        )

    def run_exit(self, system: str, n: int, cap: float) -> dict[str, Any]:
        """Time from 'events logged' to process exit, with the sink down."""
        cmd = [sys.executable, os.path.join(HERE, "worker.py"), self._args("exit", system, n=n)]
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=_env(),
                stdin=subprocess.DEVNULL,
            )
            assert proc.stdout is not None
            logged: float | None = None
            deadline = time.monotonic() + 60.0
            while logged is None and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
                if not ready:
                    break
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith(RESULT_PREFIX):
                    logged = float(json.loads(line[len(RESULT_PREFIX) :])["logged_ts"])
            if logged is None:
                proc.kill()
                proc.wait()
                err.seek(0)
                return {"error": f"did not log: {_tail(err.read())}"}
            killed = False
            try:
                proc.wait(max(cap - (time.monotonic() - logged), 0.1))
                exited = time.monotonic()
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                exited = time.monotonic()
                killed = True
            proc.stdout.read()
            err.seek(0)
            stderr = err.read()
        return {
            "exit_s": exited - logged,
            "killed": killed,
            "returncode": proc.returncode,
            "stderr_tail": _tail(stderr, 300),
        }

    # --- figures ------------------------------------------------------------------------

    def _rounds(self, systems: list[str], repeats: int) -> Iterable[tuple[int, str]]:
        """Every system once per round; each round starts one system later (interleaving)."""
        for r in range(repeats):
            k = r % len(systems)
            for s in systems[k:] + systems[:k]:
                yield r, s

    def caller(self, cfg: dict[str, Any], repeats: int) -> dict[str, list[dict[str, Any]]]:
        self.ctl.config(0)
        out: dict[str, list[dict[str, Any]]] = {s: [] for s in cfg["systems"]}
        for r, s in self._rounds(cfg["systems"], repeats):
            res = self.run_worker(
                "caller", s, 180.0, n=cfg["n"], blocks=cfg["blocks"], floor_n=cfg["floor_n"]
            )
            res["repeat"] = r
            out[s].append(res)
            self.log(f"caller  r{r} {s}: {_brief(res, 'event_ns', 'event_ratio', 'plain_ratio')}")
        return out

    def burst(
        self, cfg: dict[str, Any], repeats: int, latency_ms: float
    ) -> dict[str, list[dict[str, Any]]]:
        self.ctl.config(latency_ms)
        out: dict[str, list[dict[str, Any]]] = {s: [] for s in cfg["systems"]}
        for r, s in self._rounds(cfg["systems"], repeats):
            # One request at a time: fewer events give the same rate in a fraction of the time.
            n = cfg.get("sequential_n", cfg["n"]) if SPECS[s].sequential else cfg["n"]
            kw: dict[str, Any] = {"n": n, "timeout": 60.0}
            if cfg.get("drain_n") and not SPECS[s].sequential:
                kw["drain_n"] = cfg["drain_n"]
            res = self.run_worker("burst", s, 240.0, **kw)
            res["repeat"] = r
            out[s].append(res)
            self.log(
                f"burst{latency_ms:g} r{r} {s}: "
                f"{_brief(res, 'events_per_s', 'cpu_per_event_us', 'flush_s', 'lost')}"
            )
        self.ctl.config(0)
        return out

    def exit(self, cfg: dict[str, Any], repeats: int) -> dict[str, list[dict[str, Any]]]:
        self.ctl.down()
        out: dict[str, list[dict[str, Any]]] = {s: [] for s in cfg["systems"]}
        capped: dict[str, int] = {}
        try:
            for r, s in self._rounds(cfg["systems"], repeats):
                if capped.get(s, 0) >= 2:
                    # Two runs already hit the cap: the figure is known, save the minutes.
                    out[s].append(
                        {"exit_s": cfg["cap_s"], "killed": True, "skipped": True, "repeat": r}
                    )
                    continue
                res = self.run_exit(s, cfg["n"], cfg["cap_s"])
                res["repeat"] = r
                if res.get("killed"):
                    capped[s] = capped.get(s, 0) + 1
                out[s].append(res)
                self.log(f"exit    r{r} {s}: {_brief(res, 'exit_s', 'killed')}")
        finally:
            self.ctl.up()
        return out

    def memory(self, cfg: dict[str, Any], repeats: int) -> dict[str, list[dict[str, Any]]]:
        # RSS and counts do not depend on timing, so two workers may run side by side.
        self.ctl.down()
        out: dict[str, list[dict[str, Any]]] = {s: [] for s in cfg["systems"]}
        jobs = list(self._rounds(cfg["systems"], repeats))
        try:
            while jobs:
                batch, jobs = jobs[: cfg["parallel"]], jobs[cfg["parallel"] :]
                procs = [(r, s, self.start_worker("memory", s, n=cfg["n"])) for r, s in batch]
                for r, s, proc in procs:
                    try:
                        stdout, stderr = proc.communicate(timeout=300)
                        res = _parse_result(stdout) or {
                            "error": f"exit {proc.returncode}: {_tail(stderr)}"
                        }
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.communicate()
                        res = {"error": "timed out after 300 s"}
                    res["repeat"] = r
                    out[s].append(res)
                    self.log(f"memory  r{r} {s}: {_brief(res, 'rss_growth_bytes', 'kept')}")
        finally:
            self.ctl.up()
        return out


def _brief(res: dict[str, Any], *keys: str) -> str:
    if "error" in res:
        return "error: " + str(res["error"])[:160]
    parts = []
    for k in keys:
        v = res.get(k)
        if isinstance(v, float):
            parts.append(f"{k}={v:.3g}")
        elif v is not None:
            parts.append(f"{k}={v}")
    return " ".join(parts)


def _save(data: dict[str, Any], h: Harness, path: str) -> None:
    data["elapsed_s"] = time.monotonic() - h.t_start
    data["loadavg_end"] = os.getloadavg()
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def main() -> int:
    parser = argparse.ArgumentParser(description="overcentric-logging vs peers benchmark")
    parser.add_argument("--quick", action="store_true", help="smoke run of a few seconds")
    parser.add_argument("--repeats", type=int, help="rounds per figure (default 5)")
    parser.add_argument(
        "--figures",
        default="caller,burst0,burst20,exit,memory",
        help="comma-separated subset of: caller,burst0,burst20,exit,memory",
    )
    parser.add_argument("--systems", help="comma-separated subset of systems")
    parser.add_argument("--results", help="where to write the JSON results")
    parser.add_argument(
        "--no-report", action="store_true", help="do not write BENCHMARKS.md and charts"
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()

    cfg = json.loads(json.dumps(QUICK if args.quick else FULL))
    repeats = args.repeats or cfg["repeats"]
    if args.systems:
        keep = set(args.systems.split(","))
        unknown = keep - set(SPECS)
        if unknown:
            parser.error(f"unknown systems: {sorted(unknown)}; known: {sorted(SPECS)}")
        for fig in ("caller", "burst0", "burst20", "exit", "memory"):
            cfg[fig]["systems"] = [s for s in cfg[fig]["systems"] if s in keep]
    results_path = args.results or os.path.join(
        HERE, "results-quick.json" if args.quick else "results.json"
    )

    server = ServerProcess()
    h = Harness(server.control, verbose=not args.quiet)
    data: dict[str, Any] = {
        "config": cfg,
        "repeats": repeats,
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_start": os.getloadavg(),
    }
    try:
        figures = args.figures.split(",")
        steps: list[tuple[str, Callable[[], dict[str, list[dict[str, Any]]]]]] = [
            ("caller", lambda: h.caller(cfg["caller"], repeats)),
            ("burst0", lambda: h.burst(cfg["burst0"], repeats, 0)),
            ("burst20", lambda: h.burst(cfg["burst20"], repeats, 20)),
            ("exit", lambda: h.exit(cfg["exit"], repeats)),
            ("memory", lambda: h.memory(cfg["memory"], repeats)),
        ]
        for name, step in steps:
            if name in figures:
                data[name] = step()
                # Saved after every figure: an interrupted run keeps what it measured.
                _save(data, h, results_path)
    finally:
        server.stop()
    _save(data, h, results_path)
    h.log(f"results in {results_path}")

    write_report(data, quick=args.quick or args.no_report, here=HERE)
    failed = [
        f"{fig}/{s}"
        for fig in ("caller", "burst0", "burst20", "exit", "memory")
        for s, runs in data.get(fig, {}).items()
        if s in OC and any("error" in r for r in runs)
    ]
    if failed:
        print("overcentric-logging measurements failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Turns the harness's results (``bench/results.json``) into ``BENCHMARKS.md`` and PNG charts.

Each figure is reported as the median over the interleaved repeats with the min-max range;
ratios (to the NullHandler floor, to the bare HTTP loops) are taken within one process or one
round before the median, so machine noise that hits both sides cancels. The targets of the
benchmark issue are checked against the numbers and listed as met or missed. Run it alone to
re-render a report from saved results: ``.venv/bin/python bench/report.py bench/results.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

LABELS: dict[str, str] = {
    "oc_handler": "overcentric-logging: handler",
    "oc_processor": "overcentric-logging: structlog processor",
    "oc_client": "overcentric-logging: Client.track()",
    "null": "logging.NullHandler (floor)",
    "structlog_floor": "structlog, DropEvent only (floor)",
    "stdlib_http": "stdlib HTTPHandler",
    "stdlib_queue": "stdlib QueueHandler + QueueListener",
    "posthog": "PostHog capture()",
    "segment": "Segment track()",
    "logtail": "Better Stack LogtailHandler",
    "otel": "OpenTelemetry LoggingHandler + Batch",
    "urllib3_loop": "baseline: urllib3 PoolManager.request loop",
    "httpclient_loop": "baseline: http.client keep-alive loop",
}
OC = ("oc_handler", "oc_processor", "oc_client")
THIRD_PARTY = ("posthog", "segment", "logtail", "otel")
PACKAGES = (
    "overcentric-logging",
    "urllib3",
    "structlog",
    "posthog",
    "segment-analytics-python",
    "logtail-python",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "requests",
    "matplotlib",
)
SHUTDOWN_TIMEOUT = 5.0
NONE = "\u2013"
X = "\u00d7"
Runs = list[dict[str, Any]]


def _ok(runs: Runs) -> Runs:
    return [r for r in runs if "error" not in r]


def _error(runs: Runs) -> str | None:
    errs = [str(r["error"]) for r in runs if "error" in r]
    if errs and not _ok(runs):
        return errs[0]
    return None


def stat(values: Iterable[float | int | None]) -> tuple[float, float, float] | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def _fmt_num(v: float, digits: int = 3) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def cell(s: tuple[float, float, float] | None, scale: float = 1.0, suffix: str = "") -> str:
    if s is None:
        return "\u2013"
    med, lo, hi = (x * scale for x in s)
    if lo == hi:
        return f"{_fmt_num(med)}{suffix}"
    return f"**{_fmt_num(med)}**{suffix} ({_fmt_num(lo)}\u2013{_fmt_num(hi)})"


def _metric(runs: Runs, key: str) -> tuple[float, float, float] | None:
    return stat(r.get(key) for r in _ok(runs))


def _paired_ratio(runs: Runs, base: Runs, key: str) -> tuple[float, float, float] | None:
    """Ratio per round (same repeat index), then median over rounds."""
    by_round = {r["repeat"]: r.get(key) for r in _ok(base)}
    vals = []
    for r in _ok(runs):
        b = by_round.get(r["repeat"])
        v = r.get(key)
        if v is not None and b:
            vals.append(v / b)
    return stat(vals)


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _label(key: str) -> str:
    label = LABELS.get(key, key)
    return f"**{label}**" if key in OC else label


# --- figures ----------------------------------------------------------------------------


def fig1(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    caller: dict[str, Runs] = data.get("caller", {})
    floors = [r for runs in caller.values() for r in _ok(runs)]
    rows = [
        [
            _label("null"),
            cell(stat(r.get("floor_plain_ns") for r in floors)),
            "1.00",
            cell(stat(r.get("floor_event_ns") for r in floors)),
            "1.00",
            cell(stat(r.get("cpu_floor_event_ns") for r in floors)),
            "1.00",
        ]
    ]
    summary: dict[str, Any] = {}
    for key, runs in caller.items():
        err = _error(runs)
        if err:
            rows.append([_label(key), f"error: {err[:120]}", "", "", "", "", ""])
            continue
        m = {
            k: _metric(runs, k)
            for k in (
                "plain_ns",
                "event_ns",
                "plain_ratio",
                "event_ratio",
                "cpu_event_ns",
                "cpu_event_ratio",
                "cpu_plain_ratio",
            )
        }
        summary[key] = m
        rows.append(
            [
                _label(key),
                cell(m["plain_ns"]) if m["plain_ns"] else "n/a (no logging side)",
                cell(m["plain_ratio"], suffix=X) if m["plain_ratio"] else NONE,
                cell(m["event_ns"]),
                cell(m["event_ratio"], suffix=X),
                cell(m["cpu_event_ns"]),
                cell(m["cpu_event_ratio"], suffix=X),
            ]
        )
    table = _table(
        [
            "system",
            "non-event record, ns/call",
            f"{X} NullHandler",
            "event record, ns/call",
            f"{X} NullHandler (same extras)",
            "event record, caller-thread CPU ns",
            f"{X} NullHandler CPU",
        ],
        rows,
    )
    return table, summary


def fig2(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    b0: dict[str, Runs] = data.get("burst0", {})
    u3, hc = b0.get("urllib3_loop", []), b0.get("httpclient_loop", [])
    rows, summary = [], {}
    for key, runs in b0.items():
        err = _error(runs)
        if err:
            rows.append([_label(key), f"error: {err[:120]}", "", "", ""])
            continue
        cpu = _metric(runs, "cpu_per_event_us")
        r_u3 = _paired_ratio(runs, u3, "cpu_per_event_us")
        r_hc = _paired_ratio(runs, hc, "cpu_per_event_us")
        delivered = _metric(runs, "delivered")
        n = _ok(runs)[0]["n"] if _ok(runs) else 0
        summary[key] = {"cpu_us": cpu, "ratio_urllib3": r_u3, "ratio_httpclient": r_hc}
        rows.append(
            [
                _label(key),
                cell(cpu),
                cell(r_u3, suffix="\u00d7"),
                cell(r_hc, suffix="\u00d7"),
                f"{_fmt_num(delivered[0]) if delivered else NONE} / {n:,}",
            ]
        )
    table = _table(
        [
            "system (0 ms server)",
            "process CPU µs per delivered event",
            "\u00d7 urllib3 loop",
            "\u00d7 http.client loop",
            "delivered / sent (median)",
        ],
        rows,
    )
    return table, summary


def fig3(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    b0: dict[str, Runs] = data.get("burst0", {})
    b20: dict[str, Runs] = data.get("burst20", {})
    keys = list(dict.fromkeys([*b0, *b20]))
    rows, summary = [], {}
    for key in keys:
        r0, r20 = b0.get(key, []), b20.get(key, [])
        e0, e20 = _error(r0) if r0 else None, _error(r20) if r20 else None
        if e0 and (e20 or not r20):
            rows.append([_label(key), f"error: {e0[:120]}", "", "", "", "", ""])
            continue
        n20 = _ok(r20)[0]["n"] if _ok(r20) else 0
        d20 = _metric(r20, "delivered")
        summary[key] = {"eps0": _metric(r0, "events_per_s"), "eps20": _metric(r20, "events_per_s")}
        rows.append(
            [
                _label(key),
                cell(_metric(r0, "events_per_s")),
                cell(_metric(r0, "requests_per_s")),
                f"error: {e20[:80]}" if e20 else cell(_metric(r20, "events_per_s")),
                cell(_metric(r20, "requests_per_s")),
                f"{_fmt_num(d20[0]) if d20 else NONE} / {n20:,}" if r20 else "\u2013",
                cell(_metric(r20, "max_inflight")) if r20 else "\u2013",
            ]
        )
    table = _table(
        [
            "system",
            "0 ms: events/s",
            "0 ms: requests/s",
            "20 ms: events/s",
            "20 ms: requests/s",
            "20 ms: delivered / sent",
            "20 ms: max requests in flight",
        ],
        rows,
    )
    return table, summary


def fig4(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    b20: dict[str, Runs] = data.get("burst20", {})
    ex: dict[str, Runs] = data.get("exit", {})
    keys = list(dict.fromkeys([*b20, *ex]))
    rows, summary = [], {}
    for key in keys:
        runs, eruns = b20.get(key, []), ex.get(key, [])
        drained = [r for r in _ok(runs) if "flush_s" in r]
        n = drained[0]["drain_n"] if drained else 0
        exit_s = _metric(eruns, "exit_s")
        killed = sum(1 for r in _ok(eruns) if r.get("killed"))
        note = ""
        if key in OC:
            tails = [r.get("stderr_tail", "") for r in _ok(eruns) if r.get("stderr_tail")]
            note = tails[0][:140].replace("|", "/") if tails else ""
        exit_err = _error(eruns)
        exit_cell = f"error: {exit_err[:80]}" if exit_err else cell(exit_s, suffix=" s")
        if killed:
            exit_cell += f", killed at cap in {killed}/{len(_ok(eruns))}"
        summary[key] = {"flush_s": _metric(drained, "flush_s"), "exit_s": exit_s, "killed": killed}
        rows.append(
            [
                _label(key),
                cell(_metric(drained, "flush_s"), suffix=" s") if drained else "n/a",
                (
                    f"{_fmt_num(_metric(drained, 'delivered_by_flush')[0])} / {n:,}"  # type: ignore[index]
                    if drained
                    else "\u2013"
                ),
                cell(_metric(drained, "close_s"), suffix=" s") if drained else "n/a",
                (
                    f"{_fmt_num(_metric(drained, 'delivered_by_close')[0])} / {n:,}"  # type: ignore[index]
                    if drained
                    else "\u2013"
                ),
                exit_cell if eruns else "\u2013",
                note,
            ]
        )
    table = _table(
        [
            "system",
            "flush() of a backlog, 20 ms",
            "delivered when flush() returned",
            "close() of a backlog",
            "delivered when close() returned",
            "exit with server down",
            "what the library said at exit",
        ],
        rows,
    )
    return table, summary


def fig5(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    mem: dict[str, Runs] = data.get("memory", {})
    rows, summary = [], {}
    for key, runs in mem.items():
        err = _error(runs)
        if err:
            rows.append([_label(key), f"error: {err[:120]}", "", "", ""])
            continue
        growth = _metric(runs, "rss_growth_bytes")
        per = _metric(runs, "bytes_per_kept")
        summary[key] = {"growth": growth, "bytes_per_kept": per}
        rows.append(
            [
                _label(key),
                cell(growth, scale=1 / 2**20, suffix=" MiB"),
                cell(_metric(runs, "kept")),
                cell(_metric(runs, "dropped")) if _metric(runs, "dropped") else "not reported",
                cell(per, suffix=" B"),
            ]
        )
    n = next((r["n"] for runs in mem.values() for r in _ok(runs)), 0)
    table = _table(
        [
            "system (server down)",
            f"peak RSS growth after {n:,} events",
            "kept in memory",
            "dropped (as counted by the system)",
            "bytes per kept event",
        ],
        rows,
    )
    return table, summary


# --- targets ----------------------------------------------------------------------------


def targets(
    s1: dict[str, Any],
    s2: dict[str, Any],
    s3: dict[str, Any],
    s4: dict[str, Any],
    s5: dict[str, Any],
) -> str:
    lines = []

    def check(name: str, value: float | None, limit: float, fmt: str, le: bool = True) -> None:
        if value is None:
            lines.append(f"- {name}: not measured")
            return
        ok = value <= limit if le else value >= limit
        mark = "met" if ok else "**missed**"
        op = "≤" if le else "≥"
        lines.append(f"- {name}: {fmt.format(value)} (target {op} {fmt.format(limit)}): {mark}")

    def med(d: dict[str, Any], key: str, field: str) -> float | None:
        v = d.get(key, {}).get(field)
        return float(v[0]) if v else None

    check(
        "non-event record through the handler, \u00d7 NullHandler",
        med(s1, "oc_handler", "plain_ratio"),
        1.1,
        "{:.2f}\u00d7",
    )
    check(
        "event record through the handler, \u00d7 NullHandler with the same extras",
        med(s1, "oc_handler", "event_ratio"),
        1.5,
        "{:.2f}\u00d7",
    )
    check(
        "the same, caller-thread CPU only (GIL waits excluded)",
        med(s1, "oc_handler", "cpu_event_ratio"),
        1.5,
        "{:.2f}\u00d7",
    )
    peers = {k: med(s1, k, "event_ns") for k in THIRD_PARTY}
    peers_f = {k: v for k, v in peers.items() if v}
    ev = med(s1, "oc_handler", "event_ns")
    if peers_f and ev:
        cheapest = min(peers_f, key=lambda k: peers_f[k])
        check(
            f"handler event cost ÷ cheapest third-party peer ({LABELS[cheapest]})",
            ev / peers_f[cheapest],
            0.25,
            "{:.2f}",
        )
    for key in OC:
        check(
            f"{LABELS[key]}: burst of 5,000 at 20 ms, events/s",
            med(s3, key, "eps20"),
            1000.0,
            "{:,.0f}",
            le=False,
        )
    for key in OC:
        eps = med(s3, key, "eps20")
        check(
            f"{LABELS[key]}: 20 ms burst as a share of max_workers / 0.020 s (32 / 0.020)",
            eps / 1600.0 if eps else None,
            0.9,
            "{:.0%}",
            le=False,
        )
    for key in OC:
        check(
            f"{LABELS[key]}: CPU per delivered event ÷ urllib3 loop",
            med(s2, key, "ratio_urllib3"),
            1.0,
            "{:.2f}\u00d7",
        )
    for key in OC:
        check(
            f"{LABELS[key]}: bytes per queued event (server down)",
            med(s5, key, "bytes_per_kept"),
            1024.0,
            "{:,.0f} B",
        )
    for key in OC:
        check(
            f"{LABELS[key]}: exit with the server down (shutdown_timeout 5 s + 0.5 s)",
            med(s4, key, "exit_s"),
            SHUTDOWN_TIMEOUT + 0.5,
            "{:.2f} s",
        )
    return "\n".join(lines)


# --- charts -----------------------------------------------------------------------------


def _bars(
    ax: Any,
    labels: list[str],
    stats: list[tuple[float, float, float] | None],
    color: Callable[[str], str],
    keys: list[str],
) -> None:
    ys = list(range(len(labels)))
    meds = [s[0] if s else 0.0 for s in stats]
    lo = [s[0] - s[1] if s else 0.0 for s in stats]
    hi = [s[2] - s[0] if s else 0.0 for s in stats]
    ax.barh(ys, meds, xerr=[lo, hi], color=[color(k) for k in keys], capsize=3)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()


def _color(key: str) -> str:
    if key in OC:
        return "#2a7ae2"
    if key in ("null", "structlog_floor", "urllib3_loop", "httpclient_loop"):
        return "#999999"
    return "#e2892a"


def charts(data: dict[str, Any], outdir: str) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    made: list[tuple[str, str]] = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        path = os.path.join(outdir, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append((title, path))

    caller: dict[str, Runs] = data.get("caller", {})
    if caller:
        floors = [r for runs in caller.values() for r in _ok(runs)]
        keys = ["null", *[k for k in caller if not _error(caller[k])]]
        ev = [stat(r.get("floor_event_ns") for r in floors)] + [
            _metric(caller[k], "event_ns") for k in keys[1:]
        ]
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(keys) + 1.2))
        _bars(
            ax,
            [LABELS.get(k, k) for k in keys],
            [(s[0] / 1000, s[1] / 1000, s[2] / 1000) if s else None for s in ev],
            _color,
            keys,
        )
        ax.set_xscale("log")
        ax.set_xlabel("µs per event call in the caller's thread (log scale; median, min\u2013max)")
        ax.set_title("Figure 1: caller's cost per event record")
        save(fig, "fig1_caller_cost.png", "Figure 1: caller's cost per call")

    b0: dict[str, Runs] = data.get("burst0", {})
    if b0:
        keys = [k for k in b0 if not _error(b0[k])]
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(keys) + 1.2))
        _bars(
            ax,
            [LABELS.get(k, k) for k in keys],
            [_metric(b0[k], "cpu_per_event_us") for k in keys],
            _color,
            keys,
        )
        ax.set_xlabel("whole-process CPU µs per delivered event (0 ms server)")
        ax.set_title("Figure 2: CPU per delivered event")
        save(fig, "fig2_cpu_per_event.png", "Figure 2: CPU per delivered event")

    b20: dict[str, Runs] = data.get("burst20", {})
    if b0 or b20:
        keys = [
            k
            for k in dict.fromkeys([*b0, *b20])
            if not (_error(b0.get(k, [])) if b0.get(k) else False)
        ]
        fig, ax = plt.subplots(figsize=(8, 0.55 * len(keys) + 1.2))
        ys = list(range(len(keys)))
        for off, (runs_by, lab, col) in enumerate(
            [(b0, "0 ms", "#7fb3f0"), (b20, "20 ms", "#1f4f8f")]
        ):
            vals = [_metric(runs_by.get(k, []), "events_per_s") for k in keys]
            ax.barh(
                [y + off * 0.4 for y in ys],
                [v[0] if v else 0 for v in vals],
                height=0.4,
                label=lab,
                color=col,
            )
        ax.set_yticks([y + 0.2 for y in ys])
        ax.set_yticklabels([LABELS.get(k, k) for k in keys], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("delivered events/s, burst (log scale; median)")
        ax.legend()
        ax.set_title("Figure 3: delivery throughput")
        save(fig, "fig3_throughput.png", "Figure 3: delivered events/s")

    ex: dict[str, Runs] = data.get("exit", {})
    if b20 or ex:
        keys = [k for k in dict.fromkeys([*b20, *ex])]
        fig, ax = plt.subplots(figsize=(8, 0.55 * len(keys) + 1.2))
        ys = list(range(len(keys)))
        fl = [_metric([r for r in _ok(b20.get(k, [])) if "flush_s" in r], "flush_s") for k in keys]
        xs = [_metric(ex.get(k, []), "exit_s") for k in keys]
        ax.barh(
            [y for y in ys],
            [v[0] if v else 0 for v in fl],
            height=0.4,
            label="flush() of a 20 ms backlog",
            color="#7fb3f0",
        )
        ax.barh(
            [y + 0.4 for y in ys],
            [v[0] if v else 0 for v in xs],
            height=0.4,
            label="exit with server down",
            color="#c0392b",
        )
        ax.set_yticks([y + 0.2 for y in ys])
        ax.set_yticklabels([LABELS.get(k, k) for k in keys], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("seconds (median)")
        ax.legend()
        ax.set_title("Figure 4: drain and exit times")
        save(fig, "fig4_drain_exit.png", "Figure 4: flush and exit times")

    mem: dict[str, Runs] = data.get("memory", {})
    if mem:
        keys = [k for k in mem if not _error(mem[k])]
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(keys) + 1.2))
        _bars(
            ax,
            [LABELS.get(k, k) for k in keys],
            [
                (s[0] / 2**20, s[1] / 2**20, s[2] / 2**20) if s else None
                for s in (_metric(mem[k], "rss_growth_bytes") for k in keys)
            ],
            _color,
            keys,
        )
        ax.set_xlabel("peak RSS growth, MiB, server down (median, min\u2013max)")
        ax.set_title("Figure 5: memory with the server down")
        save(fig, "fig5_memory.png", "Figure 5: memory with the server down")
    return made


# --- the document -----------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    vers = []
    for p in PACKAGES:
        try:
            vers.append(f"{p} {metadata.version(p)}")
        except metadata.PackageNotFoundError:
            vers.append(f"{p} (not installed)")
    return (
        f"- CPU: {cpu}, {os.cpu_count()} cores; {platform.system()} {platform.release()}\n"
        f"- Python {platform.python_version()} ({platform.python_implementation()})\n"
        f"- Packages: {', '.join(vers)}"
    )


def render(data: dict[str, Any], chart_files: list[tuple[str, str]], root: str) -> str:
    t1, s1 = fig1(data)
    t2, s2 = fig2(data)
    t3, s3 = fig3(data)
    t4, s4 = fig4(data)
    t5, s5 = fig5(data)
    cfg = data["config"]
    links = "\n".join(f"- [{title}]({os.path.relpath(path, root)})" for title, path in chart_files)
    la0, la1 = data.get("loadavg_start", [0, 0, 0]), data.get("loadavg_end", [0, 0, 0])
    b20n = cfg["burst20"]
    return f"""# Benchmarks: overcentric-logging and the alternatives

The same business event (`$subscription_purchase` with `plan`, `price`, `user_id`,
`user_email`) goes through each system from the caller's thread, against a loopback HTTP/1.1
keep-alive server running in its own process (`bench/server.py`), which counts requests and
the events inside them (batch bodies too). Every figure is the **median** of
{data["repeats"]} interleaved repeats (each system in a fresh process, the order rotated
every round) with the min\u2013max range in brackets. Ratios are taken inside one process (figure
1) or one round (figure 2) before the median, so noise that hits both sides cancels.

Reproduce with `.venv/bin/python bench/run.py` (about {data["elapsed_s"] / 60:.0f} minutes
here; `--quick` for a smoke run of a few seconds). Peers are installed by the `bench` extra.

## Machine
{machine()}
- Run started {data["started"]}, load average {la0[0]:.2f} at start and {la1[0]:.2f} at the
  end (other jobs were running on this machine: absolute numbers are noisy, ratios less so).

## Targets
{targets(s1, s2, s3, s4, s5)}

## Figure 1: the caller's cost per call
{t1}

What the calling thread pays, per logging call, measured in blocks of up to
{cfg["caller"]["n"]:,} calls against a NullHandler floor in the same process (the ratio
columns), after subtracting the cost of an empty loop; the floor runs while the system is idle,
the system's block while its own background threads work. The non-event record is
`log.info("user %s logged in", "user_123")`; the event record carries the four extras. The
wall-clock columns include the time the caller waits for the GIL while the system's sender
threads run (on a 2-core machine with a busy sender this is most of the gap); the CPU columns
(`time.thread_time`) count only the caller thread's own work. For a user this is what shows
up in request latency: a NullHandler call is the price of the `logging` call itself, so a
ratio near 1{X} means attaching the handler is free for ordinary logs, and the event column is
what each tracked event adds to a request. Synchronous HTTPHandler pays a whole HTTP round trip
in the caller; the batching SDKs pay for building their message (UUIDs, timestamps, context
dicts) before they enqueue it.

## Figure 2: whole-process CPU per delivered event
{t2}

`time.process_time()` of the whole client process (all its threads) from the first call of a
burst of {cfg["burst0"]["n"]:,} events until the server had counted them all, divided by the
events delivered; server latency 0 ms. The baselines send the same JSON body with a bare
`urllib3.PoolManager().request("POST", …)` loop and a raw `http.client` keep-alive loop. This is
what a sender running at a steady rate takes away from the application's GIL and cores.
Overcentric's API takes one event per request, so its floor is one HTTP request per event;
batching peers amortise a request over up to 100\u20131,000 events, which is why they can go below
the HTTP baselines.

## Figure 3: delivery throughput
{t3}

A burst of {cfg["burst20"]["n"]:,} events logged as fast as the caller can (senders that send one
request at a time: {cfg["burst0"].get("sequential_n", cfg["burst0"]["n"]):,} events at 0 ms and
{b20n["sequential_n"]:,} at 20 ms), timed from the
first call to the last event counted by the server. Events/s is what matters to a user;
requests/s shows how each system gets there. Batching peers put many events in one request;
Overcentric has no batch endpoint, so at 20 ms per request its only lever is the number of
requests in flight (`max_workers`, default 32: at most 32 ÷ 0.020 s = 1,600 events/s). The
"delivered / sent" column shows peers that drop events on a burst (a full queue or buffer).

## Figure 4: draining a backlog, and exiting with the server down
{t4}

With the server at 20 ms, {b20n["drain_n"]:,} events are queued and `flush()` (then, with another
{b20n["drain_n"]:,}, `close()`) is timed (`OvercentricHandler.close()` and Logtail's `close()`
do not wait for delivery: the handler's pending events drain in the background and at exit, by
design, so their close column is near zero); sequential senders are not drained here
({b20n["drain_n"]:,} \u00d7 20 ms = {b20n["drain_n"] * 0.02:.0f} s). For exit, a process logs
{cfg["exit"]["n"]:,} events with the server down (connection refused) and returns normally;
the time from the last call to process exit is what a deploy, a cron job or a serverless
function waits. Exits are capped at {cfg["exit"]["cap_s"]:.0f} s (then killed); a system killed
at the cap twice is not run again in later rounds. For a user: how long a `SIGTERM`-ed worker
or a script hangs when the analytics endpoint is unreachable, and whether it says what it lost.

## Figure 5: memory with the server down
{t5}

{cfg["memory"]["n"]:,} events logged with the server down (connection refused), in a fresh
process each; growth of peak RSS over the process's RSS before the first call, what the system
still keeps queued, and what it says it dropped. A bounded queue is what keeps an outage of the
analytics endpoint from turning into an out-of-memory kill of the application; bytes per kept
event tell how much memory the bound costs at its limit.

## Charts
{links}

## Notes
- Every system talks only to 127.0.0.1; PostHog runs with `disable_geoip`, no local flag
  evaluation, no exception autocapture; no peer has a personal/secret key, so none polls for
  flags. The server lists every path it was sent (`paths` in `bench/results.json`).
- With the server down (figures 4 and 5) `logging.raiseExceptions` is `False`, as in
  production, so the stdlib handlers do not print a traceback per record; elsewhere it keeps
  its default. Workers' stderr is kept only for the exit table.
- Raw per-run numbers: `bench/results.json`. Re-render without re-running:
  `.venv/bin/python bench/report.py bench/results.json`.
"""


def print_tables(data: dict[str, Any]) -> None:
    for fn in (fig1, fig2, fig3, fig4, fig5):
        table, _ = fn(data)
        print(f"\n{fn.__name__}:\n{table}")
    s = [fn(data)[1] for fn in (fig1, fig2, fig3, fig4, fig5)]
    print("\ntargets:\n" + targets(*s))


def write_report(data: dict[str, Any], quick: bool, here: str) -> None:
    print_tables(data)
    if quick:
        return
    root = os.path.dirname(here)
    files = charts(data, os.path.join(here, "charts"))
    text = render(data, files, root)
    # The soak and the spool benchmark run on their own (bench/soak.py, bench/spool_bench.py)
    # and write their own results; the report carries their latest figures along.
    for name, title in (
        ("analysis.md", "What limits the figures"),
        ("soak-results.md", "Soak"),
        ("spool-results.md", "Durable spool"),
    ):
        extra = os.path.join(here, name)
        if os.path.exists(extra):
            with open(extra) as f:
                body = f.read().strip()
            body = "\n".join(
                "#" + line if line.startswith("#") else line for line in body.splitlines()
            )
            text += f"\n\n## {title} (from `bench/{name}`)\n\n{body}\n"
    with open(os.path.join(root, "BENCHMARKS.md"), "w") as f:
        f.write(text)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "results.json")
    with open(path) as f:
        data = json.load(f)
    write_report(data, quick=False, here=here)


if __name__ == "__main__":
    main()

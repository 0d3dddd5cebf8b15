"""``python -m overcentric_logging spool PATH``: what a durable spool holds, and repairs.

Prints the counts (queued, of which ready now or waiting for a retry; claimed by a sender now;
failed permanently), the age of the oldest event and the last errors. ``--retry-failed``
re-queues the events that failed permanently (after the cause is fixed: a wrong project id,
say); the next process that uses the spool, or a running one within a second or two, sends
them. ``--purge-failed`` deletes them instead. ``--json`` prints one JSON object. Exit status
0, or 2 when PATH is not a readable spool. The spool is opened read-write (SQLite WAL needs
it) and never created.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any

# Kept in step with overcentric_logging.spool (not imported here, so that building the
# command-line parser stays light).
QUEUED = 0
FAILED = 1

__all__ = ["add_spool_arguments", "spool_main", "spool_report"]


def add_spool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the spool file (spool_path= / OVERCENTRIC_SPOOL_PATH)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="re-queue the events that failed permanently")
    parser.add_argument("--purge-failed", action="store_true",
                        help="delete the events that failed permanently")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--errors", type=int, default=5, help="last errors to show (default 5)")


def spool_report(conn: sqlite3.Connection, errors: int = 5) -> dict[str, Any]:
    """Counts, oldest age and last errors of the spool behind ``conn``."""
    now = time.time()
    queued, ready, claimed, claimers = conn.execute(
        "SELECT "
        "  COALESCE(SUM(claimed_by IS NULL OR ready_at <= ?), 0),"
        "  COALESCE(SUM((claimed_by IS NULL OR ready_at <= ?) AND ready_at <= ?), 0),"
        "  COALESCE(SUM(claimed_by IS NOT NULL AND ready_at > ?), 0),"
        "  COUNT(DISTINCT CASE WHEN claimed_by IS NOT NULL AND ready_at > ? THEN claimed_by END)"
        " FROM events WHERE state = ?",
        (now, now, now, now, now, QUEUED),
    ).fetchone()
    failed = conn.execute("SELECT COUNT(*) FROM events WHERE state = ?", (FAILED,)).fetchone()[0]
    oldest = conn.execute("SELECT MIN(created) FROM events").fetchone()[0]
    n, body_bytes = conn.execute("SELECT n, bytes FROM totals WHERE id = 0").fetchone()
    rows = conn.execute(
        "SELECT id, state, attempts, last_try, last_error FROM events "
        "WHERE last_error IS NOT NULL ORDER BY last_try DESC LIMIT ?",
        (max(0, errors),),
    ).fetchall()
    return {
        "queued": int(queued),
        "ready": int(ready),
        "retrying": int(queued) - int(ready),
        "claimed": int(claimed),
        "claimers": int(claimers),
        "failed": int(failed),
        "total": int(n),
        "body_bytes": int(body_bytes),
        "oldest_age_seconds": None if oldest is None else max(0.0, now - float(oldest)),
        "last_errors": [
            {
                "id": int(r[0]),
                "state": "failed" if r[1] == FAILED else "queued",
                "attempts": int(r[2]),
                "age_seconds": None if r[3] is None else max(0.0, now - float(r[3])),
                "error": str(r[4]),
            }
            for r in rows
        ],
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def spool_main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    if args is None:
        parser = argparse.ArgumentParser(
            prog="python -m overcentric_logging spool",
            description="Show what a durable spool holds; re-queue or purge failed events.",
        )
        add_spool_arguments(parser)
        args = parser.parse_args(argv)
    path: str = args.path
    if not os.path.isfile(path):
        print(f"error: no spool file at {path!r}", file=sys.stderr)
        return 2
    from .spool import connect_spool

    try:
        conn = connect_spool(path, create=False)
    except sqlite3.Error as exc:
        print(f"error: {path!r} is not a readable overcentric-logging spool ({exc})",
              file=sys.stderr)
        return 2
    try:
        actions: dict[str, int] = {}
        if args.retry_failed:
            cur = conn.execute(
                "UPDATE events SET state = ?, claimed_by = NULL, ready_at = 0, origin = ? "
                "WHERE state = ?",
                (QUEUED, "cli-retry", FAILED),
            )
            actions["requeued"] = max(0, cur.rowcount)
        if args.purge_failed:
            cur = conn.execute("DELETE FROM events WHERE state = ?", (FAILED,))
            actions["purged"] = max(0, cur.rowcount)
        report = spool_report(conn, args.errors)
    except sqlite3.Error as exc:
        print(f"error: cannot read the spool {path!r} ({exc})", file=sys.stderr)
        return 2
    finally:
        conn.close()
    report["path"] = os.path.abspath(path)
    report["file_bytes"] = sum(
        os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s)
    )
    report.update(actions)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    out = [
        f"spool {report['path']} ({report['file_bytes'] / 1024:.1f} KiB on disk, "
        f"{report['body_bytes']} bytes of events)",
        f"  queued:  {report['queued']} (ready now: {report['ready']}, "
        f"waiting to retry: {report['retrying']})",
        f"  claimed: {report['claimed']} (by {report['claimers']} sender(s) now)",
        f"  failed:  {report['failed']}"
        + ("  (re-queue with --retry-failed after fixing the cause)" if report["failed"] else ""),
        f"  oldest:  {_age(report['oldest_age_seconds'])}"
        + (" ago" if report["oldest_age_seconds"] is not None else ""),
    ]
    if "requeued" in actions:
        out.append(f"re-queued {actions['requeued']} failed event(s)")
    if "purged" in actions:
        out.append(f"purged {actions['purged']} failed event(s)")
    if report["last_errors"]:
        out.append("  last errors:")
        for e in report["last_errors"]:
            out.append(
                f"    #{e['id']} {e['state']}, {e['attempts']} attempt(s), "
                f"{_age(e['age_seconds'])} ago: {e['error']}"
            )
    print("\n".join(out))
    return 0

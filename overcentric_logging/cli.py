"""The command line: ``python -m overcentric_logging`` (also ``overcentric-logging``).

``serve`` runs the local receiver that demos and development ship events to;
``send-test-event`` sends one well-formed event synchronously and prints exactly what was sent
and what the server answered, with a one-line diagnosis when it fails; ``check-config`` builds
a logging configuration file and lists the Overcentric handlers it defines.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import uuid
from collections.abc import Sequence

__all__ = ["main"]


def _diagnose(exc: BaseException, endpoint: str) -> str:
    """One line that says what went wrong, from the innermost cause urllib3 wraps."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = getattr(cur, "reason", None) or cur.__cause__ or cur.__context__
    text = " ".join(f"{type(e).__name__}: {e}" for e in seen)
    for e in seen:
        if isinstance(e, socket.gaierror) or "NameResolution" in type(e).__name__:
            return f"DNS: cannot resolve the host of {endpoint} ({e})"
        if isinstance(e, ssl.SSLError) or "SSL" in type(e).__name__:
            return f"TLS: the secure connection to {endpoint} failed ({e})"
        if isinstance(e, ConnectionRefusedError) or "refused" in str(e).lower():
            return f"refused: nothing is listening at {endpoint} (is the server running?)"
        if isinstance(e, TimeoutError) or "Timeout" in type(e).__name__:
            return f"timeout: {endpoint} did not answer in time"
    return f"network error: {text}"


def _send_test_event(args: argparse.Namespace) -> int:
    import urllib3

    from .config import build_config
    from .mapping import RawEvent, build_payload
    from .schema import validate_payload
    from .values import encode

    try:
        config = build_config(
            project_id=args.project_id, endpoint=args.endpoint, context=args.context,
            timeout=args.timeout,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raw = RawEvent(
        args.name,
        {"properties": {"source": "overcentric-logging send-test-event"},
         "user_id": args.user_id} if args.user_id else
        {"properties": {"source": "overcentric-logging send-test-event"}},
        {},
        "track",
    )
    payload = build_payload(raw, config, str(uuid.uuid4()))
    body = encode(payload, config.max_event_bytes) or b""
    problems = validate_payload(payload)
    print(f"POST {config.endpoint}")
    print(json.dumps(payload, indent=2, ensure_ascii=False))
    if problems:
        print("local schema check failed: " + "; ".join(problems), file=sys.stderr)
        return 1
    http = urllib3.PoolManager()
    try:
        resp = http.request(
            "POST", config.endpoint, body=body,
            headers={"Content-Type": "application/json"},
            retries=False, redirect=False,
            timeout=urllib3.Timeout(total=config.timeout),
        )
    except Exception as exc:
        print(f"failed: {_diagnose(exc, config.endpoint)}", file=sys.stderr)
        return 1
    text = resp.data[:2000].decode("utf-8", "replace")
    print(f"HTTP {resp.status}")
    print(text)
    if 200 <= resp.status < 300:
        print("ok: the server accepted the event")
        return 0
    kind = "rejected (client error, not retried)" if resp.status < 500 else "server error"
    print(f"failed: HTTP {resp.status} {kind}: {text[:200]!r}", file=sys.stderr)
    return 1


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m overcentric_logging",
        description="Tools for overcentric-logging: a local receiver, a test event, "
        "a config check.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="run a local receiver on 127.0.0.1 that prints and validates every event"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 = any)")
    serve.add_argument("--json", action="store_true", help="print each event as one JSON line")
    serve.add_argument("--quiet", action="store_true", help="print nothing per event")

    test = sub.add_parser(
        "send-test-event",
        help="send one event synchronously and show what was sent and what the server answered",
    )
    test.add_argument("--project-id", default=os.environ.get("OVERCENTRIC_PROJECT_ID"),
                      help="your Overcentric project id (default: $OVERCENTRIC_PROJECT_ID)")
    test.add_argument("--endpoint", default=None,
                      help="event endpoint (default: $OVERCENTRIC_ENDPOINT or the public URL)")
    test.add_argument("--context", choices=["product", "website"], default="product")
    test.add_argument("--name", default="overcentric_logging_test_event", help="event name")
    test.add_argument("--user-id", default=None, help="a unique identifier to send as identity")
    test.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")

    check = sub.add_parser(
        "check-config",
        help="build a logging config (JSON, YAML or INI) and list its Overcentric handlers",
    )
    check.add_argument("path", help="a dictConfig file (.json/.yaml/.yml) or a fileConfig .ini")

    from .spool_cli import add_spool_arguments

    add_spool_arguments(sub.add_parser(
        "spool", help="show what a durable spool holds (counts, oldest, last errors); "
        "--retry-failed re-queues failed events",
    ))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        from .receiver import serve_main

        forwarded = ["--host", args.host, "--port", str(args.port)]
        if args.json:
            forwarded.append("--json")
        if args.quiet:
            forwarded.append("--quiet")
        return serve_main(forwarded)
    if args.command == "send-test-event":
        return _send_test_event(args)
    if args.command == "check-config":
        from .check_config import check_config_main

        return int(check_config_main(args.path))
    if args.command == "spool":
        from .spool_cli import spool_main

        return spool_main(args=args)
    parser.print_help()
    return 2


"""The demo the README starts with: events through dictConfig, structlog and the client,
shipped to a local receiver (the embedded default) and shown.

Run: python examples/demo.py
"""

from __future__ import annotations

import json
import logging
import logging.config

import overcentric_logging
from overcentric_logging.receiver import Receiver


def main() -> int:
    receiver = Receiver(quiet=True).start()
    print(f"local receiver listening at {receiver.url}\n")

    # a) stdlib: one handler in dictConfig; ordinary logging calls stay as they are.
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "plain"},
            "overcentric": {
                "class": "overcentric_logging.OvercentricHandler",
                "project_id": "proj_demo",
                "endpoint": receiver.url,
            },
        },
        "root": {"level": "INFO", "handlers": ["console", "overcentric"]},
    })
    log = logging.getLogger("billing")
    log.info("an ordinary log line: never sent")
    with overcentric_logging.bound(device_id="d-browser-1", session_id="s-browser-1",
                                   url="https://app.example.com/checkout/success"):
        log.info("$subscription_purchase", extra={
            "plan": "premium", "price": 9.99, "user_id": "user_123",
            "user_email": "u@example.com", "password": "hunter2"})
    log.info("user signed up", extra={"event_name": "$signup", "user_id": "user_456",
                                      "plan": "free"})

    # b) structlog: a processor in the chain, sharing the handler's client.
    handler = next(h for h in logging.getLogger().handlers
                   if isinstance(h, overcentric_logging.OvercentricHandler))
    client = handler.client
    try:
        import structlog
    except ImportError:
        print("(structlog is not installed: skipping the structlog part)")
    else:
        structlog.configure(processors=[
            structlog.contextvars.merge_contextvars,
            overcentric_logging.OvercentricProcessor(client=client),
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ])
        slog = structlog.get_logger()
        slog.info("$login", user_id="user_123", method="password")
        slog.info("document_created")  # not an event: no '$' and not in events=[...]

    # c) direct, no logging at all.
    client.track("invite_sent", {"invitee": "friend@example.com"}, user_id="user_123")

    delivered = client.flush(timeout=5)
    receiver.wait_for(4, timeout=5)
    print(f"\nflush() -> {delivered}; the receiver got {len(receiver.events)} event(s):")
    for body in receiver.events:
        print(json.dumps(body, sort_keys=True))
    print(f"\nstats(): {client.stats()}")
    receiver.stop()
    return 0 if delivered and len(receiver.events) == 4 else 1


if __name__ == "__main__":
    raise SystemExit(main())

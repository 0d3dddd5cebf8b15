"""structlog: OvercentricProcessor in the processor chain.

Fields bound with structlog.contextvars (per request, per task) land on the event too.
Ships to $OVERCENTRIC_ENDPOINT if set, else to an embedded local receiver.
Run: python examples/structlog_processor.py
"""

from __future__ import annotations

import os

import structlog

import overcentric_logging
from overcentric_logging.receiver import Receiver

receiver = None
endpoint = os.environ.get("OVERCENTRIC_ENDPOINT")
if not endpoint:
    receiver = Receiver().start()
    endpoint = receiver.url

processor = overcentric_logging.OvercentricProcessor(
    project_id=os.environ.get("OVERCENTRIC_PROJECT_ID", "proj_example"), endpoint=endpoint
)
structlog.configure(processors=[
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    processor,  # before the renderer: it needs the event dict, and returns it untouched
    structlog.processors.TimeStamper(fmt="iso"),
    structlog.dev.ConsoleRenderer(colors=False),
])

log = structlog.get_logger()
structlog.contextvars.bind_contextvars(device_id="d-123", session_id="s-456")
log.info("$signup", user_id="user_123", user_email="u@example.com", plan="free")
log.info("$login", user_id="user_123", method="sso")
log.info("rendered dashboard", widgets=7)  # not an event
structlog.contextvars.clear_contextvars()

ok = processor.client.flush(timeout=5)
print("delivered:", ok, "stats:", processor.stats())
if receiver is not None:
    receiver.stop()
raise SystemExit(0 if ok and processor.stats()["sent"] == 2 else 1)

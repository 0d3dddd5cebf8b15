"""stdlib logging + dictConfig: one handler in the config, ordinary logging calls.

Ships to $OVERCENTRIC_ENDPOINT if set, else to an embedded local receiver that prints each
event it gets. Run: python examples/stdlib_dictconfig.py
"""

from __future__ import annotations

import logging
import logging.config
import os

import overcentric_logging
from overcentric_logging.receiver import Receiver

receiver = None
endpoint = os.environ.get("OVERCENTRIC_ENDPOINT")
if not endpoint:
    receiver = Receiver().start()
    endpoint = receiver.url

logging.config.dictConfig({
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "overcentric": {
            "class": "overcentric_logging.OvercentricHandler",
            "project_id": os.environ.get("OVERCENTRIC_PROJECT_ID", "proj_example"),
            "endpoint": endpoint,
            "events": ["document_created", "invite_*"],  # tracked without a '$' too
        },
    },
    "root": {"level": "INFO", "handlers": ["console", "overcentric"]},
})

log = logging.getLogger("billing")
log.info("checkout page rendered")  # an ordinary log line: never sent
log.info("$subscription_purchase", extra={
    "plan": "premium", "price": 9.99, "currency": "EUR",
    "user_id": "user_123", "user_email": "u@example.com", "user_name": "Ada Lovelace",
})
log.info("document_created", extra={"user_id": "user_123", "words": 1200})
log.info("invite_sent", extra={"user_id": "user_123", "invitee_domain": "example.org"})

ok = overcentric_logging.flush(timeout=5)
handler = next(h for h in logging.getLogger().handlers
               if isinstance(h, overcentric_logging.OvercentricHandler))
print("delivered:", ok, "stats:", handler.stats())
if receiver is not None:
    receiver.stop()
raise SystemExit(0 if ok and handler.stats()["sent"] == 3 else 1)

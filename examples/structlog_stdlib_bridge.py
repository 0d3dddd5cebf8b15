"""structlog routed into stdlib logging: only the handler is attached (in dictConfig).

Both bridge modes are shown: ProcessorFormatter.wrap_for_formatter (the record's msg is the
event dict) and render_to_log_kwargs (the keys arrive as `extra`). The handler recognises
events from either. Ships to $OVERCENTRIC_ENDPOINT if set, else to an embedded receiver.
Run: python examples/structlog_stdlib_bridge.py
"""

from __future__ import annotations

import logging
import logging.config
import os

import structlog

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
    "formatters": {
        "structlog": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processor": structlog.dev.ConsoleRenderer(colors=False),
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "structlog"},
        "overcentric": {
            "class": "overcentric_logging.OvercentricHandler",
            "project_id": os.environ.get("OVERCENTRIC_PROJECT_ID", "proj_example"),
            "endpoint": endpoint,
        },
    },
    "root": {"level": "INFO", "handlers": ["console", "overcentric"]},
})

# Mode 1: wrap_for_formatter.
structlog.configure(
    processors=[
        structlog.stdlib.add_log_level,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=False,
)
structlog.get_logger("billing").info("$subscription_upgrade", user_id="user_123", plan="team")

# Mode 2: render_to_log_kwargs.
structlog.configure(
    processors=[structlog.stdlib.render_to_log_kwargs],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=False,
)
structlog.get_logger("billing").info("$subscription_cancel", user_id="user_123", reason="price")

ok = overcentric_logging.flush(timeout=5)
handler = next(h for h in logging.getLogger().handlers
               if isinstance(h, overcentric_logging.OvercentricHandler))
print("delivered:", ok, "stats:", handler.stats())
if receiver is not None:
    receiver.stop()
raise SystemExit(0 if ok and handler.stats()["sent"] == 2 else 1)

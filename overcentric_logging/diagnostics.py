"""The library's own voice: a logger under ``overcentric_logging`` and rate-limited warnings.

Diagnostics go to ``logging.getLogger("overcentric_logging...")``, which carries a
``NullHandler`` and never touches the root logger's configuration. Records from these loggers
are rejected by the handler's filter, so a warning about a failed delivery can never become an
event, nor recurse. :class:`RateLimiter` keeps a noisy failure (a dead server, a full queue)
to one line per key per interval, with the count of what it suppressed.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["RateLimiter", "logger"]

logger = logging.getLogger("overcentric_logging")
logger.addHandler(logging.NullHandler())


class RateLimiter:
    """Logs at most one warning per key per ``interval`` seconds, counting the rest."""

    def __init__(self, interval: float = 60.0, max_keys: int = 256) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, message: str, *, once: bool = False) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and (once or now - last < self.interval):
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            if last is None and len(self._last) >= self.max_keys:
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" ({suppressed} similar message(s) suppressed)"
        try:
            logger.warning(message)
        except Exception:
            pass
        return True

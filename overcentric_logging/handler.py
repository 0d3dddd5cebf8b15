"""``OvercentricHandler``: a ``logging.Handler`` that turns event records into events.

Attach it in code, in ``dictConfig`` (``"class": "overcentric_logging.OvercentricHandler"``
plus the client's keyword options) or in ``fileConfig`` (``args=('project_id',)``), and every
record whose message names an event (SPEC §2) is handed to the client; every other record is
rejected after a few attribute lookups. :meth:`handle` is overridden so that recognition runs
before the handler lock (which this handler never needs: the queue is thread-safe) and so
that the recursion filter runs only for event records. The handler also understands records
produced by structlog's stdlib bridge, in both ``ProcessorFormatter.wrap_for_formatter`` and
``render_to_log_kwargs`` modes.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Union

from . import processor as _processor
from .client import Client, own_or_shared
from .context import _bound
from .processor import tracked_by_processor
from .sender import sender_thread_idents

__all__ = ["OvercentricHandler", "RejectOwnRecords"]

_OWN_LOGGERS = ("overcentric_logging", "urllib3")
_OWN_PREFIXES = tuple(f"{own}." for own in _OWN_LOGGERS)


def _is_own(record: logging.LogRecord) -> bool:
    name = record.name
    return (
        name in _OWN_LOGGERS
        or name.startswith(_OWN_PREFIXES)
        or record.thread in sender_thread_idents
    )


class RejectOwnRecords(logging.Filter):
    """Rejects records that must never become events: this library's own diagnostics,
    urllib3's (the sender's HTTP layer) and anything logged from a sender thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_own(record)


class OvercentricHandler(logging.Handler):
    """Sends log records that name an event to Overcentric, in the background.

    ``OvercentricHandler(project_id, level=NOTSET, *, client=None, **options)``: options are
    the :class:`~overcentric_logging.Client` keywords; with ``client=`` the handler shares that
    client (and passing options too is a ``ValueError``).
    """

    def __init__(
        self,
        project_id: str | None = None,
        level: Union[int, str] = logging.NOTSET,
        *,
        client: Client | None = None,
        **options: Any,
    ) -> None:
        # Validate first: Handler.__init__ registers the handler with logging, whose
        # shutdown/dictConfig would later trip over a half-built one.
        self.client, self._owns_client = own_or_shared(
            client, project_id, options, "OvercentricHandler"
        )
        super().__init__(level)
        self._recognizer = self.client.recognizer
        self._sender = self.client._sender
        self._closed = False
        self._own_filter = RejectOwnRecords()
        self.addFilter(self._own_filter)

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<OvercentricHandler {self.client.config.endpoint} ({level})>"

    def handle(self, record: logging.LogRecord) -> Any:
        # The hot path of every logging call that reaches this handler: recognition first
        # (a non-event costs a few attribute lookups), no handler lock (the queue is
        # thread-safe), and the filters only for records that name an event.
        sender = self._sender
        if sender is None:
            return False  # disabled: nothing is built or sent
        try:
            rec = self._recognizer
            msg = record.msg
            kind = "record"
            if msg.__class__ is str:
                prefix = rec.prefix
                if prefix is not None and msg.startswith(prefix):
                    name: Any = msg
                elif msg in rec.exact or (rec.pattern is not None and rec.pattern.match(msg)):
                    name = msg
                else:
                    # getattr, not record.__dict__: touching __dict__ makes CPython 3.11+
                    # build a dict for the record, which a non-event must not pay for.
                    name = getattr(record, rec.name_key, None)
                    if name is None:
                        return False
                fields: Any = record.__dict__
            elif isinstance(msg, dict):
                # structlog's ProcessorFormatter.wrap_for_formatter: msg is the event dict.
                name = rec.match_fields(msg.get("event"), msg)
                if name is None:
                    return False
                fields = msg
                kind = "dict"
            else:
                name = rec.match_message(msg) or getattr(record, rec.name_key, None)
                if name is None:
                    return False
                fields = record.__dict__
            filters = self.filters
            if len(filters) == 1 and filters[0] is self._own_filter:
                if _is_own(record):
                    return False
            elif not self.filter(record):
                return False
            if _processor.marks_in_use and tracked_by_processor(record, msg):
                return False
            if self._closed:
                sender.reject("closed")
                return False
            exc = record.exc_info or (fields.get("exc_info") if kind == "dict" else None)
            if exc is True:
                exc = sys.exc_info()
            sender.enqueue(name, fields.copy(), _bound.get(), kind, exc)
            return True
        except Exception:
            # A logging call never raises because of this library.
            return False

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def flush(self) -> None:
        """Wake the sender without waiting: ``dictConfig`` and ``logging.shutdown`` call this
        while holding logging's locks. Use ``handler.client.flush(timeout)`` to wait."""
        sender = self._sender
        if sender is not None:
            try:
                sender.nudge()
            except Exception:
                pass

    def close(self) -> None:
        """Stop intake. The pending events of an owned client drain in the background (and
        the client's exit flush waits for them, at most ``shutdown_timeout``), so that
        re-running ``dictConfig`` never stalls on the network."""
        if not self._closed:
            self._closed = True
            if self._owns_client:
                sender = self._sender
                if sender is not None:
                    try:
                        sender.close(wait=False)
                    except Exception:
                        pass
        super().close()

    def stats(self) -> dict[str, int]:
        return self.client.stats()



"""``OvercentricProcessor``: a structlog processor that tracks event dicts as events.

Put it in a structlog processor chain; an event dict whose ``event`` names an event (SPEC §2)
is handed to the client and returned untouched (or dropped from log output with
``drop=True``). Fields bound with ``structlog.contextvars`` are picked up even when
``merge_contextvars`` is not in the chain. structlog is imported only when it is needed, so
this module (and ``overcentric_logging.OvercentricProcessor``) imports without it.

A tracked dict is remembered in a thread-local so that an :class:`OvercentricHandler` further
down the same pipeline (structlog routed into stdlib) recognises the record that carries it
and does not send the event a second time; nothing is added to the event dict itself.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Callable

from .client import Client, own_or_shared
from .context import _bound

__all__ = ["OvercentricProcessor", "tracked_by_processor"]

class _Marks(threading.local):
    # A class default, so that a thread with no mark reads None without an AttributeError.
    last: tuple[Any, Any, str] | None = None


_marks = _Marks()
# Set once a processor has tracked an event: until then a handler need not look for marks.
marks_in_use = False


def tracked_by_processor(record: Any, msg: Any) -> bool:
    """Whether this stdlib record carries the event dict a processor just tracked.

    The record carries it when its message is the tracked dict itself
    (``wrap_for_formatter``), or a dict (a later processor copied it) or the ``event``
    string (``render_to_log_kwargs``, where the other keys became record attributes) whose
    fields are the tracked dict's, and it comes from the logger the processor saw.
    """
    mark = _marks.last
    if mark is None:
        return False
    tracked, message, logger_name = mark
    if msg is tracked:
        _marks.last = None
        return True  # ProcessorFormatter.wrap_for_formatter
    if logger_name is not None and record.name != logger_name:
        # A mark left by an event whose stdlib record was filtered out (by level, say)
        # must not swallow a plain stdlib record from another logger.
        return False
    if isinstance(msg, dict):
        fields: Any = msg  # wrap_for_formatter after a processor that returned a new dict
        if msg.get("event") != message:
            return False
    else:
        if msg != message:
            return False
        fields = record.__dict__  # render_to_log_kwargs: the event dict became ``extra``
    for key, value in tracked.items():
        if key in _POPPED_BY_BRIDGE:
            continue
        other = fields.get(key, _marks)
        if other is not value and (other is _marks or not _same(other, value)):
            return False
    _marks.last = None
    return True


# render_to_log_kwargs moves these out of ``extra`` (into msg and the logging call's kwargs).
_POPPED_BY_BRIDGE = frozenset({"event", "exc_info", "stack_info", "stacklevel"})


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


def _structlog_contextvars() -> Callable[[], dict[str, Any]] | None:
    module = sys.modules.get("structlog.contextvars")
    if module is None:
        try:
            import structlog.contextvars as module
        except ImportError:
            return None
    return getattr(module, "get_contextvars", None)


class OvercentricProcessor:
    """structlog processor: ``OvercentricProcessor(project_id, *, client=None, drop=False,
    **options)``, with the same options as :class:`~overcentric_logging.Client`."""

    def __init__(
        self,
        project_id: str | None = None,
        *,
        client: Client | None = None,
        drop: bool = False,
        **options: Any,
    ) -> None:
        self.client, self._owns_client = own_or_shared(
            client, project_id, options, "OvercentricProcessor"
        )
        self._recognizer = self.client.recognizer
        self._drop_exc: type[BaseException] | None = None
        if drop:
            try:
                from structlog import DropEvent
            except ImportError as exc:
                raise ValueError("drop=True needs structlog installed") from exc
            self._drop_exc = DropEvent
        self._contextvars = _structlog_contextvars()

    def __repr__(self) -> str:
        return f"<OvercentricProcessor {self.client.config.endpoint}>"

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        global marks_in_use
        try:
            name = self._recognizer.match_fields(event_dict.get("event"), event_dict)
            if name is None:
                return event_dict
            exc = event_dict.get("exc_info")
            if exc is True:
                exc = sys.exc_info()
            extra_bound = None
            if self._contextvars is not None:
                extra_bound = self._contextvars()
            sender = self.client._sender
            if sender is not None:
                sender.enqueue(name, dict(event_dict), _bound.get(), "dict", exc, extra_bound)
            # Only a stdlib logger turns this call into a LogRecord that a handler may see;
            # marking anything else would leave a stale mark that could swallow a later,
            # unrelated record.
            if isinstance(logger, logging.Logger):
                marks_in_use = True
                _marks.last = (event_dict, event_dict.get("event"), logger.name)
            else:
                _marks.last = None
        except Exception:
            return event_dict
        if self._drop_exc is not None:
            raise self._drop_exc
        return event_dict

    def flush(self, timeout: float | None = None) -> bool:
        return self.client.flush(timeout)

    def stats(self) -> dict[str, int]:
        return self.client.stats()

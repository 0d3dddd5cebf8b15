"""The exceptions handed to ``on_error``: why an event was not delivered.

None of these is ever raised into the application's logging call. The sender creates one per
lost event (or one per batch of drops of the same reason) and passes it, with the payload when
one exists, to the user's ``on_error(payload, error)`` callback, so a caller can tell a
permanent rejection (fix the data) from exhausted retries (the server was away) from a local
drop (queue full, closed, too large, filtered by ``before_send``, process exit).
"""

from __future__ import annotations

__all__ = ["DeliveryError", "EventDropped", "EventRejected", "RetriesExhausted"]


class DeliveryError(Exception):
    """Base class: an event was not accepted by the server."""

    reason: str = "error"


class EventRejected(DeliveryError):
    """The server answered with a permanent 4xx; the event is not retried."""

    reason = "rejected"

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        text = body.decode("utf-8", "replace")
        super().__init__(f"server rejected the event with HTTP {status}: {text!r}")


class RetriesExhausted(DeliveryError):
    """Transient failures (408/429/5xx, network) lasted longer than the retry budget."""

    reason = "retries_exhausted"

    def __init__(self, attempts: int, last_error: str, status: int | None = None) -> None:
        self.attempts = attempts
        self.last_error = last_error
        self.status = status
        super().__init__(f"gave up after {attempts} attempt(s); last error: {last_error}")


class EventDropped(DeliveryError):
    """The event never left the process: ``reason`` says why, ``count`` how many."""

    def __init__(self, reason: str, count: int = 1, detail: str = "") -> None:
        self.reason = reason
        self.count = count
        self.detail = detail
        what = "1 event" if count == 1 else f"{count} events"
        super().__init__(f"{what} dropped ({reason}){': ' + detail if detail else ''}")

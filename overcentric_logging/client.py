"""The one core behind every way in: :class:`Client` owns configuration, mapping and sender.

A handler, a structlog processor and direct ``track()`` calls all end in the client's sender,
so they share one queue, one connection pool and one set of counters when they share a client.
Each client registers its own bounded exit flush, and :func:`flush` reaches every live client
in the process (the one call a serverless function or a test needs).
"""

from __future__ import annotations

import atexit
import time
import weakref
from collections.abc import Mapping
from typing import Any

from .config import Config, build_config
from .context import _bound
from .mapping import Recognizer
from .sender import Sender, live_senders

__all__ = ["Client", "flush"]

_ZERO_STATS = {"tracked": 0, "sent": 0, "failed": 0, "dropped": 0, "retries": 0, "pending": 0}


def _exit_flush(ref: weakref.ref[Sender]) -> None:
    sender = ref()
    if sender is not None:
        try:
            sender.at_exit()
        except Exception:
            pass


class Client:
    """Sends Overcentric events in the background. See SPEC §4 for every option.

    ``Client(project_id="proj_1")`` reads the rest from keyword arguments and the environment
    (``OVERCENTRIC_PROJECT_ID``, ``OVERCENTRIC_ENDPOINT``, ``OVERCENTRIC_DISABLED``) and raises
    :class:`ValueError` naming the option to fix when something is unusable.
    """

    def __init__(self, project_id: str | None = None, **options: Any) -> None:
        self.config: Config = build_config(project_id=project_id, **options)
        config = self.config
        self.recognizer = Recognizer(config.prefix, config.events, config.name_key)
        self._sender: Sender | None = None
        if config.enabled:
            self._sender = _make_sender(config)
            atexit.register(_exit_flush, weakref.ref(self._sender))

    @property
    def enabled(self) -> bool:
        return self._sender is not None

    def __repr__(self) -> str:
        return (
            f"<Client project_id={self.config.masked_project_id!r} "
            f"endpoint={self.config.endpoint!r} enabled={self.enabled}>"
        )

    # -- intake ---------------------------------------------------------------------------

    def track(
        self,
        name: str,
        properties: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Send one event. Keyword fields follow the mapping table (``user_id``, ``device_id``,
        ``session_id``, ``url``, ...); any other keyword becomes a property. Never raises."""
        sender = self._sender
        if sender is None:
            return
        if properties is not None:
            fields["properties"] = properties
        sender.enqueue(name, fields, _bound.get(), "track")

    # -- lifecycle ------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event tracked so far is sent or has failed; ``False`` on timeout."""
        sender = self._sender
        return True if sender is None else sender.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Stop intake and flush within ``timeout`` (default ``shutdown_timeout``).

        What is still unsent at the deadline is counted as dropped and reported. Idempotent.
        """
        sender = self._sender
        return True if sender is None else sender.close(timeout)

    def stats(self) -> dict[str, int]:
        """Counts: tracked, sent, failed, dropped, retries, pending."""
        sender = self._sender
        return dict(_ZERO_STATS) if sender is None else sender.stats()

    @property
    def dropped_reasons(self) -> dict[str, int]:
        sender = self._sender
        return {} if sender is None else dict(sender.dropped_reasons)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_sender(config: Config) -> Sender:
    if config.spool_path:
        from .spool import SpoolSender

        return SpoolSender(config)
    return Sender(config)


def flush(timeout: float | None = None) -> bool:
    """Flush every live client in this process within one shared ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    ok = True
    for sender in list(live_senders):
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ok = sender.flush(left) and ok
    return ok


def own_or_shared(
    client: Client | None, project_id: str | None, options: dict[str, Any], who: str
) -> tuple[Client, bool]:
    """The client an adapter uses, and whether the adapter owns (and so closes) it."""
    if client is None:
        return Client(project_id, **options), True
    if not isinstance(client, Client):
        raise ValueError(f"{who}: client= must be an overcentric_logging.Client, got {client!r}")
    extra = sorted(options) + (["project_id"] if project_id is not None else [])
    if extra:
        raise ValueError(
            f"{who}: {', '.join(extra)} cannot be passed together with client=; "
            "configure them on the shared Client instead"
        )
    return client, False

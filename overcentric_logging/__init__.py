"""overcentric-logging: ordinary logging calls in, Overcentric analytics events out.

``logging.getLogger("billing").info("$subscription_purchase", extra={...})`` with an
:class:`OvercentricHandler` attached (or a structlog chain with :class:`OvercentricProcessor`,
or :meth:`Client.track`) becomes a server-side event, delivered in the background. This module
is the public surface; see SPEC.md and the README.
"""

from __future__ import annotations

from ._version import __version__
from .client import Client, flush
from .context import bind, bound, get_bound, unbind
from .errors import DeliveryError, EventDropped, EventRejected, RetriesExhausted
from .handler import OvercentricHandler
from .processor import OvercentricProcessor

__all__ = [
    "Client",
    "DeliveryError",
    "EventDropped",
    "EventRejected",
    "OvercentricHandler",
    "OvercentricProcessor",
    "RetriesExhausted",
    "__version__",
    "bind",
    "bound",
    "flush",
    "get_bound",
    "unbind",
]

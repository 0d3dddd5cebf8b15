"""overcentric-logging: ordinary logging calls in, Overcentric analytics events out.

``logging.getLogger("billing").info("$subscription_purchase", extra={...})`` with an
:class:`OvercentricHandler` attached (or a structlog chain with :class:`OvercentricProcessor`,
or :meth:`Client.track`) becomes a server-side event, delivered in the background. This module
is the public surface. Its names are imported on first use (PEP 562), so importing the package
(as the pytest plugin does in every test run) loads neither urllib3 nor the sender.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .client import Client, flush
    from .context import bind, bound, get_bound, unbind
    from .errors import DeliveryError, EventDropped, EventRejected, RetriesExhausted
    from .handler import OvercentricHandler
    from .processor import OvercentricProcessor

_WHERE = {
    "Client": ".client",
    "flush": ".client",
    "bind": ".context",
    "bound": ".context",
    "get_bound": ".context",
    "unbind": ".context",
    "DeliveryError": ".errors",
    "EventDropped": ".errors",
    "EventRejected": ".errors",
    "RetriesExhausted": ".errors",
    "OvercentricHandler": ".handler",
    "OvercentricProcessor": ".processor",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'overcentric_logging' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Configuration: every keyword a client, handler or processor accepts, validated once.

:class:`Config` is built by :func:`build_config` from plain keyword arguments (the kind that
``dictConfig``, ``fileConfig`` and environment variables produce), fills in environment
fallbacks, and rejects a bad value at construction with a :class:`ValueError` that names the
keyword and says what would be accepted. Nothing here does I/O or starts threads; the result is
immutable so the sender and the mapping can read it from any thread without locks.
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional
from urllib.parse import urlsplit

from .values import DEFAULT_DENY_KEYS, compile_deny

__all__ = ["DEFAULT_ENDPOINT", "Config", "build_config", "resolve_callable"]

DEFAULT_ENDPOINT = "https://app.overcentric.com/api/v1/event"

OnError = Callable[[Optional[Mapping[str, Any]], BaseException], object]
BeforeSend = Callable[[dict[str, Any]], Optional[dict[str, Any]]]

# Keys the mapping understands; ``field_map`` may rename user keys onto any of them.
MAPPED_KEYS = frozenset(
    {
        "user_id",
        "unique_identifier",
        "user_email",
        "user_name",
        "identity",
        "device_id",
        "session_id",
        "url",
        "hostname",
        "context",
        "properties",
    }
)


@dataclasses.dataclass(frozen=True)
class Config:
    """The validated settings of one client. Built by :func:`build_config`."""

    project_id: str
    endpoint: str
    context: str = "product"
    device_id: str | None = None
    session_id: str | None = None
    prefix: str | None = "$"
    events: tuple[str, ...] = ()
    name_key: str = "event_name"
    field_map: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exclude_keys: frozenset[str] = frozenset()
    max_queue_size: int = 10_000
    max_workers: int = 32
    timeout: float = 10.0
    max_retries: int = 8
    retry_budget: float = 120.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    shutdown_timeout: float = 5.0
    sync: bool = False
    enabled: bool = True
    on_error: OnError | None = None
    before_send: BeforeSend | None = None
    max_event_bytes: int = 64 * 1024
    deny_pattern: re.Pattern[str] | None = None
    proxy: str | None = None
    ca_certs: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    spool_path: str | None = None
    max_spool_bytes: int = 256 * 1024 * 1024
    max_spool_events: int = 1_000_000
    spool_sync: str = "normal"

    @property
    def masked_project_id(self) -> str:
        pid = self.project_id
        return pid[:3] + "…" if len(pid) > 4 else "…"


def resolve_callable(value: object, key: str) -> Callable[..., Any] | None:
    """Accept a callable, ``None``, or an ``"ext://pkg.mod.func"`` / ``"pkg.mod:func"`` string."""
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        dotted = value[len("ext://") :] if value.startswith("ext://") else value
        dotted = dotted.replace(":", ".")
        module_name, _, attr = dotted.rpartition(".")
        if module_name and attr:
            try:
                obj = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"{key}={value!r}: cannot import it ({exc})") from exc
            if callable(obj):
                return obj  # type: ignore[no-any-return]
        raise ValueError(f"{key}={value!r} is not a callable or an 'ext://module.function' path")
    raise ValueError(
        f"{key} must be a callable or an 'ext://module.function' string, got {value!r}"
    )


def _bool(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
    raise ValueError(f"{key} must be true or false, got {value!r}")


def _number(value: object, key: str, *, minimum: float, integer: bool) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number, got {value!r}")
    try:
        num = int(value) if integer else float(value)  # type: ignore[call-overload,arg-type]
        if integer and isinstance(value, float) and value != num:
            raise ValueError
    except (TypeError, ValueError, OverflowError):  # int(float("inf")) overflows
        kind = "an integer" if integer else "a number of seconds"
        raise ValueError(f"{key} must be {kind}, got {value!r}") from None
    if not integer and not math.isfinite(num):
        raise ValueError(f"{key} must be finite, got {value!r}")
    if num < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value!r}")
    return num


def _opt_str(value: object, key: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    raise ValueError(f"{key} must be a string, got {value!r}")


def _str_list(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        # fileConfig and env vars give comma-separated strings.
        return tuple(s.strip() for s in value.split(",") if s.strip())
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        items = tuple(value)
        for item in items:
            if not isinstance(item, str) or not item:
                raise ValueError(f"{key} must be a list of non-empty strings, got item {item!r}")
        return items
    raise ValueError(f"{key} must be a list of strings, got {value!r}")


def _endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"endpoint must be an http:// or https:// URL with a host, got {value!r} "
            f"(for example {DEFAULT_ENDPOINT!r} or http://127.0.0.1:8787/api/v1/event)"
        )
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_KNOWN = {f.name for f in dataclasses.fields(Config)} | {
    "privacy_filter",
    "filter_keys",
}


def build_config(**kwargs: Any) -> Config:
    """Validate keyword arguments (plus environment fallbacks) into a :class:`Config`.

    Raises :class:`ValueError` naming the offending keyword for anything unusable.
    """
    unknown = sorted(set(kwargs) - _KNOWN)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)}; "
            f"valid options are: {', '.join(sorted(_KNOWN))}"
        )
    env = os.environ
    out: dict[str, Any] = {}

    enabled_raw = kwargs.get("enabled")
    enabled = True if enabled_raw is None else _bool(enabled_raw, "enabled")
    if env.get("OVERCENTRIC_DISABLED", "").strip().lower() in ("1", "true", "yes", "on"):
        enabled = False
    out["enabled"] = enabled

    project_id = _opt_str(kwargs.get("project_id"), "project_id") or _opt_str(
        env.get("OVERCENTRIC_PROJECT_ID"), "OVERCENTRIC_PROJECT_ID"
    )
    if not project_id:
        if enabled:
            raise ValueError(
                "project_id is missing: pass project_id=... (the id from the Overcentric "
                "dashboard) or set the environment variable OVERCENTRIC_PROJECT_ID"
            )
        project_id = "disabled"
    out["project_id"] = project_id

    endpoint = _opt_str(kwargs.get("endpoint"), "endpoint") or _opt_str(
        env.get("OVERCENTRIC_ENDPOINT"), "OVERCENTRIC_ENDPOINT"
    )
    try:
        out["endpoint"] = _endpoint(endpoint or DEFAULT_ENDPOINT)
    except ValueError as exc:
        if _opt_str(kwargs.get("endpoint"), "endpoint"):
            raise
        raise ValueError(f"{exc} (taken from the environment variable OVERCENTRIC_ENDPOINT)"
                         ) from None

    context = kwargs.get("context", "product")
    if context not in ("website", "product"):
        raise ValueError(f"context must be 'website' or 'product', got {context!r}")
    out["context"] = context

    for key in ("device_id", "session_id", "proxy", "ca_certs"):
        out[key] = _opt_str(kwargs.get(key), key)
    spool = kwargs.get("spool_path", env.get("OVERCENTRIC_SPOOL_PATH"))
    out["spool_path"] = _opt_str(os.fspath(spool) if isinstance(spool, os.PathLike) else spool,
                                 "spool_path")
    for key, low in (("max_spool_bytes", 4096), ("max_spool_events", 1)):
        if kwargs.get(key) is not None:
            out[key] = _number(kwargs[key], key, minimum=low, integer=True)
    spool_sync = kwargs.get("spool_sync")
    if spool_sync is not None:
        if not isinstance(spool_sync, str) or spool_sync.strip().lower() not in ("normal", "full"):
            raise ValueError(f"spool_sync must be 'normal' or 'full', got {spool_sync!r}")
        out["spool_sync"] = spool_sync.strip().lower()

    if "prefix" in kwargs:
        prefix = kwargs["prefix"]
        if prefix is not None and (not isinstance(prefix, str) or not prefix):
            raise ValueError(f"prefix must be a non-empty string or None, got {prefix!r}")
        out["prefix"] = prefix
    out["events"] = _str_list(kwargs.get("events"), "events")
    name_key = kwargs.get("name_key", "event_name")
    if not isinstance(name_key, str) or not name_key:
        raise ValueError(f"name_key must be a non-empty string, got {name_key!r}")
    out["name_key"] = name_key

    field_map = kwargs.get("field_map") or {}
    if not isinstance(field_map, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in field_map.items()
    ):
        raise ValueError(
            "field_map must map your key names to ours, e.g. {'uid': 'user_id'}, "
            f"got {field_map!r}"
        )
    out["field_map"] = dict(field_map)
    out["exclude_keys"] = frozenset(_str_list(kwargs.get("exclude_keys"), "exclude_keys"))

    ints: dict[str, float] = {
        "max_queue_size": 1, "max_workers": 1, "max_retries": 0, "max_event_bytes": 512
    }
    for key, minimum in ints.items():
        if kwargs.get(key) is not None:
            out[key] = _number(kwargs[key], key, minimum=minimum, integer=True)
    floats: dict[str, float] = {
        "timeout": 0.001,
        "retry_budget": 0.0,
        "backoff_base": 0.0,
        "backoff_max": 0.0,
        "shutdown_timeout": 0.0,
    }
    for key, minimum in floats.items():
        if kwargs.get(key) is not None:
            out[key] = _number(kwargs[key], key, minimum=minimum, integer=False)
    if kwargs.get("sync") is not None:
        out["sync"] = _bool(kwargs["sync"], "sync")

    out["on_error"] = resolve_callable(kwargs.get("on_error"), "on_error")
    out["before_send"] = resolve_callable(kwargs.get("before_send"), "before_send")

    privacy = kwargs.get("privacy_filter", True)
    privacy = _bool(privacy, "privacy_filter")
    keys = kwargs.get("filter_keys")
    deny_keys = DEFAULT_DENY_KEYS if keys is None else _str_list(keys, "filter_keys")
    out["deny_pattern"] = compile_deny(deny_keys) if privacy else None

    headers = kwargs.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError(f"headers must be a dict of str to str, got {headers!r}")
    out["headers"] = dict(headers)

    return Config(**out)

"""Which records are events, and how one becomes the JSON body the API expects.

The work is split in two on purpose. :class:`Recognizer` and :class:`RawEvent` run in the
caller's thread and do the least they can: decide whether a message names an event, and keep
references to what the event needs (a shallow copy of the record's fields, the bound context).
:func:`build_payload` runs later in the sender's thread and does everything else: the SPEC §3
mapping table, the precedence of explicit fields over bound ones over defaults, fallback ids,
JSON-safe values and the privacy filter.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

from .config import Config
from .values import to_json_safe

__all__ = [
    "EXCEPTION_MESSAGE_KEY",
    "EXCEPTION_TYPE_KEY",
    "LOG_RECORD_ATTRIBUTES",
    "STRUCTLOG_KEYS",
    "RawEvent",
    "Recognizer",
    "build_payload",
]

# Computed rather than listed so that attributes added by future Pythons (``taskName`` came in
# 3.12) are never mistaken for user extras.
LOG_RECORD_ATTRIBUTES: frozenset[str] = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}

# Keys that structlog's own processors and its stdlib bridge add to an event dict.
STRUCTLOG_KEYS: frozenset[str] = frozenset(
    {
        "event",
        "level",
        "log_level",
        "logger",
        "logger_name",
        "timestamp",
        "exc_info",
        "exception",
        "exc_text",
        "stack_info",
        "stack",
        "_record",
        "_from_structlog",
        "_logger",
        "_name",
        "positional_args",
        # CallsiteParameterAdder
        "pathname",
        "filename",
        "module",
        "func_name",
        "lineno",
        "thread",
        "thread_name",
        "process",
        "process_name",
        "task_name",
        "qual_module",  # structlog >= 25: CallsiteParameter.QUAL_MODULE / QUAL_NAME
        "qual_name",
    }
)

_RECORD_SKIP = LOG_RECORD_ATTRIBUTES | STRUCTLOG_KEYS

EXCEPTION_TYPE_KEY = "exception_type"
EXCEPTION_MESSAGE_KEY = "exception_message"
MAX_NAME_LENGTH = 200
_NAMESPACE = uuid.UUID("5b6f1f0e-7c0c-4c55-9a57-0ef7c1a2e0d1")

# Where each recognised key goes: ("identity", field) or ("event", field).
_IDENTITY_KEYS = {"user_id": "unique_identifier", "unique_identifier": "unique_identifier",
                  "user_email": "email", "user_name": "name"}
_EVENT_KEYS = frozenset({"device_id", "session_id", "url", "hostname", "context"})


class Recognizer:
    """Decides, cheaply, whether a message or a set of fields names an event (SPEC §2)."""

    __slots__ = ("exact", "name_key", "pattern", "prefix")

    def __init__(self, prefix: str | None, events: tuple[str, ...], name_key: str) -> None:
        self.prefix = prefix
        self.name_key = name_key
        globs = [e for e in events if any(c in e for c in "*?[")]
        self.exact = frozenset(e for e in events if e not in globs)
        self.pattern = (
            re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
        )

    def match_message(self, msg: object) -> str | None:
        """The event name if ``msg`` is a string that names an event by rule 1 or 2."""
        if not isinstance(msg, str):
            return None
        prefix = self.prefix
        if prefix is not None and msg.startswith(prefix):
            return msg
        if msg in self.exact or (self.pattern is not None and self.pattern.match(msg)):
            return msg
        return None

    def match_fields(self, msg: object, fields: Mapping[str, Any]) -> Any:
        """The event name by any rule, or ``None``; a ``name_key`` value may be any object."""
        name = self.match_message(msg)
        if name is None:
            return fields.get(self.name_key)
        return name


class RawEvent:
    """What the caller's thread hands to the sender: references, not a mapped payload.

    ``kind`` says how to read ``fields``: ``"record"`` (a copy of ``LogRecord.__dict__``),
    ``"dict"`` (a copy of a structlog event dict) or ``"track"`` (keyword arguments of
    ``Client.track``). ``extra_bound`` carries ``structlog.contextvars`` fields.
    """

    __slots__ = ("bound", "exc", "extra_bound", "fields", "kind", "name")

    def __init__(
        self,
        name: Any,
        fields: Mapping[str, Any],
        bound: Mapping[str, Any],
        kind: str,
        exc: Any = None,
        extra_bound: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.fields = fields
        self.bound = bound
        self.kind = kind
        self.exc = exc
        self.extra_bound = extra_bound


class PayloadError(ValueError):
    """An event that cannot become a valid request (for example an empty name)."""


def _event_name(name: Any) -> str:
    if not isinstance(name, str):
        try:
            name = str(name)
        except Exception:
            name = ""
    text: str = name.strip()
    if not text:
        raise PayloadError("empty event name")
    return text[:MAX_NAME_LENGTH]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception:
            return None
    value = value.strip()
    return value[:2048] or None


def _exception_properties(exc: Any) -> dict[str, str]:
    if isinstance(exc, tuple) and len(exc) == 3:
        exc = exc[1]
    if not isinstance(exc, BaseException):
        return {}
    cls = type(exc)
    module = cls.__module__
    type_name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {cls.__qualname__}>"
    return {EXCEPTION_TYPE_KEY: type_name, EXCEPTION_MESSAGE_KEY: message[:2048]}


@functools.lru_cache(maxsize=4096)
def derived_id(project_id: str, kind: str, unique_identifier: str) -> str:
    """The UUIDv5 used as ``device_id``/``session_id`` for a known user with no browser ids."""
    return str(uuid.uuid5(_NAMESPACE, f"{project_id}\x00{kind}\x00{unique_identifier}"))


def _user_fields(raw: RawEvent, config: Config) -> dict[str, Any]:
    """The event's own fields, with reserved log/structlog keys removed and renames applied."""
    fields = raw.fields
    if raw.kind == "record":
        # structlog's render_to_log_kwargs turns its bookkeeping keys into record attributes.
        skip: frozenset[str] = _RECORD_SKIP
    elif raw.kind == "dict":
        skip = STRUCTLOG_KEYS
    else:
        skip = frozenset()
    name_key = config.name_key
    exclude = config.exclude_keys
    field_map = config.field_map
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key in skip or key == name_key or key in exclude:
            continue
        # structlog event dicts may carry non-str keys; str() them (a Mapping[str, ...] lies).
        skey = key if isinstance(key, str) else str(key)
        out[field_map.get(skey, skey)] = value
    return out


def build_payload(
    raw: RawEvent, config: Config, process_id: str, warn: Any = None
) -> dict[str, Any]:
    """Map one raw event to the request body of overcentric-api.md. Runs in the sender.

    Raises :class:`PayloadError` when no valid request can be made from it.
    ``warn(key, message)`` is called for recoverable problems (a bad per-event context).
    """
    name = _event_name(raw.name)
    merged: dict[str, Any] = {}
    field_map = config.field_map
    left_out = config.exclude_keys
    for layer in (raw.bound, raw.extra_bound):
        if layer:
            for key, value in layer.items():
                if key not in left_out and key != config.name_key:
                    merged[field_map.get(key, key)] = value
    explicit = _user_fields(raw, config)
    given = explicit.get("identity")
    if isinstance(given, Mapping):
        # An explicit identity dict beats bound identity fields for what it names.
        named = {_IDENTITY_KEYS.get(k, k) for k, v in given.items() if v is not None}
        for key in [k for k in merged if _IDENTITY_KEYS.get(k) in named]:
            del merged[key]
    merged.update(explicit)

    identity: dict[str, Any] = {}
    event: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for key, value in merged.items():
        target = _IDENTITY_KEYS.get(key)
        if target is not None:
            if value is not None:
                identity[target] = value
        elif key in _EVENT_KEYS:
            event[key] = value
        elif key == "identity" and isinstance(value, Mapping):
            for ikey, ivalue in value.items():
                itarget = _IDENTITY_KEYS.get(ikey, ikey)
                if itarget in ("unique_identifier", "email", "name") and ivalue is not None:
                    identity.setdefault(itarget, ivalue)
        elif key == "properties" and isinstance(value, Mapping):
            for pkey, pvalue in value.items():
                properties[pkey if isinstance(pkey, str) else str(pkey)] = pvalue
        else:
            properties[key] = value
    if raw.exc is not None:
        properties.update(_exception_properties(raw.exc))

    project_id = config.project_id
    uid = _text(identity.get("unique_identifier"))

    context = event.get("context")
    if context is None:
        context = config.context
    elif context not in ("website", "product"):
        if warn is not None:
            warn(
                f"context:{context!r}"[:80],
                f"event {name!r} has context={context!r}; only 'website' or 'product' are "
                f"valid, using {config.context!r}",
            )
        context = config.context

    device_id = _text(event.get("device_id")) or config.device_id
    session_id = _text(event.get("session_id")) or config.session_id
    if device_id is None:
        device_id = derived_id(project_id, "device", uid) if uid else process_id
    if session_id is None:
        session_id = derived_id(project_id, "session", uid) if uid else process_id

    body_event: dict[str, Any] = {
        "name": name,
        "properties": to_json_safe(properties, config.deny_pattern),
        "project_id": project_id,
        "device_id": device_id,
        "session_id": session_id,
        "context": context,
    }
    url = _text(event.get("url"))
    if url:
        body_event["url"] = url
    hostname = _text(event.get("hostname"))
    if hostname:
        body_event["hostname"] = hostname
    body: dict[str, Any] = {"event": body_event}
    if uid:
        body_identity: dict[str, Any] = {"unique_identifier": uid}
        email = _text(identity.get("email"))
        if email:
            body_identity["email"] = email
        person = _text(identity.get("name"))
        if person:
            body_identity["name"] = person
        body_identity["project_id"] = project_id
        body["identity"] = body_identity
    return body

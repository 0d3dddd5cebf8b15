"""The documented shape of one Overcentric event request body, as a checker.

``validate_payload()`` lists, in plain words, every way a decoded request body departs from the
schema in the Overcentric event API documentation (the ``event`` object, the optional
``identity`` object beside it, the reserved names): the local receiver answers with these
messages, the test suite asserts that every body the library sends yields none, and users can
run it on captured events. ``closest_reserved()`` backs the one-time typo warning for ``$``
names that are not reserved. The checker is deliberately strict where the documentation is
silent (``null`` for an optional string, non-finite numbers, non-string keys are all reported):
the library should never depend on lenient server behaviour that nobody promised.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CONTEXTS",
    "EVENT_FIELDS",
    "IDENTITY_FIELDS",
    "RESERVED_NAMES",
    "closest_reserved",
    "validate_payload",
]

RESERVED_NAMES: frozenset[str] = frozenset(
    {
        "$signup",
        "$login",
        "$subscription_purchase",
        "$subscription_upgrade",
        "$subscription_downgrade",
        "$subscription_cancel",
    }
)
"""Event names that power Overcentric's pre-built reports; all start with ``$``."""

CONTEXTS: frozenset[str] = frozenset({"website", "product"})
"""The only values the API documents for ``event.context``."""

_EVENT_REQUIRED_STR = ("name", "project_id", "device_id", "session_id")
_EVENT_OPTIONAL_STR = ("url", "hostname")
EVENT_FIELDS: frozenset[str] = frozenset(
    (*_EVENT_REQUIRED_STR, *_EVENT_OPTIONAL_STR, "context", "properties")
)
"""Every key the ``event`` object may carry."""

_IDENTITY_OPTIONAL_STR = ("email", "name")
IDENTITY_FIELDS: frozenset[str] = frozenset(
    ("unique_identifier", "project_id", *_IDENTITY_OPTIONAL_STR)
)
"""Every key the ``identity`` object may carry."""

_TOP_LEVEL = frozenset({"event", "identity"})

# A pathological property tree would otherwise produce one message per leaf; the first few
# already tell the reader what is wrong.
_MAX_PROBLEMS = 50
# Far below the interpreter's recursion limit, far above anything a real event nests.
_MAX_DEPTH = 200


def _kind(value: object) -> str:
    """Name a value's type the way a reader of JSON would."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _check_str(
    problems: list[str], obj: Mapping[Any, Any], key: str, path: str, *, required: bool
) -> None:
    if key not in obj:
        if required:
            problems.append(f"{path}.{key}: required field is missing")
        return
    value = obj[key]
    if not isinstance(value, str):
        problems.append(f"{path}.{key}: must be a string (got {_kind(value)})")
    elif required and not value:
        problems.append(f"{path}.{key}: must be a non-empty string")


def _unknown_keys(problems: list[str], obj: Mapping[Any, Any], allowed: frozenset[str],
                  path: str) -> None:
    # Sorted by repr so that the messages come out in the same order on every run.
    for key in sorted((k for k in obj if k not in allowed), key=repr):
        where = f"{path}.{key}" if path else str(key)
        problems.append(f"{where}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _json_problems(value: object, path: str, problems: list[str], active: set[int],
                   depth: int) -> None:
    """Report what in ``value`` is not plain JSON (what ``json.loads`` could have produced)."""
    if len(problems) > _MAX_PROBLEMS:
        return
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            problems.append(f"{path}: {value!r} is not a valid JSON number")
        return
    if not isinstance(value, (Mapping, list)):
        problems.append(f"{path}: {type(value).__name__} is not a JSON type")
        return
    if depth >= _MAX_DEPTH:
        problems.append(f"{path}: nested more than {_MAX_DEPTH} levels deep")
        return
    if id(value) in active:
        problems.append(f"{path}: refers back to itself (a cycle cannot be JSON)")
        return
    active.add(id(value))
    try:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    problems.append(f"{path}: key {key!r} is not a string")
                _json_problems(item, f"{path}.{key}", problems, active, depth + 1)
        else:
            for index, item in enumerate(value):
                _json_problems(item, f"{path}[{index}]", problems, active, depth + 1)
    finally:
        active.discard(id(value))


def _check_event(event: Mapping[Any, Any], problems: list[str]) -> None:
    for key in _EVENT_REQUIRED_STR:
        _check_str(problems, event, key, "event", required=True)
    for key in _EVENT_OPTIONAL_STR:
        _check_str(problems, event, key, "event", required=False)
    if "context" not in event:
        problems.append("event.context: required field is missing")
    elif not isinstance(event["context"], str) or event["context"] not in CONTEXTS:
        problems.append(
            f'event.context: must be exactly "website" or "product" (got {event["context"]!r})'
        )
    if "properties" in event:
        properties = event["properties"]
        if not isinstance(properties, Mapping):
            problems.append(f"event.properties: must be an object (got {_kind(properties)})")
        else:
            _json_problems(properties, "event.properties", problems, set(), 0)
    _unknown_keys(problems, event, EVENT_FIELDS, "event")


def _check_identity(identity: Mapping[Any, Any], event: object, problems: list[str]) -> None:
    _check_str(problems, identity, "unique_identifier", "identity", required=True)
    for key in _IDENTITY_OPTIONAL_STR:
        _check_str(problems, identity, key, "identity", required=False)
    if "project_id" not in identity:
        problems.append("identity.project_id: required field is missing")
    else:
        project_id = identity["project_id"]
        if not isinstance(project_id, str):
            problems.append(f"identity.project_id: must be a string (got {_kind(project_id)})")
        elif (
            isinstance(event, Mapping)
            # An empty event.project_id is already reported; a mismatch would only be noise.
            and isinstance(event.get("project_id"), str)
            and event["project_id"]
            and project_id != event["project_id"]
        ):
            problems.append(
                f"identity.project_id: must equal event.project_id "
                f"({project_id!r} != {event['project_id']!r})"
            )
    _unknown_keys(problems, identity, IDENTITY_FIELDS, "identity")


def validate_payload(obj: object) -> list[str]:
    """Check a decoded request body against the documented event schema.

    Returns one human-readable message per problem, each starting with the path of the field
    it is about (``event.context: ...``); an empty list means the body is valid. Never raises.
    """
    if not isinstance(obj, Mapping):
        return [f"body: must be a JSON object with an 'event' field (got {_kind(obj)})"]
    problems: list[str] = []
    _unknown_keys(problems, obj, _TOP_LEVEL, "")
    event = obj.get("event")
    if "event" not in obj:
        problems.append("event: required field is missing")
    elif not isinstance(event, Mapping):
        problems.append(f"event: must be an object (got {_kind(event)})")
    else:
        _check_event(event, problems)
    if "identity" in obj:
        identity = obj["identity"]
        if not isinstance(identity, Mapping):
            problems.append(f"identity: must be an object when present (got {_kind(identity)})")
        else:
            _check_identity(identity, event, problems)
    if len(problems) > _MAX_PROBLEMS:
        extra = len(problems) - _MAX_PROBLEMS
        problems = [*problems[:_MAX_PROBLEMS], f"... and at least {extra} more problem(s)"]
    return problems


def _reserved_key(name: str) -> str:
    """Reduce a name to what a typo usually leaves intact: case, ``$``, separators aside."""
    return name.strip().lower().lstrip("$").replace("-", "_").replace(" ", "_")


_RESERVED_BY_KEY: dict[str, str] = {_reserved_key(n): n for n in sorted(RESERVED_NAMES)}


def closest_reserved(name: str) -> str | None:
    """Return the reserved name that ``name`` was most likely meant to be, if any.

    ``None`` when ``name`` is itself reserved (nothing to warn about) or resembles no reserved
    name. Case, a missing ``$`` and ``-``/space separators are forgiven before comparing, and a
    name that is a distinctive part of one reserved name (``$purchase``) points to it.
    """
    if name in RESERVED_NAMES:
        return None
    key = _reserved_key(name)
    if not key:
        return None
    if key in _RESERVED_BY_KEY:
        return _RESERVED_BY_KEY[key]
    matches = difflib.get_close_matches(key, list(_RESERVED_BY_KEY), n=1, cutoff=0.75)
    if matches:
        return _RESERVED_BY_KEY[matches[0]]
    if len(key) >= 4:
        containing = [k for k in _RESERVED_BY_KEY if key in k]
        if len(containing) == 1:
            return _RESERVED_BY_KEY[containing[0]]
    matches = difflib.get_close_matches(key, list(_RESERVED_BY_KEY), n=1, cutoff=0.6)
    return _RESERVED_BY_KEY[matches[0]] if matches else None

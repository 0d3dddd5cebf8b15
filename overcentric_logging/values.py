"""Turning arbitrary property values into JSON the Overcentric server can read, and encoding events.

:func:`to_json_safe` converts whatever a logging call carried (datetimes, Decimals, UUIDs,
enums, paths, bytes, numpy-style scalars and arrays, dataclasses, pydantic models, mappings,
sequences, cycles, hostile objects) into plain ``dict``/``list``/``str``/``int``/``float``/
``bool``/``None`` data, replacing the values of sensitive keys (and strings that look like card
numbers) by :data:`FILTERED`. :func:`compile_deny` builds the key filter it uses from a list of
terms such as :data:`DEFAULT_DENY_KEYS`. :func:`encode` serialises a finished payload to
UTF-8 JSON bytes and, when the body exceeds the size limit, trims the event's properties
(longest strings first, then the largest values) or gives up with ``None``. All of this runs in
the sender thread; none of it raises, whatever the input.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import re
import uuid
from collections import deque
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from decimal import Decimal
from enum import Enum
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any, Final

__all__ = [
    "CIRCULAR",
    "DEFAULT_DENY_KEYS",
    "FILTERED",
    "MAX_DEPTH",
    "TRUNCATED",
    "TRUNCATION_SUFFIX",
    "compile_deny",
    "encode",
    "is_denied_key",
    "looks_like_card_number",
    "normalize_key",
    "to_json_safe",
]

FILTERED: Final = "[Filtered]"
"""Replaces the value of a denied key, and a string that looks like a payment card number."""
CIRCULAR: Final = "[Circular]"
"""Replaces a container that contains itself (directly or through its descendants)."""
MAX_DEPTH: Final = "[MaxDepth]"
"""Replaces a container nested more than ``max_depth`` levels below the converted value."""
TRUNCATED: Final = "[Truncated]"
"""Replaces what did not fit: the rest of an over-large value, or a property dropped by encode."""
TRUNCATION_SUFFIX: Final = "…[truncated]"
"""Appended to a string that :func:`encode` shortened to make an event fit."""

DEFAULT_DENY_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "privatekey",
    "auth",
    "authorization",
    "credential",
    "cookie",
    "csrf",
    "jwt",
    "bearer",
    "credit_card",
    "creditcard",
    "card_number",
    "cardnumber",
    "cvv",
    "cvc",
    "pin",
    "ssn",
)
"""Property-key terms filtered by default (see :func:`compile_deny` for how they match)."""

_INT_LIMIT: Final = 2**63 - 1
# str(int) is quadratic and refused beyond 4300 digits on 3.11+; this many bits stays below that.
_INT_STR_MAX_BITS: Final = 14_000
_MAX_DEPTH_CAP: Final = 200  # keeps json's C encoder well clear of the recursion limit
_MAX_UNWRAP: Final = 6  # Enum.value / model_dump() / tolist() chains followed at most this far
_KEY_CACHE_MAX: Final = 4096
_KEY_CACHE_MAX_LEN: Final = 256

_LEAF, _MAP, _SEQ = 0, 1, 2

# A term's own rule when the generic ones (substring; whole word for short terms) misfire.
# "token" must not hit LLM usage counters (tokens_used, prompt_token_count) or "tokenizer";
# "auth" must not hit author/authority or harmless auth_method-style descriptors.
_SPECIAL_TERMS: dict[str, str] = {
    "token": (
        r"token(?![a-z])(?!_(?:count|counts|usage|used|limit|limits|total|type|budget|len"
        r"|length|num|number|estimate|cost|ids?|index|logprobs?)(?![a-z]))"
    ),
    "auth": (
        r"auth(?![a-z])(?!_(?:method|methods|provider|providers|type|types|status|mode|flow"
        r"|result|success|failure|failed|error|errors|enabled|required)(?![a-z]))"
    ),
    "secret": r"secret(?!ar)",
}
_SHORT_TERM_LEN: Final = 4
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# 13-19 ASCII digits, single spaces or dashes allowed between them, first digit 2-6 (the
# ranges used by the card networks; ids that start with 1 or 7-9 are never mistaken for cards).
_CARD_RE = re.compile(r"[2-6][0-9](?:[ -]?[0-9]){11,17}")
_CARD_MIN_LEN: Final = 13
_CARD_MAX_LEN: Final = 37

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_TRUNC_MARKER_SIZE: Final = len(_ENCODER.encode(TRUNCATED).encode("utf-8"))
_SUFFIX_SIZE: Final = len(TRUNCATION_SUFFIX.encode("utf-8"))
_MIN_KEEP_BYTES: Final = 32  # what encode leaves of a truncated string before it drops values


# --- keys -------------------------------------------------------------------------------------


def normalize_key(key: str) -> str:
    """Return ``key`` as the deny pattern expects it: camelCase split, lowercase, ``_`` joins.

    ``"X-Api-Key"`` → ``"x_api_key"``, ``"authToken"`` → ``"auth_token"``,
    ``"user.password"`` → ``"user_password"``.
    """
    return _CAMEL_RE.sub("_", key).lower().replace("-", "_").replace(" ", "_").replace(".", "_")


def compile_deny(keys: Iterable[str] | None) -> re.Pattern[str] | None:
    """Compile deny-list terms into one pattern searched in :func:`normalize_key` output.

    ``None`` or no terms → ``None`` (filtering off). Each term is normalised like a key. A term
    of four characters or fewer (``pwd``, ``ssn``, ``cvv``, ``pin``, ``auth``...) matches only
    as a whole word of the key, so ``pin`` filters ``user_pin`` but not ``shipping``; a longer
    term matches anywhere in the key (``password`` filters ``user_password`` and
    ``password_changed``). Three terms have their own rules: ``token`` matches at the end of a
    word (``access_token``, ``authToken``, ``csrftoken``) but not ``tokens_used``,
    ``max_tokens``, ``tokenizer`` or usage counters such as ``prompt_token_count``;
    ``auth`` matches ``auth``, ``x-auth``, ``basic_auth``, ``auth_token`` but not ``author``
    or descriptors like ``auth_method``/``auth_provider``; ``secret`` skips ``secretary``.
    Non-string terms raise :class:`TypeError` (this runs once, at configuration time).
    """
    if keys is None:
        return None
    if isinstance(keys, str):
        keys = (keys,)
    parts: list[str] = []
    seen: set[str] = set()
    for term in keys:
        if not isinstance(term, str):
            raise TypeError(f"deny-list terms must be str, got {type(term).__name__}")
        norm = normalize_key(term.strip())
        if not norm or norm in seen:
            continue
        seen.add(norm)
        special = _SPECIAL_TERMS.get(norm)
        if special is not None:
            parts.append(special)
        elif len(norm) <= _SHORT_TERM_LEN:
            parts.append(rf"(?<![a-z0-9]){re.escape(norm)}(?![a-z])")
        else:
            parts.append(re.escape(norm))
    if not parts:
        return None
    # IGNORECASE so that the pattern also does the sensible thing on a raw, unnormalised key.
    return re.compile("|".join(parts), re.IGNORECASE)


# Keyed by id(): hashing a re.Pattern rehashes its whole compiled program (µs per call). The
# pattern is kept in the entry, so an id reused by a later pattern is detected by identity.
_key_caches: dict[int, tuple[re.Pattern[str], dict[str, bool]]] = {}


def _cache_for(deny: re.Pattern[str]) -> dict[str, bool]:
    entry = _key_caches.get(id(deny))
    if entry is None or entry[0] is not deny:
        if len(_key_caches) > 64:
            _key_caches.clear()
        entry = (deny, {})
        _key_caches[id(deny)] = entry
    return entry[1]


def _check_key(deny: re.Pattern[str], cache: dict[str, bool], key: str) -> bool:
    hit = deny.search(normalize_key(key)) is not None
    # Keys repeat from event to event, so the answer is memoised; long keys are rare and
    # would pin memory, so they are recomputed instead.
    if len(key) <= _KEY_CACHE_MAX_LEN:
        if len(cache) >= _KEY_CACHE_MAX:
            cache.clear()
        cache[key] = hit
    return hit


def is_denied_key(key: str, deny: re.Pattern[str] | None) -> bool:
    """Tell whether the value under ``key`` would be replaced by :data:`FILTERED`."""
    if deny is None:
        return False
    try:
        cache = _cache_for(deny)
        hit = cache.get(key)
        return _check_key(deny, cache, key) if hit is None else hit
    except Exception:
        return False


def _luhn_ok(digits: str) -> bool:
    total = 0
    double = False
    for ch in reversed(digits):
        n = ord(ch) - 48
        if double:
            n *= 2
            if n > 9:
                n -= 9
        total += n
        double = not double
    return total % 10 == 0


def looks_like_card_number(text: str) -> bool:
    """Tell whether ``text`` is, as a whole, a plausible payment card number.

    13-19 ASCII digits, optionally grouped by single spaces or dashes, starting with a digit
    the card networks use (2-6; a leading 2 only in Mastercard's 2221-2720 range), passing
    the Luhn checksum. Digits inside longer text are not looked for.
    """
    if not _CARD_MIN_LEN <= len(text) <= _CARD_MAX_LEN or _CARD_RE.fullmatch(text) is None:
        return False
    digits = text.replace(" ", "").replace("-", "")
    if digits[0] == "2" and not "2221" <= digits[:4] <= "2720":
        return False
    return _luhn_ok(digits)


def _key_str(key: object) -> str:
    if isinstance(key, str):
        return key if type(key) is str else str.__str__(key)
    if type(key) is int:
        return str(key) if -_INT_LIMIT <= key <= _INT_LIMIT else _big_int(key)
    try:
        return str(key)
    except Exception:
        return _repr(key)


# --- leaves -----------------------------------------------------------------------------------


def _big_int(value: int) -> str:
    bits = value.bit_length()
    if bits <= _INT_STR_MAX_BITS:
        try:
            return str(value)
        except ValueError:  # a lower int_max_str_digits set by the application
            pass
    sign = "-" if value < 0 else ""
    return f"[int {sign}~{int(bits * 0.30103) + 1} digits]"


def _repr(value: object) -> str:
    try:
        text = repr(value)
        if type(text) is str:
            return text
    except Exception:
        pass
    try:
        name = type(value).__name__
    except Exception:
        name = "object"
    return f"<unrepresentable {name}>"


def _iso(value: _dt.date | _dt.time) -> str:
    return value.isoformat()


def _seconds(value: _dt.timedelta) -> float:
    return value.total_seconds()


def _decimal(value: Decimal) -> int | float | str | None:
    if not value.is_finite():
        return None
    exponent = value.as_tuple().exponent
    # int() of Decimal("1E+999999999") would build a billion-digit int: only small integers go
    # through int, everything else through float (which keeps the magnitude).
    if isinstance(exponent, int) and exponent >= 0 and value.adjusted() < 19:
        number = int(value)
        return number if -_INT_LIMIT <= number <= _INT_LIMIT else str(number)
    approx = float(value)
    return approx if math.isfinite(approx) else str(value)


def _bytes(value: bytes | bytearray) -> str:
    return bytes(value).decode("utf-8", errors="replace")


def _memoryview(value: memoryview) -> str:
    return value.tobytes().decode("utf-8", errors="replace")


def _path(value: PurePath) -> str:
    return str(value)


_LeafConv = Callable[[Any], Any]

_EXACT_LEAF: dict[type, _LeafConv] = {
    _dt.datetime: _iso,
    _dt.date: _iso,
    _dt.time: _iso,
    _dt.timedelta: _seconds,
    uuid.UUID: str,
    Decimal: _decimal,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _memoryview,
    PurePosixPath: _path,
    PureWindowsPath: _path,
    type(PurePath()): _path,
}
# Subclasses (freezegun's FakeDatetime, pendulum, UUID or Path subclasses) in MRO-safe order.
_SUBCLASS_LEAF: tuple[tuple[type | tuple[type, ...], _LeafConv], ...] = (
    ((_dt.date, _dt.time), _iso),
    (_dt.timedelta, _seconds),
    (uuid.UUID, str),
    (Decimal, _decimal),
    ((bytes, bytearray), _bytes),
    (memoryview, _memoryview),
    (PurePath, _path),
)
_SNAPSHOT_SEQ = (set, frozenset, deque, KeysView, ValuesView, ItemsView)


def _dataclass_items(value: object) -> Iterator[tuple[str, object]]:
    for field in dataclasses.fields(value):  # type: ignore[arg-type]
        try:
            item = getattr(value, field.name)
        except Exception:
            item = f"<unreadable {field.name}>"
        yield field.name, item


_Classified = tuple[int, Any]


def _classify(value: Any) -> _Classified:
    """Return ``(_LEAF, converted)``, ``(_MAP, iterable of pairs)`` or ``(_SEQ, iterable)``."""
    original = value
    for _ in range(_MAX_UNWRAP):
        kind = type(value)
        if value is None or kind is bool or kind is str:
            return _LEAF, value
        if kind is int:
            return _LEAF, value if -_INT_LIMIT <= value <= _INT_LIMIT else _big_int(value)
        if kind is float:
            return _LEAF, value if math.isfinite(value) else None
        if kind is dict:
            return _MAP, list(value.items())
        if kind is list or kind is tuple:
            return _SEQ, value
        conv = _EXACT_LEAF.get(kind)
        if conv is not None:
            return _LEAF, conv(value)
        if isinstance(value, type):
            break
        if isinstance(value, Enum):
            value = value.value
            continue
        if isinstance(value, str):
            return _LEAF, str.__str__(value)
        if isinstance(value, int):  # IntFlag and friends were Enums above; bool cannot be here
            return _classify(int.__int__(value))
        if isinstance(value, float):
            return _classify(float.__float__(value))
        if isinstance(value, (list, tuple)):
            return _SEQ, value
        if isinstance(value, _SNAPSHOT_SEQ):
            # Copying first: a set or deque changed by another thread mid-iteration would raise.
            return _SEQ, list(value)
        if isinstance(value, Mapping):
            return _MAP, value.items()
        for base, leaf in _SUBCLASS_LEAF:
            if isinstance(value, base):
                return _LEAF, leaf(value)
        if dataclasses.is_dataclass(value):
            return _MAP, _dataclass_items(value)
        # Duck typing, in order: pydantic 2, pydantic 1, numpy/torch/jax arrays, then scalars
        # (arrays have .item() too, but it fails for more than one element).
        for method in ("model_dump", "dict", "tolist", "item"):
            bound = getattr(value, method, None)
            if callable(bound):
                produced = bound()
                if method == "dict" and not isinstance(produced, Mapping):
                    return _LEAF, _repr(original)
                value = produced
                break
        else:
            break  # generators and other iterators are left alone: consuming them is a side effect
    return _LEAF, _repr(original)


def _classify_safe(value: object) -> _Classified:
    try:
        return _classify(value)
    except Exception:
        return _LEAF, _repr(value)


# --- conversion -------------------------------------------------------------------------------


class _Frame:
    __slots__ = ("is_map", "items", "oid", "out")

    def __init__(self, items: Iterator[Any], out: Any, is_map: bool, oid: int) -> None:
        self.items = items
        self.out = out
        self.is_map = is_map
        self.oid = oid


def to_json_safe(
    value: object,
    deny: re.Pattern[str] | None = None,
    max_depth: int = 20,
    *,
    filter_cards: bool = True,
    max_items: int = 50_000,
) -> Any:
    """Return a JSON-serialisable copy of ``value``; never raises.

    Conversions: ``datetime``/``date``/``time`` → ISO 8601 string; ``timedelta`` → seconds
    (float); ``Decimal`` → int (integral, within ±(2**63-1)) or float when finite, else
    ``None`` (a finite Decimal too large for a float becomes its string); ``UUID`` and
    ``PurePath`` → ``str``; ``Enum`` → its ``.value``, converted again; ``bytes``,
    ``bytearray``, ``memoryview`` → UTF-8 text (invalid bytes become U+FFFD); ``float``
    NaN/±Infinity → ``None``; ``int`` beyond ±(2**63-1) → its decimal string (or
    ``"[int ~N digits]"`` when that would exceed 4300 digits); subclasses of str/int/float →
    the plain value; ``list``/``tuple``/``set``/``frozenset``/``deque``/dict views → list;
    ``Mapping`` → dict whose non-string keys become ``str(key)`` (``repr`` if that raises;
    keys that collide keep the last value); dataclass instances → dict of their fields;
    objects with ``model_dump()`` (pydantic 2) or ``dict()`` (pydantic 1) → dict; objects with
    ``tolist()`` or ``item()`` (numpy, torch, jax) → their Python value. Generators and other
    iterators are not consumed. Anything else, and anything whose conversion raised → ``repr``
    (``"<unrepresentable TypeName>"`` if that raises too).

    A container that is its own ancestor becomes :data:`CIRCULAR` (the same object shared in
    two places is not a cycle and is converted twice); a container nested more than
    ``max_depth`` levels (capped at 200) below ``value`` becomes :data:`MAX_DEPTH`. The walk is
    iterative, so no input depth can exhaust the stack. After ``max_items`` values the walk
    stops: each list still open gets a last :data:`TRUNCATED` element.

    With ``deny`` (from :func:`compile_deny`), the value of every dict key matching it, at any
    depth, becomes :data:`FILTERED`; so does every string that looks like a payment card
    number (:func:`looks_like_card_number`), unless ``filter_cards`` is false. Numbers are not
    checked for card numbers: integer ids of that length are common, card numbers as ints are
    not. Exceptions that are not :class:`Exception` (``KeyboardInterrupt``) still propagate.
    """
    try:
        cards = filter_cards and deny is not None
        if type(value) is dict and max_depth >= 1:
            flat = _convert_flat(value, deny, cards)
            if flat is not None:
                return flat
        return _convert(value, deny, max_depth, cards, max_items)
    except Exception:
        return {} if isinstance(value, dict) else _repr(value)


def _convert_flat(
    value: dict[Any, Any], deny: re.Pattern[str] | None, cards: bool
) -> dict[str, Any] | None:
    """Convert the common event: a dict of str keys and scalar values; ``None`` if it is not."""
    if len(value) > 64:
        return None
    cache = _cache_for(deny) if deny is not None else None
    out: dict[str, Any] = {}
    for key, item in list(value.items()):
        if type(key) is not str:
            return None
        if cache is not None:
            hit = cache.get(key)
            if hit is None:
                hit = _check_key(deny, cache, key)  # type: ignore[arg-type]
            if hit:
                out[key] = FILTERED
                continue
        item_type = type(item)
        if item_type is str:
            if (
                cards
                and _CARD_MIN_LEN <= len(item) <= _CARD_MAX_LEN
                and looks_like_card_number(item)
            ):
                item = FILTERED
        elif item_type is int:
            if not -_INT_LIMIT <= item <= _INT_LIMIT:
                return None
        elif item_type is float:
            if item - item != 0.0:  # NaN and ±inf
                item = None
        elif item is not None and item_type is not bool:
            return None
        out[key] = item
    return out


def _convert(
    value: object, deny: re.Pattern[str] | None, max_depth: int, cards: bool, budget: int
) -> Any:
    kind, payload = _classify_safe(value)
    if kind == _LEAF:
        if cards and type(payload) is str and looks_like_card_number(payload):
            return FILTERED
        return payload
    max_depth = min(max_depth, _MAX_DEPTH_CAP)
    if max_depth < 1:
        return MAX_DEPTH
    cache = _cache_for(deny) if deny is not None else None
    isfinite = math.isfinite
    root: Any = {} if kind == _MAP else []
    ancestors = {id(value)}
    stack = [_Frame(iter(payload), root, kind == _MAP, id(value))]
    while stack:
        frame = stack[-1]
        out = frame.out
        is_map = frame.is_map
        pushed = False
        key = ""
        try:
            for item in frame.items:
                if is_map:
                    key, item = item
                    if type(key) is not str:
                        key = _key_str(key)
                    if cache is not None:
                        hit = cache.get(key)
                        if hit is None:
                            hit = _check_key(deny, cache, key)  # type: ignore[arg-type]
                        if hit:
                            out[key] = FILTERED
                            continue
                budget -= 1
                if budget < 0:
                    break
                item_type = type(item)
                result: Any
                if item_type is str:
                    result = (
                        FILTERED
                        if cards
                        and _CARD_MIN_LEN <= len(item) <= _CARD_MAX_LEN
                        and looks_like_card_number(item)
                        else item
                    )
                elif item_type is int:
                    result = item if -_INT_LIMIT <= item <= _INT_LIMIT else _big_int(item)
                elif item_type is float:
                    result = item if isfinite(item) else None
                elif item is None or item_type is bool:
                    result = item
                else:
                    oid = id(item)
                    if oid in ancestors:
                        result = CIRCULAR
                    else:
                        sub_kind, sub = _classify_safe(item)
                        if sub_kind == _LEAF:
                            result = sub
                            if cards and type(sub) is str and looks_like_card_number(sub):
                                result = FILTERED
                        elif len(stack) >= max_depth:
                            result = MAX_DEPTH
                        else:
                            result = {} if sub_kind == _MAP else []
                            stack.append(_Frame(iter(sub), result, sub_kind == _MAP, oid))
                            ancestors.add(oid)
                            pushed = True
                if is_map:
                    out[key] = result
                else:
                    out.append(result)
                if pushed:
                    break
        except Exception:
            pass  # a user-defined iterable failed part-way: keep what it gave so far
        if budget < 0:
            for open_frame in stack:
                if not open_frame.is_map:
                    open_frame.out.append(TRUNCATED)
            break
        if not pushed:
            stack.pop()
            ancestors.discard(frame.oid)
    return root


# --- encoding ---------------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (from a bad decode) cannot be UTF-8
        return text.encode("utf-8", errors="replace")


def _size(value: Any) -> int:
    return len(_utf8(_ENCODER.encode(value)))


_quote = json.encoder.encode_basestring  # the C escaper used when ensure_ascii is off


def _str_size(text: str) -> int:
    quoted = _quote(text)
    return len(quoted) if quoted.isascii() else len(_utf8(quoted))


def encode(payload: dict[str, Any], max_bytes: int) -> bytes | None:
    """Serialise ``payload`` to compact UTF-8 JSON of at most ``max_bytes``; never raises.

    When the body is too large, a copy of ``payload["event"]["properties"]`` is trimmed:
    first the longest strings are cut (all strings above a common length are shortened to
    it and end with :data:`TRUNCATION_SUFFIX`, keeping at least 32 bytes of each); if that is
    not enough, the largest property values become :data:`TRUNCATED`; if even that is not
    enough (huge keys), the largest properties are removed. Returns ``None`` when the event
    cannot fit even with empty properties (a huge name or url), or when ``payload`` cannot
    be serialised at all; the caller counts a drop. Lone surrogates in strings become ``?``.
    A payload that is not JSON-safe (``before_send`` may have added anything) is passed
    through :func:`to_json_safe` first.
    """
    try:
        try:
            text = _ENCODER.encode(payload)
        except Exception:
            safe: Any = to_json_safe(payload)
            if not isinstance(safe, dict):
                return None
            payload = safe
            text = _ENCODER.encode(payload)
        data = _utf8(text)
        if len(data) <= max_bytes:
            return data
        return _trim(payload, max_bytes)
    except Exception:
        return None


def _collect_strings(root: Any) -> list[tuple[Any, Any, str]]:
    found: list[tuple[Any, Any, str]] = []
    pending = [root]
    while pending:
        node = pending.pop()
        pairs: Iterable[tuple[Any, Any]] = node.items() if type(node) is dict else enumerate(node)
        for slot, item in pairs:
            if type(item) is str:
                found.append((node, slot, item))
            elif type(item) is dict or type(item) is list:
                pending.append(item)
    return found


def _cut(text: str, target: int) -> tuple[str, int]:
    """Shorten ``text`` so that its JSON (quotes, escapes, suffix) takes ``target`` bytes or less.

    Returns the new string and its JSON size. Escapes make JSON size differ from UTF-8 size
    (a control character takes 6 bytes), so the cut is scaled by the measured ratio.
    """
    raw = text.encode("utf-8", errors="replace")
    overhead = _SUFFIX_SIZE + 2
    keep = target - overhead
    for _ in range(8):
        if keep <= 0:
            break
        candidate = raw[:keep].decode("utf-8", errors="ignore") + TRUNCATION_SUFFIX
        size = _str_size(candidate)
        if size <= target:
            return candidate, size
        keep = min(keep - 1, keep * (target - overhead) // max(size - overhead, 1))
    return TRUNCATION_SUFFIX, overhead


def _water_level(sizes: list[int], excess: int) -> int:
    """Largest ``w`` such that capping every size at ``w`` saves at least ``excess``."""
    ordered = sorted(sizes, reverse=True)
    total = 0
    for count, size in enumerate(ordered, start=1):
        total += size
        level = (total - excess) // count
        following = ordered[count] if count < len(ordered) else -1
        if level >= following:
            return level
    return (total - excess) // max(len(ordered), 1)


def _trim(payload: dict[str, Any], max_bytes: int) -> bytes | None:
    event = payload.get("event")
    if not isinstance(event, dict):
        return None
    props = event.get("properties")
    if not isinstance(props, dict) or not props:
        return None
    shell_event = dict(event)
    shell_event["properties"] = {}
    shell = dict(payload)
    shell["event"] = shell_event
    base = _size(shell)
    if base > max_bytes:
        return None
    budget = max_bytes - base + 2  # the room for the properties object, braces included
    work: dict[str, Any] = json.loads(_ENCODER.encode(props))  # private deep copy to edit
    size = _size(work)
    floor = _MIN_KEEP_BYTES + _SUFFIX_SIZE + 2

    # Every string leaf, with the top-level property it belongs to, and what cutting it down
    # to the floor could save in each property.
    leaves: list[tuple[str, Any, Any, str]] = []
    for key, item in work.items():
        if type(item) is str:
            leaves.append((key, work, key, item))
        elif type(item) is dict or type(item) is list:
            leaves.extend((key, node, slot, text) for node, slot, text in _collect_strings(item))
    sizes = [_str_size(leaf[3]) for leaf in leaves]
    capacity: dict[str, int] = {}
    for leaf, leaf_size in zip(leaves, sizes):
        if leaf_size > floor:
            capacity[leaf[0]] = capacity.get(leaf[0], 0) + leaf_size - floor
    entries = {key: [_size(key), _size(item)] for key, item in work.items()}

    # 1. When cutting strings cannot make up the excess on its own, the values with the most
    # bytes that cutting cannot remove (long lists of numbers, deep structures) become a marker
    # first, so that strings elsewhere are not cut for nothing.
    spare = sum(capacity.values())
    if size - budget > spare:

        def _rigid(key: str) -> int:
            return entries[key][1] - capacity.get(key, 0)

        for key in sorted(entries, key=_rigid, reverse=True):
            if size - budget <= spare or _rigid(key) <= _TRUNC_MARKER_SIZE:
                break
            work[key] = TRUNCATED
            size -= entries[key][1] - _TRUNC_MARKER_SIZE
            entries[key][1] = _TRUNC_MARKER_SIZE
            spare -= capacity.pop(key, 0)

    # 2. Longest strings first: cap all of them at one common JSON size, found by
    # water-filling; escapes make the estimate short at times, hence a few rounds.
    live = [index for index, leaf in enumerate(leaves) if work.get(leaf[0]) is not TRUNCATED]
    for _ in range(4):
        if size <= budget or not live:
            break
        level = max(_water_level([sizes[index] for index in live], size - budget), floor)
        for index in live:
            if sizes[index] > level:
                top, node, slot, original = leaves[index]
                shorter, new_size = _cut(original, level)
                if new_size < sizes[index]:
                    node[slot] = shorter
                    saved = sizes[index] - new_size
                    size -= saved
                    entries[top][1] -= saved
                    sizes[index] = new_size
        if level == floor:
            break

    # 3. Still too big: largest values become a marker, then the largest entries (huge keys)
    # are removed.
    if size > budget:
        for key in sorted(entries, key=lambda k: entries[k][1], reverse=True):
            if size <= budget:
                break
            value_size = entries[key][1]
            if value_size > _TRUNC_MARKER_SIZE:
                work[key] = TRUNCATED
                size -= value_size - _TRUNC_MARKER_SIZE
                entries[key][1] = _TRUNC_MARKER_SIZE
        for key in sorted(entries, key=lambda k: sum(entries[k]), reverse=True):
            if size <= budget:
                break
            del work[key]
            size -= sum(entries[key]) + 1 + (1 if work else 0)  # ':' and the ',' it needed

    shell_event["properties"] = work
    data = _utf8(_ENCODER.encode(shell))
    if len(data) > max_bytes:  # accounting is exact, but never trust it with the limit
        shell_event["properties"] = {}
        data = _utf8(_ENCODER.encode(shell))
    return data if len(data) <= max_bytes else None

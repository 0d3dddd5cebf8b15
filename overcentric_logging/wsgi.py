"""WSGI middleware that binds the browser's ids and the page URL for one request.

``OvercentricMiddleware`` reads the device and session ids that the browser SDK exposes
(``window.overcentricDeviceId`` / ``window.overcentricSessionId``) from request headers or,
optionally, cookies, rebuilds the full request URL and hostname, asks an optional ``identify``
hook for the user's identity, and binds all of it with :func:`overcentric_logging.context.bound`
while the application runs *and* while the response iterable is iterated and closed, so events
logged from a streaming generator carry the ids too. This module also holds the framework-free
pieces (:class:`RequestOptions`, value validation, URL reconstruction) that the ASGI, Django and
Flask integrations share; it imports nothing outside the standard library.
"""

from __future__ import annotations

import importlib
import logging
import re
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Dict, Optional, Union
from urllib.parse import quote

from .context import bind, bound

__all__ = [
    "DEFAULT_DEVICE_HEADER",
    "DEFAULT_SESSION_HEADER",
    "ENVIRON_KEY",
    "MAX_ID_LENGTH",
    "IdentifyHook",
    "OvercentricMiddleware",
    "RequestOptions",
    "bind_request",
    "clean_id",
]

DEFAULT_DEVICE_HEADER = "X-Overcentric-Device-Id"
DEFAULT_SESSION_HEADER = "X-Overcentric-Session-Id"
MAX_ID_LENGTH = 200
# The per-request dict of bound fields lives in the environ so that code running inside the
# application (the Flask extension's identity hook, or a user's own code via bind_request) can
# add fields that must also hold while the response iterable is consumed.
ENVIRON_KEY = "overcentric_logging.fields"

IdentifyHook = Callable[[Any], Optional[Mapping[str, Any]]]
WSGIEnvironment = Dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApplication = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]

_logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# A host header is trusted only if it looks like a host: a DNS name or IPv4 address, or a
# bracketed IPv6 literal, with an optional port. Anything else falls back to the server's name.
_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::[0-9]{1,5})?$")
_PATH_SAFE = "/!$&'()*+,;=:@~"
_QUERY_SAFE = "/!$&'()*+,;=:@~?%[]"


def clean_id(value: str | bytes | None, max_length: int = MAX_ID_LENGTH) -> str | None:
    """Return a usable id from a header or cookie value, or ``None`` to ignore it.

    The value is stripped; empty values, values longer than ``max_length`` and values with any
    character outside printable ASCII (no spaces, no control characters) are rejected rather
    than truncated, since a truncated or mangled id would join the wrong user's journey.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    if not value or len(value) > max_length:
        return None
    if not all("!" <= ch <= "~" for ch in value):
        return None
    return value


def clean_host(value: str | None) -> str | None:
    """Return ``value`` lower-cased if it is a plausible ``host[:port]``, else ``None``."""
    if not value:
        return None
    value = value.strip()
    if len(value) > 255 or not _HOST_RE.match(value):
        return None
    return value.lower()


def _first(value: str | None) -> str | None:
    """First item of a comma-separated forwarding header (the client-facing proxy's value)."""
    if not value:
        return None
    return value.split(",", 1)[0].strip() or None


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[: host.index("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


def _strip_default_port(scheme: str, host: str) -> str:
    hostname = _hostname(host)
    port = host[len(hostname) + 1 :]
    if port and port.isdigit() and int(port) == _DEFAULT_PORTS.get(scheme):
        return hostname
    return host


def parse_cookies(header: str | None, names: Iterable[str]) -> dict[str, str]:
    """Pick ``names`` out of a ``Cookie`` header.

    Written by hand because ``http.cookies.SimpleCookie`` gives up on the whole header when a
    single unrelated cookie is malformed, which browsers and other apps produce routinely.
    """
    wanted = set(names)
    found: dict[str, str] = {}
    if not header or not wanted:
        return found
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in wanted or name in found:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        found[name] = value
    return found


def quote_path(path: str, encoding: str = "utf-8") -> str:
    """Percent-encode a decoded request path for use in a URL."""
    try:
        raw = path.encode(encoding)
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "replace")
    return quote(raw, safe=_PATH_SAFE)


def quote_query(query: str) -> str:
    """Escape what may not appear raw in a URL query, keeping existing escapes as they are."""
    try:
        raw = query.encode("latin-1")
    except UnicodeEncodeError:
        raw = query.encode("utf-8", "replace")
    return quote(raw, safe=_QUERY_SAFE)


def resolve_callable(value: Any) -> Any:
    """Turn a dotted path (``"pkg.mod.func"``, ``"pkg.mod:func"``, ``"ext://..."``) into an object.

    Settings files (Django ``settings.OVERCENTRIC``, Flask ``app.config``) can then name the
    identity hook without importing it.
    """
    if not isinstance(value, str):
        return value
    path = value[len("ext://") :] if value.startswith("ext://") else value
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"not a dotted path to a callable: {value!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{value!r} does not name a callable")
    return obj


# Weak, so a hook's identity is not confused with a later object's reused id().
_hooks_reported: weakref.WeakSet[Any] = weakref.WeakSet()


def report_hook_error(hook: Any, problem: str, *, exc_info: bool = False) -> None:
    """Warn about a failing identity hook once, then only at debug level.

    A hook that fails does so on every request; a warning per request would bury the logs.
    """
    try:
        first = hook not in _hooks_reported
        _hooks_reported.add(hook)
    except TypeError:  # not weak-referenceable: warn every time rather than never
        first = True
    _logger.log(
        logging.WARNING if first else logging.DEBUG,
        "overcentric identify hook %r %s; no identity bound for this request%s",
        hook,
        problem,
        " (further failures are logged at DEBUG level)" if first else "",
        exc_info=exc_info,
    )


def identity_fields(result: Any, hook: Any) -> dict[str, Any]:
    """Validate what an identity hook returned; junk is logged and ignored, never raised."""
    if result is None:
        return {}
    if not isinstance(result, Mapping):
        report_hook_error(hook, f"returned {type(result).__name__}, not a mapping")
        return {}
    return {str(k): v for k, v in result.items() if v is not None}


def call_identify(hook: IdentifyHook | None, request: Any) -> dict[str, Any]:
    """Call ``hook(request)``; an exception in the hook must not break the request."""
    if hook is None:
        return {}
    try:
        result = hook(request)
    except Exception:
        report_hook_error(hook, "raised", exc_info=True)
        return {}
    return identity_fields(result, hook)


class RequestOptions:
    """Where the ids come from and how far forwarding headers are trusted.

    Shared by every integration so that WSGI, ASGI, Django and Flask read requests the same way.
    ``fields()`` takes accessors rather than a request object, which keeps it framework-free.
    """

    __slots__ = (
        "device_cookie",
        "device_header",
        "max_id_length",
        "session_cookie",
        "session_header",
        "trust_forwarded",
    )

    def __init__(
        self,
        *,
        device_header: str | None = DEFAULT_DEVICE_HEADER,
        session_header: str | None = DEFAULT_SESSION_HEADER,
        device_cookie: str | None = None,
        session_cookie: str | None = None,
        trust_forwarded: bool = False,
        max_id_length: int = MAX_ID_LENGTH,
    ) -> None:
        if max_id_length < 1:
            raise ValueError("max_id_length must be at least 1")
        self.device_header = device_header or None
        self.session_header = session_header or None
        self.device_cookie = device_cookie or None
        self.session_cookie = session_cookie or None
        self.trust_forwarded = bool(trust_forwarded)
        self.max_id_length = int(max_id_length)

    def fields(
        self,
        header: Callable[[str], str | None],
        *,
        scheme: str,
        host: str | None,
        target: str,
    ) -> dict[str, Any]:
        """Compute ``device_id``, ``session_id``, ``url`` and ``hostname`` for one request.

        ``header(name)`` returns a request header's value (or ``None``), ``host`` is the Host
        header or the server's own ``name[:port]``, ``target`` the escaped path and query.
        Fields that cannot be determined are left out, so the handler's defaults still apply.
        """
        out: dict[str, Any] = {}
        ids: dict[str, str | None] = {"device_id": None, "session_id": None}
        if self.device_header:
            ids["device_id"] = clean_id(header(self.device_header), self.max_id_length)
        if self.session_header:
            ids["session_id"] = clean_id(header(self.session_header), self.max_id_length)
        if (ids["device_id"] is None and self.device_cookie) or (
            ids["session_id"] is None and self.session_cookie
        ):
            names = [n for n in (self.device_cookie, self.session_cookie) if n]
            cookies = parse_cookies(header("Cookie"), names)
            pairs = (("device_id", self.device_cookie), ("session_id", self.session_cookie))
            for key, name in pairs:
                if ids[key] is None and name:
                    ids[key] = clean_id(cookies.get(name), self.max_id_length)
        for key, value in ids.items():
            if value is not None:
                out[key] = value

        if self.trust_forwarded:
            proto = (_first(header("X-Forwarded-Proto")) or "").lower()
            if proto in ("http", "https"):
                websocket = scheme in ("ws", "wss")
                scheme = {"http": "ws", "https": "wss"}[proto] if websocket else proto
            host = clean_host(_first(header("X-Forwarded-Host"))) or host
        host = clean_host(host)
        if host:
            out["url"] = f"{scheme}://{_strip_default_port(scheme, host)}{target}"
            out["hostname"] = _hostname(host)
        return out


def _environ_header(environ: Mapping[str, Any]) -> Callable[[str], str | None]:
    def header(name: str) -> str | None:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        value = environ.get(key)
        return value if isinstance(value, str) else None

    return header


def environ_host(environ: Mapping[str, Any]) -> str | None:
    """Host header, else ``SERVER_NAME[:SERVER_PORT]``, as PEP 3333 reconstructs it."""
    host = environ.get("HTTP_HOST")
    if isinstance(host, str) and clean_host(host):
        return host
    name = environ.get("SERVER_NAME")
    if not isinstance(name, str) or not name:
        return None
    port = str(environ.get("SERVER_PORT") or "")
    return f"{name}:{port}" if port else name


def environ_fields(
    options: RequestOptions,
    environ: Mapping[str, Any],
    *,
    scheme: str | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """Request fields from a WSGI environ (or Django's ``request.META``)."""
    if scheme is None:
        scheme = str(environ.get("wsgi.url_scheme") or "http")
    if target is None:
        # PEP 3333 strings are bytes decoded as latin-1; re-encoding them that way recovers the
        # original bytes, so non-ASCII paths come out percent-encoded exactly as sent.
        path = quote_path(str(environ.get("SCRIPT_NAME") or ""), "latin-1") + quote_path(
            str(environ.get("PATH_INFO") or ""), "latin-1"
        )
        query = str(environ.get("QUERY_STRING") or "")
        target = (path or "/") + ("?" + quote_query(query) if query else "")
    return options.fields(
        _environ_header(environ), scheme=scheme, host=environ_host(environ), target=target
    )


def bind_request(environ: WSGIEnvironment, **fields: Any) -> None:
    """Bind ``fields`` for the rest of this request, including its streamed response body.

    Plain :func:`overcentric_logging.bind` inside a WSGI app lasts until the application
    returns; this also records the fields where the middleware re-binds them while the response
    iterable is consumed. Outside the middleware it behaves like ``bind``.
    """
    request_fields = environ.get(ENVIRON_KEY)
    if isinstance(request_fields, dict):
        request_fields.update(fields)
    bind(**fields)


class _BoundIterable:
    """Re-binds the request's fields around every step of the response iterable.

    Binding per step (rather than once for the whole iteration) keeps the context correct
    whichever thread or context the server iterates in, and never leaks fields between steps.
    """

    __slots__ = ("_fields", "_iterable", "_iterator")

    def __init__(self, iterable: Iterable[bytes], fields: dict[str, Any]) -> None:
        self._iterable = iterable
        self._fields = fields
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> _BoundIterable:
        return self

    def __next__(self) -> bytes:
        with bound(**self._fields):
            if self._iterator is None:
                self._iterator = iter(self._iterable)
            return next(self._iterator)

    def close(self) -> None:
        close = getattr(self._iterable, "close", None)
        if close is not None:
            with bound(**self._fields):
                close()


class OvercentricMiddleware:
    """Bind Overcentric request fields around a WSGI application.

    ``app = OvercentricMiddleware(app)``; options:

    - ``device_header`` / ``session_header``: header names for the ids (defaults
      ``X-Overcentric-Device-Id`` / ``X-Overcentric-Session-Id``; ``None`` disables one);
    - ``device_cookie`` / ``session_cookie``: cookie names to fall back on (off by default);
    - ``identify``: ``callable(environ) -> mapping | None`` whose result (for example
      ``{"user_id": "u1", "user_email": "a@b.c"}``) is bound as well; a dotted path works too;
    - ``trust_forwarded``: honour ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` (only behind a
      proxy that sets them, otherwise clients could choose the reported URL);
    - ``max_id_length``: ids longer than this are ignored (default 200).
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        device_header: str | None = DEFAULT_DEVICE_HEADER,
        session_header: str | None = DEFAULT_SESSION_HEADER,
        device_cookie: str | None = None,
        session_cookie: str | None = None,
        identify: Union[IdentifyHook, str, None] = None,
        trust_forwarded: bool = False,
        max_id_length: int = MAX_ID_LENGTH,
    ) -> None:
        self.app = app
        self.options = RequestOptions(
            device_header=device_header,
            session_header=session_header,
            device_cookie=device_cookie,
            session_cookie=session_cookie,
            trust_forwarded=trust_forwarded,
            max_id_length=max_id_length,
        )
        self.identify: IdentifyHook | None = resolve_callable(identify)

    def request_fields(self, environ: WSGIEnvironment) -> dict[str, Any]:
        """Everything this middleware binds for ``environ``."""
        fields = environ_fields(self.options, environ)
        fields.update(call_identify(self.identify, environ))
        return fields

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        fields = self.request_fields(environ)
        environ[ENVIRON_KEY] = fields
        with bound(**fields):
            result = self.app(environ, start_response)
        if isinstance(result, (list, tuple)):
            # Nothing can run while a list is iterated; returning it keeps len() for servers
            # that use it to set Content-Length.
            return result
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            return result  # keep the server's sendfile path; reading a file logs nothing
        return _BoundIterable(result, fields)

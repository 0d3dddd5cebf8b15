"""ASGI 3 middleware that binds the browser's ids and the page URL for one request.

The ASGI counterpart of :mod:`overcentric_logging.wsgi`, for Starlette, FastAPI, Django's ASGI
handler and any other ASGI 3 application: for ``http`` and ``websocket`` scopes it reads the
device and session ids from headers (or cookies), rebuilds the URL and hostname, calls the
optional ``identify`` hook and binds everything around ``await app(scope, receive, send)``.
Context variables are per task, and the whole response (streamed bodies included) is sent
inside that call, so every event logged while serving the request sees the fields and nothing
is left bound afterwards. ``lifespan`` and unknown scope types pass through untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Iterable, MutableMapping
from typing import Any, Callable, Optional, Union

from .context import bound
from .wsgi import (
    DEFAULT_DEVICE_HEADER,
    DEFAULT_SESSION_HEADER,
    MAX_ID_LENGTH,
    IdentifyHook,
    RequestOptions,
    identity_fields,
    quote_path,
    quote_query,
    report_hook_error,
    resolve_callable,
)

__all__ = ["OvercentricMiddleware", "scope_fields"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# The hook may also be a coroutine function, for identities that need I/O (a session store).
AsyncIdentifyHook = Callable[[Any], Awaitable[Optional[Any]]]


def _header_lookup(scope: Scope) -> Callable[[str], str | None]:
    headers: dict[str, str] = {}
    raw: Iterable[Any] = scope.get("headers") or ()
    for name, value in raw:
        key = bytes(name).decode("latin-1").lower()
        text = bytes(value).decode("latin-1")
        if key == "cookie" and key in headers:
            # HTTP/2 may split cookies across several headers (RFC 9113, 8.2.3).
            headers[key] = headers[key] + "; " + text
        elif key not in headers:
            headers[key] = text

    def header(name: str) -> str | None:
        return headers.get(name.lower())

    return header


def scope_fields(options: RequestOptions, scope: Scope) -> dict[str, Any]:
    """Request fields (ids, url, hostname) for an ASGI ``http`` or ``websocket`` scope."""
    header = _header_lookup(scope)
    default_scheme = "ws" if scope.get("type") == "websocket" else "http"
    scheme = str(scope.get("scheme") or default_scheme).lower()
    host = header("host")
    if not host:
        server = scope.get("server")
        if server and len(server) == 2 and server[1] is not None:
            name = str(server[0])
            host = f"[{name}]:{server[1]}" if ":" in name else f"{name}:{server[1]}"
    # Servers disagree on whether ``path`` already includes ``root_path`` (the ASGI spec now
    # says it does; older servers strip it): add the prefix only when it is missing.
    root_path = str(scope.get("root_path") or "")
    path = str(scope.get("path") or "")
    if root_path and not path.startswith(root_path):
        path = root_path + path
    query = scope.get("query_string") or b""
    query_text = bytes(query).decode("latin-1") if not isinstance(query, str) else query
    target = quote_path(path or "/") + ("?" + quote_query(query_text) if query_text else "")
    fields: dict[str, Any] = options.fields(header, scheme=scheme, host=host, target=target)
    return fields


class OvercentricMiddleware:
    """Bind Overcentric request fields around an ASGI 3 application.

    ``app = OvercentricMiddleware(app)`` or, in Starlette / FastAPI,
    ``app.add_middleware(OvercentricMiddleware)``. Options as in
    :class:`overcentric_logging.wsgi.OvercentricMiddleware`; ``identify`` receives the ASGI
    scope and may be a plain function or a coroutine function.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        device_header: str | None = DEFAULT_DEVICE_HEADER,
        session_header: str | None = DEFAULT_SESSION_HEADER,
        device_cookie: str | None = None,
        session_cookie: str | None = None,
        identify: Union[IdentifyHook, AsyncIdentifyHook, str, None] = None,
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
        self.identify: Callable[[Any], Any] | None = resolve_callable(identify)

    async def request_fields(self, scope: Scope) -> dict[str, Any]:
        """Everything this middleware binds for ``scope``."""
        fields = scope_fields(self.options, scope)
        if self.identify is not None:
            try:
                result = self.identify(scope)
                if inspect.isawaitable(result):
                    result = await result
            except Exception:
                report_hook_error(self.identify, "raised", exc_info=True)
                result = None
            fields.update(identity_fields(result, self.identify))
        return fields

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        fields = await self.request_fields(scope)
        with bound(**fields):
            await self.app(scope, receive, send)

"""Django middleware that binds the browser's ids, the page URL and the user for one request.

Add ``"overcentric_logging.django.OvercentricMiddleware"`` to ``MIDDLEWARE`` (after
``AuthenticationMiddleware``, so that ``request.user`` exists) and, optionally, configure it
with ``settings.OVERCENTRIC = {...}`` using the option names of
:class:`overcentric_logging.wsgi.OvercentricMiddleware`. The middleware is sync and async
capable, so it adds no thread hop under ASGI; the default identity hook binds ``user_id`` and
``user_email`` of an authenticated ``request.user``, and ``"identify"`` may name another hook by
dotted path (or be ``None`` to bind no identity). Streaming responses are wrapped so that events
logged while their content is produced carry the fields too. Django is imported only here,
never when :mod:`overcentric_logging` itself is imported.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .context import bound
from .wsgi import (
    DEFAULT_DEVICE_HEADER,
    DEFAULT_SESSION_HEADER,
    MAX_ID_LENGTH,
    RequestOptions,
    environ_fields,
    identity_fields,
    report_hook_error,
    resolve_callable,
)

__all__ = ["OvercentricMiddleware", "default_identify"]

_OPTION_DEFAULTS: Mapping[str, Any] = {
    "device_header": DEFAULT_DEVICE_HEADER,
    "session_header": DEFAULT_SESSION_HEADER,
    "device_cookie": None,
    "session_cookie": None,
    "trust_forwarded": False,
    "max_id_length": MAX_ID_LENGTH,
}


def _user_fields(user: Any) -> dict[str, Any] | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    fields: dict[str, Any] = {"user_id": str(user.pk)}
    email = getattr(user, "email", None)
    if email:
        fields["user_email"] = email
    return fields


def default_identify(request: Any) -> dict[str, Any] | None:
    """``user_id`` / ``user_email`` of ``request.user`` when it is authenticated."""
    return _user_fields(getattr(request, "user", None))


async def _default_identify_async(request: Any) -> dict[str, Any] | None:
    auser = getattr(request, "auser", None)  # Django 5.0+: load the user without a thread hop
    if auser is not None:
        return _user_fields(await auser())
    if not hasattr(request, "user"):
        return None
    return await sync_to_async(default_identify)(request)


def _wrap_sync(content: Iterable[Any], fields: dict[str, Any]) -> Iterator[Any]:
    iterator = iter(content)
    try:
        while True:
            with bound(**fields):
                try:
                    chunk = next(iterator)
                except StopIteration:
                    return
            yield chunk
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            with bound(**fields):
                close()


async def _wrap_async(content: Any, fields: dict[str, Any]) -> AsyncIterator[Any]:
    iterator = content.__aiter__()
    try:
        while True:
            with bound(**fields):
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    return
            yield chunk
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with bound(**fields):
                await aclose()


class OvercentricMiddleware:
    """New-style Django middleware; see the module docstring for settings."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        config = getattr(settings, "OVERCENTRIC", None) or {}
        if not isinstance(config, Mapping):
            raise ImproperlyConfigured("settings.OVERCENTRIC must be a dict")
        # Unknown keys are ignored: the same dict may also carry the client's settings.
        self.options = RequestOptions(
            **{name: config.get(name, default) for name, default in _OPTION_DEFAULTS.items()}
        )
        hook = config.get("identify", default_identify)
        try:
            self.identify: Callable[[Any], Any] | None = resolve_callable(hook)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImproperlyConfigured(f"OVERCENTRIC['identify']: {exc}") from exc

    def request_fields(self, request: Any) -> dict[str, Any]:
        """Ids, URL and hostname for ``request`` (the identity is added separately)."""
        # request.scheme already honours settings.SECURE_PROXY_SSL_HEADER; get_full_path() is
        # Django's escaped path plus query, under WSGI and ASGI alike;
        # get_host() is avoided because it raises for hosts outside ALLOWED_HOSTS.
        return environ_fields(
            self.options,
            request.META,
            scheme=str(request.scheme or "http"),
            target=request.get_full_path(),
        )

    def _identity(self, request: Any) -> dict[str, Any]:
        if self.identify is None:
            return {}
        try:
            result = self.identify(request)
            if inspect.isawaitable(result):
                # An async hook under WSGI: nothing to await it with, so it is a setup error.
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                raise TypeError("an async identify hook needs Django running under ASGI")
        except Exception:
            report_hook_error(self.identify, "raised", exc_info=True)
            return {}
        return identity_fields(result, self.identify)

    async def _aidentity(self, request: Any) -> dict[str, Any]:
        hook = self.identify
        if hook is None:
            return {}
        try:
            if hook is default_identify:
                result: Any = await _default_identify_async(request)
            elif iscoroutinefunction(hook):
                result = await hook(request)
            else:
                # A sync hook may touch the database (request.user does), which Django forbids
                # on the event loop thread.
                result = await sync_to_async(hook)(request)
        except Exception:
            report_hook_error(hook, "raised", exc_info=True)
            return {}
        return identity_fields(result, hook)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        fields = self.request_fields(request)
        fields.update(self._identity(request))
        with bound(**fields):
            response = self.get_response(request)
        self._wrap_streaming(response, fields)
        return response

    async def __acall__(self, request: Any) -> Any:
        fields = self.request_fields(request)
        fields.update(await self._aidentity(request))
        with bound(**fields):
            response = await self.get_response(request)
        self._wrap_streaming(response, fields)
        return response

    @staticmethod
    def _wrap_streaming(response: Any, fields: dict[str, Any]) -> None:
        if not getattr(response, "streaming", False) or not fields:
            return
        if getattr(response, "file_to_stream", None) is not None:
            return  # a FileResponse goes through the server's file wrapper; keep that path
        content = response.streaming_content
        if getattr(response, "is_async", False):
            response.streaming_content = _wrap_async(content, fields)
        else:
            response.streaming_content = _wrap_sync(content, fields)

"""Flask extension that binds the browser's ids, the page URL and the user for one request.

``Overcentric(app)`` (or ``Overcentric()`` then ``init_app(app)``) wraps ``app.wsgi_app`` in
:class:`overcentric_logging.wsgi.OvercentricMiddleware`, so the fields stay bound while a
streamed response is generated, and reads its options from ``app.config["OVERCENTRIC_*"]``
(``OVERCENTRIC_DEVICE_HEADER``, ``OVERCENTRIC_SESSION_HEADER``, ``OVERCENTRIC_DEVICE_COOKIE``,
``OVERCENTRIC_SESSION_COOKIE``, ``OVERCENTRIC_TRUST_FORWARDED``, ``OVERCENTRIC_MAX_ID_LENGTH``,
``OVERCENTRIC_IDENTIFY``); keyword arguments given to ``Overcentric`` win over the config.
Flask has no standard user object, so there is no default identity hook: ``identify`` (a
callable or a dotted path) is called with ``flask.request`` at the start of each request,
inside the request context, so it may use ``flask.g`` or Flask-Login's ``current_user``.
"""

from __future__ import annotations

from typing import Any

from .wsgi import (
    DEFAULT_DEVICE_HEADER,
    DEFAULT_SESSION_HEADER,
    MAX_ID_LENGTH,
    OvercentricMiddleware,
    bind_request,
    call_identify,
    resolve_callable,
)

__all__ = ["Overcentric"]

_OPTIONS = {
    "device_header": DEFAULT_DEVICE_HEADER,
    "session_header": DEFAULT_SESSION_HEADER,
    "device_cookie": None,
    "session_cookie": None,
    "trust_forwarded": False,
    "max_id_length": MAX_ID_LENGTH,
    "identify": None,
}
_EXTENSION_KEY = "overcentric_logging"


class Overcentric:
    """The Flask extension; see the module docstring for the options."""

    def __init__(self, app: Any = None, **options: Any) -> None:
        unknown = set(options) - set(_OPTIONS)
        if unknown:
            raise TypeError(f"unknown Overcentric option(s): {', '.join(sorted(unknown))}")
        self.options = options
        if app is not None:
            self.init_app(app)

    def settings_for(self, app: Any) -> dict[str, Any]:
        """The effective options for ``app``: keyword arguments, then config, then defaults."""
        settings: dict[str, Any] = {}
        for name, default in _OPTIONS.items():
            if name in self.options:
                settings[name] = self.options[name]
            else:
                settings[name] = app.config.get(f"OVERCENTRIC_{name.upper()}", default)
        return settings

    def init_app(self, app: Any) -> None:
        """Install the middleware and the identity hook on ``app`` (once per app)."""
        if _EXTENSION_KEY in app.extensions:
            return  # a second wrap would bind the same fields twice per request
        settings = self.settings_for(app)
        identify = resolve_callable(settings.pop("identify"))
        app.wsgi_app = OvercentricMiddleware(app.wsgi_app, **settings)
        if identify is not None:

            def bind_identity() -> None:
                from flask import request

                fields = call_identify(identify, request)
                if fields:
                    bind_request(request.environ, **fields)

            # First in line, so that an earlier hook returning a response early (a login
            # redirect, say) still leaves its log records with the identity.
            app.before_request_funcs.setdefault(None, []).insert(0, bind_identity)
        app.extensions[_EXTENSION_KEY] = self

"""Tests for the framework-free WSGI middleware in ``overcentric_logging.wsgi``."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
import wsgiref.util
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from overcentric_logging.context import bind, clear, get_bound
from overcentric_logging.wsgi import (
    OvercentricMiddleware,
    bind_request,
    clean_id,
    parse_cookies,
)

DEVICE = "3f2b8c1e-0d7a-4a55-9f44-6c0b2a1d9e01"
SESSION = "a9c1d2e3-4b5f-4c6d-8e7f-001122334455"

StartResponse = Callable[..., Any]


@pytest.fixture(autouse=True)
def _clean_context() -> Iterator[None]:
    clear()
    yield
    clear()


def echo_app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """Returns the fields bound while the view runs, as JSON."""
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(dict(get_bound())).encode()]


def make_environ(**overrides: Any) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/checkout/success",
        "QUERY_STRING": "",
        "SERVER_NAME": "internal",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "app.example.com",
        "wsgi.url_scheme": "https",
    }
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(overrides)
    return environ


def call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[str, bytes]:
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return statuses[0], body


def fields_for(environ: dict[str, Any], **options: Any) -> dict[str, Any]:
    status, body = call(OvercentricMiddleware(echo_app, **options), environ)
    assert status == "200 OK"
    fields: dict[str, Any] = json.loads(body)
    return fields


def test_binds_ids_url_and_hostname_during_the_request() -> None:
    environ = make_environ(
        HTTP_X_OVERCENTRIC_DEVICE_ID=DEVICE,
        HTTP_X_OVERCENTRIC_SESSION_ID=SESSION,
        QUERY_STRING="plan=pro&x=1",
    )
    assert fields_for(environ) == {
        "device_id": DEVICE,
        "session_id": SESSION,
        "url": "https://app.example.com/checkout/success?plan=pro&x=1",
        "hostname": "app.example.com",
    }
    assert dict(get_bound()) == {}


def test_missing_headers_bind_no_ids() -> None:
    fields = fields_for(make_environ())
    assert "device_id" not in fields
    assert "session_id" not in fields
    assert fields["url"] == "https://app.example.com/checkout/success"


def test_fields_bound_earlier_are_restored_after_the_request() -> None:
    bind(device_id="process-default", plan="free")
    fields = fields_for(make_environ(HTTP_X_OVERCENTRIC_DEVICE_ID=DEVICE))
    assert fields["device_id"] == DEVICE
    assert fields["plan"] == "free"
    assert dict(get_bound()) == {"device_id": "process-default", "plan": "free"}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "x" * 201,
        "abc def",
        "abc\x00def",
        "abc\r\nX-Injected: 1",
        "caf\u00e9",
    ],
)
def test_hostile_or_empty_ids_are_ignored(value: str) -> None:
    fields = fields_for(make_environ(HTTP_X_OVERCENTRIC_DEVICE_ID=value))
    assert "device_id" not in fields


def test_ids_are_stripped_and_length_is_configurable() -> None:
    fields = fields_for(
        make_environ(HTTP_X_OVERCENTRIC_DEVICE_ID=f"  {DEVICE}\t"), max_id_length=36
    )
    assert fields["device_id"] == DEVICE
    fields = fields_for(make_environ(HTTP_X_OVERCENTRIC_DEVICE_ID=DEVICE), max_id_length=35)
    assert "device_id" not in fields


def test_clean_id_accepts_bytes_and_rejects_none() -> None:
    assert clean_id(b" abc ") == "abc"
    assert clean_id(None) is None
    assert clean_id("x" * 200) == "x" * 200


def test_custom_header_names_and_disabled_header() -> None:
    environ = make_environ(HTTP_X_DEVICE=DEVICE, HTTP_X_OVERCENTRIC_SESSION_ID=SESSION)
    fields = fields_for(environ, device_header="X-Device", session_header=None)
    assert fields["device_id"] == DEVICE
    assert "session_id" not in fields


def test_cookies_are_off_by_default() -> None:
    environ = make_environ(HTTP_COOKIE=f"oc_device={DEVICE}; oc_session={SESSION}")
    fields = fields_for(environ)
    assert "device_id" not in fields and "session_id" not in fields


def test_cookies_are_a_fallback_and_headers_win() -> None:
    environ = make_environ(
        HTTP_COOKIE=f'broken; other="x"; oc_device="{DEVICE}"; oc_session=cookie-session',
        HTTP_X_OVERCENTRIC_SESSION_ID=SESSION,
    )
    fields = fields_for(environ, device_cookie="oc_device", session_cookie="oc_session")
    assert fields["device_id"] == DEVICE
    assert fields["session_id"] == SESSION


def test_parse_cookies_survives_malformed_cookies() -> None:
    header = 'a=1; =x; junk; b="two"; a=ignored-duplicate; c'
    assert parse_cookies(header, ["a", "b", "c"]) == {"a": "1", "b": "two"}
    assert parse_cookies(None, ["a"]) == {}


def test_url_without_host_header_uses_server_name_and_non_default_port() -> None:
    environ = make_environ(**{"wsgi.url_scheme": "http"})
    del environ["HTTP_HOST"]
    fields = fields_for(environ)
    assert fields["url"] == "http://internal:8000/checkout/success"
    assert fields["hostname"] == "internal"


def test_default_port_is_dropped_and_host_lowercased() -> None:
    fields = fields_for(make_environ(HTTP_HOST="App.Example.COM:443"))
    assert fields["url"] == "https://app.example.com/checkout/success"
    fields = fields_for(make_environ(HTTP_HOST="app.example.com:8443"))
    assert fields["url"] == "https://app.example.com:8443/checkout/success"
    assert fields["hostname"] == "app.example.com"


def test_ipv6_host() -> None:
    fields = fields_for(make_environ(HTTP_HOST="[::1]:8000"))
    assert fields["url"] == "https://[::1]:8000/checkout/success"
    assert fields["hostname"] == "[::1]"


def test_script_name_and_non_ascii_path_are_percent_encoded() -> None:
    # WSGI hands over the raw path bytes decoded as latin-1.
    raw_path = "/caf\u00e9 menu".encode().decode("latin-1")
    environ = make_environ(SCRIPT_NAME="/shop", PATH_INFO=raw_path, QUERY_STRING="q=a b&r=%C3%A9")
    fields = fields_for(environ)
    assert fields["url"] == "https://app.example.com/shop/caf%C3%A9%20menu?q=a%20b&r=%C3%A9"


def test_hostile_host_header_falls_back_to_server_name() -> None:
    fields = fields_for(make_environ(HTTP_HOST="evil.com/<script>"))
    assert fields["hostname"] == "internal"
    assert fields["url"] == "https://internal:8000/checkout/success"


def test_forwarded_headers_are_ignored_unless_trusted() -> None:
    environ = make_environ(
        HTTP_X_FORWARDED_PROTO="http",
        HTTP_X_FORWARDED_HOST="public.example.org, proxy.internal",
    )
    assert fields_for(environ)["url"] == "https://app.example.com/checkout/success"
    fields = fields_for(environ, trust_forwarded=True)
    assert fields["url"] == "http://public.example.org/checkout/success"
    assert fields["hostname"] == "public.example.org"


def test_trusted_but_junk_forwarded_values_are_ignored() -> None:
    environ = make_environ(HTTP_X_FORWARDED_PROTO="gopher", HTTP_X_FORWARDED_HOST="a b")
    fields = fields_for(environ, trust_forwarded=True)
    assert fields["url"] == "https://app.example.com/checkout/success"


def test_identify_result_is_bound() -> None:
    seen: list[str] = []

    def identify(environ: dict[str, Any]) -> dict[str, Any]:
        seen.append(environ["PATH_INFO"])
        return {"user_id": "u1", "user_email": "a@b.c", "user_name": None}

    fields = fields_for(make_environ(), identify=identify)
    assert seen == ["/checkout/success"]
    assert fields["user_id"] == "u1"
    assert fields["user_email"] == "a@b.c"
    assert "user_name" not in fields


def identify_from_header(environ: dict[str, Any]) -> dict[str, Any] | None:
    user = environ.get("HTTP_X_USER")
    return {"user_id": user} if user else None


def test_identify_may_be_a_dotted_path() -> None:
    path = f"{__name__}.identify_from_header"
    fields = fields_for(make_environ(HTTP_X_USER="u7"), identify=path)
    assert fields["user_id"] == "u7"
    assert "user_id" not in fields_for(make_environ(), identify=path)


def test_identify_that_raises_or_returns_junk_does_not_break_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="overcentric_logging")

    def broken(environ: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("session store down")

    fields = fields_for(make_environ(HTTP_X_OVERCENTRIC_DEVICE_ID=DEVICE), identify=broken)
    assert fields["device_id"] == DEVICE
    assert "user_id" not in fields
    assert "session store down" in caplog.text

    fields = fields_for(make_environ(), identify=lambda environ: ["u1"])
    assert "user_id" not in fields


def test_generator_response_sees_fields_while_iterated_and_closed() -> None:
    seen: list[dict[str, Any]] = []
    closed = threading.Event()

    def streaming_app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Iterator[bytes]:
            try:
                for chunk in (b"a", b"b"):
                    seen.append(dict(get_bound()))
                    yield chunk
            finally:
                seen.append(dict(get_bound()))
                closed.set()

        return body()

    app = OvercentricMiddleware(streaming_app)
    result = app(make_environ(HTTP_X_OVERCENTRIC_DEVICE_ID=DEVICE), lambda *a: None)
    assert dict(get_bound()) == {}
    iterator = iter(result)
    assert next(iterator) == b"a"
    assert dict(get_bound()) == {}, "fields must not leak between steps"
    result.close()  # type: ignore[attr-defined]
    assert closed.is_set()
    assert [s.get("device_id") for s in seen] == [DEVICE, DEVICE]
    assert dict(get_bound()) == {}


def test_bind_request_lasts_into_the_streamed_body() -> None:
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        bind_request(environ, user_id="u9")
        start_response("200 OK", [])

        def body() -> Iterator[bytes]:
            seen.append(dict(get_bound()))
            yield b"x"

        return body()

    status, body = call(OvercentricMiddleware(app), make_environ())
    assert (status, body) == ("200 OK", b"x")
    assert seen[0]["user_id"] == "u9"
    assert seen[0]["hostname"] == "app.example.com"
    assert dict(get_bound()) == {}


def test_exception_in_app_leaves_nothing_bound() -> None:
    def failing(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        assert get_bound()["device_id"] == DEVICE
        raise ValueError("boom")

    app = OvercentricMiddleware(failing)
    with pytest.raises(ValueError, match="boom"):
        app(make_environ(HTTP_X_OVERCENTRIC_DEVICE_ID=DEVICE), lambda *a: None)
    assert dict(get_bound()) == {}


def test_exception_in_streamed_body_leaves_nothing_bound() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])

        def body() -> Iterator[bytes]:
            yield b"a"
            raise ValueError("mid-stream")

        return body()

    result = OvercentricMiddleware(app)(make_environ(), lambda *a: None)
    with pytest.raises(ValueError, match="mid-stream"):
        list(result)
    assert dict(get_bound()) == {}


def test_list_results_are_returned_unchanged() -> None:
    body = [b"one", b"two"]

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        return body

    assert OvercentricMiddleware(app)(make_environ(), lambda *a: None) is body


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_concurrent_requests_over_real_sockets_do_not_see_each_others_ids() -> None:
    n = 20
    barrier = threading.Barrier(n, timeout=30)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        before = dict(get_bound())
        barrier.wait()  # every request is inside the view at the same time
        after = dict(get_bound())
        start_response("200 OK", [("Content-Type", "application/json")])

        def body() -> Iterator[bytes]:
            yield json.dumps({"before": before, "after": after, "body": dict(get_bound())}).encode()

        return body()

    server = make_server(
        "127.0.0.1", 0, OvercentricMiddleware(app),
        server_class=_ThreadingWSGIServer, handler_class=_QuietHandler,
    )
    port = server.server_address[1]
    serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serve.start()
    results: dict[int, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/item/{i}?n={i}",
            headers={
                "X-Overcentric-Device-Id": f"device-{i}",
                "X-Overcentric-Session-Id": f"session-{i}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                results[i] = json.loads(response.read())
        except BaseException as exc:  # reported below, with the thread's index
            errors.append(exc)

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        server.shutdown()
        server.server_close()
        serve.join(10)
    assert not errors
    assert sorted(results) == list(range(n))
    for i, seen in results.items():
        expected = {
            "device_id": f"device-{i}",
            "session_id": f"session-{i}",
            "url": f"http://127.0.0.1:{port}/item/{i}?n={i}",
            "hostname": "127.0.0.1",
        }
        assert seen["before"] == expected
        assert seen["after"] == expected
        assert seen["body"] == expected


def test_a_failing_hook_warns_once_then_logs_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="overcentric_logging")

    def broken(environ: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("still down")

    app = OvercentricMiddleware(echo_app, identify=broken)
    for _ in range(3):
        assert call(app, make_environ())[0] == "200 OK"
    levels = [r.levelno for r in caplog.records if "still down" in (r.exc_text or "")]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]

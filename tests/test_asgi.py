"""Tests for the framework-free ASGI middleware in ``overcentric_logging.asgi``.

The middleware is driven directly with asyncio (no framework), so every scope detail
(``root_path``, ``server``, split cookie headers, websocket schemes, lifespan) is under the
test's control.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any, Callable

import pytest

from overcentric_logging.asgi import OvercentricMiddleware
from overcentric_logging.context import clear, get_bound

DEVICE = "3f2b8c1e-0d7a-4a55-9f44-6c0b2a1d9e01"
SESSION = "a9c1d2e3-4b5f-4c6d-8e7f-001122334455"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


@pytest.fixture(autouse=True)
def _clean_context() -> Iterator[None]:
    clear()
    yield
    clear()


def http_scope(
    path: str = "/checkout/success",
    headers: list[tuple[str, str]] | None = None,
    **overrides: Any,
) -> Scope:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in (headers if headers is not None else [("Host", "app.example.com")])
        ],
        "server": ("10.0.0.5", 8000),
        "client": ("127.0.0.1", 50000),
    }
    scope.update(overrides)
    return scope


async def echo_app(scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    body = json.dumps(dict(get_bound())).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def run(app: Any, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, _receive, send)
    return sent


def fields_for(scope: Scope, **options: Any) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        sent = await run(OvercentricMiddleware(echo_app, **options), scope)
        assert dict(get_bound()) == {}
        fields: dict[str, Any] = json.loads(sent[-1]["body"])
        return fields

    return asyncio.run(main())


def test_binds_ids_url_and_hostname() -> None:
    scope = http_scope(
        headers=[
            ("Host", "app.example.com"),
            ("X-Overcentric-Device-Id", DEVICE),
            ("X-Overcentric-Session-Id", f" {SESSION} "),
        ],
        query_string=b"plan=pro&q=a%20b",
    )
    assert fields_for(scope) == {
        "device_id": DEVICE,
        "session_id": SESSION,
        "url": "https://app.example.com/checkout/success?plan=pro&q=a%20b",
        "hostname": "app.example.com",
    }


def test_hostile_ids_are_ignored() -> None:
    scope = http_scope(
        headers=[
            ("Host", "app.example.com"),
            ("X-Overcentric-Device-Id", "x" * 500),
            ("X-Overcentric-Session-Id", "a\x01b"),
        ]
    )
    fields = fields_for(scope)
    assert "device_id" not in fields and "session_id" not in fields


def test_server_fallback_non_ascii_path_and_root_path() -> None:
    scope = http_scope("/caf\u00e9", headers=[], root_path="/shop", scheme="http")
    fields = fields_for(scope)
    assert fields["url"] == "http://10.0.0.5:8000/shop/caf%C3%A9"
    assert fields["hostname"] == "10.0.0.5"
    # Newer servers put root_path inside path already; it must not be doubled.
    scope = http_scope("/shop/item", root_path="/shop")
    assert fields_for(scope)["url"] == "https://app.example.com/shop/item"


def test_ipv6_server_and_no_server_at_all() -> None:
    fields = fields_for(http_scope("/", headers=[], server=("::1", 8443)))
    assert fields["url"] == "https://[::1]:8443/"
    fields = fields_for(http_scope("/", headers=[], server=None))
    assert "url" not in fields and "hostname" not in fields


def test_cookie_headers_split_over_several_lines() -> None:
    scope = http_scope(
        headers=[
            ("Host", "app.example.com"),
            ("Cookie", "theme=dark"),
            ("Cookie", f"oc_did={DEVICE}; oc_sid={SESSION}"),
        ]
    )
    fields = fields_for(scope, device_cookie="oc_did", session_cookie="oc_sid")
    assert (fields["device_id"], fields["session_id"]) == (DEVICE, SESSION)
    assert "device_id" not in fields_for(scope)


def test_forwarded_headers_only_when_trusted() -> None:
    scope = http_scope(
        headers=[
            ("Host", "backend:8000"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "www.example.com"),
        ],
        scheme="http",
    )
    assert fields_for(scope)["url"] == "http://backend:8000/checkout/success"
    fields = fields_for(scope, trust_forwarded=True)
    assert fields["url"] == "https://www.example.com/checkout/success"
    assert fields["hostname"] == "www.example.com"


def test_websocket_scope() -> None:
    seen: list[dict[str, Any]] = []

    async def ws_app(scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        seen.append(dict(get_bound()))
        await send({"type": "websocket.close"})

    scope = http_scope(
        "/ws",
        headers=[("Host", "app.example.com"), ("X-Forwarded-Proto", "https"),
                 ("X-Overcentric-Device-Id", DEVICE)],
        type="websocket",
        scheme="ws",
    )
    asyncio.run(run(OvercentricMiddleware(ws_app, trust_forwarded=True), scope))
    assert seen == [
        {"device_id": DEVICE, "url": "wss://app.example.com/ws", "hostname": "app.example.com"}
    ]


def test_lifespan_passes_through_untouched() -> None:
    seen: list[tuple[Scope, dict[str, Any]]] = []

    async def app(scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        seen.append((scope, dict(get_bound())))

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    original = dict(scope)
    asyncio.run(run(OvercentricMiddleware(app, identify=lambda s: {"user_id": "x"}), scope))
    assert seen[0][0] is scope and scope == original
    assert seen[0][1] == {}


def test_sync_and_async_identify_hooks() -> None:
    def sync_hook(scope: Scope) -> dict[str, Any]:
        return {"user_id": "u1", "user_email": "a@b.c"}

    async def async_hook(scope: Scope) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        return {"user_id": "u2"} if scope["path"] == "/checkout/success" else None

    assert fields_for(http_scope(), identify=sync_hook)["user_email"] == "a@b.c"
    assert fields_for(http_scope(), identify=async_hook)["user_id"] == "u2"
    assert "user_id" not in fields_for(http_scope("/other"), identify=async_hook)


def test_identify_that_raises_does_not_break_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="overcentric_logging")

    async def broken(scope: Scope) -> dict[str, Any]:
        raise RuntimeError("auth backend down")

    fields = fields_for(http_scope(), identify=broken)
    assert fields["hostname"] == "app.example.com" and "user_id" not in fields
    assert "auth backend down" in caplog.text


def test_streaming_response_keeps_fields_bound_until_the_last_chunk() -> None:
    seen_in_app: list[dict[str, Any]] = []
    seen_in_send: list[dict[str, Any]] = []

    async def streaming(
        scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await asyncio.sleep(0)
            seen_in_app.append(dict(get_bound()))
            await send({"type": "http.response.body", "body": b"x", "more_body": i < 2})

    async def main() -> None:
        async def send(message: Message) -> None:
            seen_in_send.append(dict(get_bound()))

        scope = http_scope(headers=[("Host", "h"), ("X-Overcentric-Session-Id", SESSION)])
        await OvercentricMiddleware(streaming)(scope, _receive, send)
        assert dict(get_bound()) == {}

    asyncio.run(main())
    assert len(seen_in_app) == 3 and len(seen_in_send) == 4
    assert all(s["session_id"] == SESSION for s in seen_in_app + seen_in_send)


def test_exception_in_app_leaves_nothing_bound() -> None:
    async def failing(scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        assert get_bound()["device_id"] == DEVICE
        raise ValueError("boom")

    async def main() -> None:
        scope = http_scope(headers=[("Host", "h"), ("X-Overcentric-Device-Id", DEVICE)])
        with pytest.raises(ValueError, match="boom"):
            await run(OvercentricMiddleware(failing), scope)
        assert dict(get_bound()) == {}

    asyncio.run(main())


def test_concurrent_tasks_do_not_see_each_others_ids() -> None:
    n = 20

    async def main() -> list[dict[str, Any]]:
        arrived = 0
        all_in = asyncio.Event()

        async def app(scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
            nonlocal arrived
            before = dict(get_bound())
            arrived += 1
            if arrived == n:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), 30)  # every request is inside the app now
            body = json.dumps({"before": before, "after": dict(get_bound())}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

        middleware = OvercentricMiddleware(app)

        async def one(i: int) -> dict[str, Any]:
            scope = http_scope(
                f"/item/{i}",
                headers=[
                    ("Host", "app.example.com"),
                    ("X-Overcentric-Device-Id", f"device-{i}"),
                    ("X-Overcentric-Session-Id", f"session-{i}"),
                ],
            )
            sent = await run(middleware, scope)
            result: dict[str, Any] = json.loads(sent[-1]["body"])
            return result

        results = await asyncio.gather(*(one(i) for i in range(n)))
        assert dict(get_bound()) == {}
        return list(results)

    results = asyncio.run(main())
    for i, seen in enumerate(results):
        expected = {
            "device_id": f"device-{i}",
            "session_id": f"session-{i}",
            "url": f"https://app.example.com/item/{i}",
            "hostname": "app.example.com",
        }
        assert seen["before"] == expected
        assert seen["after"] == expected

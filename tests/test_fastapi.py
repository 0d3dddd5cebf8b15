"""The ASGI middleware under FastAPI / Starlette, through their own test clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from overcentric_logging.asgi import OvercentricMiddleware
from overcentric_logging.context import clear, get_bound

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
import fastapi
import httpx
from fastapi import WebSocket
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

DEVICE = "3f2b8c1e-0d7a-4a55-9f44-6c0b2a1d9e01"
SESSION = "a9c1d2e3-4b5f-4c6d-8e7f-001122334455"
HEADERS = {"X-Overcentric-Device-Id": DEVICE, "X-Overcentric-Session-Id": SESSION}


@pytest.fixture(autouse=True)
def _clean_context() -> Iterator[None]:
    clear()
    yield
    clear()


def make_app(**options: Any) -> Any:
    app = fastapi.FastAPI()
    app.add_middleware(OvercentricMiddleware, **options)

    @app.get("/async")
    async def async_view() -> dict[str, Any]:
        return dict(get_bound())

    @app.get("/sync")
    def sync_view() -> dict[str, Any]:  # runs in Starlette's thread pool
        return dict(get_bound())

    @app.get("/stream-sync")
    def stream_sync() -> StreamingResponse:
        def body() -> Iterator[str]:
            for _ in range(2):
                yield get_bound().get("session_id", "-") + "\n"

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/stream-async")
    async def stream_async() -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            for _ in range(2):
                await asyncio.sleep(0)
                yield get_bound().get("device_id", "-") + "\n"

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("view failed")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(dict(get_bound()))
        await websocket.close()

    return app


def test_async_and_sync_views_see_the_fields() -> None:
    with TestClient(make_app()) as client:
        for path in ("/async", "/sync"):
            response = client.get(path + "?a=1", headers=HEADERS)
            assert response.json() == {
                "device_id": DEVICE,
                "session_id": SESSION,
                "url": f"http://testserver{path}?a=1",
                "hostname": "testserver",
            }
        # The next request without headers must not inherit the previous ids.
        assert client.get("/async").json() == {
            "url": "http://testserver/async",
            "hostname": "testserver",
        }


def test_streaming_responses_keep_the_fields() -> None:
    with TestClient(make_app()) as client:
        assert client.get("/stream-sync", headers=HEADERS).text == f"{SESSION}\n{SESSION}\n"
        assert client.get("/stream-async", headers=HEADERS).text == f"{DEVICE}\n{DEVICE}\n"


def test_identify_hook_and_cookies() -> None:
    def identify(scope: Any) -> dict[str, Any] | None:
        token = dict(scope["headers"]).get(b"authorization")
        return {"user_id": "u1", "user_email": "a@b.c"} if token == b"Bearer good" else None

    app = make_app(identify=identify, device_cookie="oc_did")
    with TestClient(app) as client:
        client.cookies.set("oc_did", DEVICE)
        data = client.get("/async", headers={"Authorization": "Bearer good"}).json()
        assert (data["user_id"], data["user_email"], data["device_id"]) == ("u1", "a@b.c", DEVICE)
        assert "user_id" not in client.get("/async").json()


def test_exceptions_propagate_and_websockets_are_covered() -> None:
    with TestClient(make_app(), raise_server_exceptions=False) as client:
        assert client.get("/boom", headers=HEADERS).status_code == 500
        with client.websocket_connect("/ws", headers=HEADERS) as websocket:
            data = websocket.receive_json()
        assert data["device_id"] == DEVICE
        assert data["url"] == "ws://testserver/ws"


def test_concurrent_requests_do_not_see_each_others_ids() -> None:
    n = 20
    app = fastapi.FastAPI()
    app.add_middleware(OvercentricMiddleware)
    state = {"arrived": 0}

    async def main() -> list[dict[str, Any]]:
        all_in = asyncio.Event()

        @app.get("/item/{i}")
        async def item(i: int) -> dict[str, Any]:
            before = dict(get_bound())
            state["arrived"] += 1
            if state["arrived"] == n:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), 30)
            return {"before": before, "after": dict(get_bound())}

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:

            async def one(i: int) -> dict[str, Any]:
                headers = {"X-Overcentric-Device-Id": f"d{i}", "X-Overcentric-Session-Id": f"s{i}"}
                response = await client.get(f"/item/{i}", headers=headers)
                result: dict[str, Any] = response.json()
                return result

            results = await asyncio.gather(*(one(i) for i in range(n)))
        assert dict(get_bound()) == {}
        return list(results)

    results = asyncio.run(main())
    for i, seen in enumerate(results):
        expected = {
            "device_id": f"d{i}",
            "session_id": f"s{i}",
            "url": f"http://api.test/item/{i}",
            "hostname": "api.test",
        }
        assert seen == {"before": expected, "after": expected}

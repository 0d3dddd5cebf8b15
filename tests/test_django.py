"""The Django middleware, through ``django.test.Client`` (WSGI) and ``AsyncClient`` (ASGI).

Django is configured once per process with an in-module URLconf and no database: the default
identity hook is exercised with a stand-in for ``AuthenticationMiddleware`` that sets
``request.user`` (and ``request.auser``) the way Django's does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable

import pytest

from overcentric_logging.context import clear, get_bound

django = pytest.importorskip("django")
from django.conf import settings  # noqa: E402

DEVICE = "3f2b8c1e-0d7a-4a55-9f44-6c0b2a1d9e01"
SESSION = "a9c1d2e3-4b5f-4c6d-8e7f-001122334455"
HEADERS = {"X-Overcentric-Device-Id": DEVICE, "X-Overcentric-Session-Id": SESSION}
OURS = "overcentric_logging.django.OvercentricMiddleware"
FAKE_AUTH = f"{__name__}.FakeAuthenticationMiddleware"
URLCONF = "overcentric_test_django_urls"

_n = 20
_barrier = threading.Barrier(_n, timeout=30)
_async_state: dict[str, Any] = {}


class _User:
    def __init__(self, pk: int, email: str, authenticated: bool = True) -> None:
        self.pk = pk
        self.email = email
        self.is_authenticated = authenticated


class FakeAuthenticationMiddleware:
    """Sets request.user / request.auser from an ``X-Test-User`` header, like Django's does."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        raw = request.headers.get("X-Test-User")
        user = _User(int(raw), f"user{raw}@example.com") if raw else _User(0, "", False)
        request.user = user

        async def auser() -> _User:
            return user

        request.auser = auser
        return self.get_response(request)


def _view(request: Any) -> Any:
    from django.http import JsonResponse

    return JsonResponse(dict(get_bound()))


async def _async_view(request: Any) -> Any:
    from django.http import JsonResponse

    await asyncio.sleep(0)
    return JsonResponse(dict(get_bound()))


def _stream(request: Any) -> Any:
    from django.http import StreamingHttpResponse

    def body() -> Iterator[str]:
        for _ in range(2):
            yield json.dumps(dict(get_bound())) + "\n"

    return StreamingHttpResponse(body())


async def _astream(request: Any) -> Any:
    from django.http import StreamingHttpResponse

    async def body() -> AsyncIterator[str]:
        for _ in range(2):
            await asyncio.sleep(0)
            yield json.dumps(dict(get_bound())) + "\n"

    return StreamingHttpResponse(body())


def _boom(request: Any) -> Any:
    raise RuntimeError("view failed")


def _barrier_view(request: Any, i: int) -> Any:
    from django.http import JsonResponse

    before = dict(get_bound())
    _barrier.wait()
    return JsonResponse({"before": before, "after": dict(get_bound())})


async def _async_barrier_view(request: Any, i: int) -> Any:
    from django.http import JsonResponse

    before = dict(get_bound())
    _async_state["arrived"] += 1
    if _async_state["arrived"] == _n:
        _async_state["event"].set()
    await asyncio.wait_for(_async_state["event"].wait(), 30)
    return JsonResponse({"before": before, "after": dict(get_bound())})


def identify_from_header(request: Any) -> dict[str, Any] | None:
    value = request.headers.get("X-Custom-User")
    return {"user_id": value, "plan": "pro"} if value else None


@pytest.fixture(scope="module", autouse=True)
def _django() -> None:
    from django.urls import path

    urls = types.ModuleType(URLCONF)
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("view", _view),
        path("async-view", _async_view),
        path("stream", _stream),
        path("astream", _astream),
        path("boom", _boom),
        path("barrier/<int:i>", _barrier_view),
        path("abarrier/<int:i>", _async_barrier_view),
    ]
    sys.modules[URLCONF] = urls
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=URLCONF,
            MIDDLEWARE=[FAKE_AUTH, OURS],
            DATABASES={},
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()


@pytest.fixture(autouse=True)
def _clean_context() -> Iterator[None]:
    clear()
    yield
    clear()


def _settings(**overrides: Any) -> Any:
    from django.test import override_settings

    values: dict[str, Any] = {"ROOT_URLCONF": URLCONF, "MIDDLEWARE": [FAKE_AUTH, OURS]}
    values.update(overrides)
    return override_settings(**values)


def test_sync_view_gets_ids_url_and_authenticated_user() -> None:
    from django.test import Client

    with _settings():
        response = Client().get("/view?q=1", headers={**HEADERS, "X-Test-User": "42"})
    assert response.json() == {
        "device_id": DEVICE,
        "session_id": SESSION,
        "url": "http://testserver/view?q=1",
        "hostname": "testserver",
        "user_id": "42",
        "user_email": "user42@example.com",
    }
    assert dict(get_bound()) == {}


def test_anonymous_user_binds_no_identity() -> None:
    from django.test import Client

    with _settings():
        data = Client().get("/view", headers=HEADERS).json()
    assert data["device_id"] == DEVICE
    assert "user_id" not in data and "user_email" not in data


def test_settings_options_custom_identify_and_disabled_identify() -> None:
    from django.test import Client

    config = {
        "device_header": "X-Device",
        "session_cookie": "oc_sid",
        "identify": f"{__name__}.identify_from_header",
        "project_id": "ignored-here",
    }
    with _settings(OVERCENTRIC=config):
        client = Client()
        client.cookies["oc_sid"] = SESSION
        data = client.get(
            "/view", headers={"X-Device": DEVICE, "X-Custom-User": "u5", "X-Test-User": "42"}
        ).json()
    assert data["device_id"] == DEVICE
    assert data["session_id"] == SESSION
    assert (data["user_id"], data["plan"]) == ("u5", "pro")
    with _settings(OVERCENTRIC={"identify": None}):
        data = Client().get("/view", headers={"X-Test-User": "42"}).json()
    assert "user_id" not in data


def test_bad_identify_path_is_improperly_configured() -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.test import Client

    with _settings(OVERCENTRIC={"identify": "no_such_module_xyz.hook"}), pytest.raises(
        ImproperlyConfigured, match="identify"
    ):
        Client().get("/view")


def test_https_and_forwarded_headers() -> None:
    from django.test import Client

    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "www.example.com"}
    with _settings():
        data = Client().get("/view", headers=forwarded).json()
    assert data["url"] == "http://testserver/view"
    with _settings(OVERCENTRIC={"trust_forwarded": True}):
        data = Client().get("/view", headers=forwarded).json()
    assert data["url"] == "https://www.example.com/view"
    with _settings():
        data = Client().get("/view", secure=True).json()
    assert data["url"] == "https://testserver/view"


def test_streaming_response_keeps_fields_while_consumed() -> None:
    from django.test import Client

    with _settings():
        response = Client().get("/stream", headers={**HEADERS, "X-Test-User": "7"})
        assert dict(get_bound()) == {}
        lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert len(lines) == 2
    assert all(line["session_id"] == SESSION and line["user_id"] == "7" for line in lines)
    assert dict(get_bound()) == {}


def test_exception_in_view_leaves_nothing_bound() -> None:
    from django.test import Client

    with _settings():
        response = Client(raise_request_exception=False).get("/boom", headers=HEADERS)
    assert response.status_code == 500
    assert dict(get_bound()) == {}


def test_async_client_views_identity_and_async_streaming() -> None:
    from django.test import AsyncClient

    async def main() -> tuple[Any, list[dict[str, Any]]]:
        client = AsyncClient()
        data = (await client.get("/async-view", headers={**HEADERS, "X-Test-User": "9"})).json()
        response = await client.get("/astream", headers=HEADERS)
        chunks = [chunk async for chunk in response.streaming_content]
        lines = [json.loads(line) for line in b"".join(chunks).splitlines()]
        assert dict(get_bound()) == {}
        return data, lines

    with _settings():
        data, lines = asyncio.run(main())
    assert data["device_id"] == DEVICE
    assert (data["user_id"], data["user_email"]) == ("9", "user9@example.com")
    assert data["url"] == "http://testserver/async-view"
    assert [line["device_id"] for line in lines] == [DEVICE, DEVICE]


def test_concurrent_sync_requests_do_not_see_each_others_ids() -> None:
    from django.test import Client

    results: dict[int, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            headers = {"X-Overcentric-Device-Id": f"d{i}", "X-Overcentric-Session-Id": f"s{i}"}
            results[i] = Client().get(f"/barrier/{i}", headers=headers).json()
        except BaseException as exc:
            errors.append(exc)

    with _settings():
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    assert sorted(results) == list(range(_n))
    for i, seen in results.items():
        expected = {
            "device_id": f"d{i}",
            "session_id": f"s{i}",
            "url": f"http://testserver/barrier/{i}",
            "hostname": "testserver",
        }
        assert seen == {"before": expected, "after": expected}


def test_concurrent_async_requests_do_not_see_each_others_ids() -> None:
    from django.test import AsyncClient

    async def main() -> list[dict[str, Any]]:
        _async_state.update(arrived=0, event=asyncio.Event())
        client = AsyncClient()

        async def one(i: int) -> dict[str, Any]:
            headers = {"X-Overcentric-Device-Id": f"d{i}", "X-Overcentric-Session-Id": f"s{i}"}
            result: dict[str, Any] = (await client.get(f"/abarrier/{i}", headers=headers)).json()
            return result

        return list(await asyncio.gather(*(one(i) for i in range(_n))))

    with _settings(MIDDLEWARE=[OURS]):
        results = asyncio.run(main())
    for i, seen in enumerate(results):
        expected = {
            "device_id": f"d{i}",
            "session_id": f"s{i}",
            "url": f"http://testserver/abarrier/{i}",
            "hostname": "testserver",
        }
        assert seen == {"before": expected, "after": expected}


def test_middleware_follows_the_mode_of_the_next_layer() -> None:
    from asgiref.sync import iscoroutinefunction

    from overcentric_logging.django import OvercentricMiddleware

    async def async_next(request: Any) -> Any:
        return None

    assert iscoroutinefunction(OvercentricMiddleware(async_next))
    assert not iscoroutinefunction(OvercentricMiddleware(lambda request: None))

"""The Flask extension ``overcentric_logging.flask.Overcentric``, through Flask's test client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from overcentric_logging.context import clear, get_bound

pytest.importorskip("flask")
import flask

from overcentric_logging.flask import Overcentric

DEVICE = "3f2b8c1e-0d7a-4a55-9f44-6c0b2a1d9e01"
SESSION = "a9c1d2e3-4b5f-4c6d-8e7f-001122334455"
HEADERS = {"X-Overcentric-Device-Id": DEVICE, "X-Overcentric-Session-Id": SESSION}


@pytest.fixture(autouse=True)
def _clean_context() -> Iterator[None]:
    clear()
    yield
    clear()


def make_app(**config: Any) -> Any:
    app = flask.Flask(__name__)
    app.config.update(config)

    @app.get("/view")
    def view() -> Any:
        return flask.jsonify(dict(get_bound()))

    @app.get("/stream")
    def stream() -> Any:
        # No stream_with_context: the generator runs after the view has returned.
        def body() -> Iterator[str]:
            for _ in range(2):
                bound = get_bound()
                yield f"{bound.get('device_id')}|{bound.get('user_id')}\n"

        return flask.Response(body(), mimetype="text/plain")

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("view failed")

    return app


def test_view_sees_the_fields_and_nothing_is_left_bound() -> None:
    app = make_app()
    Overcentric(app)
    client = app.test_client()
    data = client.get("/view?x=1", headers=HEADERS).get_json()
    assert data == {
        "device_id": DEVICE,
        "session_id": SESSION,
        "url": "http://localhost/view?x=1",
        "hostname": "localhost",
    }
    assert dict(get_bound()) == {}
    assert "device_id" not in client.get("/view").get_json()


def test_streamed_response_keeps_ids_and_identity() -> None:
    def identify(request: Any) -> dict[str, Any] | None:
        # Runs inside the request context, so flask.request and flask.g are available.
        assert flask.request is not None
        return {"user_id": request.headers.get("X-User")} if "X-User" in request.headers else None

    app = make_app()
    Overcentric(app, identify=identify)
    response = app.test_client().get("/stream", headers={**HEADERS, "X-User": "u1"})
    assert response.get_data(as_text=True) == f"{DEVICE}|u1\n{DEVICE}|u1\n"
    assert dict(get_bound()) == {}


def test_options_from_app_config_and_init_app() -> None:
    app = make_app(
        OVERCENTRIC_DEVICE_HEADER="X-Device",
        OVERCENTRIC_SESSION_COOKIE="oc_sid",
        OVERCENTRIC_TRUST_FORWARDED=True,
        OVERCENTRIC_IDENTIFY=f"{__name__}.identify_everyone",
    )
    extension = Overcentric()
    extension.init_app(app)
    extension.init_app(app)  # a second call must not wrap twice
    assert app.extensions["overcentric_logging"] is extension
    client = app.test_client()
    client.set_cookie("oc_sid", SESSION)
    data = client.get(
        "/view", headers={"X-Device": DEVICE, "X-Forwarded-Host": "shop.example.com"}
    ).get_json()
    assert data == {
        "device_id": DEVICE,
        "session_id": SESSION,
        "url": "http://shop.example.com/view",
        "hostname": "shop.example.com",
        "user_id": "everyone",
    }


def identify_everyone(request: Any) -> dict[str, Any]:
    return {"user_id": "everyone"}


def test_keyword_options_win_over_config_and_unknown_options_fail() -> None:
    app = make_app(OVERCENTRIC_DEVICE_HEADER="X-Device")
    Overcentric(app, device_header="X-Other")
    data = app.test_client().get("/view", headers={"X-Other": "d1", "X-Device": "d2"}).get_json()
    assert data["device_id"] == "d1"
    with pytest.raises(TypeError, match="device_heder"):
        Overcentric(device_heder="X")


def test_exception_in_view_leaves_nothing_bound() -> None:
    app = make_app()
    Overcentric(app)
    response = app.test_client().get("/boom", headers=HEADERS)
    assert response.status_code == 500
    assert dict(get_bound()) == {}


def test_concurrent_requests_in_threads_do_not_see_each_others_ids() -> None:
    n = 20
    barrier = threading.Barrier(n, timeout=30)
    app = flask.Flask(__name__)
    Overcentric(app, identify=lambda request: {"user_id": request.args["u"]})

    @app.get("/item/<int:i>")
    def item(i: int) -> Any:
        before = dict(get_bound())
        barrier.wait()  # all requests are inside a view at once
        return flask.jsonify({"before": before, "after": dict(get_bound())})

    results: dict[int, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            headers = {"X-Overcentric-Device-Id": f"d{i}", "X-Overcentric-Session-Id": f"s{i}"}
            results[i] = app.test_client().get(f"/item/{i}?u=u{i}", headers=headers).get_json()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results) == list(range(n))
    for i, seen in results.items():
        expected = {
            "device_id": f"d{i}",
            "session_id": f"s{i}",
            "url": f"http://localhost/item/{i}?u=u{i}",
            "hostname": "localhost",
            "user_id": f"u{i}",
        }
        assert seen == {"before": expected, "after": expected}

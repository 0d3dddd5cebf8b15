"""A single-file Django project using overcentric-logging's middleware and a dictConfig handler.

``overcentric_logging.django.OvercentricMiddleware`` binds ``device_id``, ``session_id``,
``url``, ``hostname`` and (after ``AuthenticationMiddleware``) the signed-in user for each
request; the handler comes from Django's ``LOGGING`` setting, as in a real project.

Run: python examples/django_app/app.py
    starts a local receiver, makes a request through Django's test client, prints the event.
Run: python examples/django_app/app.py runserver
    a real dev server; events go to OVERCENTRIC_ENDPOINT (for instance
    ``python -m overcentric_logging serve`` in another terminal) with OVERCENTRIC_PROJECT_ID.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

import overcentric_logging

DEVICE_ID = "3f2b8c1e-0d7a-4a55-9f44-6c0b2a1d9e01"
SESSION_ID = "a9c1d2e3-4b5f-4c6d-8e7f-001122334455"


def signup(request: HttpRequest) -> JsonResponse:
    logging.getLogger("app").info("$signup", extra={"user_id": "u1", "plan": "free"})
    return JsonResponse({"ok": True})


urlpatterns = [path("signup", signup)]


def configure(endpoint: str | None) -> None:
    handler: dict[str, Any] = {"class": "overcentric_logging.OvercentricHandler"}
    if endpoint is not None:  # the demo's receiver; otherwise the environment decides
        handler.update(project_id="demo", endpoint=endpoint)
    settings.configure(
        DEBUG=endpoint is None,
        SECRET_KEY="example-only-not-secret",
        ALLOWED_HOSTS=["app.example.com", "localhost", "127.0.0.1", "testserver"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        DATABASES={},
        MIDDLEWARE=[
            # With django.contrib.auth installed, put AuthenticationMiddleware here: the
            # default identify hook then binds user_id / user_email of request.user.
            "overcentric_logging.django.OvercentricMiddleware",
        ],
        OVERCENTRIC={
            # Every key is optional; these are the defaults.
            "device_header": "X-Overcentric-Device-Id",
            "session_header": "X-Overcentric-Session-Id",
            "trust_forwarded": False,
        },
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"overcentric": handler},
            "loggers": {"app": {"handlers": ["overcentric"], "level": "INFO"}},
        },
    )
    django.setup()


def demo() -> int:
    from django.test import Client

    from overcentric_logging.receiver import Receiver

    with Receiver(quiet=True) as receiver:
        configure(receiver.url)
        response = Client().post(
            "/signup?ref=pricing",
            secure=True,
            headers={
                "Host": "app.example.com",
                "X-Overcentric-Device-Id": DEVICE_ID,
                "X-Overcentric-Session-Id": SESSION_ID,
            },
        )
        print(f"POST /signup -> {response.status_code}")
        overcentric_logging.flush(10)  # flushes every client, however it was built
        receiver.wait_for(1, 10)
        events = receiver.events
    logging.shutdown()
    print(f"the receiver got {len(events)} event(s):")
    for body in events:
        print(json.dumps(body, indent=2))
    expected = (DEVICE_ID, SESSION_ID, "https://app.example.com/signup?ref=pricing")
    ok = len(events) == 1 and all(
        (e["event"]["device_id"], e["event"]["session_id"], e["event"]["url"]) == expected
        for e in events
    )
    print("ids and url came from the request" if ok else "UNEXPECTED: see above")
    return 0 if ok else 1


def main() -> int:
    if len(sys.argv) > 1:
        from django.core.management import execute_from_command_line

        os.environ.setdefault("OVERCENTRIC_PROJECT_ID", "demo")
        configure(None)
        execute_from_command_line(sys.argv)
        return 0
    return demo()


if __name__ == "__main__":
    sys.exit(main())

"""FastAPI + overcentric-logging: the browser's device and session ids on a backend event.

The plain ASGI middleware binds ``device_id``, ``session_id``, ``url`` and ``hostname`` from the
``X-Overcentric-Device-Id`` / ``X-Overcentric-Session-Id`` headers for each request (streamed
responses and websockets included), so the endpoint's ordinary logging call becomes an event
that joins the user's browser journey.

Run: python examples/fastapi_app.py   (starts a local receiver, makes requests, prints the events)
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import httpx
from fastapi import FastAPI

import overcentric_logging
from overcentric_logging.asgi import OvercentricMiddleware
from overcentric_logging.receiver import Receiver

DEVICE_ID = "3f2b8c1e-0d7a-4a55-9f44-6c0b2a1d9e01"
SESSION_ID = "a9c1d2e3-4b5f-4c6d-8e7f-001122334455"

app = FastAPI()
app.add_middleware(OvercentricMiddleware)


@app.post("/signup")
async def signup() -> dict[str, bool]:
    logging.getLogger("app").info("$signup", extra={"user_id": "u1", "plan": "free"})
    return {"ok": True}


@app.post("/upgrade")
def upgrade() -> dict[str, bool]:  # a sync endpoint runs in a worker thread: ids follow it
    logging.getLogger("app").info("$subscription_upgrade", extra={"user_id": "u1", "plan": "pro"})
    return {"ok": True}


async def make_requests() -> None:
    # httpx's ASGI transport drives the app in-process, as FastAPI's async test guide does.
    transport = httpx.ASGITransport(app=app)
    headers = {"X-Overcentric-Device-Id": DEVICE_ID, "X-Overcentric-Session-Id": SESSION_ID}
    async with httpx.AsyncClient(transport=transport, base_url="https://app.example.com") as c:
        for path in ("/signup?ref=pricing", "/upgrade"):
            response = await c.post(path, headers=headers)
            print(f"POST {path} -> {response.status_code}")


def main() -> int:
    with Receiver(quiet=True) as receiver:
        handler = overcentric_logging.OvercentricHandler(project_id="demo", endpoint=receiver.url)
        logger = logging.getLogger("app")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            asyncio.run(make_requests())
            handler.client.flush(10)
            receiver.wait_for(2, 10)
        finally:
            logger.removeHandler(handler)
            handler.close()
        events = receiver.events
    print(f"the receiver got {len(events)} event(s):")
    for body in events:
        print(json.dumps(body, indent=2))
    urls = sorted(e["event"]["url"] for e in events)
    ok = (
        len(events) == 2
        and all(e["event"]["device_id"] == DEVICE_ID for e in events)
        and all(e["event"]["session_id"] == SESSION_ID for e in events)
        and urls == ["https://app.example.com/signup?ref=pricing",
                     "https://app.example.com/upgrade"]
    )
    print("ids and urls came from the requests" if ok else "UNEXPECTED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

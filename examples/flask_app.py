"""Flask + overcentric-logging: the browser's device and session ids on a backend event.

The ``Overcentric`` extension binds ``device_id``, ``session_id``, ``url`` and ``hostname`` from
the ``X-Overcentric-Device-Id`` / ``X-Overcentric-Session-Id`` headers for each request, so the
view's ordinary logging call becomes an event that joins the user's browser journey.

Run: python examples/flask_app.py   (starts a local receiver, makes a request, prints the event)
"""

from __future__ import annotations

import json
import logging
import sys

from flask import Flask, Response, jsonify

import overcentric_logging
from overcentric_logging.flask import Overcentric
from overcentric_logging.receiver import Receiver

DEVICE_ID = "3f2b8c1e-0d7a-4a55-9f44-6c0b2a1d9e01"
SESSION_ID = "a9c1d2e3-4b5f-4c6d-8e7f-001122334455"

app = Flask(__name__)
Overcentric(app)  # or Overcentric(app, identify=lambda request: {"user_id": ...})


@app.post("/signup")
def signup() -> Response:
    logging.getLogger("app").info("$signup", extra={"user_id": "u1", "plan": "free"})
    return jsonify(ok=True)


def main() -> int:
    with Receiver(quiet=True) as receiver:
        handler = overcentric_logging.OvercentricHandler(project_id="demo", endpoint=receiver.url)
        logger = logging.getLogger("app")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            response = app.test_client().post(
                "/signup?ref=pricing",
                base_url="https://app.example.com",
                headers={"X-Overcentric-Device-Id": DEVICE_ID,
                         "X-Overcentric-Session-Id": SESSION_ID},
            )
            print(f"POST /signup -> {response.status_code}")
            handler.client.flush(10)
            receiver.wait_for(1, 10)
        finally:
            logger.removeHandler(handler)
            handler.close()
        events = receiver.events
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


if __name__ == "__main__":
    sys.exit(main())

"""The client directly, no logging at all: Client.track(), bind() and stats().

Ships to $OVERCENTRIC_ENDPOINT if set, else to an embedded local receiver.
Run: python examples/direct_client.py
"""

from __future__ import annotations

import os

import overcentric_logging
from overcentric_logging.receiver import Receiver

receiver = None
endpoint = os.environ.get("OVERCENTRIC_ENDPOINT")
if not endpoint:
    receiver = Receiver().start()
    endpoint = receiver.url


def on_error(payload: object, error: Exception) -> None:
    print("not delivered:", error)


client = overcentric_logging.Client(
    project_id=os.environ.get("OVERCENTRIC_PROJECT_ID", "proj_example"),
    endpoint=endpoint,
    on_error=on_error,
)
# A payment webhook: no browser behind it, so no device/session ids. The library derives
# stable ones from the project and the user (UUIDv5), so the request is always valid.
client.track("$subscription_purchase", {"plan": "premium", "price": 9.99},
             user_id="user_123", user_email="u@example.com")

# Inside a web request, bind the browser's ids once; every event of the request gets them.
with overcentric_logging.bound(device_id="d-browser", session_id="s-browser",
                               url="https://app.example.com/settings"):
    client.track("settings_changed", {"setting": "theme", "value": "dark"}, user_id="user_123")

ok = client.flush(timeout=5)
print("delivered:", ok, "stats:", client.stats())
client.close()
if receiver is not None:
    receiver.stop()
raise SystemExit(0 if ok and client.stats()["sent"] == 2 else 1)

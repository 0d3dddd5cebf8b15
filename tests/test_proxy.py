"""An explicit proxy: the request goes to the proxy (a loopback server) in absolute-URI form,
through urllib3's ProxyManager. Nothing leaves 127.0.0.1: the proxy answers by itself."""

from __future__ import annotations

from loopback import LoopbackServer
from oc_helpers import FAST

from overcentric_logging import Client
from overcentric_logging.schema import validate_payload


def test_events_go_through_the_configured_proxy(server: LoopbackServer) -> None:
    proxy = server.url.split("/api/")[0]
    client = Client("proj_proxy", endpoint="http://events.invalid/api/v1/event", proxy=proxy,
                    **FAST)
    client.track("$signup", {"plan": "free"}, user_id="u1")
    assert client.flush(10)
    assert client.stats()["sent"] == 1
    request = server.requests[0]
    assert request.path == "http://events.invalid/api/v1/event"
    assert validate_payload(request.json) == []
    client.close(1)

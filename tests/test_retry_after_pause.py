"""Regression (found by bench/soak.py): a ``Retry-After`` pauses the whole sender for the
time the server asked for, not for the failed event's own exponential backoff. Before the
fix, every ``503`` with ``Retry-After: 0`` stopped all sending for that event's backoff (up
to ``backoff_max``), and a server failing a few percent of requests that way throttled the
sender to a crawl (the soak's backlog grew without bound).
"""

from __future__ import annotations

from loopback import LoopbackServer, status

from overcentric_logging import Client


def test_retry_after_zero_does_not_pause_the_other_events(server: LoopbackServer) -> None:
    # The failed event's own backoff is at least 10 s; the other events must not wait for it.
    server.script(status(503, headers={"Retry-After": "0"}))
    client = Client(project_id="proj_test", endpoint=server.url, backoff_base=20.0,
                    backoff_max=20.0, max_workers=1, shutdown_timeout=0.5)
    try:
        client.track("first_event", {"seq": 0})
        assert server.wait_for_requests(1, timeout=5)
        for seq in range(1, 4):
            client.track("later_event", {"seq": seq})
        assert server.wait_for_events(3, timeout=8), (
            "the sender stayed paused for the failed event's backoff", client.stats())
        assert server.names() == ["later_event"] * 3
        assert not server.schema_errors()
        assert client.stats()["retries"] == 1  # the 503'd event waits for its own backoff
    finally:
        client.close(0.1)


def test_retry_after_seconds_still_pauses_everything(server: LoopbackServer) -> None:
    # A real Retry-After still holds back every event (SPEC §5), for that long.
    server.script(status(429, headers={"Retry-After": "30"}))
    client = Client(project_id="proj_test", endpoint=server.url, backoff_base=0.01,
                    max_workers=1, shutdown_timeout=0.5)
    try:
        client.track("first_event", {"seq": 0})
        assert server.wait_for_requests(1, timeout=5)
        client.track("later_event", {"seq": 1})
        assert not server.wait_for_requests(2, timeout=1.0)
        assert client.stats()["pending"] == 2
    finally:
        client.close(0.1)

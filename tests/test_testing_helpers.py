"""capture_events() and the pytest plugin's overcentric_events fixture."""

from __future__ import annotations

import logging

import pytest

import overcentric_logging
from overcentric_logging.schema import validate_payload
from overcentric_logging.testing import capture_events

pytest_plugins = ["pytester"]


def test_capture_from_handler_built_before_capture(refused_url: str) -> None:
    handler = overcentric_logging.OvercentricHandler("proj_t", endpoint=refused_url)
    log = logging.getLogger("test.capture.handler")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with capture_events() as events:
            log.info("$signup", extra={"plan": "free", "user_id": "u1"})
            log.info("not an event")
        assert events.names() == ["$signup"]
        body = events.assert_tracked("$signup", plan="free")
        assert validate_payload(body) == []
        assert body["identity"]["unique_identifier"] == "u1"
        # Nothing reached the network: the endpoint refuses connections, yet nothing failed.
        assert handler.stats() == {"tracked": 1, "sent": 1, "failed": 0, "dropped": 0,
                                   "retries": 0, "pending": 0}
    finally:
        log.removeHandler(handler)
        handler.client.close(0)


def test_capture_one_client_leaves_others_alone(server) -> None:  # type: ignore[no-untyped-def]
    a = overcentric_logging.Client("proj_a", endpoint=server.url)
    b = overcentric_logging.Client("proj_b", endpoint=server.url)
    with capture_events(a) as events:
        a.track("$login", {"method": "sso"}, user_id="u1")
        b.track("$login", {"method": "password"}, user_id="u2")
        assert b.flush(5)
    assert events.names() == ["$login"]
    assert events[0]["event"]["project_id"] == "proj_a"
    assert [e["event"]["project_id"] for e in server.events] == ["proj_b"]
    a.close(0)
    b.close(0)


def test_assert_tracked_messages() -> None:
    client = overcentric_logging.Client("proj_t", endpoint="http://127.0.0.1:9/api/v1/event")
    with capture_events() as events:
        client.track("$signup", {"plan": "free"})
    with pytest.raises(AssertionError, match=r"not with properties \{'plan': 'paid'\}"):
        events.assert_tracked("$signup", plan="paid")
    with pytest.raises(AssertionError, match=r"'\$login' was not tracked; tracked: '\$signup'"):
        events.assert_tracked("$login")
    events.assert_not_tracked("$login")
    with pytest.raises(AssertionError):
        events.assert_not_tracked("$signup")
    assert len(events.find("$signup")) == 1
    events.clear()
    assert len(events) == 0


def test_pytest_plugin_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import logging
        import overcentric_logging

        handler = overcentric_logging.OvercentricHandler(
            "proj_p", endpoint="http://127.0.0.1:9/api/v1/event")
        log = logging.getLogger("app")
        log.addHandler(handler)
        log.setLevel(logging.INFO)

        def signup(plan):
            log.info("$signup", extra={"plan": plan, "user_id": "u1"})

        def test_signup_tracked(overcentric_events):
            signup("free")
            overcentric_events.assert_tracked("$signup", plan="free")

        def test_wrong_property_fails(overcentric_events):
            signup("free")
            overcentric_events.assert_tracked("$signup", plan="premium")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*was tracked, but not with properties {'plan': 'premium'}*"])


def test_plugin_module_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, overcentric_logging.pytest_plugin\n"
        "heavy = [m for m in ('urllib3', 'overcentric_logging.sender', 'structlog')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import overcentric_logging\n"
        "assert overcentric_logging.OvercentricHandler.__name__ == 'OvercentricHandler'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr

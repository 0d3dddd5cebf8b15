"""SPEC §2: which records are events, through the handler, the processor and the client."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import structlog
from loopback import LoopbackServer
from oc_helpers import FAST, WAYS, WayIn, attached, delivered, props, unique_logger_name
from structlog.testing import CapturingLogger

from overcentric_logging import Client, OvercentricHandler, OvercentricProcessor

# -- rule 1: the prefix -------------------------------------------------------------------


@pytest.mark.parametrize("way", ["handler", "processor"])
def test_default_prefix_dollar(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server) as w:
        w.emit("$signup", plan="free")
        w.emit("signup")  # no prefix: a plain log line
        body = w.one()
    assert body["event"]["name"] == "$signup"
    assert props(body)["plan"] == "free"


@pytest.mark.parametrize("way", ["handler", "processor"])
def test_custom_prefix(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server, prefix="evt:") as w:
        w.emit("evt:invite_sent")
        w.emit("$signup")  # the default prefix no longer applies
        w.emit("invite_sent")
        body = w.one()
    assert body["event"]["name"] == "evt:invite_sent"


@pytest.mark.parametrize("way", ["handler", "processor"])
def test_prefix_none_turns_rule_off(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server, prefix=None, events=["$login"]) as w:
        w.emit("$signup")
        w.emit("$login")
        names = [b["event"]["name"] for b in w.bodies()]
    assert names == ["$login"]


def test_message_is_taken_before_percent_formatting(server: LoopbackServer) -> None:
    handler = OvercentricHandler("proj_1", endpoint=server.url, prefix=None,
                                 events=["paid %s"], **FAST)
    with attached(handler) as log:
        log.info("paid %s", "eur")
        log.info("%s", "$signup")  # the formatted message would name an event; msg does not
        bodies = delivered(server, handler.client)
    assert [b["event"]["name"] for b in bodies] == ["paid %s"]


# -- rule 2: events, exact and glob -------------------------------------------------------


@pytest.mark.parametrize("way", ["handler", "processor"])
def test_events_exact_and_glob(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server, events=["document_created", "billing.*", "invite_?"]) as w:
        w.emit("document_created")
        w.emit("billing.paid")
        w.emit("invite_a")
        w.emit("document_created_twice")  # exact names are exact
        w.emit("invite_ab")
        w.emit("xbilling.paid")  # globs match the whole message
        w.emit("user logged in")
        names = sorted(b["event"]["name"] for b in w.bodies())
    assert names == ["billing.paid", "document_created", "invite_a"]


def test_events_from_a_comma_separated_string(server: LoopbackServer) -> None:
    """fileConfig and env vars give strings: ``"a, b*"`` is the list ``["a", "b*"]``."""
    with WayIn("handler", server, events="document_created, invite_*") as w:
        w.emit("document_created")
        w.emit("invite_sent")
        w.emit("other")
        names = sorted(b["event"]["name"] for b in w.bodies())
    assert names == ["document_created", "invite_sent"]


# -- rule 3: the name key -----------------------------------------------------------------


@pytest.mark.parametrize("way", ["handler", "processor"])
def test_default_name_key(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server) as w:
        w.emit("user created a document", event_name="document_created", doc="d1")
        body = w.one()
    assert body["event"]["name"] == "document_created"
    p = props(body)
    assert p["doc"] == "d1"
    assert "event_name" not in p
    assert "user created a document" not in p.values()


@pytest.mark.parametrize("way", ["handler", "processor"])
def test_configured_name_key(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server, name_key="analytics_event") as w:
        w.emit("plain message", event_name="not_an_event_now")
        w.emit("another message", analytics_event="report_exported")
        body = w.one()
    assert body["event"]["name"] == "report_exported"
    p = props(body)
    assert "analytics_event" not in p
    # With a configured name key the default one is an ordinary field.
    assert "event_name" not in p


def test_track_sends_whatever_name_it_is_given(server: LoopbackServer) -> None:
    with WayIn("track", server, prefix=None) as w:
        w.emit("document_created")
        w.emit("$signup")
        names = sorted(b["event"]["name"] for b in w.bodies())
    assert names == ["$signup", "document_created"]


# -- records that are not events ----------------------------------------------------------


@pytest.mark.parametrize("way", ["handler", "processor"])
def test_non_event_records_are_never_sent(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server, events=["exact_only"]) as w:
        w.emit("hello world", user_id="u1", plan="free")
        w.emit("signup$")
        w.emit(" $signup")
        w.emit("exact_only_not")
        w.emit("")
        assert w.bodies() == []
        assert w.client.stats()["tracked"] == 0
    assert server.requests == []


def test_non_string_messages_are_not_events(server: LoopbackServer) -> None:
    handler = OvercentricHandler("proj_1", endpoint=server.url, **FAST)
    with attached(handler) as log:
        log.info(12345)
        log.info(None)
        log.info(["$signup"])
        log.info({"no": "event key"})
        log.info(ValueError("$signup"))
        assert delivered(server, handler.client) == []
    assert server.requests == []


def test_processor_ignores_non_string_event(server: LoopbackServer) -> None:
    processor = OvercentricProcessor("proj_1", endpoint=server.url, **FAST)
    try:
        for value in (None, 42, b"$signup", ["$signup"]):
            event_dict: dict[str, Any] = {"event": value}
            assert processor(None, "info", event_dict) is event_dict
        assert processor(None, "info", {}) == {}
        assert delivered(server, processor.client) == []
    finally:
        processor.client.close(5)
    assert server.requests == []


@pytest.mark.parametrize(
    "logger_name",
    ["overcentric_logging", "overcentric_logging.sender", "overcentric_logging.x.y",
     "urllib3", "urllib3.connectionpool"],
)
def test_own_and_urllib3_records_are_never_events(server: LoopbackServer, logger_name: str
                                                  ) -> None:
    handler = OvercentricHandler("proj_1", endpoint=server.url, events=["*"],
                                 **FAST)
    logger = logging.getLogger(logger_name)
    saved = (logger.level, logger.propagate)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.info("$signup", extra={"user_id": "u1"})
        logger.warning("anything at all", extra={"event_name": "document_created"})
        assert delivered(server, handler.client) == []
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        handler.close()
        handler.client.close(5)
    assert server.requests == []


def test_similar_logger_names_are_not_mistaken_for_own(server: LoopbackServer) -> None:
    handler = OvercentricHandler("proj_1", endpoint=server.url, **FAST)
    with attached(handler, "overcentric_logging_app.billing") as log:
        log.info("$signup")
        bodies = delivered(server, handler.client)
    assert [b["event"]["name"] for b in bodies] == ["$signup"]


def test_root_handler_sees_app_events_but_not_urllib3(server: LoopbackServer) -> None:
    """With the handler on the root logger, the sender's own HTTP logging never loops back."""
    handler = OvercentricHandler("proj_1", endpoint=server.url, events=["*"], **FAST)
    root = logging.getLogger()
    saved_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    name = unique_logger_name()
    try:
        logging.getLogger(name).info("$signup")
        assert handler.client.flush(10)
        # urllib3 logs at DEBUG for each request; none of it may become an event.
        logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
        assert handler.client.flush(10)
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        handler.close()
        handler.client.close(5)
    bodies = delivered(server)
    # Other tests' loggers may log through root meanwhile; only ours is asserted.
    assert [b for b in bodies if b["event"]["name"] == "$signup"]
    assert not [b for b in bodies if "connection" in b["event"]["name"].lower()]
    assert server.schema_errors() == []


# -- typo guard ---------------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_typo_guard_warns_once_and_still_sends(
    server: LoopbackServer, way: str, caplog: pytest.LogCaptureFixture
) -> None:
    typo = {"handler": "$subscripton_cancel", "processor": "$subscription_upgarde",
            "track": "$subscription_downgrad"}[way]
    meant = {"handler": "$subscription_cancel", "processor": "$subscription_upgrade",
             "track": "$subscription_downgrade"}[way]
    caplog.set_level(logging.WARNING, logger="overcentric_logging")
    with WayIn(way, server) as w:
        w.emit(typo)
        w.emit(typo)
        w.emit("$signup")
        names = [b["event"]["name"] for b in w.bodies()]
    assert sorted(names) == sorted([typo, typo, "$signup"])
    warnings = [r for r in caplog.records
                if r.name.startswith("overcentric_logging") and typo in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert meant in warnings[0].getMessage()
    assert not [r for r in caplog.records if "'$signup'" in r.getMessage()]


# -- the client -----------------------------------------------------------------------------


def test_client_recognizer_is_shared_by_adapters(server: LoopbackServer) -> None:
    client = Client("proj_1", endpoint=server.url, prefix="!", events=["x.*"],
                    name_key="ev", **FAST)
    handler = OvercentricHandler(client=client)
    processor = OvercentricProcessor(client=client)
    log = structlog.wrap_logger(CapturingLogger(), processors=[processor])
    try:
        with attached(handler) as stdlib_log:
            stdlib_log.info("!a")
            stdlib_log.info("$b")
            stdlib_log.info("x.c")
            stdlib_log.info("m", extra={"ev": "d"})
            log.info("!e")
            log.info("$f")
            log.info("x.g")
            log.info("m", ev="h")
            names = sorted(b["event"]["name"] for b in delivered(server, client))
    finally:
        client.close(5)
    assert names == ["!a", "!e", "d", "h", "x.c", "x.g"]

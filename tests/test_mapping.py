"""SPEC §3: the mapping table, reserved keys, precedence, fallback ids, values, privacy."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import sys
import uuid
from decimal import Decimal
from typing import Any

import pytest
import structlog
from loopback import LoopbackServer
from oc_helpers import (
    FAST,
    WAYS,
    WayIn,
    attached,
    delivered,
    ordered,
    props,
    unique_logger_name,
)

import overcentric_logging
from overcentric_logging import Client, OvercentricHandler, OvercentricProcessor
from overcentric_logging.values import FILTERED

PID = "proj_1"

# -- the table, row by row, for the three ways in -----------------------------------------


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("uid_key", ["user_id", "unique_identifier"])
def test_unique_identifier_row(server: LoopbackServer, way: str, uid_key: str) -> None:
    with WayIn(way, server) as w:
        w.emit("$login", **{uid_key: "user_123"})
        body = w.one()
    assert body["identity"] == {"unique_identifier": "user_123", "project_id": PID}
    assert uid_key not in props(body)


@pytest.mark.parametrize("way", WAYS)
def test_email_and_name_rows(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server) as w:
        w.emit("$signup", user_id="u1", user_email="u@example.com", user_name="Ann Lee")
        body = w.one()
    assert body["identity"] == {
        "unique_identifier": "u1", "email": "u@example.com", "name": "Ann Lee",
        "project_id": PID,
    }
    assert props(body) == {}


@pytest.mark.parametrize("way", WAYS)
def test_identity_dict_row(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server) as w:
        w.emit("$signup", identity={"unique_identifier": "u9", "email": "e@example.com",
                                    "name": "Bo", "project_id": "someone_else"})
        body = w.one()
    # project_id is always the event's, whatever the dict said.
    assert body["identity"] == {"unique_identifier": "u9", "email": "e@example.com",
                                "name": "Bo", "project_id": PID}
    assert "identity" not in props(body)


@pytest.mark.parametrize("way", WAYS)
def test_event_field_rows(server: LoopbackServer, way: str) -> None:
    fields = {"device_id": "dev-1", "session_id": "ses-1", "url": "https://a.example/x",
              "hostname": "a.example", "context": "website"}
    with WayIn(way, server) as w:
        w.emit("$login", **fields)
        body = w.one()
    event = body["event"]
    for key, value in fields.items():
        assert event[key] == value
    assert event["project_id"] == PID
    assert props(body) == {}
    assert "identity" not in body


@pytest.mark.parametrize("way", WAYS)
def test_properties_dict_merged_and_rest_to_properties(server: LoopbackServer, way: str
                                                       ) -> None:
    with WayIn(way, server) as w:
        w.emit("$subscription_purchase", properties={"plan": "premium", "seats": 3},
               price=9.99, currency="EUR")
        body = w.one()
    assert props(body) == {"plan": "premium", "seats": 3, "price": 9.99, "currency": "EUR"}


def test_track_properties_positional(server: LoopbackServer) -> None:
    with Client(PID, endpoint=server.url, **FAST) as client:
        client.track("$signup", {"plan": "free"}, user_id="u1", device_id="d", session_id="s",
                     source="ads")
        (body,) = delivered(server, client)
    assert props(body) == {"plan": "free", "source": "ads"}
    assert body["event"]["device_id"] == "d"
    assert body["event"]["session_id"] == "s"
    assert body["identity"]["unique_identifier"] == "u1"


@pytest.mark.parametrize("way", WAYS)
def test_identity_only_with_unique_identifier(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server) as w:
        w.emit("$signup", user_email="u@example.com", user_name="Ann")
        w.emit("$signup", identity={"email": "x@example.com"})
        w.emit("$signup", user_id=None, user_email="y@example.com")
        w.emit("$signup", user_id="   ")
        bodies = w.bodies()
    assert len(bodies) == 4
    for body in bodies:
        assert "identity" not in body
        assert "user_email" not in props(body) and "user_id" not in props(body)


def test_identity_project_id_follows_event(server: LoopbackServer) -> None:
    with WayIn("track", server, project_id="proj_other") as w:
        w.emit("$login", user_id=42)
        body = w.one()
    assert body["event"]["project_id"] == "proj_other"
    assert body["identity"] == {"unique_identifier": "42", "project_id": "proj_other"}


# -- reserved keys never reach properties -------------------------------------------------


def test_no_logrecord_attribute_reaches_properties(server: LoopbackServer) -> None:
    standard = set(logging.LogRecord("n", logging.INFO, "p", 1, "m", (), None).__dict__)
    standard |= {"message", "asctime"}
    handler = OvercentricHandler(PID, endpoint=server.url, **FAST)
    formatter = logging.Formatter("%(asctime)s %(message)s")
    handler.setFormatter(formatter)
    with attached(handler) as log:
        log.info("$signup", extra={"plan": "free"}, stack_info=True)
        try:
            raise KeyError("boom")
        except KeyError:
            log.exception("$login", extra={"plan": "paid"})
        log.warning("$login", extra={"event_name": "ignored_name_key_value"})
        bodies = delivered(server, handler.client)
    assert len(bodies) == 3
    for body in bodies:
        leaked = standard & set(props(body))
        assert not leaked, leaked
        assert "taskName" not in props(body)
        assert "event_name" not in props(body)
        assert "message" not in props(body)
    assert {props(b).get("plan") for b in bodies} == {"free", "paid", None}


# structlog's QUAL_NAME needs code.co_qualname (Python 3.11+); it fails on older Pythons.
_CALLSITE = [p for p in structlog.processors.CallsiteParameter
             if p.value != "qual_name" or sys.version_info >= (3, 11)]


def _bookkeeping_chain(processor: Any) -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.CallsiteParameterAdder(parameters=_CALLSITE),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        processor,
        structlog.processors.KeyValueRenderer(),
    ]


def _stdlib_sink() -> logging.Logger:
    logger = logging.getLogger(unique_logger_name("structlog"))
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


BOOKKEEPING = {
    "event", "level", "log_level", "logger", "logger_name", "timestamp", "exc_info",
    "exception", "stack_info", "stack", "_record", "_from_structlog",
    *(p.value for p in structlog.processors.CallsiteParameter),
}


def test_no_structlog_bookkeeping_key_reaches_properties(server: LoopbackServer) -> None:
    processor = OvercentricProcessor(PID, endpoint=server.url, **FAST)
    log = structlog.wrap_logger(_stdlib_sink(), processors=_bookkeeping_chain(processor),
                                wrapper_class=structlog.stdlib.BoundLogger)
    try:
        log.info("$signup", plan="free", stack_info=True)
        try:
            raise ValueError("bad card")
        except ValueError:
            log.exception("$login", plan="paid")
        log.info("something happened", event_name="document_created", doc="d1")
        bodies = delivered(server, processor.client)
    finally:
        processor.client.close(5)
    assert sorted(b["event"]["name"] for b in bodies) == ["$login", "$signup",
                                                          "document_created"]
    for body in bodies:
        leaked = BOOKKEEPING & set(props(body))
        assert not leaked, leaked
        assert "event_name" not in props(body)
        assert not any("Traceback" in str(v) for v in props(body).values())
    by_name = {b["event"]["name"]: props(b) for b in bodies}
    assert by_name["$signup"] == {"plan": "free"}
    assert by_name["document_created"] == {"doc": "d1"}
    assert by_name["$login"]["plan"] == "paid"


# -- exceptions ---------------------------------------------------------------------------


class PaymentError(Exception):
    pass


def test_exc_info_handler(server: LoopbackServer) -> None:
    handler = OvercentricHandler(PID, endpoint=server.url, **FAST)
    with attached(handler) as log:
        try:
            raise PaymentError("card declined")
        except PaymentError:
            log.exception("$subscription_cancel", extra={"plan": "pro", "seq": 0})
        try:
            raise KeyError("k")
        except KeyError as exc:
            log.error("$login", exc_info=exc, extra={"seq": 1})
        (cancel, login) = ordered(delivered(server, handler.client))
    p = props(cancel)
    assert p["exception_type"] == f"{__name__}.PaymentError"
    assert p["exception_message"] == "card declined"
    assert p["plan"] == "pro"
    assert props(login)["exception_type"] == "KeyError"
    for body in (cancel, login):
        assert not any("Traceback" in str(v) or "File \"" in str(v) for v in props(body).values())


def test_exc_info_processor_before_format_exc_info(server: LoopbackServer) -> None:
    processor = OvercentricProcessor(PID, endpoint=server.url, **FAST)
    log = structlog.wrap_logger(
        _stdlib_sink(),
        processors=[structlog.stdlib.add_log_level, processor,
                    structlog.processors.format_exc_info, structlog.processors.KeyValueRenderer()],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    try:
        try:
            raise PaymentError("insufficient funds")
        except PaymentError:
            log.exception("$subscription_cancel")
        (body,) = delivered(server, processor.client)
    finally:
        processor.client.close(5)
    p = props(body)
    assert p == {"exception_type": f"{__name__}.PaymentError",
                 "exception_message": "insufficient funds"}


# -- bound context and precedence -----------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_bind_applies_to_every_way_in(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server) as w:
        with overcentric_logging.bound(user_id="bound_user", session_id="bound_ses",
                                       device_id="bound_dev", url="https://b.example/p"):
            w.emit("$login", seq=0)
        w.emit("$login", seq=1)  # after the block: nothing bound
        first, second = ordered(w.bodies())
    assert first["identity"]["unique_identifier"] == "bound_user"
    assert first["event"]["session_id"] == "bound_ses"
    assert first["event"]["device_id"] == "bound_dev"
    assert first["event"]["url"] == "https://b.example/p"
    assert "identity" not in second
    assert "url" not in second["event"]


@pytest.mark.parametrize("way", WAYS)
def test_precedence_explicit_over_bound_over_defaults(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server, device_id="default_dev", session_id="default_ses") as w:
        w.emit("$login", seq=0)
        overcentric_logging.bind(device_id="bound_dev", user_id="bound_user")
        try:
            w.emit("$login", seq=1)
            w.emit("$login", device_id="explicit_dev", user_id="explicit_user", seq=2)
        finally:
            overcentric_logging.unbind("device_id", "user_id")
        w.emit("$login", seq=3)
        bodies = ordered(w.bodies())
    devices = [b["event"]["device_id"] for b in bodies]
    sessions = [b["event"]["session_id"] for b in bodies]
    users = [b.get("identity", {}).get("unique_identifier") for b in bodies]
    assert devices == ["default_dev", "bound_dev", "explicit_dev", "default_dev"]
    assert sessions == ["default_ses"] * 4
    assert users == [None, "bound_user", "explicit_user", None]


def test_structlog_contextvars_work_for_processor(server: LoopbackServer) -> None:
    processor = OvercentricProcessor(PID, endpoint=server.url, **FAST)
    # No merge_contextvars in this chain: the processor picks them up itself.
    log = structlog.wrap_logger(structlog.testing.CapturingLogger(), processors=[processor])
    structlog.contextvars.bind_contextvars(user_id="ctx_user", session_id="ctx_ses",
                                           tenant="acme")
    try:
        log.info("$login", seq=0)
        log.info("$login", user_id="explicit_user", tenant="other", seq=1)
    finally:
        structlog.contextvars.clear_contextvars()
    log.info("$login", seq=2)
    try:
        first, second, third = ordered(delivered(server, processor.client))
    finally:
        processor.client.close(5)
    assert first["identity"]["unique_identifier"] == "ctx_user"
    assert first["event"]["session_id"] == "ctx_ses"
    assert props(first) == {"tenant": "acme"}
    assert second["identity"]["unique_identifier"] == "explicit_user"
    assert props(second) == {"tenant": "other"}
    assert "identity" not in third


def test_structlog_contextvars_with_merge_contextvars(server: LoopbackServer) -> None:
    processor = OvercentricProcessor(PID, endpoint=server.url, **FAST)
    log = structlog.wrap_logger(
        structlog.testing.CapturingLogger(),
        processors=[structlog.contextvars.merge_contextvars, processor],
    )
    structlog.contextvars.bind_contextvars(user_id="merged_user")
    try:
        log.info("$login")
    finally:
        structlog.contextvars.clear_contextvars()
    try:
        (body,) = delivered(server, processor.client)
    finally:
        processor.client.close(5)
    assert body["identity"]["unique_identifier"] == "merged_user"
    assert props(body) == {}


# -- fallback ids ---------------------------------------------------------------------------


def test_fallback_ids_from_defaults(server: LoopbackServer) -> None:
    with WayIn("track", server, device_id="dd", session_id="ss") as w:
        w.emit("$login", user_id="u1")
        body = w.one()
    assert (body["event"]["device_id"], body["event"]["session_id"]) == ("dd", "ss")


def test_fallback_ids_derived_from_project_and_user(server: LoopbackServer) -> None:
    a = Client(PID, endpoint=server.url, **FAST)
    b = Client(PID, endpoint=server.url, **FAST)
    other = Client("proj_2", endpoint=server.url, **FAST)
    try:
        a.track("$login", user_id="u1")
        b.track("$login", user_id="u1")
        a.track("$login", user_id="u2")
        other.track("$login", user_id="u1")
        a.flush(10)
        b.flush(10)
        other.flush(10)
        bodies = delivered(server, a, b, other)
    finally:
        for c in (a, b, other):
            c.close(5)
    by = {(x["event"]["project_id"], x["identity"]["unique_identifier"], i): x["event"]
          for i, x in enumerate(bodies)}
    u1_p1 = [e for (p, u, _), e in by.items() if p == PID and u == "u1"]
    u2_p1 = [e for (p, u, _), e in by.items() if p == PID and u == "u2"]
    u1_p2 = [e for (p, u, _), e in by.items() if p == "proj_2" and u == "u1"]
    assert len(u1_p1) == 2 and len(u2_p1) == 1 and len(u1_p2) == 1
    ev1, ev1b = u1_p1
    assert ev1["device_id"] == ev1b["device_id"]  # deterministic across clients
    assert ev1["session_id"] == ev1b["session_id"]
    assert uuid.UUID(ev1["device_id"]).version == 5
    assert uuid.UUID(ev1["session_id"]).version == 5
    assert ev1["device_id"] != u2_p1[0]["device_id"]
    assert ev1["device_id"] != u1_p2[0]["device_id"]


def test_fallback_ids_per_process_without_user(server: LoopbackServer) -> None:
    a = Client(PID, endpoint=server.url, **FAST)
    b = Client(PID, endpoint=server.url, **FAST)
    try:
        a.track("$login")
        a.track("cron_ran")
        b.track("$login")
        bodies = delivered(server, a, b)
    finally:
        a.close(5)
        b.close(5)
    devices = {x["event"]["device_id"] for x in bodies}
    sessions = {x["event"]["session_id"] for x in bodies}
    assert len(devices) == 1, devices  # one per process, whichever client sent it
    assert len(sessions) == 1, sessions
    uuid.UUID(devices.pop())
    uuid.UUID(sessions.pop())


def test_bad_per_event_context_falls_back_with_warning(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="overcentric_logging")
    bad = f"backend_{uuid.uuid4().hex[:6]}"
    with WayIn("handler", server, context="website") as w:
        w.emit("$login", context=bad, seq=0)
        w.emit("$login", context="product", seq=1)
        first, second = ordered(w.bodies())
    assert first["event"]["context"] == "website"
    assert second["event"]["context"] == "product"
    assert "context" not in props(first)
    warned = [r.getMessage() for r in caplog.records if bad in r.getMessage()]
    assert len(warned) == 1
    assert "website" in warned[0]


# -- renames, exclusions, privacy, before_send ---------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_field_map_renames(server: LoopbackServer, way: str) -> None:
    field_map = {"uid": "user_id", "mail": "user_email", "amount": "price"}
    with WayIn(way, server, field_map=field_map) as w:
        w.emit("$subscription_purchase", uid="u7", mail="m@example.com", amount=5)
        body = w.one()
    assert body["identity"]["unique_identifier"] == "u7"
    assert body["identity"]["email"] == "m@example.com"
    assert props(body) == {"price": 5}


@pytest.mark.parametrize("way", WAYS)
def test_exclude_keys(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server, exclude_keys=["request_id", "internal"]) as w:
        w.emit("$login", request_id="r1", internal={"a": 1}, kept=True)
        body = w.one()
    assert props(body) == {"kept": True}


@pytest.mark.parametrize("way", WAYS)
def test_privacy_default_deny_list(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server) as w:
        w.emit("$signup", password="hunter2", api_key="k", nested={"token": "t", "ok": 1},
               plan="free")
        body = w.one()
    p = props(body)
    assert p["password"] == FILTERED
    assert p["api_key"] == FILTERED
    assert p["nested"] == {"token": FILTERED, "ok": 1}
    assert p["plan"] == "free"
    assert "hunter2" not in str(body)


def test_privacy_filter_off(server: LoopbackServer) -> None:
    with WayIn("track", server, privacy_filter=False) as w:
        w.emit("$signup", password="hunter2")
        body = w.one()
    assert props(body)["password"] == "hunter2"


def test_privacy_custom_filter_keys(server: LoopbackServer) -> None:
    with WayIn("handler", server, filter_keys=["internal_note"]) as w:
        w.emit("$signup", internal_note="vip", plan="free")
        body = w.one()
    assert props(body)["internal_note"] == FILTERED
    assert props(body)["plan"] == "free"


def test_before_send_edits(server: LoopbackServer) -> None:
    def before_send(payload: dict[str, Any]) -> dict[str, Any]:
        payload["event"]["properties"]["edited"] = True
        payload["event"]["name"] = "$signup"
        return payload

    with WayIn("handler", server, before_send=before_send) as w:
        w.emit("$sign_up_typo_renamed")
        body = w.one()
    assert body["event"]["name"] == "$signup"
    assert props(body) == {"edited": True}


def test_before_send_drop_is_counted(server: LoopbackServer) -> None:
    errors: list[tuple[Any, BaseException]] = []

    def before_send(payload: dict[str, Any]) -> dict[str, Any] | None:
        return None if payload["event"]["properties"].get("skip") else payload

    with WayIn("processor", server, before_send=before_send,
               on_error=lambda p, e: errors.append((p, e))) as w:
        w.emit("$login", skip=True)
        w.emit("$login", skip=False)
        bodies = w.bodies()
        stats = w.client.stats()
        reasons = w.client.dropped_reasons
    assert [props(b) for b in bodies] == [{"skip": False}]
    assert stats["dropped"] == 1 and stats["sent"] == 1 and stats["tracked"] == 2
    assert stats["tracked"] == stats["sent"] + stats["failed"] + stats["dropped"] + stats[
        "pending"]
    assert reasons == {"before_send": 1}
    assert len(errors) == 1
    assert getattr(errors[0][1], "reason", None) == "before_send"


def test_oversized_event_is_trimmed(server: LoopbackServer) -> None:
    with WayIn("track", server, max_event_bytes=2048) as w:
        w.emit("$signup", essay="x" * 10_000, plan="free")
        body = w.one()
        stats = w.client.stats()
    assert len(server.requests[0].body) <= 2048
    assert props(body)["plan"] == "free"
    assert len(props(body)["essay"]) < 2048
    assert stats["sent"] == 1 and stats["dropped"] == 0


def test_oversized_event_that_cannot_fit_is_dropped_and_counted(server: LoopbackServer) -> None:
    errors: list[BaseException] = []
    with WayIn("track", server, max_event_bytes=1024,
               on_error=lambda p, e: errors.append(e)) as w:
        w.emit("$signup", url="https://example.com/" + "a" * 1500)
        w.emit("$login")
        bodies = w.bodies()
        stats = w.client.stats()
        reasons = w.client.dropped_reasons
    assert [b["event"]["name"] for b in bodies] == ["$login"]
    assert stats["dropped"] == 1
    assert reasons == {"too_large": 1}
    assert [getattr(e, "reason", None) for e in errors] == ["too_large"]


# -- values on the way to the wire ----------------------------------------------------------


@dataclasses.dataclass
class Plan:
    name: str
    seats: int


@pytest.mark.parametrize("way", WAYS)
def test_value_conversions_end_to_end(server: LoopbackServer, way: str) -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with WayIn(way, server) as w:
        w.emit("$subscription_purchase", when=when, day=dt.date(2024, 5, 1),
               price=Decimal("9.99"), order=uid, tags={"a"}, pair=(1, 2), raw=b"bytes",
               plan=Plan("pro", 3), ratio=math.nan, big=math.inf)
        body = w.one()
    p = props(body)
    assert p["when"] == "2024-05-01T12:30:00+00:00"
    assert p["day"] == "2024-05-01"
    assert p["price"] == 9.99
    assert p["order"] == str(uid)
    assert p["tags"] == ["a"]
    assert p["pair"] == [1, 2]
    assert p["raw"] == "bytes"
    assert p["plan"] == {"name": "pro", "seats": 3}
    assert p["ratio"] is None
    assert p["big"] is None
    # Strict JSON on the wire: no NaN/Infinity tokens.
    raw = server.requests[-1].body
    assert b"NaN" not in raw and b"Infinity" not in raw


def test_handler_default_identity_and_event_defaults_do_not_leak(server: LoopbackServer) -> None:
    """Handler options are configuration, never properties."""
    with WayIn("handler", server, device_id="dd", session_id="ss", context="website") as w:
        w.emit("$login")
        body = w.one()
    assert props(body) == {}
    assert body["event"]["context"] == "website"


@pytest.mark.parametrize("way", WAYS)
def test_explicit_identity_dict_beats_bound_user(server: LoopbackServer, way: str) -> None:
    with WayIn(way, server) as w:
        with overcentric_logging.bound(user_id="bound_user", user_email="bound@example.com"):
            w.emit("$login", identity={"unique_identifier": "explicit_user"}, seq=0)
            w.emit("$login", identity={"email": "explicit@example.com"}, seq=1)
        bodies = ordered(w.bodies())
    assert bodies[0]["identity"]["unique_identifier"] == "explicit_user"
    # Only what the explicit dict names is replaced.
    assert bodies[0]["identity"]["email"] == "bound@example.com"
    assert bodies[1]["identity"] == {"unique_identifier": "bound_user",
                                     "email": "explicit@example.com", "project_id": PID}


def test_explicit_flat_user_beats_bound_identity_dict(server: LoopbackServer) -> None:
    with WayIn("handler", server) as w:
        with overcentric_logging.bound(identity={"unique_identifier": "bound_user"}):
            w.emit("$login", user_id="explicit_user")
        body = w.one()
    assert body["identity"]["unique_identifier"] == "explicit_user"


@pytest.mark.parametrize("way", WAYS)
def test_exclude_keys_and_name_key_apply_to_bound_fields(server: LoopbackServer, way: str
                                                         ) -> None:
    with WayIn(way, server, exclude_keys=["request_id"]) as w:
        with overcentric_logging.bound(request_id="r1", tenant="acme"):
            w.emit("$login")
        body = w.one()
    assert props(body) == {"tenant": "acme"}


def test_bound_fields_are_renamed_by_field_map(server: LoopbackServer) -> None:
    with WayIn("track", server, field_map={"uid": "user_id"}) as w:
        with overcentric_logging.bound(uid="u5"):
            w.emit("$login")
        body = w.one()
    assert body["identity"]["unique_identifier"] == "u5"
    assert props(body) == {}

"""SPEC §1 and §4: every way to set the library up, and every way to get that wrong."""

from __future__ import annotations

import logging
import logging.config
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oc_helpers
import pytest
import structlog
from loopback import LoopbackServer, status
from oc_helpers import FAST, attached, delivered, props, unique_logger_name

from overcentric_logging import Client, EventRejected, OvercentricHandler, OvercentricProcessor

TESTS_DIR = Path(__file__).resolve().parent
ENV_KEYS = ("OVERCENTRIC_PROJECT_ID", "OVERCENTRIC_ENDPOINT", "OVERCENTRIC_DISABLED")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def errors_seen() -> Iterator[list[tuple[Any, BaseException]]]:
    oc_helpers.errors_seen.clear()
    yield oc_helpers.errors_seen
    oc_helpers.errors_seen.clear()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """dictConfig/fileConfig touch global state: put root's handlers and level back."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in saved[1]:
                root.removeHandler(handler)
        for handler in saved[1]:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(saved[0])


def _oc_handlers(logger: logging.Logger) -> list[OvercentricHandler]:
    return [h for h in logger.handlers if isinstance(h, OvercentricHandler)]


def _detach(logger: logging.Logger) -> None:
    for handler in _oc_handlers(logger):
        logger.removeHandler(handler)
        handler.close()
        handler.client.close(5)


# -- in code -------------------------------------------------------------------------------


def test_in_code_handler(server: LoopbackServer) -> None:
    handler = OvercentricHandler("proj_1", endpoint=server.url, **FAST)
    assert handler.client.config.project_id == "proj_1"
    with attached(handler) as log:
        log.info("$subscription_purchase",
                 extra={"plan": "premium", "price": 9.99, "user_id": "user_123",
                        "user_email": "u@example.com"})
        log.info("a plain line")
        (body,) = delivered(server, handler.client)
    assert body["event"]["name"] == "$subscription_purchase"
    assert props(body) == {"plan": "premium", "price": 9.99}
    assert body["identity"]["email"] == "u@example.com"
    assert handler.stats()["sent"] == 1


def test_handler_level_is_respected(server: LoopbackServer) -> None:
    handler = OvercentricHandler("proj_1", "WARNING", endpoint=server.url, **FAST)
    with attached(handler) as log:
        log.info("$login", extra={"seq": 0})
        log.warning("$signup")
        bodies = delivered(server, handler.client)
    assert [b["event"]["name"] for b in bodies] == ["$signup"]


# -- dictConfig ----------------------------------------------------------------------------


def test_dictconfig_with_ext_callables(server: LoopbackServer, restore_logging: None,
                                       errors_seen: list[tuple[Any, BaseException]]) -> None:
    name = unique_logger_name("dictconfig")
    server.script(status(400, b'{"error": "bad project"}'))
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "overcentric": {
                "class": "overcentric_logging.OvercentricHandler",
                "level": "INFO",
                "project_id": "proj_dc",
                "endpoint": server.url,
                "on_error": "ext://oc_helpers.record_error",
                "before_send": "ext://oc_helpers.tag_before_send",
                "events": ["document_*"],
                "timeout": 0.5,
                "backoff_base": 0.01,
                "max_retries": 2,
                "shutdown_timeout": 1.0,
            },
        },
        "loggers": {name: {"handlers": ["overcentric"], "level": "DEBUG", "propagate": False}},
    })
    logger = logging.getLogger(name)
    try:
        (handler,) = _oc_handlers(logger)
        assert handler.client.config.project_id == "proj_dc"
        assert handler.client.config.on_error is oc_helpers.record_error
        logger.info("$login", extra={"seq": 0})  # answered 400: reaches on_error
        assert handler.client.flush(10)
        logger.info("document_created", extra={"doc": "d1"})
        logger.debug("$signup")  # below the handler's level
        bodies = delivered(server, handler.client)
        stats = handler.stats()
    finally:
        _detach(logger)
    assert [b["event"]["name"] for b in bodies] == ["document_created"]
    assert props(bodies[0]) == {"doc": "d1", "tagged": True}
    assert stats["sent"] == 1 and stats["failed"] == 1
    assert len(errors_seen) == 1
    payload, error = errors_seen[0]
    assert isinstance(error, EventRejected) and error.status == 400
    assert b"bad project" in error.body
    assert payload["event"]["name"] == "$login"
    assert payload["event"]["properties"]["tagged"] is True


def test_dictconfig_with_callables_given_directly(server: LoopbackServer, restore_logging: None,
                                                  errors_seen: list[Any]) -> None:
    name = unique_logger_name("dictconfig")
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"oc": {"()": OvercentricHandler, "project_id": "proj_1",
                            "endpoint": server.url, "before_send": oc_helpers.drop_before_send,
                            **FAST}},
        "loggers": {name: {"handlers": ["oc"], "level": "INFO", "propagate": False}},
    })
    logger = logging.getLogger(name)
    try:
        (handler,) = _oc_handlers(logger)
        logger.info("$login")
        logger.info("$login_secret")
        bodies = delivered(server, handler.client)
        reasons = handler.client.dropped_reasons
    finally:
        _detach(logger)
    assert [b["event"]["name"] for b in bodies] == ["$login"]
    assert reasons == {"before_send": 1}


def test_dictconfig_bad_option_names_the_key(restore_logging: None) -> None:
    name = unique_logger_name("dictconfig")
    with pytest.raises(ValueError) as info:
        logging.config.dictConfig({
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"oc": {"class": "overcentric_logging.OvercentricHandler",
                                "project_id": "proj_1", "context": "mobile"}},
            "loggers": {name: {"handlers": ["oc"]}},
        })
    text = str(info.value) + " " + str(info.value.__cause__)
    assert "context" in text and "mobile" in text


# -- fileConfig ----------------------------------------------------------------------------


def test_fileconfig_ini(server: LoopbackServer, tmp_path: Path, restore_logging: None,
                        errors_seen: list[Any]) -> None:
    name = unique_logger_name("fileconfig")
    ini = tmp_path / "logging.ini"
    kwargs = {"endpoint": server.url, "timeout": 0.5, "backoff_base": 0.01,
              "events": "report_*", "on_error": "ext://oc_helpers.record_error"}
    ini.write_text(textwrap.dedent(f"""\
        [loggers]
        keys=root,app

        [handlers]
        keys=overcentric

        [formatters]
        keys=

        [logger_root]
        level=WARNING
        handlers=

        [logger_app]
        level=INFO
        handlers=overcentric
        qualname={name}
        propagate=0

        [handler_overcentric]
        class=overcentric_logging.OvercentricHandler
        level=INFO
        args=('proj_ini',)
        kwargs={kwargs!r}
        """))
    logging.config.fileConfig(ini, disable_existing_loggers=False)
    logger = logging.getLogger(name)
    try:
        (handler,) = _oc_handlers(logger)
        assert handler.client.config.on_error is oc_helpers.record_error
        logger.info("$signup", extra={"user_id": "u1"})
        logger.info("report_exported")
        logger.info("not an event")
        bodies = delivered(server, handler.client)
    finally:
        _detach(logger)
    assert sorted(b["event"]["name"] for b in bodies) == ["$signup", "report_exported"]
    assert {b["event"]["project_id"] for b in bodies} == {"proj_ini"}
    assert errors_seen == []


# -- a shared client -----------------------------------------------------------------------


def test_handler_and_processor_share_one_client(server: LoopbackServer) -> None:
    client = Client("proj_1", endpoint=server.url, **FAST)
    handler = OvercentricHandler(client=client)
    processor = OvercentricProcessor(client=client)
    assert handler.client is client and processor.client is client
    log = structlog.wrap_logger(structlog.testing.CapturingLogger(), processors=[processor])
    try:
        with attached(handler, close_client=False) as stdlib_log:
            stdlib_log.info("$signup")
            log.info("$login")
            client.track("$subscription_purchase")
            assert len(delivered(server, client)) == 3
        # Closing the handler does not close a client it does not own.
        client.track("$subscription_cancel")
        bodies = delivered(server, client)
        stats = client.stats()
    finally:
        client.close(5)
    assert sorted(b["event"]["name"] for b in bodies) == [
        "$login", "$signup", "$subscription_cancel", "$subscription_purchase"]
    assert stats["tracked"] == 4 and stats["sent"] == 4
    assert handler.stats() == processor.stats() == client.stats()


@pytest.mark.parametrize("cls", [OvercentricHandler, OvercentricProcessor])
@pytest.mark.parametrize("option", [{"prefix": "!"}, {"endpoint": "http://127.0.0.1:1/x"},
                                    {"project_id": "other"}, {"timeout": 1.0}])
def test_options_beside_client_raise(cls: Any, option: dict[str, Any]) -> None:
    client = Client("proj_1", enabled=False)
    with pytest.raises(ValueError) as info:
        cls(client=client, **option)
    key = next(iter(option))
    assert key in str(info.value) and "client" in str(info.value)


@pytest.mark.parametrize("cls", [OvercentricHandler, OvercentricProcessor])
def test_client_must_be_a_client(cls: Any) -> None:
    with pytest.raises(ValueError, match="client"):
        cls(client="proj_1")


# -- misconfiguration ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Client, OvercentricHandler, OvercentricProcessor])
def test_missing_project_id_names_option_and_env(cls: Any) -> None:
    with pytest.raises(ValueError) as info:
        cls()
    assert "project_id" in str(info.value)
    assert "OVERCENTRIC_PROJECT_ID" in str(info.value)
    with pytest.raises(ValueError):
        cls(project_id="   ")


BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"endpoint": "ftp://example.com/api/v1/event"}, "endpoint"),
    ({"endpoint": "127.0.0.1:8787/api/v1/event"}, "endpoint"),
    ({"endpoint": "http:///api/v1/event"}, "endpoint"),
    ({"context": "mobile"}, "context"),
    ({"context": None}, "context"),
    ({"max_queue_size": 0}, "max_queue_size"),
    ({"max_queue_size": -5}, "max_queue_size"),
    ({"max_queue_size": "lots"}, "max_queue_size"),
    ({"max_workers": 0}, "max_workers"),
    ({"max_workers": 2.5}, "max_workers"),
    ({"max_workers": True}, "max_workers"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": -1.0}, "timeout"),
    ({"timeout": "fast"}, "timeout"),
    ({"timeout": float("nan")}, "timeout"),
    ({"timeout": float("inf")}, "timeout"),
    ({"max_retries": -1}, "max_retries"),
    ({"shutdown_timeout": -0.5}, "shutdown_timeout"),
    ({"backoff_base": "x"}, "backoff_base"),
    ({"max_event_bytes": 10}, "max_event_bytes"),
    ({"max_event_bytes": [1]}, "max_event_bytes"),
    ({"sync": "maybe"}, "sync"),
    ({"enabled": "perhaps"}, "enabled"),
    ({"prefix": ""}, "prefix"),
    ({"prefix": 5}, "prefix"),
    ({"events": [1, 2]}, "events"),
    ({"events": 7}, "events"),
    ({"name_key": ""}, "name_key"),
    ({"field_map": {"uid": 5}}, "field_map"),
    ({"field_map": ["uid"]}, "field_map"),
    ({"device_id": 123}, "device_id"),
    ({"headers": {"X": 1}}, "headers"),
    ({"endpont": "https://example.com"}, "endpont"),
    ({"on_error": "ext://no_such_module_anywhere.handler"}, "on_error"),
    ({"on_error": "ext://oc_helpers.no_such_function"}, "on_error"),
    ({"on_error": "not a path"}, "on_error"),
    ({"on_error": 42}, "on_error"),
    ({"before_send": "ext://oc_helpers.FAST"}, "before_send"),  # exists, not callable
    ({"privacy_filter": "sometimes"}, "privacy_filter"),
]


@pytest.mark.parametrize(("options", "key"), BAD_OPTIONS,
                         ids=[f"{k}={v!r}"[:40] for (o, k) in BAD_OPTIONS for v in o.values()])
@pytest.mark.parametrize("cls", [Client, OvercentricHandler, OvercentricProcessor])
def test_bad_option_raises_naming_the_key(cls: Any, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError) as info:
        cls("proj_1", **options)
    assert key in str(info.value), str(info.value)


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        Client("proj_1", endpont="https://example.com")
    assert "endpoint" in str(info.value)


def test_bad_option_builds_nothing() -> None:
    from overcentric_logging.sender import live_senders

    before = set(live_senders)
    with pytest.raises(ValueError):
        Client("proj_1", timeout=-1)
    assert set(live_senders) <= before


# -- environment ---------------------------------------------------------------------------


def test_env_project_id_and_endpoint(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    monkeypatch.setenv("OVERCENTRIC_PROJECT_ID", "proj_env")
    monkeypatch.setenv("OVERCENTRIC_ENDPOINT", server.url)
    handler = OvercentricHandler(**FAST)
    assert handler.client.config.endpoint == server.url
    with attached(handler) as log:
        log.info("$signup")
        (body,) = delivered(server, handler.client)
    assert body["event"]["project_id"] == "proj_env"


def test_explicit_options_beat_env(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
                                   ) -> None:
    monkeypatch.setenv("OVERCENTRIC_PROJECT_ID", "proj_env")
    monkeypatch.setenv("OVERCENTRIC_ENDPOINT", "http://127.0.0.1:1/never")
    with Client("proj_explicit", endpoint=server.url, **FAST) as client:
        client.track("$login")
        (body,) = delivered(server, client)
    assert body["event"]["project_id"] == "proj_explicit"


def test_env_bad_endpoint_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVERCENTRIC_ENDPOINT", "localhost:8787")
    with pytest.raises(ValueError, match="endpoint"):
        Client("proj_1")


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_env_disabled(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, value: str
                      ) -> None:
    monkeypatch.setenv("OVERCENTRIC_DISABLED", value)
    handler = OvercentricHandler(endpoint=server.url)  # no project_id needed when off
    assert handler.client.enabled is False
    with attached(handler) as log:
        log.info("$signup")
        assert handler.client.flush(1)
    handler.client.track("$login")
    assert handler.client.stats()["tracked"] == 0
    assert server.requests == []


def test_env_disabled_zero_keeps_enabled(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("OVERCENTRIC_DISABLED", "0")
    with Client("proj_1", endpoint=server.url, **FAST) as client:
        assert client.enabled
        client.track("$login")
        assert len(delivered(server, client)) == 1


# -- enabled=False -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Client, OvercentricHandler, OvercentricProcessor])
def test_enabled_false_builds_no_sender(cls: Any, server: LoopbackServer) -> None:
    from overcentric_logging.sender import live_senders

    before = set(live_senders)
    obj = cls("proj_1", endpoint=server.url, enabled=False)
    client = obj if isinstance(obj, Client) else obj.client
    assert client.enabled is False
    assert set(live_senders) <= before
    client.track("$signup")
    if isinstance(obj, OvercentricHandler):
        with attached(obj) as log:
            log.info("$signup")
    if isinstance(obj, OvercentricProcessor):
        event_dict = {"event": "$signup"}
        assert obj(None, "info", event_dict) is event_dict
    assert client.flush(1) is True
    assert client.close(1) is True
    assert client.stats() == {"tracked": 0, "sent": 0, "failed": 0, "dropped": 0,
                              "retries": 0, "pending": 0}
    assert server.requests == []


def test_enabled_false_accepts_string_from_config(server: LoopbackServer) -> None:
    client = Client("proj_1", endpoint=server.url, enabled="false")
    assert client.enabled is False


# -- plain http warning (construct only, never send) ---------------------------------------

_PLAIN_HTTP = """
import io, logging
stream = io.StringIO()
logging.getLogger("overcentric_logging").addHandler(logging.StreamHandler(stream))
from overcentric_logging import Client, OvercentricHandler
Client("p", endpoint="http://127.0.0.1:9/api/v1/event")
Client("p", endpoint="http://localhost:9/api/v1/event")
Client("p", endpoint="http://[::1]:9/api/v1/event")
Client("p", endpoint="https://analytics.example.com/api/v1/event")
print("LOOPBACK-WARNINGS", stream.getvalue().count("plain http"))
Client("p", endpoint="http://analytics.example.com/api/v1/event")
OvercentricHandler("p", endpoint="http://analytics.example.com/api/v1/event")
Client("p", endpoint="http://10.1.2.3/api/v1/event")
print("WARNINGS", stream.getvalue().count("plain http"))
print(stream.getvalue())
"""


def test_plain_http_to_non_loopback_warns_once() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    result = subprocess.run([sys.executable, "-c", _PLAIN_HTTP], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "LOOPBACK-WARNINGS 0" in result.stdout
    assert "WARNINGS 1" in result.stdout.replace("LOOPBACK-WARNINGS", "")
    assert "analytics.example.com" in result.stdout


def test_env_bad_endpoint_names_the_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVERCENTRIC_ENDPOINT", "localhost:8787")
    with pytest.raises(ValueError, match="OVERCENTRIC_ENDPOINT"):
        Client("proj_1")


def test_options_as_strings_from_config_files(server: LoopbackServer) -> None:
    """dictConfig from JSON/YAML and environment-driven setups give strings."""
    with Client("proj_1", endpoint=server.url, timeout="0.5", max_workers="4",
                max_queue_size="100", backoff_base="0.01", sync="true", enabled="yes",
                privacy_filter="off", context="website") as client:
        config = client.config
        assert (config.timeout, config.max_workers, config.max_queue_size) == (0.5, 4, 100)
        assert config.sync is True and config.deny_pattern is None
        client.track("$login", password="p")
        (body,) = delivered(server, client)
    assert body["event"]["context"] == "website"
    assert props(body)["password"] == "p"


def test_failed_handler_construction_leaves_no_broken_handler(restore_logging: None) -> None:
    """A handler whose options were rejected must not stay registered with logging half-built:
    the next dictConfig/fileConfig (and logging.shutdown at exit) flushes and closes every
    registered handler."""
    with pytest.raises(ValueError) as info:
        OvercentricHandler("proj_1", context="mobile")
    # The traceback keeps the half-built object alive, as a caller's frame would.
    assert info.traceback
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})

"""Hostile input: whatever a logging call carries, the caller never sees an exception, every
body that reaches the server is strict JSON that passes the documented schema, and an event
that cannot be made valid is counted as dropped. Bad configuration fails at construction with
a ``ValueError`` that names the key, in code and through ``dictConfig``.

Hypothesis drives nested values (cycles, NaN, huge ints, bytes, lone surrogates, objects whose
``__repr__``/``__str__``/``__getattr__`` raise, non-string keys) through the three ways in:
the stdlib handler (``extra=``), the structlog processor and ``Client.track()``. One server and
one client serve every example of a test function (flushed between examples), so the whole
file stays fast; the 10 MB string and the 10,000-deep nesting are explicit cases.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Callable

import pytest
from delivery_support import PROJECT, assert_invariant, make_client, run_bounded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import LoopbackServer

import overcentric_logging
from overcentric_logging.schema import validate_payload

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


# -- hostile objects ----------------------------------------------------------------------


# Hypothesis itself calls repr() on what it generates (to report, to explain); the hostile
# objects only turn hostile while the library is looking at them.
ARMED = threading.Event()


def _maybe_raise(what: str) -> None:
    if ARMED.is_set():
        raise RuntimeError(what)


class RaisingRepr:
    """``repr()`` and ``str()`` both raise."""

    def __repr__(self) -> str:
        _maybe_raise("no repr for you")
        return "<RaisingRepr (disarmed)>"

    def __str__(self) -> str:
        _maybe_raise("no str for you")
        return "RaisingRepr"


class RaisingGetattr(RaisingRepr):
    """Every attribute lookup (``.item``, ``.tolist``, ``model_dump``...) raises."""

    def __getattr__(self, name: str) -> Any:
        if ARMED.is_set():
            raise RuntimeError(f"no attribute {name}")
        raise AttributeError(name)


class LyingDuck:
    """Looks like a numpy scalar / pydantic model, but every hook misbehaves."""

    def item(self) -> LyingDuck:
        return self

    def tolist(self) -> Any:
        raise ValueError("tolist failed")

    def model_dump(self) -> Any:
        return {1j: self}

    def __repr__(self) -> str:
        return "<LyingDuck>"


class ReprReturnsNonStr:
    def __repr__(self) -> Any:
        return 42 if ARMED.is_set() else "<ReprReturnsNonStr>"  # repr() then raises TypeError

    __str__ = __repr__


class HashableRaisingStr:
    """Usable as a dict key, but ``str()`` and ``repr()`` raise."""

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        _maybe_raise("key repr")
        return "<HashableRaisingStr (disarmed)>"

    __str__ = __repr__


class StrSubclass(str):
    def __str__(self) -> str:
        _maybe_raise("subclass str")
        return str.__str__(self)


HOSTILE_OBJECTS = [RaisingRepr(), RaisingGetattr(), LyingDuck(), ReprReturnsNonStr(), object(),
                   StrSubclass("sneaky"), print, type, Ellipsis, NotImplemented]


def _huge_int(factor: int) -> int:
    return factor * 10**5000 + 1  # beyond int_max_str_digits: str() raises ValueError


def _cyclic(value: Any) -> Any:
    a: list[Any] = [value]
    a.append(a)
    d: dict[str, Any] = {"v": value, "list": a}
    d["self"] = d
    return d


# Indices, not the objects: hypothesis calls repr() on what sampled_from holds.


def _hostile(index: int) -> Any:
    return HOSTILE_OBJECTS[index]


hostile_objects = st.sampled_from(range(len(HOSTILE_OBJECTS))).map(_hostile)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-3, max_value=3).map(_huge_int),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1),
    st.binary(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=st.none() | st.just(dt.timezone.utc)),
    st.uuids(),
    st.complex_numbers(allow_nan=True),
    hostile_objects,
)
keys = st.one_of(
    st.text(),
    st.integers(),
    st.integers(min_value=1, max_value=3).map(_huge_int),
    st.none(),
    st.floats(allow_nan=True),
    st.binary(),
    st.tuples(st.integers(), st.text()),
    st.just(HashableRaisingStr()),
    st.sampled_from(["password", "api_key", "user_id", "properties", "identity"]),
)
nested = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=5),
        st.tuples(children, children),
        st.sets(st.integers() | st.text(), max_size=4),
        st.frozensets(st.integers(), max_size=4),
        children.map(_cyclic),
    ),
    max_leaves=25,
)
names = st.one_of(
    st.text(),
    st.just(""),
    st.just("   "),
    st.text(min_size=1).map(lambda s: "$" + s),
    st.integers(),
    st.none(),
    st.binary(),
    hostile_objects,
    st.just("$" + "x" * 100_000),
)


# -- one client per test function ---------------------------------------------------------


class Probe:
    """A client on the loopback server, with the three ways in wired to it."""

    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.client = make_client(server.url, max_queue_size=100_000)
        self.handler = overcentric_logging.OvercentricHandler(client=self.client)
        self.processor = overcentric_logging.OvercentricProcessor(client=self.client)
        self.logger = logging.getLogger(f"test_hostile.{uuid.uuid4().hex}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self.handler)

    def settle(self) -> dict[str, int]:
        assert self.client.flush(30), self.client.stats()
        stats = assert_invariant(self.client)
        assert stats["pending"] == 0
        assert stats["failed"] == 0, "the server accepts everything: nothing may fail"
        return stats

    def check_wire(self) -> None:
        """Every request so far is strict JSON (no NaN/Infinity) and passes the schema."""
        for request in self.server.requests:
            body = json.loads(request.body.decode("utf-8"), parse_constant=_reject_constant)
            problems = validate_payload(body)
            assert not problems, (problems[:5], request.body[:300])
            assert request.answered_ok

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.client.close(timeout=5)


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"non-strict JSON constant {name} on the wire")


@pytest.fixture
def probe(server: LoopbackServer) -> Iterator[Probe]:
    p = Probe(server)
    yield p
    p.close()
    p.check_wire()
    assert_invariant(p.client)


def never_raises(call: Callable[[], Any]) -> None:
    """The call returns normally (a watchdog fails the test instead of hanging)."""
    run_bounded(call, timeout=30.0)


def _one_example(probe: Probe, call: Callable[[], Any]) -> None:
    before = probe.client.stats()
    ARMED.set()
    try:
        never_raises(call)
        after = probe.settle()  # the sender maps while the objects are still hostile
    finally:
        ARMED.clear()
    assert after["tracked"] == before["tracked"] + 1
    outcome = (after["sent"] - before["sent"]) + (after["dropped"] - before["dropped"])
    assert outcome == 1, (before, after)
    probe.check_wire()


# -- values through each way in -----------------------------------------------------------


@SETTINGS
@given(value=nested)
def test_any_value_through_the_handler_extra(probe: Probe, value: Any) -> None:
    _one_example(probe, lambda: probe.logger.info(
        "$signup", extra={"payload": value, "other": [value, {"v": value}]}))


@SETTINGS
@given(value=nested)
def test_any_value_through_the_processor(probe: Probe, value: Any) -> None:
    def call() -> None:
        event_dict = {"event": "$login", "payload": value, 5: value, None: "x"}
        out = probe.processor(None, "info", event_dict)
        assert out is event_dict

    _one_example(probe, call)


@SETTINGS
@given(value=nested)
def test_any_value_through_track(probe: Probe, value: Any) -> None:
    _one_example(probe, lambda: probe.client.track("$signup", {"payload": value}, extra=value))


@SETTINGS
@given(value=nested)
def test_any_value_in_the_mapped_fields(probe: Probe, value: Any) -> None:
    # Every reserved key of the mapping table gets the hostile value at once.
    fields = {key: value for key in (
        "user_id", "user_email", "user_name", "device_id", "session_id", "url", "hostname",
        "context", "identity", "properties")}
    _one_example(probe, lambda: probe.client.track("$signup", **fields))


@SETTINGS
@given(name=names)
def test_any_event_name(probe: Probe, name: Any) -> None:
    before = probe.client.stats()

    def calls() -> None:
        probe.client.track(name, {"seq": 1})
        probe.logger.info("not an event message", extra={"event_name": name})
        probe.processor(None, "info", {"event": "a log line", "event_name": name})

    ARMED.set()
    try:
        never_raises(calls)
        after = probe.settle()
    finally:
        ARMED.clear()
    tracked = after["tracked"] - before["tracked"]
    assert tracked == 3 if name is not None else tracked in (1, 3)
    assert after["sent"] + after["dropped"] == after["tracked"]
    probe.check_wire()
    for body in probe.server.events:
        assert 0 < len(body["event"]["name"]) <= 200


@pytest.mark.parametrize("make", [
    lambda: "x" * (10 * 1024 * 1024),
    lambda: "é" * (5 * 1024 * 1024),
    lambda: {f"k{i}": "v" * 1000 for i in range(20_000)},
    lambda: ["y" * 100_000] * 200,
], ids=["10MB-ascii", "10MB-utf8", "20k-keys", "200x100KB"])
def test_huge_values_are_trimmed_or_dropped(probe: Probe, make: Callable[[], Any]) -> None:
    value = make()
    for call in (
        lambda: probe.logger.info("$signup", extra={"blob": value}),
        lambda: probe.client.track("$signup", {"blob": value}),
        lambda: probe.processor(None, "info", {"event": "$signup", "blob": value}),
    ):
        _one_example(probe, call)
    for request in probe.server.requests:
        assert len(request.body) <= probe.client.config.max_event_bytes


def _deep_list(depth: int) -> Any:
    root: list[Any] = []
    node = root
    for _ in range(depth):
        child: list[Any] = []
        node.append(child)
        node = child
    return root


def _deep_dict(depth: int) -> Any:
    root: dict[str, Any] = {}
    node = root
    for i in range(depth):
        child: dict[str, Any] = {}
        node[f"k{i % 7}"] = child
        node = child
    return root


@pytest.mark.parametrize("make", [
    lambda: _deep_list(10_000), lambda: _deep_dict(10_000), lambda: _deep_list(200_000),
], ids=["list-10k", "dict-10k", "list-200k"])
def test_deep_nesting_is_cut(probe: Probe, make: Callable[[], Any]) -> None:
    value = make()
    _one_example(probe, lambda: probe.logger.info("$signup", extra={"deep": value}))
    _one_example(probe, lambda: probe.client.track("$signup", {"deep": value}))
    _one_example(probe, lambda: probe.processor(None, "info", {"event": "$x", "deep": value}))
    assert probe.server.events, "a cut nesting is still an event worth sending"


def test_special_numbers_become_strict_json(probe: Probe) -> None:
    value = {
        "nan": math.nan, "inf": math.inf, "ninf": -math.inf, "dnan": Decimal("NaN"),
        "dinf": Decimal("-Infinity"), "huge": 10**100_000, "big_key": {10**5000: 1},
        "neg_zero": -0.0, "sub": 5e-324,
    }
    _one_example(probe, lambda: probe.client.track("$signup", value))
    ((body),) = probe.server.events
    props = body["event"]["properties"]
    assert props["nan"] is None and props["inf"] is None and props["dnan"] is None


# -- configuration values -----------------------------------------------------------------

BAD_CONFIG: list[tuple[str, Any]] = [
    ("max_queue_size", "ten"), ("max_queue_size", 0), ("max_queue_size", -5),
    ("max_queue_size", 1.5), ("max_queue_size", True), ("max_queue_size", float("inf")),
    ("max_queue_size", float("nan")), ("max_queue_size", [1]),
    ("max_workers", 0), ("max_workers", "many"), ("max_workers", float("inf")),
    ("max_retries", -1), ("max_retries", "x"), ("max_event_bytes", 10),
    ("timeout", -1), ("timeout", 0), ("timeout", "soon"), ("timeout", float("nan")),
    ("timeout", float("inf")), ("timeout", {}),
    ("shutdown_timeout", -1), ("shutdown_timeout", "later"), ("retry_budget", "x"),
    ("backoff_base", -0.5), ("backoff_max", "y"),
    ("context", "mobile"), ("context", 5), ("endpoint", "ftp://example.com/x"),
    ("endpoint", "not a url"), ("endpoint", 5), ("sync", "maybe"), ("sync", 2),
    ("enabled", "perhaps"), ("on_error", "ext://no_such_module_xyz.func"), ("on_error", 42),
    ("on_error", "ext://json.nonexistent"), ("before_send", 3.5),
    ("prefix", ""), ("prefix", 5), ("events", 5), ("events", [1, 2]), ("name_key", ""),
    ("name_key", 7), ("field_map", "uid=user_id"), ("field_map", {"uid": 1}),
    ("headers", {"X-A": 1}), ("headers", "X-A: 1"), ("device_id", 5), ("session_id", []),
    ("privacy_filter", "sometimes"), ("filter_keys", 5), ("exclude_keys", [None]),
    ("project_id", 123), ("max_queue", 10),
]


def _mentions(exc: BaseException, key: str) -> bool:
    texts = []
    while exc is not None:
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return any(key in t for t in texts)


@pytest.mark.parametrize(("key", "value"), BAD_CONFIG, ids=[f"{k}={v!r}"[:40] for k, v in
                                                             BAD_CONFIG])
def test_bad_configuration_raises_value_error_naming_the_key(key: str, value: Any) -> None:
    options = {"project_id": PROJECT, "endpoint": "http://127.0.0.1:9/api/v1/event", key: value}
    for build in (
        lambda: overcentric_logging.Client(**options),
        lambda: overcentric_logging.OvercentricHandler(**options),
        lambda: overcentric_logging.OvercentricProcessor(**options),
    ):
        with pytest.raises(ValueError) as info:
            build()
        assert key in str(info.value), str(info.value)


CONFIG_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.binary(max_size=8),
    st.lists(st.integers() | st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
    st.builds(object),
    st.sampled_from(["ext://os.getcwd", "ext://", "website"]),
)
CONFIG_KEYS = sorted({k for k, _ in BAD_CONFIG} - {"max_queue", "project_id", "endpoint"})


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(CONFIG_KEYS), value=CONFIG_VALUES)
def test_any_configuration_value_is_accepted_or_named(key: str, value: Any) -> None:
    try:
        client = overcentric_logging.Client(
            project_id=PROJECT, endpoint="http://127.0.0.1:9/api/v1/event", **{key: value})
    except ValueError as exc:
        assert key in str(exc), (key, str(exc))
    else:
        client.close(timeout=0)


def test_bad_configuration_through_dictconfig_names_the_key() -> None:
    # dictConfig closes every existing handler in the process: run it in a fresh interpreter.
    cases = [(k, v) for k, v in BAD_CONFIG if isinstance(v, (str, int, float, list, dict))
             and not (isinstance(v, float) and not math.isfinite(v))]
    code = textwrap.dedent(
        """
        import json, logging.config, sys
        cases = json.loads(sys.stdin.read())
        out = []
        for key, value in cases:
            handler = {"class": "overcentric_logging.OvercentricHandler",
                       "project_id": "proj_test",
                       "endpoint": "http://127.0.0.1:9/api/v1/event", key: value}
            try:
                logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                           "handlers": {"oc": handler}})
            except ValueError as exc:
                texts = []
                e = exc
                while e is not None:
                    texts.append(type(e).__name__ + ": " + str(e))
                    e = e.__cause__ or e.__context__
                out.append([key, "ValueError", texts])
            except BaseException as exc:
                out.append([key, type(exc).__name__, [str(exc)]])
            else:
                out.append([key, "accepted", []])
        print(json.dumps(out))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(cases)
    # dictConfig resolves "ext://" itself, before the handler sees the value: its message
    # names the path that failed to import rather than our key.
    wrong = [(key, kind, texts) for (key, value), (_, kind, texts) in zip(cases, results)
             if kind != "ValueError" or not any(
                 key in t or (str(value).startswith("ext://") and str(value)[6:] in t)
                 for t in texts)]
    assert wrong == [], wrong

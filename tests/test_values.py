"""Tests for overcentric_logging.values: JSON-safe conversion, the deny-list and event encoding."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from unittest.mock import MagicMock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overcentric_logging.values import (
    CIRCULAR,
    DEFAULT_DENY_KEYS,
    FILTERED,
    MAX_DEPTH,
    TRUNCATED,
    TRUNCATION_SUFFIX,
    compile_deny,
    encode,
    is_denied_key,
    looks_like_card_number,
    normalize_key,
    to_json_safe,
)

DENY = compile_deny(DEFAULT_DENY_KEYS)
VISA = "4111111111111111"
MASTERCARD = "5555555555554444"
AMEX = "378282246310005"


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


# --- scalar conversions ------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    WHEN = dt.date(2024, 5, 1)


class Level(enum.IntEnum):
    HIGH = 3


class Mode(str, enum.Enum):
    FAST = "fast"


class Outer(enum.Enum):
    INNER = Color.RED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (False, False),
        (0, 0),
        (-7, -7),
        (1.5, 1.5),
        ("text", "text"),
        (dt.datetime(2024, 5, 1, 12, 30, 5, 123), "2024-05-01T12:30:05.000123"),
        (
            dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc),
            "2024-05-01T12:30:00+00:00",
        ),
        (dt.date(2024, 5, 1), "2024-05-01"),
        (dt.time(8, 15, 30), "08:15:30"),
        (dt.timedelta(minutes=1, milliseconds=500), 60.5),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
        (Color.RED, "red"),
        (Color.WHEN, "2024-05-01"),
        (Level.HIGH, 3),
        (Mode.FAST, "fast"),
        (Outer.INNER, "red"),
        (PurePosixPath("/var/log/app.log"), "/var/log/app.log"),
        (PureWindowsPath("C:/logs/app.log"), "C:\\logs\\app.log"),
        (Path("relative/file.txt"), str(Path("relative/file.txt"))),
        (b"caf\xc3\xa9", "café"),
        (bytearray(b"abc"), "abc"),
        (memoryview(b"xyz"), "xyz"),
        (b"\xff\xfeok", "\ufffd\ufffdok"),
        (float("nan"), None),
        (float("inf"), None),
        (float("-inf"), None),
        (2**63 - 1, 2**63 - 1),
        (-(2**63 - 1), -(2**63 - 1)),
        (2**63, str(2**63)),
        (-(2**64), str(-(2**64))),
        (1 + 2j, "(1+2j)"),
    ],
)
def test_scalar_conversions(value: object, expected: object) -> None:
    result = to_json_safe(value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("9.99"), 9.99),
        (Decimal("10"), 10),
        (Decimal("-3"), -3),
        (Decimal("1E+2"), 100),
        (Decimal("10.0"), 10.0),
        (Decimal("1E+30"), 1e30),
        (Decimal("NaN"), None),
        (Decimal("sNaN"), None),
        (Decimal("Infinity"), None),
        (Decimal("-Infinity"), None),
        (Decimal("1E+400"), "1E+400"),
        (Decimal("1E+999999999"), "1E+999999999"),
        (Decimal("1E-999999999"), 0.0),
    ],
)
def test_decimal(value: Decimal, expected: object) -> None:
    result = to_json_safe(value)
    assert result == expected
    assert type(result) is type(expected)


def test_huge_int_beyond_str_limit_becomes_marker() -> None:
    result = to_json_safe(10**5000)
    assert isinstance(result, str)
    assert result.startswith("[int ~") and result.endswith(" digits]")
    assert to_json_safe(-(10**5000)).startswith("[int -~")


def test_bool_is_not_turned_into_int() -> None:
    assert to_json_safe({"a": True, "b": [False]}) == {"a": True, "b": [False]}
    assert to_json_safe([True])[0] is True


def test_subclasses_of_builtins_become_plain_values() -> None:
    class MyStr(str):
        def __str__(self) -> str:
            return "wrong"

    class MyInt(int):
        def __int__(self) -> int:
            return 0

    class MyFloat(float):
        pass

    result = to_json_safe([MyStr("abc"), MyInt(5), MyFloat("nan"), MyFloat(2.5)])
    assert result == ["abc", 5, None, 2.5]
    assert [type(x) for x in result] == [str, int, type(None), float]


def test_class_objects_are_repr() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    assert to_json_safe(Point) == repr(Point)
    assert to_json_safe(int) == "<class 'int'>"


# --- containers -------------------------------------------------------------------------------


def test_sequences_become_lists() -> None:
    assert to_json_safe((1, "a", None)) == [1, "a", None]
    assert sorted(to_json_safe({3, 1, 2})) == [1, 2, 3]
    assert to_json_safe(frozenset({"x"})) == ["x"]
    assert to_json_safe(deque([1, 2])) == [1, 2]
    assert to_json_safe({"a": 1}.keys()) == ["a"]
    assert to_json_safe({"a": 1}.values()) == [1]
    assert to_json_safe({"a": 1}.items()) == [["a", 1]]
    assert to_json_safe([(1, 2), {3}]) == [[1, 2], [3]]


def test_generators_are_not_consumed() -> None:
    consumed: list[int] = []

    def gen() -> Iterator[int]:
        consumed.append(1)
        yield 1

    g = gen()
    result = to_json_safe({"g": g, "r": range(3)})
    assert consumed == []
    assert result["g"].startswith("<generator object")
    assert result["r"] == "range(0, 3)"
    assert next(g) == 1


def test_non_str_keys_become_strings() -> None:
    class BadStr:
        def __str__(self) -> str:
            raise RuntimeError("no str")

        def __repr__(self) -> str:
            return "BadStr()"

    class Hopeless:
        def __str__(self) -> str:
            raise RuntimeError("no str")

        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    result = to_json_safe(
        {5: "a", (1, 2): "b", None: "c", True: "d", 2**70: "e", BadStr(): "f", Hopeless(): "g"}
    )
    assert result == {
        "5": "a",
        "(1, 2)": "b",
        "None": "c",
        "True": "d",
        str(2**70): "e",
        "BadStr()": "f",
        "<unrepresentable Hopeless>": "g",
    }
    assert all(type(k) is str for k in result)


def test_custom_mapping_and_ordered_dict() -> None:
    class Frozen(Mapping[str, Any]):
        def __init__(self, data: dict[str, Any]) -> None:
            self._data = data

        def __getitem__(self, key: str) -> Any:
            return self._data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    assert to_json_safe(Frozen({"when": dt.date(2020, 1, 2)})) == {"when": "2020-01-02"}
    assert to_json_safe(OrderedDict(b=1, a=2)) == {"b": 1, "a": 2}


def test_input_is_not_mutated_and_output_is_a_copy() -> None:
    inner = [1, float("nan")]
    data = {"inner": inner, "d": dt.date(2020, 1, 1)}
    result = to_json_safe(data)
    assert result == {"inner": [1, None], "d": "2020-01-01"}
    assert data["inner"] is inner and inner[1] != inner[1]
    assert result["inner"] is not inner
    flat = {"a": 1}
    assert to_json_safe(flat) is not flat


@dataclasses.dataclass
class Address:
    city: str
    since: dt.date


@dataclasses.dataclass
class User:
    name: str
    address: Address
    tags: tuple[str, ...] = ()
    password: str = "hunter2"
    friends: list[User] = dataclasses.field(default_factory=list)


def test_dataclass_instances_become_dicts() -> None:
    user = User("ann", Address("Oslo", dt.date(2020, 1, 1)), tags=("a", "b"))
    assert to_json_safe(user) == {
        "name": "ann",
        "address": {"city": "Oslo", "since": "2020-01-01"},
        "tags": ["a", "b"],
        "password": "hunter2",
        "friends": [],
    }
    assert to_json_safe(user, DENY)["password"] == FILTERED


def test_cyclic_dataclass_is_cut() -> None:
    user = User("ann", Address("Oslo", dt.date(2020, 1, 1)))
    user.friends.append(user)
    result = to_json_safe(user)
    assert result["friends"] == [CIRCULAR]
    dumps(result)


def test_unreadable_dataclass_field() -> None:
    user = User("ann", Address("Oslo", dt.date(2020, 1, 1)))
    del user.name
    result = to_json_safe(user)
    assert result["name"] == "<unreadable name>"
    assert result["address"]["city"] == "Oslo"


def test_pydantic_style_objects() -> None:
    class V2:
        def model_dump(self) -> dict[str, Any]:
            return {"when": dt.date(2021, 3, 4), "secret": "s"}

    class V1:
        def dict(self) -> dict[str, Any]:
            return {"n": Decimal("1.5")}

    class NotAModel:
        def dict(self) -> str:
            return "nope"

        def __repr__(self) -> str:
            return "NotAModel()"

    assert to_json_safe(V2()) == {"when": "2021-03-04", "secret": "s"}
    assert to_json_safe(V2(), DENY) == {"when": "2021-03-04", "secret": FILTERED}
    assert to_json_safe(V1()) == {"n": 1.5}
    assert to_json_safe(NotAModel()) == "NotAModel()"


def test_real_pydantic_model() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Plan(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        name: str
        price: Decimal
        starts: dt.datetime

    plan = Plan(name="pro", price=Decimal("9.99"), starts=dt.datetime(2024, 1, 1))
    assert to_json_safe({"plan": plan}) == {
        "plan": {"name": "pro", "price": 9.99, "starts": "2024-01-01T00:00:00"}
    }


def test_numpy_style_duck_typing() -> None:
    class Scalar:
        def item(self) -> float:
            return 2.5

    class Array:
        def tolist(self) -> list[Any]:
            return [[1, 2], [float("inf"), 4]]

        def item(self) -> float:
            raise ValueError("more than one element")

    assert to_json_safe(Scalar()) == 2.5
    assert to_json_safe({"a": Array()}) == {"a": [[1, 2], [None, 4]]}


def test_real_numpy() -> None:
    np = pytest.importorskip("numpy")
    result = to_json_safe(
        {
            "i": np.int64(7),
            "f": np.float32(0.5),
            "nan": np.float64("nan"),
            "b": np.bool_(True),
            "arr": np.arange(4).reshape(2, 2),
            "empty": np.array([]),
        }
    )
    assert result == {
        "i": 7,
        "f": 0.5,
        "nan": None,
        "b": True,
        "arr": [[0, 1], [2, 3]],
        "empty": [],
    }
    assert type(result["i"]) is int and type(result["b"]) is bool


def test_everything_else_is_repr() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing 1>"

    assert to_json_safe(Thing()) == "<Thing 1>"
    assert to_json_safe({"t": Thing()}) == {"t": "<Thing 1>"}


# --- hostile objects --------------------------------------------------------------------------


class Boom(Exception):
    pass


class Hostile:
    """Every dunder and duck-typed method raises."""

    def __repr__(self) -> str:
        raise Boom

    def __str__(self) -> str:
        raise Boom

    def __eq__(self, other: object) -> bool:
        raise Boom

    def __hash__(self) -> int:
        raise Boom

    def __iter__(self) -> Iterator[Any]:
        raise Boom

    def __len__(self) -> int:
        raise Boom

    def __bool__(self) -> bool:
        raise Boom

    def model_dump(self) -> dict[str, Any]:
        raise Boom


class HostileDuck:
    def tolist(self) -> list[Any]:
        raise Boom

    def __repr__(self) -> str:
        return "HostileDuck()"


class ItemOnly:
    def item(self) -> Any:
        raise Boom


class SelfReturning:
    """tolist() returns itself forever: the unwrap loop must stop."""

    def tolist(self) -> SelfReturning:
        return self

    def __repr__(self) -> str:
        return "SelfReturning()"


class BadClassAttr:
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise Boom

    def __repr__(self) -> str:
        return "BadClassAttr()"


class BrokenMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise Boom

    def __iter__(self) -> Iterator[str]:
        yield "a"
        raise Boom

    def __len__(self) -> int:
        return 2

    def items(self) -> Any:
        def gen() -> Iterator[tuple[str, int]]:
            yield ("ok", 1)
            raise Boom

        return gen()


class NonPairMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        return 1

    def __iter__(self) -> Iterator[str]:
        return iter(["a"])

    def __len__(self) -> int:
        return 1

    def items(self) -> Any:
        return iter([("good", 1), "not a pair", ("after", 2)])


def test_hostile_objects_never_raise() -> None:
    name = "<unrepresentable Hostile>"
    result = to_json_safe(
        {
            "hostile": Hostile(),
            "duck": HostileDuck(),
            "item": ItemOnly(),
            "self": SelfReturning(),
            "cls": BadClassAttr(),
            "list": [Hostile(), 1],
        },
        DENY,
    )
    assert result["hostile"] == name
    assert result["duck"] == "HostileDuck()"
    assert result["item"].startswith("<")
    assert result["self"] == "SelfReturning()"
    assert result["cls"] == "BadClassAttr()"
    assert result["list"] == [name, 1]
    dumps(result)
    assert to_json_safe(Hostile()) == name


def test_mock_objects_answer_every_method_but_end_as_repr() -> None:
    mock = MagicMock(name="client")
    result = to_json_safe({"m": mock})
    assert result["m"].startswith("<MagicMock name='client'")


def test_hostile_mappings_keep_what_they_gave() -> None:
    assert to_json_safe({"m": BrokenMapping()}) == {"m": {"ok": 1}}
    assert to_json_safe(NonPairMapping()) == {"good": 1}


def test_hostile_keys() -> None:
    class EqBoom:
        def __eq__(self, other: object) -> bool:
            raise Boom

        __hash__ = object.__hash__

        def __str__(self) -> str:
            return "eqboom"

    result = to_json_safe({EqBoom(): 1, "password": 2}, DENY)
    assert result == {"eqboom": 1, "password": FILTERED}


def test_huge_string_passes_through_untouched() -> None:
    big = "x" * 5_000_000
    result = to_json_safe({"big": big, "nested": [big]}, DENY)
    assert result["big"] is big
    assert result["nested"][0] is big


# --- cycles, depth, size ---------------------------------------------------------------------


def test_self_containing_list_and_dict() -> None:
    lst: list[Any] = [1]
    lst.append(lst)
    assert to_json_safe(lst) == [1, CIRCULAR]
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    assert to_json_safe(d) == {"a": 1, "self": CIRCULAR}
    assert to_json_safe({"outer": d}) == {"outer": {"a": 1, "self": CIRCULAR}}


def test_mutual_cycle() -> None:
    a: dict[str, Any] = {}
    b: dict[str, Any] = {"a": a}
    a["b"] = b
    assert to_json_safe(a) == {"b": {"a": CIRCULAR}}


def test_shared_reference_is_not_a_cycle() -> None:
    shared = {"x": 1}
    assert to_json_safe({"one": shared, "two": [shared, shared]}) == {
        "one": {"x": 1},
        "two": [{"x": 1}, {"x": 1}],
    }


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, (list, dict)) and value:
        value = value[0] if isinstance(value, list) else next(iter(value.values()))
        depth += 1
    return depth


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_ten_thousand_levels(kind: str) -> None:
    value: Any = "bottom"
    for _ in range(10_000):
        value = [value] if kind == "list" else {"k": value}
    result = to_json_safe(value)
    assert _depth(result) == 20
    leaf = result
    for _ in range(19):
        leaf = leaf[0] if kind == "list" else leaf["k"]
    assert leaf == ([MAX_DEPTH] if kind == "list" else {"k": MAX_DEPTH})
    dumps(result)
    # A huge max_depth is capped so that json can still serialise the result.
    dumps(to_json_safe(value, max_depth=1_000_000))
    assert encode({"event": {"properties": {"v": value}}}, 65536) is not None


def test_max_depth_parameter() -> None:
    assert to_json_safe({"a": {"b": {"c": 1}}}, max_depth=2) == {"a": {"b": MAX_DEPTH}}
    assert to_json_safe({"a": [1]}, max_depth=1) == {"a": MAX_DEPTH}
    assert to_json_safe({"a": 1}, max_depth=0) == MAX_DEPTH
    assert to_json_safe(5, max_depth=0) == 5


def test_max_items_budget() -> None:
    result = to_json_safe({"xs": list(range(100_000))}, max_items=1000)
    assert result["xs"][-1] == TRUNCATED
    assert len(result["xs"]) < 1002
    assert result["xs"][:3] == [0, 1, 2]


# --- deny-list --------------------------------------------------------------------------------


def test_compile_deny_off() -> None:
    assert compile_deny(None) is None
    assert compile_deny([]) is None
    assert compile_deny(["", "  "]) is None
    assert to_json_safe({"password": "x", "card": VISA}, None) == {"password": "x", "card": VISA}


def test_compile_deny_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        compile_deny(["password", 3])  # type: ignore[list-item]


def test_compile_deny_single_string_is_one_term() -> None:
    deny = compile_deny("password")
    assert is_denied_key("user_password", deny)
    assert not is_denied_key("a", deny)


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "user_password",
        "PASSWORD",
        "Passwd",
        "pwd",
        "mysql_pwd",
        "secret",
        "client_secret",
        "secretKey",
        "token",
        "access_token",
        "accessToken",
        "refresh-token",
        "session_token",
        "csrftoken",
        "id_token",
        "api_key",
        "X-Api-Key",
        "apiKey",
        "myAPIKey",
        "APIKEY",
        "auth",
        "x-auth",
        "basic_auth",
        "auth_token",
        "AUTHORIZATION",
        "Authorization",
        "cookie",
        "Set-Cookie",
        "credentials",
        "credit_card",
        "creditCard",
        "card_number",
        "cardNumber",
        "cvv",
        "CVV2",
        "ssn",
        "userSSN",
        "private_key",
        "user pin",
        "jwt",
        "user.password",
    ],
)
def test_denied_keys(key: str) -> None:
    assert is_denied_key(key, DENY)
    assert to_json_safe({key: "v", "plan": "pro"}, DENY) == {key: FILTERED, "plan": "pro"}


@pytest.mark.parametrize(
    "key",
    [
        "author",
        "authors",
        "authority",
        "auth_method",
        "auth_provider",
        "tokens_used",
        "max_tokens",
        "prompt_tokens",
        "prompt_token_count",
        "total_token_count",
        "tokenizer",
        "token_type",
        "secretary",
        "shipping",
        "spinner",
        "classname",
        "session_id",
        "user_id",
        "plan",
        "keyboard",
    ],
)
def test_harmless_keys(key: str) -> None:
    assert not is_denied_key(key, DENY)
    assert to_json_safe({key: "v"}, DENY) == {key: "v"}


def test_normalize_key() -> None:
    assert normalize_key("X-Api-Key") == "x_api_key"
    assert normalize_key("authToken") == "auth_token"
    assert normalize_key("user password") == "user_password"
    assert normalize_key("user.Password") == "user_password"


def test_custom_terms() -> None:
    deny = compile_deny(["ip", "internal-note"])
    assert deny is not None
    assert is_denied_key("client_ip", deny)
    assert not is_denied_key("zip", deny)
    assert is_denied_key("InternalNote", deny)
    assert not is_denied_key("password", deny)


def test_deny_applies_at_any_depth_and_to_any_value() -> None:
    data = {
        "request": {"headers": {"Authorization": "Bearer x", "Accept": "*/*"}},
        "attempts": [{"password": ["a", "b"], "ok": False}],
        "password": {"nested": "dict"},
        "Password": None,
    }
    assert to_json_safe(data, DENY) == {
        "request": {"headers": {"Authorization": FILTERED, "Accept": "*/*"}},
        "attempts": [{"password": FILTERED, "ok": False}],
        "password": FILTERED,
        "Password": FILTERED,
    }
    assert to_json_safe(data, None) == data


def test_deny_applies_to_converted_non_str_keys() -> None:
    class Key:
        def __str__(self) -> str:
            return "api_key"

    assert to_json_safe({Key(): "k", 1: "one"}, DENY) == {"api_key": FILTERED, "1": "one"}


def test_deny_cache_is_per_pattern() -> None:
    first = compile_deny(["alpha"])
    second = compile_deny(["beta"])
    assert to_json_safe({"alpha": 1, "beta": 2}, first) == {"alpha": FILTERED, "beta": 2}
    assert to_json_safe({"alpha": 1, "beta": 2}, second) == {"alpha": 1, "beta": FILTERED}


# --- card numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        VISA,
        MASTERCARD,
        AMEX,
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "3782 822463 10005",
        "2223003122003222",
        "6011111111111117",
        "4222222222222",
    ],
)
def test_card_numbers_are_filtered(text: str) -> None:
    assert looks_like_card_number(text)
    assert to_json_safe({"note": text}, DENY) == {"note": FILTERED}
    assert to_json_safe({"notes": [text]}, DENY) == {"notes": [FILTERED]}
    assert to_json_safe({"raw": text.encode()}, DENY) == {"raw": FILTERED}


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn fails
        "1234567890123452",  # Luhn-valid but no card network starts with 1
        "9999999999999995",
        "2000000000000008",  # a leading 2 outside Mastercard's 2221-2720
        "411111111111",  # too short
        "41111111111111111111",  # too long
        "4111  1111 1111 1111",  # double space
        "card 4111111111111111",
        "4111111111111111 ",
        "٤١١١١١١١١١١١١١١١",  # non-ASCII digits
    ],
)
def test_non_card_numbers_are_kept(text: str) -> None:
    assert not looks_like_card_number(text)
    assert to_json_safe({"note": text}, DENY) == {"note": text}


def test_card_filter_switches() -> None:
    assert to_json_safe({"note": VISA}, None) == {"note": VISA}
    assert to_json_safe({"note": VISA}, DENY, filter_cards=False) == {"note": VISA}
    # Integers are ids far more often than card numbers: they are kept.
    assert to_json_safe({"order": int(VISA)}, DENY) == {"order": int(VISA)}
    assert to_json_safe(VISA, DENY) == FILTERED


# --- encode -----------------------------------------------------------------------------------


def make_payload(properties: dict[str, Any], name: str = "$signup") -> dict[str, Any]:
    return {
        "event": {
            "name": name,
            "properties": properties,
            "project_id": "proj_1",
            "device_id": "dev",
            "session_id": "sess",
            "context": "product",
        },
        "identity": {"unique_identifier": "user_123", "project_id": "proj_1"},
    }


def test_encode_fits() -> None:
    payload = make_payload({"plan": "premium", "price": 9.99, "city": "Zürich"})
    data = encode(payload, 65536)
    expected = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert data == expected
    assert "Zürich".encode() in data


def test_encode_exact_limit() -> None:
    payload = make_payload({"a": "b"})
    size = len(encode(payload, 65536) or b"")
    assert encode(payload, size) is not None
    trimmed = encode(payload, size - 1)
    assert trimmed is not None and len(trimmed) <= size - 1
    assert json.loads(trimmed)["event"]["properties"] == {}


def test_encode_truncates_the_longest_string_first() -> None:
    payload = make_payload({"short": "keep me", "long": "y" * 10_000, "n": 5})
    data = encode(payload, 2000)
    assert data is not None and len(data) <= 2000
    body = json.loads(data)
    props = body["event"]["properties"]
    assert props["short"] == "keep me"
    assert props["n"] == 5
    assert props["long"].endswith(TRUNCATION_SUFFIX)
    assert props["long"].startswith("yyyy")
    assert body["event"]["name"] == "$signup"
    assert body["identity"] == payload["identity"]
    assert payload["event"]["properties"]["long"] == "y" * 10_000  # the input is left alone


def test_encode_caps_many_strings_at_a_common_length() -> None:
    props = {f"k{i}": chr(ord("a") + i) * (1000 + 100 * i) for i in range(10)}
    props["tiny"] = "t"
    data = encode(make_payload(props), 4000)
    assert data is not None and len(data) <= 4000
    out = json.loads(data)["event"]["properties"]
    assert out["tiny"] == "t"
    lengths = {len(out[f"k{i}"]) for i in range(10)}
    assert len(lengths) == 1  # water-filling: every long string ends at the same length
    assert all(out[f"k{i}"].endswith(TRUNCATION_SUFFIX) for i in range(10))


def test_encode_keeps_utf8_valid_when_cutting_multibyte_text() -> None:
    payload = make_payload({"text": 'é😀\n"\\\x01' * 5000})
    data = encode(payload, 3000)
    assert data is not None and len(data) <= 3000
    text = json.loads(data.decode("utf-8"))["event"]["properties"]["text"]
    assert text.endswith(TRUNCATION_SUFFIX)


def test_encode_replaces_large_values_when_strings_are_not_enough() -> None:
    payload = make_payload({"ids": list(range(5000)), "plan": "pro"})
    data = encode(payload, 1000)
    assert data is not None and len(data) <= 1000
    props = json.loads(data)["event"]["properties"]
    assert props == {"ids": TRUNCATED, "plan": "pro"}


def test_encode_spares_strings_when_a_rigid_value_must_go_anyway() -> None:
    payload = make_payload({"ids": list(range(5000)), "text": "z" * 800})
    data = encode(payload, 1500)
    assert data is not None and len(data) <= 1500
    assert json.loads(data)["event"]["properties"] == {"ids": TRUNCATED, "text": "z" * 800}


def test_encode_drops_huge_keys() -> None:
    payload = make_payload({"k" * 5000: 1, "plan": "pro"})
    data = encode(payload, 1000)
    assert data is not None and len(data) <= 1000
    assert json.loads(data)["event"]["properties"] == {"plan": "pro"}


def test_encode_returns_none_when_even_empty_properties_do_not_fit() -> None:
    assert encode(make_payload({"a": 1}, name="$" + "n" * 5000), 1000) is None
    assert encode(make_payload({}), 10) is None
    assert encode({"event": {"name": "x" * 100}}, 50) is None
    assert encode(make_payload({"a": 1}), 0) is None


def test_encode_sanitises_unsafe_payloads() -> None:
    payload = make_payload({"nan": float("nan"), "when": dt.date(2020, 1, 1)})
    data = encode(payload, 65536)
    assert data is not None
    assert json.loads(data)["event"]["properties"] == {"nan": None, "when": "2020-01-01"}
    cyclic = make_payload({})
    cyclic["event"]["properties"]["me"] = cyclic
    data = encode(cyclic, 65536)
    assert data is not None
    assert json.loads(data)["event"]["properties"]["me"] == CIRCULAR


def test_encode_lone_surrogates() -> None:
    data = encode(make_payload({"bad": "a\ud800b"}), 65536)
    assert data is not None
    assert json.loads(data.decode("utf-8"))["event"]["properties"]["bad"] == "a?b"


def test_encode_never_raises_on_garbage() -> None:
    assert encode({"event": Hostile()}, 1000) == b'{"event":"<unrepresentable Hostile>"}'
    assert encode(Hostile(), 1000) is None  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(max_size=40),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.datetimes(),
    st.uuids(),
    st.sampled_from([VISA, "4111 1111 1111 1111", Color.RED, Level.HIGH]),
    st.builds(lambda: 10**5000),  # built lazily: hypothesis cannot repr it in a sampled_from
)
keys = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.booleans(),
    st.none(),
    st.sampled_from(["password", "X-Api-Key", "tokens_used", "author"]),
)
nested = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=6),
        st.frozensets(st.one_of(st.integers(), st.text(max_size=5)), max_size=4),
    ),
    max_leaves=30,
)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(nested, st.booleans())
def test_any_value_becomes_valid_json(value: Any, with_deny: bool) -> None:
    result = to_json_safe(value, DENY if with_deny else None)
    text = dumps(result)
    assert json.loads(text) == result


@SETTINGS
@given(nested)
def test_conversion_is_idempotent(value: Any) -> None:
    once = to_json_safe(value, DENY)
    assert to_json_safe(once, DENY) == once


@SETTINGS
@given(
    st.dictionaries(keys, nested, max_size=8),
    st.integers(min_value=0, max_value=3000),
    st.text(max_size=300),
)
def test_encode_output_is_bounded_json(props: dict[Any, Any], max_bytes: int, name: str) -> None:
    payload = make_payload(to_json_safe(props, DENY), name=name)
    data = encode(payload, max_bytes)
    if data is None:
        return
    assert len(data) <= max_bytes
    body = json.loads(data.decode("utf-8"))
    assert body["event"]["name"] == name.encode("utf-8", "replace").decode("utf-8")
    assert body["event"]["project_id"] == "proj_1"
    assert isinstance(body["event"]["properties"], dict)


no_surrogates = st.text(st.characters(codec="utf-8"), max_size=50)


@SETTINGS
@given(st.dictionaries(no_surrogates, no_surrogates, max_size=5))
def test_encode_of_small_events_is_lossless(props: dict[str, str]) -> None:
    data = encode(make_payload(props), 65536)
    assert data is not None
    assert json.loads(data)["event"]["properties"] == props

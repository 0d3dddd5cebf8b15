"""Tests of the request-body checker and the reserved-name typo helper."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overcentric_logging.schema import (
    CONTEXTS,
    EVENT_FIELDS,
    IDENTITY_FIELDS,
    RESERVED_NAMES,
    closest_reserved,
    validate_payload,
)


def full_body() -> dict[str, Any]:
    """The example body from the API documentation, every field present."""
    return {
        "event": {
            "name": "$subscription_purchase",
            "properties": {"plan": "premium", "price": 9.99, "tags": ["a", None, True]},
            "project_id": "your-project-id",
            "device_id": "grab-from-client",
            "session_id": "grab-from-client",
            "context": "product",
            "url": "https://app.example.com/checkout/success",
            "hostname": "app.example.com",
        },
        "identity": {
            "unique_identifier": "user_123",
            "email": "user@example.com",
            "name": "Name Lastname",
            "project_id": "your-project-id",
        },
    }


def minimal_body() -> dict[str, Any]:
    return {
        "event": {
            "name": "document_created",
            "project_id": "p",
            "device_id": "d",
            "session_id": "s",
            "context": "website",
        }
    }


def test_constants_match_the_documentation() -> None:
    assert {
        "$signup", "$login", "$subscription_purchase", "$subscription_upgrade",
        "$subscription_downgrade", "$subscription_cancel",
    } == RESERVED_NAMES
    assert {"website", "product"} == CONTEXTS
    assert set(full_body()["event"]) == EVENT_FIELDS
    assert set(full_body()["identity"]) == IDENTITY_FIELDS


@pytest.mark.parametrize("build", [full_body, minimal_body])
def test_valid_bodies_have_no_problems(build: Callable[[], dict[str, Any]]) -> None:
    assert validate_payload(build()) == []


def test_optional_parts_may_be_left_out() -> None:
    body = full_body()
    for key in ("properties", "url", "hostname"):
        del body["event"][key]
    del body["identity"]["email"], body["identity"]["name"]
    assert validate_payload(body) == []
    body["event"]["properties"] = {}
    assert validate_payload(body) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = body
        for part in parents:
            target = target[part]
        target[last] = value
    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = body
        for part in parents:
            target = target[part]
        del target[last]
    return mutate


BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("no event", _delete("event"), "event: required field is missing"),
    ("event not object", _set("event", ["x"]), "event: must be an object (got array)"),
    ("unknown top-level key", _set("user", {}), "user: unknown field"),
    *(
        (f"no {key}", _delete(f"event.{key}"), f"event.{key}: required field is missing")
        for key in ("name", "project_id", "device_id", "session_id", "context")
    ),
    *(
        (f"empty {key}", _set(f"event.{key}", ""), f"event.{key}: must be a non-empty string")
        for key in ("name", "project_id", "device_id", "session_id")
    ),
    *(
        (f"{key} not str", _set(f"event.{key}", 7), f"event.{key}: must be a string (got number)")
        for key in ("name", "project_id", "device_id", "session_id", "url", "hostname")
    ),
    ("url null", _set("event.url", None), "event.url: must be a string (got null)"),
    ("context other", _set("event.context", "backend"), "event.context: must be exactly"),
    ("context case", _set("event.context", "Product"), "event.context: must be exactly"),
    ("context list", _set("event.context", ["product"]), "event.context: must be exactly"),
    ("properties list", _set("event.properties", [1]),
     "event.properties: must be an object (got array)"),
    ("properties null", _set("event.properties", None),
     "event.properties: must be an object (got null)"),
    ("unknown event key", _set("event.timestamp", "now"), "event.timestamp: unknown field"),
    ("identity not object", _set("identity", "user_123"),
     "identity: must be an object when present (got string)"),
    ("identity null", _set("identity", None), "identity: must be an object when present"),
    ("no unique_identifier", _delete("identity.unique_identifier"),
     "identity.unique_identifier: required field is missing"),
    ("empty unique_identifier", _set("identity.unique_identifier", ""),
     "identity.unique_identifier: must be a non-empty string"),
    ("numeric unique_identifier", _set("identity.unique_identifier", 123),
     "identity.unique_identifier: must be a string (got number)"),
    ("email not str", _set("identity.email", ["a@b"]), "identity.email: must be a string"),
    ("name null", _set("identity.name", None), "identity.name: must be a string (got null)"),
    ("identity no project", _delete("identity.project_id"),
     "identity.project_id: required field is missing"),
    ("identity project differs", _set("identity.project_id", "other"),
     "identity.project_id: must equal event.project_id"),
    ("identity project not str", _set("identity.project_id", 1),
     "identity.project_id: must be a string"),
    ("unknown identity key", _set("identity.phone", "555"), "identity.phone: unknown field"),
]


@pytest.mark.parametrize(("mutate", "expected"), [(m, e) for _, m, e in BROKEN],
                         ids=[name for name, _, _ in BROKEN])
def test_each_rule_is_reported(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    body = full_body()
    mutate(body)
    problems = validate_payload(body)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


@pytest.mark.parametrize("obj", [None, [], "event", 3, b"{}"])
def test_non_object_body(obj: object) -> None:
    [problem] = validate_payload(obj)
    assert problem.startswith("body: must be a JSON object")


def test_all_problems_are_listed_at_once() -> None:
    problems = validate_payload({"event": {}, "identity": {}})
    assert len(problems) == 7  # five event fields, two identity fields
    assert all(": required field is missing" in p for p in problems)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), "event.properties.v: nan is not a valid JSON number"),
        (float("inf"), "event.properties.v: inf is not a valid JSON number"),
        ((1, 2), "event.properties.v: tuple is not a JSON type"),
        ({1, 2}, "event.properties.v: set is not a JSON type"),
        (object(), "event.properties.v: object is not a JSON type"),
        ({1: "x"}, "event.properties.v: key 1 is not a string"),
        ([0, [float("-inf")]], "event.properties.v[1][0]: -inf is not a valid JSON number"),
    ],
)
def test_properties_must_be_plain_json(value: object, expected: str) -> None:
    body = minimal_body()
    body["event"]["properties"] = {"v": value}
    assert validate_payload(body) == [expected]


def test_cycles_and_deep_nesting_are_reported_not_raised() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    body = minimal_body()
    body["event"]["properties"] = {"c": cyclic}
    [problem] = validate_payload(body)
    assert "refers back to itself" in problem

    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    body["event"]["properties"] = {"d": deep}
    [problem] = validate_payload(body)
    assert "nested more than" in problem


def test_shared_subobjects_are_not_cycles() -> None:
    shared = {"a": 1}
    body = minimal_body()
    body["event"]["properties"] = {"x": shared, "y": [shared, shared]}
    assert validate_payload(body) == []


def test_problem_list_is_capped() -> None:
    body = minimal_body()
    body["event"]["properties"] = {f"k{i}": float("nan") for i in range(500)}
    problems = validate_payload(body)
    assert len(problems) == 51
    assert problems[-1].startswith("... and at least")


def test_validation_does_not_modify_the_body() -> None:
    body = full_body()
    before = copy.deepcopy(body)
    validate_payload(body)
    assert body == before


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["event", "identity", "x"]), _json, max_size=3),
       event=st.dictionaries(st.sampled_from(sorted(EVENT_FIELDS | {"y"})), _json, max_size=9))
def test_never_raises_and_always_returns_strings(body: dict[str, Any],
                                                 event: dict[str, Any]) -> None:
    for candidate in (body, {**body, "event": event}):
        problems = validate_payload(candidate)
        assert all(isinstance(p, str) and p for p in problems)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("$sigup", "$signup"),
        ("$SignUp", "$signup"),
        ("signup", "$signup"),
        ("$log_in", "$login"),
        ("$subscription-purchase", "$subscription_purchase"),
        ("$subscription_purchased", "$subscription_purchase"),
        ("$subscripton_upgrade", "$subscription_upgrade"),
        ("$purchase", "$subscription_purchase"),
        ("$downgrade", "$subscription_downgrade"),
        ("$cancel", "$subscription_cancel"),
    ],
)
def test_closest_reserved_suggests_the_intended_name(name: str, expected: str) -> None:
    assert closest_reserved(name) == expected


@pytest.mark.parametrize("name", [*sorted(RESERVED_NAMES), "$page_view", "document_created",
                                  "$", "", "$x"])
def test_closest_reserved_is_none_for_reserved_or_unrelated(name: str) -> None:
    assert closest_reserved(name) is None

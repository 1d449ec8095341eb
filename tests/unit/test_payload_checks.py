"""Payload checks (payloads.py), without a server: the shape of the tree
(depth, cycles, string keys), what JSON and PostgreSQL cannot hold, the size
limit, and the strict JSON types of payload classes. What reaches
PostgreSQL (nothing written on refusal, a stored row of the wrong type) is in
tests/test_payloads.py."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Literal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pmq_core import PayloadError
from pmq_core.payloads import MAX_DEPTH, structure, to_json


def nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` deep: ``{"a": {"a": ... {}}}``."""
    payload: dict[str, Any] = {}
    for _ in range(levels - 1):
        payload = {"a": payload}
    return payload


def check(payload: Any, payload_class: type | None = None, limit: int = 1 << 20) -> str:
    return to_json(payload, queue="q", payload_class=payload_class, limit=limit)


def refused(payload: Any, payload_class: type | None = None, limit: int = 1 << 20) -> str:
    with pytest.raises(PayloadError) as info:
        check(payload, payload_class, limit)
    return str(info.value)


# -- the tree ---------------------------------------------------------------------


def test_depth_is_counted_from_the_object_itself_and_arrays_count_too():
    assert json.loads(check(nested(MAX_DEPTH))) == nested(MAX_DEPTH)
    assert "nested more than 32 levels deep" in refused(nested(MAX_DEPTH + 1))
    listed: Any = {}
    for _ in range(MAX_DEPTH - 1):
        listed = [listed]
    assert check({"l": listed[0]}).startswith('{"l":[')
    assert "payload.l[0][0]" in refused({"l": listed})


def test_a_payload_far_too_deep_is_refused_without_recursion_error():
    message = refused(nested(10_000))
    assert "nested more than 32 levels deep" in message and len(message) < 300


def test_a_payload_that_contains_itself_is_refused_with_its_path():
    loop: dict[str, Any] = {"ok": 1, "inner": {}}
    loop["inner"]["back"] = loop
    assert "payload.inner.back contains itself" in refused(loop)
    listed: list[Any] = []
    listed.append(listed)
    assert "payload.l[0] contains itself" in refused({"l": listed})
    shared = {"x": 1}
    assert check({"a": shared, "b": shared}) == '{"a":{"x":1},"b":{"x":1}}'  # shared, not a cycle


@pytest.mark.parametrize(("payload", "where"), [
    ({1: "a", "1": "b"}, "payload has the key 1"),
    ({"a": {"b": [{None: 1}]}}, "payload.a.b[0] has the key None"),
    ({"a": {(1, 2): 1}}, "payload.a has the key (1, 2)"),
    ({"odd key": {2.5: 1}}, "payload['odd key'] has the key 2.5"),
])
def test_keys_that_are_not_strings_are_refused_at_any_depth(payload, where):
    message = refused(payload)
    assert where in message and "not a string" in message


def test_keys_that_are_not_strings_are_refused_with_a_payload_class_too():
    @attrs.frozen
    class Loose:
        data: dict[str, Any]

    assert "payload.data has the key 1" in refused({"data": {1: "a", "1": "b"}}, Loose)
    assert "payload.data has the key 1" in refused(Loose(data={1: "a"}), Loose)


# -- what JSON and PostgreSQL cannot hold, and the size limit ------------------------

#: Text PostgreSQL can store: no NUL, no lone surrogate.
storable_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters=["\x00"]), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | storable_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(storable_text, children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(storable_text, json_values, max_size=5))
def test_a_payload_json_can_hold_comes_back_as_it_was(payload):
    assert json.loads(check(payload)) == payload


@pytest.mark.parametrize(("payload", "problem"), [
    ({"x": float("nan")}, "payload.x is NaN or infinite"),
    ({"x": [1, float("inf")]}, "payload.x[1] is NaN or infinite"),
    ({"x": "a\x00b"}, "contains a NUL character"),
    ({"x": {1, 2}}, "not JSON-serialisable"),
    ([1, 2], "must be a JSON object (a dict), got list"),
])
def test_what_json_or_postgresql_cannot_hold_is_refused_by_name(payload, problem):
    assert problem in refused(payload)


def test_an_escaped_backslash_before_u0000_is_text_not_a_nul():
    assert json.loads(check({"x": "\\u0000"})) == {"x": "\\u0000"}


def test_the_size_limit_counts_the_encoded_bytes():
    payload = {"x": "é" * 10}  # 20 bytes of UTF-8 in 10 characters
    size = len(check(payload).encode())
    assert check(payload, limit=size)
    assert f"{size} bytes is over the limit of {size - 1} bytes" in refused(payload, limit=size - 1)


# -- payload classes are strict: one test per JSON type -------------------------------


@attrs.frozen
class Size:
    width: int
    height: int = 1


class Colour(Enum):
    RED = "red"


@attrs.frozen(kw_only=True)
class Shape:
    width: int = 1
    ratio: float = 1.0
    label: str = ""
    filled: bool = False
    note: str | None = None
    tags: list[str] = attrs.Factory(list)
    counts: dict[str, int] = attrs.Factory(dict)
    size: Size | None = None
    pair: tuple[int, str] = (0, "")
    kinds: frozenset[str] = frozenset()
    colour: Colour = Colour.RED
    mode: Literal["fast", "slow"] = "fast"


def test_an_integer_field_takes_only_integers():
    assert structure({"width": 12}, Shape).width == 12
    for bad, got in ((2.9, "a number 2.9"), (True, "a boolean True"), ("12", "a string '12'"), (None, "null")):
        assert f"expected an integer, got {got} @ payload.width" in refused({"width": bad}, Shape)


def test_a_float_field_takes_any_json_number_and_nothing_else():
    # JSON has one number type: 3 and 3.0 are the same number to most producers.
    assert structure({"ratio": 3}, Shape).ratio == 3.0 and isinstance(structure({"ratio": 3}, Shape).ratio, float)
    assert structure({"ratio": 2.5}, Shape).ratio == 2.5
    for bad in ("2.5", False, None, [1]):
        assert "expected a number" in refused({"ratio": bad}, Shape)
    assert "expected a number a float can hold" in refused({"ratio": 10**400}, Shape)


def test_a_string_field_takes_only_strings():
    assert structure({"label": "x"}, Shape).label == "x"
    for bad, got in ((5, "an integer 5"), (None, "null"), (["x"], "an array"), ({"x": 1}, "an object")):
        assert f"expected a string, got {got}" in refused({"label": bad}, Shape)


def test_a_boolean_field_takes_only_booleans():
    assert structure({"filled": True}, Shape).filled is True
    for bad in (1, 0, "true", None):
        assert "expected a boolean" in refused({"filled": bad}, Shape)


def test_null_is_taken_only_by_an_optional_field():
    assert structure({"note": None}, Shape).note is None
    assert structure({"note": "n"}, Shape).note == "n"
    assert "expected a string, got an integer 3 @ payload.note" in refused({"note": 3}, Shape)
    assert "expected a string, got null @ payload.label" in refused({"label": None}, Shape)


def test_an_array_field_takes_only_arrays_of_its_element_type():
    assert structure({"tags": ["a", "b"]}, Shape).tags == ["a", "b"]
    assert "expected an array, got a string 'ab' @ payload.tags" in refused({"tags": "ab"}, Shape)
    assert "expected an array, got an object" in refused({"tags": {"a": 1}}, Shape)
    assert "expected a string, got an integer 2 @ payload.tags[1]" in refused({"tags": ["a", 2]}, Shape)
    assert structure({"pair": [1, "x"]}, Shape).pair == (1, "x")
    assert "expected an array, got a string 'ab' @ payload.pair" in refused({"pair": "ab"}, Shape)
    assert "expected a string, got an integer 2 @ payload.pair[1]" in refused({"pair": [1, 2]}, Shape)
    assert structure({"kinds": ["a", "a"]}, Shape).kinds == frozenset({"a"})
    assert "expected an array, got a string 'ab' @ payload.kinds" in refused({"kinds": "ab"}, Shape)
    assert json.loads(check(Shape(kinds=frozenset({"a"}))))["kinds"] == ["a"]


def test_an_object_field_takes_only_objects_of_its_value_type():
    assert structure({"counts": {"a": 1}}, Shape).counts == {"a": 1}
    assert "expected an object, got an array" in refused({"counts": [["a", 1]]}, Shape)
    assert "expected an integer, got a string '1' @ payload.counts['a']" in refused({"counts": {"a": "1"}}, Shape)


def test_an_object_field_stays_strict_after_other_classes_are_structured():
    # The converter caches a hook per type; building one for a new mapping
    # type once replaced the checked hook of every mapping type seen before.
    @attrs.frozen
    class First:
        data: dict[str, float]

    @attrs.frozen
    class Later:
        data: dict[str, tuple[bool, bool, bool]]  # a mapping type no other test uses

    assert structure({"data": {"a": 1.5}}, First) == First({"a": 1.5})
    assert structure({"data": {"a": [True, False, True]}}, Later) == Later({"a": (True, False, True)})
    assert "expected an object, got an array [1] @ payload.data" in refused({"data": [1]}, First)


def test_a_nested_class_takes_only_an_object_with_its_own_strict_fields():
    assert structure({"size": {"width": 3}}, Shape).size == Size(3)
    assert "expected an object, got a string 'big' @ payload.size" in refused({"size": "big"}, Shape)
    assert "expected an integer, got a number 1.5 @ payload.size.width" in refused({"size": {"width": 1.5}}, Shape)
    assert "extra fields found (depth) @ payload.size" in refused({"size": {"width": 1, "depth": 2}}, Shape)


def test_enums_and_literals_take_only_their_values():
    assert structure({"colour": "red", "mode": "slow"}, Shape) == Shape(colour=Colour.RED, mode="slow")
    assert "payload.colour" in refused({"colour": "blue"}, Shape)
    assert "payload.mode" in refused({"mode": "medium"}, Shape)



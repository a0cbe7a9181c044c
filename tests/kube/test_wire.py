"""meshshift/kube/wire.py: JSON in C, behaving as the standard library's json where they differ."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshshift.kube import wire

# What Kubernetes objects are made of: JSON with int64 integers and finite floats.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


class Phase(StrEnum):
    PAUSED = "Paused"


@given(json_values)
def test_what_it_writes_the_standard_library_reads_as_the_same_value(value: Any) -> None:
    assert json.loads(wire.dumps(value)) == value
    assert json.loads(wire.dumps_sorted(value)) == value


@given(json_values)
def test_what_the_standard_library_writes_it_reads_as_the_same_value(value: Any) -> None:
    assert wire.loads(json.dumps(value)) == value
    assert wire.loads(json.dumps(value).encode()) == value


@given(st.dictionaries(st.text(), st.integers(), max_size=8))
def test_sorted_text_is_the_same_for_the_same_value_in_any_order(value: dict[str, int]) -> None:
    backwards = dict(reversed(list(value.items())))
    assert wire.dumps_sorted(backwards) == wire.dumps_sorted(value)
    assert json.loads(wire.dumps_sorted(value)) == value


def test_keys_that_are_not_strings_are_written_as_json_dumps_writes_them() -> None:
    keyed = {1: "a", None: "b", 2.5: "c", False: "d"}
    assert json.loads(wire.dumps(keyed)) == json.loads(json.dumps(keyed))


def test_integers_beyond_64_bits_and_str_enums_are_still_written() -> None:
    assert json.loads(wire.dumps({"big": 2**70})) == {"big": 2**70}
    assert wire.dumps_sorted({"big": 2**70, "a": 1}) == '{"a":1,"big":1180591620717411303424}'
    assert json.loads(wire.dumps({"phase": Phase.PAUSED})) == {"phase": "Paused"}


def test_what_orjson_refuses_to_read_is_read_by_the_standard_library() -> None:
    assert wire.loads("[NaN]")[0] != wire.loads("[NaN]")[0]  # NaN, as json.loads reads it
    assert wire.loads('"\\ud800"') == "\ud800"


def test_text_that_is_not_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        wire.loads(b"<html>")
    with pytest.raises(ValueError):
        wire.loads(b"")


def test_nesting_beyond_orjsons_limit_raises_as_json_loads_does() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(deep)
    with pytest.raises(RecursionError):
        wire.loads(deep)

"""meshshift/codec.py: dataclasses to plain JSON and back, driven by their type hints."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any

import pytest

from meshshift import codec
from meshshift.engine.actions import AnalysisKind
from meshshift.engine.state import (
    AnalysisRunRecord,
    PauseReason,
    RevisionRecord,
    RolloutPhase,
    RolloutState,
    Stage,
)
from meshshift.spec.model import AnalysisRef, Pause, SetWeight, Step, TemplateRef


@dataclass(frozen=True)
class Holder:
    steps: tuple[Step, ...]
    by_name: dict[str, Step]
    ratio: float = 0.0
    note: str | None = None


def a_state() -> RolloutState:
    return RolloutState(
        stable_revision="abc",
        phase=RolloutPhase.PAUSED,
        stage=Stage.STEPPING,
        canary_revision="def",
        step_index=2,
        pause_reason=PauseReason.PAUSE_STEP,
        pause_until=12.5,
        desired_weight=20,
        analysis_runs=(
            AnalysisRunRecord(
                name="run-1",
                kind=AnalysisKind.BACKGROUND,
                step_index=None,
                analysis=AnalysisRef(templates=(TemplateRef("success-rate"),)),
            ),
        ),
        handled_commands=("c1", "c2"),
        history=tuple(
            RevisionRecord(revision=f"r{i}", outcome="Promoted", started_at=float(i), finished_at=i + 0.5)
            for i in range(3)
        ),
    )


def test_a_state_comes_back_equal_through_json() -> None:
    state = a_state()
    text = json.dumps(codec.encode(state), sort_keys=True)
    assert RolloutState.from_dict(json.loads(text)) == state


def test_fields_are_camel_case_and_enums_their_values() -> None:
    encoded = codec.encode(a_state())
    assert encoded["stableRevision"] == "abc"
    assert encoded["phase"] == "Paused" and json.dumps(encoded["phase"]) == '"Paused"'
    assert encoded["pauseReason"] == "CanaryPauseStep"
    assert encoded["history"][1] == {
        "revision": "r1",
        "outcome": "Promoted",
        "startedAt": 1.0,
        "finishedAt": 1.5,
        "message": "",
        "fullPromotion": False,
        "manualPauseSeconds": 0.0,
    }


def test_a_union_of_dataclasses_is_tagged_in_sequences_and_mappings() -> None:
    holder = Holder(steps=(SetWeight(20), Pause(5.0)), by_name={"wait": Pause(None)})
    encoded = codec.encode(holder)
    assert encoded["steps"] == [{"kind": "SetWeight", "weight": 20}, {"kind": "Pause", "duration": 5.0}]
    assert encoded["byName"] == {"wait": {"kind": "Pause", "duration": None}}
    assert codec.decode(Holder, json.loads(json.dumps(encoded))) == holder


def test_a_lone_dataclass_is_not_tagged() -> None:
    assert codec.encode(SetWeight(20)) == {"weight": 20}
    assert codec.encode(SetWeight(20), Step) == {"kind": "SetWeight", "weight": 20}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_written_as_text_and_read_back(value: float) -> None:
    encoded = codec.encode(Holder(steps=(), by_name={}, ratio=value))
    assert encoded["ratio"] == repr(value)
    back = codec.decode(Holder, json.loads(json.dumps(encoded))).ratio
    assert back == value or (math.isnan(back) and math.isnan(value))


def test_the_same_class_under_different_hints_is_encoded_per_hint() -> None:
    # The encoders are worked out once per hint: a cached plain one must not leak a tag.
    assert codec.encode([SetWeight(1)], list[Step]) == [{"kind": "SetWeight", "weight": 1}]
    assert codec.encode([SetWeight(1)], list[SetWeight]) == [{"weight": 1}]
    assert codec.encode([SetWeight(1)]) == [{"weight": 1}]


def test_an_unhashable_hint_still_encodes() -> None:
    hint: Any = Annotated[list[Step], []]  # its metadata is a list: the hint cannot be a cache key
    with pytest.raises(TypeError):
        hash(hint)
    assert codec.encode([Pause(1.0)], hint) == [{"duration": 1.0}]


def test_mapping_keys_become_strings_and_tuples_lists() -> None:
    assert codec.encode({1: (2, 3)}) == {"1": [2, 3]}


def test_what_json_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError, match="cannot encode set"):
        codec.encode({"a": {1, 2}})

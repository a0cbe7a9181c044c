"""Hypothesis fuzzing of the spec parsers (issue 12.8, 12.9).

No exception but the documented ones (lint findings, SpecError, RolloutFileError), no hang
(each input within HANG_SECONDS, cut off by SIGALRM otherwise), bounded memory. The long
version (10,000+ specs, in worker processes) is `bench/chaos.py`.
"""

from __future__ import annotations

import contextlib
import random
import signal
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshshift.spec.annotations import parse_deployment
from meshshift.spec.documents import check_sources
from meshshift.spec.errors import SpecError
from meshshift.spec.templates import parse_template
from tests.reliability.spec_fuzz import HANG_SECONDS, check_spec, fuzzed_spec

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class HangError(Exception):
    pass


@contextlib.contextmanager
def hang_guard(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise HangError in the block once it has run for `seconds` (the main thread's SIGALRM)."""

    def expired(_signum: int, _frame: object) -> None:
        raise HangError(f"still running after {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@FUZZ
@given(st.randoms(use_true_random=False))
def test_mutated_real_specs_get_findings_never_a_crash(rng: random.Random) -> None:
    text = fuzzed_spec(rng)
    with hang_guard():
        check_spec(text)


_yaml_alphabet = st.sampled_from(
    [
        *"-:[]{},&*!|>'\"#%@`? \n\t",
        "  ",
        "- ",
        ": ",
        "kind: ",
        "steps:",
        "setWeight: ",
        "&a",
        "*a",
        "<<:",
        "---",
    ]
)


@FUZZ
@given(st.lists(_yaml_alphabet | st.text(max_size=5), max_size=60).map("".join))
def test_any_text_gets_findings_never_a_crash(text: str) -> None:
    with hang_guard():
        findings = check_sources([("fuzz.yaml", text)])
    assert all(finding.severity in ("error", "warning") for finding in findings)


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
)
_step_keys = st.sampled_from(
    ["setWeight", "pause", "analysis", "setHeaderRoute", "setMirrorRoute", "setCanaryScale"]
)


@FUZZ
@given(st.lists(st.dictionaries(_step_keys, _json, min_size=1, max_size=2), max_size=6), _json)
def test_random_steps_and_analysis_are_read_or_refused(steps: list[Any], analysis: Any) -> None:
    annotations = {
        "meshshift.io/enabled": "true",
        "meshshift.io/router": "istio",
        "meshshift.io/steps": yaml.safe_dump(steps),
        "meshshift.io/analysis": yaml.safe_dump(analysis),
    }
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop", "annotations": annotations},
    }
    with hang_guard(), contextlib.suppress(SpecError):
        parse_deployment(manifest)


_metric = st.fixed_dictionaries(
    {"name": st.text(max_size=10)},
    optional={
        "interval": _json,
        "count": _json,
        "successCondition": st.text(max_size=40) | _json,
        "failureLimit": _json,
        "provider": st.dictionaries(
            st.sampled_from(["prometheus", "web", "datadog", "job", "x"]), _json, max_size=2
        ),
    },
)


@FUZZ
@given(st.lists(_metric, max_size=3), st.lists(_json, max_size=3))
def test_random_templates_are_read_or_refused(metrics: list[Any], args: list[Any]) -> None:
    document = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": {"metrics": metrics, "args": args},
    }
    with hang_guard(), contextlib.suppress(SpecError):
        parse_template(document)


def test_fuzzing_memory_stays_bounded() -> None:
    """The largest any one mutated spec makes the parsers allocate (alias bombs included)."""
    rng = random.Random(2024)
    peaks = []
    tracemalloc.start()
    try:
        for _ in range(150):
            text = fuzzed_spec(rng)
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            with hang_guard():
                check_spec(text)
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    assert max(peaks) < 64 * 1024 * 1024, f"{max(peaks) / 2**20:.1f} MB for one spec"


def test_the_hang_guard_cuts_a_runaway_parse() -> None:
    with contextlib.suppress(HangError), hang_guard(0.2):
        while True:
            pass


HUGE_DURATIONS = [10**400, -(10**400), 10**5000, "9" * 5000 + "s", 2**63]


@pytest.mark.parametrize(
    "value", HUGE_DURATIONS, ids=["1e400", "-1e400", "5000-digits", "5000-digit-text", "2^63"]
)
def test_a_huge_duration_is_a_finding(value: object) -> None:
    """Found by bench/chaos.py: float() of a 400-digit int overflowed out of the template parser."""
    metric = {"name": "m", "initialDelay": value, "provider": {"web": {"url": "http://127.0.0.1:1/"}}}
    document = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": "t"}}
    document["spec"] = {"metrics": [metric]}
    with hang_guard(), pytest.raises(SpecError, match=r"spec\.metrics\[0\]\.initialDelay"):
        parse_template(document)


@pytest.mark.parametrize("digits", [4301, 5000, 100_000])
def test_a_yaml_integer_too_long_to_read_is_a_finding(digits: int) -> None:
    text = "kind: AnalysisTemplate\nspec:\n  metrics:\n  - {name: m, count: " + "9" * digits + "}\n"
    findings = check_sources([("t.yaml", text)])
    assert [f.reason for f in findings] == [
        f"invalid YAML at line 4, column 22: an integer of {digits} digits (meshshift reads at most 4300)"
    ]

"""Argo's evaluator and analysis test cases (expressions.yaml, phases.yaml) against meshshift.

Every case must agree with Argo, or differ as the README's tables document it, with a reason; a
documented difference that no longer differs is stale and fails too. The counts are printed and
must match the ones the README states.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.conformance.argo_cases import README, Outcome, documented_differences, outcomes

MARKERS = {"conditions": "condition-differences", "phases": "phase-differences"}
ROOT_README = README.parent.parent.parent / "README.md"


def _outcomes(suite: str) -> list[Outcome]:
    return [outcome for name, outcome in outcomes() if name == suite]


@pytest.mark.parametrize("suite", sorted(MARKERS))
def test_every_case_agrees_with_argo_or_differs_as_documented(suite: str) -> None:
    documented = documented_differences(README.read_text(), MARKERS[suite])
    results = _outcomes(suite)
    undocumented = [
        f"{o.case_id} ({o.source}): Argo {o.expected}, meshshift {o.actual}"
        for o in results
        if not o.agrees and o.case_id not in documented
    ]
    assert not undocumented, "differences the README does not document:\n" + "\n".join(undocumented)
    known = {o.case_id for o in results}
    stale = [
        case_id
        for case_id in documented
        if case_id in known and next(o for o in results if o.case_id == case_id).agrees
    ]
    assert not stale, f"documented as differing but agreeing now (update the README): {stale}"
    unknown = sorted(set(documented) - known)
    assert not unknown, f"the README documents cases that do not exist: {unknown}"
    assert all(reason.strip() for reason in documented.values())


def test_counts_are_printed_and_in_the_readmes(capsys: pytest.CaptureFixture[str]) -> None:
    lines = []
    for suite in sorted(MARKERS):
        counts = Counter("agree" if o.agrees else "differ" for o in _outcomes(suite))
        total = counts["agree"] + counts["differ"]
        lines.append(f"{suite}: {counts['agree']} of {total} agree, {counts['differ']} differ as documented")
    with capsys.disabled():
        print("\nArgo evaluator and analysis cases: " + "; ".join(lines))
    for readme in (README, ROOT_README):
        text = readme.read_text()
        for line in lines:
            assert line in text, f"{readme.name} does not state the current count: {line}"


def test_each_case_names_its_source_and_has_a_unique_id() -> None:
    ids = [o.case_id for _, o in outcomes()]
    assert len(ids) == len(set(ids))
    assert all(o.source for _, o in outcomes())

"""Issue 12 for the analysis core: no promotion on missing data, no exception out of a measurement,
no analysis task that dies silently, bounded messages and stored values.

The executor tests use the real web provider against a local aiohttp server.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from meshshift import codec
from meshshift.analysis.assess import STORED_VALUE_LIMIT, assess_value, stored_value, value_excerpt
from meshshift.analysis.expr import compile_condition
from meshshift.analysis.providers import InlineTemplates
from meshshift.analysis.providers.web import WebProvider
from meshshift.analysis.run import AnalysisRun
from meshshift.engine.actions import AnalysisKind, StartAnalysis
from meshshift.runtime.analysis import AnalysisExecutor, ArgContext, builtin_args
from meshshift.spec.errors import Findings, SpecError
from meshshift.spec.model import AnalysisPhase, AnalysisRef, Metric, ProviderSpec, TemplateRef
from meshshift.spec.templates import instantiate_template, parse_template, read_template

S, F, E, INC = AnalysisPhase.SUCCESSFUL, AnalysisPhase.FAILED, AnalysisPhase.ERROR, AnalysisPhase.INCONCLUSIVE
NAN = math.nan


def metric(success: str | None = None, failure: str | None = None) -> Metric:
    return Metric(
        name="m",
        provider=ProviderSpec("prometheus", {"query": "up"}),
        success_condition=success,
        failure_condition=failure,
    )


# --- 12.1: never promote on missing data ----------------------------------------------------


@pytest.mark.parametrize(
    ("success", "failure", "value"),
    [
        (None, "result[0] < 0.9", [NAN]),  # the reported case: Argo (and we, before) promoted this
        (None, "result < 0.9", NAN),
        ("all(result, {# >= 0.9})", None, []),  # the other reported case
        ("result[0] >= 0.9", None, [NAN]),
        ("result >= 0.9", "result < 0.5", NAN),
        ("none(result, {# > 0.1})", None, [0.01, NAN]),
        ("result[0] >= 0.9", None, []),
        ("result < 10", None, None),
        ("len(result) > 0 && result[0] >= 0.9", "len(result) > 0 && result[0] < 0.5", [NAN]),  # len: no NaN
    ],
)
def test_missing_data_is_an_error_unless_the_conditions_handle_it(
    success: str | None, failure: str | None, value: object
) -> None:
    phase, message = assess_value(metric(success, failure), value, query="sum(rate(x[1m]))")
    assert phase == E
    assert message.startswith("no data: the result of query 'sum(rate(x[1m]))' is ")
    assert ("isNaN" in message) or ("len(result)" in message)


@pytest.mark.parametrize(
    ("success", "failure", "value", "expected"),
    [
        ("isNaN(result) || result >= 0.95", None, NAN, S),  # Argo's documented NaN handling
        ("isNaN(result[0]) || result[0] > 0.9", None, [NAN], S),
        (None, "!isNaN(result[0]) && result[0] < 0.9", [NAN], S),
        ("len(result) == 0 || result[0] >= 0.95", None, [], S),  # Argo's documented empty handling
        ("len(result) > 0 && result[0] >= 0.95", None, [], F),
        ("default(result, 0) < 0.05", None, None, S),  # Argo's documented nil handling (Datadog)
        ("(result ?? 0) < 1", None, None, S),
        ("result == nil", None, None, S),
        # expr type-checks `result < 1` against a nil result before evaluating: Error, as in Argo
        ("isNil(result) || result < 1", None, None, E),
        ("result == nil || result < 1", None, None, E),
        (None, None, [], S),  # no condition: any answer will do, as in Argo
        ("result >= 0.95", None, math.inf, S),  # +Inf is data (Argo's docs)
        (None, "isInf(result)", math.inf, F),
        ("result[0] >= 0.9", None, [0.95], S),
    ],
)
def test_conditions_that_say_what_no_data_means_decide(
    success: str | None, failure: str | None, value: object, expected: AnalysisPhase
) -> None:
    assert assess_value(metric(success, failure), value)[0] == expected


# --- 12.4: every exception in a measurement becomes an Error measurement -------------------------


def test_asint_on_thousands_of_digits_is_an_error_measurement() -> None:
    digits = "9" * 5000  # int() refuses more than 4300 digits with a ValueError
    phase, message = assess_value(metric("asInt(result) > 0"), digits)
    assert phase == E
    assert "does not fit in a 64-bit integer" in message
    assert len(message) < 700
    assert assess_value(metric("asFloat(result) > 0"), "1" * 5000)[0] == E
    assert assess_value(metric("asInt(result) == 1"), "0" * 30 + "1")[0] == S


def test_an_unexpected_value_type_is_an_error_measurement_not_an_exception() -> None:
    class Hostile(dict[str, object]):
        def get(self, key: str, default: object = None) -> object:
            raise RuntimeError("boom")

    phase, message = assess_value(metric("result.a == 1"), Hostile(a=1))
    assert phase == E
    assert "boom" in message


# --- 12.4: bounded messages and stored values ------------------------------------------------


def test_messages_quote_a_bounded_excerpt_of_the_value() -> None:
    huge = [0.5] * 60_000  # about 300 kB as JSON
    phase, message = assess_value(metric("all(result, {# > 0.9})"), huge)
    assert phase == F
    assert len(message) < 400
    assert "(300000 characters)" in message
    excerpt = value_excerpt({"a": "x" * 1000})
    assert excerpt.startswith('{"a": "xxx') and len(excerpt) < 240


def test_a_measurement_stores_small_values_and_an_excerpt_of_large_ones() -> None:
    assert stored_value([0.97]) == [0.97]
    assert math.isnan(stored_value(NAN))
    assert stored_value({"ok": True}) == {"ok": True}
    big = {"data": list(range(10_000))}
    kept = stored_value(big)
    assert isinstance(kept, str) and len(kept) < STORED_VALUE_LIMIT
    assert kept.startswith('{"data": [0, 1, 2')


# --- the executor: the web provider answering hostile values -----------------------------


@pytest.fixture
async def api() -> AsyncIterator[str]:
    async def digits(request: web.Request) -> web.Response:
        return web.json_response({"n": "9" * 5000})

    async def big(request: web.Request) -> web.Response:
        return web.json_response({"values": [0.5] * 15_000})  # 75 kB

    app = web.Application()
    app.router.add_get("/digits", digits)
    app.router.add_get("/big", big)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def web_template(url: str, condition: str, **fields: object) -> dict[str, object]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": {
            "metrics": [
                {"name": "m", "successCondition": condition, "provider": {"web": {"url": url}}, **fields}
            ]
        },
    }


class Published:
    def __init__(self, fail_on: int = 0) -> None:
        self.runs: list[AnalysisRun] = []
        self.changed = asyncio.Event()
        self.fail_on = fail_on

    def __call__(self, run: AnalysisRun) -> None:
        self.runs.append(run)
        self.changed.set()
        if len(self.runs) == self.fail_on:
            raise OSError("the state store is full")  # a persisting failure inside the task

    async def until_completed(self) -> AnalysisRun:
        async with asyncio.timeout(30):  # a hang guard: before the fix the run never completed
            while not (self.runs and self.runs[-1].phase.completed):
                self.changed.clear()
                await self.changed.wait()
        return self.runs[-1]


def executor(template: dict[str, object], published: Published) -> AnalysisExecutor:
    context = ArgContext(builtin_args(canary="c", stable="s", namespace=None))
    return AnalysisExecutor(
        templates=InlineTemplates(parse_template(template)),
        providers={"web": WebProvider()},
        clock=time.monotonic,
        on_change=published,
        arg_context=lambda action: context,
    )


def start(name: str = "run") -> StartAnalysis:
    return StartAnalysis(name, AnalysisKind.STEP, AnalysisRef((TemplateRef("t"),)), "c", "s")


async def test_a_value_that_broke_the_assessment_ends_the_run_in_error(api: str) -> None:
    published = Published()
    analysis = executor(
        web_template(api + "/digits", "asInt(result.n) > 0", consecutiveErrorLimit=0), published
    )
    try:
        await analysis.start(start())
        run = await published.until_completed()
    finally:
        await analysis.close()
    assert run.phase == E
    assert "does not fit in a 64-bit integer" in run.message


async def test_a_dying_analysis_task_fails_the_run_with_its_reason(api: str) -> None:
    published = Published(fail_on=2)  # the run's start is published, then its first measurement
    analysis = executor(web_template(api + "/digits", "len(result.n) > 0", interval="1s"), published)
    try:
        await analysis.start(start())
        run = await published.until_completed()
    finally:
        await analysis.close()
    assert run.phase == E
    assert run.terminated
    assert "the analysis stopped: OSError: the state store is full" in run.message
    assert analysis.verdicts() == {"run": E}


async def test_a_large_answer_is_kept_as_an_excerpt_in_the_persisted_run(api: str) -> None:
    published = Published()
    analysis = executor(
        web_template(api + "/big", "all(result.values, {# > 0.9})", consecutiveErrorLimit=0), published
    )
    try:
        await analysis.start(start())
        run = await published.until_completed()
    finally:
        await analysis.close()
    assert run.phase == F
    measurement = run.result("m").measurements[0]
    assert isinstance(measurement.value, str) and measurement.value.startswith('{"values": [0.5, 0.5')
    assert len(json.dumps(codec.encode(run))) < 4000  # was the whole answer, in the value and the message


# --- 12.5: an arg in a condition is a value, never code ------------------------------------


def threshold_template(condition: str, default: str | None = None) -> dict[str, object]:
    arg: dict[str, object] = (
        {"name": "threshold"} if default is None else {"name": "threshold", "value": default}
    )
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": {
            "args": [arg],
            "metrics": [
                {"name": "m", "successCondition": condition, "provider": {"prometheus": {"query": "up"}}}
            ],
        },
    }


def instantiated_condition(condition: str, threshold: str) -> str | None:
    (metric_,) = instantiate_template(parse_template(threshold_template(condition)), {"threshold": threshold})
    return metric_.success_condition


def test_an_arg_cannot_turn_a_condition_into_always_true() -> None:
    with pytest.raises(SpecError, match='arg "threshold" = "0 \\|\\| true" is not a literal') as caught:
        instantiated_condition("result[0] >= {{args.threshold}}", "0 || true")
    assert "spec.metrics[0].successCondition" in str(caught.value)
    for hostile in ("1) || (true", "0 ? true : true", "result", "len(result)", "true || true", '"a" + "b"'):
        with pytest.raises(SpecError, match="is not a literal"):
            instantiated_condition("result[0] >= {{args.threshold}}", hostile)


@pytest.mark.parametrize("value", ["0.95", "-1", "1e3", " 42 ", '"up"', "'up'", "true", "nil"])
def test_literal_args_are_substituted(value: str) -> None:
    condition = instantiated_condition("result[0] == {{ args.threshold }}", value)
    assert condition == f"result[0] == {value.strip()}"


def test_an_arg_inside_quotes_is_text_and_stays_inside_them() -> None:
    hostile = 'x" || true || "'
    condition = instantiated_condition('result == "{{args.threshold}}"', hostile)
    assert condition is not None
    compiled = compile_condition(condition)
    assert compiled.test("x") is False  # without escaping this would be `result == "x" || true || ""`
    assert compiled.test(hostile) is True
    single = instantiated_condition("result == '{{args.threshold}}'", "it's \\ fine\n")
    assert single is not None and compile_condition(single).test("it's \\ fine\n") is True


def test_an_arg_after_a_dot_is_a_map_key() -> None:
    assert instantiated_condition("result.{{args.threshold}} > 1", "errors") == "result.errors > 1"
    with pytest.raises(SpecError, match="is not a map key"):
        instantiated_condition("result.{{args.threshold}} > 1", "a || true")


def test_a_placeholder_glued_into_a_token_is_a_lint_error() -> None:
    findings = Findings()
    read_template(threshold_template("result[0] >= 0.{{args.threshold}}"), findings)
    assert any(
        "must stand alone as a value" in issue.reason for issue in findings if issue.severity == "error"
    )


def test_a_template_default_is_checked_like_a_given_value() -> None:
    template = parse_template(threshold_template("result[0] >= {{args.threshold}}", default="0 || true"))
    with pytest.raises(SpecError, match="is not a literal"):
        instantiate_template(template, {"threshold": "0 || true"})
    assert instantiate_template(template, {"threshold": "0.9"})[0].success_condition == "result[0] >= 0.9"


def test_lint_compiles_a_placeholder_as_a_value_of_any_type() -> None:
    # `{{args.x}} == "up"` must not be refused as int == string before x has a value
    findings = Findings()
    read_template(threshold_template('{{args.threshold}} == "up" && result[0] > 0'), findings)
    assert not findings.has_errors, list(findings)


# --- lint: conditions that would pass on no data, and Argo's default()/isNil() ---------------


def lint_warnings(success: str | None = None, failure: str | None = None) -> list[str]:
    fields = {k: v for k, v in (("successCondition", success), ("failureCondition", failure)) if v}
    doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": {"metrics": [{"name": "m", "provider": {"prometheus": {"query": "up"}}, **fields}]},
    }
    findings = Findings()
    read_template(doc, findings)
    assert not findings.has_errors, list(findings)
    return [issue.reason for issue in findings if issue.severity == "warning"]


def test_lint_warns_about_conditions_that_would_pass_on_no_data() -> None:
    (warning,) = lint_warnings(failure="result[0] < 0.9")
    assert "pass on no data ([NaN])" in warning and "meshshift measures such a result as Error" in warning
    (warning,) = lint_warnings(success="all(result, {# >= 0.9})")
    assert "an empty result" in warning
    (warning,) = lint_warnings(failure="result < 0.9")
    assert "NaN" in warning
    # conditions that fail, error, or say what no data means: no warning
    assert lint_warnings(success="result[0] >= 0.95") == []
    assert lint_warnings(success="len(result) > 0 && all(result, {# >= 0.9})") == []
    assert lint_warnings(failure="!isNaN(result[0]) && result[0] < 0.9") == []
    assert lint_warnings(success="default(result, 0) < 10") == []


def test_lint_warns_that_default_and_isnil_look_at_result() -> None:
    (warning,) = lint_warnings(success="default(result.rate, 1) > 0.5 && len(result) > 0")
    assert warning.startswith("default(result.rate, 1): as in Argo, default() and isNil() look at result")
    assert lint_warnings(success="isNil(result) || (len(result) > 0 && result[0] > 0.5)") == []

"""Fuzzing the condition language (issue 12.8/12.9): no exception but the documented ones, no hang,
bounded memory.

The documented errors are ConditionSyntaxError (compiling) and ConditionEvalError (evaluating), and
an assessment never raises at all (it answers an Error measurement). `fuzz_conditions(n)` is the
long version, for `bench/chaos.py`: n expressions from a grammar of the whole language, half of them
mutated character by character, each compiled, evaluated on hostile results and assessed as a
metric; it reports what it tried and every unexpected exception, and the slowest expression.
"""

from __future__ import annotations

import contextlib
import math
import random
import resource
import time
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from meshshift.analysis.assess import assess_value
from meshshift.analysis.expr import ConditionEvalError, ConditionSyntaxError, compile_condition
from meshshift.spec.model import Metric, ProviderSpec

HANG_SECONDS = 5.0  # an expression slower than this (compile + every evaluation) counts as a hang

_deep: list[object] = []
for _ in range(3000):  # deeper than Python's recursion limit
    _deep = [_deep]

HOSTILE_RESULTS: tuple[object, ...] = (
    None,
    math.nan,
    math.inf,
    -0.0,
    0.5,
    10**400,
    True,
    "",
    "9" * 5000,  # asInt: int() refuses more than 4300 digits
    "x" * 100_000,
    [],
    [math.nan],
    [0.5, 1.5, -2.0],
    [1, "a", None, [2], {"k": 1}],
    list(range(20_000)),
    {"a": {"b": [1, 2, {"c": "d"}]}, "ok": True, "status": "up", "Values": [0.1, 0.2]},
    [{"ok": True, "v": 1}, {"ok": False, "v": "2"}],
    _deep,
)

_NAMES = (
    "len", "isNaN", "isInf", "isNil", "default", "asInt", "asFloat", "abs", "min", "max", "mean",
    "median", "round", "floor", "ceil", "int", "float", "first", "last", "lower", "upper", "trim",
    "hasPrefix", "hasSuffix", "all", "any", "none", "one", "filter", "map", "count", "sum", "find",
    "findIndex", "findLast", "findLastIndex", "__import__", "eval", "exec", "open", "getattr", "type",
    "now", "split", "keys",
)  # fmt: skip
_BINARY = (
    "+", "-", "*", "/", "%", "**", "^", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "and", "or",
    "in", "??", "..", "contains", "startsWith", "endsWith", "matches", "|", "not in", "not contains",
    "not matches",
)  # fmt: skip
_ATOMS = (
    "result", "result[0]", "result[-1]", "result.a", "result?.a?.b", "result.a.b[2].c", "#", ".ok",
    "#.v", "0", "1", "-1", "0.95", "1e308", "2 ** 1000", "9223372036854775807", "0x7fffffffffffffff",
    "nil", "true", "false", "'a'", '"up"', "`raw`", "'__class__'", "'(a+)+$'", "'a{1000}{1000}'",
    "[]", "[1, 2, 3]", "1..100000", "1..3", "'x' * 3", "x", "let",
)  # fmt: skip
_MUTATION_ALPHABET = [*"()[]{}.,#?:!&|=<>+-*/%^'\"`\\ \n0123456789aeirstx_$;@", "..", "?.", "__", "let "]


@dataclass
class ConditionFuzzReport:
    """What `fuzz_conditions` tried and what went wrong."""

    tried: int = 0
    compiled: int = 0
    evaluations: int = 0
    crashes: list[str] = field(default_factory=list)  # "expression: ExceptionType: message"
    hangs: list[str] = field(default_factory=list)  # expressions slower than HANG_SECONDS
    slowest_seconds: float = 0.0
    slowest: str = ""
    max_rss_growth_mb: float = 0.0  # how much the process's peak RSS grew while fuzzing

    @property
    def survived(self) -> int:
        return self.tried - len(set(self.crashes) | set(self.hangs))


def random_expression(rng: random.Random, depth: int = 0) -> str:
    """An expression of the language (mostly well formed, sometimes not), from a small grammar."""
    roll = rng.random()
    if depth > rng.choice((3, 5, 8)) or roll < 0.25:
        return rng.choice(_ATOMS)
    if roll < 0.55:
        return (
            f"{random_expression(rng, depth + 1)} {rng.choice(_BINARY)} {random_expression(rng, depth + 1)}"
        )
    if roll < 0.7:
        name = rng.choice(_NAMES)
        arguments = ", ".join(random_expression(rng, depth + 1) for _ in range(rng.randint(0, 3)))
        if rng.random() < 0.5:
            arguments = f"{random_expression(rng, depth + 1)}, {{{random_expression(rng, depth + 1)}}}"
        return f"{name}({arguments})"
    if roll < 0.78:
        return f"({random_expression(rng, depth + 1)})"
    if roll < 0.84:
        parts = [random_expression(rng, depth + 1) for _ in range(3)]
        return f"{parts[0]} ? {parts[1]} : {parts[2]}"
    if roll < 0.9:
        value, body = random_expression(rng, depth + 1), random_expression(rng, depth + 1)
        return f"let v{depth} = {value}; {body} + v{depth}"
    if roll < 0.95:
        return (
            f"{random_expression(rng, depth + 1)} | {rng.choice(_NAMES)}({random_expression(rng, depth + 1)})"
        )
    nesting = rng.choice((10, 70, 1000))
    opener, closer = rng.choice((("(", ")"), ("[", "]"), ("-", ""), ("!", ""), ("len(", ")")))
    return opener * nesting + random_expression(rng, depth + 1) + closer * nesting


def mutate(rng: random.Random, source: str) -> str:
    characters = list(source)
    for _ in range(rng.randint(1, 4)):
        position = rng.randint(0, len(characters))
        action = rng.random()
        if action < 0.4:
            characters.insert(position, rng.choice(_MUTATION_ALPHABET))
        elif action < 0.7 and characters:
            del characters[min(position, len(characters) - 1)]
        elif characters:
            characters[min(position, len(characters) - 1)] = rng.choice(_MUTATION_ALPHABET)
    return "".join(characters)


def _check_one(source: str, report: ConditionFuzzReport) -> None:
    try:
        condition = compile_condition(source)
    except ConditionSyntaxError as error:
        str(error)  # the message itself must render
        return
    report.compiled += 1
    metric = Metric(name="m", provider=ProviderSpec("web", {}), success_condition=source)
    for result in HOSTILE_RESULTS:
        report.evaluations += 1
        try:
            condition.evaluate(result)
        except ConditionEvalError as error:
            str(error)
        phase, message = assess_value(metric, result)  # never raises
        assert isinstance(message, str) and phase is not None


def fuzz_conditions(count: int, seed: int = 0) -> ConditionFuzzReport:
    """Fuzz `count` expressions (deterministic for a seed); see the module docstring."""
    rng = random.Random(seed)
    report = ConditionFuzzReport()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(count):
        source = random_expression(rng)
        if rng.random() < 0.5:
            source = mutate(rng, source)
        report.tried += 1
        started = time.perf_counter()
        try:
            _check_one(source, report)
        except Exception as error:
            report.crashes.append(f"{source[:200]!r}: {type(error).__name__}: {str(error)[:200]}")
        elapsed = time.perf_counter() - started
        if elapsed > report.slowest_seconds:
            report.slowest_seconds, report.slowest = elapsed, source[:200]
        if elapsed > HANG_SECONDS:
            report.hangs.append(source[:200])
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report.max_rss_growth_mb = max(0, rss_after - rss_before) / 1024  # ru_maxrss is in KiB on Linux
    return report


# --- the tests --------------------------------------------------------------------------------


def test_a_fuzzing_batch_finds_no_crash_and_stays_small() -> None:
    report = fuzz_conditions(400, seed=12)
    assert report.tried == 400
    assert report.compiled > 40  # the grammar does produce valid conditions
    assert report.crashes == []
    assert report.max_rss_growth_mb < 200  # bounded: no expression builds anything large


_text_alphabet = st.sampled_from([*_MUTATION_ALPHABET, " result ", " len(", " all(", "1..9", " | "])


@settings(max_examples=300, deadline=None)
@given(st.lists(_text_alphabet, max_size=40).map("".join) | st.text(max_size=60))
def test_any_text_compiles_or_raises_a_syntax_error(source: str) -> None:
    try:
        compile_condition(source)
    except ConditionSyntaxError as error:
        assert 0 <= error.position <= len(source)
        str(error)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), _json)
def test_grammar_conditions_on_any_json_raise_only_eval_errors(seed: int, result: object) -> None:
    source = random_expression(random.Random(seed))
    try:
        condition = compile_condition(source)
    except ConditionSyntaxError:
        return
    with contextlib.suppress(ConditionEvalError):
        condition.evaluate(result)
    metric = Metric(name="m", provider=ProviderSpec("web", {}), success_condition=source)
    assess_value(metric, result)  # an Error measurement at worst, never an exception

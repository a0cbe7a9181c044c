"""Turn a syntax tree into nested Python closures, and wrap them as a Condition.

Every closure takes (result, frame): `frame` holds the slots of this evaluation, one for the current
element of each predicate and one per `let` variable (None when the condition has none). All type
and operand checks happen inside the closures, and every failure becomes a ConditionEvalError that
starts with the sub-expression that failed. Before evaluating, expr's type check runs for the type
of the measured value (checker.py), as Argo compiles every condition against its value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from meshshift.analysis.expr.checker import UNKNOWN, CheckError, Nature, check, nature_of
from meshshift.analysis.expr.errors import ConditionEvalError, ConditionSyntaxError, EmptyResultIndexError
from meshshift.analysis.expr.functions import FUNCTIONS, RESULT_FUNCTIONS, total
from meshshift.analysis.expr.limits import MAX_PREDICATE_ITERATIONS
from meshshift.analysis.expr.nodes import (
    Binary,
    Call,
    ElementRef,
    Index,
    Let,
    ListLiteral,
    Literal,
    Node,
    ResultRef,
    Ternary,
    Unary,
    Variable,
    walk,
)
from meshshift.analysis.expr.parser import parse
from meshshift.analysis.expr.values import (
    BINARY_OPERATIONS,
    UNARY_OPERATIONS,
    OperandError,
    describe,
    render,
    type_name,
)

Frame = list[object] | None
Evaluator = Callable[[object, Frame], object]

_CANONICAL_OPERATORS = {"and": "&&", "or": "||", "^": "**"}
_QUOTE_WIDTH = 60


class Condition:
    """A compiled condition. Never changed after construction, so instances are shared and cached."""

    __slots__ = ("_evaluator", "_slot_count", "_tree", "_uses_predicates", "functions", "source")

    def __init__(
        self, source: str, evaluator: Evaluator, uses_predicates: bool, tree: Node, slot_count: int
    ) -> None:
        self.source = source
        self._evaluator = evaluator
        self._uses_predicates = uses_predicates
        self._tree = tree
        self._slot_count = slot_count
        # The functions the condition calls, so callers can tell how it treats missing data.
        self.functions = frozenset(node.name for node in walk(tree) if isinstance(node, Call))

    @property
    def tree(self) -> Node:
        return self._tree

    def evaluate(self, result: object) -> object:
        """The value of the condition for this `result`; ConditionEvalError if it has none."""
        nature = nature_of(result)
        if nature is not UNKNOWN:
            problem = _type_problem(self, nature)
            if problem is not None:
                raise ConditionEvalError(problem)
        frame: Frame = [None] * self._slot_count if self._slot_count else None
        try:
            if not self._uses_predicates:
                return self._evaluator(result, frame)
            token = _predicate_budget.set(_PredicateBudget())
            try:
                return self._evaluator(result, frame)
            finally:
                _predicate_budget.reset(token)
        except RecursionError:  # comparing or searching absurdly nested provider data
            raise ConditionEvalError(
                f"{_quote(self.source)}: the result is nested too deeply to evaluate"
            ) from None

    def test(self, result: object) -> bool:
        """Evaluate, requiring true or false."""
        value = self.evaluate(result)
        if isinstance(value, bool):
            return value
        raise ConditionEvalError(f"condition must be true or false, got {render(value)}")

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"


def compile_condition(source: str) -> Condition:
    """Parse and check `source` once; ConditionSyntaxError if it is invalid or not allowed.

    Results are cached by source, so calling this for every evaluation is cheap.
    """
    return _compile_cached(source)


@functools.lru_cache(maxsize=1024)
def _compile_cached(source: str) -> Condition:
    tree, slot_count = parse(source)
    try:
        check(tree, UNKNOWN, slot_count)  # what fails whatever the result is, fails at compile time
    except CheckError as error:
        raise ConditionSyntaxError(
            f"{_quote(source[error.node.start : error.node.end])}: {error.message}", source, error.node.start
        ) from None
    compiler = _Compiler(source)
    evaluator = compiler.compile(tree)
    return Condition(source, evaluator, compiler.uses_predicates, tree, slot_count)


@functools.lru_cache(maxsize=4096)
def _type_problem(condition: Condition, nature: Nature) -> str | None:
    """expr's type check of `condition` for a result of this nature: the problem, or None."""
    try:
        check(condition.tree, nature, condition._slot_count)
    except CheckError as error:
        where = _quote(condition.source[error.node.start : error.node.end])
        return f"{where}: {error.message} (result is {nature}; expr refuses this before evaluating)"
    return None


class _PredicateBudget:
    """How many more elements predicates may visit in the current evaluation."""

    __slots__ = ("remaining",)

    def __init__(self) -> None:
        self.remaining = MAX_PREDICATE_ITERATIONS

    def charge(self, elements: int, where: str) -> None:
        self.remaining -= elements
        if self.remaining < 0:
            raise ConditionEvalError(
                f"{where}: too much work: predicates may visit at most "
                f"{MAX_PREDICATE_ITERATIONS} elements in one evaluation"
            )


# Per evaluation, and per thread / task, since a cached Condition may be evaluated concurrently.
_predicate_budget: ContextVar[_PredicateBudget] = ContextVar("condition_predicate_budget")
# Functions whose cost does not grow with their arguments' size.
_CONSTANT_TIME_FUNCTIONS = frozenset(
    {"len", "first", "last", "isNaN", "isInf", "abs", "round", "floor", "ceil", "int", "float", "asFloat"}
)


def _charge_operands(where: str, *values: object) -> None:
    """Inside a predicate, an operation on a list or map walks it once per element: charge that.

    `all(1..100000, {# in result})` on a result of 20,000 numbers is 2 * 10^9 steps within a
    budget of 100,000 iterations otherwise. Strings are walked by C code: a hundredth each.
    """
    work = 0
    for value in values:
        if isinstance(value, list | dict):
            work += len(value)
        elif isinstance(value, str):
            work += len(value) // 100
    if work:
        _predicate_budget.get().charge(work, where)


def _quote(text: str) -> str:
    """Source text for a message: on one line, and not too long."""
    text = " ".join(text.split())
    return text if len(text) <= _QUOTE_WIDTH else text[: _QUOTE_WIDTH - 3] + "..."


def _not_a_bool(text: str, role: str, value: object) -> ConditionEvalError:
    return ConditionEvalError(f"{text}: {role} must be true or false, got {describe(value)}")


@dataclass(frozen=True, slots=True)
class _IndexSite:
    """What an index expression needs to explain a failure."""

    where: str  # the whole index expression, e.g. 'result[0]'
    target: str  # the indexed expression, e.g. 'result'
    target_is_result: bool

    def lookup(self, container: object, key: object) -> object:
        """Everything but the fast path (a list and an int): maps, strings, whole floats, errors."""
        if isinstance(key, float) and key.is_integer():
            key = int(key)  # expr accepts result[1.0]
        if isinstance(container, list | str):
            if not isinstance(key, int) or isinstance(key, bool):
                noun = type_name(container)
                raise ConditionEvalError(
                    f"{self.where}: a {noun} index must be a whole number, got {describe(key)}"
                )
            if -len(container) <= key < len(container):
                return container[key]
            raise self.out_of_range(container, key)
        if isinstance(container, dict):
            if isinstance(key, str):
                return container.get(key)  # a missing key is nil, as in expr
            raise ConditionEvalError(f"{self.where}: map keys are strings, got {describe(key)}")
        if container is None:
            raise ConditionEvalError(f"{self.where}: cannot index nil; guard it with {self.target} != nil")
        raise ConditionEvalError(f"{self.where}: cannot index {describe(container)}")

    def out_of_range(self, container: list[object] | str, key: int) -> ConditionEvalError:
        noun = type_name(container)
        if not container:
            empty = "an empty result" if self.target_is_result else f"an empty {noun}"
            message = (
                f"{self.where}: index {key} out of range for {empty} (length 0); "
                f"guard it with len({self.target}) > 0"
            )
            if self.target_is_result and isinstance(container, list):
                return EmptyResultIndexError(message)
            return ConditionEvalError(message)
        guard = f"len({self.target}) > {key}" if key >= 0 else f"len({self.target}) >= {-key}"
        return ConditionEvalError(
            f"{self.where}: index {key} out of range for a {noun} of length {len(container)}; "
            f"guard it with {guard}"
        )


class _Compiler:
    def __init__(self, source: str) -> None:
        self._source = source
        self.uses_predicates = False
        self._in_predicate = 0  # > 0 while compiling a predicate's body (run once per element)

    def _text(self, node: Node) -> str:
        return _quote(self._source[node.start : node.end])

    def compile(self, node: Node) -> Evaluator:
        match node:
            case Literal():
                return _constant(node.value)
            case ResultRef():
                return _result
            case ElementRef() | Variable():
                return _slot_reader(node.slot)
            case Let():
                return self._let(node)
            case ListLiteral():
                return self._list(node)
            case Unary():
                return self._unary(node)
            case Binary():
                return self._binary(node)
            case Ternary():
                return self._ternary(node)
            case Index():
                return self._index(node)
            case Call() if node.name in RESULT_FUNCTIONS:
                return self._result_call(node)
            case Call() if node.name in FUNCTIONS:
                return self._call(node)
            case Call():
                return self._predicate_call(node)

    def _let(self, node: Let) -> Evaluator:
        value = self.compile(node.value)
        body = self.compile(node.body)
        slot = node.slot

        def let(result: object, frame: Frame) -> object:
            assert frame is not None
            frame[slot] = value(result, frame)
            return body(result, frame)

        return let

    def _result_call(self, node: Call) -> Evaluator:
        """Argo's `default(x, d)` and `isNil(x)`: they look at `result`, not at x (x is still
        evaluated, so its errors are errors, as in expr, which evaluates arguments first)."""
        arguments = [self.compile(argument) for argument in node.arguments]
        if node.name == "isNil":
            (argument,) = arguments

            def is_nil(result: object, frame: Frame) -> object:
                argument(result, frame)
                return result is None

            return is_nil
        ignored, fallback = arguments

        def default(result: object, frame: Frame) -> object:
            ignored(result, frame)
            return fallback(result, frame) if result is None else result

        return default

    def _list(self, node: ListLiteral) -> Evaluator:
        items = [self.compile(item) for item in node.items]

        def list_literal(result: object, frame: Frame) -> object:
            return [item(result, frame) for item in items]

        return list_literal

    def _unary(self, node: Unary) -> Evaluator:
        operand = self.compile(node.operand)
        where = self._text(node)
        if node.operator in ("!", "not"):
            operand_text = self._text(node.operand)
            role = f"the operand of '{node.operator}'"

            def logical_not(result: object, frame: Frame) -> object:
                value = operand(result, frame)
                if value is True:
                    return False
                if value is False:
                    return True
                raise _not_a_bool(operand_text, role, value)

            return logical_not
        operation = UNARY_OPERATIONS[node.operator]

        def unary(result: object, frame: Frame) -> object:
            value = operand(result, frame)
            try:
                return operation(value)
            except OperandError as problem:
                raise ConditionEvalError(f"{where}: {problem}") from None

        return unary

    def _binary(self, node: Binary) -> Evaluator:
        operator = _CANONICAL_OPERATORS.get(node.operator, node.operator)
        if operator in ("&&", "||"):
            return self._logical(node, operator)
        left = self.compile(node.left)
        right = self.compile(node.right)
        if operator == "??":

            def coalesce(result: object, frame: Frame) -> object:
                value = left(result, frame)
                return right(result, frame) if value is None else value

            return coalesce
        operation = BINARY_OPERATIONS[operator]
        where = self._text(node)
        charging = self._in_predicate > 0  # run once per element: its work counts (see _charge_operands)
        if isinstance(node.right, Literal):  # `result[0] >= 0.95`: the common shape, one call less
            constant = node.right.value

            def binary_with_constant(result: object, frame: Frame) -> object:
                value = left(result, frame)
                if charging:
                    _charge_operands(where, value, constant)
                try:
                    return operation(value, constant)
                except OperandError as problem:
                    raise ConditionEvalError(f"{where}: {problem}") from None

            return self._charged(operator, binary_with_constant, where)

        def binary(result: object, frame: Frame) -> object:
            left_value = left(result, frame)
            right_value = right(result, frame)
            if charging:
                _charge_operands(where, left_value, right_value)
            try:
                return operation(left_value, right_value)
            except OperandError as problem:
                raise ConditionEvalError(f"{where}: {problem}") from None

        return self._charged(operator, binary, where)

    def _charged(self, operator: str, evaluator: Evaluator, where: str) -> Evaluator:
        """A range built once per element of a predicate counts against the predicates' budget.

        Otherwise `1..100000 | map(1..100000)` builds 10^10 numbers within its budget.
        """
        if operator != ".." or not self._in_predicate:
            return evaluator

        def charged_range(result: object, frame: Frame) -> object:
            value = evaluator(result, frame)
            if isinstance(value, list):
                _predicate_budget.get().charge(len(value), where)
            return value

        return charged_range

    def _logical(self, node: Binary, operator: str) -> Evaluator:
        """`&&` stops at false, `||` at true; both sides must be bools, as in expr."""
        left = self.compile(node.left)
        right = self.compile(node.right)
        left_text = self._text(node.left)
        right_text = self._text(node.right)
        role = f"each side of '{node.operator}'"

        def right_side(result: object, frame: Frame) -> object:
            value = right(result, frame)
            if value is True or value is False:
                return value
            raise _not_a_bool(right_text, role, value)

        if operator == "&&":

            def logical_and(result: object, frame: Frame) -> object:
                value = left(result, frame)
                if value is True:
                    return right_side(result, frame)
                if value is False:
                    return False
                raise _not_a_bool(left_text, role, value)

            return logical_and

        def logical_or(result: object, frame: Frame) -> object:
            value = left(result, frame)
            if value is False:
                return right_side(result, frame)
            if value is True:
                return True
            raise _not_a_bool(left_text, role, value)

        return logical_or

    def _ternary(self, node: Ternary) -> Evaluator:
        condition = self.compile(node.condition)
        if_true = self.compile(node.if_true)
        if_false = self.compile(node.if_false)
        condition_text = self._text(node.condition)

        def ternary(result: object, frame: Frame) -> object:
            value = condition(result, frame)
            if value is True:
                return if_true(result, frame)
            if value is False:
                return if_false(result, frame)
            raise _not_a_bool(condition_text, "the condition before '?'", value)

        return ternary

    def _index(self, node: Index) -> Evaluator:
        target = self.compile(node.target)
        site = _IndexSite(self._text(node), self._text(node.target), isinstance(node.target, ResultRef))
        if node.optional:  # `x?.key`: nil when x is nil
            key_of = self.compile(node.key)

            def optional_index(result: object, frame: Frame) -> object:
                container = target(result, frame)
                if container is None:
                    return None
                return site.lookup(container, key_of(result, frame))

            return optional_index
        if isinstance(node.key, Literal) and type(node.key.value) is int:  # `result[0]`
            constant: int = node.key.value

            def index_constant(result: object, frame: Frame) -> object:
                container = target(result, frame)
                if type(container) is list:
                    try:
                        return container[constant]
                    except IndexError:
                        raise site.out_of_range(container, constant) from None
                return site.lookup(container, constant)

            return index_constant
        key = self.compile(node.key)

        def index(result: object, frame: Frame) -> object:
            container = target(result, frame)
            key_value = key(result, frame)
            if type(container) is list and type(key_value) is int:
                try:
                    return container[key_value]
                except IndexError:
                    raise site.out_of_range(container, key_value) from None
            return site.lookup(container, key_value)

        return index

    def _call(self, node: Call) -> Evaluator:
        function = FUNCTIONS[node.name].implementation
        arguments = [self.compile(argument) for argument in node.arguments]
        where = self._text(node)
        charging = self._in_predicate > 0 and node.name not in _CONSTANT_TIME_FUNCTIONS
        if len(arguments) == 1:
            (argument,) = arguments

            def call_one(result: object, frame: Frame) -> object:
                value = argument(result, frame)
                if charging:
                    _charge_operands(where, value)
                try:
                    return function(value)
                except OperandError as problem:
                    raise ConditionEvalError(f"{where}: {problem}") from None

            return call_one

        def call(result: object, frame: Frame) -> object:
            values = [argument(result, frame) for argument in arguments]
            if charging:
                _charge_operands(where, *values)
            try:
                return function(*values)
            except OperandError as problem:
                raise ConditionEvalError(f"{where}: {problem}") from None

        return call

    def _predicate_call(self, node: Call) -> Evaluator:
        self.uses_predicates = True
        name = node.name
        collection = self.compile(node.arguments[0])
        self._in_predicate += 1
        try:
            predicate = None if node.predicate is None else self.compile(node.predicate)
        finally:
            self._in_predicate -= 1
        slot = node.slot
        where = self._text(node)

        def elements(result: object, frame: Frame) -> list[object]:
            value = collection(result, frame)
            if not isinstance(value, list):
                raise ConditionEvalError(f"{where}: {name}() needs a list, got {describe(value)}")
            _predicate_budget.get().charge(len(value), where)
            return value

        def apply(result: object, frame: Frame, item: object) -> object:
            if predicate is None:
                return item
            assert frame is not None
            frame[slot] = item
            return predicate(result, frame)

        def outcomes(result: object, frame: Frame, items: list[object]) -> Iterator[bool]:
            for item in items:
                outcome = apply(result, frame, item)
                if outcome is True or outcome is False:
                    yield outcome
                else:
                    raise ConditionEvalError(
                        f"{where}: expected true or false for element {render(item)}, got {describe(outcome)}"
                    )

        def values(result: object, frame: Frame, items: list[object]) -> list[object]:
            return [apply(result, frame, item) for item in items]

        def sum_values(result: object, frame: Frame, items: list[object]) -> object:
            try:
                return total(values(result, frame, items))
            except OperandError as problem:
                raise ConditionEvalError(f"{where}: {problem}") from None

        def find_index(result: object, frame: Frame, items: list[object], backwards: bool) -> int:
            order = range(len(items) - 1, -1, -1) if backwards else range(len(items))
            for index in order:
                if next(outcomes(result, frame, [items[index]])):
                    return index
            return -1

        def find(result: object, frame: Frame, items: list[object], backwards: bool) -> object:
            index = find_index(result, frame, items, backwards)
            return None if index == -1 else items[index]

        reducers: dict[str, Callable[[object, Frame, list[object]], object]] = {
            "all": lambda result, frame, items: all(outcomes(result, frame, items)),
            "any": lambda result, frame, items: any(outcomes(result, frame, items)),
            "none": lambda result, frame, items: not any(outcomes(result, frame, items)),
            "one": lambda result, frame, items: sum(outcomes(result, frame, items)) == 1,
            "count": lambda result, frame, items: sum(outcomes(result, frame, items)),
            "filter": lambda result, frame, items: [
                item for item, keep in zip(items, outcomes(result, frame, items), strict=True) if keep
            ],
            "map": values,
            "sum": sum_values,
            "find": lambda result, frame, items: find(result, frame, items, False),
            "findLast": lambda result, frame, items: find(result, frame, items, True),
            "findIndex": lambda result, frame, items: find_index(result, frame, items, False),
            "findLastIndex": lambda result, frame, items: find_index(result, frame, items, True),
        }
        reduce = reducers[name]

        def predicate_call(result: object, frame: Frame) -> object:
            return reduce(result, frame, elements(result, frame))

        return predicate_call


def _constant(value: object) -> Evaluator:
    def constant(result: object, frame: Frame) -> object:
        return value

    return constant


def _result(result: object, frame: Frame) -> object:
    return result


def _slot_reader(slot: int) -> Evaluator:
    def read_slot(result: object, frame: Frame) -> object:
        assert frame is not None
        return frame[slot]

    return read_slot

"""Analysis conditions: expr-lang, as Argo Rollouts evaluates `successCondition` / `failureCondition`.

The language (github.com/expr-lang/expr, with Argo's environment):

- one variable, `result`: a number, a list of numbers, or any JSON value from a web provider; `let x =
  value; body` declares more, `#` is the current element inside a predicate and `.field` its field;
- literals: integers (also 0x, 0o, 0b), floats (`1e3`, `.5`), strings in double or single quotes or
  backticks, `true`, `false`, `nil`, lists `[1, 2]`; comments `//` and `/* */`;
- operators, with expr's precedence: `|` (pipe), `?:`, `||`/`or`, `&&`/`and`, comparisons, `in`,
  `contains`, `startsWith`, `endsWith`, `matches` (RE2) and their `not` forms, `..` (ranges),
  `+ -`, `* / %`, prefix `! not - +`, `**`/`^`, `??`; indexing `x[0]`, `x[-1]`, `x["key"]`, `x.key`,
  `x?.key`;
- functions: len, isNaN, isInf, isNil, default, asInt, asFloat, abs, min, max, mean, median, round,
  floor, ceil, int, float, first, last, lower, upper, trim, hasPrefix, hasSuffix, and, with a
  predicate, all, any, none, one, filter, map, count, sum, find, findIndex, findLast, findLastIndex:
  `all(result, {# > 0})`, `all(result, .ok)`.

Semantics follow expr: `/` is float division (x / 0 is +Inf, 0 / 0 is NaN), `%` takes integers,
`**` gives a float, `&&`, `||`, `!` and `?:` need bools, a missing map key is nil. Argo compiles each
condition against the measured value, so expr's type check sees the value's type: comparing a
known number with a string (`asFloat(result) == "1.1"`) is an error, not false (checker.py). Argo's
`default(x, y)` and `isNil(x)` look at `result`, whatever x is.

Safety by construction: the source is parsed by our own parser and compiled to Python closures over
our own syntax tree; nothing is ever handed to eval/exec, and there is no attribute access at all.
Unknown names and functions, '.name' on anything but a map, and strings containing '__' are rejected
at compile time, with the offending position. Source length, nesting, size, literal exponents,
ranges, patterns and the work predicates may do are bounded (see limits.py); regular expressions
run on RE2 (linear time); evaluation raises nothing but ConditionEvalError.
"""

from meshshift.analysis.expr.compiler import Condition, compile_condition
from meshshift.analysis.expr.errors import ConditionEvalError, ConditionSyntaxError, EmptyResultIndexError

__all__ = [
    "Condition",
    "ConditionEvalError",
    "ConditionSyntaxError",
    "EmptyResultIndexError",
    "compile_condition",
]

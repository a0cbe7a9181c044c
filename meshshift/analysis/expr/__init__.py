"""Analysis conditions: a safe, expr-lang compatible subset for `successCondition` / `failureCondition`.

The language (as Argo Rollouts evaluates it with github.com/expr-lang/expr):

- one variable, `result`: a number, a list of numbers, or any JSON value from a web provider;
- literals: integers, floats (`1e3`, `.5`), strings in double or single quotes, `true`, `false`,
  `nil`, lists `[1, 2]`;
- operators, with expr's precedence: `?:`, `||`/`or`, `&&`/`and`, comparisons and `in`/`not in`,
  `+ -`, `* / %`, prefix `! not - +`, `**`/`^`, `??`; indexing `x[0]`, `x[-1]`, `x["key"]`;
- functions: len, isNaN, isInf, isNil, default, asInt, asFloat, abs, min, max, and, with a predicate
  in which `#` is the current element, all, any, none, one, filter, map, count and sum:
  `all(result, {# > 0})`.

Semantics follow expr: `/` is float division (x / 0 is +Inf, 0 / 0 is NaN), `%` takes integers,
`**` gives a float, `&&`, `||`, `!` and `?:` need bools, comparing unlike types is an error, a
missing map key is nil. `default(x, y)` and `isNil(x)` look at x itself (Argo looks at `result`).

Safety by construction: the source is parsed by our own parser and compiled to Python closures over
our own syntax tree; nothing is ever handed to eval/exec, and there is no attribute access at all.
Unknown names and functions, '.', and strings containing '__' are rejected at compile time, with
the offending position. Source length, nesting, size, literal exponents and the work predicates may
do are bounded (see limits.py), and evaluation raises nothing but ConditionEvalError.
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

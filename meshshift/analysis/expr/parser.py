"""Parse a condition into a syntax tree with expr-lang's grammar, checking it as we go.

Operator precedence, loosest first, as in expr: `|` (the pipe: `x | f(y)` is `f(x, y)`); `?:`
(right-associative); `||` `or`; `&&` `and`; `==` `!=` `<` `<=` `>` `>=` `in` `contains` `startsWith`
`endsWith` `matches` and their `not` forms (`a < b < c` means `a < b && b < c`); `..`; `+` `-`;
`*` `/` `%`; prefix `!` `not` (so `!a + b` is `(!a) + b`, but `!a * b` is `!(a * b)`); prefix `-` `+`;
`**` `^` (right-associative); `??`, which expr refuses to mix with other operators unparenthesized.
`let x = value; body` declares a variable wherever an expression may start.

A hand-written Pratt parser rather than lark: it names what it expected at the exact offset, and it
bounds its own recursion, so that pathological input yields a ConditionSyntaxError, not a
RecursionError.
"""

from __future__ import annotations

import keyword
from dataclasses import replace

from meshshift.analysis.expr.errors import ConditionSyntaxError
from meshshift.analysis.expr.functions import ALL_FUNCTION_NAMES, FUNCTIONS, PREDICATE_FUNCTIONS
from meshshift.analysis.expr.lexer import WORD_OPERATORS, Token, TokenKind, tokenize
from meshshift.analysis.expr.limits import (
    MAX_CONSTANT_EXPONENT,
    MAX_DEPTH,
    MAX_LIST_LITERAL_ITEMS,
    MAX_NODES,
    MAX_SLOTS,
    MAX_SOURCE_LENGTH,
)
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
)

_COMPARISON_PRECEDENCE = 20
_BINARY_PRECEDENCE = {
    "|": 0,
    "||": 10, "or": 10,
    "&&": 15, "and": 15,
    "==": 20, "!=": 20, "<": 20, "<=": 20, ">": 20, ">=": 20, "in": 20,
    "contains": 20, "startsWith": 20, "endsWith": 20, "matches": 20,
    "..": 25,
    "+": 30, "-": 30,
    "*": 60, "/": 60, "%": 60,
    "**": 100, "^": 100,
    "??": 500,
}  # fmt: skip
_UNARY_PRECEDENCE = {"!": 50, "not": 50, "-": 90, "+": 90}
_RIGHT_ASSOCIATIVE = frozenset({"**", "^"})
_ORDERING = frozenset({"<", "<=", ">", ">="})
_LITERAL_NAMES: dict[str, object] = {"true": True, "false": False, "nil": None}
_NAME_SUGGESTIONS = {"None": "nil", "null": "nil", "True": "true", "False": "false"}
# What may follow `not` as a binary operator: `x not in y`, `s not contains t`, ...
_NEGATABLE = frozenset({"in", "contains", "startsWith", "endsWith", "matches"})
_CLOSERS = {")": "(", "]": "[", "}": "{", ":": "?"}


def parse(source: str) -> tuple[Node, int]:
    """The syntax tree of `source` and the number of frame slots it uses; ConditionSyntaxError if it
    is not a valid, allowed condition."""
    if len(source) > MAX_SOURCE_LENGTH:
        raise ConditionSyntaxError(
            f"the condition is too long ({len(source)} characters; the limit is {MAX_SOURCE_LENGTH})",
            source,
            MAX_SOURCE_LENGTH,
        )
    parser = _Parser(source, tokenize(source))
    tree = parser.parse()
    return tree, parser.slot_count


class _Parser:
    def __init__(self, source: str, tokens: list[Token]) -> None:
        self._source = source
        self._tokens = tokens
        self._index = 0
        self._nesting = 0  # of _expression calls: parentheses nest here without adding nodes
        self._node_count = 0
        self._predicate_slots: list[int] = []  # innermost last; `#` is the element of the last one
        self._variables: dict[str, list[int]] = {}  # let names in scope -> their slots, innermost last
        self.slot_count = 0

    def parse(self) -> Node:
        if self._current.kind is TokenKind.END:
            raise self._error("the condition is empty", 0)
        node = self._expression(0)
        token = self._current
        if token.kind is not TokenKind.END:
            raise self._error(self._unexpected_after_expression(token), token.start)
        return node

    # token helpers

    @property
    def _current(self) -> Token:
        return self._tokens[self._index]

    def _advance(self) -> Token:
        token = self._tokens[self._index]
        if token.kind is not TokenKind.END:
            self._index += 1
        return token

    def _at(self, operator: str) -> bool:
        token = self._tokens[self._index]
        return token.kind is TokenKind.OPERATOR and token.value == operator

    def _expect(self, operator: str, opener: Token) -> Token:
        if self._at(operator):
            return self._advance()
        token = self._current
        raise self._error(
            f"expected '{operator}' to close the '{opener.text}' at col {opener.start}, "
            f"found {token.describe()}",
            token.start,
        )

    def _error(self, reason: str, position: int) -> ConditionSyntaxError:
        return ConditionSyntaxError(reason, self._source, position)

    def _depth(self, position: int, *children: Node) -> int:
        """Count a new node and return its depth, enforcing the size limits."""
        self._node_count += 1
        if self._node_count > MAX_NODES:
            raise self._error(f"the condition is too large (more than {MAX_NODES} parts)", position)
        depth = 1 + max((child.depth for child in children), default=0)
        if depth > MAX_DEPTH:
            raise self._error(self._too_deep(), position)
        return depth

    def _new_slot(self, position: int) -> int:
        if self.slot_count >= MAX_SLOTS:
            raise self._error(f"too many predicates and variables (the limit is {MAX_SLOTS})", position)
        self.slot_count += 1
        return self.slot_count - 1

    @staticmethod
    def _too_deep() -> str:
        return f"the condition is nested too deeply (more than {MAX_DEPTH} levels)"

    # grammar

    def _expression(self, min_precedence: int) -> Node:
        self._nesting += 1
        if self._nesting > MAX_DEPTH:
            raise self._error(self._too_deep(), self._current.start)
        if min_precedence == 0 and self._at("let"):
            node = self._let()
            self._nesting -= 1
            return node
        left = self._unary()
        previous_operator = ""
        while (token := self._current).kind is TokenKind.OPERATOR:
            operator = str(token.value)
            if operator == "not":
                following = self._tokens[self._index + 1]
                if not (following.kind is TokenKind.OPERATOR and following.value in _NEGATABLE):
                    raise self._error(
                        f"expected 'in', 'contains', 'startsWith', 'endsWith' or 'matches' after 'not', "
                        f"found {following.describe()}",
                        following.start,
                    )
                operator = f"not {following.value}"
                precedence = _COMPARISON_PRECEDENCE
            else:
                precedence = _BINARY_PRECEDENCE.get(operator, -1)  # -1: not a binary operator
            if precedence < min_precedence:
                break
            if previous_operator == "??" and operator != "??":
                raise self._error(
                    f"'??' and '{operator}' cannot be mixed without parentheses: "
                    f"write (a ?? b) {operator} c or a ?? (b {operator} c)",
                    token.start,
                )
            self._advance()
            if operator.startswith("not "):
                self._advance()
            if operator == "|":
                left = self._pipe(left, token)
            elif operator in _ORDERING:
                left = self._ordering_chain(left, token)
            else:
                right = self._expression(precedence if operator in _RIGHT_ASSOCIATIVE else precedence + 1)
                if operator in _RIGHT_ASSOCIATIVE:
                    self._check_exponent(right)
                left = self._binary(operator, left, right, token)
            previous_operator = operator
        if min_precedence == 0 and self._at("?"):
            left = self._ternary(left)
        self._nesting -= 1
        return left

    def _let(self) -> Node:
        """`let name = value; body`: the variable is visible in the body only."""
        keyword = self._advance()
        name_token = self._current
        if name_token.kind is not TokenKind.NAME:
            raise self._error(
                f"expected a variable name after 'let', found {name_token.describe()}", name_token.start
            )
        name = str(name_token.value)
        if name == "result" or name in _LITERAL_NAMES or name in FUNCTIONS or name in PREDICATE_FUNCTIONS:
            raise self._error(
                f"'{name}' is already defined; choose another name for the variable", name_token.start
            )
        self._advance()
        if not self._at("="):
            raise self._error(
                f"expected '=' after 'let {name}', found {self._current.describe()}", self._current.start
            )
        self._advance()
        value = self._expression(0)
        if not self._at(";"):
            raise self._error(
                f"expected ';' after the value of '{name}', found {self._current.describe()}",
                self._current.start,
            )
        self._advance()
        slot = self._new_slot(name_token.start)
        self._variables.setdefault(name, []).append(slot)
        try:
            body = self._expression(0)
        finally:
            self._variables[name].pop()
        depth = self._depth(keyword.start, value, body)
        return Let(name, slot, value, body, keyword.start, body.end, depth)

    def _pipe(self, left: Node, bar: Token) -> Node:
        """`x | f(a)` is `f(x, a)`; `x | all({...})` is `all(x, {...})`."""
        token = self._current
        if token.kind is not TokenKind.NAME or not self._tokens[self._index + 1].value == "(":
            raise self._error(
                f"expected a function call after '|', as in result | len(), found {token.describe()}; "
                "use '||' (or 'or') for a logical or",
                token.start,
            )
        self._advance()
        if str(token.value) not in FUNCTIONS and str(token.value) not in PREDICATE_FUNCTIONS:
            raise self._error(self._unknown_function(str(token.value)), token.start)
        return self._call(token, piped=left)

    def _binary(self, operator: str, left: Node, right: Node, token: Token) -> Binary:
        depth = self._depth(token.start, left, right)
        return Binary(operator, left, right, left.start, right.end, depth)

    def _ordering_chain(self, left: Node, token: Token) -> Node:
        """`a < b <= c` means `a < b && b <= c`, as in expr."""
        right = self._expression(_COMPARISON_PRECEDENCE + 1)
        chain: Node = self._binary(str(token.value), left, right, token)
        while (token := self._current).kind is TokenKind.OPERATOR and token.value in _ORDERING:
            self._advance()
            following = self._expression(_COMPARISON_PRECEDENCE + 1)
            comparison = self._binary(str(token.value), right, following, token)
            chain = self._binary("&&", chain, comparison, token)
            right = following
        return chain

    def _check_exponent(self, exponent: Node) -> None:
        if (
            isinstance(exponent, Literal)
            and isinstance(exponent.value, int | float)
            and not isinstance(exponent.value, bool)
            and abs(exponent.value) > MAX_CONSTANT_EXPONENT
        ):
            raise self._error(
                f"exponent too large: {self._source[exponent.start : exponent.end]} "
                f"(at most {MAX_CONSTANT_EXPONENT} in absolute value)",
                exponent.start,
            )

    def _ternary(self, condition: Node) -> Ternary:
        question = self._advance()
        if self._at(":"):  # `a ?: b` is `a ? a : b`, as in expr
            self._advance()
            if_false = self._expression(0)
            depth = self._depth(question.start, condition, if_false)
            return Ternary(condition, condition, if_false, condition.start, if_false.end, depth)
        if_true = self._expression(0)
        if not self._at(":"):
            token = self._current
            raise self._error(
                f"expected ':' for the '?' at col {question.start}, found {token.describe()}", token.start
            )
        self._advance()
        if_false = self._expression(0)
        depth = self._depth(question.start, condition, if_true, if_false)
        return Ternary(condition, if_true, if_false, condition.start, if_false.end, depth)

    def _unary(self) -> Node:
        token = self._current
        operator = str(token.value)
        if token.kind is not TokenKind.OPERATOR or operator not in _UNARY_PRECEDENCE:
            return self._primary()
        self._advance()
        operand = self._expression(_UNARY_PRECEDENCE[operator])
        value = operand.value if isinstance(operand, Literal) else None
        if operator in ("-", "+") and isinstance(value, int | float) and not isinstance(value, bool):
            # a signed number literal: folded, so that `2 ** -99999` is caught by _check_exponent
            return Literal(-value if operator == "-" else value, token.start, operand.end, operand.depth)
        depth = self._depth(token.start, operand)
        return Unary(operator, operand, token.start, operand.end, depth)

    def _primary(self) -> Node:
        token = self._current
        node: Node
        if token.kind in (TokenKind.NUMBER, TokenKind.STRING):
            self._advance()
            node = Literal(token.value, token.start, token.end, self._depth(token.start))
        elif token.kind is TokenKind.NAME:
            node = self._name()
        elif self._at("("):
            opener = self._advance()
            inner = self._expression(0)
            closer = self._expect(")", opener)
            node = replace(inner, start=opener.start, end=closer.end)  # so messages quote the parentheses
        elif self._at("["):
            node = self._list()
        elif self._at("#"):
            node = self._element()
        elif self._at(".") and self._predicate_slots:
            # `.field` inside a predicate is `#.field`, as in expr: all(result, .ok)
            element = ElementRef(
                self._predicate_slots[-1], token.start, token.start, self._depth(token.start)
            )
            node = self._map_key(element)
        elif self._at("."):
            raise self._error(
                "'.name' without a value before it only works inside a predicate, as in all(result, {.ok})",
                token.start,
            )
        elif self._at("{"):
            raise self._error(
                "'{' starts a predicate, which is only allowed as the second argument of "
                "all, any, none, one, filter, map, count, sum, find and the like (map literals are not "
                "supported)",
                token.start,
            )
        else:
            raise self._error(self._missing_expression(token), token.start)
        return self._postfix(node)

    def _postfix(self, node: Node) -> Node:
        optional = False  # once `?.` appears, the rest of the chain is nil-safe too (expr's chains)
        while self._at("[") or self._at(".") or self._at("?."):
            if self._at("?."):
                optional = True
                self._advance()
                if not self._at("["):
                    node = self._map_key(node, optional=True, consumed_dot=True)
                    continue
            elif self._at("."):
                node = self._map_key(node, optional=optional)
                continue
            opener = self._advance()
            if self._at(":"):
                raise self._error("slices like x[1:3] are not supported", self._current.start)
            key = self._expression(0)
            if self._at(":"):
                raise self._error("slices like x[1:3] are not supported", self._current.start)
            closer = self._expect("]", opener)
            node = Index(node, key, node.start, closer.end, self._depth(opener.start, node, key), optional)
        return node

    def _map_key(self, node: Node, *, optional: bool = False, consumed_dot: bool = False) -> Node:
        """`x.name` is `x["name"]`: a map lookup, never an attribute."""
        if not consumed_dot:
            self._advance()
        token = self._advance()
        key = Literal(str(token.value), token.start, token.end, self._depth(token.start))
        return Index(node, key, node.start, token.end, self._depth(token.start, node, key), optional)

    def _name(self) -> Node:
        token = self._advance()
        name = str(token.value)
        if name in _LITERAL_NAMES:
            return Literal(_LITERAL_NAMES[name], token.start, token.end, self._depth(token.start))
        if self._at("("):
            return self._call(token)
        if name == "result":
            return ResultRef(token.start, token.end, self._depth(token.start))
        if self._variables.get(name):
            return Variable(name, self._variables[name][-1], token.start, token.end, self._depth(token.start))
        raise self._error(self._unknown_name(name), token.start)

    def _unknown_name(self, name: str) -> str:
        if name in FUNCTIONS or name in PREDICATE_FUNCTIONS:
            return f"'{name}' is a function: call it, as in {name}(result)"
        if name in _NAME_SUGGESTIONS:
            return f"unknown name '{name}'; did you mean '{_NAME_SUGGESTIONS[name]}'?"
        if keyword.iskeyword(name):
            return f"'{name}' is Python syntax, which conditions do not use"
        where = " (and '#', the current element)" if self._predicate_slots else ""
        declared = [variable for variable, slots in self._variables.items() if slots]
        variables = f", and the variables {', '.join(sorted(declared))}" if declared else ""
        return f"unknown name '{name}'; the only variable is 'result'{where}{variables}"

    @staticmethod
    def _unknown_function(name: str) -> str:
        return f"unknown function '{name}'; allowed: {', '.join(ALL_FUNCTION_NAMES)}"

    def _element(self) -> ElementRef:
        token = self._advance()
        if not self._predicate_slots:
            raise self._error(
                "'#' (the current element) can only be used inside a predicate, as in all(result, {# > 0})",
                token.start,
            )
        following = self._current
        if (
            following.kind in (TokenKind.NAME, TokenKind.OPERATOR)
            and following.start == token.end
            and (following.kind is TokenKind.NAME or following.value in WORD_OPERATORS)
        ):  # `#index` and the like
            raise self._error(
                f"'#{following.text}' is not supported; '#' alone is the current element", token.start
            )
        return ElementRef(self._predicate_slots[-1], token.start, token.end, self._depth(token.start))

    def _list(self) -> ListLiteral:
        opener = self._advance()
        items = self._sequence(opener, "]", MAX_LIST_LITERAL_ITEMS)
        closer = self._advance()
        return ListLiteral(tuple(items), opener.start, closer.end, self._depth(opener.start, *items))

    def _sequence(self, opener: Token, closing: str, max_items: int) -> list[Node]:
        """Comma-separated expressions up to (not including) `closing`; a trailing comma is fine."""
        items: list[Node] = []
        while not self._at(closing):
            if items:
                if not self._at(","):
                    token = self._current
                    unclosed = (
                        f"; the '{opener.text}' at col {opener.start} is not closed"
                        if token.kind is TokenKind.END
                        else ""
                    )
                    raise self._error(
                        f"expected ',' or '{closing}', found {token.describe()}{unclosed}", token.start
                    )
                self._advance()
                if self._at(closing):
                    break
            if len(items) == max_items:
                raise self._error(f"too many items (the limit is {max_items})", self._current.start)
            items.append(self._expression(0))
        return items

    def _call(self, name_token: Token, piped: Node | None = None) -> Call:
        name = str(name_token.value)
        if name == "result":
            raise self._error(f"'{name}' is not a function", name_token.start)
        if name in PREDICATE_FUNCTIONS:
            return self._predicate_call(name_token, piped)
        if name not in FUNCTIONS:
            raise self._error(self._unknown_function(name), name_token.start)
        opener = self._advance()
        arguments = ([] if piped is None else [piped]) + self._sequence(opener, ")", MAX_NODES)
        closer = self._advance()
        function = FUNCTIONS[name]
        count = len(arguments)
        if function.max_arguments is None and count < function.min_arguments:
            raise self._error(
                f"{name}() takes at least {function.min_arguments} argument, got {count}", name_token.start
            )
        if function.max_arguments is not None and count != function.max_arguments:
            expected = function.max_arguments
            plural = "s" if expected > 1 else ""
            raise self._error(f"{name}() takes {expected} argument{plural}, got {count}", name_token.start)
        start = name_token.start if piped is None else piped.start
        depth = self._depth(name_token.start, *arguments)
        return Call(name, tuple(arguments), None, start, closer.end, depth)

    def _predicate_call(self, name_token: Token, piped: Node | None) -> Call:
        name = str(name_token.value)
        example = f"{name}(result, {{# > 0}})"
        opener = self._advance()
        if piped is None:
            if self._at(")"):
                raise self._error(
                    f"{name}() needs a list to go through, as in {example}", self._current.start
                )
            collection = self._expression(0)
            separated = self._at(",")
            if separated:
                self._advance()
        else:
            collection = piped
            separated = True
        predicate: Node | None = None
        slot = -1
        if separated and not self._at(")"):
            slot = self._new_slot(name_token.start)
            predicate = self._predicate(slot)
            if self._at(","):
                self._advance()
        if predicate is None and not PREDICATE_FUNCTIONS[name]:
            raise self._error(
                f"{name}() needs a predicate as its second argument, as in {example}", self._current.start
            )
        closer = self._expect(")", opener)
        children = (collection,) if predicate is None else (collection, predicate)
        depth = self._depth(name_token.start, *children)
        start = name_token.start if piped is None else piped.start
        return Call(name, (collection,), predicate, start, closer.end, depth, slot)

    def _predicate(self, slot: int) -> Node:
        """A predicate: an expression in which '#' is the current element, in braces as in expr
        (which also accepts it without them)."""
        opener = self._current
        braced = self._at("{")
        if braced:
            self._advance()
        self._predicate_slots.append(slot)
        try:
            body = self._expression(0)
        finally:
            self._predicate_slots.pop()
        if braced:
            self._expect("}", opener)
        return body

    # messages

    def _missing_expression(self, token: Token) -> str:
        if self._index == 0:
            return f"expected an expression, found {token.describe()}"
        previous = self._tokens[self._index - 1]
        found = "" if token.kind is TokenKind.END else f", found {token.describe()}"
        return f"expected an expression after {previous.describe()}{found}"

    def _unexpected_after_expression(self, token: Token) -> str:
        if token.kind is TokenKind.OPERATOR and token.value in _CLOSERS:
            return f"unexpected {token.describe()} with no matching '{_CLOSERS[str(token.value)]}'"
        return f"unexpected {token.describe()}; expected an operator or the end of the condition"

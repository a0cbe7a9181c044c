"""Bounds that keep compiling and evaluating any condition cheap, whatever its author wrote."""

MAX_SOURCE_LENGTH = 2000
# Nesting of parentheses, operators and calls; keeps the parser, compiler and evaluator far from
# Python's recursion limit.
MAX_DEPTH = 64
MAX_NODES = 500
MAX_LIST_LITERAL_ITEMS = 256
# A literal exponent beyond this is certainly a mistake (or an attack): 10 ** 1000 already overflows.
MAX_CONSTANT_EXPONENT = 1000
# Elements that predicates (all, any, filter, map, ...) may visit during one evaluation, nested
# predicates included: about 50 ms of work, so a condition cannot stall the event loop.
MAX_PREDICATE_ITERATIONS = 100_000
# `a..b` builds a list: as many numbers as predicates may visit.
MAX_RANGE_ITEMS = MAX_PREDICATE_ITERATIONS
# A `matches` pattern; RE2 matches in linear time, so only its size needs a bound.
MAX_PATTERN_LENGTH = 1000
# `let` variables and predicates in one condition (each takes a slot of the evaluation frame).
MAX_SLOTS = 64

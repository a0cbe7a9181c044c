"""Mutated specs for the spec parsers, and the check that they answer without crashing.

A fuzzed spec starts from a real document (the tutorial's YAML, Argo Rollouts' examples and
docs, the exercise files), is mutated as a tree (values swapped for hostile ones, keys
dropped or added, lists grown or nested deep) and then sometimes as text (characters
inserted, deleted, lines duplicated or cut), as the 10,000 mutated specs of issue 12.8 were.

Every parser that reads it must answer with its documented outcome: `meshshift lint`'s
findings (check_sources never raises), SpecError from parse_deployment / parse_template /
parse_standalone, RolloutFileError from a rollout file. Anything else is a crash.
`bench/chaos.py` runs the long version in worker processes, so a hang can be cut off.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any

import yaml

from meshshift.spec.annotations import parse_deployment
from meshshift.spec.documents import check_sources
from meshshift.spec.errors import SpecError
from meshshift.spec.templates import TEMPLATE_KINDS, parse_template
from meshshift.spec.yamldoc import load_all
from meshshift.standalone.daemon import RolloutFileError, parse_rollout_text
from tests.reliability.hostile import deployment_with_steps

TESTS = Path(__file__).resolve().parents[1]
CORPUS_DIRS = (TESTS / "data" / "seed", TESTS / "data" / "exercise", TESTS / "conformance" / "argo")
HANG_SECONDS = 5.0


def _deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


HOSTILE_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 2**63, 10**400, 1e308, float("inf"), float("nan"), 0.5, "", " ",
    "NaN", "-5s", "0s", "1h30mx", "999999999999999999h", "9" * 5000, "x" * 20_000, "\x00\x01\x7f",
    "中文", "{{args.x}}", "{{ args. }}", "{{args.service-name}}{{args.", "result[0] >= {{args.t}}",
    "result[0] >= 0.9 || true", "((((((", "'", '"', "`", "$(rm -rf /)", "../../etc/passwd",
    "http://.evil.com/", "X-Canary\r\nX-Admin: 1", "*", "[", "{", "0x", "1e9999", "-0",
    [], {}, [None], [[]], {"": None}, {"kind": "Rollout"}, list(range(300)), _deep(60), _deep(70),
    {"setWeight": 50}, {"pause": {"duration": "-1s"}}, {"analysis": {"templates": []}},
    {"setHeaderRoute": {"name": "qa", "match": [{"headerName": "", "headerValue": {"regex": "("}}]}},
    "@@DEEP@@", "@@DEEP@@",  # replaced by flow nesting 65, 985 or 3000 levels deep once dumped
)  # fmt: skip
DEEP = "@@DEEP@@"
TEXT_SNIPPETS = (
    "\n", " ", "  ", "-", ":", "- ", ": ", "&a ", "*a", "<<: ", "{", "}", "[", "]", "'", '"', "#", "---\n",
    "...\n", "!!python/object:os.system ", "!!binary ", "\t", "\\", "%YAML 1.1\n", "? ", "|\n", ">-\n",
    " " + "9" * 5000 + "\n",  # past Python's 4300-digit limit for int()
)  # fmt: skip


@cache
def corpus() -> tuple[Any, ...]:
    """Every YAML document of the corpus directories, parsed."""
    documents: list[Any] = []
    for directory in CORPUS_DIRS:
        for path in sorted(directory.rglob("*.y*ml")):
            loaded, error = load_all(path.read_text())
            if error is None:
                documents.extend(d.data for d in loaded if isinstance(d.data, dict | list))
    return tuple(documents)


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _nodes(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _nodes(child, (*path, index))
    return found


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


def mutate_tree(rng: random.Random, document: Any) -> Any:
    document = copy.deepcopy(document)
    for _ in range(rng.randint(1, 5)):
        paths = [p for p in _nodes(document) if p]
        if not paths:
            return rng.choice(HOSTILE_VALUES)
        path = rng.choice(paths)
        parent, key = _parent(document, path), path[-1]
        action = rng.random()
        if action < 0.45:
            parent[key] = copy.deepcopy(rng.choice(HOSTILE_VALUES))
        elif action < 0.6:
            del parent[key]
        elif action < 0.7:
            parent[key] = [parent[key]] if rng.random() < 0.5 else {"x": parent[key]}
        elif action < 0.8 and isinstance(parent, list):
            parent.insert(rng.randint(0, len(parent)), copy.deepcopy(parent[key]))
        elif action < 0.9 and isinstance(parent, dict):
            parent[rng.choice(("kind", "spec", "metrics", "steps", "provider", "args", "extra", "<<"))] = (
                copy.deepcopy(rng.choice(HOSTILE_VALUES))
            )
        elif isinstance(parent[key], str) and parent[key]:
            text = parent[key]
            cut = rng.randint(0, len(text))
            parent[key] = text[:cut] + rng.choice(("{{", "}}", "[", "(", "\\", "'", "%")) + text[cut:]
    return document


def mutate_text(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        position = rng.randint(0, len(text))
        action = rng.random()
        if action < 0.4:
            text = text[:position] + rng.choice(TEXT_SNIPPETS) + text[position:]
        elif action < 0.6:
            text = text[:position] + text[position + rng.randint(1, 20) :]
        elif action < 0.75:
            lines = text.splitlines(keepends=True)
            if lines:
                line = rng.randrange(len(lines))
                lines.insert(line, lines[line] * rng.randint(1, 3))
                text = "".join(lines)
        elif action < 0.8:
            text = text[:position]
        elif action < 0.88:  # deep nesting, as the 985-level specs that crashed lint
            levels = rng.choice((65, 985, 3000))
            text = text[:position] + "[" * levels + "x" + "]" * levels + text[position:]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                line = rng.randrange(len(lines))
                lines[line] = " " * rng.choice((1, 2, 4)) + lines[line]
                text = "".join(lines)
    return text


def _dump(document: Any) -> str:
    try:
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, ValueError, RecursionError):  # e.g. nan keys: write it as JSON-ish text
        return repr(document)


def fuzzed_spec(rng: random.Random) -> str:
    """One mutated spec, as the text a user would hand to meshshift."""
    document = mutate_tree(rng, rng.choice(corpus()))
    text = _dump(document)
    for form in (f"'{DEEP}'", f'"{DEEP}"', DEEP):
        while form in text:
            levels = rng.choice((65, 985, 3000))
            text = text.replace(form, "[" * levels + "x" + "]" * levels, 1)
    if rng.random() < 0.4:
        text = mutate_text(rng, text)
    if rng.random() < 0.2:  # the same inside an annotation: a Deployment carrying it as its steps
        text = yaml.safe_dump(deployment_with_steps(text))
    return text


def _documented(parse: Callable[[], object], *errors: type[Exception]) -> None:
    try:
        parse()
    except errors as error:
        str(error)  # the message renders


def check_spec(text: str) -> None:
    """Every parser's answer to `text`; raises only when one of them crashed."""
    findings = check_sources([("fuzz.yaml", text)])
    for finding in findings:
        str(finding)
        finding.as_json()
    documents, error = load_all(text)
    if error is not None:
        return
    for document in documents:
        data = document.data
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind == "Deployment":
            _documented(partial(parse_deployment, data), SpecError)
        elif kind in TEMPLATE_KINDS:
            _documented(partial(parse_template, data), SpecError)
        elif kind == "StandaloneRollout":
            _documented(partial(parse_rollout_text, text, "fuzz.yaml"), RolloutFileError)

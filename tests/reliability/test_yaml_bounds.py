"""YAML and JSON past meshshift's bounds are refused before anything expands (issue 12.6, 12.8).

The same bounds hold for `meshshift lint`, Deployment annotations, standalone rollout files
and AnalysisTemplate objects read from the cluster; the message names the bound.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from meshshift.cli.lint import run_lint
from meshshift.kube.resources import KubeApi
from meshshift.kube.templates import ClusterTemplates
from meshshift.spec.annotations import parse_deployment
from meshshift.spec.bounds import MAX_ALIASES, MAX_DEPTH, MAX_NODES, MAX_TEXT_CHARS, data_problem
from meshshift.spec.errors import SpecError
from meshshift.spec.yamldoc import load_all
from meshshift.standalone.daemon import RolloutFileError, parse_rollout_text
from tests.kube.harness import Cluster, KubeEnv, api_client
from tests.reliability.hostile import alias_bomb, deep_block, deep_flow, deployment_with_steps, many_aliases

MESHSHIFT = str(Path(sys.executable).parent / "meshshift")
NODES = f"more than {MAX_NODES} values once its aliases are expanded (meshshift's limit)"
DEPTH = f"nested more than {MAX_DEPTH} levels deep (meshshift's limit)"
ALIASES = f"more than {MAX_ALIASES} aliases (meshshift's limit)"

HOSTILE = {
    "alias-bomb": (alias_bomb(6), NODES),
    "alias-bomb-7": (alias_bomb(7), NODES),
    "deep-block-985": (deep_block(985), DEPTH),
    "deep-block-65": (deep_block(MAX_DEPTH + 1), DEPTH),
    "deep-flow": (deep_flow(MAX_DEPTH + 1), DEPTH),
    "many-aliases": (many_aliases(MAX_ALIASES + 1), ALIASES),
    "recursive": ("- &r [a, *r]\n", "alias *r is inside the node it names (recursive YAML)"),
    "too-long": ("- " + "x" * MAX_TEXT_CHARS + "\n", f"more than meshshift reads ({MAX_TEXT_CHARS})"),
}
CASES = pytest.mark.parametrize(("text", "reason"), list(HOSTILE.values()), ids=list(HOSTILE))


@CASES
def test_load_all_refuses_before_composing(text: str, reason: str) -> None:
    documents, error = load_all(text)
    assert documents == [] and error is not None
    assert error.message.endswith(reason)


def test_within_the_bounds_yaml_reads_as_before() -> None:
    documents, error = load_all(alias_bomb(3) + deep_block(MAX_DEPTH).replace("- ", "- ", 1))
    assert error is None and len(documents) == 1
    assert load_all(many_aliases(MAX_ALIASES))[1] is None
    assert load_all(deep_block(MAX_DEPTH))[1] is None
    merged, error = load_all("base: &b {interval: 30s, count: 4}\nmetric: {<<: *b, name: x}\n")
    assert error is None and merged[0].data["metric"] == {"interval": "30s", "count": 4, "name": "x"}


@CASES
def test_lint_reports_the_bound_as_an_error(text: str, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    assert run_lint([str(path)], "json", stdout=out, stderr=err) == 1
    findings = json.loads(out.getvalue())
    assert len(findings) == 1 and findings[0]["severity"] == "error"
    assert findings[0]["reason"].endswith(reason)


async def test_the_lint_command_never_prints_a_traceback_on_hostile_files(tmp_path: Path) -> None:
    paths = []
    for name, (text, _) in HOSTILE.items():
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(text)
    process = await asyncio.create_subprocess_exec(
        MESHSHIFT, "lint", *map(str, paths), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 1  # findings, not a crash
    assert "Traceback" not in stderr.decode()
    assert len(stdout.decode().splitlines()) == len(HOSTILE)
    assert stderr.decode().strip().endswith(f"{len(HOSTILE)} errors, 0 warnings in {len(HOSTILE)} files")


@CASES
def test_an_annotation_past_a_bound_is_an_invalid_spec_naming_it(text: str, reason: str) -> None:
    with pytest.raises(SpecError) as refused:
        parse_deployment(deployment_with_steps(text))
    (issue,) = refused.value.errors
    assert issue.path == 'metadata.annotations["meshshift.io/steps"]'
    assert issue.reason.endswith(reason)


STANDALONE_HEAD = (
    "apiVersion: meshshift.io/v1alpha1\nkind: StandaloneRollout\nmetadata: {name: shop}\nspec:\n"
    "  router: {envoy: {listen: '127.0.0.1:1'}}\n  stable: {endpoints: ['127.0.0.1:2']}\n"
    "  canary: {endpoints: ['127.0.0.1:3']}\n  steps:\n"
)


@pytest.mark.parametrize("name", ["alias-bomb", "deep-block-985", "many-aliases", "recursive"])
def test_a_standalone_file_past_a_bound_is_refused_naming_it(name: str) -> None:
    text, reason = HOSTILE[name]
    steps = "".join("  " + line + "\n" for line in text.splitlines())
    with pytest.raises(RolloutFileError) as refused:
        parse_rollout_text(STANDALONE_HEAD + steps, "rollout.yaml")
    assert str(refused.value).startswith("rollout.yaml: invalid YAML at line ")
    assert str(refused.value).endswith(reason)


def nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = {"a": value}
    return value


def test_parsed_json_gets_the_same_bounds() -> None:
    assert data_problem(nested(MAX_DEPTH - 1)) is None
    assert data_problem(nested(MAX_DEPTH + 1)) == DEPTH
    assert data_problem(["x"] * MAX_NODES) == f"more than {MAX_NODES} values (meshshift's limit)"
    assert data_problem(nested(100_000)) == DEPTH  # never recursive itself


def template(**provider: Any) -> dict[str, Any]:
    return {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "hostile"},
        "spec": {"metrics": [{"name": "m", "provider": {"web": {"url": "http://127.0.0.1:1/", **provider}}}]},
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [(nested(MAX_DEPTH + 5), DEPTH), (["v"] * (MAX_NODES + 1), f"more than {MAX_NODES} values")],
    ids=["deep", "wide"],
)
async def test_an_analysis_template_object_past_a_bound_is_refused(
    body: Any, reason: str, kube_env: KubeEnv
) -> None:
    async with api_client(kube_env) as client:
        await Cluster(kube_env, client).create_template(template(jsonBody=body))
        templates = ClusterTemplates(KubeApi(client, request_timeout=5.0), namespace=kube_env.namespace)
        with pytest.raises(SpecError, match=r"AnalysisTemplate hostile: ") as refused:
            await templates.get("hostile")
    assert reason in str(refused.value)

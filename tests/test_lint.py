"""`meshshift lint`: output formats, exit codes, documents and files checked together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest

from meshshift.cli.lint import main

SEED = Path(__file__).parent / "data" / "seed"

TEMPLATE = dedent(
    """\
    apiVersion: argoproj.io/v1alpha1
    kind: AnalysisTemplate
    metadata: {name: error-rate}
    spec:
      args: [{name: service-name}]
      metrics:
      - name: errors
        interval: 30s
        count: 4
        successCondition: result[0] < 0.01
        provider:
          prometheus: {query: 'sum(rate(errors{service="{{args.service-name}}"}[1m]))'}
    """
)
ROLLOUT = dedent(
    """\
    apiVersion: argoproj.io/v1alpha1
    kind: Rollout
    metadata: {name: shop}
    spec:
      strategy:
        canary:
          steps:
          - setWeight: 20
          - analysis:
              templates: [{templateName: error-rate}]
              args: [{name: service-name, value: shop}]
          - setWeight: 100
    """
)
SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: shop}\nspec: {ports: [{port: 80}]}\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_clean_files_exit_zero_and_print_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "all.yaml", "---\n".join([SERVICE, TEMPLATE, ROLLOUT]))
    code, lines, err = run(capsys, path)
    assert (code, lines) == (0, [])
    assert "0 errors, 0 warnings in 1 file" in err


def test_text_format_is_file_document_path_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = ROLLOUT.replace("setWeight: 20", "setWeight: 200").replace(
        "value: shop}", "value: shop}, {name: x}"
    )
    path = write(tmp_path, "all.yaml", "---\n".join([SERVICE, TEMPLATE, broken]))
    code, lines, err = run(capsys, path)
    assert code == 1
    assert lines == [
        f"{path}:2:spec.strategy.canary.steps[0].setWeight: must be between 0 and 100, got 200",
        f'{path}:2:spec.strategy.canary.steps[1].analysis.args[1]: arg "x" needs a value or a valueFrom',
        f'{path}:2:spec.strategy.canary.steps[1].analysis.args[1].name: unused arg "x": '
        'no referenced template ("error-rate") declares it',
    ]
    assert "3 errors, 0 warnings" in err


def test_warnings_alone_exit_zero_and_are_prefixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = dedent(
        """\
        apiVersion: argoproj.io/v1alpha1
        kind: AnalysisTemplate
        metadata: {name: todo}
        spec:
          metrics:
          - name: errors   # TODO: add a provider
        """
    )
    path = write(tmp_path, "t.yaml", template)
    code, lines, _ = run(capsys, path)
    assert code == 0
    assert lines == [
        f'{path}:0:spec.metrics[0]: warning: metric "errors" has no provider: it measures as Error '
        "until a provider is set"
    ]


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path, "r.yaml", TEMPLATE + "---\n" + ROLLOUT.replace("setWeight: 100", "pause: {duration: 1d}")
    )
    code, lines, _ = run(capsys, path, "-o", "json")
    assert code == 1
    assert json.loads("\n".join(lines)) == [
        {
            "file": path,
            "document": 1,
            "path": "spec.strategy.canary.steps[2].pause.duration",
            "reason": '"1d" is not a duration (there is no "d" unit: use hours, e.g. "24h"); '
            'write seconds (30) or a Go duration with units ms, s, m, h ("500ms", "2m", "1h30m")',
            "severity": "error",
            "line": 25,
        }
    ]


def test_json_output_of_a_clean_file_is_an_empty_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = run(capsys, write(tmp_path, "t.yaml", TEMPLATE), "--output", "json")
    assert (code, json.loads("\n".join(lines))) == (0, [])


def test_template_in_one_file_used_in_another(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = write(tmp_path, "template.yaml", TEMPLATE)
    rollout = write(tmp_path, "rollout.yaml", ROLLOUT)
    assert run(capsys, template, rollout)[:2] == (0, [])
    code, lines, _ = run(capsys, rollout)
    assert code == 1
    assert lines == [
        f"{rollout}:0:spec.strategy.canary.steps[1].analysis.templates[0].templateName: "
        'unknown template "error-rate" (did you mean "sequential-error-rate"?)'  # a builtin
    ]


def test_multi_document_indices_and_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    steps = "- setWeight: 10\n- setWeight: 5\n"
    path = write(tmp_path, "multi.yaml", "---\n".join([SERVICE, steps, SERVICE, steps]))
    code, lines, _ = run(capsys, path, "-o", "json")
    findings = json.loads("\n".join(lines))
    assert code == 1
    assert [(f["document"], f["path"], f["line"]) for f in findings] == [
        (1, "steps[1].setWeight", 7),
        (3, "steps[1].setWeight", 15),
    ]


def test_yaml_syntax_error_has_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bad.yaml", SERVICE + "---\nkind: Rollout\nspec: [oops\n")
    code, lines, _ = run(capsys, path)
    assert code == 1
    (line,) = lines
    assert line.startswith(f"{path}:1:: invalid YAML at line 8")


def test_unreadable_and_foreign_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.yaml")
    service = write(tmp_path, "service.yaml", SERVICE)
    code, lines, _ = run(capsys, missing, service)
    assert code == 1
    assert lines[0].startswith(f"{missing}:-:: cannot read")
    assert lines[1] == (
        f"{service}:-:: warning: no meshshift document found (expected a Deployment, "
        "AnalysisTemplate, ClusterAnalysisTemplate, StandaloneRollout or Rollout)"
    )


def test_the_seed_lints_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, *sorted(str(path) for path in SEED.glob("*.yaml")))
    assert code == 0
    assert lines and all(": warning: " in line for line in lines)


def test_usage_error_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main([])
    assert raised.value.code == 2
    capsys.readouterr()


def test_python_dash_m(tmp_path: Path) -> None:
    rollout = write(tmp_path, "rollout.yaml", ROLLOUT.replace("setWeight: 100", "setWeight: 10"))
    result = subprocess.run(
        [sys.executable, "-m", "meshshift.cli.lint", rollout, "-"],
        input=TEMPLATE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == (
        f"{rollout}:0:spec.strategy.canary.steps[2].setWeight: "
        "setWeight 10 is lower than the earlier setWeight 20 at spec.strategy.canary.steps[0]; "
        'set the annotation meshshift.io/allow-non-monotonic: "true" on the Rollout if that is intended\n'
    )
    assert "1 error, 0 warnings in 2 files" in result.stderr

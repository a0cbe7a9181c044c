"""The command line never prints a traceback; `lint` exits 1 for findings only (issue 12.8).

Every case runs the real `meshshift` executable.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from pathlib import Path

import pytest
from aiohttp import web

from meshshift.cli.main import build_parser, daemon_settings
from tests.analysis.helpers import serve
from tests.reliability.spec_fuzz import fuzzed_spec

MESHSHIFT = str(Path(sys.executable).parent / "meshshift")


async def meshshift(*argv: str, stdin: int | None = None, stdout: int | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv if argv[0] == sys.executable else (MESHSHIFT, *argv),
        stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=stdout if stdout is not None else asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, (out or b"").decode(), err.decode()


def assert_no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and 'File "' not in stderr, stderr


async def test_lint_on_hundreds_of_mutated_specs_reports_findings_and_never_crashes(tmp_path: Path) -> None:
    rng = random.Random(985)
    paths = []
    for index in range(300):
        paths.append(tmp_path / f"spec-{index}.yaml")
        paths[-1].write_text(fuzzed_spec(rng))
    code, out, err = await meshshift("lint", "-o", "json", *map(str, paths))
    assert_no_traceback(err)
    findings = json.loads(out)
    errors = [f for f in findings if f["severity"] == "error"]
    assert code == (1 if errors else 0)
    assert errors  # mutated specs do have findings
    assert {f["file"] for f in findings} <= {str(p) for p in paths}


@pytest.mark.parametrize("command", [["get", "rollout", "shop"], ["run", "--listen", "127.0.0.1:1"]])
async def test_a_file_that_is_not_a_kubeconfig_is_an_error_message(
    command: list[str], tmp_path: Path
) -> None:
    garbage = tmp_path / "kubeconfig"
    garbage.write_text("root:x:0:0:root:/root:/bin/bash\n")
    code, _, err = await meshshift(*command, "--kubeconfig", str(garbage))
    assert_no_traceback(err)
    assert code == 1
    assert f"{garbage} is not a kubeconfig" in err


@pytest.mark.parametrize(
    "body", ["[]", "null", '{"phase": 5}', '{"name": "x", "namespace": 1, "steps": "x"}']
)
async def test_get_against_a_server_answering_nonsense_is_an_error_message(body: str) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with serve(app) as url:
        for command in (["get", "rollout", "shop", "-n", "standalone"], ["get", "rollouts"]):
            code, _, err = await meshshift(*command, "--server", url)
            assert_no_traceback(err)
            assert code == 1 and err.startswith("meshshift: ")


async def test_lint_with_standard_input_closed_is_a_finding() -> None:
    process = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        f"exec {MESHSHIFT} lint - <&-",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    code, out, err = process.returncode, stdout.decode(), stderr.decode()
    assert_no_traceback(err)
    assert code == 1 and "-:-:: cannot read: standard input is closed" in out


async def test_output_that_cannot_be_written_is_exit_74(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("- setWeight: 500\n")
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        code, _, err = await meshshift("lint", str(spec), stdout=full)
    finally:
        os.close(full)
    assert_no_traceback(err)
    assert code == 74 and "No space left on device" in err


async def test_a_bad_listen_address_is_a_usage_error() -> None:
    code, _, err = await meshshift("run", "--config", "rollout.yaml", "--listen", "nonsense")
    assert_no_traceback(err)
    assert code == 2 and "--listen: 'nonsense' is not host:port" in err


async def test_an_unexpected_error_is_one_line_and_exit_70(tmp_path: Path) -> None:
    """Whatever breaks inside (here: a recursion limit far too low for any parser), no traceback."""
    spec = tmp_path / "rollout.yaml"
    spec.write_text(Path(__file__).parents[1].joinpath("data", "seed", "01-rollout-basic.yaml").read_text())
    script = (
        "import sys\nfrom meshshift.cli.main import main\nsys.setrecursionlimit(40)\n"
        f"sys.exit(main(['lint', {str(spec)!r}]))"
    )
    code, _, err = await meshshift(sys.executable, "-c", script)
    assert_no_traceback(err)
    assert code == 70
    assert err.startswith("meshshift: internal error: RecursionError")
    assert "MESHSHIFT_TRACEBACK=1 shows the traceback" in err


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("MESHSHIFT_QPS", "fast", "MESHSHIFT_QPS: 'fast' is not a number"),
        (
            "MESHSHIFT_LOG_LEVEL",
            "loud",
            "MESHSHIFT_LOG_LEVEL: 'loud' is not one of DEBUG, INFO, WARNING, ERROR",
        ),
        ("MESHSHIFT_EVENT_LOOP", "libev", "MESHSHIFT_EVENT_LOOP: 'libev' is not one of uvloop, asyncio"),
    ],
)
async def test_a_variable_that_cannot_be_read_is_named_not_called_a_bug(
    variable: str, value: str, said: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        MESHSHIFT,
        "run",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, variable: value},
    )
    _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 1
    assert err.decode().strip() == f"meshshift: {said}"


@pytest.mark.parametrize(
    ("setting", "default", "in_env", "from_env", "on_flag", "from_flag"),
    [
        ("log_level", "INFO", "debug", "DEBUG", "warning", "WARNING"),
        ("event_loop", "uvloop", "AsyncIO", "asyncio", "uvloop", "uvloop"),
    ],
)
def test_a_choice_comes_from_the_flag_else_the_environment_in_any_case(
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    default: str,
    in_env: str,
    from_env: str,
    on_flag: str,
    from_flag: str,
) -> None:
    parser = build_parser()
    flag = "--" + setting.replace("_", "-")
    assert getattr(daemon_settings(parser.parse_args(["run"])), setting) == default
    monkeypatch.setenv("MESHSHIFT_" + setting.upper(), in_env)
    assert getattr(daemon_settings(parser.parse_args(["run"])), setting) == from_env
    assert getattr(daemon_settings(parser.parse_args(["run", flag, on_flag])), setting) == from_flag


async def test_at_warning_the_info_lines_are_left_out() -> None:
    program = (
        "import structlog\n"
        "from meshshift.logs import configure_logging\n"
        "configure_logging('json', {level!r})\n"
        "log = structlog.get_logger('t')\n"
        "log.info('an info line')\n"
        "log.warning('a warning line')\n"
    )
    said = {}
    for level in ("INFO", "WARNING"):
        code, _, err = await meshshift(sys.executable, "-c", program.format(level=level))
        assert code == 0, err
        said[level] = [json.loads(line)["event"] for line in err.splitlines()]
    assert said == {"INFO": ["an info line", "a warning line"], "WARNING": ["a warning line"]}


def test_demo_hold_is_seconds_not_below_zero(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["demo", "--hold", "90"]).hold == 90.0
    assert parser.parse_args(["demo"]).hold == 0.0
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["demo", "--hold", "-1"])
    assert exited.value.code == 2
    assert "--hold: -1 is below 0" in capsys.readouterr().err

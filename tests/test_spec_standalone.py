"""`kind: StandaloneRollout` files."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from meshshift.spec import SpecError, parse_standalone, parse_template
from meshshift.spec.model import (
    DEFAULT_ABORT_SCALE_DOWN_DELAY,
    DEFAULT_GRADUAL_INTERVAL,
    EnvoyRouterConfig,
    FailurePolicy,
    NginxRouterConfig,
    SetWeight,
    StandaloneRollout,
    TraefikRouterConfig,
    Upstream,
)
from meshshift.spec.standalone import host_port_problem

MINIMAL: dict[str, Any] = {
    "apiVersion": "meshshift.io/v1alpha1",
    "kind": "StandaloneRollout",
    "metadata": {"name": "myapp"},
    "spec": {
        "router": {"envoy": {"listen": "127.0.0.1:10000"}},
        "stable": {"endpoints": ["127.0.0.1:8081"]},
        "canary": {"endpoints": ["127.0.0.1:8082"]},
        "steps": [{"setWeight": 10}, {"pause": {"duration": "30s"}}, {"setWeight": 50}],
    },
}

INLINE_TEMPLATE: dict[str, Any] = {
    "apiVersion": "meshshift.io/v1alpha1",
    "kind": "AnalysisTemplate",
    "metadata": {"name": "errors"},
    "spec": {
        "metrics": [
            {
                "name": "error-rate",
                "successCondition": "result[0] < 0.05",
                "provider": {"meshshift": {"builtin": "request-success-rate"}},
            }
        ]
    },
}


def doc(**spec: Any) -> dict[str, Any]:
    result = copy.deepcopy(MINIMAL)
    for key, value in spec.items():
        if value is None:
            result["spec"].pop(key, None)
        else:
            result["spec"][key] = value
    return result


def error_paths(document: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as raised:
        parse_standalone(document)
    return [issue.path for issue in raised.value.errors]


def test_minimal_file_and_defaults() -> None:
    rollout = parse_standalone(doc())
    assert rollout == StandaloneRollout(
        name="myapp",
        router=EnvoyRouterConfig(listen="127.0.0.1:10000"),
        stable=Upstream(("127.0.0.1:8081",)),
        canary=Upstream(("127.0.0.1:8082",)),
        rollout=rollout.rollout,
        templates=(),
        state_file=None,
        extra={},
        metadata={"name": "myapp"},  # what fieldRef args read
    )
    spec = rollout.rollout
    assert [step for step in spec.steps if isinstance(step, SetWeight)] == [SetWeight(10), SetWeight(50)]
    assert spec.on_failure is FailurePolicy.ROLLBACK
    assert (spec.progress_deadline, spec.gradual_interval, spec.abort_scale_down_delay) == (
        600,
        DEFAULT_GRADUAL_INTERVAL,
        DEFAULT_ABORT_SCALE_DOWN_DELAY,
    )


def test_every_field() -> None:
    rollout = parse_standalone(
        doc(
            router={
                "envoy": {
                    "listen": "0.0.0.0:10000",
                    "admin": "127.0.0.1:9901",
                    "configDir": "/tmp/envoy",
                    "attach": True,
                    "baseId": 7,
                    "binary": "/usr/bin/envoy",
                }
            },
            templates=[INLINE_TEMPLATE],
            analysis={"templates": [{"templateName": "errors"}], "startingStep": 2},
            onFailure="freeze",
            progressDeadline="20m",
            stateFile="./myapp.state.json",
            allowNonMonotonic=True,
            gradualInterval="10s",
            abortScaleDownDelay=0,
            prometheus={"address": "http://127.0.0.1:9090"},
            metrics={"listen": "127.0.0.1:8090"},
        )
    )
    assert rollout.router == EnvoyRouterConfig(
        listen="0.0.0.0:10000",
        admin="127.0.0.1:9901",
        config_dir="/tmp/envoy",
        attach=True,
        base_id=7,
        binary="/usr/bin/envoy",
    )
    assert [template.name for template in rollout.templates] == ["errors"]
    assert rollout.state_file == "./myapp.state.json"
    spec = rollout.rollout
    assert spec.analysis is not None and spec.analysis.starting_step == 2
    assert (spec.on_failure, spec.progress_deadline, spec.gradual_interval, spec.abort_scale_down_delay) == (
        FailurePolicy.FREEZE,
        1200,
        10,
        0,
    )
    assert spec.allow_non_monotonic
    assert rollout.extra == {
        "prometheus": {"address": "http://127.0.0.1:9090"},
        "metrics": {"listen": "127.0.0.1:8090"},
    }


def test_nginx_router() -> None:
    rollout = parse_standalone(
        doc(router={"nginx": {"listen": "127.0.0.1:8080", "canaryHeader": "X-Version"}})
    )
    assert rollout.router == NginxRouterConfig(listen="127.0.0.1:8080", canary_header="X-Version")
    default = parse_standalone(doc(router={"nginx": {"listen": "127.0.0.1:8080"}}))
    assert isinstance(default.router, NginxRouterConfig) and default.router.canary_header == "X-Canary"


def test_traefik_router() -> None:
    rollout = parse_standalone(
        doc(router={"traefik": {"listen": "127.0.0.1:8080", "api": "127.0.0.1:8081", "configDir": "/etc/t"}})
    )
    assert rollout.router == TraefikRouterConfig(
        listen="127.0.0.1:8080", api="127.0.0.1:8081", config_dir="/etc/t"
    )
    default = parse_standalone(doc(router={"traefik": {"listen": "127.0.0.1:8080"}}))
    assert default.router == TraefikRouterConfig(listen="127.0.0.1:8080")


@pytest.mark.parametrize(
    ("router", "path"),
    [
        ({}, "spec.router"),
        ({"envoy": {"listen": "1.2.3.4:1"}, "nginx": {"listen": "1.2.3.4:2"}}, "spec.router"),
        ({"haproxy": {"listen": "1.2.3.4:1"}}, "spec.router.haproxy"),
        ({"nginx": {"listen": "1.2.3.4:1", "canaryHeader": "X Canary"}}, "spec.router.nginx.canaryHeader"),
        ({"envoy": {"listen": "127.0.0.1:1", "admin": "127.0.0.1:1"}}, "spec.router.envoy.admin"),
        ({"envoy": {"listen": "127.0.0.1:1", "baseId": -1}}, "spec.router.envoy.baseId"),
        ({"envoy": {"listen": "127.0.0.1:1", "attach": "yes"}}, "spec.router.envoy.attach"),
        ({"envoy": {"listen": "127.0.0.1:1", "adminn": "127.0.0.1:2"}}, "spec.router.envoy.adminn"),
        ({"traefik": {"listen": "127.0.0.1:1", "attach": True}}, "spec.router.traefik.api"),
        ({"traefik": {"listen": "127.0.0.1:1", "api": "127.0.0.1:1"}}, "spec.router.traefik.api"),
        ({"traefik": {"listen": "127.0.0.1:1", "admin": "127.0.0.1:2"}}, "spec.router.traefik.admin"),
        ({"traefik": {}}, "spec.router.traefik.listen"),
    ],
)
def test_router_mistakes(router: dict[str, Any], path: str) -> None:
    assert error_paths(doc(router=router)) == [path]


@pytest.mark.parametrize(
    "endpoint",
    ["127.0.0.1:8081", "localhost:80", "app.internal:65535", "[::1]:8081", "[2001:db8::1]:443", "0.0.0.0:1"],
)
def test_valid_endpoints(endpoint: str) -> None:
    assert host_port_problem(endpoint) is None


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("localhost", "must be host:port"),
        (":8080", "must be host:port"),
        ("127.0.0.1:0", "invalid port"),
        ("127.0.0.1:65536", "invalid port"),
        ("127.0.0.1:http", "invalid port"),
        ("http://127.0.0.1:80", "without a scheme"),
        ("::1:80", "brackets"),
        ("[::zz]:80", "not an IPv6 address"),
        ("999.1.1.1:80", "not a valid host name"),
        ("bad_host:80", "not a valid host name"),
        ("-bad.example:80", "not a valid host name"),
    ],
)
def test_invalid_endpoints(endpoint: str, reason: str) -> None:
    problem = host_port_problem(endpoint)
    assert problem is not None and reason in problem
    assert error_paths(doc(canary={"endpoints": ["127.0.0.1:8082", endpoint]})) == [
        "spec.canary.endpoints[1]"
    ]


def test_upstream_mistakes() -> None:
    assert error_paths(doc(stable={"endpoints": []})) == ["spec.stable.endpoints"]
    assert error_paths(doc(stable=None)) == ["spec.stable"]
    assert error_paths(doc(canary={"endpoints": ["127.0.0.1:1", "127.0.0.1:1"]})) == [
        "spec.canary.endpoints[1]"
    ]


def test_version_labels() -> None:
    parsed = parse_standalone(
        doc(
            stable={"endpoints": ["127.0.0.1:8081"], "version": "v1.2_3-a"},
            canary={"endpoints": ["127.0.0.1:8082"], "version": "v2"},
        )
    )
    assert (parsed.stable.version, parsed.canary.version) == ("v1.2_3-a", "v2")
    assert parse_standalone(doc()).canary == Upstream(("127.0.0.1:8082",), None)
    for bad in ('v2"} or vector(1) #', "-v2", "x" * 64, "", 2):
        assert error_paths(doc(canary={"endpoints": ["127.0.0.1:8082"], "version": bad})) == [
            "spec.canary.version"
        ], bad
    with pytest.raises(SpecError, match="is not a label value"):
        parse_standalone(doc(stable={"endpoints": ["127.0.0.1:8081"], "version": "a b"}))


def test_weights_going_down_need_allow_non_monotonic() -> None:
    steps = [{"setWeight": 50}, {"setWeight": 20}]
    with pytest.raises(SpecError) as raised:
        parse_standalone(doc(steps=steps))
    (issue,) = raised.value.errors
    assert issue.path == "spec.steps[1].setWeight"
    assert "spec.allowNonMonotonic: true" in issue.reason
    assert parse_standalone(doc(steps=steps, allowNonMonotonic=True)).rollout.allow_non_monotonic


def test_analysis_may_use_inline_builtin_and_given_templates() -> None:
    external = parse_template({**INLINE_TEMPLATE, "metadata": {"name": "external"}})
    steps = [
        {"setWeight": 10},
        {"analysis": {"templates": [{"templateName": "errors"}, {"templateName": "request-duration"}]}},
        {"analysis": {"templates": [{"templateName": "external"}]}},
    ]
    rollout = parse_standalone(
        doc(steps=steps, templates=[INLINE_TEMPLATE]), templates={"external": external}
    )
    assert len(rollout.rollout.steps) == 3
    assert error_paths(doc(steps=steps, templates=[INLINE_TEMPLATE])) == [
        "spec.steps[2].analysis.templates[0].templateName"
    ]


def test_inline_template_mistakes_have_their_own_paths() -> None:
    broken = copy.deepcopy(INLINE_TEMPLATE)
    broken["spec"]["metrics"][0]["count"] = -1
    assert error_paths(doc(templates=[INLINE_TEMPLATE, broken])) == [
        "spec.templates[1].spec.metrics[0].count",
        "spec.templates[1].metadata.name",
    ]


def test_metrics_listen_may_not_clash_with_the_proxy() -> None:
    assert error_paths(doc(metrics={"listen": "127.0.0.1:10000"})) == ["spec.metrics.listen"]
    assert error_paths(doc(prometheus={"address": "127.0.0.1:9090"})) == ["spec.prometheus.address"]


def test_document_level_mistakes() -> None:
    wrong = {**doc(), "apiVersion": "argoproj.io/v1alpha1", "metadata": {"name": "My App"}}
    assert error_paths(wrong) == ["apiVersion", "metadata.name"]
    assert error_paths({**doc(), "spec": None}) == ["spec"]

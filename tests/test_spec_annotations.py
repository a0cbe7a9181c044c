"""The meshshift.io/* annotation contract of a Deployment."""

from __future__ import annotations

from typing import Any

import pytest

from meshshift.spec import Findings, SpecError, TemplateCatalog, parse_deployment, read_deployment
from meshshift.spec.annotations import ANNOTATION_KEYS
from meshshift.spec.model import (
    DEFAULT_PROGRESS_DEADLINE,
    AnalysisRef,
    Arg,
    BackgroundAnalysis,
    FailurePolicy,
    KubernetesTarget,
    Pause,
    SetWeight,
    TemplateRef,
)


def manifest(
    annotations: dict[str, Any] | None, *, name: str = "shop", namespace: str | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": {"replicas": 2}}


def enabled(**extra: Any) -> dict[str, Any]:
    """An opted-in Deployment with one step; a None value removes that annotation."""
    annotations = {
        "meshshift.io/enabled": "true",
        "meshshift.io/router": "istio",
        "meshshift.io/steps": "- setWeight: 100\n",
        **extra,
    }
    return manifest({key: value for key, value in annotations.items() if value is not None})


def read(doc: dict[str, Any]) -> tuple[Any, Findings]:
    findings = Findings()
    return read_deployment(doc, findings), findings


def test_the_contract_keys_are_fixed() -> None:
    assert ANNOTATION_KEYS == (
        "meshshift.io/enabled",
        "meshshift.io/steps",
        "meshshift.io/blue-green",
        "meshshift.io/canary-metadata",
        "meshshift.io/stable-metadata",
        "meshshift.io/analysis",
        "meshshift.io/router",
        "meshshift.io/service",
        "meshshift.io/istio-virtual-service",
        "meshshift.io/istio-routes",
        "meshshift.io/nginx-ingress",
        "meshshift.io/traefik-service",
        "meshshift.io/http-route",
        "meshshift.io/on-failure",
        "meshshift.io/progress-deadline",
        "meshshift.io/command",
        "meshshift.io/allow-non-monotonic",
        "meshshift.io/max-traffic-weight",
        "meshshift.io/slack-webhook-url",
        "meshshift.io/webhook-url",
        "meshshift.io/pagerduty-secret",
    )


@pytest.mark.parametrize(
    "annotations",
    [None, {}, {"meshshift.io/enabled": "false"}, {"app": "x", "meshshift.io/router": "istio"}],
    ids=["no-annotations", "empty", "false", "not-enabled"],
)
def test_not_opted_in_is_none(annotations: dict[str, Any] | None) -> None:
    assert parse_deployment(manifest(annotations)) is None


def test_enabled_must_be_exactly_true() -> None:
    result, findings = read(manifest({"meshshift.io/enabled": "yes", "meshshift.io/router": "istio"}))
    assert result is None
    assert [(i.path, i.severity) for i in findings] == [
        ('metadata.annotations["meshshift.io/enabled"]', "warning")
    ]
    assert 'only "true" opts' in findings.issues[0].reason


def test_defaults() -> None:
    deployment = parse_deployment(enabled(**{"meshshift.io/steps": "- setWeight: 20\n- pause: {}\n"}))
    assert deployment is not None
    assert deployment.target == KubernetesTarget(
        deployment="shop",
        namespace="default",
        routers=("istio",),
        service="shop",
        istio_virtual_service="shop",
        traefik_service="shop",
        http_route="shop",
    )
    assert deployment.rollout.steps == (SetWeight(20), Pause(None))
    assert deployment.rollout.on_failure is FailurePolicy.ROLLBACK
    assert deployment.rollout.progress_deadline == DEFAULT_PROGRESS_DEADLINE == 600
    assert deployment.rollout.analysis is None
    assert deployment.enabled


def test_traefik_and_gateway_api_routers_name_their_objects() -> None:
    doc = enabled(
        **{
            "meshshift.io/router": "traefik, gateway-api",
            "meshshift.io/traefik-service": "shop-weighted",
            "meshshift.io/http-route": "shop-route",
        }
    )
    deployment, findings = read(doc)
    assert not findings.issues and deployment is not None
    assert deployment.target.routers == ("traefik", "gateway-api")
    target = deployment.target
    assert (target.traefik_service, target.http_route) == ("shop-weighted", "shop-route")
    _, findings = read(enabled(**{"meshshift.io/traefik-service": "x"}))  # the router is istio
    assert [str(i) for i in findings.issues] == [
        'metadata.annotations["meshshift.io/traefik-service"]: warning: is ignored: '
        "meshshift.io/router does not include traefik"
    ]
    _, findings = read(enabled(**{"meshshift.io/router": "traefk"}))
    assert 'unknown router "traefk" (did you mean "traefik"?)' in str(findings.issues[0])


def test_every_annotation_is_read() -> None:
    doc = manifest(
        {
            "meshshift.io/enabled": "true",
            "meshshift.io/router": "nginx, istio",
            "meshshift.io/service": "shop-svc",
            "meshshift.io/istio-virtual-service": "shop-vs",
            "meshshift.io/istio-routes": "primary, api",
            "meshshift.io/nginx-ingress": "shop-ingress",
            "meshshift.io/on-failure": "gradual",
            "meshshift.io/progress-deadline": "1h30m",
            "meshshift.io/command": "promote-full",
            "meshshift.io/allow-non-monotonic": "true",
            "meshshift.io/steps": "- setWeight: 50\n- setWeight: 20\n",
            "meshshift.io/analysis": (
                "templates: [{templateName: request-success-rate}]\n"
                "args: [{name: service-name, value: shop}]\n"
                "startingStep: 1\n"
            ),
        },
        namespace="prod",
    )
    deployment = parse_deployment(doc)
    assert deployment is not None
    assert deployment.target == KubernetesTarget(
        deployment="shop",
        namespace="prod",
        routers=("nginx", "istio"),
        service="shop-svc",
        istio_virtual_service="shop-vs",
        istio_routes=("primary", "api"),
        nginx_ingress="shop-ingress",
        traefik_service="shop-svc",
        http_route="shop-svc",
        command="promote-full",
    )
    rollout = deployment.rollout
    assert rollout.on_failure is FailurePolicy.GRADUAL
    assert rollout.progress_deadline == 5400
    assert rollout.allow_non_monotonic
    assert rollout.steps == (SetWeight(50), SetWeight(20))
    assert rollout.analysis == BackgroundAnalysis(
        AnalysisRef((TemplateRef("request-success-rate"),), (Arg("service-name", "shop"),)), starting_step=1
    )


def test_virtual_service_defaults_to_the_service() -> None:
    deployment = parse_deployment(enabled(**{"meshshift.io/service": "web"}))
    assert deployment is not None
    assert deployment.target.istio_virtual_service == "web"


def test_unknown_keys_are_warnings_with_the_closest_key() -> None:
    result, findings = read(
        enabled(**{"meshshift.io/setps": "- setWeight: 5", "meshshift.io/owner": "team-a"})
    )
    assert result is not None
    assert not findings.has_errors
    reasons = {issue.path: issue.reason for issue in findings if issue.severity == "warning"}
    assert 'did you mean "meshshift.io/steps"?' in reasons['metadata.annotations["meshshift.io/setps"]']
    assert "did you mean" not in reasons['metadata.annotations["meshshift.io/owner"]']


def test_a_typo_in_enabled_is_reported_even_though_it_disables() -> None:
    result, findings = read(manifest({"meshshift.io/enable": "true", "meshshift.io/router": "istio"}))
    assert result is None
    assert 'did you mean "meshshift.io/enabled"?' in findings.issues[0].reason


def test_yaml_syntax_error_names_the_line_of_the_annotation_value() -> None:
    steps = "- setWeight: 10\n- pause: {duration: 2m}\n- setWeight: [20\n"
    with pytest.raises(SpecError) as raised:
        parse_deployment(enabled(**{"meshshift.io/steps": steps}))
    (issue,) = raised.value.errors
    assert issue.path == 'metadata.annotations["meshshift.io/steps"]'
    assert "invalid YAML at line 4, column 1 of the annotation value" in issue.reason


def test_duplicate_keys_inside_an_annotation_are_errors() -> None:
    with pytest.raises(SpecError) as raised:
        parse_deployment(enabled(**{"meshshift.io/steps": "- setWeight: 10\n  setWeight: 20\n"}))
    (issue,) = raised.value.errors
    assert issue.path == 'metadata.annotations["meshshift.io/steps"][0].setWeight'
    assert "written twice (lines 1 and 2)" in issue.reason


def test_steps_given_as_a_yaml_list_instead_of_a_string() -> None:
    with pytest.raises(SpecError) as raised:
        parse_deployment(enabled(**{"meshshift.io/steps": [{"setWeight": 10}]}))
    assert "block string" in raised.value.errors[0].reason


def test_command_is_kept_raw_even_when_unknown() -> None:
    result, findings = read(enabled(**{"meshshift.io/command": "promote-all"}))
    assert result is not None and result.target.command == "promote-all"
    assert [issue.severity for issue in findings] == ["warning"]
    assert 'did you mean "promote-full"?' in findings.issues[0].reason


def test_non_monotonic_weights_need_the_annotation() -> None:
    steps = {"meshshift.io/steps": "- setWeight: 50\n- setWeight: 20\n"}
    with pytest.raises(SpecError):
        parse_deployment(enabled(**steps))
    allowed = parse_deployment(enabled(**steps, **{"meshshift.io/allow-non-monotonic": "true"}))
    assert allowed is not None and allowed.rollout.allow_non_monotonic


def test_router_options_for_an_absent_router_are_ignored_with_a_warning() -> None:
    result, findings = read(enabled(**{"meshshift.io/nginx-ingress": "shop"}))
    assert result is not None and result.target.nginx_ingress == "shop"
    assert [(issue.path, issue.severity) for issue in findings] == [
        ('metadata.annotations["meshshift.io/nginx-ingress"]', "warning")
    ]


def test_no_steps_is_a_warning() -> None:
    result, findings = read(enabled(**{"meshshift.io/steps": None}))
    assert result is not None and result.rollout.steps == ()
    assert [(issue.path, issue.severity) for issue in findings] == [
        ('metadata.annotations["meshshift.io/steps"]', "warning")
    ]


def test_templates_are_checked_only_with_a_catalog() -> None:
    doc = enabled(**{"meshshift.io/steps": "- analysis: {templates: [{templateName: latency}]}\n"})
    assert parse_deployment(doc) is not None  # the runtime checks references later
    with pytest.raises(SpecError) as raised:
        parse_deployment(doc, catalog=TemplateCatalog())
    assert (
        raised.value.errors[0].path
        == 'metadata.annotations["meshshift.io/steps"][0].analysis.templates[0].templateName'
    )
    assert parse_deployment(doc, catalog=TemplateCatalog(builtin=("latency",))) is not None


def test_all_errors_are_raised_together() -> None:
    doc = manifest(
        {
            "meshshift.io/enabled": "true",
            "meshshift.io/router": "linkerd",
            "meshshift.io/on-failure": "panic",
            "meshshift.io/progress-deadline": "soon",
            "meshshift.io/steps": "- setWeight: 500\n",
        },
        name="Shop",
    )
    with pytest.raises(SpecError) as raised:
        parse_deployment(doc)
    assert [issue.path for issue in raised.value.errors] == [
        "metadata.name",
        'metadata.annotations["meshshift.io/router"]',
        'metadata.annotations["meshshift.io/on-failure"]',
        'metadata.annotations["meshshift.io/progress-deadline"]',
        'metadata.annotations["meshshift.io/steps"][0].setWeight',
    ]


def test_the_pagerduty_annotation_names_a_secret_never_a_key() -> None:
    _, findings = read(enabled(**{"meshshift.io/pagerduty-secret": "pd-routing"}))
    assert list(findings) == []
    key = "R0ut1ngKey0123456789abcdefABCDEF"
    _, findings = read(enabled(**{"meshshift.io/pagerduty-secret": key}))
    (issue,) = findings.issues
    assert issue.severity == "error" and issue.path == 'metadata.annotations["meshshift.io/pagerduty-secret"]'
    assert "looks like a routing key" in issue.reason and "routing-key" in issue.reason
    assert key not in issue.reason  # the key is not repeated in a finding, an Event or a log
    _, findings = read(enabled(**{"meshshift.io/pagerduty-secret": "PD_Secret"}))
    assert "not a valid Kubernetes name" in findings.issues[0].reason


def test_canary_and_stable_metadata_are_read_and_checked() -> None:
    doc = enabled(
        **{
            "meshshift.io/canary-metadata": "{labels: {role: canary}, annotations: {team: qa}}",
            "meshshift.io/stable-metadata": "labels: {role: stable}\n",
        }
    )
    deployment = parse_deployment(doc)
    assert deployment is not None
    assert dict(deployment.rollout.canary_metadata.labels) == {"role": "canary"}
    assert dict(deployment.rollout.canary_metadata.annotations) == {"team": "qa"}
    assert dict(deployment.rollout.new_pods_metadata.labels) == {"role": "canary"}
    assert dict(deployment.rollout.stable_pods_metadata.labels) == {"role": "stable"}

    # A selector label would take the pods out of their own Deployment; values must be strings.
    doc = enabled(**{"meshshift.io/canary-metadata": "{labels: {app: x, replicas: 3}}"})
    doc["spec"]["selector"] = {"matchLabels": {"app": "shop"}}
    _, findings = read(doc)
    errors = {issue.path: issue.reason for issue in findings if issue.severity == "error"}
    path = 'metadata.annotations["meshshift.io/canary-metadata"].labels'
    assert "spec.selector.matchLabels" in errors[f"{path}.app"]
    assert "must be strings" in errors[f"{path}.replicas"]


def test_blue_green_takes_preview_and_active_metadata_instead() -> None:
    blue_green = "previewMetadata: {labels: {role: preview}}\nactiveMetadata: {labels: {app: x}}\n"
    doc = enabled(
        **{
            "meshshift.io/steps": None,
            "meshshift.io/blue-green": blue_green,
            "meshshift.io/canary-metadata": "{labels: {role: canary}}",
        }
    )
    doc["spec"]["selector"] = {"matchLabels": {"app": "shop"}}
    _, findings = read(doc)
    errors = {issue.path: issue.reason for issue in findings if issue.severity == "error"}
    assert "previewMetadata" in errors['metadata.annotations["meshshift.io/canary-metadata"]']
    assert (
        "spec.selector.matchLabels"
        in errors['metadata.annotations["meshshift.io/blue-green"].activeMetadata.labels.app']
    )


@pytest.mark.parametrize(
    ("value", "said"),
    [("0", '"0"'), ("ten", '"ten"'), ("9" * 5000, '"a number of 5000 digits"')],
    ids=["zero", "word", "thousands-of-digits"],
)
def test_max_traffic_weight_that_is_no_whole_number_is_a_finding_not_a_crash(value: str, said: str) -> None:
    # int() refuses 4,300 digits and more with a ValueError: `meshshift lint` crashed on it.
    _, findings = read(enabled(**{"meshshift.io/max-traffic-weight": value}))
    errors = {issue.path: issue.reason for issue in findings if issue.severity == "error"}
    where = 'metadata.annotations["meshshift.io/max-traffic-weight"]'
    assert errors == {where: f"must be a whole number of 1 or more, got {said}"}

"""Reading a standalone rollout file: templates next to it, and clear errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshshift.spec.model import EnvoyRouterConfig, NginxRouterConfig
from meshshift.standalone.daemon import RolloutFileError, load_rollout_file, parse_rollout_text

ROLLOUT = """\
apiVersion: meshshift.io/v1alpha1
kind: StandaloneRollout
metadata: {name: shop}
spec:
  router: {ROUTER: {listen: "127.0.0.1:10000"}}
  stable: {endpoints: ["127.0.0.1:8081"]}
  canary: {endpoints: ["127.0.0.1:8082"]}
  steps:
  - setWeight: 20
  - analysis: {templates: [{templateName: TEMPLATE}], args: [{name: service-name, value: shop}]}
  templates:
  - apiVersion: argoproj.io/v1alpha1
    kind: AnalysisTemplate
    metadata: {name: inline-check}
    spec:
      args: [{name: service-name}]
      metrics:
      - name: up
        provider: {prometheus: {address: "http://127.0.0.1:9090", query: 'up{job="{{args.service-name}}"}'}}
"""
TEMPLATE_DOCUMENT = """\
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate}
spec:
  args: [{name: service-name}]
  metrics:
  - name: success-rate
    successCondition: result[0] >= 0.95
    provider:
      prometheus: {address: "http://127.0.0.1:9090", query: 'sum(rate(x{s="{{args.service-name}}"}[1m]))'}
"""


def rollout_text(router: str = "envoy", template: str = "success-rate", extra: str = "") -> str:
    return ROLLOUT.replace("ROUTER", router).replace("TEMPLATE", template) + extra


def test_templates_may_sit_in_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "rollout.yaml"
    path.write_text(rollout_text(extra=TEMPLATE_DOCUMENT))
    loaded = load_rollout_file(path)
    assert loaded.rollout.name == "shop"
    assert isinstance(loaded.rollout.router, EnvoyRouterConfig)
    assert set(loaded.templates) == {"success-rate", "inline-check"}


def test_an_inline_template_can_be_referenced() -> None:
    loaded = parse_rollout_text(rollout_text(template="inline-check"), "rollout.yaml")
    assert set(loaded.templates) == {"inline-check"}


def test_a_missing_template_names_the_field() -> None:
    with pytest.raises(RolloutFileError) as error:
        parse_rollout_text(rollout_text(), "rollout.yaml")
    assert (
        'rollout.yaml: spec.steps[1].analysis.templates[0].templateName: unknown template "success-rate"'
        in str(error.value)
    )


def test_a_bad_value_names_the_field() -> None:
    text = rollout_text(extra=TEMPLATE_DOCUMENT).replace("setWeight: 20", "setWeight: 120")
    with pytest.raises(RolloutFileError, match=r"rollout\.yaml: spec\.steps\[0\]\.setWeight"):
        parse_rollout_text(text, "rollout.yaml")


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(RolloutFileError, match=r"invalid YAML at line 4"):
        parse_rollout_text("kind: StandaloneRollout\nspec:\n  steps: [\n", "rollout.yaml")


def test_exactly_one_rollout_per_file() -> None:
    with pytest.raises(RolloutFileError, match="exactly one StandaloneRollout document, found 2"):
        parse_rollout_text(rollout_text(extra=TEMPLATE_DOCUMENT) + "---\n" + rollout_text(), "r.yaml")
    with pytest.raises(RolloutFileError, match="found 0"):
        parse_rollout_text(TEMPLATE_DOCUMENT, "r.yaml")


def test_other_kinds_are_refused() -> None:
    with pytest.raises(RolloutFileError, match=r"\[document 3\]: kind 'Service' is not a StandaloneRollout"):
        parse_rollout_text(rollout_text(extra=TEMPLATE_DOCUMENT) + "---\nkind: Service\n", "r.yaml")


def test_nginx_refuses_what_it_cannot_do() -> None:
    text = rollout_text(router="nginx", template="inline-check").replace(
        "  - setWeight: 20\n",
        "  - setWeight: 20\n"
        "  - setMirrorRoute: {name: shadow, percentage: 10, match: [{method: {exact: GET}}]}\n",
    )
    with pytest.raises(
        RolloutFileError, match=r"spec\.steps\[1\]\.setMirrorRoute: the nginx router does not support"
    ):
        parse_rollout_text(text, "r.yaml")


def test_nginx_has_no_builtin_templates() -> None:
    text = rollout_text(router="nginx", template="request-success-rate").replace(
        "args: [{name: service-name, value: shop}]", "args: []"
    )
    with pytest.raises(
        RolloutFileError, match=r"templateName: the builtin template \"request-success-rate\" reads"
    ):
        parse_rollout_text(text, "r.yaml")
    # With Envoy the builtin is there.
    assert parse_rollout_text(text.replace("nginx:", "envoy:"), "r.yaml").rollout.name == "shop"
    # And with NGINX, a template of that name in the file is used instead.
    own = rollout_text(
        router="nginx",
        template="request-success-rate",
        extra=TEMPLATE_DOCUMENT.replace("name: success-rate}", "name: request-success-rate}"),
    )
    assert isinstance(parse_rollout_text(own, "r.yaml").rollout.router, NginxRouterConfig)

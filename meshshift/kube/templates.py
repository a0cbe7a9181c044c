"""Analysis templates and secrets read from the cluster.

`ClusterTemplates` finds an AnalysisTemplate (in the rollout's namespace) or a
ClusterAnalysisTemplate by name, under `meshshift.io/v1alpha1` first and then Argo
Rollouts' `argoproj.io/v1alpha1`, so existing Argo templates work unchanged. It is
read on each analysis start (templates change rarely; runs start minutes apart) and
parsed with meshshift.spec.templates; the operator chains it to the builtin templates.

`KubeSecretReader` is the SecretReader the Datadog and New Relic providers use.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

import structlog

from meshshift.kube.resources import KubeApi, KubeApiError, ResourceType, analysis_templates
from meshshift.spec.bounds import data_problem
from meshshift.spec.errors import SpecError, SpecIssue
from meshshift.spec.model import AnalysisTemplate
from meshshift.spec.templates import parse_template

log = structlog.get_logger(__name__)

TEMPLATE_GROUPS = ("meshshift.io", "argoproj.io")
SECRETS = ResourceType("", "v1", "secrets", "Secret")


class ClusterTemplates:
    """The TemplateSource port over AnalysisTemplate / ClusterAnalysisTemplate objects."""

    def __init__(self, api: KubeApi, *, namespace: str, groups: tuple[str, ...] = TEMPLATE_GROUPS) -> None:
        self.api = api
        self.namespace = namespace
        self.groups = groups

    async def get(self, name: str, *, cluster_scope: bool = False) -> AnalysisTemplate | None:
        """The template, None if no group has it; SpecError (with every finding) if it is invalid."""
        for group in self.groups:
            rt = analysis_templates(group, cluster=cluster_scope)
            try:
                document = await self.api.get(rt, name, None if cluster_scope else self.namespace)
            except KubeApiError as error:
                if error.status != 403:
                    raise
                # No RBAC for this group (Argo Rollouts not installed): try the next one.
                log.info("cannot read templates of this group", group=group, error=error.message)
                continue
            if document is not None:
                problem = data_problem(document)  # before any recursive reader walks it
                if problem is not None:
                    raise SpecError((SpecIssue("", f"{rt.kind} {name}: {problem}"),))
                return parse_template(document)
        return None


class KubeSecretReader:
    """Reads a Secret's data (decoded); `namespace` None means the daemon's own namespace."""

    def __init__(self, api: KubeApi, *, own_namespace: str) -> None:
        self.api = api
        self.own_namespace = own_namespace

    async def __call__(self, name: str, namespace: str | None) -> Mapping[str, str] | None:
        secret = await self.api.get(SECRETS, name, namespace or self.own_namespace)
        if secret is None:
            return None
        data: dict[str, str] = {}
        for key, value in (secret.get("data") or {}).items():
            try:
                data[key] = base64.b64decode(value).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                log.warning("secret key is not base64 UTF-8 text; skipped", secret=name, key=key)
        data.update(secret.get("stringData") or {})
        return data

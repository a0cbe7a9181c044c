"""Prometheus' relabelling (relabel_configs), for the actions a Kubernetes pod job uses, and
the meta labels Prometheus' kubernetes_sd (role: pod) gives a pod's container port.

As Prometheus does it (model/relabel/relabel.go): source labels joined by `separator`
(default `;`), a missing label read as empty; `regex` (default `(.*)`) anchored at both
ends; `replacement` (default `$1`) expanded with the regex's groups; `replace` deletes the
target label when the expansion is empty. After relabelling, the `__`-prefixed labels go,
`instance` defaults to `__address__`, and `job` is the job's name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

GROUP = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def _expand(replacement: str, match: re.Match[str]) -> str:
    def group(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        value = match.group(int(name)) if name.isdigit() else match.group(name)
        return value or ""

    return GROUP.sub(group, replacement)


def _text(value: Any) -> str:
    """A config value as Prometheus' YAML reads it into a string: `regex: true` is "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def relabel(labels: Mapping[str, str], configs: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """The labels after `configs`; None when the target is dropped."""
    result = dict(labels)
    for config in configs:
        action = config.get("action", "replace")
        pattern = re.compile(f"^(?:{_text(config.get('regex', '(.*)'))})$")
        joined = _text(config.get("separator", ";")).join(
            result.get(s, "") for s in config.get("source_labels", [])
        )
        replacement = _text(config.get("replacement", "$1"))
        if action == "keep":
            if not pattern.match(joined):
                return None
        elif action == "drop":
            if pattern.match(joined):
                return None
        elif action == "replace":
            match = pattern.match(joined)
            if match is not None:
                value = _expand(replacement, match)
                if value:
                    result[config["target_label"]] = value
                else:
                    result.pop(config["target_label"], None)
        elif action == "labelmap":
            for name, value in list(result.items()):
                match = pattern.match(name)
                if match is not None:
                    result[_expand(replacement, match)] = value
        else:
            raise ValueError(f"relabel action {action!r} is not implemented here")
    return result


def target_labels(labels: Mapping[str, str], job: Mapping[str, Any]) -> dict[str, str] | None:
    """What a scrape of this target labels its series with (None: not scraped)."""
    relabelled = relabel(labels, job.get("relabel_configs", []))
    if relabelled is None:
        return None
    final = {k: v for k, v in relabelled.items() if not k.startswith("__")}
    final.setdefault("instance", relabelled["__address__"])
    final.setdefault("job", str(job["job_name"]))
    return final


def pod_port_targets(pod: Mapping[str, Any], ip: str, node: str = "node-1") -> list[dict[str, str]]:
    """kubernetes_sd's targets for a running pod: one per container port, with its meta labels."""
    metadata = pod["metadata"]
    common = {
        "__meta_kubernetes_namespace": metadata["namespace"],
        "__meta_kubernetes_pod_name": metadata["name"],
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_node_name": node,
        "__meta_kubernetes_pod_ready": "true",
    }
    for kind, values in (
        ("label", metadata.get("labels") or {}),
        ("annotation", metadata.get("annotations") or {}),
    ):
        for name, value in values.items():
            safe = UNSAFE.sub("_", name)
            common[f"__meta_kubernetes_pod_{kind}_{safe}"] = str(value)
            common[f"__meta_kubernetes_pod_{kind}present_{safe}"] = "true"
    targets = []
    for container in pod["spec"]["containers"]:
        for port in container.get("ports", []):
            targets.append(
                {
                    **common,
                    "__address__": f"{ip}:{port['containerPort']}",
                    "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    "__metrics_path__": "/metrics",
                    "__scheme__": "http",
                }
            )
    return targets

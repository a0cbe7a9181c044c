"""A RolloutSpec from its parts, and the checks that need the whole rollout.

Annotated Deployments, standalone files and Argo Rollouts all read their steps and
analysis with `steps.py`, then call `build_rollout` here, which checks what only the whole
picture shows: weights going down, `startingStep` out of range and, given the known
templates, every analysis reference (unknown templates, missing and unused args,
dryRun names, unbounded step analyses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from meshshift.spec.durations import format_duration
from meshshift.spec.errors import Findings
from meshshift.spec.fields import at, did_you_mean, expect_choice
from meshshift.spec.model import (
    DEFAULT_ABORT_SCALE_DOWN_DELAY,
    DEFAULT_GRADUAL_INTERVAL,
    DEFAULT_PROGRESS_DEADLINE,
    AnalysisRef,
    AnalysisTemplate,
    BackgroundAnalysis,
    BlueGreen,
    FailurePolicy,
    PodMetadata,
    RolloutSpec,
    SetHeaderRoute,
    SetMirrorRoute,
    SetWeight,
    Step,
    StepAnalysis,
    StepGroup,
)
from meshshift.spec.templates import BUILTIN_METRICS, check_metric_names

# Templates meshshift ships: always known, whatever the files or the cluster hold.
BUILTIN_TEMPLATE_NAMES: tuple[str, ...] = BUILTIN_METRICS
# Args meshshift fills itself, so a template may declare them without a value and a
# rollout need not give them. `service-name` is not one: the rollout must give it.
BUILTIN_ARGS: frozenset[str] = frozenset(
    {"canary-hash", "baseline-hash", "stable-hash", "latest-hash", "namespace"}
)


@dataclass(frozen=True, slots=True)
class RolloutPaths:
    """Where the rollout's parts sit in the user's document, for finding paths and hints."""

    steps: str = "steps"
    analysis: str = "analysis"
    allow_non_monotonic: str = "allowNonMonotonic: true"
    blue_green: str = "blueGreen"
    on_failure: str = "onFailure"


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    on_failure: FailurePolicy = FailurePolicy.ROLLBACK
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE
    allow_non_monotonic: bool = False
    gradual_interval: float = DEFAULT_GRADUAL_INTERVAL
    abort_scale_down_delay: float = DEFAULT_ABORT_SCALE_DOWN_DELAY
    progress_deadline_abort: bool = True
    canary_metadata: PodMetadata = field(default_factory=PodMetadata)
    stable_metadata: PodMetadata = field(default_factory=PodMetadata)


@dataclass(frozen=True, slots=True)
class TemplateCatalog:
    """The templates a rollout may reference: by name, plus the builtin names."""

    templates: Mapping[str, AnalysisTemplate] = field(default_factory=dict)
    builtin: Collection[str] = BUILTIN_TEMPLATE_NAMES
    # ClusterAnalysisTemplates by name, when one shares its name with an AnalysisTemplate
    # (which `templates` then holds): Argo keeps the two scopes apart.
    cluster_templates: Mapping[str, AnalysisTemplate] = field(default_factory=dict)

    def find(self, name: str, *, cluster_scope: bool) -> AnalysisTemplate | None:
        """The template a reference with this scope gets, else the other scope's (to report it)."""
        if cluster_scope and name in self.cluster_templates:
            return self.cluster_templates[name]
        return self.templates.get(name)

    def names(self) -> list[str]:
        return [*self.templates, *self.builtin]


def read_on_failure(value: object, path: str, findings: Findings) -> FailurePolicy | None:
    choice = expect_choice(value, [policy.value for policy in FailurePolicy], path, findings)
    return None if choice is None else FailurePolicy(choice)


# A step as written: one kind, several (a StepGroup), or None where it is invalid (reported).
WrittenStep = Step | StepGroup | None


def build_rollout(
    steps: Sequence[WrittenStep],
    analysis: BackgroundAnalysis | None,
    policy: RolloutPolicy,
    paths: RolloutPaths,
    findings: Findings,
    catalog: TemplateCatalog | None = None,
    blue_green: BlueGreen | None = None,
) -> RolloutSpec:
    """The RolloutSpec, after the whole-rollout checks; None steps are invalid ones, already reported.

    Without a `catalog` the template references are not checked (the runtime checks them
    with `validate_rollout` once it has loaded the templates).
    """
    if blue_green is not None:
        _check_blue_green(steps, analysis, policy, paths, findings)
    elif not steps:
        findings.warning(paths.steps, "no steps: a new version gets all the traffic at once")
    _check_monotonic(steps, policy.allow_non_monotonic, paths, findings)
    _check_route_removals(steps, paths, findings)
    if analysis is not None:
        _check_starting_step(analysis.starting_step, len(steps), paths, findings)
    if catalog is not None:
        check_analysis_refs(steps, analysis, catalog, paths, findings, blue_green)
    run: list[Step] = []  # a StepGroup runs as its parts, one step each
    first_part: list[int] = []
    for step in steps:
        first_part.append(len(run))
        run.extend(step.parts if isinstance(step, StepGroup) else () if step is None else (step,))
    if analysis is not None and 0 < analysis.starting_step < len(first_part):
        analysis = dataclasses.replace(analysis, starting_step=first_part[analysis.starting_step])
    return RolloutSpec(
        steps=tuple(run),
        analysis=analysis,
        on_failure=policy.on_failure,
        progress_deadline=policy.progress_deadline,
        allow_non_monotonic=policy.allow_non_monotonic,
        gradual_interval=policy.gradual_interval,
        abort_scale_down_delay=policy.abort_scale_down_delay,
        progress_deadline_abort=policy.progress_deadline_abort,
        blue_green=blue_green,
        canary_metadata=policy.canary_metadata,
        stable_metadata=policy.stable_metadata,
    )


def _check_blue_green(
    steps: Sequence[WrittenStep],
    analysis: BackgroundAnalysis | None,
    policy: RolloutPolicy,
    paths: RolloutPaths,
    findings: Findings,
) -> None:
    """A blue-green rollout has no steps and no background analysis, and always switches back."""
    if steps:
        findings.error(
            paths.blue_green,
            f"a rollout is either canary steps or blue-green, not both: remove {paths.steps} or this "
            "(Argo: multiple strategies can not be listed)",
        )
    if analysis is not None:
        findings.error(
            paths.analysis,
            "background analysis belongs to canary steps; a blue-green rollout runs "
            "prePromotionAnalysis and postPromotionAnalysis",
        )
    if policy.on_failure != FailurePolicy.ROLLBACK:
        findings.error(
            paths.on_failure,
            f'is "{policy.on_failure.value}", but a blue-green rollout always switches all traffic back '
            'at once when it fails: use "rollback"',
        )


def validate_rollout(
    spec: RolloutSpec,
    templates: Mapping[str, AnalysisTemplate],
    *,
    builtin_templates: Collection[str] = BUILTIN_TEMPLATE_NAMES,
    paths: RolloutPaths | None = None,
) -> Findings:
    """Cross-check a parsed spec against the templates it may reference."""
    findings = Findings()
    catalog = TemplateCatalog(templates, builtin_templates)
    check_analysis_refs(
        spec.steps, spec.analysis, catalog, paths or RolloutPaths(), findings, spec.blue_green
    )
    return findings


# --- whole-schedule checks ---------------------------------------------------------


def _each_step(steps: Sequence[WrittenStep]) -> Iterator[tuple[int, Step]]:
    """(index as written, step) for every valid step, the parts of a StepGroup under its index."""
    for index, step in enumerate(steps):
        if isinstance(step, StepGroup):
            for part in step.parts:
                yield index, part
        elif step is not None:
            yield index, step


def _check_monotonic(
    steps: Sequence[WrittenStep], allowed: bool, paths: RolloutPaths, findings: Findings
) -> None:
    """A later setWeight below an earlier one sends traffic back to stable: usually a typo."""
    if allowed:
        return
    highest: tuple[int, int] | None = None  # (weight, step index)
    for index, step in _each_step(steps):
        if not isinstance(step, SetWeight):
            continue
        if highest is not None and step.weight < highest[0]:
            findings.error(
                at(at(paths.steps, index), "setWeight"),
                f"setWeight {step.weight} is lower than the earlier setWeight {highest[0]} at "
                f"{at(paths.steps, highest[1])}; set {paths.allow_non_monotonic} if that is intended",
            )
        elif highest is None or step.weight > highest[0]:
            highest = (step.weight, index)


def _check_route_removals(steps: Sequence[WrittenStep], paths: RolloutPaths, findings: Findings) -> None:
    """Removing a route that no earlier step set does nothing: probably a misspelt name."""
    set_names: set[str] = set()
    for index, step in _each_step(steps):
        if not isinstance(step, SetHeaderRoute | SetMirrorRoute):
            continue
        kind = "setHeaderRoute" if isinstance(step, SetHeaderRoute) else "setMirrorRoute"
        if not step.removes:
            set_names.add(step.name)
        elif step.name not in set_names:
            hint = did_you_mean(step.name, set_names)
            findings.warning(
                at(at(at(paths.steps, index), kind), "name"),
                f'removes route "{step.name}", which no earlier step sets{hint}',
            )


def _check_starting_step(
    starting_step: int, step_count: int, paths: RolloutPaths, findings: Findings
) -> None:
    if starting_step == 0 or starting_step < step_count:
        return
    last = f"0..{step_count - 1}" if step_count else "only 0"
    findings.error(
        at(paths.analysis, "startingStep"),
        f"startingStep {starting_step} is out of range: the rollout has {step_count} steps ({last})",
    )


# --- analysis references -----------------------------------------------------------


def _analysis_refs(
    steps: Sequence[WrittenStep],
    analysis: BackgroundAnalysis | None,
    paths: RolloutPaths,
    blue_green: BlueGreen | None = None,
) -> Iterator[tuple[str, AnalysisRef, bool]]:
    """(path, reference, waited for like a step analysis) for every analysis of the rollout."""
    for index, step in _each_step(steps):
        if isinstance(step, StepAnalysis):
            yield at(at(paths.steps, index), "analysis"), step.analysis, True
    if analysis is not None:
        yield paths.analysis, analysis.analysis, False
    if blue_green is not None:
        if blue_green.pre_promotion_analysis is not None:
            yield at(paths.blue_green, "prePromotionAnalysis"), blue_green.pre_promotion_analysis, True
        if blue_green.post_promotion_analysis is not None:
            yield at(paths.blue_green, "postPromotionAnalysis"), blue_green.post_promotion_analysis, True


def check_analysis_refs(
    steps: Sequence[WrittenStep],
    analysis: BackgroundAnalysis | None,
    catalog: TemplateCatalog,
    paths: RolloutPaths,
    findings: Findings,
    blue_green: BlueGreen | None = None,
) -> None:
    for path, ref, is_step in _analysis_refs(steps, analysis, paths, blue_green):
        _check_ref(path, ref, is_step, catalog, findings)


def _check_ref(
    path: str, ref: AnalysisRef, is_step: bool, catalog: TemplateCatalog, findings: Findings
) -> None:
    templates = _resolve_templates(path, ref, catalog, findings)
    # Args and metric names can only be checked when every template's content is known.
    complete = len(templates) == len(ref.templates) and bool(templates)
    _check_missing_args(path, ref, templates, findings)
    if complete:
        _check_unused_args(path, ref, templates, findings)
        _check_ref_metric_names(path, ref, templates, findings)
    if is_step:
        _warn_unbounded(path, ref, templates, findings)


def _resolve_templates(
    path: str, ref: AnalysisRef, catalog: TemplateCatalog, findings: Findings
) -> list[tuple[int, AnalysisTemplate]]:
    """The referenced templates whose content is known, with their index in `templates`."""
    resolved = []
    for index, template_ref in enumerate(ref.templates):
        where = at(at(path, "templates"), index)
        name = template_ref.template_name
        template = catalog.find(name, cluster_scope=template_ref.cluster_scope)
        if not name:
            continue  # already reported
        if template is None:
            if name not in catalog.builtin:
                findings.error(
                    at(where, "templateName"),
                    f'unknown template "{name}"{did_you_mean(name, catalog.names())}',
                )
            continue
        if template.cluster_scope and not template_ref.cluster_scope:
            findings.error(
                at(where, "templateName"), f'"{name}" is a ClusterAnalysisTemplate: set clusterScope: true'
            )
        elif template_ref.cluster_scope and not template.cluster_scope:
            findings.error(
                at(where, "clusterScope"), f'"{name}" is an AnalysisTemplate, not a ClusterAnalysisTemplate'
            )
        resolved.append((index, template))
    return resolved


def _check_missing_args(
    path: str, ref: AnalysisRef, templates: list[tuple[int, AnalysisTemplate]], findings: Findings
) -> None:
    given = {arg.name for arg in ref.args}
    reported: set[str] = set()
    for _, template in templates:
        for arg in template.args:
            needs_value = arg.value is None and arg.value_from is None
            if needs_value and arg.name not in given | BUILTIN_ARGS | reported:
                reported.add(arg.name)
                findings.error(
                    path,
                    f'missing arg "{arg.name}": template "{template.name}" declares it without a default; '
                    f"add {{name: {arg.name}, value: ...}} to args",
                )


def _check_unused_args(
    path: str, ref: AnalysisRef, templates: list[tuple[int, AnalysisTemplate]], findings: Findings
) -> None:
    declared = {arg.name for _, template in templates for arg in template.args}
    names = ", ".join(f'"{template.name}"' for _, template in templates)
    for index, arg in enumerate(ref.args):
        if arg.name and arg.name not in declared:
            findings.error(
                at(at(at(path, "args"), index), "name"),
                f'unused arg "{arg.name}": no referenced template ({names}) declares it'
                f"{did_you_mean(arg.name, declared)}",
            )


def _check_ref_metric_names(
    path: str, ref: AnalysisRef, templates: list[tuple[int, AnalysisTemplate]], findings: Findings
) -> None:
    owner: dict[str, str] = {}
    for _, template in templates:
        for metric in template.metrics:
            if metric.name in owner and owner[metric.name] != template.name:
                findings.error(
                    at(path, "templates"),
                    f'metric "{metric.name}" is in both "{owner[metric.name]}" and "{template.name}"; '
                    "metric names must be unique across the templates of one analysis",
                )
            owner.setdefault(metric.name, template.name)
    check_metric_names(ref.dry_run, owner, at(path, "dryRun"), findings)
    check_metric_names(
        [rule.metric_name for rule in ref.measurement_retention],
        owner,
        at(path, "measurementRetention"),
        findings,
    )


def _warn_unbounded(
    path: str, ref: AnalysisRef, templates: list[tuple[int, AnalysisTemplate]], findings: Findings
) -> None:
    """A step analysis waits for its metrics; one with an interval and no count never ends."""
    for index, template in templates:
        unbounded = _unbounded_metrics(template)
        if not unbounded:
            continue
        listed = ", ".join(f'"{name}" (every {every})' for name, every in unbounded)
        metrics, has = ("metrics", "have") if len(unbounded) > 1 else ("metric", "has")
        if path.endswith("PromotionAnalysis"):
            ends = "so this analysis never completes: the rollout waits on it until promote-full or abort"
        else:
            ends = "so this step analysis runs until the rollout is promoted (as in Argo Rollouts)"
        findings.warning(
            at(at(at(path, "templates"), index), "templateName"),
            f'template "{template.name}": {metrics} {listed} {has} an interval and no count, {ends}; '
            "set count to bound it",
        )


def _unbounded_metrics(template: AnalysisTemplate) -> list[tuple[str, str]]:
    """Metrics with an interval and no count, which no consecutiveSuccessLimit ends either."""
    if template.raw_metrics:
        return [
            (str(raw.get("name", "")), str(raw["interval"]))
            for raw in template.raw_metrics
            if raw.get("interval") is not None
            and raw.get("count") is None
            and raw.get("consecutiveSuccessLimit") in (None, 0, "0")
        ]
    return [
        (metric.name, format_duration(metric.interval))
        for metric in template.metrics
        if metric.interval is not None and metric.count is None and metric.consecutive_success_limit <= 0
    ]

"""AnalysisTemplate and ClusterAnalysisTemplate documents, metrics and providers.

A template is parsed once, with its `{{args.x}}` placeholders still in place: a numeric
or duration field holding a placeholder (`count: "{{args.n}}"`) cannot be checked yet,
so its check is deferred and the metric as written is kept in `raw_metrics`.
`instantiate_template` substitutes the args and parses again, strictly.

Provider options are never substituted here: each provider escapes values for its own
query language (PromQL, NRQL, URLs) when it measures.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from meshshift.analysis.expr import Condition, ConditionSyntaxError, compile_condition
from meshshift.analysis.expr.args import ConditionArgError, Placeholder, checkable, substitute
from meshshift.analysis.expr.nodata import argo_ignores_first_argument, passes_on_no_data
from meshshift.spec.durations import parse_time_offset
from meshshift.spec.errors import Findings, SpecError, SpecIssue
from meshshift.spec.fields import (
    at,
    check_keys,
    decimal_int,
    did_you_mean,
    exactly_one_key,
    expect_bool,
    expect_choice,
    expect_duration,
    expect_int,
    expect_k8s_name,
    expect_list,
    expect_mapping,
    expect_number,
    expect_str,
    report_duplicate,
    require,
    type_name,
)
from meshshift.spec.model import AnalysisTemplate, Metric, ProviderSpec, TemplateArg, TemplateRef
from meshshift.spec.steps import read_args, read_dry_run, read_measurement_retention

API_VERSIONS = ("argoproj.io/v1alpha1", "meshshift.io/v1alpha1")
TEMPLATE_KINDS = ("AnalysisTemplate", "ClusterAnalysisTemplate")
TEMPLATE_FIELDS = ("apiVersion", "kind", "metadata", "spec")
TEMPLATE_SPEC_FIELDS = ("args", "metrics", "dryRun", "measurementRetention", "templates")
METRIC_FIELDS = (
    "name",
    "interval",
    "initialDelay",
    "count",
    "successCondition",
    "failureCondition",
    "failureLimit",
    "inconclusiveLimit",
    "consecutiveErrorLimit",
    "consecutiveSuccessLimit",
    "provider",
)
# Argo Rollouts providers meshshift does not implement: named, so the error says so.
UNSUPPORTED_PROVIDERS = (
    "job",
    "kayenta",
    "wavefront",
    "cloudWatch",
    "graphite",
    "influxdb",
    "skywalking",
    "plugin",
)
# Flagger's two, and the sequential judge's (meshshift/analysis/judge.py).
SEQUENTIAL_METRICS = ("sequential-error-rate", "sequential-latency")
BUILTIN_METRICS = ("request-success-rate", "request-duration", *SEQUENTIAL_METRICS)

# `{{args.NAME}}`, spaces allowed inside the braces, as Argo writes them.
PLACEHOLDER = re.compile(r"\{\{\s*args\.([^{}\s]+)\s*\}\}")
_INT_TEXT = re.compile(r"-?[0-9]+")


# --- placeholders ------------------------------------------------------------------


def has_placeholder(value: object) -> bool:
    return isinstance(value, str) and PLACEHOLDER.search(value) is not None


def find_placeholders(value: object, path: str) -> Iterator[tuple[str, str]]:
    """(path, arg name) of every placeholder in a YAML value, at any depth."""
    if isinstance(value, str):
        for match in PLACEHOLDER.finditer(value):
            yield path, match.group(1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from find_placeholders(item, at(path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from find_placeholders(item, at(path, index))


def substitute_args(text: str, args: Mapping[str, str]) -> str:
    """`text` with every `{{args.x}}` replaced by `args["x"]` (KeyError when missing)."""
    return PLACEHOLDER.sub(lambda match: args[match.group(1)], text)


CONDITION_FIELDS = ("successCondition", "failureCondition")


def substitute_condition_args(text: str, args: Mapping[str, str]) -> str:
    """A condition with its args put in as values, never as code (analysis/expr/args.py):
    ConditionArgError when a value cannot stand where its placeholder is; KeyError when missing."""
    placeholders = [
        Placeholder(match.start(), match.end(), match.group(1), args[match.group(1)])
        for match in PLACEHOLDER.finditer(text)
    ]
    return substitute(text, placeholders)


def _substitute_deep(value: Any, args: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return substitute_args(value, args)
    if isinstance(value, Mapping):
        return {key: _substitute_deep(item, args) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute_deep(item, args) for item in value]
    return value


# --- templates ---------------------------------------------------------------------


def read_template(doc: object, findings: Findings, base: str = "") -> AnalysisTemplate | None:
    """An AnalysisTemplate or ClusterAnalysisTemplate document; None when it has no usable name."""
    data = expect_mapping(doc, base, findings)
    if data is None:
        return None
    check_keys(data, TEMPLATE_FIELDS, base, findings)
    api_version = require(data, "apiVersion", base, findings)
    if api_version is not None:
        expect_choice(api_version, API_VERSIONS, at(base, "apiVersion"), findings)
    raw_kind = require(data, "kind", base, findings)
    kind = None if raw_kind is None else expect_choice(raw_kind, TEMPLATE_KINDS, at(base, "kind"), findings)
    name, namespace = _read_metadata(data, base, findings)
    raw_spec = require(data, "spec", base, findings)
    spec = None if raw_spec is None else expect_mapping(raw_spec, at(base, "spec"), findings)
    if spec is None or name is None:
        return None
    return _read_template_spec(spec, at(base, "spec"), findings, name, namespace, kind)


def _read_metadata(data: Mapping[str, Any], base: str, findings: Findings) -> tuple[str | None, str | None]:
    raw = require(data, "metadata", base, findings)
    metadata = None if raw is None else expect_mapping(raw, at(base, "metadata"), findings)
    if metadata is None:
        return None, None
    where = at(base, "metadata")
    raw_name = require(metadata, "name", where, findings)
    name = None if raw_name is None else expect_k8s_name(raw_name, at(where, "name"), findings)
    namespace = None
    if metadata.get("namespace") is not None:
        namespace = expect_k8s_name(metadata["namespace"], at(where, "namespace"), findings)
    return name, namespace


def _read_template_spec(
    spec: Mapping[str, Any], path: str, findings: Findings, name: str, namespace: str | None, kind: str | None
) -> AnalysisTemplate:
    check_keys(spec, TEMPLATE_SPEC_FIELDS, path, findings)
    args = [
        TemplateArg(arg.name, arg.value, arg.value_from)
        for arg in read_args(spec.get("args"), at(path, "args"), findings, value_required=False)
    ]
    declared = {arg.name for arg in args if arg.name}
    includes = _read_includes(spec.get("templates"), at(path, "templates"), findings)
    raw_metrics = spec.get("metrics")
    if raw_metrics is None and includes:
        raw_metrics = []
    elif raw_metrics is None:
        findings.error(
            at(path, "metrics"), "is required: a template needs at least one metric (or spec.templates)"
        )
        raw_metrics = []
    elif isinstance(raw_metrics, list) and not raw_metrics:
        findings.error(at(path, "metrics"), "must list at least one metric")
    metrics = read_metrics(raw_metrics, at(path, "metrics"), findings, declared_args=declared)
    metric_names = [metric.name for metric in metrics]
    dry_run = read_dry_run(spec.get("dryRun"), at(path, "dryRun"), findings)
    retention = read_measurement_retention(
        spec.get("measurementRetention"), at(path, "measurementRetention"), findings
    )
    if not includes:  # else the included metrics count too: compose_template checks them
        check_metric_names(dry_run, metric_names, at(path, "dryRun"), findings)
        check_metric_names(
            [rule.metric_name for rule in retention], metric_names, at(path, "measurementRetention"), findings
        )
    return AnalysisTemplate(
        name=name,
        args=tuple(args),
        metrics=metrics,
        dry_run=dry_run,
        measurement_retention=retention,
        cluster_scope=kind == "ClusterAnalysisTemplate",
        namespace=namespace,
        raw_metrics=tuple(raw for raw in raw_metrics if isinstance(raw, Mapping))
        if isinstance(raw_metrics, list)
        else (),
        includes=includes,
    )


def _read_includes(value: object, path: str, findings: Findings) -> tuple[TemplateRef, ...]:
    """`spec.templates: [{templateName, clusterScope}]`."""
    if value is None:
        return ()
    entries = expect_list(value, path, findings) or []
    refs = []
    for index, entry in enumerate(entries):
        where = at(path, index)
        ref = expect_mapping(entry, where, findings)
        if ref is None:
            continue
        check_keys(ref, ("templateName", "clusterScope"), where, findings)
        name = expect_str(require(ref, "templateName", where, findings), at(where, "templateName"), findings)
        cluster = ref.get("clusterScope", False)
        if not isinstance(cluster, bool):
            findings.error(at(where, "clusterScope"), f"must be true or false, got {type_name(cluster)}")
            cluster = False
        if name:
            refs.append(TemplateRef(name, cluster_scope=cluster))
    return tuple(refs)


TemplateLookup = Callable[[str, bool], AnalysisTemplate | None]  # (name, cluster scope) -> template


def compose_template(template: AnalysisTemplate, lookup: TemplateLookup) -> AnalysisTemplate:
    """`template` with the templates it includes (`spec.templates`, at any depth) merged in,
    as Argo flattens them: their metrics, args, dryRun and measurementRetention. SpecError
    names a missing template, a cycle, a metric defined twice and args that disagree."""
    if not template.includes:
        return template
    findings = Findings()
    parts: list[AnalysisTemplate] = []
    _collect_included(template, lookup, (template.name,), parts, "spec.templates", findings)
    metrics: list[Metric] = []
    raw_metrics: list[Mapping[str, Any]] = []
    args: dict[str, TemplateArg] = {}
    owner: dict[str, str] = {}
    for part in parts:
        for metric, raw in zip(part.metrics, part.raw_metrics or part.metrics, strict=False):
            if metric.name in owner:
                findings.error(
                    "spec.templates",
                    f'metric "{metric.name}" is in both "{owner[metric.name]}" and "{part.name}"; '
                    "metric names must be unique across included templates",
                )
                continue
            owner[metric.name] = part.name
            metrics.append(metric)
            if isinstance(raw, Mapping):
                raw_metrics.append(raw)
        for arg in part.args:
            known = args.get(arg.name)
            if (
                known is not None
                and known.value is not None
                and arg.value is not None
                and known.value != arg.value
            ):
                findings.error(
                    "spec.templates",
                    f'arg "{arg.name}" has the value "{known.value}" in one included template and '
                    f'"{arg.value}" in "{part.name}"',
                )
            if known is None or (known.value is None and known.value_from is None):
                args[arg.name] = arg
    dry_run = tuple(name for part in parts for name in part.dry_run)
    retention = tuple(rule for part in parts for rule in part.measurement_retention)
    check_metric_names(dry_run, list(owner), "spec.dryRun", findings)
    check_metric_names([r.metric_name for r in retention], list(owner), "spec.measurementRetention", findings)
    findings.raise_if_errors()
    return dataclasses.replace(
        template,
        args=tuple(args.values()),
        metrics=tuple(metrics),
        dry_run=dry_run,
        measurement_retention=retention,
        raw_metrics=tuple(raw_metrics) if len(raw_metrics) == len(metrics) else (),
        includes=(),
    )


def _collect_included(
    template: AnalysisTemplate,
    lookup: TemplateLookup,
    chain: tuple[str, ...],
    parts: list[AnalysisTemplate],
    path: str,
    findings: Findings,
) -> None:
    """`template` and everything it includes, depth first, each template once."""
    if any(part is template for part in parts):
        return
    parts.append(template)
    for index, ref in enumerate(template.includes):
        where = at(at(path, index), "templateName") if len(chain) == 1 else path
        scope = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
        if ref.template_name in chain:
            cycle = " -> ".join([*chain, ref.template_name])
            findings.error(where, f"templates include each other in a cycle: {cycle}")
            continue
        included = lookup(ref.template_name, ref.cluster_scope)
        if included is None:
            findings.error(where, f'{scope} "{ref.template_name}" (included by "{template.name}") not found')
            continue
        _collect_included(included, lookup, (*chain, ref.template_name), parts, where, findings)


def metric_name_pattern(name: str) -> re.Pattern[str] | str:
    """A dryRun / measurementRetention `metricName` as Argo reads it: a regular expression
    searched in each metric's name (`.*` for all, `total-.*`); the reason when it is not one."""
    try:
        return re.compile(name)
    except re.error as error:
        hint = ' (for every metric write ".*")' if name.strip().startswith(("*", "+", "?")) else ""
        return f'"{name}" is not a valid regular expression: {error}{hint}'


def matching_metric_names(name: str, metric_names: Iterable[str]) -> list[str]:
    """The metrics `name` (a metricName regex) selects, as Argo matches it (unanchored)."""
    pattern = metric_name_pattern(name)
    return [] if isinstance(pattern, str) else [m for m in metric_names if pattern.search(m)]


def check_metric_names(
    names: Sequence[str], metric_names: Collection[str], path: str, findings: Findings
) -> None:
    """Each dryRun / measurementRetention metricName is a valid regex matching some metric."""
    for index, name in enumerate(names):
        if not name:
            continue  # already reported
        where = at(at(path, index), "metricName")
        pattern = metric_name_pattern(name)
        if isinstance(pattern, str):
            findings.error(where, pattern)
        elif not matching_metric_names(name, metric_names):
            findings.error(
                where,
                f'"{name}" matches no metric{did_you_mean(name, metric_names)}; metricName is a regular '
                'expression searched in the metric names (".*" for all)',
            )


def parse_template(doc: object) -> AnalysisTemplate:
    """A template, or SpecError with every finding."""
    findings = Findings()
    template = read_template(doc, findings)
    findings.raise_if_errors()
    assert template is not None  # no errors means a template was read
    return template


# --- metrics -----------------------------------------------------------------------


def read_metrics(
    value: object,
    path: str,
    findings: Findings,
    *,
    declared_args: Collection[str] | None = None,
    allow_placeholders: bool = True,
) -> tuple[Metric, ...]:
    """A list of metrics; `declared_args` None means "not known" (a bare metrics snippet)."""
    entries = expect_list(value, path, findings)
    if entries is None:
        return ()
    metrics = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(entries):
        metric = read_metric(
            raw, at(path, index), findings, declared_args=declared_args, allow_placeholders=allow_placeholders
        )
        if metric is None:
            continue
        if metric.name:
            report_duplicate(metric.name, seen, at(at(path, index), "name"), findings, what="metric name")
        metrics.append(metric)
    return tuple(metrics)


def parse_metrics(value: object) -> tuple[Metric, ...]:
    """A metrics list (the `metrics:` of a snippet), or SpecError."""
    findings = Findings()
    metrics = read_metrics(value, "metrics", findings)
    findings.raise_if_errors()
    return metrics


def read_metric(
    value: object,
    path: str,
    findings: Findings,
    *,
    declared_args: Collection[str] | None = None,
    allow_placeholders: bool = True,
) -> Metric | None:
    raw = expect_mapping(value, path, findings)
    if raw is None:
        return None
    return _MetricReader(raw, path, findings, allow_placeholders, declared_args).read()


class _MetricReader:
    """Reads one metric, remembering which fields wait for args before they can be checked."""

    def __init__(
        self,
        raw: Mapping[str, Any],
        path: str,
        findings: Findings,
        allow_placeholders: bool,
        declared_args: Collection[str] | None,
    ) -> None:
        self.raw = raw
        self.path = path
        self.findings = findings
        self.allow_placeholders = allow_placeholders
        self.declared_args = declared_args
        self.deferred: set[str] = set()
        self.invalid: set[str] = set()
        self.conditions: dict[str, Condition] = {}

    def read(self) -> Metric:
        check_keys(self.raw, METRIC_FIELDS, self.path, self.findings)
        self._check_declared_placeholders()
        name = self._name()
        metric = Metric(
            name=name,
            provider=self._provider(name),
            interval=self._duration("interval", positive=True),
            initial_delay=self._duration("initialDelay", positive=False),
            count=self._integer("count", minimum=0) or None,  # Argo reads 0 as unset
            success_condition=self._condition("successCondition"),
            failure_condition=self._condition("failureCondition"),
            failure_limit=self._limit("failureLimit", minimum=-1, default=0),
            inconclusive_limit=self._limit("inconclusiveLimit", minimum=0, default=0),
            consecutive_error_limit=self._limit("consecutiveErrorLimit", minimum=0, default=4),
            consecutive_success_limit=self._limit("consecutiveSuccessLimit", minimum=0, default=0),
        )
        self._check_limits(metric)
        self._check_conditions()
        return metric

    def _where(self, key: str) -> str:
        return at(self.path, key)

    def _check_declared_placeholders(self) -> None:
        if self.declared_args is None:
            return
        for where, arg in find_placeholders(self.raw, self.path):
            if arg not in self.declared_args:
                hint = did_you_mean(arg, self.declared_args)
                self.findings.error(
                    where,
                    f'placeholder {{{{args.{arg}}}}} uses arg "{arg}", '
                    f"which spec.args does not declare{hint}",
                )

    def _name(self) -> str:
        raw_name = require(self.raw, "name", self.path, self.findings)
        name = None if raw_name is None else expect_str(raw_name, self._where("name"), self.findings)
        return name or ""

    def _is_deferred(self, key: str) -> bool:
        if self.allow_placeholders and has_placeholder(self.raw.get(key)):
            self.deferred.add(key)
            return True
        return False

    def _duration(self, key: str, *, positive: bool) -> float | None:
        if self.raw.get(key) is None or self._is_deferred(key):
            return None
        seconds = expect_duration(self.raw[key], self._where(key), self.findings, positive=positive)
        if seconds is None:
            self.invalid.add(key)
        return seconds

    def _integer(self, key: str, *, minimum: int) -> int | None:
        """Argo's IntOrString: an int, or a string holding one (after args are substituted)."""
        value = self.raw.get(key)
        if value is None or self._is_deferred(key):
            return None
        if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            try:
                value = decimal_int(value)
            except ValueError as error:
                self.findings.error(self._where(key), f"must be an integer, got {error}")
                self.invalid.add(key)
                return None
        checked = expect_int(value, self._where(key), self.findings, minimum=minimum)
        if checked is None:
            self.invalid.add(key)
        return checked

    def _limit(self, key: str, *, minimum: int, default: int) -> int:
        checked = self._integer(key, minimum=minimum)
        return default if checked is None else checked

    def _condition(self, key: str) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return None
        text = expect_str(value, self._where(key), self.findings, allow_empty=True)
        if text is None or not text.strip():
            return None  # Argo reads an empty condition as no condition
        # Placeholders stand for values (of unknown type), text in strings, or map keys.
        spans = [(m.start(), m.end(), m.group(1)) for m in PLACEHOLDER.finditer(text)]
        try:
            checked = checkable(text, spans) if self.allow_placeholders else text
        except ConditionArgError as error:
            self.findings.error(self._where(key), f"invalid condition: {error}")
            return text
        try:
            self.conditions[key] = compile_condition(checked)
        except ConditionSyntaxError as error:
            self.findings.error(self._where(key), f"invalid condition: {_describe_syntax_error(error)}")
        return text

    def _check_conditions(self) -> None:
        """Warn about what Argo users might not expect: conditions that pass on no data (Argo
        promotes on them, meshshift measures Error), and Argo's default()/isNil() ignoring their
        first argument."""
        if not self.allow_placeholders:
            return  # instantiating: lint has already said it
        success = self.conditions.get("successCondition")
        failure = self.conditions.get("failureCondition")
        kinds = passes_on_no_data(success, failure)
        if kinds:
            self.findings.warning(
                self.path,
                f"the conditions pass on no data ({', '.join(kinds)}), as Argo would promote on them; "
                "meshshift measures such a result as Error. Say what no data means: "
                "`len(result) > 0 && ...`, `isNaN(result[0]) || ...`, or `default(result, 0)`",
            )
        for key, condition in self.conditions.items():
            for call in argo_ignores_first_argument(condition):
                self.findings.warning(
                    self._where(key),
                    f"{call}: as in Argo, default() and isNil() look at result itself, not at their "
                    "first argument; write result.x ?? fallback, or result.x == nil",
                )

    def _provider(self, name: str) -> ProviderSpec | None:
        if self.raw.get("provider") is None:
            self.findings.warning(
                self.path,
                f'metric "{name}" has no provider: it measures as Error until a provider is set',
            )
            return None
        return read_provider(self.raw["provider"], self._where("provider"), self.findings)

    def _known(self, key: str) -> bool:
        return key in self.raw and key not in self.deferred and key not in self.invalid

    def _check_limits(self, metric: Metric) -> None:
        """Argo's cross-field rules, skipped for fields that are waiting for args."""
        count = metric.count if self._known("count") else None
        if count is not None and count > 1 and self.raw.get("interval") is None:
            self.findings.error(self._where("count"), "needs an interval when count is more than 1")
        # Argo's rule: count >= failureLimit + consecutiveSuccessLimit (failureLimit -1 counts
        # as 0), and count >= inconclusiveLimit.
        failure = max(metric.failure_limit, 0) if self._known("failureLimit") else 0
        success = metric.consecutive_success_limit if self._known("consecutiveSuccessLimit") else 0
        if count is not None and failure + success > count:
            key = "consecutiveSuccessLimit" if success else "failureLimit"
            both = (
                f"failureLimit + consecutiveSuccessLimit ({failure} + {success})"
                if success
                else (f"failureLimit {failure}")
            )
            self.findings.error(
                self._where(key), f"count {count} is less than {both}: the metric could never conclude"
            )
        if count is not None and self._known("inconclusiveLimit") and metric.inconclusive_limit > count:
            self.findings.error(
                self._where("inconclusiveLimit"),
                f"inconclusiveLimit {metric.inconclusive_limit} is more than count {count}: "
                "it can never be reached",
            )
        failure_set = self._known("failureLimit")
        success_open = "consecutiveSuccessLimit" not in self.raw or self._known("consecutiveSuccessLimit")
        if (
            failure_set
            and metric.failure_limit == -1
            and success_open
            and metric.consecutive_success_limit == 0
        ):
            self.findings.error(
                self._where("failureLimit"),
                "failureLimit -1 disables failures and consecutiveSuccessLimit is 0 (off), so neither "
                "limit applies; set consecutiveSuccessLimit, or failureLimit 0 or more",
            )


def _describe_syntax_error(error: ConditionSyntaxError) -> str:
    """The compiler's reason on one line (the lint format is one line per finding)."""
    rest = " ".join(error.source[error.position :].split())
    where = f'near "{rest[:24]}"' if rest else "at the end"
    return f"{error.reason} ({where})"


# --- providers ---------------------------------------------------------------------

OptionCheck = Callable[[object, str, Findings], object]


def _deferrable(check: OptionCheck) -> OptionCheck:
    """Skip the check of a non-string option that holds a placeholder (`timeout: "{{args.t}}"`)."""

    def checked(value: object, path: str, findings: Findings) -> object:
        return None if has_placeholder(value) else check(value, path, findings)

    return checked


def _text(value: object, path: str, findings: Findings) -> object:
    return expect_str(value, path, findings)


def _url(value: object, path: str, findings: Findings) -> object:
    text = expect_str(value, path, findings)
    if text is not None and not text.startswith("{{") and not re.match(r"https?://[^/\s]", text):
        findings.error(path, f'"{text}" is not an http:// or https:// URL')
    return text


def _positive_int(value: object, path: str, findings: Findings) -> object:
    return expect_int(value, path, findings, minimum=1)


def _duration(value: object, path: str, findings: Findings) -> object:
    return expect_duration(value, path, findings, positive=True)


def _anything(value: object, path: str, findings: Findings) -> object:
    return value


def _choice(*choices: str) -> OptionCheck:
    def checked(value: object, path: str, findings: Findings) -> object:
        return expect_choice(value, choices, path, findings)

    return checked


def _fields(options: Mapping[str, OptionCheck], required: tuple[str, ...] = ()) -> OptionCheck:
    """A nested mapping with its own known fields."""

    def checked(value: object, path: str, findings: Findings) -> object:
        data = expect_mapping(value, path, findings)
        if data is not None:
            _check_options(data, options, required, path, findings)
        return data

    return checked


def _key_value_list(value: object, path: str, findings: Findings) -> object:
    """Argo's headers: `[{key: NAME, value: TEXT}]`."""
    entries = expect_list(value, path, findings)
    for index, entry in enumerate(entries or []):
        _fields({"key": _text, "value": _text}, ("key", "value"))(entry, at(path, index), findings)
    return entries


def _string_map(value: object, path: str, findings: Findings) -> object:
    data = expect_mapping(value, path, findings)
    if data is not None and not data:
        findings.error(path, "must hold at least one query")
    for key, item in (data or {}).items():
        expect_str(item, at(path, str(key)), findings)
    return data


def _check_options(
    data: Mapping[str, Any],
    options: Mapping[str, OptionCheck],
    required: tuple[str, ...],
    path: str,
    findings: Findings,
) -> None:
    check_keys(data, options, path, findings, what="option")
    for key in required:
        if data.get(key) is None:
            findings.error(at(path, key), "is required")
    for key, check in options.items():
        if data.get(key) is not None:
            check(data[key], at(path, key), findings)


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderSchema:
    options: Mapping[str, OptionCheck]
    required: tuple[str, ...] = ()
    # Rules between options (body needs POST, query or queries...).
    cross_check: Callable[[Mapping[str, Any], str, Findings], None] | None = None


def _check_web(options: Mapping[str, Any], path: str, findings: Findings) -> None:
    if options.get("body") is not None and options.get("jsonBody") is not None:
        findings.error(path, "give body or jsonBody, not both")
    method = options.get("method", "GET")
    for key in ("body", "jsonBody"):
        if options.get(key) is not None and method not in ("POST", "PUT"):
            findings.error(at(path, key), f"needs method POST or PUT (method is {method})")


def _check_datadog(options: Mapping[str, Any], path: str, findings: Findings) -> None:
    has_query, has_queries = options.get("query") is not None, options.get("queries") is not None
    if has_query == has_queries:
        findings.error(path, "give exactly one of query (one query) or queries (with a formula)")
    if options.get("formula") is not None and not has_queries:
        findings.error(at(path, "formula"), "needs queries: a formula combines named queries")
    if has_queries and options.get("apiVersion", "v1") != "v2":
        findings.error(at(path, "queries"), "needs apiVersion: v2")


_SEQUENTIAL_OPTIONS = (
    "stableCluster",
    "alpha",
    "relativeTolerance",
    "absoluteTolerance",
    "maxDuration",
    "requireEvidence",
    "lookEvery",
    "address",
    "canary",
    "stable",
    "codeLabel",
    "unit",
    "timeout",
    "headers",
    "insecure",
)


def _check_builtin(options: Mapping[str, Any], path: str, findings: Findings) -> None:
    builtin = options.get("builtin")
    sequential = builtin in SEQUENTIAL_METRICS
    if options.get("quantile") is not None and builtin not in ("request-duration", "sequential-latency"):
        findings.error(
            at(path, "quantile"), "only applies to builtin: request-duration or sequential-latency"
        )
    for key in _SEQUENTIAL_OPTIONS:
        if options.get(key) is not None and not sequential:
            findings.error(
                at(path, key), f"only applies to the sequential builtins ({', '.join(SEQUENTIAL_METRICS)})"
            )
    if options.get("window") is not None and sequential:
        findings.error(at(path, "window"), "does not apply to a sequential builtin: it counts from the start")
    if options.get("source") == "prometheus":
        if not sequential:
            findings.error(
                at(path, "source"), "prometheus: use a prometheus provider for this builtin's query"
            )
        for side in ("canary", "stable"):
            if options.get(side) is None:
                findings.error(
                    at(path, side), "is required with source prometheus: the series selector of that side"
                )


def _open_unit(value: object, path: str, findings: Findings) -> object:
    number = expect_number(value, path, findings)
    if number is not None and not 0 < number < 1:
        findings.error(path, f"must be between 0 and 1 (exclusive), got {number:g}")
    return number


def _non_negative(value: object, path: str, findings: Findings) -> object:
    number = expect_number(value, path, findings)
    if number is not None and number < 0:
        findings.error(path, f"must be 0 or more, got {number:g}")
    return number


def _boolean_text(value: object, path: str, findings: Findings) -> object:
    if isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")):
        return value
    findings.error(path, f'must be true or false (or "true"/"false"), got {value!r}')
    return None


def _time_expression(value: object, path: str, findings: Findings) -> object:
    text = expect_str(value, path, findings)
    if text is not None:
        try:
            parse_time_offset(PLACEHOLDER.sub("1m", text))  # an arg stands for a duration
        except ValueError as error:
            findings.error(path, str(error))
    return text


def _string_list(value: object, path: str, findings: Findings) -> object:
    entries = expect_list(value, path, findings)
    for index, entry in enumerate(entries or []):
        expect_str(entry, at(path, index), findings)
    return entries


def _refuse_sigv4(value: object, path: str, findings: Findings) -> object:
    findings.error(path, SIGV4_REFUSAL)
    return value


SIGV4_REFUSAL = (
    "sigv4 (AWS request signing, for Amazon Managed Prometheus) is not supported by meshshift; "
    "put a SigV4 proxy in front of the endpoint, or use oauth2, basicAuth or headers"
)
_HEADERS = _deferrable(_key_value_list)
# Argo's `authentication` of the prometheus and web providers.
_AUTHENTICATION = _fields(
    {
        "sigv4": _refuse_sigv4,
        "oauth2": _fields(
            {"tokenUrl": _url, "clientId": _text, "clientSecret": _text, "scopes": _string_list},
            required=("tokenUrl", "clientId", "clientSecret"),
        ),
        "basicAuth": _fields({"username": _text, "password": _text}, required=("username",)),
    }
)
PROVIDERS: Mapping[str, ProviderSchema] = {
    "prometheus": ProviderSchema(
        {
            "address": _url,
            "query": _text,
            "timeout": _deferrable(_positive_int),
            "headers": _HEADERS,
            "authentication": _AUTHENTICATION,
            "rangeQuery": _fields(
                {"start": _time_expression, "end": _time_expression, "step": _deferrable(_duration)},
                required=("start", "end", "step"),
            ),
            "insecure": _deferrable(expect_bool),
        },
        required=("query",),
    ),
    "web": ProviderSchema(
        {
            "url": _url,
            "method": _choice("GET", "POST", "PUT"),
            "headers": _HEADERS,
            "body": _text,
            "jsonBody": _anything,
            "timeoutSeconds": _deferrable(_positive_int),
            "jsonPath": _text,
            "authentication": _AUTHENTICATION,
            "insecure": _deferrable(expect_bool),
        },
        required=("url",),
        cross_check=_check_web,
    ),
    "datadog": ProviderSchema(
        {
            "apiVersion": _choice("v1", "v2"),
            "interval": _deferrable(_duration),
            "query": _text,
            "queries": _string_map,
            "formula": _text,
            "aggregator": _choice("avg", "min", "max", "sum", "last", "percentile", "mean", "l2norm", "area"),
            "secretRef": _fields({"name": _text, "namespaced": _deferrable(expect_bool)}),
            "requestTimeout": _deferrable(_duration),
        },
        cross_check=_check_datadog,
    ),
    "newRelic": ProviderSchema(
        {"profile": _text, "query": _text, "timeout": _deferrable(_positive_int)},
        required=("query",),
    ),
    "meshshift": ProviderSchema(
        {
            "builtin": _choice(*BUILTIN_METRICS),
            "window": _deferrable(_duration),
            "quantile": _deferrable(_open_unit),
            # Where the numbers come from; the runtime's standalone Envoy when left out.
            "source": _choice("envoy-admin", "prometheus"),
            "adminUrl": _url,
            "cluster": _text,
            # The sequential builtins (meshshift/analysis/providers/sequential.py).
            "stableCluster": _text,
            "alpha": _deferrable(_open_unit),
            "relativeTolerance": _deferrable(_non_negative),
            "absoluteTolerance": _deferrable(_non_negative),
            "maxDuration": _deferrable(_duration),
            "requireEvidence": _deferrable(_boolean_text),
            "lookEvery": _deferrable(_duration),
            "address": _url,
            "canary": _text,
            "stable": _text,
            "codeLabel": _text,
            "unit": _text,
            "timeout": _deferrable(_positive_int),
            "headers": _HEADERS,
            "insecure": _deferrable(expect_bool),
        },
        required=("builtin",),
        cross_check=_check_builtin,
    ),
}


def read_provider(value: object, path: str, findings: Findings) -> ProviderSpec | None:
    """`{KIND: {options}}` with exactly one supported KIND."""
    provider = expect_mapping(value, path, findings)
    if provider is None:
        return None
    supported = ", ".join(PROVIDERS)
    for key in provider:
        if key in UNSUPPORTED_PROVIDERS:
            findings.error(
                at(path, key), f'provider "{key}" is not supported by meshshift (supported: {supported})'
            )
        elif key not in PROVIDERS:
            name = str(key)
            findings.error(
                at(path, name),
                f'unknown provider "{name}"{did_you_mean(name, PROVIDERS)}; known: {supported}',
            )
    known = {key: item for key, item in provider.items() if key in PROVIDERS}
    if not provider:
        findings.error(path, f"needs exactly one provider among {supported}")
    if not known:
        return None
    kind = exactly_one_key(known, PROVIDERS, path, findings, what="provider")
    if kind is None:
        return None
    options = expect_mapping(known[kind], at(path, kind), findings)
    if options is None:
        return None
    schema = PROVIDERS[kind]
    _check_options(options, schema.options, schema.required, at(path, kind), findings)
    if schema.cross_check is not None:
        schema.cross_check(options, at(path, kind), findings)
    return ProviderSpec(kind, options)


# --- args and instantiation --------------------------------------------------------


def resolve_args(template_args: Iterable[TemplateArg], given_args: Mapping[str, str]) -> dict[str, str]:
    """The value of every declared arg: given values win over the template's defaults.

    Args declared with a `valueFrom` (secrets, field refs, pod hashes) are resolved by the
    caller and passed in `given_args`. Given args the template does not declare are left
    out, as Argo does. Raises SpecError naming every arg without a value.
    """
    resolved: dict[str, str] = {}
    missing: list[SpecIssue] = []
    for index, arg in enumerate(template_args):
        if arg.name in given_args:
            resolved[arg.name] = given_args[arg.name]
        elif arg.value is not None:
            resolved[arg.name] = arg.value
        else:
            missing.append(
                SpecIssue(f"spec.args[{index}]", f'missing arg "{arg.name}": no value given and no default')
            )
    if missing:
        raise SpecError(tuple(missing))
    return resolved


def instantiate_template(template: AnalysisTemplate, args: Mapping[str, str]) -> tuple[Metric, ...]:
    """The template's metrics with `args` substituted everywhere except in provider options.

    Fields that held placeholders are parsed strictly now; SpecError reports every
    problem (an arg without a value, `count: "{{args.n}}"` with n = "abc", ...).
    """
    findings = Findings()
    if not template.raw_metrics:
        return _instantiate_built(template, args, findings)
    metrics = []
    for index, raw in enumerate(template.raw_metrics):
        path = f"spec.metrics[{index}]"
        if not _all_args_given(raw, path, args, findings):
            continue
        substituted = {
            key: value if key == "provider" else _substitute_deep(value, args)
            for key, value in raw.items()
            if key not in CONDITION_FIELDS or not isinstance(value, str)
        }
        for key in CONDITION_FIELDS:
            if isinstance(raw.get(key), str):
                try:
                    substituted[key] = substitute_condition_args(raw[key], args)
                except ConditionArgError as error:
                    findings.error(at(path, key), f"invalid condition: {error}")
                    substituted[key] = None
        metric = read_metric(substituted, path, findings, allow_placeholders=False)
        if metric is not None:
            metrics.append(metric)
    _raise_for(template, findings)
    return tuple(metrics)


def _all_args_given(raw: object, path: str, args: Mapping[str, str], findings: Findings) -> bool:
    ok = True
    for where, arg in find_placeholders(raw, path):
        if arg not in args:
            hint = did_you_mean(arg, args)
            findings.error(where, f'arg "{arg}" has no value{hint}')
            ok = False
    return ok


def _instantiate_built(
    template: AnalysisTemplate, args: Mapping[str, str], findings: Findings
) -> tuple[Metric, ...]:
    """Templates built in code (the builtin ones) have no raw form: substitute conditions only."""
    metrics = []
    for index, metric in enumerate(template.metrics):
        path = f"spec.metrics[{index}]"
        success = _substitute_condition(
            metric.success_condition, at(path, "successCondition"), args, findings
        )
        failure = _substitute_condition(
            metric.failure_condition, at(path, "failureCondition"), args, findings
        )
        metrics.append(dataclasses.replace(metric, success_condition=success, failure_condition=failure))
    _raise_for(template, findings)
    return tuple(metrics)


def _substitute_condition(
    text: str | None, path: str, args: Mapping[str, str], findings: Findings
) -> str | None:
    if text is None or not _all_args_given(text, path, args, findings):
        return text
    try:
        return substitute_condition_args(text, args)
    except ConditionArgError as error:
        findings.error(path, f"invalid condition: {error}")
        return text


def _raise_for(template: AnalysisTemplate, findings: Findings) -> None:
    if findings.has_errors:
        issues = tuple(
            SpecIssue(issue.path, f'template "{template.name}": {issue.reason}', issue.severity)
            for issue in findings
        )
        raise SpecError(issues)

"""The `datadog` provider: Datadog's metric query API, v1 (one query) or v2 (queries and a formula).

Options (Argo Rollouts' names): `apiVersion` (v1 default, or v2), `interval` (the window
looked at, default 5m: from = now - interval), `query`, or `queries` (name -> query) with
an optional `formula` (v2), `aggregator` (v2, default `last`), `secretRef: {name, namespaced}`,
`requestTimeout` (default 10s). In a backtest, "now" is the measurement's time.

v1: `GET {address}/api/v1/query?query=&from=&to=` (seconds); `result` is the last non-null
point of the first series, or nil when there is no series (use `default(result, 0)`).
v2: `POST {address}/api/v2/query/scalar` with a `scalar_request`; `result` is the first
number column's value, or the list of its values when the query is grouped (`by {tag}`),
nil when empty.

Credentials, in Argo's order: the Secret named by `secretRef` (in the template's namespace
when `namespaced`, else meshshift's); then the environment: DD_API_KEY, DD_APP_KEY and
DD_ADDRESS or DD_SITE (datadoghq.eu -> https://api.datadoghq.eu); then the Secret
`datadog` (keys `address`, `api-key`, `app-key`). Secrets are looked up in the run's
resolved secrets first, then through the injected `SecretReader` (Kubernetes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meshshift.analysis.providers.http import (
    decode_json,
    fetch,
    find_secret,
    seconds_option,
    shorten,
)
from meshshift.analysis.providers.templating import render_datadog
from meshshift.ports import MeasureContext, ProviderError, ProviderResult, SecretReader
from meshshift.spec.model import Metric

DEFAULT_ADDRESS = "https://api.datadoghq.com"
DEFAULT_SECRET = "datadog"  # noqa: S105 (a Secret's name)
DEFAULT_INTERVAL = 300.0
DEFAULT_TIMEOUT = 10.0  # Argo's requestTimeout default
DEFAULT_AGGREGATOR = "last"


@dataclass(frozen=True, slots=True)
class DatadogCredentials:
    address: str
    api_key: str
    app_key: str
    source: str  # where they came from, for messages


class DatadogProvider:
    kind = "datadog"

    def __init__(
        self,
        *,
        secret_reader: SecretReader | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.secret_reader = secret_reader
        self.environ = os.environ if environ is None else environ
        self.clock = clock
        self.timeout = timeout

    async def measure(self, metric: Metric, context: MeasureContext) -> ProviderResult:
        options = metric.provider.options if metric.provider else {}
        field, args = "provider.datadog", context.args
        version = str(options.get("apiVersion") or "v1")
        if version not in ("v1", "v2"):
            raise ProviderError(f"{field}.apiVersion: {version!r} is not v1 or v2")
        window = int(seconds_option(options, "interval", DEFAULT_INTERVAL, args=args, field=field))
        credentials = await self.credentials(options, context)
        # A backtest asks for the window that ended at the measurement's time.
        now = int(self.clock() if context.evaluation_time is None else context.evaluation_time)
        headers = {
            "DD-API-KEY": credentials.api_key,
            "DD-APPLICATION-KEY": credentials.app_key,
            "Content-Type": "application/json",
        }
        timeout = seconds_option(options, "requestTimeout", self.timeout, args=args, field=field)
        if version == "v1":
            query = _query(options, args, field)
            what = f"datadog at {credentials.address} (v1)"
            answer = await fetch(
                "GET",
                f"{credentials.address}/api/v1/query",
                what=what,
                within=timeout,
                headers=headers,
                params={"query": query, "from": str(now - window), "to": str(now)},
            )
            _check_status(answer.status, answer.text(300), what, credentials)
            return ProviderResult(value=parse_v1(decode_json(answer, what), what), query=query)
        queries, formula = _queries(options, args, field)
        attributes: dict[str, Any] = {
            "from": (now - window) * 1000,
            "to": now * 1000,
            "queries": [
                {
                    "data_source": "metrics",
                    "name": name,
                    "query": query,
                    "aggregator": str(options.get("aggregator") or DEFAULT_AGGREGATOR),
                }
                for name, query in queries.items()
            ],
        }
        if formula is not None:
            attributes["formulas"] = [{"formula": formula}]
        what = f"datadog at {credentials.address} (v2)"
        answer = await fetch(
            "POST",
            f"{credentials.address}/api/v2/query/scalar",
            what=what,
            within=timeout,
            headers=headers,
            json_body={"data": {"type": "scalar_request", "attributes": attributes}},
        )
        _check_status(answer.status, answer.text(300), what, credentials)
        shown = "; ".join(f"{name}: {query}" for name, query in queries.items())
        if formula is not None:
            shown += f"; formula: {formula}"
        return ProviderResult(value=parse_v2(decode_json(answer, what), what), query=shown)

    def history_refusal(self, metric: Metric) -> str | None:
        """Both APIs take the window (`from`, `to`), so a past one is as easy as the last."""
        return None

    async def credentials(self, options: Mapping[str, Any], context: MeasureContext) -> DatadogCredentials:
        """The first complete set of credentials, in Argo's order (see the module docstring)."""
        ref = options.get("secretRef")
        if isinstance(ref, Mapping) and ref.get("name"):
            name = str(ref["name"])
            namespaced = ref.get("namespaced") in (True, "true")
            data = await find_secret(
                name,
                context=context,
                namespace=context.namespace if namespaced else None,
                reader=self.secret_reader,
            )
            found = _from_secret(data, f"Secret {name}")
            if found is not None:
                return found
        found = self._from_environment()
        if found is not None:
            return found
        data = await find_secret(DEFAULT_SECRET, context=context, namespace=None, reader=self.secret_reader)
        found = _from_secret(data, f"Secret {DEFAULT_SECRET}")
        if found is not None:
            return found
        raise ProviderError(
            "no Datadog credentials: set DD_API_KEY and DD_APP_KEY (and DD_SITE or DD_ADDRESS) for "
            f"meshshift, or create the Secret {DEFAULT_SECRET!r} with keys api-key, app-key and address"
        )

    def _from_environment(self) -> DatadogCredentials | None:
        api_key, app_key = self.environ.get("DD_API_KEY"), self.environ.get("DD_APP_KEY")
        if not api_key or not app_key:
            return None
        address = self.environ.get("DD_ADDRESS")
        site = self.environ.get("DD_SITE")
        if not address and site:
            address = f"https://api.{site.removeprefix('app.')}"
        return DatadogCredentials(_normalise(address), api_key, app_key, "the environment")


def _from_secret(data: Mapping[str, str] | None, source: str) -> DatadogCredentials | None:
    if not data or not data.get("api-key") or not data.get("app-key"):
        return None
    return DatadogCredentials(_normalise(data.get("address")), data["api-key"], data["app-key"], source)


def _normalise(address: str | None) -> str:
    if not address:
        return DEFAULT_ADDRESS
    address = address.strip().rstrip("/")
    return address if "://" in address else f"https://{address}"


def _query(options: Mapping[str, Any], args: Mapping[str, str], field: str) -> str:
    raw = options.get("query")
    if not isinstance(raw, str) or not raw.strip():
        raise ProviderError(f"{field}.query: apiVersion v1 needs a query")
    return render_datadog(raw.strip(), args, field=f"{field}.query")


def _queries(
    options: Mapping[str, Any], args: Mapping[str, str], field: str
) -> tuple[dict[str, str], str | None]:
    raw_queries = options.get("queries")
    if isinstance(raw_queries, Mapping) and raw_queries:
        queries = {
            str(name): render_datadog(str(query).strip(), args, field=f"{field}.queries.{name}")
            for name, query in raw_queries.items()
        }
    elif isinstance(options.get("query"), str) and options["query"].strip():
        queries = {"query": render_datadog(options["query"].strip(), args, field=f"{field}.query")}
    else:
        raise ProviderError(f"{field}: give query, or queries (name: query) with an optional formula")
    raw_formula = options.get("formula")
    formula = None
    if raw_formula is not None:
        formula = render_datadog(str(raw_formula).strip(), args, field=f"{field}.formula")
    return queries, formula


def _check_status(status: int, text: str, what: str, credentials: DatadogCredentials) -> None:
    if status in (401, 403):
        raise ProviderError(
            f"{what} refused the credentials from {credentials.source} (HTTP {status}): {text!r}; "
            "check the API and application keys"
        )
    if not 200 <= status < 300:
        raise ProviderError(f"{what} answered HTTP {status}: {text!r}")


def parse_v1(body: Any, what: str) -> float | None:
    """The last non-null point of the first series, or None when there is none."""
    if not isinstance(body, Mapping):
        raise ProviderError(f"{what} answered unexpected JSON: {shorten(str(body), 200)!r}")
    if body.get("status") == "error" or body.get("error"):
        raise ProviderError(f"{what} rejected the query: {body.get('error')}")
    series = body.get("series") or []
    if not series:
        return None
    try:
        points = [point for point in series[0].get("pointlist") or [] if point[1] is not None]
        return float(points[-1][1]) if points else None
    except (AttributeError, IndexError, TypeError, ValueError):
        raise ProviderError(f"{what} answered a malformed series: {shorten(str(series[0]), 200)!r}") from None


def parse_v2(body: Any, what: str) -> float | list[float] | None:
    """The first number column: its value, or all its values for a grouped query."""
    if not isinstance(body, Mapping):
        raise ProviderError(f"{what} answered unexpected JSON: {shorten(str(body), 200)!r}")
    data: Mapping[str, Any] = body["data"] if isinstance(body.get("data"), Mapping) else {}
    errors = body.get("errors") or data.get("errors")
    if errors:
        raise ProviderError(f"{what} reported errors in the query: {shorten(str(errors), 300)}")
    attributes: Mapping[str, Any] = data["attributes"] if isinstance(data.get("attributes"), Mapping) else {}
    columns = attributes.get("columns") or []
    if not isinstance(columns, list):
        raise ProviderError(f"{what} answered malformed columns: {shorten(str(columns), 200)!r}")
    numbers = [c for c in columns if isinstance(c, Mapping) and c.get("type") == "number"]
    grouped = any(isinstance(c, Mapping) and c.get("type") == "group" for c in columns)
    if not numbers:
        return [] if grouped else None
    values = numbers[0].get("values") or []
    try:
        if grouped:
            return [float(value) for value in values if value is not None]
        return None if not values or values[0] is None else float(values[0])
    except (TypeError, ValueError):
        raise ProviderError(f"{what} answered non-numeric values: {shorten(str(values), 200)!r}") from None

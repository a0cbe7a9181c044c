"""The `prometheus` provider: one instant query against the Prometheus HTTP API.

Options (Argo Rollouts' names): `address`, `query`, `timeout` (seconds, default 30),
`headers` (`[{key, value}]`), `insecure`, `rangeQuery` (`{start, end, step}`: a range query,
start and end written `now()` or `now() - duration("5m")`; in a backtest `now()` is the
measurement's time), `authentication` (`basicAuth`, or
`oauth2` client credentials; see http.authentication_headers). Without `address` the provider's default is
used: the one it was built with, else `$MESHSHIFT_PROMETHEUS_ADDRESS`. A bearer token is
sent when no Authorization header is given and one is configured: the constructor's,
else `$MESHSHIFT_PROMETHEUS_BEARER_TOKEN`, else the file named by
`$MESHSHIFT_PROMETHEUS_BEARER_TOKEN_FILE` (read at every measurement: tokens rotate).

A backtest (`MeasureContext.evaluation_time`) sends the instant query with `time=`, so
Prometheus evaluates it over its history as it would have then.

The answer becomes `result`: a scalar is a number; a vector is a list of numbers, one per
series, in Prometheus' order; a matrix (a range selector) is the list of every sample of
every series; NaN and ±Inf are kept as floats; an empty vector is an empty list.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from meshshift.analysis.providers.http import (
    authentication_headers,
    decode_json,
    fetch,
    is_true,
    render_headers,
    seconds_option,
    shorten,
)
from meshshift.analysis.providers.templating import render_plain, render_promql, render_url
from meshshift.ports import MeasureContext, ProviderError, ProviderResult
from meshshift.spec.durations import parse_duration, parse_time_offset
from meshshift.spec.model import Metric

log = structlog.get_logger(__name__)

ENV_ADDRESS = "MESHSHIFT_PROMETHEUS_ADDRESS"
ENV_BEARER_TOKEN = "MESHSHIFT_PROMETHEUS_BEARER_TOKEN"  # noqa: S105 (a variable's name)
ENV_BEARER_TOKEN_FILE = "MESHSHIFT_PROMETHEUS_BEARER_TOKEN_FILE"  # noqa: S105
DEFAULT_TIMEOUT = 30.0


class PrometheusProvider:
    kind = "prometheus"

    def __init__(
        self,
        *,
        default_address: str | None = None,
        bearer_token: str | None = None,
        bearer_token_file: str | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        env = os.environ if environ is None else environ
        self.default_address = default_address or env.get(ENV_ADDRESS) or None
        self.bearer_token = bearer_token or env.get(ENV_BEARER_TOKEN) or None
        self.bearer_token_file = bearer_token_file or env.get(ENV_BEARER_TOKEN_FILE) or None
        self.timeout = timeout

    async def measure(self, metric: Metric, context: MeasureContext) -> ProviderResult:
        options = metric.provider.options if metric.provider else {}
        field = "provider.prometheus"
        raw_query = options.get("query")
        if not isinstance(raw_query, str) or not raw_query.strip():
            raise ProviderError(f"{field}.query: a query is required")
        query = render_promql(raw_query, context.args, field=f"{field}.query")
        at = context.evaluation_time
        range_form: dict[str, str] = {}
        if options.get("rangeQuery"):
            now = time.time() if at is None else at
            range_form = _range(options["rangeQuery"], context.args, f"{field}.rangeQuery", now=now)
        body, what, status = await self.query(
            query, options, context.args, field, range_form=range_form, evaluation_time=at
        )
        value = parse_query_response(body, what=what, query=query, status=status)
        return ProviderResult(value=value, query=query)

    def history_refusal(self, metric: Metric) -> str | None:
        """Prometheus evaluates any query at a past time (`time=`), from its TSDB."""
        return None

    async def query(
        self,
        query: str,
        options: Mapping[str, Any],
        args: Mapping[str, str],
        field: str,
        *,
        range_form: Mapping[str, str] | None = None,
        evaluation_time: float | None = None,
    ) -> tuple[Any, str, int]:
        """(decoded answer, "prometheus at ADDRESS", HTTP status) of one query: an instant one
        (evaluated now, or at `evaluation_time`), or a range query with `range_form`.

        `options` are a template's prometheus options (address, timeout, headers,
        authentication, insecure).
        """
        address = self.address(options, args, field)
        timeout = seconds_option(options, "timeout", self.timeout, args=args, field=field)
        verify_tls = not is_true(options.get("insecure"))
        headers = self._headers(options, args, field)
        headers |= await authentication_headers(options, args, field, within=timeout, verify_tls=verify_tls)
        what = f"prometheus at {address}"
        form = {"query": query, "timeout": f"{timeout:g}"}  # seconds: the server stops there too
        endpoint = "query"
        if range_form:
            endpoint = "query_range"
            form |= range_form
        elif evaluation_time is not None:
            form["time"] = f"{evaluation_time:.3f}"
        answer = await fetch(
            "POST",
            f"{address}/api/v1/{endpoint}",
            what=what,
            within=timeout,
            headers=headers,
            data=form,
            verify_tls=verify_tls,
        )
        return decode_json(answer, what), what, answer.status

    def address(self, options: Mapping[str, Any], args: Mapping[str, str], field: str) -> str:
        raw = options.get("address")
        if raw:
            address = render_url(str(raw), args, field=f"{field}.address")
        elif self.default_address:
            address = self.default_address
        else:
            raise ProviderError(
                f"{field}.address: no Prometheus address: set it in the template, or set ${ENV_ADDRESS} "
                "for meshshift"
            )
        return address.rstrip("/")

    def _headers(self, options: Mapping[str, Any], args: Mapping[str, str], field: str) -> dict[str, str]:
        headers = render_headers(options, args, field)
        if not any(key.lower() == "authorization" for key in headers):
            token = self._bearer_token()
            if token:
                headers["Authorization"] = f"Bearer {token}"
        return headers

    def _bearer_token(self) -> str | None:
        if self.bearer_token:
            return self.bearer_token
        if self.bearer_token_file:
            try:
                return Path(self.bearer_token_file).read_text().strip() or None
            except OSError as error:
                raise ProviderError(
                    f"cannot read the Prometheus bearer token file {self.bearer_token_file}: {error.strerror}"
                ) from None
        return None


def _range(value: object, args: Mapping[str, str], field: str, *, now: float) -> dict[str, str]:
    """`rangeQuery: {start, end, step}` as query_range parameters (Unix seconds, step in seconds)."""
    if not isinstance(value, Mapping):
        raise ProviderError(f"{field}: expected {{start, end, step}}")
    try:
        start = now + parse_time_offset(
            render_plain(str(value.get("start", "")), args, field=f"{field}.start")
        )
        end = now + parse_time_offset(render_plain(str(value.get("end", "")), args, field=f"{field}.end"))
        step = parse_duration(render_plain(str(value.get("step", "")), args, field=f"{field}.step"))
    except ValueError as error:
        raise ProviderError(f"{field}: {error}") from None
    if end < start:
        raise ProviderError(f"{field}: end is before start")
    return {"start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}


def parse_query_response(body: Any, *, what: str, query: str, status: int = 200) -> float | list[float]:
    """The `result` of a Prometheus API answer (see the module docstring)."""
    for_query = f"for query {shorten(query, 200)!r}"
    if not isinstance(body, Mapping):
        raise ProviderError(f"{what} answered HTTP {status} with unexpected JSON {shorten(str(body), 200)!r}")
    if body.get("status") != "success":
        if "error" in body:
            reason = f"{body.get('errorType', 'error')}: {body.get('error')}"
            raise ProviderError(f"{what} rejected the query ({reason}) {for_query}")
        raise ProviderError(f"{what} answered HTTP {status} {for_query}: {shorten(str(body), 200)}")
    for warning in body.get("warnings") or ():
        log.warning("prometheus warning", address=what, query=query, warning=warning)
    data = body.get("data")
    if not isinstance(data, Mapping):
        raise ProviderError(f"{what} answered without data {for_query}")
    result_type = data.get("resultType")
    result: Any = data.get("result")
    try:
        if result_type == "scalar":
            return _number(result[1])
        if result_type == "vector":
            return [_number(sample["value"][1]) for sample in result]
        if result_type == "matrix":
            return [_number(point[1]) for series in result for point in series["values"]]
    except (TypeError, KeyError, IndexError, ValueError):
        raise ProviderError(
            f"{what} answered a malformed {result_type} {for_query}: {shorten(str(result), 200)!r}"
        ) from None
    raise ProviderError(
        f"{what} answered a {result_type} result {for_query}; meshshift reads scalar, vector and "
        "matrix results (make the query return numbers)"
    )


def parse_series_response(
    body: Any, *, what: str, query: str, status: int = 200
) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every series of an instant vector answer (raw counter readings)."""
    for_query = f"for query {shorten(query, 200)!r}"
    if not isinstance(body, Mapping) or body.get("status") != "success":
        parse_query_response(body, what=what, query=query, status=status)  # raises with the reason
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, Mapping) or data.get("resultType") != "vector":
        kind = data.get("resultType") if isinstance(data, Mapping) else None
        raise ProviderError(f"{what} answered a {kind} result {for_query}; a series selector gives a vector")
    series = []
    try:
        for sample in data.get("result") or ():
            labels = {str(k): str(v) for k, v in sample["metric"].items()}
            series.append((labels, _number(sample["value"][1])))
    except (TypeError, KeyError, IndexError, ValueError, AttributeError):
        raise ProviderError(
            f"{what} answered a malformed vector {for_query}: {shorten(str(data.get('result')), 200)!r}"
        ) from None
    return series


def _number(text: object) -> float:
    # Prometheus sends sample values as strings; float() reads "NaN", "+Inf" and "-Inf".
    return float(str(text))

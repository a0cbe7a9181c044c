"""The `newRelic` provider: one NRQL query through New Relic's NerdGraph (GraphQL) API.

Options (Argo Rollouts' names): `query` (NRQL), `profile` (the Secret holding the
credentials, default `newrelic`), `timeout` (seconds, default 30).

The request is `POST {nerdgraph}` with header `API-Key` and the body
`{"query": "query($accountId: Int!, $nrql: Nrql!) { actor { account(id: $accountId)
{ nrql(query: $nrql) { results } } } }", "variables": {...}}`: the same GraphQL as
`actor { account(id: N) { nrql(query: "...") { results } } }`, with the account and the
NRQL passed as variables so that no NRQL text is ever spliced into GraphQL (as
newrelic-client-go, which Argo uses, does). `result` follows Argo: the single result
object when there is one, else the list of results (empty when there are none).

In a backtest the NRQL's relative window (`SINCE 30 minutes ago`, `UNTIL ...`; without SINCE,
NRQL's last hour) is rewritten to epoch milliseconds counted back from the measurement's time
(templating.nrql_at).

Credentials: the Secret `profile` (keys `personal-api-key`, `account-id`, optional
`region` us|eu and `base-url-nerdgraph`), looked up in the run's resolved secrets and then
through the injected `SecretReader`; else the environment: NEWRELIC_API_KEY,
NEWRELIC_ACCOUNT_ID, optional NEWRELIC_REGION and NEWRELIC_BASE_URL_NERDGRAPH.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshshift.analysis.providers.http import (
    decode_json,
    fetch,
    find_secret,
    seconds_option,
    shorten,
)
from meshshift.analysis.providers.templating import nrql_at, render_nrql
from meshshift.ports import MeasureContext, ProviderError, ProviderResult, SecretReader
from meshshift.spec.model import Metric
from meshshift.spec.templates import PLACEHOLDER

DEFAULT_SECRET = "newrelic"  # noqa: S105 (a Secret's name)
DEFAULT_TIMEOUT = 30.0
NERDGRAPH_URLS = {"us": "https://api.newrelic.com/graphql", "eu": "https://api.eu.newrelic.com/graphql"}
NRQL_QUERY = (
    "query($accountId: Int!, $nrql: Nrql!) "
    "{ actor { account(id: $accountId) { nrql(query: $nrql) { results } } } }"
)


@dataclass(frozen=True, slots=True)
class NewRelicCredentials:
    url: str
    api_key: str
    account_id: int
    source: str


class NewRelicProvider:
    kind = "newRelic"

    def __init__(
        self,
        *,
        secret_reader: SecretReader | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.secret_reader = secret_reader
        self.environ = os.environ if environ is None else environ
        self.timeout = timeout

    async def measure(self, metric: Metric, context: MeasureContext) -> ProviderResult:
        options = metric.provider.options if metric.provider else {}
        field = "provider.newRelic"
        raw = options.get("query")
        if not isinstance(raw, str) or not raw.strip():
            raise ProviderError(f"{field}.query: an NRQL query is required")
        nrql = " ".join(render_nrql(raw, context.args, field=f"{field}.query").split())
        if context.evaluation_time is not None:
            try:
                nrql = nrql_at(nrql, context.evaluation_time)
            except ValueError as error:
                raise ProviderError(f"{field}.query: {error}") from None
        credentials = await self.credentials(options, context)
        timeout = seconds_option(options, "timeout", self.timeout, args=context.args, field=field)
        what = f"New Relic NerdGraph at {credentials.url}"
        answer = await fetch(
            "POST",
            credentials.url,
            what=what,
            within=timeout,
            headers={"API-Key": credentials.api_key, "Content-Type": "application/json"},
            json_body={"query": NRQL_QUERY, "variables": {"accountId": credentials.account_id, "nrql": nrql}},
        )
        if answer.status in (401, 403):
            raise ProviderError(
                f"{what} refused the API key from {credentials.source} (HTTP {answer.status}): "
                f"{answer.text(200)!r}; check personal-api-key"
            )
        if not answer.ok:
            raise ProviderError(f"{what} answered HTTP {answer.status}: {answer.text(300)!r}")
        results = parse_results(decode_json(answer, what), what, credentials.account_id)
        value: Any = results[0] if len(results) == 1 else results
        return ProviderResult(value=value, query=nrql)

    def history_refusal(self, metric: Metric) -> str | None:
        """NRQL says its own window; a relative one (or none) can be moved to a past time."""
        options = metric.provider.options if metric.provider else {}
        raw = options.get("query")
        if not isinstance(raw, str):
            return None  # measuring says what is wrong
        try:
            nrql_at(PLACEHOLDER.sub("0", raw), 0.0)
        except ValueError as error:
            return f"the NRQL query of metric {metric.name!r}: {error}"
        return None

    async def credentials(self, options: Mapping[str, Any], context: MeasureContext) -> NewRelicCredentials:
        profile = str(options.get("profile") or DEFAULT_SECRET)
        data = await find_secret(profile, context=context, namespace=None, reader=self.secret_reader)
        if data and data.get("personal-api-key") and data.get("account-id"):
            return _credentials(
                data["personal-api-key"],
                data["account-id"],
                data.get("region"),
                data.get("base-url-nerdgraph"),
                f"Secret {profile}",
            )
        env = self.environ
        if env.get("NEWRELIC_API_KEY") and env.get("NEWRELIC_ACCOUNT_ID"):
            return _credentials(
                env["NEWRELIC_API_KEY"],
                env["NEWRELIC_ACCOUNT_ID"],
                env.get("NEWRELIC_REGION"),
                env.get("NEWRELIC_BASE_URL_NERDGRAPH"),
                "the environment",
            )
        raise ProviderError(
            f"no New Relic credentials: create the Secret {profile!r} with keys personal-api-key and "
            "account-id, or set NEWRELIC_API_KEY and NEWRELIC_ACCOUNT_ID for meshshift"
        )


def _credentials(
    api_key: str, account: str, region: str | None, url: str | None, source: str
) -> NewRelicCredentials:
    try:
        account_id = int(account)
    except ValueError:
        raise ProviderError(f"New Relic account-id from {source} is not a number: {account!r}") from None
    region = (region or "us").lower()
    if not url:
        if region not in NERDGRAPH_URLS:
            raise ProviderError(f"New Relic region from {source} must be us or eu, not {region!r}")
        url = NERDGRAPH_URLS[region]
    return NewRelicCredentials(url.rstrip("/"), api_key, account_id, source)


def parse_results(body: Any, what: str, account_id: int) -> list[Any]:
    """`data.actor.account.nrql.results`, or ProviderError with NerdGraph's own error messages."""
    if not isinstance(body, Mapping):
        raise ProviderError(f"{what} answered unexpected JSON: {shorten(str(body), 200)!r}")
    errors = body.get("errors")
    if errors:
        messages = [e.get("message", str(e)) if isinstance(e, Mapping) else str(e) for e in errors]
        raise ProviderError(f"{what} reported: {shorten('; '.join(messages), 300)}")
    try:
        results = body["data"]["actor"]["account"]["nrql"]["results"]
    except (KeyError, TypeError):
        raise ProviderError(
            f"{what} answered without data.actor.account.nrql.results (account {account_id}): "
            f"{shorten(str(body), 200)!r}"
        ) from None
    if results is None:
        return []
    if not isinstance(results, list):
        raise ProviderError(f"{what} answered results that are not a list: {shorten(str(results), 200)!r}")
    return results

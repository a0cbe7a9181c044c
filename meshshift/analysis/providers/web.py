"""The `web` provider: one HTTP request whose JSON answer (or a part of it) is `result`.

Options (Argo Rollouts' names): `url`, `method` (GET, POST, PUT; default GET), `headers`
(`[{key, value}]`), `body` (JSON text) or `jsonBody` (a YAML value, sent as JSON),
`timeoutSeconds` (default 10), `jsonPath` (Argo's `{$.a.b}` syntax, default `{$}`: the whole
answer), `insecure`, `authentication` (`basicAuth`, or `oauth2` client credentials).

The value at `jsonPath` becomes `result` as it is in the JSON (number, string, list,
object, null); the first match when the path matches several. An answer that is not JSON
becomes `result` as text. A non-2xx status, a timeout, an unreachable host or a path that
matches nothing is an Error measurement.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as parse_jsonpath

from meshshift.analysis.providers.http import (
    authentication_headers,
    fetch,
    is_true,
    render_headers,
    seconds_option,
    shorten,
)
from meshshift.analysis.providers.templating import (
    render_json_text,
    render_json_value,
    render_plain,
    render_url,
)
from meshshift.ports import MeasureContext, ProviderError, ProviderResult
from meshshift.spec.model import Metric

DEFAULT_TIMEOUT = 10.0
METHODS = ("GET", "POST", "PUT")
NO_HISTORY = (
    "the web provider asks an endpoint about now; an endpoint keeps no history to replay, so a "
    "backtest cannot measure it"
)
# Query parameters whose values are kept out of the recorded query and of messages.
_SECRET_PARAMS = ("key", "token", "secret", "password", "passwd", "auth", "signature", "credential")


class WebProvider:
    kind = "web"

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout

    def history_refusal(self, metric: Metric) -> str | None:
        return f"metric {metric.name!r}: {NO_HISTORY}"

    async def measure(self, metric: Metric, context: MeasureContext) -> ProviderResult:
        options = metric.provider.options if metric.provider else {}
        field, args = "provider.web", context.args
        if context.evaluation_time is not None:
            raise ProviderError(f"{field}: {NO_HISTORY}")
        if not options.get("url"):
            raise ProviderError(f"{field}.url: a URL is required")
        url = render_url(str(options["url"]), args, field=f"{field}.url")
        method = str(options.get("method") or "GET").upper()
        if method not in METHODS:
            raise ProviderError(f"{field}.method: {method!r} is not one of {', '.join(METHODS)}")
        verify_tls = not is_true(options.get("insecure"))
        timeout = seconds_option(options, "timeoutSeconds", self.timeout, args=args, field=field)
        headers = render_headers(options, args, field)
        headers |= await authentication_headers(options, args, field, within=timeout, verify_tls=verify_tls)
        body: str | None = None
        if options.get("body") is not None and options.get("jsonBody") is not None:
            raise ProviderError(f"{field}: give body or jsonBody, not both")
        if options.get("body") is not None:
            body = render_json_text(str(options["body"]), args, field=f"{field}.body")
        elif options.get("jsonBody") is not None:
            body = json.dumps(render_json_value(options["jsonBody"], args, field=f"{field}.jsonBody"))
            headers.setdefault("Content-Type", "application/json")
        if body is not None and method == "GET":
            raise ProviderError(f"{field}: a body needs method POST or PUT")
        json_path = render_plain(str(options.get("jsonPath") or "{$}"), args, field=f"{field}.jsonPath")
        shown = f"{method} {display_url(url)}"
        answer = await fetch(
            method,
            url,
            what=f"web {shown}",
            within=timeout,
            headers=headers,
            data=body.encode() if body is not None else None,
            verify_tls=verify_tls,
        )
        if not answer.ok:
            raise ProviderError(f"web {shown} answered HTTP {answer.status}: {answer.text(200)!r}")
        value = extract(answer.body, json_path, where=f"the answer of {shown}")
        return ProviderResult(value=value, query=shown)


def display_url(url: str) -> str:
    """`url` with the values of credential-like query parameters replaced by `REDACTED`."""
    parts = urllib.parse.urlsplit(url)
    if not parts.query:
        return url
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    shown = [
        (name, "REDACTED" if any(word in name.lower() for word in _SECRET_PARAMS) else value)
        for name, value in pairs
    ]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(shown)))


def to_jsonpath(expression: str) -> str:
    """Argo's (Kubernetes') `{$.a.b}` or `{.a.b}` as a jsonpath-ng expression `$.a.b`."""
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if not text.startswith("$"):
        text = "$" + (text if text.startswith((".", "[")) else "." + text)
    return text


def extract(body: bytes, json_path: str, *, where: str) -> Any:
    """The first value at `json_path` in the JSON `body`, or the body as text if it is not JSON."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise ProviderError(f"{where} is JSON nested too deeply to read") from None
    except ValueError:
        return body.decode("utf-8", errors="replace")
    try:
        expression = parse_jsonpath(to_jsonpath(json_path))
    except JSONPathError as error:
        raise ProviderError(f"jsonPath {json_path!r} is not valid: {error}") from None
    matches = expression.find(document)
    if not matches:
        text = shorten(body.decode(errors="replace"), 200)
        raise ProviderError(f"jsonPath {json_path!r} matched nothing in {where}: {text!r}")
    return matches[0].value

"""One HTTP exchange for a provider, with every failure turned into an actionable ProviderError.

Each measurement opens its own short-lived session: measurements are minutes apart, so
there is nothing to pool, and nothing to close when a provider is dropped.

An answer is read to its end, up to MAX_BODY_BYTES (8 MiB): far above any metric answer
(a Prometheus vector of 10,000 series is about 2 MiB), low enough that one odd endpoint
cannot fill the daemon's memory. A longer answer is an Error measurement saying so; it is
never cut and parsed in part.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from meshshift.analysis.providers.templating import (
    render_header,
    render_header_name,
    render_plain,
    render_url,
)
from meshshift.ports import MeasureContext, ProviderError, SecretReader
from meshshift.spec.durations import parse_duration
from meshshift.spec.templates import SIGV4_REFUSAL

# A provider answer larger than this is not a metric; refuse it rather than hold it.
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes
    url: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self, limit: int = 300) -> str:
        return shorten(self.body.decode("utf-8", errors="replace"), limit)


def shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def fetch(
    method: str,
    url: str,
    *,
    what: str,
    within: float,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    data: Mapping[str, str] | str | bytes | None = None,
    json_body: Any = None,
    verify_tls: bool = True,
) -> HttpAnswer:
    """Send one request; `what` names the service in errors ("prometheus at http://...")."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as session,
            session.request(
                method,
                url,
                headers=dict(headers or {}),
                params=dict(params) if params is not None else None,
                data=data,
                json=json_body,
                ssl=verify_tls,
            ) as response,
        ):
            body = await read_body(response, what)
            return HttpAnswer(response.status, body, str(response.url))
    except TimeoutError:
        raise ProviderError(f"{what} did not answer within {within:g}s") from None
    except aiohttp.InvalidURL as error:
        raise ProviderError(f"{what}: invalid URL {error}") from None
    except aiohttp.ClientConnectorError as error:
        raise ProviderError(f"cannot reach {what}: {error.strerror or error}; check the address") from None
    except aiohttp.ClientError as error:
        raise ProviderError(f"{what}: {type(error).__name__}: {error}") from None
    except ValueError as error:  # UnicodeError for a bad host name, a header aiohttp refuses
        raise ProviderError(f"{what}: cannot send the request: {error}") from None


async def read_body(response: aiohttp.ClientResponse, what: str) -> bytes:
    """The whole answer, or ProviderError once it passes MAX_BODY_BYTES."""
    too_long = ProviderError(
        f"{what} answered more than {MAX_BODY_BYTES // (1024 * 1024)} MiB; refusing it "
        "(a metric answer is never that large: narrow the query)"
    )
    if response.content_length is not None and response.content_length > MAX_BODY_BYTES:
        raise too_long
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_long
    return bytes(body)


def decode_json(answer: HttpAnswer, what: str) -> Any:
    try:
        return json.loads(answer.body)
    except RecursionError:
        raise ProviderError(f"{what} answered JSON nested too deeply to read") from None
    except ValueError:
        raise ProviderError(
            f"{what} answered HTTP {answer.status} with a body that is not JSON: {answer.text(200)!r}"
        ) from None


async def find_secret(
    name: str, *, context: MeasureContext, namespace: str | None, reader: SecretReader | None
) -> Mapping[str, str] | None:
    """A Secret's data: from the run's resolved secrets, else read (the run's reader first)."""
    if name in context.secrets:
        return context.secrets[name]
    for read in (context.secret_reader, reader):
        if read is not None:
            return await read(name, namespace)
    return None


def seconds_option(
    options: Mapping[str, Any], key: str, default: float, *, args: Mapping[str, str], field: str
) -> float:
    """A timeout or window in seconds: a number (10) or a duration ("30s", "5m"); args allowed."""
    raw = options.get(key)
    if raw is None:
        return default
    value: object = raw
    if not isinstance(raw, int | float):
        value = render_plain(str(raw), args, field=f"{field}.{key}")
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise ProviderError(f"{field}.{key}: {error}") from None
    if seconds <= 0:
        raise ProviderError(f"{field}.{key}: must be more than 0 seconds, got {raw!r}")
    return seconds


def render_headers(options: Mapping[str, Any], args: Mapping[str, str], field: str) -> dict[str, str]:
    """Argo's `headers: [{key, value}]`, args substituted (no line breaks can come in)."""
    headers: dict[str, str] = {}
    for index, entry in enumerate(options.get("headers") or []):
        where = f"{field}.headers[{index}]"
        if not isinstance(entry, Mapping) or "key" not in entry:
            raise ProviderError(f"{where}: expected {{key: NAME, value: TEXT}}")
        key = render_header_name(str(entry["key"]), args, field=f"{where}.key")
        headers[key] = render_header(str(entry.get("value", "")), args, field=f"{where}.value")
    return headers


async def authentication_headers(
    options: Mapping[str, Any], args: Mapping[str, str], field: str, *, within: float, verify_tls: bool
) -> dict[str, str]:
    """The Authorization header of Argo's `authentication` option: `basicAuth` (username,
    password) or `oauth2` (the client-credentials grant: a token fetched from `tokenUrl` at each
    measurement). `sigv4` is refused (lint refuses it first)."""
    authentication = options.get("authentication")
    if not authentication:
        return {}
    where = f"{field}.authentication"
    if not isinstance(authentication, Mapping):
        raise ProviderError(f"{where}: expected a mapping")
    if authentication.get("sigv4"):
        raise ProviderError(f"{where}.sigv4: {SIGV4_REFUSAL}")
    oauth2 = authentication.get("oauth2")
    if isinstance(oauth2, Mapping) and oauth2.get("tokenUrl"):
        token = await client_credentials_token(
            oauth2, args, f"{where}.oauth2", within=within, verify_tls=verify_tls
        )
        return {"Authorization": f"Bearer {token}"}
    basic = authentication.get("basicAuth")
    if isinstance(basic, Mapping) and basic.get("username"):
        user = render_header(str(basic["username"]), args, field=f"{where}.basicAuth.username")
        password = render_header(str(basic.get("password") or ""), args, field=f"{where}.basicAuth.password")
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


async def client_credentials_token(
    oauth2: Mapping[str, Any], args: Mapping[str, str], where: str, *, within: float, verify_tls: bool
) -> str:
    """An access token by OAuth2's client-credentials grant (RFC 6749 4.4). The client
    authenticates with HTTP Basic, and again in the form when the server refuses that (as Go's
    oauth2 package does)."""
    token_url = render_url(str(oauth2["tokenUrl"]), args, field=f"{where}.tokenUrl")
    client_id = render_plain(str(oauth2.get("clientId") or ""), args, field=f"{where}.clientId")
    secret = render_plain(str(oauth2.get("clientSecret") or ""), args, field=f"{where}.clientSecret")
    if not client_id or not secret:
        raise ProviderError(f"{where}: clientId and clientSecret are required")
    form = {"grant_type": "client_credentials"}
    scopes = oauth2.get("scopes") or []
    if scopes:
        form["scope"] = " ".join(render_plain(str(scope), args, field=f"{where}.scopes") for scope in scopes)
    what = f"the OAuth2 token endpoint {token_url}"
    basic = base64.b64encode(
        f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(secret, safe='')}".encode()
    ).decode()
    answer = await fetch(
        "POST",
        token_url,
        what=what,
        within=within,
        headers={"Authorization": f"Basic {basic}"},
        data=form,
        verify_tls=verify_tls,
    )
    if answer.status in (400, 401):
        answer = await fetch(
            "POST",
            token_url,
            what=what,
            within=within,
            data={**form, "client_id": client_id, "client_secret": secret},
            verify_tls=verify_tls,
        )
    if not answer.ok:
        raise ProviderError(
            f"{what} answered HTTP {answer.status}: {answer.text(200).replace(secret, '*****')!r}"
        )
    body = decode_json(answer, what)
    token = body.get("access_token") if isinstance(body, Mapping) else None
    if not isinstance(token, str) or not token:
        raise ProviderError(f"{what} answered without an access_token")
    return token


def is_true(value: object) -> bool:
    """A YAML boolean option that may also be written "true" (a placeholder's value)."""
    return value is True or (isinstance(value, str) and value.lower() == "true")

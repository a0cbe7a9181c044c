"""Args go into provider options escaped for where they land, so they cannot change a query's meaning."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshshift.analysis.providers.templating import (
    render_datadog,
    render_header,
    render_json_text,
    render_json_value,
    render_nrql,
    render_plain,
    render_promql,
    render_url,
)
from meshshift.ports import ProviderError

INJECTION = 'a"} or vector(1) or foo{x="'


def go_unquote(literal: str) -> str:
    """Decode the inside of a PromQL "..." / '...' string (the escapes our escaper emits)."""
    out, i = [], 0
    simple = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t"}
    while i < len(literal):
        char = literal[i]
        if char != "\\":
            out.append(char)
            i += 1
        elif literal[i + 1] == "x":
            out.append(chr(int(literal[i + 2 : i + 4], 16)))
            i += 4
        else:
            out.append(simple[literal[i + 1]])
            i += 2
    return "".join(out)


def string_literal(query: str, start: int, quote: str) -> tuple[str, int]:
    """The raw inside of the string literal opening at `start`, and where it closes."""
    i = start + 1
    while query[i] != quote:
        i += 2 if query[i] == "\\" else 1
    return query[start + 1 : i], i


# --- PromQL ------------------------------------------------------------------------------


def test_both_placeholder_spellings_are_substituted() -> None:
    query = 'x{a="{{args.svc}}", b="{{ args.svc }}", c="{{  args.svc}}"}'
    assert render_promql(query, {"svc": "api"}) == 'x{a="api", b="api", c="api"}'


def test_the_injection_value_stays_inside_its_label_matcher() -> None:
    query = render_promql('sum(x{service="{{args.s}}"})', {"s": INJECTION})
    assert query == 'sum(x{service="a\\"} or vector(1) or foo{x=\\""})'
    inside, end = string_literal(query, query.index('"'), '"')
    assert go_unquote(inside) == INJECTION
    assert query[end:] == '"})'  # the template's own closing quote closes the literal


@given(value=st.text())
def test_any_value_in_a_double_quoted_string_decodes_back_to_itself(value: str) -> None:
    query = render_promql('x{l="{{args.v}}"} / y', {"v": value})
    inside, end = string_literal(query, query.index('"'), '"')
    assert go_unquote(inside) == value
    assert query[end:] == '"} / y'


@given(value=st.text())
def test_any_value_in_a_single_quoted_string_decodes_back_to_itself(value: str) -> None:
    query = render_promql("x{l='{{args.v}}'}", {"v": value})
    inside, end = string_literal(query, query.index("'"), "'")
    assert go_unquote(inside) == value
    assert query[end:] == "'}"


def test_a_backtick_cannot_end_a_raw_string() -> None:
    assert render_promql("x{l=`{{args.v}}`}", {"v": 'a"b\\c'}) == 'x{l=`a"b\\c`}'
    with pytest.raises(ProviderError, match=r"arg 'v'.*backtick"):
        render_promql("x{l=`{{args.v}}`}", {"v": "a` or vector(1)"})


@pytest.mark.parametrize("value", ["5m", "1h30m", "0.99", "-1", "1e3", "http_requests_total", "le", "NaN"])
def test_safe_tokens_are_allowed_outside_strings(value: str) -> None:
    assert render_promql("f({{args.v}})", {"v": value}) == f"f({value})"


@pytest.mark.parametrize("value", ["5m] or vector(1", "1 + 1", "or", "by", "OFFSET", "x{a='b'}", "", "5m#"])
def test_anything_else_is_rejected_outside_strings_naming_the_arg(value: str) -> None:
    with pytest.raises(ProviderError, match=r"provider\.prometheus\.query: the value of arg 'window'"):
        render_promql("rate(x[{{args.window}}])", {"window": value}, field="provider.prometheus.query")


def test_quotes_inside_comments_do_not_open_strings() -> None:
    query = '# don\'t "trip"\nx{a="{{args.v}}"} # {{args.w}}'
    assert render_promql(query, {"v": 'q"', "w": "any text"}) == '# don\'t "trip"\nx{a="q\\""} # any text'
    with pytest.raises(ProviderError, match="line break"):
        render_promql("x # {{args.w}}", {"w": "a\nvector(1)"})


def test_escaped_quotes_in_the_template_do_not_close_the_string() -> None:
    assert render_promql('x{a="pre\\"{{args.v}}"}', {"v": "1 or 2"}) == 'x{a="pre\\"1 or 2"}'


def test_a_missing_arg_is_an_error_naming_it() -> None:
    with pytest.raises(ProviderError, match=r"query: arg 'nope' has no value"):
        render_promql('x{a="{{args.nope}}"}', {})


def test_values_are_not_substituted_again() -> None:
    assert render_promql('x{a="{{args.a}}"}', {"a": "{{args.b}}", "b": "no"}) == 'x{a="{{args.b}}"}'


# --- NRQL --------------------------------------------------------------------------------


def test_nrql_strings_escape_quotes_and_backslashes() -> None:
    nrql = "SELECT count(*) FROM Transaction WHERE appName = '{{args.app}}'"
    assert render_nrql(nrql, {"app": "x' OR appName LIKE '%"}) == (
        "SELECT count(*) FROM Transaction WHERE appName = 'x\\' OR appName LIKE \\'%'"
    )
    assert render_nrql(nrql, {"app": "a\\"}) == "SELECT count(*) FROM Transaction WHERE appName = 'a\\\\'"


def test_nrql_outside_strings_allows_words_and_numbers_only() -> None:
    assert render_nrql("SELECT x FROM T SINCE {{args.n}} minutes ago", {"n": "30"}) == (
        "SELECT x FROM T SINCE 30 minutes ago"
    )
    for value in ("30 minutes ago FACET x", "--", "-1", "1/*", "x'"):
        with pytest.raises(ProviderError, match="arg 'n'"):
            render_nrql("SELECT x FROM T SINCE {{args.n}} minutes ago", {"n": value})


def test_nrql_comments_and_identifiers_are_contexts_too() -> None:
    assert render_nrql("SELECT `{{args.a}}` FROM T -- it's {{args.b}}", {"a": "my attr", "b": "fine"}) == (
        "SELECT `my attr` FROM T -- it's fine"
    )
    with pytest.raises(ProviderError, match="backtick"):
        render_nrql("SELECT `{{args.a}}` FROM T", {"a": "x` FROM Secret"})


# --- URLs, JSON, headers, Datadog ---------------------------------------------------------


def test_url_query_and_path_values_are_percent_encoded() -> None:
    url = render_url(
        "https://api.example/check/{{args.p}}?service={{args.s}}#{{args.f}}",
        {"p": "a/../b", "s": "x&admin=1", "f": "#y"},
    )
    assert url == "https://api.example/check/a%2F..%2Fb?service=x%26admin%3D1#%23y"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query == {"service": ["x&admin=1"]}


def test_url_host_and_base_placeholders_are_checked() -> None:
    assert (
        render_url("http://{{args.host}}/x", {"host": "prom.monitoring:9090"})
        == "http://prom.monitoring:9090/x"
    )
    assert render_url("{{args.base}}/api?q={{args.q}}", {"base": "https://h:1/p", "q": "a b"}) == (
        "https://h:1/p/api?q=a%20b"
    )
    with pytest.raises(ProviderError, match="host"):
        render_url("http://{{args.host}}/x", {"host": "evil.example/@x"})
    with pytest.raises(ProviderError, match="base URL"):
        render_url("{{args.base}}/x", {"base": "javascript:alert(1)"})


def test_json_text_escapes_inside_strings_and_checks_outside() -> None:
    body = '{"service": "{{args.s}}", "limit": {{args.n}}}'
    rendered = render_json_text(body, {"s": 'x", "admin": true, "y": "', "n": "5"})
    assert json.loads(rendered) == {"service": 'x", "admin": true, "y": "', "limit": 5}
    with pytest.raises(ProviderError, match="arg 'n'"):
        render_json_text(body, {"s": "x", "n": '5, "admin": true'})


def test_json_values_substitute_strings_and_keys() -> None:
    value = {"q": "{{args.s}}", "{{args.k}}": [1, "{{ args.s }}"], "n": 3}
    assert render_json_value(value, {"s": 'a"b', "k": "key"}) == {"q": 'a"b', "key": [1, 'a"b'], "n": 3}


def test_header_values_cannot_smuggle_headers() -> None:
    assert render_header("Bearer {{args.t}}", {"t": "abc"}) == "Bearer abc"
    with pytest.raises(ProviderError, match="line break"):
        render_header("Bearer {{args.t}}", {"t": "abc\r\nX-Admin: 1"})


def test_datadog_values_must_be_one_tag_token() -> None:
    query = "avg:trace.http.request.errors{service:{{args.service-name}}}.as_rate()"
    assert (
        render_datadog(query, {"service-name": "my-app"})
        == "avg:trace.http.request.errors{service:my-app}.as_rate()"
    )
    for value in ("x} + avg:other{*", "a,env:prod", "a b"):
        with pytest.raises(ProviderError, match="service-name"):
            render_datadog(query, {"service-name": value})


def test_plain_rendering_substitutes_verbatim() -> None:
    assert render_plain("{$.{{args.key}}}", {"key": "a.b"}, field="jsonPath") == "{$.a.b}"

"""The HTTP API: JSON views, the change stream, and control with its bearer token."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from meshshift.observe.server import serve
from meshshift.processes import free_port
from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import DaemonSettings
from meshshift.spec.model import (
    AnalysisRef,
    Arg,
    ArgValueFrom,
    Pause,
    RolloutSpec,
    SetWeight,
    StepAnalysis,
    TemplateRef,
)
from meshshift.spec.templates import parse_template
from tests.observe.conftest import TOKEN
from tests.support.inmemory import (
    PAUSING_SPEC,
    Harness,
    make_controller,
    release_until_paused,
    running,
    success_rate_template,
)

SPEC = PAUSING_SPEC
ROLLOUT = "/api/v1/rollouts/default/myapp"


@pytest.fixture
async def paused(registry: RolloutRegistry) -> AsyncIterator[Harness]:
    """A rollout paused at step 4/6 (after setWeight 20, an analysis and a header route)."""
    harness = make_controller(registry, SPEC, templates=[success_rate_template(interval="100ms", count=2)])
    async with running(harness):
        await release_until_paused(harness, 3)
        yield harness


async def get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        data = await response.json()
        assert isinstance(data, dict)
        return data


async def test_the_rollout_view(daemon: str, paused: Harness, http: aiohttp.ClientSession) -> None:
    view = await get_json(http, daemon + ROLLOUT)
    assert view["phase"] == "Paused"
    assert view["argoPhase"] == "Paused"
    assert view["pauseReason"] == "CanaryPauseStep"
    assert view["step"] == {"current": 4, "total": 6, "label": "4/6", "index": 3}
    assert view["weights"] == {
        "desired": 20,
        "applied": {"envoy": 20},
        "actual": 20,
        "appliedAgree": True,
        "setWeight": 20,
        "canary": 20,
        "stable": 80,
        "promoted": False,
    }
    assert view["revisions"] == {"stable": "v1", "canary": "v2"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", view["updatedAt"])  # RFC 3339
    assert view["images"] == {"stable": ["example/app:v1"], "canary": ["example/app:v2"]}
    assert view["headerRoutes"] == [
        {
            "name": "canary-by-header",
            "match": [{"headerName": "X-Canary", "value": {"kind": "exact", "value": "true"}}],
        }
    ]
    steps = view["steps"]
    assert isinstance(steps, list)
    assert [s["status"] for s in steps] == [
        "completed",
        "completed",
        "completed",
        "current",
        "pending",
        "pending",
    ]
    assert steps[0]["description"] == "setWeight: 20"
    assert steps[0]["spec"] == {"kind": "SetWeight", "weight": 20}

    runs = view["analysisRuns"]
    assert isinstance(runs, list) and len(runs) == 1
    run = runs[0]
    assert run["phase"] == "Successful" and run["kind"] == "step" and run["stepIndex"] == 1
    assert run["args"] == {"service-name": "myapp"}
    (metric,) = run["metrics"]
    assert metric["name"] == "success-rate" and metric["type"] == "Prometheus"
    assert metric["counts"]["successful"] == 2
    assert 'service="myapp"' in metric["query"]  # resolved, placeholders gone
    assert "{{" not in metric["query"]
    assert [m["value"] for m in metric["measurements"]] == [[0.99], [0.99]]
    assert [m["number"] for m in metric["measurements"]] == [0.99, 0.99]
    assert view["history"] == []


async def test_the_list_and_unknown_rollouts(
    daemon: str, paused: Harness, http: aiohttp.ClientSession
) -> None:
    listing = await get_json(http, daemon + "/api/v1/rollouts")
    rollouts = listing["rollouts"]
    assert isinstance(rollouts, list)
    assert [(r["namespace"], r["name"], r["phase"], r["step"]["label"]) for r in rollouts] == [
        ("default", "myapp", "Paused", "4/6")
    ]
    async with http.get(daemon + "/api/v1/rollouts/default/nope") as response:
        assert response.status == 404
        assert "default/nope" in (await response.json())["error"]
    info = await get_json(http, daemon + "/api/v1/info")
    assert info["controlEnabled"] is True and info["leader"] is True


async def settled(harness: Harness) -> None:
    """Wait for one more reconcile, so a command that slipped through would have acted."""
    before = harness.registry.snapshots[harness.key].updated_at
    harness.controller.poke()
    await harness.wait_for(lambda: harness.registry.snapshots[harness.key].updated_at > before, what="a pass")


async def test_control_needs_the_token(daemon: str, paused: Harness, http: aiohttp.ClientSession) -> None:
    before = paused.controller.state
    url = daemon + ROLLOUT + "/promote"
    async with http.post(url) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    async with http.post(url, headers={"Authorization": "Bearer not-the-token"}) as response:
        assert response.status == 403
    async with http.post(url, headers={"Authorization": TOKEN}) as response:  # no scheme
        assert response.status == 401
    async with http.post(daemon + ROLLOUT + "/abort", headers={"Authorization": "Bearer x"}) as response:
        assert response.status == 403
    await settled(paused)
    assert paused.controller.state == before  # nothing changed: no step, no handled command
    assert paused.router.weight == 20

    async with http.post(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        assert response.status == 200
        body = await response.json()
    assert body["applied"] is True and "resumed after the pause at step 4/6" in body["message"]
    await paused.wait_for(lambda: paused.state_is(step_index=5, phase="Paused"), what="the next pause")
    assert paused.router.weight == 50


async def test_refused_commands_say_why(daemon: str, paused: Harness, http: aiohttp.ClientSession) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(daemon + ROLLOUT + "/retry", headers=auth) as response:
        assert response.status == 409
        body = await response.json()
    assert body["applied"] is False and "nothing to retry" in body["message"]
    async with http.post(daemon + ROLLOUT + "/launch", headers=auth) as response:
        assert response.status == 404
    async with http.post(daemon + "/api/v1/rollouts/default/nope/promote", headers=auth) as response:
        assert response.status == 404


async def test_abort_and_undo(daemon: str, paused: Harness, http: aiohttp.ClientSession) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(daemon + ROLLOUT + "/undo", headers=auth) as response:
        assert response.status == 200
        body = await response.json()
    assert body["applied"] is True and body["message"].startswith("undone:")
    assert paused.state_is(phase="Degraded")
    assert paused.router.weight == 0 and paused.router.header_routes == {}
    async with http.post(daemon + ROLLOUT + "/abort", headers=auth) as response:
        assert response.status == 409
        assert "nothing to abort" in (await response.json())["message"]
    async with http.post(daemon + ROLLOUT + "/undo", headers=auth) as response:
        assert response.status == 409


async def test_control_is_off_without_a_token(registry: RolloutRegistry, paused: Harness) -> None:
    settings = DaemonSettings(listen=f"127.0.0.1:{free_port()}", token=None)
    before = paused.controller.state
    async with serve(registry, settings) as base_url, aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer anything"}, {"Authorization": "Bearer "}):
            async with http.post(base_url + ROLLOUT + "/promote", headers=headers) as response:
                assert response.status == 403
                assert "disabled" in (await response.json())["error"]
        info = await get_json(http, base_url + "/api/v1/info")
        assert info["controlEnabled"] is False
    await settled(paused)
    assert paused.controller.state == before


async def test_readyz_is_leader_aware(
    registry: RolloutRegistry, daemon: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(daemon + "/readyz") as response:
        assert response.status == 503  # no listing seen yet
    registry.ready = True
    async with http.get(daemon + "/readyz") as response:
        assert (response.status, await response.text()) == (200, "ok")
        assert response.headers["X-Meshshift-Leader"] == "true"
    registry.is_leader = False
    async with http.get(daemon + "/readyz") as response:
        assert (response.status, await response.text()) == (200, "ok (standby)")
        assert response.headers["X-Meshshift-Leader"] == "false"
    async with http.get(daemon + "/readyz?role=leader") as response:
        assert response.status == 503
    async with http.get(daemon + "/healthz") as response:
        assert response.status == 200


async def test_a_standby_refuses_commands(
    registry: RolloutRegistry, daemon: str, paused: Harness, http: aiohttp.ClientSession
) -> None:
    registry.is_leader = False
    async with http.post(
        daemon + ROLLOUT + "/promote", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as response:
        assert response.status == 503


async def test_watch_streams_changes(daemon: str, paused: Harness, http: aiohttp.ClientSession) -> None:
    async with http.get(daemon + ROLLOUT + "?watch=true") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        first = await next_event(stream)
        assert first["step"]["label"] == "4/6"
        async with http.post(
            daemon + ROLLOUT + "/promote", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response:
            assert response.status == 200
        labels = [first["step"]["label"]]
        while labels[-1] != "6/6":
            labels.append((await next_event(stream))["step"]["label"])
    assert labels[0] == "4/6" and labels[-1] == "6/6"


async def next_event(stream: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next `data:` event of a Server-Sent Events stream."""
    while True:
        line = (await stream.content.readline()).decode()
        assert line, "the stream ended"
        if line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
            assert isinstance(data, dict)
            return data


async def test_args_from_secrets_never_show(
    registry: RolloutRegistry, daemon: str, http: aiohttp.ClientSession
) -> None:
    """A resolved query may carry an API key read from a Secret: the view masks it."""
    key = "sk-live-0123456789"
    template = parse_template(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "vendor"},
            "spec": {
                "args": [{"name": "api-key"}, {"name": "service"}],
                "metrics": [
                    {
                        "name": "health",
                        "successCondition": "result[0] > 0.5",
                        "provider": {
                            "prometheus": {
                                "query": 'health{key="{{args.api-key}}",service="{{args.service}}"}'
                            }
                        },
                    }
                ],
            },
        }
    )
    secret_arg = Arg("api-key", value_from=ArgValueFrom(secret_name="vendor-creds", secret_key="key"))
    analysis = StepAnalysis(AnalysisRef((TemplateRef("vendor"),), args=(secret_arg, Arg("service", "shop"))))
    harness = make_controller(
        registry,
        RolloutSpec(steps=(SetWeight(10), analysis, Pause())),
        templates=[template],
        secrets={"vendor-creds": {"key": key}},
    )
    async with running(harness):
        await release_until_paused(harness, 2)
        async with http.get(daemon + ROLLOUT) as response:
            text = await response.text()
    assert key not in text
    (run,) = json.loads(text)["analysisRuns"]
    assert run["args"] == {"api-key": "<secret>", "service": "shop"}
    (metric,) = run["metrics"]
    assert metric["query"] == 'health{key="<secret>",service="shop"}'
    assert [m["query"] for m in metric["measurements"]] == ['health{key="<secret>",service="shop"}']
    # The engine itself used the real key.
    assert harness.provider.calls == 1

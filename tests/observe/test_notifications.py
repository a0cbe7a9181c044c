"""Notifications to local stand-ins for Slack and a webhook, during real rollouts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from meshshift.engine.machine import CommandKind
from meshshift.observe.notifications import (
    Notifier,
    SlackReceiver,
    WebhookReceiver,
    receivers_from_annotations,
    receivers_from_settings,
)
from meshshift.observe.server import serve
from meshshift.ports import ProviderError
from meshshift.processes import free_port
from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import DaemonSettings, NotificationSettings
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
from tests.support.inmemory import STEP_ANALYSIS, Harness, make_controller, running, success_rate_template


@dataclass
class Receiver:
    """A local HTTP endpoint standing in for Slack or a webhook: records what it gets."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers to give, in order; then 200
    hang: asyncio.Event | None = None  # set: answer; unset: hold every request
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.hang is not None:
            await self.hang.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            with contextlib.suppress(ConnectionError):  # the sender gave up on us
                self.received.append(await request.json())
        return web.Response(status=status, text="ok" if status == 200 else "no")

    def events(self) -> list[str]:
        return [payload["event"] for payload in self.received]


@contextlib.asynccontextmanager
async def receiver(**options: Any) -> AsyncIterator[Receiver]:
    stand_in = Receiver(**options)
    app = web.Application()
    app.router.add_post("/{tail:.*}", stand_in.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stand_in.url = f"http://127.0.0.1:{port}/services/T000/B000/XXXX"
    try:
        yield stand_in
    finally:
        if stand_in.hang is not None:
            stand_in.hang.set()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def notifier_on(
    registry: RolloutRegistry, *receivers: Any, drain_for: float = 5.0, **options: Any
) -> AsyncIterator[Notifier]:
    notifier = Notifier(receivers, **options)
    notifier.attach(registry)
    await notifier.start()
    try:
        yield notifier
    finally:
        notifier.detach(registry)
        await notifier.close(drain_for=drain_for)


async def release(harness: Harness, revision: str = "v2") -> None:
    await harness.wait_for(lambda: harness.controller.state is not None, what="first sight")
    harness.workloads.release(revision)


async def eventually(predicate: Any, what: str, hang_guard: float = 20.0) -> None:
    """Poll (a hang guard, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + hang_guard
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_promoted_rollout(registry: RolloutRegistry) -> None:
    spec = RolloutSpec(steps=(SetWeight(20), Pause(), SetWeight(50), Pause(0.05)))
    harness = make_controller(registry, spec)
    async with (
        receiver() as hook,
        receiver() as slack,
        notifier_on(registry, WebhookReceiver(hook.url), SlackReceiver(slack.url)),
    ):
        async with running(harness):
            await release(harness)
            await harness.wait_for(lambda: harness.state_is(phase="Paused"), what="the pause")
            outcome = await registry.command(harness.key, CommandKind.PROMOTE)
            assert outcome.applied
            await harness.wait_for(
                lambda: harness.state_is(phase="Healthy", stable_revision="v2"), what="promotion"
            )
        await eventually(lambda: "promoted" in hook.events(), "the promoted notification")
        await eventually(lambda: len(slack.received) == len(hook.received), "the same on Slack")

    assert hook.events() == [
        "rollout-started",
        "step-completed",
        "paused",  # until promoted
        "step-completed",
        "step-completed",
        "paused",  # for 50 ms
        "step-completed",
        "promoted",
    ]
    started, first_step, paused = hook.received[:3]
    assert started["rollout"] == {"namespace": "default", "name": "myapp"}
    assert started["revisions"] == {"stable": "v1", "canary": "v2"}
    assert started["severity"] == "info"
    assert first_step["title"] == "Rollout default/myapp: step 1/4 completed (setWeight: 20)"
    assert first_step["canaryWeight"] == 20
    assert paused["details"]["pauseReason"] == "CanaryPauseStep"
    assert paused["step"] == "2/4"
    assert hook.received[-1]["details"] == {"revision": "v2", "fullPromotion": False}
    assert hook.received[-1]["timestamp"].endswith("+00:00")

    promoted = slack.received[-1]
    assert set(promoted) == {"text", "attachments"}
    assert (
        promoted["text"]
        == ":arrows_counterclockwise: Rollout default/myapp promoted: revision v2 is the new stable"
    )
    (attachment,) = promoted["attachments"]
    assert attachment["color"] == "good"
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields["Rollout"] == "default/myapp" and fields["Phase"] == "Healthy"
    assert isinstance(attachment["ts"], int)


async def test_a_failed_analysis_and_the_rollback(registry: RolloutRegistry) -> None:
    spec = RolloutSpec(steps=(SetWeight(20), STEP_ANALYSIS, SetWeight(50)))
    harness = make_controller(
        registry,
        spec,
        templates=[success_rate_template(interval="50ms", count=2)],
        answer=lambda metric: [0.5],
    )
    async with (
        receiver() as hook,
        receiver() as slack,
        notifier_on(registry, WebhookReceiver(hook.url), SlackReceiver(slack.url)),
    ):
        async with running(harness):
            await release(harness)
            await harness.wait_for(lambda: harness.state_is(phase="Degraded"), what="the abort")
        await eventually(lambda: "aborted" in hook.events(), "the aborted notification")
        await eventually(lambda: len(slack.received) == 4, "the same on Slack")

    assert hook.events() == ["rollout-started", "step-completed", "analysis-failed", "aborted"]
    failed, aborted = hook.received[2:]
    assert failed["severity"] == "warning"
    assert failed["details"]["analysisPhase"] == "Failed"
    why = "failed (1) > failureLimit (0); last measurement: successCondition `result[0] >= 0.95` is false"
    assert failed["details"]["failedMetrics"] == [
        {"metric": "success-rate", "phase": "Failed", "message": f"{why} for result [0.5]"}
    ]
    assert aborted["details"]["reason"] == "AnalysisRunFailed"
    assert aborted["phase"] == "Degraded" and aborted["canaryWeight"] == 0

    slack_failed, slack_aborted = slack.received[2:]
    assert slack_aborted["text"].startswith(":rotating_light: Rollout default/myapp aborted:")
    assert slack_aborted["attachments"][0]["color"] == "danger"
    fields = {f["title"]: f["value"] for f in slack_failed["attachments"][0]["fields"]}
    assert fields["Metric success-rate"].startswith("failed (1) &gt; failureLimit (0)")  # Slack-escaped


async def test_a_hanging_receiver_never_delays_a_step(registry: RolloutRegistry) -> None:
    spec = RolloutSpec(steps=(SetWeight(10), Pause(), SetWeight(30), Pause(0.05), SetWeight(60), Pause(0.05)))
    harness = make_controller(registry, spec)
    async with (
        receiver(hang=asyncio.Event()) as stuck,
        receiver() as hook,
        notifier_on(
            registry,
            WebhookReceiver(stuck.url),
            WebhookReceiver(hook.url),
            timeout=60.0,
            retries=0,
            drain_for=0.1,
        ),
    ):
        async with running(harness):
            await release(harness)
            await harness.wait_for(lambda: harness.state_is(phase="Paused"), what="the first pause")
            # The stuck receiver holds its first request (the rollout-started notification)...
            await eventually(lambda: stuck.requests == 1, "the stuck receiver's first request")
            assert (await registry.command(harness.key, CommandKind.PROMOTE)).applied
            # ...and the rest of the rollout runs to the end while it still does.
            await harness.wait_for(
                lambda: harness.state_is(phase="Healthy", stable_revision="v2"), what="promotion"
            )
            assert stuck.requests == 1 and stuck.received == []
            assert harness.router.weights_written == [0, 10, 30, 60, 0]
        await eventually(lambda: "promoted" in hook.events(), "the other receiver's notifications")
        assert hook.events().count("step-completed") == 6
        assert stuck.received == []


async def test_retries_and_give_up(registry: RolloutRegistry) -> None:
    spec = RolloutSpec(steps=(SetWeight(10), Pause()))
    harness = make_controller(registry, spec)
    async with (
        receiver(statuses=[503, 500]) as flaky,
        receiver(statuses=[400]) as refusing,
        notifier_on(registry, WebhookReceiver(flaky.url), WebhookReceiver(refusing.url)) as notifier,
        running(harness),
    ):
        await release(harness)
        await harness.wait_for(lambda: harness.state_is(phase="Paused"), what="the pause")
        await eventually(lambda: len(flaky.received) == 3, "the retried deliveries")
        await eventually(lambda: len(refusing.received) == 2, "the later deliveries")
    # The flaky one got everything after two retries; the refusing one lost its first (a 400 is final).
    assert flaky.events() == ["rollout-started", "step-completed", "paused"]
    assert flaky.requests == 5
    assert refusing.events() == ["step-completed", "paused"]
    assert refusing.requests == 3
    assert notifier.failed == 1


async def test_a_restarted_daemon_does_not_announce_the_past(registry: RolloutRegistry) -> None:
    spec = RolloutSpec(steps=(SetWeight(20), Pause(), SetWeight(40), Pause()))
    harness = make_controller(registry, spec)
    async with receiver() as hook, running(harness):
        await release(harness)
        await harness.wait_for(lambda: harness.state_is(phase="Paused", step_index=1), what="the first pause")
        # A notifier that starts now finds the rollout half-way.
        async with notifier_on(registry, WebhookReceiver(hook.url)):
            seen = registry.snapshots[harness.key].updated_at
            harness.controller.poke()
            await harness.wait_for(lambda: registry.snapshots[harness.key].updated_at > seen, what="a pass")
            assert (await registry.command(harness.key, CommandKind.PROMOTE)).applied
            await harness.wait_for(
                lambda: harness.state_is(phase="Paused", step_index=3), what="the next pause"
            )
            await eventually(lambda: "paused" in hook.events(), "the pause notification")
    assert hook.events() == ["step-completed", "step-completed", "paused"]
    assert [p["title"] for p in hook.received][:2] == [
        "Rollout default/myapp: step 2/4 completed (pause: {} (until promoted))",
        "Rollout default/myapp: step 3/4 completed (setWeight: 40)",
    ]


async def test_receivers_per_rollout(registry: RolloutRegistry) -> None:
    spec = RolloutSpec(steps=(SetWeight(20), Pause()))
    mine = make_controller(registry, spec, name="mine")
    theirs = make_controller(registry, spec, name="theirs")
    async with (
        receiver() as team,
        receiver() as everyone,
        notifier_on(registry, WebhookReceiver(everyone.url)) as notifier,
    ):
        notifier.set_receivers(mine.key, receivers_from_annotations({"meshshift.io/webhook-url": team.url}))
        async with running(mine), running(theirs):
            await release(mine)
            await release(theirs)
            await mine.wait_for(lambda: mine.state_is(phase="Paused"), what="my pause")
            await theirs.wait_for(lambda: theirs.state_is(phase="Paused"), what="their pause")
            await eventually(lambda: len(everyone.received) == 6, "everyone's notifications")
            await eventually(lambda: len(team.received) == 3, "the team's notifications")
    assert {p["rollout"]["name"] for p in team.received} == {"mine"}
    assert {p["rollout"]["name"] for p in everyone.received} == {"mine", "theirs"}


def test_receivers_from_annotations_and_settings() -> None:
    receivers = receivers_from_annotations(
        {
            "meshshift.io/slack-webhook-url": "https://hooks.slack.com/services/T/B/X",
            "meshshift.io/webhook-url": "http://hooks.internal:8080/meshshift",
            "meshshift.io/steps": "[]",
        }
    )
    assert receivers == (
        SlackReceiver("https://hooks.slack.com/services/T/B/X"),
        WebhookReceiver("http://hooks.internal:8080/meshshift"),
    )
    with pytest.raises(ValueError, match=r"meshshift.io/slack-webhook-url.*not an http\(s\) URL"):
        receivers_from_annotations({"meshshift.io/slack-webhook-url": "hooks.slack.com/x"})
    with pytest.raises(ValueError, match="--webhook-url"):
        receivers_from_settings(NotificationSettings(webhook_url="ftp://example.com/hook"))
    assert receivers_from_settings(NotificationSettings()) == ()


async def test_the_daemon_notifies_the_receivers_of_its_settings(
    registry: RolloutRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--slack-webhook-url` / `--webhook-url` or their MESHSHIFT_* variables: `serve` sends to them."""
    spec = RolloutSpec(steps=(SetWeight(20), Pause()))
    harness = make_controller(registry, spec)
    async with receiver() as hook, receiver() as slack:
        monkeypatch.setenv("MESHSHIFT_SLACK_WEBHOOK_URL", slack.url)
        settings = DaemonSettings.from_env(listen=f"127.0.0.1:{free_port()}")
        settings = dataclasses.replace(
            settings, notifications=dataclasses.replace(settings.notifications, webhook_url=hook.url)
        )
        async with serve(registry, settings), running(harness):
            await release(harness)
            await harness.wait_for(lambda: harness.state_is(phase="Paused"), what="the pause")
            await eventually(lambda: len(hook.received) == 3 and len(slack.received) == 3, "both receivers")
    assert hook.events() == ["rollout-started", "step-completed", "paused"]
    assert slack.received[0]["text"].endswith("Rollout default/myapp started: revision v2")


async def test_secrets_stay_out_of_notifications(registry: RolloutRegistry) -> None:
    key = "sk-live-0123456789"
    template = parse_template(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "vendor"},
            "spec": {
                "args": [{"name": "api-key"}],
                "metrics": [
                    {
                        "name": "health",
                        "interval": "20ms",
                        "count": 5,
                        "consecutiveErrorLimit": 0,
                        "provider": {"prometheus": {"query": 'health{key="{{args.api-key}}"}'}},
                    }
                ],
            },
        }
    )
    secret_arg = Arg("api-key", value_from=ArgValueFrom(secret_name="vendor-creds", secret_key="key"))
    analysis = StepAnalysis(AnalysisRef((TemplateRef("vendor"),), args=(secret_arg,)))
    harness = make_controller(
        registry,
        RolloutSpec(steps=(SetWeight(10), analysis)),
        templates=[template],
        answer=lambda metric: ProviderError(f"GET https://vendor.example/check?key={key}: 401"),
        secrets={"vendor-creds": {"key": key}},
    )
    async with receiver() as hook, notifier_on(registry, WebhookReceiver(hook.url)), running(harness):
        await release(harness)
        await harness.wait_for(lambda: harness.state_is(phase="Degraded"), what="the abort")
        await eventually(lambda: "aborted" in hook.events(), "the aborted notification")
    failed = hook.received[hook.events().index("analysis-failed")]
    (metric,) = failed["details"]["failedMetrics"]
    assert metric["message"].endswith("GET https://vendor.example/check?key=<secret>: 401")
    assert key not in json.dumps(hook.received)

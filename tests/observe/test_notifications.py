"""Notifications to local stand-ins for Slack, a webhook and PagerDuty, during real rollouts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from structlog.testing import capture_logs

from meshshift.engine.machine import CommandKind
from meshshift.observe.notifications import (
    Notifier,
    PagerDutyReceiver,
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
from tests.support.receivers import receiver


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
    (metric,) = failed["details"]["failedMetrics"]
    assert metric["message"] == f"{why} for result [0.5]"
    # What failed, in the template's words: the value, the condition, the limit crossed.
    assert metric["summary"] == (
        "success-rate = 0.5, successCondition: result[0] >= 0.95; failed (1) > failureLimit (0)"
    )
    assert (metric["metric"], metric["phase"], metric["value"]) == ("success-rate", "Failed", "0.5")
    assert [m["value"] for m in metric["measurements"]] == ["0.5"]
    assert aborted["details"]["failedMetrics"] == failed["details"]["failedMetrics"]
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


# --- PagerDuty -------------------------------------------------------------------------------

ROUTING_KEY = "R0ut1ngKeyForTests0123456789abcd"  # 32 characters, as PagerDuty's integration keys


@dataclass
class Answers:
    """What the metric answers; a test switches it from bad to good between revisions."""

    value: float = 0.5

    def __call__(self, _metric: object) -> list[float]:
        return [self.value]


def pagerduty(url: str, key: str = ROUTING_KEY) -> PagerDutyReceiver:
    return receivers_from_settings(NotificationSettings(pagerduty_routing_key=key, pagerduty_events_url=url))[
        0
    ]  # type: ignore[return-value]


async def test_pagerduty_triggers_on_a_failed_analysis_and_resolves_once_promoted(
    registry: RolloutRegistry,
) -> None:
    spec = RolloutSpec(steps=(SetWeight(20), STEP_ANALYSIS, SetWeight(50)))
    answers = Answers(0.5)
    harness = make_controller(
        registry, spec, templates=[success_rate_template(interval="50ms", count=2)], answer=answers
    )
    async with receiver(pagerduty=True) as pd, receiver() as hook:
        with capture_logs() as logs:
            async with notifier_on(registry, pagerduty(pd.url), WebhookReceiver(hook.url)), running(harness):
                await release(harness)
                await harness.wait_for(lambda: harness.state_is(phase="Degraded"), what="the abort")
                await eventually(lambda: len(pd.received) == 2, "the triggers")
                answers.value = 0.99  # the next revision is good
                harness.workloads.release("v3")
                await harness.wait_for(
                    lambda: harness.state_is(phase="Healthy", stable_revision="v3"), what="v3 promoted"
                )
                await eventually(lambda: "resolve" in pd.events(), "the resolve")
    assert pd.refused == []  # every event is one the Events API accepts
    # The failed analysis and the abort are one incident: one dedup key per rollout and revision.
    assert pd.events() == ["trigger", "trigger", "resolve"]
    assert {e["dedup_key"] for e in pd.received} == {"meshshift/default/myapp/v2"}
    assert {e["routing_key"] for e in pd.received} == {ROUTING_KEY}
    trigger = pd.received[0]
    payload = trigger["payload"]
    assert payload["severity"] == "error"
    assert payload["summary"] == (
        "meshshift: rollout default/myapp revision v2 failed its analysis: success-rate = 0.5, "
        "successCondition: result[0] >= 0.95; failed (1) > failureLimit (0)"
    )
    assert payload["source"] == "meshshift/default/myapp" and payload["class"] == "AnalysisRunFailed"
    (failed,) = payload["custom_details"]["failedMetrics"]
    assert [m["value"] for m in failed["measurements"]] == ["0.5"]
    assert failed["condition"] == "successCondition: result[0] >= 0.95"
    aborted = pd.received[1]["payload"]
    assert aborted["summary"].startswith(
        "meshshift: rollout default/myapp revision v2 aborted: success-rate = 0.5"
    )
    assert aborted["class"] == "RolloutAborted"
    # Slack and the webhook hear of the promotion; only PagerDuty's events carry the key.
    assert "promoted" in hook.events()
    assert all(ROUTING_KEY not in json.dumps(p) for p in hook.received)
    assert harness.store.stored is not None
    assert ROUTING_KEY not in json.dumps(harness.store.stored.rollout.to_dict())
    assert ROUTING_KEY not in repr(logs), "a routing key in the logs"


async def test_pagerduty_resolves_after_undo_and_after_a_restart(registry: RolloutRegistry) -> None:
    """Back on the stable (the workload set back) resolves; so does the promotion a restarted
    daemon sees, for the incident an earlier daemon opened."""
    spec = RolloutSpec(steps=(SetWeight(20), STEP_ANALYSIS, SetWeight(50)))
    answers = Answers(0.5)
    harness = make_controller(
        registry, spec, templates=[success_rate_template(interval="50ms", count=2)], answer=answers
    )
    async with receiver(pagerduty=True) as pd, running(harness):
        async with notifier_on(registry, pagerduty(pd.url)):
            await release(harness)
            await harness.wait_for(lambda: harness.state_is(phase="Degraded"), what="the abort")
            harness.workloads.release("v1")  # undo: the workload back on the stable
            await harness.wait_for(
                lambda: harness.state_is(phase="Healthy", canary_revision=None), what="stable"
            )
            await eventually(lambda: pd.events() == ["trigger", "trigger", "resolve"], "the resolve")
        assert pd.received[-1]["dedup_key"] == "meshshift/default/myapp/v2"

        harness.workloads.release("v4")  # fails too, with no notifier listening (a daemon down)
        await harness.wait_for(
            lambda: harness.state_is(phase="Degraded", canary_revision="v4"), what="v4 aborted"
        )
        async with notifier_on(registry, pagerduty(pd.url)):  # the restarted daemon's notifier
            harness.controller.poke()
            seen = registry.snapshots[harness.key].updated_at
            await harness.wait_for(lambda: registry.snapshots[harness.key].updated_at > seen, what="a pass")
            answers.value = 0.99
            assert (await registry.command(harness.key, CommandKind.RETRY)).applied
            await harness.wait_for(
                lambda: harness.state_is(phase="Healthy", stable_revision="v4"), what="v4 promoted on retry"
            )
            await eventually(lambda: len(pd.received) == 4, "the resolve for v4")
    assert pd.received[-1]["event_action"] == "resolve"
    assert pd.received[-1]["dedup_key"] == "meshshift/default/myapp/v4"
    assert pd.refused == []


async def test_a_hanging_pagerduty_delays_no_step(registry: RolloutRegistry) -> None:
    spec = RolloutSpec(steps=(SetWeight(20), STEP_ANALYSIS, SetWeight(50)))
    answers = Answers(0.5)
    harness = make_controller(
        registry, spec, templates=[success_rate_template(interval="50ms", count=2)], answer=answers
    )
    async with (
        receiver(pagerduty=True, hang=asyncio.Event()) as stuck,
        notifier_on(registry, pagerduty(stuck.url), timeout=60.0, retries=0, drain_for=0.1),
        running(harness),
    ):
        await release(harness)
        await harness.wait_for(lambda: harness.state_is(phase="Degraded"), what="the abort")
        await eventually(lambda: stuck.requests == 1, "the held trigger")
        answers.value = 0.99
        harness.workloads.release("v3")
        # The whole next rollout runs while PagerDuty still holds the first trigger.
        await harness.wait_for(
            lambda: harness.state_is(phase="Healthy", stable_revision="v3"), what="v3 promoted"
        )
        assert stuck.requests == 1 and stuck.received == []
        assert harness.router.weights_written[-3:] == [20, 50, 0]


async def test_a_missing_routing_key_secret_is_reported_not_sent(registry: RolloutRegistry) -> None:
    """A Deployment's PagerDuty Secret that cannot be read: not delivered, logged by name only."""
    spec = RolloutSpec(steps=(SetWeight(20), STEP_ANALYSIS, SetWeight(50)))
    harness = make_controller(
        registry, spec, templates=[success_rate_template(interval="50ms", count=2)], answer=Answers(0.5)
    )
    secrets: dict[str, str] = {}

    def reader(name: str) -> Any:
        async def read() -> str | None:
            return secrets.get(name)

        return read

    async with receiver(pagerduty=True) as pd:
        annotations = {"meshshift.io/pagerduty-secret": "pd-routing"}
        with capture_logs() as logs:
            async with notifier_on(registry, retries=0) as notifier, running(harness):
                notifier.set_receivers(
                    harness.key,
                    receivers_from_annotations(
                        annotations, pagerduty_key=reader, pagerduty_events_url=pd.url, namespace="default"
                    ),
                )
                await release(harness)
                await harness.wait_for(lambda: harness.state_is(phase="Degraded"), what="the abort")
                await eventually(lambda: notifier.failed == 2, "both triggers given up")
    assert pd.requests == 0
    problems = [e["problem"] for e in logs if e.get("event") == "notification not delivered"]
    assert problems and all("secret default/pd-routing" in p for p in problems)


def test_pagerduty_settings_and_annotations() -> None:
    settings = NotificationSettings(pagerduty_routing_key=ROUTING_KEY)
    (receiver_,) = receivers_from_settings(settings)
    assert isinstance(receiver_, PagerDutyReceiver)
    assert receiver_.url == "https://events.pagerduty.com/v2/enqueue"
    assert ROUTING_KEY not in repr(settings) and ROUTING_KEY not in repr(receiver_)
    assert ROUTING_KEY not in receiver_.identity
    with pytest.raises(ValueError, match="Kubernetes mode only"):
        receivers_from_annotations({"meshshift.io/pagerduty-secret": "pd"})

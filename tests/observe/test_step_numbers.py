"""One step, one number: the logs, the Events, the analysis run names, the notifications and the CLI
all count steps from 1. And no notification log lines when nobody is to be notified."""

from __future__ import annotations

import re

from structlog.testing import capture_logs

from meshshift.cli.rollouts import render_text
from meshshift.engine.actions import RecordEvent
from meshshift.observe.api import rollout_view
from meshshift.observe.notifications import Notifier, WebhookReceiver
from meshshift.runtime.registry import RolloutRegistry
from tests.support.inmemory import (
    PAUSING_SPEC,
    make_controller,
    release_until_paused,
    running,
    success_rate_template,
)
from tests.support.receivers import receiver


class Events:
    def __init__(self) -> None:
        self.recorded: list[RecordEvent] = []

    async def record(self, event: RecordEvent) -> None:
        self.recorded.append(event)


async def test_steps_are_counted_from_one_everywhere(registry: RolloutRegistry) -> None:
    # PAUSING_SPEC: setWeight 20, an analysis (the 2nd step), a header route, then pause: {} (the 4th).
    events = Events()
    harness = make_controller(
        registry, PAUSING_SPEC, templates=[success_rate_template(interval="50ms", count=2)], sinks=[events]
    )
    with capture_logs() as logs:
        async with running(harness):
            await release_until_paused(harness, 3)
    assert harness.controller.state is not None
    (run,) = harness.controller.state.analysis_runs
    assert run.name == "v2-1-step2"  # the analysis is step 2
    messages = [e.message for e in events.recorded]
    assert "Rollout step 2/6 completed (analysis)" in messages
    assert "step analysis v2-1-step2 started" in messages
    assert "step 4/6: paused until promoted" in messages
    view = rollout_view(registry.get(harness.key))
    assert view["step"]["label"] == "4/6"
    text = render_text(view, width=100)
    assert re.search(r"Step:\s+4/6", text) and "v2-1-step2" in text

    # A restarted controller says where it resumes in the same numbers.
    again = make_controller(RolloutRegistry(), PAUSING_SPEC, store=harness.store)
    with capture_logs() as resumed:
        async with running(again):
            await again.wait_for(lambda: again.controller.state is not None, what="the restore")
    (line,) = [e for e in resumed if e["event"] == "resuming rollout"]
    assert line["step"] == 4
    # Nobody was to be notified: no notification lines (no notifier was even running here).
    assert not [e for e in logs if e["event"] == "rollout notification"]


async def test_no_notification_lines_without_receivers(registry: RolloutRegistry) -> None:
    harness = make_controller(registry, PAUSING_SPEC, templates=[success_rate_template(interval="50ms")])
    quiet = Notifier()
    quiet.attach(registry)
    await quiet.start()
    try:
        with capture_logs() as logs:
            async with running(harness):
                await release_until_paused(harness, 3)
    finally:
        quiet.detach(registry)
        await quiet.close()
    assert not [e for e in logs if "notification" in str(e["event"])]

    # With a receiver, each notification is one line naming the receivers.
    again = make_controller(
        RolloutRegistry(), PAUSING_SPEC, templates=[success_rate_template(interval="50ms")]
    )
    async with receiver() as hook:
        told = Notifier([WebhookReceiver(hook.url)])
        told.attach(again.registry)
        await told.start()
        try:
            with capture_logs() as logs:
                async with running(again):
                    await release_until_paused(again, 3)
        finally:
            told.detach(again.registry)
            await told.close()
    lines = [e for e in logs if e["event"] == "rollout notification"]
    assert [e["kind"] for e in lines][:2] == ["rollout-started", "step-completed"]
    assert all(e["receivers"] == ["webhook"] for e in lines)

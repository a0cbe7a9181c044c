"""Events off the critical path (EventPoster) against the emulator: `record` returns before anything
is written; a rollout's Events go out in order; another rollout's Event does not wait behind them."""

from __future__ import annotations

from typing import Any

from meshshift.engine.actions import EventType, RecordEvent
from meshshift.kube.events import EventPoster, KubeEventSink
from meshshift.kube.resources import EVENTS, KubeApi
from tests.kube.harness import HANG_GUARD, KubeEnv, api_client


def deployment(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
    }


async def test_events_go_out_in_order_within_a_rollout_and_rollouts_take_turns(kube_env: KubeEnv) -> None:
    ns = kube_env.namespace
    async with api_client(kube_env) as client:
        api = KubeApi(client, request_timeout=5.0)
        poster = EventPoster(api)
        busy = KubeEventSink(api, involved=deployment("busy", ns), instance="test", poster=poster)
        other = KubeEventSink(api, involved=deployment("other", ns), instance="test", poster=poster)
        try:
            for index in range(10):
                await busy.record(RecordEvent(EventType.NORMAL, "Step", f"busy {index}"))
            await other.record(RecordEvent(EventType.NORMAL, "Step", "other 0"))
            assert poster.queued() == 11  # nothing written yet: a step never waits for its Events
            assert await poster.flush((ns, "busy"), within=HANG_GUARD)
            assert await poster.flush(None, within=HANG_GUARD)  # all of them
            assert poster.queued() == 0
        finally:
            await poster.close()
        listing = await api.list_objects(EVENTS, ns)
    # The emulator numbers its writes: resourceVersion order is the order they were written in.
    written = sorted(listing.get("items") or [], key=lambda e: int(e["metadata"]["resourceVersion"]))
    messages = [event["message"] for event in written]
    assert [m for m in messages if m.startswith("busy")] == [f"busy {index}" for index in range(10)]
    # One of busy's at most before it: the other rollout's turn comes at once, not after ten.
    assert messages.index("other 0") <= 1
    assert {event["involvedObject"]["name"] for event in written} == {"busy", "other"}
    assert (poster.posted, poster.failed, poster.dropped) == (11, 0, 0)


async def test_a_rollouts_queue_is_bounded(kube_env: KubeEnv) -> None:
    ns = kube_env.namespace
    async with api_client(kube_env) as client:
        api = KubeApi(client, request_timeout=5.0)
        poster = EventPoster(api, kept=3)
        sink = KubeEventSink(api, involved=deployment("web", ns), instance="test", poster=poster)
        try:
            for index in range(5):
                await sink.record(RecordEvent(EventType.NORMAL, "Step", f"web {index}"))
            assert poster.queued((ns, "web")) == 3 and poster.dropped == 2
            assert await poster.flush((ns, "web"), within=HANG_GUARD)
        finally:
            await poster.close()
        listing = await api.list_objects(EVENTS, ns)
    written = sorted(listing.get("items") or [], key=lambda e: int(e["metadata"]["resourceVersion"]))
    assert [event["message"] for event in written] == ["web 2", "web 3", "web 4"]  # the newest kept

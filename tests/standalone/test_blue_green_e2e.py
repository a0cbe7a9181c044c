"""Blue-green in standalone mode on a real Envoy and a real NGINX, with real traffic, counted.

User traffic goes to the active listener (`spec.router.<kind>.listen`), QA traffic to the
preview listener (`spec.preview.listen`). The analyses run the tutorial's success rate on the
apps' own metrics through a real Prometheus.

A phase can be shorter than a poll (an analysis that fails on its first measurement ends the
switch within milliseconds), so the tests read what the rollout went through from `Recording`
(every snapshot it published, in order) rather than hoping to catch it in the current one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshshift.demo.load import LoadGenerator, running_load
from meshshift.demo.prometheus import PrometheusServer
from meshshift.engine.state import PauseReason, RolloutPhase, Stage
from meshshift.processes import free_port
from meshshift.runtime.controller import RolloutKey, RolloutSnapshot
from meshshift.spec.model import AnalysisPhase
from meshshift.standalone.daemon import StandaloneRuntime, parse_rollout_text, standalone_runtime
from tests.standalone.conftest import App, Apps, versions
from tests.standalone.test_daemon_e2e import finished, promote, settings, success_rate_template, wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.e2e]
ROUTERS = pytest.mark.parametrize("router", ["envoy", "nginx"])
PREVIEW_REQUESTS = 500
ACTIVE_REQUESTS = 2000


def analysis(service: str) -> dict[str, Any]:
    return {
        "templates": [{"templateName": "success-rate"}],
        "args": [{"name": "service-name", "value": service}],
    }


def blue_green_text(
    router: str, stable: App, canary: App, blue_green: dict[str, Any], prometheus: PrometheusServer
) -> str:
    rollout = {
        "apiVersion": "meshshift.io/v1alpha1",
        "kind": "StandaloneRollout",
        "metadata": {"name": "shop"},
        "spec": {
            "router": {router: {"listen": f"127.0.0.1:{free_port()}"}},
            "preview": {"listen": f"127.0.0.1:{free_port()}"},
            "stable": {"endpoints": [stable.endpoint]},
            "canary": {"endpoints": [canary.endpoint]},
            "blueGreen": {"abortScaleDownDelaySeconds": 0, **blue_green},
        },
    }
    return yaml.safe_dump_all([rollout, success_rate_template(prometheus.url)], sort_keys=False)


def measuring_after_the_switch(template: dict[str, Any], delay: str) -> dict[str, Any]:
    """The template with `initialDelay` on its metric: a post-promotion analysis measures the new
    revision under user traffic, not the seconds before the switch (or nothing: a NaN is a failure)."""
    (metric,) = template["spec"]["metrics"]
    return {**template, "spec": {**template["spec"], "metrics": [{**metric, "initialDelay": delay}]}}


class Recording:
    """Every snapshot a rollout publishes, in order, from before it starts."""

    def __init__(self, runtime: StandaloneRuntime) -> None:
        self.key: RolloutKey = runtime.key
        self.snapshots: list[RolloutSnapshot] = []
        self.published = asyncio.Event()
        runtime.registry.listeners.append(self._record)

    def _record(self, key: RolloutKey, snapshot: RolloutSnapshot | None) -> None:
        if key == self.key and snapshot is not None:
            self.snapshots.append(snapshot)
            self.published.set()

    def first(self, check: Any, *, after: RolloutSnapshot | None = None) -> RolloutSnapshot | None:
        start = 0 if after is None else next(i for i, s in enumerate(self.snapshots) if s is after) + 1
        return next((s for s in self.snapshots[start:] if check(s)), None)

    async def went_through(
        self, check: Any, *, after: RolloutSnapshot | None = None, within: float = 60.0
    ) -> RolloutSnapshot:
        """The first published snapshot (after `after`) where `check` held, however briefly
        (a hang guard, not a timing assertion)."""
        async with asyncio.timeout(within):
            while (found := self.first(check, after=after)) is None:
                self.published.clear()
                await self.published.wait()
        return found

    def weights(self) -> list[int | None]:
        """The user traffic weights the proxy reported back after each routing write, changes only,
        from the 0 it starts at (all on the stable)."""
        seen: list[int | None] = [0]
        for snapshot in self.snapshots:
            for applied in snapshot.applied.values():
                if not seen or seen[-1] != applied.canary_weight:
                    seen.append(applied.canary_weight)
        return seen


def switched_back(snapshot: RolloutSnapshot) -> bool:
    return bool(snapshot.applied) and all(a.canary_weight == 0 for a in snapshot.applied.values())


def urls(runtime: StandaloneRuntime) -> tuple[str, str]:
    assert runtime.preview_url is not None
    return runtime.proxy_url + "/", runtime.preview_url + "/"


def in_stage(stage: Stage, *, weight: int, preview: str) -> Any:
    """The rollout is at `stage` and the proxy reports `weight` on the active routes and `preview`."""

    def check(snapshot: RolloutSnapshot) -> bool:
        state = snapshot.state
        return (
            state is not None
            and state.stage == stage
            and all(a.canary_weight == weight and a.preview == preview for a in snapshot.applied.values())
            and bool(snapshot.applied)
        )

    return check


@pytest.mark.parametrize("router", ["envoy", "nginx", "traefik"])
async def test_the_preview_is_previewed_switched_to_at_once_and_promoted(
    router: str, apps: Apps, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    blue_green = {
        "autoPromotionEnabled": False,
        "prePromotionAnalysis": analysis("shop"),
        "postPromotionAnalysis": analysis("shop"),
        "scaleDownDelaySeconds": 2,
    }
    loaded = parse_rollout_text(
        blue_green_text(router, apps.stable, apps.canary, blue_green, prometheus), "r"
    )
    async with standalone_runtime(
        loaded, base_dir=tmp_path, settings=settings(prometheus), start=False
    ) as runtime:
        recording = Recording(runtime)
        runtime.start()
        active, preview = urls(runtime)
        async with (
            running_load(LoadGenerator(active, rate=25)) as users,
            running_load(LoadGenerator(preview, rate=10)) as qa,
        ):
            # The preview: up and analysed, paused for promotion; users never see it.
            snapshot = await wait_until(
                runtime, in_stage(Stage.PREVIEW, weight=0, preview="canary"), within=90
            )
            await wait_until(runtime, lambda s: s.state is not None and s.state.phase == RolloutPhase.PAUSED)
            state = (await wait_until(runtime, lambda s: s.state is not None)).state
            assert state is not None and state.pause_reason == PauseReason.BLUE_GREEN_PAUSE
            assert [r.phase for r in state.analysis_runs] == [AnalysisPhase.SUCCESSFUL]
            assert await versions(preview, PREVIEW_REQUESTS) == {"canary": PREVIEW_REQUESTS}
            assert await versions(active, ACTIVE_REQUESTS) == {"stable": ACTIVE_REQUESTS}
            assert snapshot.state is not None and snapshot.state.desired_weight == 0
            # autoPromotionEnabled: false waits for `promote`, however long the preview stays.
            users_before = users.stats.requests["canary"]
            await promote(runtime)
            # Switched: every user request goes to the new revision while the old one still runs.
            await recording.went_through(in_stage(Stage.POST_PROMOTION, weight=100, preview="canary"))
            assert users_before == 0
            assert await versions(active, ACTIVE_REQUESTS) == {"canary": ACTIVE_REQUESTS}
            done = await wait_until(runtime, finished("Promoted"), within=90)
        assert users.stats.failed == 0 and qa.stats.failed == 0, (users.stats.as_dict(), qa.stats.as_dict())
        assert done.state is not None
        kinds = [r.kind.value for r in done.state.analysis_runs]
        assert kinds == ["prePromotion", "postPromotion"]
        assert all(r.phase == AnalysisPhase.SUCCESSFUL for r in done.state.analysis_runs)
        # Promoted: the canary's endpoints are the stable; both listeners reach them.
        assert await versions(active, 300) == {"canary": 300}
        assert await versions(preview, 100) == {"canary": 100}
        applied = await runtime.router.read_back()
        assert (applied.canary_weight, applied.header_routes) == (0, ())
        # One switch to the new revision, then the hand-back to it as the stable (Promoted).
        assert recording.weights() == [0, 100, 0]


@ROUTERS
async def test_a_failed_pre_promotion_analysis_keeps_every_user_request_on_the_stable(
    router: str, apps: Apps, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    blue_green = {"prePromotionAnalysis": analysis("shop-bad")}
    loaded = parse_rollout_text(blue_green_text(router, apps.stable, apps.bad, blue_green, prometheus), "r")
    async with standalone_runtime(loaded, base_dir=tmp_path, settings=settings(prometheus)) as runtime:
        active, preview = urls(runtime)
        async with (
            running_load(LoadGenerator(active, rate=25)) as users,
            running_load(LoadGenerator(preview, rate=10)) as qa,
        ):
            snapshot = await wait_until(runtime, finished("Aborted"), within=90)
            await wait_until(runtime, lambda s: all(a.preview == "stable" for a in s.applied.values()))
            assert await versions(active, 300) == {"stable": 300}
        assert snapshot.state is not None and snapshot.state.abort_reason == "AnalysisRunFailed"
        assert snapshot.state.switched_at is None
        # QA met the bad revision on the preview; no user request ever reached it.
        assert qa.stats.requests["canary"] > 0
        assert users.stats.requests["canary"] == 0 and users.stats.failed == 0, users.stats.as_dict()
        assert set(users.stats.requests) == {"stable"}
        assert await versions(preview, 100) == {"stable": 100}  # the preview is back on the stable


@ROUTERS
async def test_a_failed_post_promotion_analysis_switches_every_user_back(
    router: str, apps: Apps, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    blue_green = {"postPromotionAnalysis": analysis("shop-bad"), "scaleDownDelaySeconds": 60}
    rollout, template = yaml.safe_load_all(
        blue_green_text(router, apps.stable, apps.bad, blue_green, prometheus)
    )
    text = yaml.safe_dump_all([rollout, measuring_after_the_switch(template, "2s")], sort_keys=False)
    loaded = parse_rollout_text(text, "r")
    async with standalone_runtime(
        loaded, base_dir=tmp_path, settings=settings(prometheus), start=False
    ) as runtime:
        recording = Recording(runtime)
        runtime.start()
        active, _ = urls(runtime)
        async with running_load(LoadGenerator(active, rate=25)) as users:
            switched = await recording.went_through(
                in_stage(Stage.POST_PROMOTION, weight=100, preview="canary"), within=90
            )
            snapshot = await wait_until(runtime, finished("Aborted"), within=90)
            back = await recording.went_through(switched_back, after=switched)
            assert await versions(active, ACTIVE_REQUESTS) == {"stable": ACTIVE_REQUESTS}
        state = snapshot.state
        assert state is not None and state.abort_reason == "AnalysisRunFailed" and state.switched_at is None
        assert switched.state is not None and switched.state.switched_at is not None
        # The proxy went to the new revision once, and straight back: nothing in between.
        assert recording.weights() == [0, 100, 0]
        assert users.stats.requests["canary"] > 0  # the users did meet it, until the analysis said no
        run = next(iter(snapshot.analysis_runs.values()))
        measured = [m for r in run.results for m in r.measurements]
        # It measured the new revision under user traffic (initialDelay), then failed on it.
        assert min(m.started_at for m in measured) >= switched.state.switched_at + 2
        assert [r.phase for r in run.results] == [AnalysisPhase.FAILED]
        failed_at = max(m.finished_at or 0.0 for m in measured)
        took = back.updated_at - failed_at
        print(f"\n{router}: failed post-promotion measurement to switch back: {took:.3f}s")


@ROUTERS
async def test_auto_promotion_seconds_switches_on_its_own_after_the_delay(
    router: str, apps: Apps, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    blue_green = {"autoPromotionSeconds": 2, "scaleDownDelaySeconds": 3}
    loaded = parse_rollout_text(
        blue_green_text(router, apps.stable, apps.canary, blue_green, prometheus), "r"
    )
    async with standalone_runtime(
        loaded, base_dir=tmp_path, settings=settings(prometheus), start=False
    ) as runtime:
        recording = Recording(runtime)
        runtime.start()
        active, _ = urls(runtime)
        paused = await wait_until(
            runtime,
            lambda s: s.state is not None and s.state.pause_reason == PauseReason.BLUE_GREEN_PAUSE,
            within=60,
        )
        assert paused.state is not None and paused.state.pause_until is not None
        assert await versions(active, 200) == {"stable": 200}
        switched = await recording.went_through(in_stage(Stage.POST_PROMOTION, weight=100, preview="canary"))
        assert switched.state is not None and switched.state.switched_at is not None
        # On its own (no command), once autoPromotionSeconds had passed.
        assert switched.state.switched_at >= paused.state.pause_until
        assert switched.state.handled_commands == ()
        assert await versions(active, 200) == {"canary": 200}
        late = switched.state.switched_at - paused.state.pause_until
        print(f"\n{router}: switched {late:.3f}s after autoPromotionSeconds ran out")
        await wait_until(runtime, finished("Promoted"), within=60)
        assert recording.weights() == [0, 100, 0]

"""The blue-green strategy of the engine, driven through a simulated world (tests/engine_world.py).

The behaviour is Argo's (rollout/bluegreen.go, docs/features/bluegreen.md): preview, pre-promotion
analysis, pause, switch, post-promotion analysis while the old revision still runs, then the old
revision scaled down after scaleDownDelaySeconds.
"""

from __future__ import annotations

import dataclasses

from meshshift.engine.actions import (
    AnalysisKind,
    ApplyHeaderRoute,
    PromoteCanary,
    RemoveManagedRoutes,
    ScaleCanary,
    SetCanaryWeight,
    StartAnalysis,
    WaitUntil,
)
from meshshift.engine.machine import CommandKind, resume_actions
from meshshift.engine.state import PauseReason, RolloutPhase, Stage
from meshshift.spec.annotations import parse_deployment
from meshshift.spec.model import (
    AnalysisPhase,
    AnalysisRef,
    BlueGreen,
    CanaryScale,
    HeaderMatch,
    RolloutSpec,
    SetHeaderRoute,
    StringMatch,
    TemplateRef,
)
from tests.engine_world import VerdictPolicy, World, always

SMOKE = AnalysisRef(templates=(TemplateRef("smoke-tests"),))
QA = SetHeaderRoute("preview", (HeaderMatch("X-Preview", StringMatch("exact", "true")),))


def blue_green(**options: object) -> RolloutSpec:
    return RolloutSpec(steps=(), blue_green=BlueGreen(**options))  # type: ignore[arg-type]


def on_kind(**verdicts: AnalysisPhase) -> VerdictPolicy:
    """A verdict policy by analysis kind (`prePromotion`, `postPromotion`)."""
    return lambda start: verdicts.get(start.kind.value, AnalysisPhase.SUCCESSFUL)


def rolling(spec: RolloutSpec, **world_options: object) -> World:
    """v1 is stable and v2 has just arrived."""
    world = World(spec, **world_options)  # type: ignore[arg-type]
    world.settle()
    world.weights.clear()
    world.actions.clear()
    world.events.clear()
    world.revision = "v2"
    world.tick()
    return world


def stage(world: World) -> Stage:
    return world.current.stage  # read through a call: mypy keeps no narrowed type across ticks


def kinds(world: World) -> list[str]:
    return [start.kind.value for start in world.started]


# --- the happy path ------------------------------------------------------------------------------


def test_a_healthy_revision_is_previewed_analysed_switched_to_and_promoted() -> None:
    spec = blue_green(pre_promotion_analysis=SMOKE, post_promotion_analysis=SMOKE, scale_down_delay=30)
    world = rolling(spec)
    assert isinstance(world.actions[0], ScaleCanary) and world.actions[0].scale == CanaryScale.full()
    world.settle()
    assert world.phase() == RolloutPhase.HEALTHY and world.current.stable_revision == "v2"
    assert kinds(world) == ["prePromotion", "postPromotion"]
    assert [s.run_name for s in world.started] == ["v2-1-pre", "v2-1-post"]
    # User traffic moved once to the new revision, and back to the stable once it runs it.
    assert world.weights == [100, 0]
    assert world.promotions == ["v2"]
    assert world.canary_scale == CanaryScale.zero()
    reasons = world.event_reasons()
    assert reasons.index("PreviewReady") < reasons.index("SwitchService") < reasons.index("RolloutCompleted")


def test_user_traffic_stays_on_the_stable_during_the_preview() -> None:
    spec = blue_green(pre_promotion_analysis=SMOKE)
    world = rolling(spec, verdict=None)  # the pre-promotion analysis stays Running
    world.settle()
    assert stage(world) == Stage.PREVIEW
    assert world.weights == [] and world.weight == 0
    assert world.current.preview_ready_at is not None
    assert "pre-promotion analysis running" in world.current.message


def test_the_preview_waits_for_its_pods_before_the_analysis_starts() -> None:
    world = rolling(blue_green(pre_promotion_analysis=SMOKE), canary_ready=False)
    world.tick(advance=60)
    assert world.started == [] and stage(world) == Stage.PREVIEW
    assert world.current.preview_ready_at is None
    world.canary_ready = True
    world.settle()
    assert kinds(world) == ["prePromotion"] and world.phase() == RolloutPhase.HEALTHY


def test_the_old_revision_goes_no_earlier_than_scale_down_delay_after_the_switch() -> None:
    world = rolling(blue_green(scale_down_delay=45))
    switched_at = world.current.switched_at
    assert switched_at is not None and stage(world) == Stage.POST_PROMOTION
    assert world.wake_at == switched_at + 45 and world.promotions == []
    world.tick(advance=44)
    assert world.promotions == []
    world.tick(advance=1)
    assert world.promotions == ["v2"]
    world.tick()  # the stable runs v2 now: traffic is handed over to it
    assert world.weights == [100, 0] and world.phase() == RolloutPhase.HEALTHY
    # The canary's pods served all traffic until the hand-over: they go 45 s after it.
    assert world.current.scale_down_at == world.now + 45
    assert world.canary_scale == CanaryScale.full()
    world.settle()
    assert world.canary_scale == CanaryScale.zero()


def test_the_old_revision_stays_until_the_post_promotion_analysis_succeeded() -> None:
    world = rolling(blue_green(post_promotion_analysis=SMOKE, scale_down_delay=0), verdict=None)
    world.settle()
    world.tick(advance=3600)
    assert stage(world) == Stage.POST_PROMOTION and world.promotions == []
    world.verdicts["v2-1-post"] = AnalysisPhase.SUCCESSFUL
    world.settle()
    assert world.promotions == ["v2"] and world.phase() == RolloutPhase.HEALTHY


def test_a_preview_header_route_reaches_the_preview_until_the_rollout_ends() -> None:
    world = rolling(blue_green(preview_header_route=QA, pre_promotion_analysis=SMOKE), verdict=None)
    world.settle()
    assert [a for a in world.actions if isinstance(a, ApplyHeaderRoute)] == [
        ApplyHeaderRoute("preview", QA.match)
    ]
    assert world.weight == 0 and "preview" in world.header_routes
    world.verdicts["v2-1-pre"] = AnalysisPhase.SUCCESSFUL
    world.settle()
    assert world.header_routes == {} and world.phase() == RolloutPhase.HEALTHY


# --- failures ---------------------------------------------------------------------------------


def test_a_failed_pre_promotion_analysis_aborts_before_any_user_request_reaches_the_preview() -> None:
    spec = blue_green(pre_promotion_analysis=SMOKE, post_promotion_analysis=SMOKE)
    world = rolling(spec, verdict=on_kind(prePromotion=AnalysisPhase.FAILED))
    world.settle()
    assert world.phase() == RolloutPhase.DEGRADED
    assert [w for w in world.weights if w > 0] == [] and world.promotions == []
    assert kinds(world) == ["prePromotion"]
    assert world.rollbacks and world.rollbacks[0].reason == "AnalysisRunFailed"
    assert world.canary_scale == CanaryScale.zero()  # after abortScaleDownDelaySeconds
    assert "SwitchService" not in world.event_reasons()


def test_a_failed_post_promotion_analysis_switches_back_at_once() -> None:
    spec = blue_green(post_promotion_analysis=SMOKE)
    world = rolling(spec, verdict=None)
    world.settle()
    assert world.weight == 100
    world.verdicts["v2-1-post"] = AnalysisPhase.FAILED
    decision = world.tick()
    # The first action of the pass that sees the verdict is the switch back.
    routing = [a for a in decision.actions if isinstance(a, SetCanaryWeight)]
    assert routing == [SetCanaryWeight(0)]
    assert world.weights == [100, 0] and world.phase() == RolloutPhase.DEGRADED
    assert world.promotions == [] and world.current.stable_revision == "v1"
    assert world.current.switched_at is None
    switches = [e for e in world.events if e.reason == "SwitchService"]
    assert len(switches) == 2 and "back" in switches[1].message


def test_an_inconclusive_pre_promotion_analysis_waits_for_a_human_and_retry_runs_it_again() -> None:
    world = rolling(blue_green(pre_promotion_analysis=SMOKE), verdict=always(AnalysisPhase.INCONCLUSIVE))
    world.settle()
    assert world.phase() == RolloutPhase.PAUSED and world.current.pause_reason == PauseReason.INCONCLUSIVE
    world.verdict = always(AnalysisPhase.SUCCESSFUL)
    world.command(CommandKind.RETRY)
    world.settle()
    assert [s.run_name for s in world.started] == ["v2-1-pre", "v2-1-pre-retry1"]
    assert world.phase() == RolloutPhase.HEALTHY and world.weights == [100, 0]


def test_a_preview_that_never_gets_ready_fails_at_the_progress_deadline() -> None:
    world = rolling(blue_green(), canary_ready=False)
    world.settle()
    assert world.phase() == RolloutPhase.DEGRADED
    assert world.current.abort_reason == "ProgressDeadlineExceeded" and world.weights == []


# --- promotion ----------------------------------------------------------------------------------


def test_auto_promotion_disabled_waits_for_promote() -> None:
    world = rolling(blue_green(auto_promotion_enabled=False, pre_promotion_analysis=SMOKE))
    world.settle()
    world.tick(advance=86400)
    assert world.phase() == RolloutPhase.PAUSED
    assert world.current.pause_reason == PauseReason.BLUE_GREEN_PAUSE and world.weights == []
    decision = world.command(CommandKind.PROMOTE)
    assert decision.outcomes[0].applied
    assert world.weights == [100]
    world.settle()
    assert world.phase() == RolloutPhase.HEALTHY


def test_auto_promotion_seconds_promotes_after_that_delay() -> None:
    world = rolling(blue_green(auto_promotion_seconds=30))
    paused_at = world.now
    assert world.current.pause_reason == PauseReason.BLUE_GREEN_PAUSE
    assert world.wake_at == paused_at + 30
    world.tick(advance=29.5)
    assert world.weights == []
    world.tick(advance=0.5)
    assert world.weights == [100] and world.current.switched_at == paused_at + 30


def test_auto_promotion_seconds_counts_from_the_end_of_the_pre_promotion_analysis() -> None:
    world = rolling(blue_green(auto_promotion_seconds=30, pre_promotion_analysis=SMOKE), verdict=None)
    world.tick(advance=100)
    world.verdicts["v2-1-pre"] = AnalysisPhase.SUCCESSFUL
    world.tick()
    assert world.current.pause_until == world.now + 30


def test_promote_before_the_pause_says_why_nothing_happens() -> None:
    world = rolling(blue_green(auto_promotion_enabled=False, pre_promotion_analysis=SMOKE), verdict=None)
    world.settle()
    decision = world.command(CommandKind.PROMOTE)
    assert not decision.outcomes[0].applied
    assert "pre-promotion analysis is running" in decision.outcomes[0].message


def test_preview_replica_count_scales_up_fully_only_before_the_switch() -> None:
    world = rolling(blue_green(preview_replica_count=1, auto_promotion_enabled=False))
    assert world.actions[0] == ScaleCanary(CanaryScale(replicas=1), 0)
    world.settle()
    assert world.canary_scale == CanaryScale(replicas=1)
    world.canary_ready = False  # the full replica count is not up yet
    world.command(CommandKind.PROMOTE)
    world.tick(advance=60)
    assert world.canary_scale == CanaryScale.full() and world.weights == []
    assert stage(world) == Stage.SWITCHING
    world.canary_ready = True
    world.tick()
    assert world.weights == [100]


def test_the_pass_that_scales_up_does_not_switch_on_readiness_seen_before_it() -> None:
    world = rolling(blue_green(preview_replica_count=1, auto_promotion_enabled=False))
    world.settle()
    decision = world.command(CommandKind.PROMOTE)  # canary_ready is still true (1 replica)
    assert ScaleCanary(CanaryScale.full(), 0) in decision.actions
    assert not any(isinstance(a, SetCanaryWeight) for a in decision.actions)


def test_promote_full_skips_the_analyses_and_the_pause_but_keeps_the_old_revision_for_the_delay() -> None:
    spec = blue_green(
        auto_promotion_enabled=False, pre_promotion_analysis=SMOKE, post_promotion_analysis=SMOKE
    )
    world = rolling(spec, verdict=None)
    world.settle()
    decision = world.command(CommandKind.PROMOTE_FULL)
    assert decision.outcomes[0].applied and world.weights == [100]
    assert world.stopped == ["v2-1-pre"]
    world.settle()
    assert kinds(world) == ["prePromotion"] and world.phase() == RolloutPhase.HEALTHY
    last = world.current.history[-1]
    assert (last.outcome, last.full_promotion) == ("Promoted", True)


# --- commands and new revisions --------------------------------------------------------------


def test_abort_after_the_switch_switches_back() -> None:
    world = rolling(blue_green(post_promotion_analysis=SMOKE), verdict=None)
    world.settle()
    decision = world.command(CommandKind.ABORT)
    assert decision.outcomes[0].applied and world.weights == [100, 0]
    assert world.phase() == RolloutPhase.DEGRADED and world.promotions == []


def test_retry_after_an_abort_previews_again() -> None:
    world = rolling(blue_green(pre_promotion_analysis=SMOKE), verdict=always(AnalysisPhase.FAILED))
    world.settle()
    assert world.phase() == RolloutPhase.DEGRADED
    world.verdict = always(AnalysisPhase.SUCCESSFUL)
    decision = world.command(CommandKind.RETRY)
    assert decision.outcomes[0].applied and stage(world) == Stage.PREVIEW
    world.settle()
    assert [s.run_name for s in world.started] == ["v2-1-pre", "v2-2-pre"]
    assert world.phase() == RolloutPhase.HEALTHY


def test_a_new_revision_during_the_preview_supersedes_the_one_previewed() -> None:
    world = rolling(blue_green(pre_promotion_analysis=SMOKE), verdict=None)
    world.settle()
    world.revision = "v3"
    world.verdict = always(AnalysisPhase.SUCCESSFUL)
    world.settle()
    assert [s.revision for s in world.started] == ["v2", "v3"]
    assert world.current.stable_revision == "v3" and world.promotions == ["v3"]
    assert [r.outcome for r in world.current.history] == ["Superseded", "Promoted"]
    assert world.weights == [100, 0]


def test_a_new_revision_after_the_switch_sends_user_traffic_back_to_the_stable_at_once() -> None:
    world = rolling(blue_green(post_promotion_analysis=SMOKE, pre_promotion_analysis=SMOKE), verdict=None)
    world.verdicts["v2-1-pre"] = AnalysisPhase.SUCCESSFUL
    world.settle()
    assert world.weight == 100
    world.revision = "v3"
    decision = world.tick()
    assert [a for a in decision.actions if isinstance(a, SetCanaryWeight)] == [SetCanaryWeight(0)]
    assert stage(world) == Stage.PREVIEW and world.current.canary_revision == "v3"


def test_a_new_revision_while_the_stable_is_updated_sends_user_traffic_to_the_stable() -> None:
    world = rolling(blue_green(scale_down_delay=0, auto_promotion_enabled=False), instant_promotion=False)
    world.command(CommandKind.PROMOTE)
    world.tick()
    assert stage(world) == Stage.PROMOTING and world.weight == 100
    world.revision = "v3"
    world.tick()
    assert world.weight == 0 and stage(world) == Stage.PROMOTING
    world.promote_now()
    world.tick()
    assert world.current.stable_revision == "v2" and world.current.canary_revision == "v3"
    assert stage(world) == Stage.PREVIEW and world.phase() == RolloutPhase.PAUSED
    assert [r.outcome for r in world.current.history] == ["Promoted"] and world.weights == [100, 0]


def test_going_back_to_the_stable_revision_after_the_switch_switches_back() -> None:
    world = rolling(blue_green(post_promotion_analysis=SMOKE), verdict=None)
    world.settle()
    world.revision = "v1"  # `meshshift undo`: the Deployment's template is the stable's again
    world.tick()
    assert world.weights == [100, 0] and world.phase() == RolloutPhase.HEALTHY
    assert "SkipSteps" in world.event_reasons()


# --- restarts ----------------------------------------------------------------------------------


def test_a_restart_after_the_switch_re_asserts_the_switch_without_switching_again() -> None:
    spec = blue_green(post_promotion_analysis=SMOKE)
    world = rolling(spec, verdict=None)
    world.settle()
    state = world.current
    actions = resume_actions(spec, state)
    assert SetCanaryWeight(100) in actions and SetCanaryWeight(0) not in actions
    assert ScaleCanary(CanaryScale.full(), 100) in actions
    assert StartAnalysis("v2-1-post", AnalysisKind.POST_PROMOTION, SMOKE, "v2", "v1") in actions
    # The restarted engine carries on from the state: no second SwitchService.
    restarted = World(spec, revision="v2", state=state, verdict=None, now=world.now + 5)
    restarted.verdicts = dict(world.verdicts)
    restarted.tick()
    assert "SwitchService" not in restarted.event_reasons() and restarted.weights == []


def test_a_restart_during_the_preview_keeps_user_traffic_on_the_stable() -> None:
    spec = blue_green(preview_replica_count=2, pre_promotion_analysis=SMOKE)
    world = rolling(spec, verdict=None)
    world.settle()
    actions = resume_actions(spec, world.current)
    assert SetCanaryWeight(0) in actions and ScaleCanary(CanaryScale(replicas=2), 0) in actions


def test_the_state_round_trips_through_json() -> None:
    world = rolling(blue_green(post_promotion_analysis=SMOKE), verdict=None)
    world.settle()
    state = world.current
    assert type(state).from_json(state.to_json()) == state


# --- the annotation ------------------------------------------------------------------------------


def test_the_annotation_gives_the_engine_its_blue_green_spec() -> None:
    parsed = parse_deployment(
        {
            "metadata": {
                "name": "web",
                "annotations": {
                    "meshshift.io/enabled": "true",
                    "meshshift.io/router": "istio",
                    "meshshift.io/blue-green": (
                        "activeService: web-active\n"
                        "previewService: web-preview\n"
                        "autoPromotionEnabled: false\n"
                        "previewReplicaCount: 1\n"
                        "scaleDownDelaySeconds: 10\n"
                        "abortScaleDownDelaySeconds: 5\n"
                        "prePromotionAnalysis: {templates: [{templateName: smoke-tests}]}\n"
                    ),
                },
            }
        }
    )
    assert parsed is not None
    assert parsed.target.service == "web-active"
    strategy = parsed.rollout.blue_green
    assert strategy == BlueGreen(
        active_service="web-active",
        preview_service="web-preview",
        auto_promotion_enabled=False,
        preview_replica_count=1,
        pre_promotion_analysis=SMOKE,
        scale_down_delay=10,
    )
    assert parsed.rollout.abort_scale_down_delay == 5 and parsed.rollout.strategy == "blueGreen"


def test_defaults_are_argo_s() -> None:
    strategy = BlueGreen()
    assert strategy.auto_promotion_enabled and strategy.scale_down_delay == 30
    assert not strategy.pauses_before_switch
    assert dataclasses.replace(strategy, auto_promotion_seconds=10).pauses_before_switch


def test_wake_ups_are_scheduled_for_every_timer() -> None:
    world = rolling(blue_green(auto_promotion_seconds=10, scale_down_delay=20))
    assert WaitUntil(world.now + 10) in world.actions
    world.tick(advance=10)
    assert world.wake_at == world.now + 20
    assert PromoteCanary("v2") not in world.actions
    world.tick(advance=20)
    assert PromoteCanary("v2") in world.actions
    world.tick()
    assert RemoveManagedRoutes() in world.actions and world.wake_at == world.now + 20

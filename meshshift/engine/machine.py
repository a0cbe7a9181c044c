"""The step machine: (spec, state, now, observation) -> (state, actions). No I/O, no clock.

Semantics follow Argo Rollouts' canary strategy with Flagger's workload model:
- a new revision starts at step 0 with fresh analysis; one that returns to the stable
  revision cancels the rollout;
- Successful analysis moves on; Failed or Error applies the failure policy; Inconclusive
  pauses for a human;
- after the last step (and a Successful background analysis) the canary is promoted;
- waiting longer than the progress deadline for the canary to become ready fails it.

One deliberate difference from Argo: `promote` skips pauses only. It never skips or
overrides an analysis: that takes `promote-full`, so a rollout is never promoted on an
analysis that was not Successful unless a human asked for exactly that.

The blue-green strategy (`spec.blue_green`, Argo's `strategy.blueGreen`) is a second path
through the same machine, with the same commands, analysis, failure and promotion code:
- Preview: the new revision is scaled up (`previewReplicaCount`, or full) with 0% of the
  user traffic; once it is ready its header route (if any) is set and the pre-promotion
  analysis runs; then it pauses for `promote` (autoPromotionEnabled: false) or
  autoPromotionSeconds. A Failed pre-promotion analysis aborts before any user request
  reached the new revision.
- Switching: scaled to full, and once ready all user traffic moves to it (SetCanaryWeight(100):
  one write per router).
- PostPromotion: the post-promotion analysis runs while the old revision still serves nothing
  but still runs, so a failure switches back at once (SetCanaryWeight(0)). After a success,
  and no earlier than `scaleDownDelaySeconds` after the switch, the stable is promoted as in
  the canary strategy (Flagger's model: the template is copied to the stable; then traffic
  goes back to the stable, which now runs the new revision, and the canary is scaled down
  `scaleDownDelaySeconds` later).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from meshshift.engine.actions import (
    Action,
    AnalysisKind,
    ApplyHeaderRoute,
    ApplyMirrorRoute,
    EventType,
    PromoteCanary,
    RecordEvent,
    RemoveHeaderRoute,
    RemoveManagedRoutes,
    RemoveMirrorRoute,
    RollBack,
    ScaleCanary,
    SetCanaryWeight,
    SetManagedRoutes,
    StartAnalysis,
    StopAnalysis,
    WaitUntil,
)
from meshshift.engine.state import (
    HANDLED_COMMANDS_KEPT,
    HISTORY_KEPT,
    AnalysisRunRecord,
    HeaderRoute,
    MirrorRoute,
    PauseReason,
    RevisionRecord,
    RolloutPhase,
    RolloutState,
    Stage,
)
from meshshift.spec.model import (
    AnalysisPhase,
    BlueGreen,
    CanaryScale,
    FailurePolicy,
    Pause,
    RolloutSpec,
    SetCanaryScale,
    SetHeaderRoute,
    SetMirrorRoute,
    SetWeight,
    Step,
    StepAnalysis,
)

BLUE_GREEN_STAGES = (Stage.PREVIEW, Stage.SWITCHING, Stage.POST_PROMOTION)


class CommandKind(StrEnum):
    PROMOTE = "promote"
    PROMOTE_FULL = "promote-full"
    ABORT = "abort"
    RETRY = "retry"
    PAUSE = "pause"


@dataclass(frozen=True, slots=True)
class Command:
    kind: CommandKind
    id: str  # unique per request: a command is acted on once


@dataclass(frozen=True, slots=True)
class Observation:
    """What the adapters report, read just before the engine runs."""

    revision: str  # the revision the user asks for (pod-template hash, canary endpoints)
    stable_revision: str | None = None  # what the stable runs; None: no stable set up yet
    stable_ready: bool = True
    canary_ready: bool = True
    analysis: Mapping[str, AnalysisPhase] = field(default_factory=dict)
    commands: tuple[Command, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    command: Command
    applied: bool
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    state: RolloutState
    actions: tuple[Action, ...]
    outcomes: tuple[CommandOutcome, ...] = ()

    @property
    def wake_at(self) -> float | None:
        for action in self.actions:
            if isinstance(action, WaitUntil):
                return action.at
        return None


def reconcile(spec: RolloutSpec, state: RolloutState | None, now: float, observed: Observation) -> Decision:
    """One step of the machine. Call it on every change and at every WaitUntil."""
    return _Reconciliation(spec, state, now, observed).run()


class _Reconciliation:
    def __init__(self, spec: RolloutSpec, state: RolloutState | None, now: float, observed: Observation):
        self.spec = spec
        self.now = now
        self.observed = observed
        self.actions: list[Action] = []
        self.outcomes: list[CommandOutcome] = []
        # A private copy that only this reconciliation mutates (see update()); the state
        # handed in, and the one handed out, are never changed afterwards.
        self.state = _private_copy(state) if state is not None else self._first_sight()

    # --- plumbing --------------------------------------------------------------------

    def update(self, **changes: Any) -> None:
        # Setting fields on our private copy instead of dataclasses.replace() makes a
        # decision several times faster (replace() rebuilds all ~30 fields each time).
        for name, value in changes.items():
            object.__setattr__(self.state, name, value)

    def emit(self, *actions: Action) -> None:
        self.actions.extend(actions)

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        kind = EventType.WARNING if warning else EventType.NORMAL
        self.emit(RecordEvent(kind, reason, message))

    def run(self) -> Decision:
        self._absorb_verdicts()
        self._follow_revision()
        self._apply_commands()
        # Each pass takes one transition; several can happen at once (setWeight, then a
        # header route, then a pause). Bounded so a bad spec can never spin.
        for _ in range(len(self.spec.steps) + 8):
            if not self._advance():
                break
        self._track_manual_pause()
        self._scale_down_when_due()
        self._schedule_wake()
        return Decision(self.state, tuple(self.actions), tuple(self.outcomes))

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.spec.steps

    def _step_label(self, index: int | None = None) -> str:
        index = self.state.step_index if index is None else index
        return f"step {min(index + 1, len(self.steps))}/{len(self.steps)}"

    # --- first sight -----------------------------------------------------------------

    def _first_sight(self) -> RolloutState:
        observed = self.observed
        if observed.stable_revision is None:
            self.emit(PromoteCanary(observed.revision))
            self.event("Initializing", f"setting up the stable with revision {observed.revision}")
            return RolloutState(
                stable_revision=observed.revision,
                phase=RolloutPhase.PROGRESSING,
                stage=Stage.INITIALIZING,
                waiting_since=self.now,
                message="setting up the stable",
            )
        # The stable exists already (state was lost, or standalone mode): take it as it is.
        self.emit(SetCanaryWeight(0), RemoveManagedRoutes())
        return RolloutState(stable_revision=observed.stable_revision, message="stable")

    def _finish_initialization(self) -> None:
        self.emit(SetCanaryWeight(0), ScaleCanary(CanaryScale.zero(), 0))
        self.event("Initialized", f"the stable runs revision {self.state.stable_revision}")
        self.update(
            phase=RolloutPhase.HEALTHY,
            stage=Stage.IDLE,
            waiting_since=None,
            abort_reason=None,
            message="stable",
        )
        self._follow_revision()  # a revision that arrived meanwhile starts now

    # --- analysis verdicts -----------------------------------------------------------

    def _absorb_verdicts(self) -> None:
        records = []
        for record in self.state.analysis_runs:
            verdict = self.observed.analysis.get(record.name)
            if verdict is not None and verdict != record.phase and not record.phase.completed:
                record = dataclasses.replace(record, phase=verdict)
                if verdict.completed and not record.superseded:
                    self.event(
                        f"AnalysisRun{verdict.value}",
                        f"analysis run {record.name} is {verdict.value}",
                        warning=verdict != AnalysisPhase.SUCCESSFUL,
                    )
            records.append(record)
        self.update(analysis_runs=tuple(records))

    def _current_run(self, kind: AnalysisKind, step_index: int | None = None) -> AnalysisRunRecord | None:
        for record in reversed(self.state.analysis_runs):
            if record.superseded or record.kind != kind:
                continue
            if kind == AnalysisKind.STEP and record.step_index != step_index:
                continue
            return record
        return None

    def _start_analysis(self, kind: AnalysisKind, step_index: int | None) -> None:
        blue_green = self.spec.blue_green
        if kind == AnalysisKind.PRE_PROMOTION and blue_green is not None:
            analysis, label = blue_green.pre_promotion_analysis, "pre"
        elif kind == AnalysisKind.POST_PROMOTION and blue_green is not None:
            analysis, label = blue_green.post_promotion_analysis, "post"
        elif step_index is not None and isinstance(step := self.steps[step_index], StepAnalysis):
            # Run names count steps from 1, as the Events, the logs and the CLI do.
            analysis, label = step.analysis, f"step{step_index + 1}"
        else:
            analysis, label = (self.spec.analysis.analysis if self.spec.analysis else None), "background"
        assert analysis is not None and self.state.canary_revision is not None
        previous = sum(1 for r in self.state.analysis_runs if r.kind == kind and r.step_index == step_index)
        name = f"{self.state.canary_revision}-{self.state.attempt}-{label}"
        if previous:
            name += f"-retry{previous}"
        record = AnalysisRunRecord(
            name=name, kind=kind, step_index=step_index, analysis=analysis, started_at=self.now
        )
        self.update(analysis_runs=(*self.state.analysis_runs, record))
        self.emit(StartAnalysis(name, kind, analysis, self.state.canary_revision, self.state.stable_revision))
        self.event("AnalysisRunStarted", f"{kind.value} analysis {name} started")

    def _stop_running_analyses(self) -> None:
        records = []
        for record in self.state.analysis_runs:
            if not record.phase.completed and not record.stop_requested:
                self.emit(StopAnalysis(record.name))
                record = dataclasses.replace(record, stop_requested=True)
            records.append(record)
        self.update(analysis_runs=tuple(records))

    def _supersede(self, name: str) -> None:
        self.update(
            analysis_runs=tuple(
                dataclasses.replace(r, superseded=True) if r.name == name else r
                for r in self.state.analysis_runs
            )
        )

    # --- revisions ---------------------------------------------------------------------

    def _follow_revision(self) -> None:
        revision = self.observed.revision
        state = self.state
        if state.stage == Stage.INITIALIZING:
            # The stable was chosen at first sight, as Argo marks it at its first reconcile: a
            # revision that arrives meanwhile is rolled out through the steps once the stable is
            # up (_finish_initialization). Only a stable that missed its progress deadline, so
            # has nothing to protect, is replaced by the new revision directly.
            stuck = state.abort_reason == "ProgressDeadlineExceeded"
            if revision != state.stable_revision and stuck:
                self.emit(PromoteCanary(revision))
                self.event(
                    "Initializing", f"the stable never became ready; setting it up with revision {revision}"
                )
                self.update(stable_revision=revision, waiting_since=self.now, abort_reason=None)
            return
        if state.stage == Stage.PROMOTING:
            if self.spec.blue_green is not None and revision != state.canary_revision:
                # The user's Deployment (the canary) now runs an unanalysed revision: user traffic
                # goes to the stable, which is being updated to the promoted one, at once.
                self._switch_back(f"revision {revision} arrived while the stable is being updated")
            return  # finish promoting first; a newer revision then starts its own rollout
        if state.in_rollout:
            if revision == state.canary_revision:
                return
            if revision == state.stable_revision:
                self._cancel_rollout()
            else:
                self._record_history("Superseded", f"superseded by revision {revision}")
                self._start_rollout(revision, reason="a new revision arrived mid-rollout")
            return
        if revision == state.stable_revision:
            if state.phase == RolloutPhase.DEGRADED:
                self.update(
                    phase=RolloutPhase.HEALTHY, canary_revision=None, abort_reason=None, message="stable"
                )
            return
        if state.phase == RolloutPhase.DEGRADED and revision == state.canary_revision:
            return  # stays aborted until a retry or a new revision
        self._start_rollout(revision, reason="new revision")

    def _start_rollout(self, revision: str, *, reason: str) -> None:
        self._stop_running_analyses()
        self._reset_routes()
        blue_green = self.spec.blue_green
        scale = blue_green.preview_scale if blue_green is not None else CanaryScale.full()
        self.update(
            phase=RolloutPhase.PROGRESSING,
            stage=Stage.STEPPING if blue_green is None else Stage.PREVIEW,
            canary_revision=revision,
            attempt=self.state.attempt + 1,
            step_index=0,
            step_started_at=None,
            pause_reason=None,
            pause_until=None,
            canary_scale=scale,
            analysis_runs=(),
            blocking_run=None,
            waiting_since=None,
            rollout_started_at=self.now,
            abort_reason=None,
            message=f"rolling out revision {revision}",
            rollback_weights=(),
            next_rollback_at=None,
            scale_down_at=None,
            full_promotion=False,
            preview_ready_at=None,
            switched_at=None,
            manual_pause_seconds=0.0,
            manual_pause_started_at=None,
        )
        self.emit(ScaleCanary(scale, 0))
        self.event(
            "RolloutUpdated", f"rolling out revision {revision} ({reason}, attempt {self.state.attempt})"
        )

    def _reset_routes(self) -> None:
        if self.state.switched:
            self._switch_back("the rollout ended")
        if self.state.desired_weight != 0:
            self.emit(SetCanaryWeight(0))
        if self.state.header_routes or self.state.mirror_routes:
            self.emit(RemoveManagedRoutes())
        self.update(desired_weight=0, header_routes=(), mirror_routes=())

    def _switch_back(self, why: str) -> None:
        """Blue-green: all user traffic back on the stable, in one write per router."""
        if self.state.desired_weight != 0:
            self.emit(SetCanaryWeight(0))
            self.event(
                "SwitchService",
                f"switched user traffic back to the stable revision {self.state.stable_revision}: {why}",
                warning=True,
            )
        self.update(desired_weight=0, switched_at=None)

    def _cancel_rollout(self) -> None:
        self._stop_running_analyses()
        self._reset_routes()
        self.emit(ScaleCanary(CanaryScale.zero(), 0))
        self._record_history("Undone", "the workload went back to the stable revision")
        self.event("SkipSteps", f"rollback to the stable revision {self.state.stable_revision}")
        self.update(
            phase=RolloutPhase.HEALTHY,
            stage=Stage.IDLE,
            canary_revision=None,
            pause_reason=None,
            pause_until=None,
            canary_scale=CanaryScale.zero(),
            waiting_since=None,
            message="stable",
        )

    def _record_history(self, outcome: str, message: str) -> None:
        if self.state.canary_revision is None:
            return
        record = RevisionRecord(
            revision=self.state.canary_revision,
            outcome=outcome,
            started_at=self.state.rollout_started_at,
            finished_at=self.now,
            message=message,
            full_promotion=self.state.full_promotion,
            manual_pause_seconds=self._manual_pause_so_far(),
        )
        self.update(history=(*self.state.history, record)[-HISTORY_KEPT:])

    # --- commands ----------------------------------------------------------------------

    def _apply_commands(self) -> None:
        for command in self.observed.commands:
            if command.id in self.state.handled_commands:
                continue
            handler = {
                CommandKind.PROMOTE: self._promote,
                CommandKind.PROMOTE_FULL: self._promote_full,
                CommandKind.ABORT: self._abort_by_user,
                CommandKind.RETRY: self._retry,
                CommandKind.PAUSE: self._pause_by_user,
            }[command.kind]
            applied, message = handler()
            self.outcomes.append(CommandOutcome(command, applied, message))
            self.update(handled_commands=(*self.state.handled_commands, command.id)[-HANDLED_COMMANDS_KEPT:])
            self.event(
                "CommandApplied" if applied else "CommandIgnored",
                f"{command.kind.value}: {message}",
                warning=not applied,
            )

    def _pause_by_user(self) -> tuple[bool, str]:
        """Hold the canary's steps where they are (weights, routes, analyses running) until promote;
        a failed analysis still aborts. A timed pause step goes on where it was once resumed."""
        state = self.state
        if state.stage != Stage.STEPPING:
            if state.stage in BLUE_GREEN_STAGES:
                return (
                    False,
                    "pause holds canary steps (a blue-green rollout waits with autoPromotionEnabled false)",
                )
            return False, f"nothing to pause: the rollout is {state.phase.value}"
        if state.phase == RolloutPhase.PAUSED:
            if state.pause_reason == PauseReason.PAUSE_STEP and state.pause_until is not None:
                pass  # a timed pause: held past its end, until promoted
            else:
                return False, f"already paused: {state.message}"
        label = self._step_label()
        self.update(
            phase=RolloutPhase.PAUSED,
            pause_reason=PauseReason.USER,
            waiting_since=None,
            message=f"{label}: manually paused; promote resumes",
        )
        self.event("RolloutPaused", self.state.message)
        return True, f"paused at {label}; promote resumes"

    def _resume_from_user_pause(self) -> tuple[bool, str]:
        label = self._step_label()
        step = self.steps[self.state.step_index] if self.state.step_index < len(self.steps) else None
        timed = isinstance(step, Pause) and self.state.step_started_at is not None
        self.event("RolloutResumed", "Rollout is resumed")
        self.update(
            phase=RolloutPhase.PAUSED if timed else RolloutPhase.PROGRESSING,
            pause_reason=PauseReason.PAUSE_STEP if timed else None,
            message=f"{label}: resumed",
        )
        return True, f"resumed at {label}"

    def _promote(self) -> tuple[bool, str]:
        state = self.state
        if state.stage == Stage.STEPPING and state.pause_reason == PauseReason.USER:
            return self._resume_from_user_pause()
        if state.stage in BLUE_GREEN_STAGES:
            return self._promote_blue_green()
        if state.stage == Stage.STEPPING and state.phase == RolloutPhase.PAUSED:
            if state.pause_reason == PauseReason.PAUSE_STEP:
                label = self._step_label()
                self._next_step()
                return True, f"resumed after the pause at {label}"
            return False, self._human_options()
        if state.stage == Stage.STEPPING and state.step_index < len(self.steps):
            if isinstance(self.steps[state.step_index], StepAnalysis):
                return False, f"the analysis of {self._step_label()} is running; promote-full skips it"
            return False, f"{self._step_label()} is waiting for the canary to become ready"
        if state.stage == Stage.FINALIZING:
            if state.phase == RolloutPhase.PAUSED:
                return False, self._human_options()
            return False, "waiting for the background analysis verdict; promote-full skips it"
        return False, f"nothing to promote: the rollout is {state.phase.value}"

    def _promote_blue_green(self) -> tuple[bool, str]:
        state = self.state
        if state.stage == Stage.PREVIEW and state.phase == RolloutPhase.PAUSED:
            if state.pause_reason == PauseReason.BLUE_GREEN_PAUSE:
                self._end_preview()
                return True, "switching user traffic to the preview"
            return False, self._human_options()
        if state.stage == Stage.PREVIEW:
            if state.preview_ready_at is None:
                return False, "the preview is not ready yet"
            if self._current_run(AnalysisKind.PRE_PROMOTION) is not None:
                return False, "the pre-promotion analysis is running; promote-full skips it"
            return False, "the switch is on its way"
        if state.stage == Stage.SWITCHING:
            return False, "switching already: waiting for the new revision's full replica count"
        if state.phase == RolloutPhase.PAUSED:
            return False, self._human_options()
        if self._post_promotion_pending():
            return False, "the post-promotion analysis is running; promote-full skips it"
        return (
            False,
            "user traffic is on the new revision; the old one is scaled down after scaleDownDelaySeconds",
        )

    def _human_options(self) -> str:
        state = self.state
        record = state.run(state.blocking_run) if state.blocking_run else None
        what = f"analysis {record.name} is {record.phase.value}" if record else state.message
        return f"{what}: promote-full overrides it, retry runs it again, abort rolls back"

    def _promote_full(self) -> tuple[bool, str]:
        if self.state.stage in BLUE_GREEN_STAGES:
            self._stop_running_analyses()
            if self.state.phase == RolloutPhase.PAUSED:
                self.event("RolloutResumed", "Rollout is resumed")
            self.update(
                full_promotion=True,
                phase=RolloutPhase.PROGRESSING,
                pause_reason=None,
                pause_until=None,
                blocking_run=None,
            )
            if self.state.stage == Stage.PREVIEW:
                self._end_preview()
            return (
                True,
                "promoting now: analysis and pauses skipped, user traffic switches to the new revision",
            )
        if self.state.stage in (Stage.STEPPING, Stage.FINALIZING):
            self._begin_promotion(full=True)
            return True, "promoting now; remaining steps and analysis skipped"
        return False, f"nothing to promote: the rollout is {self.state.phase.value}"

    def _abort_by_user(self) -> tuple[bool, str]:
        if self.state.stage in (Stage.STEPPING, Stage.FINALIZING, Stage.ROLLING_BACK, *BLUE_GREEN_STAGES):
            self._abort("AbortedByUser", "aborted by a user")
            return True, "traffic is back on the stable"
        return False, f"nothing to abort: the rollout is {self.state.phase.value}"

    def _retry(self) -> tuple[bool, str]:
        state = self.state
        if (
            state.stage == Stage.IDLE
            and state.phase == RolloutPhase.DEGRADED
            and state.canary_revision == self.observed.revision
        ):
            self._start_rollout(state.canary_revision, reason="retry")
            return True, "restarting the rollout at step 1"
        needs_human = (
            state.phase == RolloutPhase.PAUSED and state.pause_reason and state.pause_reason.needs_human
        )
        if state.stage in (Stage.STEPPING, Stage.PREVIEW, Stage.POST_PROMOTION) and needs_human:
            if state.blocking_run:
                self._supersede(state.blocking_run)
            what = self._step_label() if state.stage == Stage.STEPPING else _analysis_words(state.stage)
            self.event("RolloutResumed", "Rollout is resumed")
            self.update(
                phase=RolloutPhase.PROGRESSING,
                pause_reason=None,
                blocking_run=None,
                waiting_since=None,
                abort_reason=None,
                message=f"retrying {what}",
            )
            return True, f"retrying {what}"
        if state.stage == Stage.FINALIZING and needs_human:
            return False, "the background analysis ended with the steps; promote-full or abort"
        return False, f"nothing to retry: the rollout is {state.phase.value}"

    # --- stepping ----------------------------------------------------------------------

    def _advance(self) -> bool:
        """Take one transition; False when the machine must wait for something."""
        stage = self.state.stage
        if stage == Stage.INITIALIZING:
            return self._await_stable(self.state.stable_revision, self._finish_initialization)
        if stage == Stage.STEPPING:
            return self._step()
        if stage == Stage.FINALIZING:
            return self._finalize()
        if stage == Stage.PROMOTING:
            assert self.state.canary_revision is not None
            return self._await_stable(self.state.canary_revision, self._finish_promotion)
        if stage == Stage.ROLLING_BACK:
            return self._roll_back_gradually()
        if stage == Stage.PREVIEW:
            return self._preview()
        if stage == Stage.SWITCHING:
            return self._switching()
        if stage == Stage.POST_PROMOTION:
            return self._post_promotion()
        return False

    def _waits_for_human(self) -> bool:
        reason = self.state.pause_reason
        return self.state.phase == RolloutPhase.PAUSED and reason is not None and reason.needs_human

    def _step(self) -> bool:
        if self.state.pause_reason == PauseReason.USER:
            return self._user_paused_verdicts()
        if self._waits_for_human():
            return False
        index = self.state.step_index
        background = self.spec.analysis
        if (
            background
            and background.starting_step <= index
            and not self._current_run(AnalysisKind.BACKGROUND)
        ):
            self._start_analysis(AnalysisKind.BACKGROUND, None)
        if self._background_verdict_stops_us():
            return True
        if index >= len(self.steps):
            self._finish_steps()
            return True
        step = self.steps[index]
        if isinstance(step, SetWeight):
            return self._set_weight(step)
        if isinstance(step, Pause):
            return self._pause(step)
        if isinstance(step, StepAnalysis):
            return self._step_analysis()
        if isinstance(step, SetHeaderRoute):
            self._set_header_route(step)
        elif isinstance(step, SetMirrorRoute):
            self._set_mirror_route(step)
        elif isinstance(step, SetCanaryScale):
            self.update(canary_scale=step.scale)
            self.emit(ScaleCanary(step.scale, self.state.desired_weight))
            self.event("CanaryScaled", f"{self._step_label()}: canary scale {_describe_scale(step.scale)}")
        self._next_step()
        return True

    def _user_paused_verdicts(self) -> bool:
        """Paused by a user: nothing advances, but a failed analysis still applies its policy."""
        index = self.state.step_index
        for record in (
            self._current_run(AnalysisKind.BACKGROUND),
            self._current_run(AnalysisKind.STEP, index),
        ):
            if record is not None and record.phase.blocks_rollout:
                what = f"{record.kind.value} analysis {record.name} is {record.phase.value}"
                self._fail(f"AnalysisRun{record.phase.value}", what, blocking_run=record.name)
                return True
        return False

    def _next_step(self) -> None:
        index = self.state.step_index
        if index < len(self.steps):
            words = _step_words(self.steps[index])
            self.event(
                "RolloutStepCompleted", f"Rollout step {index + 1}/{len(self.steps)} completed ({words})"
            )
        if self.state.phase == RolloutPhase.PAUSED:
            self.event("RolloutResumed", "Rollout is resumed")
        self.update(
            step_index=self.state.step_index + 1,
            step_started_at=None,
            phase=RolloutPhase.PROGRESSING,
            pause_reason=None,
            pause_until=None,
            waiting_since=None,
        )

    def _background_verdict_stops_us(self) -> bool:
        record = self._current_run(AnalysisKind.BACKGROUND)
        return record is not None and self._stopped_by_verdict(record)

    def _stopped_by_verdict(self, record: AnalysisRunRecord) -> bool:
        """Failed/Error applies the failure policy and Inconclusive pauses; True if either did."""
        what = f"{record.kind.value} analysis {record.name} is {record.phase.value}"
        if record.phase.blocks_rollout:
            self._fail(f"AnalysisRun{record.phase.value}", what, blocking_run=record.name)
            return True
        if record.phase == AnalysisPhase.INCONCLUSIVE:
            self._pause_for_human(PauseReason.INCONCLUSIVE, record.name, what)
            return True
        return False

    def _set_weight(self, step: SetWeight) -> bool:
        state = self.state
        if state.step_started_at is None:
            self.update(step_started_at=self.now)
            if state.canary_scale.match_traffic_weight:
                self.emit(ScaleCanary(state.canary_scale, step.weight))
        if step.weight > 0 and not self.observed.canary_ready:
            return self._wait_on_workload(f"{self._step_label()}: waiting for the canary to become ready")
        if state.desired_weight != step.weight:
            self.emit(SetCanaryWeight(step.weight))
            self.event(
                "TrafficWeightUpdated",
                f"{self._step_label()}: traffic weight updated from {state.desired_weight} to {step.weight}",
            )
            self.update(desired_weight=step.weight)
        self._next_step()
        return True

    def _pause(self, step: Pause) -> bool:
        state = self.state
        if state.step_started_at is None:
            until = None if step.duration is None else self.now + step.duration
            self.update(
                step_started_at=self.now,
                phase=RolloutPhase.PAUSED,
                pause_reason=PauseReason.PAUSE_STEP,
                pause_until=until,
                message=f"{self._step_label()}: paused" + (" until promoted" if until is None else ""),
            )
            self.event("RolloutPaused", self.state.message)
        if self.state.pause_until is None or self.now < self.state.pause_until:
            return False
        self._next_step()
        return True

    def _step_analysis(self) -> bool:
        index = self.state.step_index
        record = self._current_run(AnalysisKind.STEP, index)
        if record is None:
            if self.state.step_started_at is None:
                self.update(step_started_at=self.now)
            self._start_analysis(AnalysisKind.STEP, index)
            self.update(message=f"{self._step_label()}: analysis running")
            return False
        if record.phase == AnalysisPhase.SUCCESSFUL:
            self._next_step()
            return True
        return self._stopped_by_verdict(record)

    def _set_header_route(self, step: SetHeaderRoute, where: str | None = None) -> None:
        kept = tuple(r for r in self.state.header_routes if r.name != step.name)
        label = where or self._step_label()
        if step.removes:
            self.emit(RemoveHeaderRoute(step.name))
            self.update(header_routes=kept)
            self.event("HeaderRouteRemoved", f"{label}: header route {step.name} removed")
        else:
            self.emit(ApplyHeaderRoute(step.name, step.match))
            self.update(header_routes=(*kept, HeaderRoute(step.name, step.match)))
            self.event("HeaderRouteSet", f"{label}: header route {step.name} set")

    def _set_mirror_route(self, step: SetMirrorRoute) -> None:
        kept = tuple(r for r in self.state.mirror_routes if r.name != step.name)
        if step.removes:
            self.emit(RemoveMirrorRoute(step.name))
            self.update(mirror_routes=kept)
            self.event("MirrorRouteRemoved", f"{self._step_label()}: mirror route {step.name} removed")
        else:
            self.emit(ApplyMirrorRoute(step.name, step.match, step.percentage))
            self.update(mirror_routes=(*kept, MirrorRoute(step.name, step.match, step.percentage)))
            self.event("MirrorRouteSet", f"{self._step_label()}: mirror route {step.name} set")

    def _wait_on_workload(self, message: str) -> bool:
        """Wait for a workload; True when the progress deadline just failed the rollout."""
        since = self.state.waiting_since
        if since is None:
            self.update(waiting_since=self.now, message=message)
            return False
        if self.now - since < self.spec.progress_deadline:
            return False
        reason = "ProgressDeadlineExceeded"
        detail = f"{message} for longer than the progress deadline ({self.spec.progress_deadline:g}s)"
        stepping = self.state.stage in (Stage.STEPPING, Stage.PREVIEW, Stage.SWITCHING)
        if stepping and not self.spec.progress_deadline_abort:
            # Argo without progressDeadlineAbort: say so once, keep the weights, keep waiting.
            if self.state.message != detail:
                self.event(reason, f"{detail}; waiting on (progressDeadlineAbort is false)", warning=True)
                self.update(message=detail)
            return False
        if stepping:
            self._fail(reason, detail, blocking_run=None)
            return True
        if self.state.abort_reason != reason:
            # The stable is already being replaced: nothing safer to route to. Say so.
            self.event(reason, detail, warning=True)
            self.update(phase=RolloutPhase.DEGRADED, abort_reason=reason, message=detail)
        return False

    def _await_stable(self, revision: str, on_ready: Any) -> bool:
        if self.observed.stable_revision == revision and self.observed.stable_ready:
            on_ready()
            return True
        return self._wait_on_workload(f"waiting for the stable to run revision {revision}")

    # --- blue-green ------------------------------------------------------------------------

    @property
    def _blue_green(self) -> BlueGreen:
        assert self.spec.blue_green is not None
        return self.spec.blue_green

    def _preview(self) -> bool:
        """The new revision on the preview only: ready, its analysis, then the pause if any."""
        if self._waits_for_human():
            return False
        revision = self.state.canary_revision
        if not self.observed.canary_ready:
            return self._wait_on_workload(f"waiting for the preview of revision {revision} to become ready")
        blue_green = self._blue_green
        if self.state.preview_ready_at is None:
            self.update(
                preview_ready_at=self.now, waiting_since=None, message=f"previewing revision {revision}"
            )
            self.event(
                "PreviewReady", f"revision {revision} is up on the preview; user traffic stays on the stable"
            )
            route = blue_green.preview_header_route
            if route is not None:
                self._set_header_route(route, where="preview")
        if blue_green.pre_promotion_analysis is not None and not self.state.full_promotion:
            record = self._current_run(AnalysisKind.PRE_PROMOTION)
            if record is None:
                self._start_analysis(AnalysisKind.PRE_PROMOTION, None)
                self.update(message=f"previewing revision {revision}: pre-promotion analysis running")
                return False
            if not record.phase.completed:
                return False
            if record.phase != AnalysisPhase.SUCCESSFUL:
                return self._stopped_by_verdict(record)
        if blue_green.pauses_before_switch and not self.state.full_promotion:
            if self.state.pause_reason != PauseReason.BLUE_GREEN_PAUSE:
                seconds = blue_green.auto_promotion_seconds if blue_green.auto_promotion_enabled else None
                until = None if seconds is None else self.now + seconds
                self.update(
                    phase=RolloutPhase.PAUSED,
                    pause_reason=PauseReason.BLUE_GREEN_PAUSE,
                    pause_until=until,
                    message=f"previewing revision {revision}: paused "
                    + ("until promoted" if until is None else f"for {seconds:g}s before the switch"),
                )
                self.event("RolloutPaused", self.state.message)
            if self.state.pause_until is None or self.now < self.state.pause_until:
                return False
        self._end_preview()
        return True

    def _end_preview(self) -> None:
        """The preview is done (promoted, or on its own): scale to full, then switch."""
        if self.state.phase == RolloutPhase.PAUSED:
            self.event("RolloutResumed", "Rollout is resumed")
        self.update(
            stage=Stage.SWITCHING,
            phase=RolloutPhase.PROGRESSING,
            pause_reason=None,
            pause_until=None,
            waiting_since=None,
            message=f"switching user traffic to revision {self.state.canary_revision}",
        )

    def _switching(self) -> bool:
        if self.state.canary_scale != CanaryScale.full():
            # previewReplicaCount: the full replica count first (Argo does not switch before it).
            # This pass's readiness predates the scale-up, so the switch waits for the next one.
            self.update(canary_scale=CanaryScale.full(), waiting_since=self.now)
            self.emit(ScaleCanary(CanaryScale.full(), 0))
            self.event(
                "CanaryScaled", f"revision {self.state.canary_revision} scaled to its full replica count"
            )
            return False
        if not self.observed.canary_ready:
            return self._wait_on_workload(f"waiting for revision {self.state.canary_revision} at full scale")
        revision = self.state.canary_revision
        self.emit(SetCanaryWeight(100))
        self.update(
            stage=Stage.POST_PROMOTION,
            desired_weight=100,
            switched_at=self.now,
            waiting_since=None,
            message=f"user traffic is on revision {revision}",
        )
        self.event(
            "SwitchService",
            f"switched user traffic from revision {self.state.stable_revision} to revision {revision}",
        )
        return True

    def _post_promotion_pending(self) -> bool:
        """The post-promotion analysis still decides (it exists, is not skipped, and is not done)."""
        if self._blue_green.post_promotion_analysis is None or self.state.full_promotion:
            return False
        record = self._current_run(AnalysisKind.POST_PROMOTION)
        return record is None or record.phase != AnalysisPhase.SUCCESSFUL

    def _post_promotion(self) -> bool:
        """Switched: the post-promotion analysis, then the old revision's scale-down delay."""
        if self._waits_for_human():
            return False
        if self._post_promotion_pending():
            record = self._current_run(AnalysisKind.POST_PROMOTION)
            if record is None:
                self._start_analysis(AnalysisKind.POST_PROMOTION, None)
                self.update(
                    message=f"user traffic is on revision {self.state.canary_revision}: "
                    "post-promotion analysis running"
                )
                return False
            if not record.phase.completed:
                return False
            return self._stopped_by_verdict(record)
        due = self._scale_down_due()
        if due is not None and self.now < due:
            self.update(
                message=f"user traffic is on revision {self.state.canary_revision}; the old revision "
                f"goes in {due - self.now:g}s (scaleDownDelaySeconds)"
            )
            return False
        self._begin_promotion(full=self.state.full_promotion)
        return True

    def _scale_down_due(self) -> float | None:
        """When the old revision may go: scaleDownDelaySeconds after the switch."""
        switched_at = self.state.switched_at
        return None if switched_at is None else switched_at + self._blue_green.scale_down_delay

    # --- the end of a rollout ------------------------------------------------------------

    def _finish_steps(self) -> None:
        record = self._current_run(AnalysisKind.BACKGROUND)
        if record is not None and not record.phase.completed:
            if not record.stop_requested:
                self.emit(StopAnalysis(record.name))
                self.update(
                    analysis_runs=tuple(
                        dataclasses.replace(r, stop_requested=True) if r.name == record.name else r
                        for r in self.state.analysis_runs
                    )
                )
            self.update(
                stage=Stage.FINALIZING, message="steps done; waiting for the background analysis verdict"
            )
            return
        self._begin_promotion(full=False)

    def _finalize(self) -> bool:
        if self._waits_for_human():
            return False
        record = self._current_run(AnalysisKind.BACKGROUND)
        if record is None or record.phase == AnalysisPhase.SUCCESSFUL:
            self._begin_promotion(full=False)
            return True
        return self._stopped_by_verdict(record)

    def _begin_promotion(self, *, full: bool) -> None:
        assert self.state.canary_revision is not None
        self._stop_running_analyses()
        if self.state.phase == RolloutPhase.PAUSED:
            self.event("RolloutResumed", "Rollout is resumed")
        self.update(
            phase=RolloutPhase.PROGRESSING,
            stage=Stage.PROMOTING,
            pause_reason=None,
            pause_until=None,
            blocking_run=None,
            waiting_since=None,
            full_promotion=full,
            message=f"promoting revision {self.state.canary_revision}",
        )
        self.emit(PromoteCanary(self.state.canary_revision))
        self.event("RolloutPromoting", self.state.message + (" (promote-full)" if full else ""))

    def _finish_promotion(self) -> None:
        revision = self.state.canary_revision
        assert revision is not None
        if self.state.desired_weight != 0:
            self.emit(SetCanaryWeight(0))  # the stable runs `revision` now: a hand-over, not a switch back
        self.emit(RemoveManagedRoutes())
        canary_scale, scale_down_at = CanaryScale.zero(), None
        if self.spec.blue_green is not None and self.state.switched:
            # The canary's pods served all traffic until this write: they go scaleDownDelaySeconds
            # later, as the old revision's pods did after the switch (proxies apply writes late).
            canary_scale, scale_down_at = (
                self.state.canary_scale,
                self.now + self._blue_green.scale_down_delay,
            )
        else:
            self.emit(ScaleCanary(CanaryScale.zero(), 0))
        self._record_history("Promoted", "promoted")
        self.event("RolloutCompleted", f"revision {revision} is the new stable")
        self.update(
            stable_revision=revision,
            canary_revision=None,
            phase=RolloutPhase.HEALTHY,
            stage=Stage.IDLE,
            desired_weight=0,
            header_routes=(),
            mirror_routes=(),
            canary_scale=canary_scale,
            scale_down_at=scale_down_at,
            switched_at=None,
            waiting_since=None,
            step_index=len(self.steps),
            message="stable",
        )
        self._follow_revision()  # a revision that arrived during the promotion starts now

    # --- failure -------------------------------------------------------------------------

    def _fail(self, reason: str, message: str, *, blocking_run: str | None) -> None:
        """Apply the failure policy."""
        policy = self.spec.on_failure
        self.event(reason, message, warning=True)
        if policy == FailurePolicy.FREEZE:
            self._stop_running_analyses()
            self.update(abort_reason=reason)
            self._pause_for_human(PauseReason.FROZEN, blocking_run, f"{message}; weights held (freeze)")
            return
        if policy == FailurePolicy.GRADUAL and self.state.desired_weight > 0:
            self._stop_running_analyses()
            if self.state.header_routes or self.state.mirror_routes:
                self.emit(RemoveManagedRoutes())
            current = self.state.desired_weight
            earlier = {
                s.weight
                for s in self.steps[: self.state.step_index]
                if isinstance(s, SetWeight) and 0 < s.weight < current
            }
            self.update(
                phase=RolloutPhase.DEGRADED,
                stage=Stage.ROLLING_BACK,
                header_routes=(),
                mirror_routes=(),
                pause_reason=None,
                pause_until=None,
                abort_reason=reason,
                rollback_weights=(*sorted(earlier, reverse=True), 0),
                next_rollback_at=self.now,
                message=f"{message}; rolling back gradually",
            )
            return
        self._abort(reason, message)

    def _roll_back_gradually(self) -> bool:
        state = self.state
        if state.next_rollback_at is not None and self.now < state.next_rollback_at:
            return False
        weight, *rest = state.rollback_weights or (0,)
        if weight != state.desired_weight:
            self.emit(SetCanaryWeight(weight))
        self.update(desired_weight=weight)
        if rest:
            self.update(rollback_weights=tuple(rest), next_rollback_at=self.now + self.spec.gradual_interval)
            self.event("RollingBack", f"canary weight {weight}, {len(rest)} more step(s) down")
            return False
        self._finish_abort(state.abort_reason or "AnalysisFailed", state.message)
        return True

    def _abort(self, reason: str, message: str) -> None:
        self._stop_running_analyses()
        if self.state.switched:
            self._switch_back(message)
        if self.state.desired_weight != 0:
            self.emit(SetCanaryWeight(0))
        self.emit(RemoveManagedRoutes())
        self.update(desired_weight=0, header_routes=(), mirror_routes=())
        self._finish_abort(reason, message)

    def _finish_abort(self, reason: str, message: str) -> None:
        revision = self.state.canary_revision
        assert revision is not None
        self.emit(RollBack(revision, reason))
        self._record_history("Aborted", f"{reason}: {message}")
        self.event("RolloutAborted", f"revision {revision}: {message}", warning=True)
        self.update(
            phase=RolloutPhase.DEGRADED,
            stage=Stage.IDLE,
            pause_reason=None,
            pause_until=None,
            blocking_run=None,
            waiting_since=None,
            abort_reason=reason,
            message=message,
            rollback_weights=(),
            next_rollback_at=None,
            scale_down_at=self.now + self.spec.abort_scale_down_delay,
        )

    def _pause_for_human(self, reason: PauseReason, run_name: str | None, message: str) -> None:
        self.update(
            phase=RolloutPhase.PAUSED,
            pause_reason=reason,
            pause_until=None,
            blocking_run=run_name,
            waiting_since=None,
            message=f"{message}: promote-full, retry or abort",
        )
        self.event("RolloutPaused", self.state.message, warning=True)

    # --- timers ----------------------------------------------------------------------------

    def _in_manual_pause(self) -> bool:
        """Paused until a human acts: `pause: {}`, an Inconclusive analysis, a freeze."""
        state = self.state
        reason = state.pause_reason
        if state.phase != RolloutPhase.PAUSED or reason is None:
            return False
        return reason.needs_human or state.pause_until is None

    def _manual_pause_so_far(self) -> float:
        started = self.state.manual_pause_started_at
        ongoing = self.now - started if started is not None else 0.0
        return self.state.manual_pause_seconds + max(0.0, ongoing)

    def _track_manual_pause(self) -> None:
        paused, started = self._in_manual_pause(), self.state.manual_pause_started_at
        if paused and started is None:
            self.update(manual_pause_started_at=self.now)
        elif not paused and started is not None:
            self.update(manual_pause_seconds=self._manual_pause_so_far(), manual_pause_started_at=None)

    def _scale_down_when_due(self) -> None:
        at = self.state.scale_down_at
        if at is not None and self.now >= at:
            self.emit(ScaleCanary(CanaryScale.zero(), 0))
            self.update(scale_down_at=None, canary_scale=CanaryScale.zero())

    def _schedule_wake(self) -> None:
        state = self.state
        times = [state.scale_down_at]
        if state.phase == RolloutPhase.PAUSED and state.pause_reason in (
            PauseReason.PAUSE_STEP,
            PauseReason.BLUE_GREEN_PAUSE,
        ):
            times.append(state.pause_until)
        if state.stage == Stage.POST_PROMOTION:
            times.append(self._scale_down_due())
        if state.stage == Stage.ROLLING_BACK:
            times.append(state.next_rollback_at)
        if state.waiting_since is not None:
            times.append(state.waiting_since + self.spec.progress_deadline)
        future = [t for t in times if t is not None and t > self.now]
        if future:
            self.emit(WaitUntil(min(future)))


_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(RolloutState))


def _private_copy(state: RolloutState) -> RolloutState:
    """A shallow copy of a frozen state (its fields are immutable values)."""
    duplicate = object.__new__(RolloutState)
    for name in _STATE_FIELDS:
        object.__setattr__(duplicate, name, getattr(state, name))
    return duplicate


def resume_actions(spec: RolloutSpec, state: RolloutState) -> tuple[Action, ...]:
    """The actions that re-establish everything `state` announces, after a restart.

    The state is saved before its actions are applied, so a crash can leave some of
    them unapplied; re-asserting the whole desired world is idempotent and safe. The
    managed routes are replaced in one change, never removed and added back: a header
    route the state holds keeps reaching the canary throughout a restart.
    """
    actions: list[Action] = [
        SetManagedRoutes(state.header_routes, state.mirror_routes),
        SetCanaryWeight(state.desired_weight),
    ]
    if state.stage != Stage.INITIALIZING:
        # While initializing, the user's Deployment runs the only pods there are.
        actions.append(ScaleCanary(state.canary_scale, state.desired_weight))
    for record in state.current_runs():
        if record.phase.completed or state.canary_revision is None:
            continue
        actions.append(
            StartAnalysis(
                record.name, record.kind, record.analysis, state.canary_revision, state.stable_revision
            )
        )
        if record.stop_requested:
            actions.append(StopAnalysis(record.name))
    if state.stage == Stage.INITIALIZING:
        actions.append(PromoteCanary(state.stable_revision))
    elif state.stage == Stage.PROMOTING and state.canary_revision is not None:
        actions.append(PromoteCanary(state.canary_revision))
    return tuple(actions)


def _analysis_words(stage: Stage) -> str:
    return "the pre-promotion analysis" if stage == Stage.PREVIEW else "the post-promotion analysis"


def _describe_scale(scale: CanaryScale) -> str:
    if scale.replicas is not None:
        return f"{scale.replicas} replicas"
    if scale.match_traffic_weight:
        return "matching the traffic weight"
    return f"{scale.weight}% of the replicas"


def _step_words(step: Step) -> str:
    """A step as Argo's RolloutStepCompleted message names it (`setWeight: 20`, `pause: 30s`)."""
    match step:
        case SetWeight(weight=weight):
            return f"setWeight: {weight}"
        case Pause(duration=None):
            return "pause"
        case Pause(duration=duration):
            return f"pause: {duration:g}s"
        case StepAnalysis():
            return "analysis"
        case SetCanaryScale(scale=scale) if scale.weight is not None:
            return f"setCanaryScale{{weight: {scale.weight}}}"
        case SetCanaryScale(scale=scale) if scale.match_traffic_weight:
            return "setCanaryScale{matchTrafficWeight: true}"
        case SetCanaryScale(scale=scale):
            return f"setCanaryScale{{replicas: {scale.replicas}}}"
        case SetHeaderRoute(name=name):
            return f"setHeaderRoute: {name}"
        case SetMirrorRoute(name=name):
            return f"setMirrorRoute: {name}"
    return type(step).__name__  # pragma: no cover - every step kind is matched above

"""Notifications: Slack incoming webhooks, a generic JSON webhook, and PagerDuty (Events API v2).

Events: a rollout started, a step completed, the rollout paused, was promoted (the
canary is the new stable), was aborted (traffic back on the stable), went back on the
stable after trouble (an undo, or the workload set back), or one of its analysis runs
failed (Failed or Error); for blue-green, the preview is up, user traffic switched to the
new revision, and switched back to the stable.

PagerDuty takes part in the troubles only: an abort, a rollback or a failed analysis
triggers an incident (severity `error`, one `dedup_key` per rollout and revision, the
failed metric with its value, condition and limit in `payload.summary`, the measurements
in `custom_details`); the next time the rollout is healthy (promoted, or back on the
stable) every incident it opened is resolved. Which revisions have an open incident is
known from what was triggered, and after a restart from the state found (an aborted
rollout, a failed analysis), so a restarted daemon still resolves them.

They are read off the RolloutRegistry's snapshots: the notifier compares each rollout's
state with the one before, so it needs no hook in the engine and sees every pass,
including a pause that ends on its own, which no engine event announces. On the first
snapshot of a rollout it only takes note, so a restarted daemon does not announce
again what happened before it started, unless the rollout started meanwhile.

Sending never delays a rollout: the registry listener only puts the notification on
one bounded queue per receiver, and each receiver's task sends with a timeout and a
few retries (backoff), dropping the oldest notification when its queue is full.

Receivers come from the daemon's flags or environment (`--slack-webhook-url`,
`--webhook-url`, `--pagerduty-routing-key`, MESHSHIFT_SLACK_WEBHOOK_URL,
MESHSHIFT_WEBHOOK_URL, MESHSHIFT_PAGERDUTY_ROUTING_KEY; MESHSHIFT_PAGERDUTY_EVENTS_URL
for another Events API endpoint) and per Deployment from the annotations
`meshshift.io/slack-webhook-url`, `meshshift.io/webhook-url` and
`meshshift.io/pagerduty-secret` (a Secret whose `routing-key` holds the key, read at
each send; see `receivers_from_annotations`), which add to them. A routing key is never
logged, never written to an annotation or to the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import structlog

from meshshift import __version__
from meshshift.analysis.run import AnalysisRun
from meshshift.engine.state import RolloutPhase, RolloutState, Stage
from meshshift.observe.status import SecretMask, describe_step, failed_metrics, step_position
from meshshift.runtime.controller import RolloutKey, RolloutSnapshot
from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import PAGERDUTY_EVENTS_URL, NotificationSettings
from meshshift.spec.annotations import PAGERDUTY_SECRET, SLACK_WEBHOOK_URL, WEBHOOK_URL
from meshshift.spec.annotations import PAGERDUTY_SECRET_KEY as PAGERDUTY_SECRET_KEY
from meshshift.spec.model import AnalysisPhase

log = structlog.get_logger(__name__)

SLACK_ANNOTATION = SLACK_WEBHOOK_URL
WEBHOOK_ANNOTATION = WEBHOOK_URL
PAGERDUTY_ANNOTATION = PAGERDUTY_SECRET
QUEUE_SIZE = 256
FIRST_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 10.0


class EventKind(StrEnum):
    STARTED = "rollout-started"
    STEP_COMPLETED = "step-completed"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ABORTED = "aborted"
    ANALYSIS_FAILED = "analysis-failed"
    BACK_ON_STABLE = "back-on-stable"  # after an abort or a failed analysis, without a promotion
    PREVIEW = "preview-ready"  # blue-green: the new revision is up on the preview
    SWITCHED = "switched"  # blue-green: user traffic moved to the new revision
    SWITCHED_BACK = "switched-back"  # blue-green: user traffic is back on the stable


# What opens a PagerDuty incident, and what closes every incident the rollout has open.
TROUBLE = (EventKind.ABORTED, EventKind.ANALYSIS_FAILED)
HEALTHY_AGAIN = (EventKind.PROMOTED, EventKind.BACK_ON_STABLE)


# The Argo event reason each notification answers to (Argo notifies on events: its trigger
# `on-rollout-step-completed` is the reason RolloutStepCompleted), for notification_send_*.
_REASONS = {
    EventKind.STARTED: "RolloutUpdated",
    EventKind.STEP_COMPLETED: "RolloutStepCompleted",
    EventKind.PAUSED: "RolloutPaused",
    EventKind.PROMOTED: "RolloutCompleted",
    EventKind.ABORTED: "RolloutAborted",
    EventKind.ANALYSIS_FAILED: "AnalysisRunFailed",
    EventKind.BACK_ON_STABLE: "RolloutCompleted",  # Argo's word for a rollout on its stable again
    EventKind.PREVIEW: "PreviewReady",
    EventKind.SWITCHED: "SwitchService",
    EventKind.SWITCHED_BACK: "SwitchService",
}


@dataclass(frozen=True, slots=True)
class Notification:
    kind: EventKind
    namespace: str
    name: str
    title: str  # one line, for people
    message: str  # the engine's own words
    at: float  # seconds since the epoch
    phase: str
    step: str  # "2/8"
    weight: int
    stable_revision: str | None
    canary_revision: str | None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def warning(self) -> bool:
        return self.kind in (EventKind.ABORTED, EventKind.ANALYSIS_FAILED, EventKind.SWITCHED_BACK)


def notification_reason(notification: Notification) -> str:
    """The event reason of a notification: `AnalysisRunError` for an errored run, else by kind."""
    if (
        notification.kind == EventKind.ANALYSIS_FAILED
        and notification.details.get("analysisPhase") == "Error"
    ):
        return "AnalysisRunError"
    return _REASONS[notification.kind]


# Told of every send: (notification, receiver, delivered, seconds it took, retries included).
SendListener = Callable[["Notification", "Receiver", bool, float], None]


# --- what happened between two snapshots ---------------------------------------------


def notifications_between(
    previous: RolloutState, snapshot: RolloutSnapshot, *, at: float
) -> list[Notification]:
    """The notifications a change from `previous` to `snapshot.state` calls for, in order."""
    current = snapshot.state
    assert current is not None
    found: list[Notification] = []

    def note(kind: EventKind, title: str, **details: Any) -> None:
        found.append(_notification(snapshot, kind, title, at=at, details=details))

    key = snapshot.key
    if current.attempt > previous.attempt:
        note(
            EventKind.STARTED,
            f"Rollout {key} started: revision {current.canary_revision}",
            attempt=current.attempt,
        )
        previous = dataclasses.replace(
            previous, step_index=0, analysis_runs=(), phase=RolloutPhase.PROGRESSING, preview_ready_at=None
        )
    steps = snapshot.spec.steps if snapshot.spec is not None else ()
    if not current.full_promotion and current.step_index > previous.step_index:
        for index in range(previous.step_index, min(current.step_index, len(steps))):
            note(
                EventKind.STEP_COMPLETED,
                f"Rollout {key}: step {index + 1}/{len(steps)} completed ({describe_step(steps[index])})",
                stepIndex=index,
                step=index + 1,  # 1-based, as in the title, the Events and the CLI
            )
    for record in current.current_runs():
        before = previous.run(record.name)
        if record.phase.blocks_rollout and (before is None or before.phase != record.phase):
            run = snapshot.analysis_runs.get(record.name)
            mask = SecretMask.for_run(record, run)
            note(
                EventKind.ANALYSIS_FAILED,
                f"Rollout {key}: analysis {record.name} is {record.phase.value}",
                analysisRun=record.name,
                analysisPhase=record.phase.value,
                failedMetrics=_failed_metrics(run, record.phase, mask),
                reason=mask.text(run.message) if run else "",
            )
    if current.preview_ready_at is not None and previous.preview_ready_at is None:
        note(
            EventKind.PREVIEW,
            f"Rollout {key}: revision {current.canary_revision} is up on the preview"
            " (users stay on the stable)",
            revision=current.canary_revision,
        )
    if current.switched and not previous.switched:
        note(
            EventKind.SWITCHED,
            f"Rollout {key}: user traffic switched to revision {current.canary_revision}",
            revision=current.canary_revision,
            fromRevision=current.stable_revision,
        )
    if previous.switched and not current.switched and current.stable_revision == previous.stable_revision:
        note(
            EventKind.SWITCHED_BACK,
            f"Rollout {key}: user traffic switched back to revision {current.stable_revision}",
            revision=current.stable_revision,
            fromRevision=previous.canary_revision,
        )
    paused_anew = current.phase == RolloutPhase.PAUSED and (
        previous.phase != RolloutPhase.PAUSED
        or previous.pause_reason != current.pause_reason
        or previous.step_index != current.step_index
    )
    if paused_anew:
        reason = current.pause_reason.value if current.pause_reason else ""
        note(EventKind.PAUSED, f"Rollout {key} paused: {current.message}", pauseReason=reason)
    if current.phase == RolloutPhase.DEGRADED and previous.phase != RolloutPhase.DEGRADED:
        failed: list[dict[str, Any]] = []
        for record in current.current_runs():
            if record.phase.blocks_rollout:
                run = snapshot.analysis_runs.get(record.name)
                failed += _failed_metrics(run, record.phase, SecretMask.for_run(record, run))
        note(
            EventKind.ABORTED,
            f"Rollout {key} aborted: {current.message}",
            reason=current.abort_reason or "",
            failedMetrics=failed,
        )
    promoted = [r for r in current.history if r.outcome == "Promoted" and r not in previous.history]
    for finished in promoted:
        note(
            EventKind.PROMOTED,
            f"Rollout {key} promoted: revision {finished.revision} is the new stable",
            revision=finished.revision,
            fullPromotion=finished.full_promotion,
        )
    back_on_stable = (
        not promoted
        and current.phase == RolloutPhase.HEALTHY
        and previous.phase != RolloutPhase.HEALTHY
        and previous.stage != Stage.INITIALIZING
        and _in_trouble(previous)
    )
    if back_on_stable:
        note(
            EventKind.BACK_ON_STABLE,
            f"Rollout {key} is back on the stable revision {current.stable_revision}",
            revision=current.stable_revision,
        )
    return found


def _in_trouble(state: RolloutState) -> bool:
    """Aborted, or held by a failed analysis: what a trigger announced, and a recovery ends."""
    return state.phase == RolloutPhase.DEGRADED or any(r.phase.blocks_rollout for r in state.current_runs())


def troubled_revisions(state: RolloutState) -> set[str]:
    """The revisions a restarted daemon finds in trouble, so an incident may be open for them: the
    canary of a rollout aborted or held by a failed analysis, and the revision of the last rollout
    if it was aborted (the daemon may resume it straight into the next one). A resolve for an
    incident already resolved does nothing at PagerDuty."""
    found = {state.canary_revision} if _in_trouble(state) and state.canary_revision else set()
    if state.history and state.history[-1].outcome == "Aborted":
        found.add(state.history[-1].revision)
    return found


def _failed_metrics(run: AnalysisRun | None, phase: AnalysisPhase, mask: SecretMask) -> list[dict[str, Any]]:
    """The metrics that made the run `phase`: value, condition, limit and the newest measurements."""
    if run is None:
        return []
    return [failure for failure in failed_metrics(run, mask) if failure["phase"] == phase.value]


def _notification(
    snapshot: RolloutSnapshot, kind: EventKind, title: str, *, at: float, details: Mapping[str, Any]
) -> Notification:
    state = snapshot.state
    assert state is not None
    return Notification(
        kind=kind,
        namespace=snapshot.key.namespace,
        name=snapshot.key.name,
        title=title,
        message=state.message,
        at=at,
        phase=state.phase.value,
        step=str(step_position(snapshot)),
        weight=state.desired_weight,
        stable_revision=state.stable_revision,
        canary_revision=state.canary_revision,
        details=dict(details),
    )


# --- payloads -----------------------------------------------------------------------


class Receiver(Protocol):
    """Where notifications go. `render` builds the requests for one notification (none when the
    receiver takes no part in it); `identity` tells receivers apart beyond their kind."""

    @property
    def kind(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def identity(self) -> str: ...

    def wants(self, notification: Notification) -> bool: ...

    async def render(self, notification: Notification) -> list[dict[str, Any]]: ...


_COLORS = {
    EventKind.STARTED: "#439FE0",
    EventKind.STEP_COMPLETED: "#439FE0",
    EventKind.PAUSED: "warning",
    EventKind.PROMOTED: "good",
    EventKind.ABORTED: "danger",
    EventKind.ANALYSIS_FAILED: "danger",
    EventKind.BACK_ON_STABLE: "good",
    EventKind.PREVIEW: "#439FE0",
    EventKind.SWITCHED: "good",
    EventKind.SWITCHED_BACK: "danger",
}


class _PayloadPerNotification:
    """A receiver of every notification, each as one payload to its URL (Slack, a webhook)."""

    __slots__ = ()
    url: str

    @property
    def identity(self) -> str:
        return self.url

    def wants(self, notification: Notification) -> bool:
        return True

    async def render(self, notification: Notification) -> list[dict[str, Any]]:
        return [self.payload(notification)]

    def payload(self, notification: Notification) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class SlackReceiver(_PayloadPerNotification):
    """A Slack incoming webhook: `text` for the notification, an attachment for details."""

    url: str
    kind: str = "slack"

    def payload(self, notification: Notification) -> dict[str, Any]:
        icon = ":rotating_light:" if notification.warning else ":arrows_counterclockwise:"
        fields = [
            {"title": "Rollout", "value": f"{notification.namespace}/{notification.name}", "short": True},
            {"title": "Phase", "value": notification.phase, "short": True},
            {"title": "Step", "value": notification.step, "short": True},
            {"title": "Canary weight", "value": f"{notification.weight}%", "short": True},
        ]
        if notification.canary_revision:
            fields.append({"title": "Canary", "value": notification.canary_revision, "short": True})
        if notification.stable_revision:
            fields.append({"title": "Stable", "value": notification.stable_revision, "short": True})
        for failed in notification.details.get("failedMetrics", ()):
            fields.append(
                {"title": f"Metric {failed['metric']}", "value": _metric_line(failed), "short": False}
            )
        return {
            "text": f"{icon} {_slack_escape(notification.title)}",
            "attachments": [
                {
                    "color": _COLORS[notification.kind],
                    "fallback": _slack_escape(notification.title),
                    "text": _slack_escape(notification.message),
                    "fields": [{**f, "value": _slack_escape(str(f["value"]))} for f in fields],
                    "footer": f"meshshift {__version__} · {notification.kind.value}",
                    "ts": int(notification.at),
                }
            ],
        }


def _metric_line(failed: Mapping[str, Any]) -> str:
    """`failed (1) > failureLimit (0): value 0.71, successCondition: result[0] >= 0.95`."""
    value = failed.get("value")
    shown = f"value {value}" if value is not None else "no value"
    line = f"{failed.get('limit') or failed.get('phase')}: {shown}, {failed.get('condition')}"
    return f"{line} ({failed['error']})" if failed.get("error") else line


def _slack_escape(text: str) -> str:
    """Slack's three control characters, so a message cannot ping @channel or fake a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True, slots=True)
class WebhookReceiver(_PayloadPerNotification):
    """A generic webhook: one JSON object per notification."""

    url: str
    kind: str = "webhook"

    def payload(self, notification: Notification) -> dict[str, Any]:
        return {
            "event": notification.kind.value,
            "rollout": {"namespace": notification.namespace, "name": notification.name},
            "title": notification.title,
            "message": notification.message,
            "severity": "warning" if notification.warning else "info",
            "phase": notification.phase,
            "step": notification.step,
            "canaryWeight": notification.weight,
            "revisions": {"stable": notification.stable_revision, "canary": notification.canary_revision},
            "details": dict(notification.details),
            "timestamp": datetime.fromtimestamp(notification.at, UTC).isoformat(),
            "source": f"meshshift/{__version__}",
        }


# A routing key, or where to read it at each send (a Secret): None when it cannot be had.
RoutingKeySource = Callable[[], Awaitable[str | None]]
PAGERDUTY_SUMMARY_LIMIT = 1024  # characters; the Events API refuses longer summaries


class RoutingKeyError(RuntimeError):
    """The routing key cannot be read (its Secret is missing or has no `routing-key`)."""


@dataclass(frozen=True, slots=True)
class PagerDutyReceiver:
    """PagerDuty's Events API v2: a trigger per trouble, resolves once the rollout is healthy.

    `routing_key` is the key itself (from the daemon's settings) or an async function reading
    it (a Deployment's Secret); `source` names where it comes from, never the key.
    """

    routing_key: str | RoutingKeySource = field(repr=False)
    source: str  # "settings", or "secret default/pd": tells receivers apart, safe to log
    url: str = PAGERDUTY_EVENTS_URL
    kind: str = "pagerduty"

    @property
    def identity(self) -> str:
        if isinstance(self.routing_key, str):  # two daemon-wide keys are two receivers
            return f"{self.url} key:{hashlib.sha256(self.routing_key.encode()).hexdigest()[:12]}"
        return f"{self.url} {self.source}"

    def wants(self, notification: Notification) -> bool:
        if notification.kind in TROUBLE:
            return notification.canary_revision is not None
        return notification.kind in HEALTHY_AGAIN and bool(notification.details.get("resolves"))

    async def render(self, notification: Notification) -> list[dict[str, Any]]:
        if not self.wants(notification):
            return []
        key = self.routing_key if isinstance(self.routing_key, str) else await self.routing_key()
        if not key:
            raise RoutingKeyError(f"no PagerDuty routing key ({self.source})")
        if notification.kind in TROUBLE:
            return [pagerduty_trigger(notification, key)]
        return [
            {"routing_key": key, "event_action": "resolve", "dedup_key": dedup_key(notification, revision)}
            for revision in notification.details.get("resolves", ())
        ]


def dedup_key(notification: Notification, revision: str) -> str:
    """One incident per rollout and revision: `meshshift/<namespace>/<name>/<revision>`."""
    return f"meshshift/{notification.namespace}/{notification.name}/{revision}"


def pagerduty_trigger(notification: Notification, routing_key: str) -> dict[str, Any]:
    revision = notification.canary_revision or ""
    failed = list(notification.details.get("failedMetrics", ()))
    what = "aborted" if notification.kind == EventKind.ABORTED else "failed its analysis"
    summary = f"meshshift: rollout {notification.namespace}/{notification.name} revision {revision} {what}"
    if failed:
        summary += ": " + "; ".join(str(f["summary"]) for f in failed)
    elif notification.details.get("reason"):
        summary += f" ({notification.details['reason']})"
    if len(summary) > PAGERDUTY_SUMMARY_LIMIT:
        summary = summary[: PAGERDUTY_SUMMARY_LIMIT - 3] + "..."
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(notification, revision),
        "client": "meshshift",
        "payload": {
            "summary": summary,
            "source": f"meshshift/{notification.namespace}/{notification.name}",
            "severity": "error",
            "timestamp": datetime.fromtimestamp(notification.at, UTC).isoformat(),
            "component": notification.name,
            "group": notification.namespace,
            "class": notification_reason(notification),
            "custom_details": {
                "rollout": f"{notification.namespace}/{notification.name}",
                "revision": revision,
                "stableRevision": notification.stable_revision,
                "phase": notification.phase,
                "step": notification.step,
                "canaryWeight": notification.weight,
                "message": notification.message,
                "reason": notification.details.get("reason", ""),
                "analysisRun": notification.details.get("analysisRun"),
                "failedMetrics": failed,
            },
        },
    }


def receivers_from_settings(settings: NotificationSettings) -> tuple[Receiver, ...]:
    receivers: list[Receiver] = []
    if settings.slack_webhook_url:
        receivers.append(SlackReceiver(_checked_url(settings.slack_webhook_url, "--slack-webhook-url")))
    if settings.webhook_url:
        receivers.append(WebhookReceiver(_checked_url(settings.webhook_url, "--webhook-url")))
    if settings.pagerduty_routing_key:
        url = _checked_url(settings.pagerduty_events_url, "MESHSHIFT_PAGERDUTY_EVENTS_URL")
        receivers.append(
            PagerDutyReceiver(settings.pagerduty_routing_key.strip(), source="settings", url=url)
        )
    return tuple(receivers)


# Reads the routing key of a Secret named in an annotation: (secret name) -> where to read it.
SecretKeySource = Callable[[str], RoutingKeySource]


def receivers_from_annotations(
    annotations: Mapping[str, str],
    *,
    pagerduty_key: SecretKeySource | None = None,
    pagerduty_events_url: str = PAGERDUTY_EVENTS_URL,
    namespace: str = "",
) -> tuple[Receiver, ...]:
    """The receivers a Deployment asks for; ValueError naming the annotation when one is bad.

    `pagerduty_key(secret name)` gives the reader of a Secret's routing key (in `namespace`)."""
    receivers: list[Receiver] = []
    if slack := annotations.get(SLACK_ANNOTATION):
        receivers.append(SlackReceiver(_checked_url(slack, f"metadata.annotations[{SLACK_ANNOTATION!r}]")))
    if webhook := annotations.get(WEBHOOK_ANNOTATION):
        receivers.append(
            WebhookReceiver(_checked_url(webhook, f"metadata.annotations[{WEBHOOK_ANNOTATION!r}]"))
        )
    if secret := annotations.get(PAGERDUTY_ANNOTATION):
        where = f"metadata.annotations[{PAGERDUTY_ANNOTATION!r}]"
        if pagerduty_key is None:
            raise ValueError(f"{where}: PagerDuty Secrets are read in Kubernetes mode only")
        name = secret.strip()
        receivers.append(
            PagerDutyReceiver(
                pagerduty_key(name), source=f"secret {namespace}/{name}", url=pagerduty_events_url
            )
        )
    return tuple(receivers)


def _checked_url(url: str, where: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{where}: {url!r} is not an http(s) URL")
    return url.strip()


# --- sending --------------------------------------------------------------------------


class _Delivery:
    """One receiver's queue and the task that drains it."""

    def __init__(self, receiver: Receiver, notifier: Notifier) -> None:
        self.receiver = receiver
        self.notifier = notifier
        self.queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=notifier.queue_size)
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0

    def put(self, notification: Notification) -> None:
        if self.queue.full():
            self.queue.get_nowait()  # the oldest goes: newer news matters more
            self.queue.task_done()
            self.dropped += 1
            log.warning("notification queue full; dropped the oldest", receiver=self.receiver.kind)
        self.queue.put_nowait(notification)
        if self.notifier.session is not None:
            self.ensure_running()

    def ensure_running(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self._drain(), name=f"notify:{self.receiver.kind}"
            )

    async def _drain(self) -> None:
        while True:
            notification = await self.queue.get()
            try:
                await self.notifier.send(self.receiver, notification)
            finally:
                self.queue.task_done()


class Notifier:
    """Turns registry snapshots into notifications and sends them without blocking anyone."""

    def __init__(
        self,
        receivers: Sequence[Receiver] = (),
        *,
        timeout: float = 5.0,
        retries: int = 3,
        queue_size: int = QUEUE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.receivers = tuple(receivers)
        self.timeout = timeout
        self.retries = retries
        self.queue_size = queue_size
        self.clock = clock
        self.session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0
        self.listeners: list[SendListener] = []
        self._per_rollout: dict[RolloutKey, tuple[Receiver, ...]] = {}
        self._deliveries: dict[tuple[str, str], _Delivery] = {}
        self._last: dict[RolloutKey, RolloutState | None] = {}
        # The revisions of each rollout that a trouble notification announced (or that a
        # restarted daemon finds in trouble): the next healthy notification resolves them.
        self._troubled: dict[RolloutKey, set[str]] = {}
        self._first_seen: dict[RolloutKey, float] = {}
        self._registries: list[RolloutRegistry] = []

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> Notifier:
        return cls(receivers_from_settings(settings), timeout=settings.timeout, retries=settings.retries)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": f"meshshift/{__version__}"},
            )
        for delivery in self._deliveries.values():
            delivery.ensure_running()  # what was queued before we started

    async def close(self, drain_for: float = 2.0) -> None:
        """Give queued notifications `drain_for` seconds, then stop."""
        pending = [d for d in self._deliveries.values() if d.task is not None]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(d.queue.join() for d in pending)), drain_for)
        for delivery in pending:
            assert delivery.task is not None
            delivery.task.cancel()
        await asyncio.gather(*(d.task for d in pending if d.task), return_exceptions=True)
        self._deliveries.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None

    def attach(self, registry: RolloutRegistry) -> None:
        if registry not in self._registries:
            registry.listeners.append(self.observe)
            self._registries.append(registry)

    def detach(self, registry: RolloutRegistry) -> None:
        if registry in self._registries:
            self._registries.remove(registry)
            with contextlib.suppress(ValueError):
                registry.listeners.remove(self.observe)

    def set_receivers(self, key: RolloutKey, receivers: Sequence[Receiver]) -> None:
        """Receivers for one rollout, on top of the daemon's (from its annotations)."""
        if receivers:
            self._per_rollout[key] = tuple(receivers)
        else:
            self._per_rollout.pop(key, None)

    def receivers_for(self, key: RolloutKey) -> Iterator[Receiver]:
        seen: set[tuple[str, str]] = set()
        for receiver in (*self.receivers, *self._per_rollout.get(key, ())):
            if (receiver.kind, receiver.identity) not in seen:
                seen.add((receiver.kind, receiver.identity))
                yield receiver

    # --- the registry listener (synchronous: it must never wait) ------------------------

    def observe(self, key: RolloutKey, snapshot: RolloutSnapshot | None) -> None:
        try:
            self._observe(key, snapshot)
        except Exception:  # a bug here must never reach the controller that published
            log.exception("cannot work out notifications", rollout=str(key))

    def _observe(self, key: RolloutKey, snapshot: RolloutSnapshot | None) -> None:
        if snapshot is None:
            self._last.pop(key, None)
            self._first_seen.pop(key, None)
            self._per_rollout.pop(key, None)
            self._troubled.pop(key, None)
            return
        first_seen = self._first_seen.setdefault(key, snapshot.updated_at)
        current = snapshot.state
        if current is None:
            self._last.setdefault(key, None)
            return
        previous = self._last.get(key)
        self._last[key] = current
        if previous is None:
            if troubled := troubled_revisions(current):
                self._troubled.setdefault(key, set()).update(troubled)  # incidents may be open
            started = current.rollout_started_at
            if started is None or started < first_seen or not current.in_rollout:
                return  # what we find at start-up happened before us
            previous = RolloutState(stable_revision=current.stable_revision)
        if previous == current:
            return
        for notification in notifications_between(previous, snapshot, at=self.clock()):
            self.notify(key, self._with_resolves(key, notification))

    def _with_resolves(self, key: RolloutKey, notification: Notification) -> Notification:
        """Remember the revisions in trouble; a healthy notification carries those it resolves."""
        if notification.kind in TROUBLE and notification.canary_revision is not None:
            self._troubled.setdefault(key, set()).add(notification.canary_revision)
        elif notification.kind in HEALTHY_AGAIN and (troubled := self._troubled.pop(key, None)):
            details = {**notification.details, "resolves": sorted(troubled)}
            return dataclasses.replace(notification, details=details)
        return notification

    def notify(self, key: RolloutKey, notification: Notification) -> None:
        receivers = [r for r in self.receivers_for(key) if r.wants(notification)]
        if not receivers:
            return  # nobody to tell: no log line either
        log.info(
            "rollout notification",
            rollout=str(key),
            kind=notification.kind.value,
            receivers=[r.kind for r in receivers],
        )
        for receiver in receivers:
            delivery = self._deliveries.get((receiver.kind, receiver.identity))
            if delivery is None:
                delivery = self._deliveries[(receiver.kind, receiver.identity)] = _Delivery(receiver, self)
            delivery.put(notification)

    async def send(self, receiver: Receiver, notification: Notification) -> bool:
        """POST one notification, retrying network errors, 429 and 5xx with backoff."""
        started = time.perf_counter()
        delivered = await self._send(receiver, notification)
        for listener in list(self.listeners):
            try:
                listener(notification, receiver, delivered, time.perf_counter() - started)
            except Exception:  # metrics must never stop the deliveries
                log.exception("notification listener failed")
        return delivered

    async def _send(self, receiver: Receiver, notification: Notification) -> bool:
        session = self.session
        if session is None:
            return False
        try:
            bodies = await asyncio.wait_for(receiver.render(notification), self.timeout)
        except Exception as error:  # a Secret that cannot be read, say: this one is not sent
            return self._not_delivered(receiver, notification, f"{type(error).__name__}: {error}")
        for body in bodies:
            problem = await self._post(session, receiver.url, body)
            if problem is not None:
                return self._not_delivered(receiver, notification, problem)
        self.sent += 1
        return True

    async def _post(self, session: aiohttp.ClientSession, url: str, body: Mapping[str, Any]) -> str | None:
        """POST one body, retrying network errors, 429 and 5xx with backoff; None once delivered."""
        delay = FIRST_RETRY_DELAY
        problem = ""
        for attempt in range(1 + max(0, self.retries)):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(MAX_RETRY_DELAY, delay * 2)
            try:
                async with session.post(url, json=body) as response:
                    if response.status < 300:
                        return None
                    problem = f"HTTP {response.status}"
                    if response.status != 429 and response.status < 500:
                        break  # the receiver refuses this payload; retrying will not help
            except (aiohttp.ClientError, TimeoutError) as error:
                problem = f"{type(error).__name__}: {error}"
        return problem

    def _not_delivered(self, receiver: Receiver, notification: Notification, problem: str) -> bool:
        self.failed += 1
        log.warning(
            "notification not delivered",
            receiver=receiver.kind,
            host=urlsplit(receiver.url).netloc,  # never log the path: webhook URLs hold secrets
            kind=notification.kind.value,
            rollout=f"{notification.namespace}/{notification.name}",
            problem=problem,
        )
        return False

"""The HTTP API: JSON views of the rollouts, a change stream, and the control endpoints.

GET  /api/v1/info                                    version, leadership, whether control is on
GET  /api/v1/rollouts[?watch=true]                   every rollout (summary); watch: Server-Sent Events
GET  /api/v1/rollouts/{namespace}/{name}[?watch=true] one rollout, in full
POST /api/v1/rollouts/{namespace}/{name}/{promote|promote-full|abort|retry|undo|pause}

Control needs `Authorization: Bearer <token>`: none gives 401, a wrong one 403, and a
daemon started without a token answers 403 to every control request. The answer waits
(briefly) for what the engine did with the command: 200 applied, 409 refused (with the
engine's reason), 202 still queued.

`undo` asks for the stable revision everywhere: a daemon cannot edit standalone
workloads, so over this API it aborts the rollout in progress (traffic back on the
stable); in Kubernetes the CLI rewrites the Deployment instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from meshshift import __version__, codec
from meshshift.analysis.run import AnalysisRun, MetricResult
from meshshift.engine.machine import CommandKind, CommandOutcome
from meshshift.engine.state import AnalysisRunRecord, RolloutPhase, RolloutState, Stage
from meshshift.observe.status import (
    SecretMask,
    active_revision,
    actual_weight,
    applied_weight,
    argo_phase,
    blue_green_phases,
    current_step_index,
    describe_step,
    judge_view,
    metric_failure,
    numeric_value,
    on_newest_revision,
    preview_revision,
    provider_type,
    revision_roles,
    revision_weight,
    rollout_phase,
    set_weight,
    step_kind,
    step_position,
    strategy,
    traffic_router,
)
from meshshift.runtime.controller import RolloutKey, RolloutSnapshot
from meshshift.runtime.registry import RolloutRegistry, UnknownRolloutError
from meshshift.spec.model import AnalysisPhase, Metric, Step

log = structlog.get_logger(__name__)

ACTIONS = ("promote", "promote-full", "abort", "retry", "undo", "pause")
STREAM_HEARTBEAT = 15.0  # seconds between keep-alive comments on an idle stream
STREAM_COALESCE = 0.1  # bursts of snapshots inside this window become one event


# --- views ------------------------------------------------------------------------


def rfc3339(seconds: float) -> str:
    """`2026-12-02T09:14:15.123Z`: a timestamp as Kubernetes and Argo write them (UTC)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rollout_summary(snapshot: RolloutSnapshot) -> dict[str, Any]:
    """One line of the rollout list."""
    state = snapshot.state
    position = step_position(snapshot)
    return {
        "namespace": snapshot.key.namespace,
        "name": snapshot.key.name,
        "phase": rollout_phase(snapshot),
        "argoPhase": argo_phase(snapshot).value,
        "message": _message(snapshot),
        "strategy": strategy(snapshot),
        "step": {"current": position.current, "total": position.total, "label": str(position)},
        "weights": _weights(snapshot),
        "revisions": {
            "stable": state.stable_revision if state else None,
            "canary": state.canary_revision if state else None,
        },
        "replicas": dict(snapshot.workloads.replicas) if snapshot.workloads else {},
        "updatedAt": rfc3339(snapshot.updated_at),
    }


def rollout_view(snapshot: RolloutSnapshot) -> dict[str, Any]:
    """Everything the dashboard and `meshshift get` show of one rollout."""
    state = snapshot.state
    view = rollout_summary(snapshot)
    view.update(
        {
            "stage": state.stage.value if state else None,
            "pauseReason": state.pause_reason.value if state and state.pause_reason else None,
            "pauseUntil": state.pause_until if state else None,
            "abortReason": state.abort_reason if state else None,
            "specError": snapshot.spec_error,
            "lastError": snapshot.last_error,
            "storeError": snapshot.store_error,
            "strategy": strategy(snapshot),
            "blueGreen": _blue_green(snapshot),
            "trafficRouter": traffic_router(snapshot),
            "routers": list(snapshot.routers),
            "steps": _steps(snapshot),
            "headerRoutes": codec.encode(state.header_routes) if state else [],
            "mirrorRoutes": codec.encode(state.mirror_routes) if state else [],
            "images": {k: list(v) for k, v in snapshot.workloads.images.items()}
            if snapshot.workloads
            else {},
            "replicas": dict(snapshot.workloads.replicas) if snapshot.workloads else {},
            # The revision the workload asks for now (a pod-template hash, an endpoint set): one the
            # state does not hold yet is a change the daemon has not acted on.
            "workloadRevision": snapshot.workloads.revision if snapshot.workloads else None,
            # Standalone: each role's endpoints and its optional `version` label.
            "endpoints": {k: list(v) for k, v in snapshot.workloads.endpoints.items()}
            if snapshot.workloads
            else {},
            "versions": dict(snapshot.workloads.versions) if snapshot.workloads else {},
            "analysisRuns": _analysis_runs(snapshot),
            "history": codec.encode(state.history) if state else [],
            "rolloutStartedAt": state.rollout_started_at if state else None,
            "stepStartedAt": state.step_started_at if state else None,
            "reconcileSeconds": snapshot.reconcile_seconds,
        }
    )
    view["step"]["index"] = current_step_index(snapshot)
    return view


def _blue_green(snapshot: RolloutSnapshot) -> dict[str, Any] | None:
    """The blue-green strategy's facts: which revision is active and which is on the preview."""
    spec, state = snapshot.spec, snapshot.state
    if spec is None or spec.blue_green is None:
        return None
    blue_green = spec.blue_green
    scale_down_at = state.scale_down_at if state else None
    if state is not None and state.switched_at is not None and state.stage == Stage.POST_PROMOTION:
        scale_down_at = state.switched_at + blue_green.scale_down_delay  # the earliest the old one goes
    return {
        "activeRevision": active_revision(state) if state else None,
        "previewRevision": preview_revision(state) if state else None,
        "roles": {
            revision: revision_roles(state, revision)
            for revision in (state.stable_revision, state.canary_revision)
            if revision is not None
        }
        if state
        else {},
        "activeService": blue_green.active_service,
        "previewService": blue_green.preview_service,
        "previewReplicaCount": blue_green.preview_replica_count,
        "autoPromotionEnabled": blue_green.auto_promotion_enabled,
        "autoPromotionSeconds": blue_green.auto_promotion_seconds,
        "scaleDownDelaySeconds": blue_green.scale_down_delay,
        "previewReadyAt": state.preview_ready_at if state else None,
        "switchedAt": state.switched_at if state else None,
        "scaleDownAt": scale_down_at,
        "previewApplied": {name: a.preview for name, a in sorted(snapshot.applied.items()) if a.preview},
        "phases": [
            {"name": p.name, "description": p.description, "status": p.status, "run": p.run}
            for p in blue_green_phases(snapshot)
        ],
    }


def _message(snapshot: RolloutSnapshot) -> str:
    if snapshot.spec_error:
        return snapshot.spec_error
    if snapshot.store_error:
        return snapshot.store_error
    if snapshot.last_error:
        return snapshot.last_error
    return snapshot.state.message if snapshot.state else ""


def _weights(snapshot: RolloutSnapshot) -> dict[str, Any]:
    """Argo's SetWeight and ActualWeight count the newest revision's share (100 once promoted);
    `canary` and `stable` are the two destinations' shares, `desired` and `applied` the canary
    weight the engine asks for and each data plane reports."""
    canary = actual_weight(snapshot)
    return {
        "desired": snapshot.state.desired_weight if snapshot.state else 0,
        "applied": {name: a.canary_weight for name, a in sorted(snapshot.applied.items())},
        "actual": revision_weight(snapshot),
        "appliedAgree": applied_weight(snapshot) is not None,
        "setWeight": set_weight(snapshot),
        "canary": canary,
        "stable": 100 - canary,
        "promoted": bool(snapshot.state and on_newest_revision(snapshot.state)),
    }


def _steps(snapshot: RolloutSnapshot) -> list[dict[str, Any]]:
    if snapshot.spec is None:
        return []
    state = snapshot.state
    return [
        {
            "index": index,
            "kind": step_kind(step),
            "description": describe_step(step),
            "spec": codec.encode(step, Step),
            "status": _step_status(state, index, snapshot.spec.step_count),
        }
        for index, step in enumerate(snapshot.spec.steps)
    ]


def _step_status(state: RolloutState | None, index: int, total: int) -> str:
    """completed, current, pending, or failed (where an abort stopped the rollout)."""
    if state is None or state.stage == Stage.INITIALIZING:
        return "pending"
    if state.phase == RolloutPhase.DEGRADED:
        if index < state.step_index:
            return "completed"
        return "failed" if index == state.step_index else "pending"
    if state.in_rollout:
        if index < state.step_index:
            return "completed"
        return "current" if index == state.step_index and state.stage == Stage.STEPPING else "pending"
    promoted = bool(state.history) and state.history[-1].outcome == "Promoted"
    return "completed" if promoted else "pending"


def _analysis_runs(snapshot: RolloutSnapshot) -> list[dict[str, Any]]:
    records: Mapping[str, AnalysisRunRecord] = (
        {r.name: r for r in snapshot.state.analysis_runs} if snapshot.state else {}
    )
    names = list(records) + [name for name in snapshot.analysis_runs if name not in records]
    return [_analysis_run(name, records.get(name), snapshot.analysis_runs.get(name)) for name in names]


def _analysis_run(name: str, record: AnalysisRunRecord | None, run: AnalysisRun | None) -> dict[str, Any]:
    phase = run.phase if run is not None else record.phase if record is not None else None
    redact = SecretMask.for_run(record, run)
    return {
        "name": name,
        "kind": record.kind.value if record else None,
        "stepIndex": record.step_index if record else None,
        "templates": [t.template_name for t in record.analysis.templates] if record else [],
        "phase": phase.value if phase else None,
        "message": redact.text(run.message) if run else "",
        "startedAt": run.started_at if run else record.started_at if record else None,
        "superseded": record.superseded if record else False,
        "terminated": run.terminated if run else False,
        "args": redact.args(run.args) if run else {},
        "metrics": [_metric(m, r, redact) for m, r in _pairs(run)] if run else [],
    }


def _pairs(run: AnalysisRun) -> list[tuple[Metric, MetricResult]]:
    results = {r.name: r for r in run.results}
    return [(m, results[m.name]) for m in run.metrics if m.name in results]


def _metric(metric: Metric, result: MetricResult, redact: SecretMask) -> dict[str, Any]:
    last_query = redact.text(next((m.query for m in reversed(result.measurements) if m.query), None))
    return {
        "name": metric.name,
        "type": provider_type(metric),
        "phase": result.phase.value,
        "message": redact.text(result.message),
        "dryRun": result.dry_run,
        "successCondition": metric.success_condition,
        "failureCondition": metric.failure_condition,
        "interval": metric.interval,
        "count": metric.count,
        "failureLimit": metric.failure_limit,
        "counts": codec.encode(result.counts),
        # Why it stopped or paused the rollout: its value, the condition, the limit crossed.
        "why": metric_failure(metric, result, redact)["summary"] if result.phase in _EXPLAINED else None,
        "query": last_query,  # the resolved query, as last sent to the provider
        # The sequential judge's last word (verdict, counts and rates, evidence against alpha).
        "judge": next(
            (judge_view(m.value) for m in reversed(result.measurements) if judge_view(m.value)), None
        ),
        "measurements": [
            {
                "phase": m.phase.value,
                "startedAt": m.started_at,
                "finishedAt": m.finished_at,
                "value": codec.encode(m.value) if _encodable(m.value) else repr(m.value),
                "number": _finite(numeric_value(m.value)),
                "message": redact.text(m.message),
                "query": redact.text(m.query),
            }
            for m in result.measurements
        ],
    }


_EXPLAINED = (AnalysisPhase.FAILED, AnalysisPhase.ERROR, AnalysisPhase.INCONCLUSIVE)


def _encodable(value: object) -> bool:
    try:
        codec.encode(value)
    except TypeError:
        return False
    return True


def _finite(value: float | None) -> float | None:
    return value if value is not None and value == value and abs(value) != float("inf") else None


# --- handlers -----------------------------------------------------------------------

REGISTRY_KEY = web.AppKey("api_registry", RolloutRegistry)
TOKEN_KEY = web.AppKey("api_token", str)  # "" disables control
COMMAND_TIMEOUT_KEY = web.AppKey("api_command_timeout", float)
CLOSING_KEY = web.AppKey("api_closing", asyncio.Event)


def add_routes(
    app: web.Application, registry: RolloutRegistry, *, token: str | None, command_timeout: float = 10.0
) -> None:
    app[REGISTRY_KEY] = registry
    app[TOKEN_KEY] = token or ""
    app[COMMAND_TIMEOUT_KEY] = command_timeout
    app[CLOSING_KEY] = asyncio.Event()
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/api/v1/info", info)
    app.router.add_get("/api/v1/rollouts", list_rollouts)
    app.router.add_get("/api/v1/rollouts/{namespace}/{name}", get_rollout)
    app.router.add_post("/api/v1/rollouts/{namespace}/{name}/{action}", control)


async def _close_streams(app: web.Application) -> None:
    app[CLOSING_KEY].set()


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, allow_nan=False, separators=(",", ":"))


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status=status, headers=headers)


async def info(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    return _json(
        {
            "version": __version__,
            "controlEnabled": bool(request.app[TOKEN_KEY]),
            "leader": registry.is_leader,
            "ready": registry.ready,
        }
    )


def _wants_watch(request: web.Request) -> bool:
    return request.query.get("watch", "").lower() in ("1", "true", "yes")


async def list_rollouts(request: web.Request) -> web.StreamResponse:
    registry = request.app[REGISTRY_KEY]

    def view() -> dict[str, Any]:
        return {"rollouts": [rollout_summary(s) for s in registry.list()]}

    if _wants_watch(request):
        return await _stream(request, view, lambda key: True)
    return _json(view())


async def get_rollout(request: web.Request) -> web.StreamResponse:
    registry = request.app[REGISTRY_KEY]
    key = RolloutKey(request.match_info["namespace"], request.match_info["name"])

    def view() -> dict[str, Any] | None:
        snapshot = registry.snapshots.get(key)
        return rollout_view(snapshot) if snapshot is not None else None

    first = view()
    if first is None:
        return _error(404, f"rollout {key} not found")
    if _wants_watch(request):
        return await _stream(request, view, lambda changed: changed == key)
    return _json(first)


async def _stream(
    request: web.Request, view: Callable[[], Any], matches: Callable[[RolloutKey], bool]
) -> web.StreamResponse:
    """Server-Sent Events: the view now, then again whenever it changes."""
    registry = request.app[REGISTRY_KEY]
    closing = request.app[CLOSING_KEY]
    changed = asyncio.Event()

    def listener(key: RolloutKey, _snapshot: RolloutSnapshot | None) -> None:
        if matches(key):
            changed.set()

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    registry.listeners.append(listener)
    try:
        last = ""
        while not closing.is_set():
            data = view()
            if data is None:
                await response.write(b"event: deleted\ndata: {}\n\n")
                break
            body = _dumps(data)
            if body != last:
                await response.write(f"data: {body}\n\n".encode())
                last = body
            if not await _wait_for_change(changed, closing):
                await response.write(b": keep-alive\n\n")
                continue
            changed.clear()
            await asyncio.sleep(STREAM_COALESCE)
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    finally:
        registry.listeners.remove(listener)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def _wait_for_change(changed: asyncio.Event, closing: asyncio.Event) -> bool:
    """True when something changed (or we are closing); False after an idle heartbeat period."""
    waiters = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(closing.wait())]
    try:
        done, _ = await asyncio.wait(waiters, timeout=STREAM_HEARTBEAT, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)


def _authorize(request: web.Request) -> web.Response | None:
    """None when the request carries the right bearer token; the refusal otherwise."""
    token = request.app[TOKEN_KEY]
    if not token:
        return _error(403, "control endpoints are disabled: start meshshift with --token or MESHSHIFT_TOKEN")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(
            401, "missing bearer token (Authorization: Bearer <token>)", {"WWW-Authenticate": "Bearer"}
        )
    if not _token_matches(given, token):
        return _error(403, "wrong token")
    return None


def _token_matches(given: str, token: str) -> bool:
    """A constant-time compare; a header that is not UTF-8 text is simply a wrong token."""
    # aiohttp hands undecodable header bytes over as surrogate escapes: encode them back.
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())


def has_valid_token(request: web.Request, token: str | None) -> bool:
    """True when the request carries the daemon's bearer token (there must be one)."""
    if not token:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(given.strip()) and _token_matches(given, token)


async def control(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in ACTIONS:
        return _error(404, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    refusal = _authorize(request)
    if refusal is not None:
        log.warning("control request refused", action=action, status=refusal.status, peer=request.remote)
        return refusal
    registry = request.app[REGISTRY_KEY]
    key = RolloutKey(request.match_info["namespace"], request.match_info["name"])
    if not registry.is_leader:
        return _error(503, "this daemon is on standby; send commands to the leader")
    snapshot = registry.snapshots.get(key)
    if snapshot is None or key not in registry.controllers:
        return _error(404, f"rollout {key} not found")
    undo = registry.undo_handlers.get(key) if action == "undo" else None
    if undo is not None:
        log.info("control request", rollout=str(key), action=action, peer=request.remote)
        applied, message = await undo()
        body = {"rollout": str(key), "command": action, "applied": applied, "message": message}
        return _json(body, 200 if applied else 409)
    kind = _command_for(action, snapshot)
    if not isinstance(kind, CommandKind):
        return _json({"rollout": str(key), "command": action, "applied": False, "message": kind}, 409)
    log.info("control request", rollout=str(key), action=action, peer=request.remote)
    try:
        outcome = await asyncio.wait_for(registry.command(key, kind), request.app[COMMAND_TIMEOUT_KEY])
    except TimeoutError:
        message = "queued; the rollout has not acted on it yet"
        return _json({"rollout": str(key), "command": action, "applied": None, "message": message}, 202)
    except UnknownRolloutError:
        return _error(404, f"rollout {key} not found")
    return _outcome(key, action, outcome)


def _command_for(action: str, snapshot: RolloutSnapshot) -> CommandKind | str:
    """The engine command for an action, or why there is nothing to do."""
    if action != "undo":
        return CommandKind(action)
    state = snapshot.state
    if state is not None and state.in_rollout and state.phase != RolloutPhase.DEGRADED:
        return CommandKind.ABORT
    return (
        "nothing to undo over this API: the stable already serves all traffic "
        "(a daemon cannot change a standalone workload's revision; edit its config)"
    )


def _outcome(key: RolloutKey, action: str, outcome: CommandOutcome) -> web.Response:
    message = outcome.message
    if action == "undo" and outcome.applied:
        message = f"undone: {message}"
    body = {"rollout": str(key), "command": action, "applied": outcome.applied, "message": message}
    return _json(body, 200 if outcome.applied else 409)

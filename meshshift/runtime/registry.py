"""The rollouts this daemon runs, as the HTTP API, the metrics and the dashboard see them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import structlog

from meshshift.engine.machine import Command, CommandKind, CommandOutcome
from meshshift.ports import WorkloadStatus
from meshshift.runtime.controller import RolloutController, RolloutKey, RolloutSnapshot

Listener = Callable[[RolloutKey, RolloutSnapshot | None], None]

log = structlog.get_logger(__name__)


class UnknownRolloutError(KeyError):
    pass


class RolloutRegistry:
    def __init__(self) -> None:
        self.controllers: dict[RolloutKey, RolloutController] = {}
        self.snapshots: dict[RolloutKey, RolloutSnapshot] = {}
        self.listeners: list[Listener] = []
        self.is_leader = True  # Kubernetes mode flips it with the lease
        self.ready = False  # set once the first listing has been seen
        # Each says why the daemon is not ready now (a watch gone silent), or None.
        self.health_checks: list[Callable[[], str | None]] = []
        # `undo` where the daemon itself can put the previous revision back (standalone endpoints):
        # (applied, message). Elsewhere undo is the CLI's (Kubernetes) or an abort mid-rollout.
        self.undo_handlers: dict[RolloutKey, Callable[[], Awaitable[tuple[bool, str]]]] = {}

    def not_ready_reason(self) -> str | None:
        """Why /readyz must fail, or None when it may pass."""
        if not self.ready:
            return "not ready"
        for key, snapshot in sorted(self.snapshots.items()):
            if snapshot.store_error is not None:  # it holds until its state can be saved
                return f"rollout {key}: {snapshot.store_error}"
        for check in self.health_checks:
            reason = check()
            if reason is not None:
                return reason
        return None

    def add(self, controller: RolloutController) -> None:
        self.controllers[controller.key] = controller
        controller.on_snapshot = self.publish
        self.publish(controller.snapshot())

    def show_invalid(
        self,
        key: RolloutKey,
        error: str,
        *,
        routers: Sequence[str] = (),
        workloads: WorkloadStatus | None = None,
    ) -> None:
        """A rollout whose spec is invalid and that has no controller: shown as InvalidSpec
        (API, `rollout_info{phase="InvalidSpec"}`) until it is fixed, started or removed."""
        if key in self.controllers:
            return  # a running controller shows its own spec error
        self.publish(
            RolloutSnapshot(
                key=key,
                spec=None,
                spec_error=error,
                state=None,
                analysis_runs={},
                workloads=workloads,
                applied={},
                routers=tuple(routers),
                updated_at=time.time(),
            )
        )

    def remove(self, key: RolloutKey) -> None:
        """Forget a rollout; its metric series go with it."""
        self.controllers.pop(key, None)
        if self.snapshots.pop(key, None) is not None:
            self._notify(key, None)

    def publish(self, snapshot: RolloutSnapshot) -> None:
        self.snapshots[snapshot.key] = snapshot
        self._notify(snapshot.key, snapshot)

    def _notify(self, key: RolloutKey, snapshot: RolloutSnapshot | None) -> None:
        for listener in list(self.listeners):
            try:
                listener(key, snapshot)
            except Exception:  # metrics, notifications, streams must never stop a rollout
                log.exception("registry listener failed", rollout=str(key))

    def list(self) -> list[RolloutSnapshot]:
        return [self.snapshots[key] for key in sorted(self.snapshots)]

    def get(self, key: RolloutKey) -> RolloutSnapshot:
        try:
            return self.snapshots[key]
        except KeyError:
            raise UnknownRolloutError(str(key)) from None

    async def command(self, key: RolloutKey, kind: CommandKind) -> CommandOutcome:
        """Hand a command to a rollout and wait for what the engine did with it.

        Callers bound the wait with `asyncio.timeout`; the command stays queued if they stop waiting.
        """
        controller = self.controllers.get(key)
        if controller is None:
            raise UnknownRolloutError(str(key))
        future = controller.submit(Command(kind, f"api-{uuid.uuid4().hex[:12]}"))
        return await asyncio.shield(future)

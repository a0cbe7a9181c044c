"""What the Kubernetes routers that stage their edits share.

Such a router (Istio's, Gateway API's, Traefik's, NGINX's) records each call of the Router
port as an edit and writes them together, in one read-modify-write per object, when the
controller reads back or before a workload change. Replacing the managed routes is then
one write: the old routes go and the new ones come in the same update, with no moment
without them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from meshshift.engine.state import HeaderRoute, MirrorRoute
from meshshift.ports import AppliedRoutes
from meshshift.routers.kube_objects import HEADER, MIRROR, header_entry, put_last
from meshshift.spec.model import HeaderMatch, MirrorMatch

StagedT = TypeVar("StagedT")


class StagedRouter(ABC, Generic[StagedT]):
    """Each call is staged as an edit of a StagedT (the object's edit class, or a model of what
    meshshift asked for), and `staged_edits()` hands them, in order, to the write."""

    def __init__(self) -> None:
        self._staged: list[Callable[[StagedT], None]] = []

    def stage(self, edit: Callable[[StagedT], None]) -> None:
        self._staged.append(edit)

    def staged_edits(self) -> list[Callable[[StagedT], None]]:
        """The edits staged since the last write, in order; staged again from none."""
        edits, self._staged = self._staged, []
        return edits

    @abstractmethod
    async def set_header_route(self, name: str, match: Sequence[HeaderMatch]) -> None: ...

    @abstractmethod
    async def set_mirror_route(
        self, name: str, match: Sequence[MirrorMatch], percentage: int | None
    ) -> None: ...

    @abstractmethod
    async def remove_managed_routes(self) -> None: ...

    async def set_managed_routes(
        self, header_routes: Sequence[HeaderRoute], mirror_routes: Sequence[MirrorRoute]
    ) -> None:
        await self.remove_managed_routes()  # staged: written together with what follows
        for header in header_routes:
            await self.set_header_route(header.name, header.match)
        for mirror in mirror_routes:
            await self.set_mirror_route(mirror.name, mirror.match, mirror.percentage)


class RouteEdit(Protocol):
    """Pure edits of one routing object (no I/O), one per call of the Router port."""

    def set_weight(self, weight: int, /) -> None: ...

    def set_header_route(self, step: str, match: Sequence[HeaderMatch], /) -> None: ...

    def remove_header_route(self, step: str, /) -> None: ...

    def set_mirror_route(
        self, step: str, match: Sequence[MirrorMatch], percentage: int | None, /
    ) -> None: ...

    def remove_mirror_route(self, step: str, /) -> None: ...

    def remove_managed_routes(self) -> None: ...

    def step_names(self, kind: str, /) -> tuple[str, ...]: ...


EditT = TypeVar("EditT", bound=RouteEdit)


class EditStagingRouter(StagedRouter[EditT]):
    """A staged router whose object has an edit class with the port's own calls (VirtualServiceEdit,
    HTTPRouteEdit): each call is staged as that edit."""

    def __init__(self) -> None:
        super().__init__()
        self._desired_weight: int | None = None

    async def set_weight(self, canary_weight: int) -> None:
        self._desired_weight = canary_weight
        self.stage(lambda edit: edit.set_weight(canary_weight))

    async def set_header_route(self, name: str, match: Sequence[HeaderMatch]) -> None:
        self.stage(lambda edit: edit.set_header_route(name, match))

    async def remove_header_route(self, name: str) -> None:
        self.stage(lambda edit: edit.remove_header_route(name))

    async def set_mirror_route(self, name: str, match: Sequence[MirrorMatch], percentage: int | None) -> None:
        self.stage(lambda edit: edit.set_mirror_route(name, match, percentage))

    async def remove_mirror_route(self, name: str) -> None:
        self.stage(lambda edit: edit.remove_mirror_route(name))

    async def remove_managed_routes(self) -> None:
        self.stage(lambda edit: edit.remove_managed_routes())

    def applied(self, edit: EditT, weights: Sequence[int]) -> AppliedRoutes:
        """What the object `edit` read holds; `weights` is the canary weight of each managed route."""
        if not weights:
            return AppliedRoutes(canary_weight=None)
        # Routes that disagree: report the one that is off, so the controller resyncs.
        weight = next((w for w in weights if w != self._desired_weight), weights[0])
        return AppliedRoutes(weight, edit.step_names(HEADER), edit.step_names(MIRROR))


class HeaderRoutesModel(Protocol):
    """What meshshift asked for, kept in the object's annotation: header routes by step name."""

    headers: dict[str, list[dict[str, str]]]  # step name -> its matches (header_entry)


ModelT = TypeVar("ModelT", bound=HeaderRoutesModel)


class ModelStagingRouter(StagedRouter[ModelT]):
    """A staged router whose edits change such a model (TraefikModel, CanaryModel), from which
    it writes its objects."""

    async def set_header_route(self, name: str, match: Sequence[HeaderMatch]) -> None:
        entries = [header_entry(m) for m in match]
        self.stage(lambda model: put_last(model.headers, name, entries))

    async def remove_header_route(self, name: str) -> None:
        def edit(model: ModelT) -> None:
            model.headers.pop(name, None)

        self.stage(edit)

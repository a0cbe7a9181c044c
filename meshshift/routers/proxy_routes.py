"""What the standalone routers share: the desired routes, and applying them level-triggered.

A router keeps the whole desired route model (upstreams, canary weight, header and mirror
routes, where the preview listener sends its requests). Every change builds a new model,
renders the whole proxy configuration from it and applies that; the model is only adopted
once the proxy confirmed it, so a rejected change leaves both the proxy and the router where
they were.
"""

from __future__ import annotations

import asyncio
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshshift.engine.state import HeaderRoute, MirrorRoute
from meshshift.ports import AppliedRoutes
from meshshift.spec.model import HeaderMatch, MirrorMatch, StringMatch

STABLE = "stable"  # the default upstream names (Envoy clusters, NGINX upstreams)
CANARY = "canary"


@dataclass(frozen=True, slots=True)
class UpstreamNames:
    """What the two upstreams are called in the proxy, and so in its metrics (`envoy_cluster_name`)."""

    stable: str = STABLE
    canary: str = CANARY


def upstream_names(rollout: str) -> UpstreamNames:
    """`<name>-primary` and `<name>-canary`: the cluster names Flagger's dashboards select
    (`envoy_cluster_name=~"$target-primary"`, `"$target-canary"`)."""
    return UpstreamNames(stable=f"{rollout}-primary", canary=f"{rollout}-canary")


class RouterConfigError(ValueError):
    """The desired routes cannot be expressed on this router; nothing was changed."""


class RouterApplyError(RuntimeError):
    """The proxy did not accept or did not apply a configuration; it keeps the previous one."""


@dataclass(frozen=True, slots=True)
class DesiredRoutes:
    stable: tuple[str, ...]  # host:port endpoints
    canary: tuple[str, ...]
    canary_weight: int = 0
    header_routes: tuple[HeaderRoute, ...] = ()  # in the order they were set; first match wins
    mirror_routes: tuple[MirrorRoute, ...] = ()
    names: UpstreamNames = UpstreamNames()
    # The preview listener (spec.preview.listen) sends everything to the canary while a new
    # revision is up, and to the stable otherwise (the workloads say which: see set_preview).
    preview_canary: bool = False

    @property
    def preview_target(self) -> str:
        return "canary" if self.preview_canary else "stable"

    def with_header_route(self, name: str, match: Sequence[HeaderMatch]) -> DesiredRoutes:
        kept = tuple(r for r in self.header_routes if r.name != name)
        return dataclasses.replace(self, header_routes=(*kept, HeaderRoute(name, tuple(match))))

    def without_header_route(self, name: str) -> DesiredRoutes:
        return dataclasses.replace(self, header_routes=tuple(r for r in self.header_routes if r.name != name))

    def with_mirror_route(
        self, name: str, match: Sequence[MirrorMatch], percentage: int | None
    ) -> DesiredRoutes:
        kept = tuple(r for r in self.mirror_routes if r.name != name)
        route = MirrorRoute(name, tuple(match), percentage)
        return dataclasses.replace(self, mirror_routes=(*kept, route))

    def without_mirror_route(self, name: str) -> DesiredRoutes:
        return dataclasses.replace(self, mirror_routes=tuple(r for r in self.mirror_routes if r.name != name))

    def summary(self, *, preview: bool = False) -> AppliedRoutes:
        """What a router that applied this model should read back (`preview`: it has a preview listener)."""
        return AppliedRoutes(
            canary_weight=self.canary_weight,
            header_routes=tuple(r.name for r in self.header_routes),
            mirror_routes=tuple(r.name for r in self.mirror_routes),
            preview=self.preview_target if preview else None,
        )


def whole_value_regex(match: StringMatch, literal: Callable[[str], str]) -> str:
    """A regex that holds where an Argo string match does, for an engine that searches the value.

    Anchored: `exact` and `prefix` are literal (`literal` escapes text for that engine) and
    `regex` must match the whole value, as on Envoy.
    """
    if match.kind == "exact":
        return f"^{literal(match.value)}$"
    if match.kind == "prefix":
        return f"^{literal(match.value)}"
    return f"^(?:{match.value})$"


def check_weight(weight: int) -> None:
    if not 0 <= weight <= 100:
        raise RouterConfigError(f"canary weight {weight} is outside 0..100")


class ModelRouter(ABC):
    """The Router port on top of a desired route model; subclasses render and apply it."""

    name: str

    def __init__(self, desired: DesiredRoutes) -> None:
        self.desired = desired
        self._lock = asyncio.Lock()

    # --- the Router port ----------------------------------------------------------------

    async def set_weight(self, canary_weight: int) -> None:
        check_weight(canary_weight)
        await self.change(lambda d: dataclasses.replace(d, canary_weight=canary_weight))

    async def set_header_route(self, name: str, match: Sequence[HeaderMatch]) -> None:
        await self.change(lambda d: d.with_header_route(name, match))

    async def remove_header_route(self, name: str) -> None:
        await self.change(lambda d: d.without_header_route(name))

    async def set_mirror_route(self, name: str, match: Sequence[MirrorMatch], percentage: int | None) -> None:
        await self.change(lambda d: d.with_mirror_route(name, match, percentage))

    async def remove_mirror_route(self, name: str) -> None:
        await self.change(lambda d: d.without_mirror_route(name))

    async def remove_managed_routes(self) -> None:
        await self.change(lambda d: dataclasses.replace(d, header_routes=(), mirror_routes=()))

    async def set_managed_routes(
        self, header_routes: Sequence[HeaderRoute], mirror_routes: Sequence[MirrorRoute]
    ) -> None:
        routes = tuple(header_routes), tuple(mirror_routes)
        await self.change(lambda d: dataclasses.replace(d, header_routes=routes[0], mirror_routes=routes[1]))

    @abstractmethod
    async def read_back(self) -> AppliedRoutes: ...

    # --- standalone extras ---------------------------------------------------------------

    async def set_upstreams(self, stable: Sequence[str], canary: Sequence[str]) -> None:
        """New endpoint sets (a promotion, or a new canary in the rollout file)."""
        await self.change(lambda d: dataclasses.replace(d, stable=tuple(stable), canary=tuple(canary)))

    async def set_preview(self, to_canary: bool) -> None:
        """Where the preview listener sends requests: the canary (a new revision is up) or the stable."""
        if self.desired.preview_canary != to_canary:
            await self.change(lambda d: dataclasses.replace(d, preview_canary=to_canary))

    async def change(self, edit: Callable[[DesiredRoutes], DesiredRoutes]) -> None:
        """Apply `edit(desired)`; the model moves on only when the proxy applied it."""
        async with self._lock:
            desired = edit(self.desired)
            self.check(desired)
            await self.apply(desired)
            self.desired = desired

    def check(self, desired: DesiredRoutes) -> None:
        """Raise RouterConfigError when `desired` cannot be expressed (before touching anything)."""
        check_weight(desired.canary_weight)
        if not desired.stable or not desired.canary:
            raise RouterConfigError("both the stable and the canary need at least one endpoint")

    @abstractmethod
    async def apply(self, desired: DesiredRoutes) -> None:
        """Render the whole configuration for `desired`, apply it and wait until it is live."""

"""What the Kubernetes routers that stage their edits share.

Such a router (Traefik's, Gateway API's) records each call of the Router port as an edit
and writes them together, in one read-modify-write per object, when the controller reads
back or before a workload change. Replacing the managed routes is then one write: the
old routes go and the new ones come in the same update, with no moment without them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from meshshift.engine.state import HeaderRoute, MirrorRoute
from meshshift.spec.model import HeaderMatch, MirrorMatch


class StagedRouter(ABC):
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

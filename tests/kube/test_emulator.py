"""The emulator itself (tests/kube/kmock_ext.py): what it answers must be what kmock would."""

from __future__ import annotations

import kmock

from meshshift.kube.resources import CONFIG_MAPS, KubeApi
from tests.kube.conftest import NAMESPACE
from tests.kube.harness import KubeEnv, api_client


async def test_the_emulators_fault_slices_match_what_kmock_walks(kube_env: KubeEnv) -> None:
    """kmock_ext answers `request in view` without walking the history: the same answers as kmock's walk."""
    km = kube_env.kmock
    assert km is not None
    configmaps = km[kmock.resource("v1/configmaps")]
    views = [configmaps, configmaps[2:4], configmaps["get"][1:], km["post"][:2], km["patch"][3:4]]
    async with api_client(kube_env) as client:
        api = KubeApi(client, retries=0)
        await api.create(CONFIG_MAPS, {"metadata": {"name": "a"}, "data": {}}, NAMESPACE)
        for index in range(6):
            await api.merge_patch(CONFIG_MAPS, "a", {"data": {"n": str(index)}}, NAMESPACE)
            await api.get(CONFIG_MAPS, "a", NAMESPACE)
    stock = [[any(r is request for r in view) for request in km] for view in views]
    fast = [[request in view for request in km] for view in views]
    assert fast == stock
    assert [sum(row) for row in fast] == [13, 2, 5, 1, 1]

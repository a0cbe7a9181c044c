"""Fixtures for the observability tests: a registry, daemon settings, a served daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from meshshift.observe.server import serve
from meshshift.processes import free_port
from meshshift.runtime.registry import RolloutRegistry
from meshshift.settings import DaemonSettings

TOKEN = "s3cret-token-for-tests"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def registry() -> RolloutRegistry:
    return RolloutRegistry()


@pytest.fixture
def settings() -> DaemonSettings:
    return DaemonSettings(listen=f"127.0.0.1:{free_port()}", token=TOKEN)


@pytest.fixture
async def daemon(registry: RolloutRegistry, settings: DaemonSettings) -> AsyncIterator[str]:
    """The daemon's HTTP listener on a free port; yields its base URL."""
    async with serve(registry, settings) as base_url:
        yield base_url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session

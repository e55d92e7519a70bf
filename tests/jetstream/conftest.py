"""Fixtures: engines (gateways) on the session's 3-node nats-server cluster (tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from logserver.engine import EngineLimits
from logserver.jetstream import JetStreamEngine, JetStreamSettings

from .cluster import NatsCluster

OpenEngine = Callable[..., Awaitable[JetStreamEngine]]


def settings_for(cluster: NatsCluster, **limits: float) -> JetStreamSettings:
    return JetStreamSettings(
        servers=cluster.urls,
        monitor_urls=cluster.monitor_urls,
        limits=EngineLimits(**limits),  # type: ignore[arg-type]
    )


@pytest.fixture
async def open_engine(nats_cluster: NatsCluster) -> AsyncIterator[OpenEngine]:
    """Open gateways (engines) on the session's cluster; all are closed after the test."""
    opened: list[JetStreamEngine] = []

    async def open_one(**limits: float) -> JetStreamEngine:
        engine = await JetStreamEngine.open(settings_for(nats_cluster, **limits))
        opened.append(engine)
        return engine

    yield open_one
    for engine in opened:
        await engine.close()


@pytest.fixture
async def engine(open_engine: OpenEngine) -> JetStreamEngine:
    return await open_engine()


@pytest.fixture
def stream() -> str:
    """A stream name of its own for each test (the cluster is shared by the session)."""
    return f"Test stream {uuid.uuid4().hex[:12]}"

"""Fixtures: the real app on a real socket over a real engine.

The engine is the file engine in tmp_path, or with LOGSERVER_TEST_ENGINE=jetstream the JetStream
engine on the session's 3-node nats-server cluster (tests/conftest.py), wiped before each test.
Tests marked `file_engine_only("why")` look into the file engine and are skipped on others.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer

from logserver.auth import Authenticator, hash_password
from logserver.config import ServerConfig
from logserver.engine import Engine
from logserver.filestore import FileStore
from logserver.http import ApiServer, build_server
from logserver.server import open_engine
from tests.jetstream.cluster import NatsCluster

from .http_calls import MAX_BODY_BYTES, MAX_LIMIT, PASSWORD, USER, Client

MakeClient = Callable[[ApiServer], Awaitable[Client]]
OnEngine = Callable[[ServerConfig], ServerConfig]


class ApiTestServer(BaseTestServer):
    """aiohttp's test server around the ApiServer `logserver serve` listens with."""

    def __init__(self, server: ApiServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = server

    async def _make_runner(self, **kwargs: Any) -> web.ServerRunner:
        return web.ServerRunner(self.api)


@pytest.fixture(scope="session")
def users_text() -> str:
    # One key derivation for the whole session: each test copies the finished file.
    return f"{USER}:{hash_password(PASSWORD)}\n"


@pytest.fixture
def engine_name() -> str:
    """The engine the API tests run against: LOGSERVER_TEST_ENGINE, the file engine by default."""
    return os.environ.get("LOGSERVER_TEST_ENGINE", "file")


@pytest.fixture(autouse=True)
def only_on_the_file_engine(request: pytest.FixtureRequest, engine_name: str) -> None:
    """Skip a test marked file_engine_only("reason") when another engine is under test."""
    marker = request.node.get_closest_marker("file_engine_only")
    if marker is not None and engine_name != "file":
        pytest.skip(f"file engine only: {marker.args[0]}")


@pytest.fixture
async def on_engine(request: pytest.FixtureRequest, engine_name: str) -> OnEngine:
    """Point a ServerConfig at the engine under test (for JetStream: the cluster, wiped clean)."""
    if engine_name != "jetstream":
        return lambda config: dataclasses.replace(config, engine=engine_name)
    cluster: NatsCluster = request.getfixturevalue("nats_cluster")
    await cluster.clean_slate()
    return lambda config: dataclasses.replace(
        config,
        engine="jetstream",
        nats_url=",".join(cluster.urls),
        nats_monitor_url=",".join(cluster.monitor_urls),
        nats_replicas=len(cluster.nodes),
    )


def engine_environment(config: ServerConfig) -> dict[str, str]:
    """The LOGSERVER_* variables that point a `logserver serve` process at config's engine."""
    if config.engine != "jetstream":
        return {}
    return {
        "LOGSERVER_ENGINE": "jetstream",
        "LOGSERVER_NATS_URL": config.nats_url,
        "LOGSERVER_NATS_MONITOR_URL": config.nats_monitor_url,
        "LOGSERVER_NATS_REPLICAS": str(config.nats_replicas),
    }


@pytest.fixture
def config(tmp_path: Path, users_text: str, on_engine: OnEngine) -> ServerConfig:
    users = tmp_path / "users"
    users.write_text(users_text)
    return on_engine(
        ServerConfig(
            data_dir=tmp_path / "data",
            users_file=users,
            segment_bytes=4096,
            max_body_bytes=MAX_BODY_BYTES,
            max_limit=MAX_LIMIT,
        )
    )


@pytest.fixture
async def engine(config: ServerConfig) -> AsyncIterator[Engine]:
    opened = await open_engine(config)
    yield opened
    await opened.close()


@pytest.fixture
def store(engine: Engine) -> FileStore:
    """The engine, for tests that also look into the file engine's state (marked file_engine_only)."""
    if not isinstance(engine, FileStore):
        pytest.fail("a test that requests `store` must be marked file_engine_only(reason)")
    return engine


@pytest.fixture
def make_client(aiohttp_client: Callable[..., Awaitable[Client]]) -> MakeClient:
    """A test client on a real socket for a built server."""

    async def make(server: ApiServer) -> Client:
        return await aiohttp_client(ApiTestServer(server))

    return make


@pytest.fixture
async def server(engine: Engine, config: ServerConfig) -> ApiServer:
    return build_server(engine, Authenticator(config.users_path), config)


@pytest.fixture
async def client(make_client: MakeClient, server: ApiServer) -> Client:
    return await make_client(server)

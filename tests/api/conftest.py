"""Fixtures: the real app on a real socket over a real FileStore in tmp_path."""

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

from .http_calls import MAX_BODY_BYTES, MAX_LIMIT, PASSWORD, USER, Client

MakeClient = Callable[[ApiServer], Awaitable[Client]]


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
def config(tmp_path: Path, users_text: str) -> ServerConfig:
    users = tmp_path / "users"
    users.write_text(users_text)
    return ServerConfig(
        data_dir=tmp_path / "data",
        users_file=users,
        segment_bytes=4096,
        max_body_bytes=MAX_BODY_BYTES,
        max_limit=MAX_LIMIT,
    )


@pytest.fixture
def engine_name() -> str:
    """The engine the API tests run against: LOGSERVER_TEST_ENGINE, the file engine by default."""
    return os.environ.get("LOGSERVER_TEST_ENGINE", "file")


@pytest.fixture
async def engine(config: ServerConfig, engine_name: str) -> AsyncIterator[Engine]:
    opened = await open_engine(dataclasses.replace(config, engine=engine_name))
    yield opened
    await opened.close()


@pytest.fixture
def store(engine: Engine) -> FileStore:
    """The engine, for tests that also look into the file engine's state."""
    if not isinstance(engine, FileStore):
        pytest.skip("this test looks into the file engine")
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

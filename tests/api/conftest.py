"""Fixtures: the real app on a real socket over a real EventStore in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer

from logserver.auth import Authenticator, hash_password
from logserver.config import ServerConfig
from logserver.http import ApiServer, build_server
from logserver.storage import EventStore

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
async def store(config: ServerConfig) -> AsyncIterator[EventStore]:
    opened = await EventStore.open(config.storage_config())
    yield opened
    await opened.close()


@pytest.fixture
def make_client(aiohttp_client: Callable[..., Awaitable[Client]]) -> MakeClient:
    """A test client on a real socket for a built server."""

    async def make(server: ApiServer) -> Client:
        return await aiohttp_client(ApiTestServer(server))

    return make


@pytest.fixture
async def server(store: EventStore, config: ServerConfig) -> ApiServer:
    return build_server(store, Authenticator(config.users_path), config)


@pytest.fixture
async def client(make_client: MakeClient, server: ApiServer) -> Client:
    return await make_client(server)

"""Fixtures: the real app on a real socket over a real EventStore in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from logserver.auth import Authenticator, hash_password
from logserver.config import ServerConfig
from logserver.http import build_app
from logserver.storage import EventStore

from .http_calls import MAX_BODY_BYTES, MAX_LIMIT, PASSWORD, USER, Client

MakeClient = Callable[[web.Application], Awaitable[Client]]


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
def app(store: EventStore, config: ServerConfig) -> web.Application:
    return build_app(store, Authenticator(config.users_path), config)


@pytest.fixture
async def client(aiohttp_client: MakeClient, app: web.Application) -> Client:
    return await aiohttp_client(app)

"""Fixtures for the storage engine's own tests: real files in a tmp dir, tiny segments."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from logserver.filestore import FileStore, FsyncPolicy, StorageConfig

SMALL_SEGMENT = 2048  # about 8 records: every test that appends a few dozen events rolls


def make_event(name: str = "OrderPlaced", **payload: Any) -> dict[str, Any]:
    return {
        "event": {"name": name, "version": 1},
        "system": {"id": "alv123", "name": "codello alvine", "time": "2017-09-06 13:58:12"},
        "trigger": {"type": "system", "name": "/path/to/script.php"},
        "payload": payload,
    }


@pytest.fixture
def event() -> Callable[..., dict[str, Any]]:
    return make_event


@pytest.fixture
def config(tmp_path: Path) -> StorageConfig:
    return StorageConfig(tmp_path / "data", fsync=FsyncPolicy.ALWAYS, segment_bytes=SMALL_SEGMENT)


@pytest.fixture
async def store(config: StorageConfig) -> AsyncIterator[FileStore]:
    opened = await FileStore.open(config)
    yield opened
    await opened.close()


@pytest.fixture
def read_events() -> Callable[..., Awaitable[list[dict[str, Any]]]]:
    async def read(store: FileStore, stream: str, name: str, consumer: str, limit: int = 1000) -> Any:
        return orjson.loads(await store.consume(stream, name, consumer, limit))

    return read

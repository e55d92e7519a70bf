"""Errors outside the handlers' own checks: routing, 500 with a reference id, storage failures."""

from __future__ import annotations

import logging
import re
from typing import Any, NoReturn, cast

import pytest

from logserver.auth import Authenticator
from logserver.config import ServerConfig
from logserver.engine import Engine, StorageFull, StorageIOError
from logserver.filestore import FileStore
from logserver.http import build_server

from .conftest import MakeClient
from .http_calls import AUTH, Client, append, append_ok, consume, event_body, events_path, expect


@pytest.mark.parametrize(
    "path",
    [
        "/ui",
        "/nope",
        "/api/v1",
        "/api/v1/streams/s/nothing",
        "/api/v1/streams/s/events/",
        "/api/v2/streams/s/events",
    ],
)
async def test_unknown_route_is_json_404(client: Client, path: str) -> None:
    await expect(await client.get(path, headers=AUTH), 404, "Not Found")
    await expect(await client.get(path), 404, "Not Found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", events_path("s"), {"GET", "POST"}),
        ("PUT", events_path("s"), {"GET", "POST"}),
        ("DELETE", events_path("s", "00000000-0000-0000-0000-000000000000"), {"GET", "POST"}),
        ("POST", "/health", {"GET"}),
    ],
)
async def test_wrong_method_is_json_405(client: Client, method: str, path: str, allowed: set[str]) -> None:
    response = await client.request(method, path, headers=AUTH)
    await expect(response, 405, "Method Not Allowed")
    assert set(response.headers["Allow"].split(",")) == allowed


async def test_health_reports_ok_and_the_stream_count(client: Client) -> None:
    await append_ok(client, "one")
    await append_ok(client, "two")
    await expect(await client.get("/health"), 200, {"status": "ok", "streams": 2})


class FailingEngine:
    """The file engine, but one operation raises `error`: the HTTP layer sees only the interface,
    so this drives its error mapping without patching anything the engine runs (a compiled
    build can't be patched)."""

    def __init__(self, engine: Engine, operation: str, error: BaseException) -> None:
        self._engine = engine
        self._operation = operation
        self._error = error

    def __getattr__(self, name: str) -> Any:
        if name != self._operation:
            return getattr(self._engine, name)

        async def fail(*args: object) -> NoReturn:
            raise self._error

        return fail


async def failing_client(
    make_client: MakeClient, engine: Engine, config: ServerConfig, operation: str, error: BaseException
) -> Client:
    failing = cast(Engine, FailingEngine(engine, operation, error))
    return await make_client(build_server(failing, Authenticator(config.users_path), config))


async def test_unexpected_exception_is_500_with_a_reference_that_is_in_the_log(
    make_client: MakeClient, engine: Engine, config: ServerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    client = await failing_client(make_client, engine, config, "consume", RuntimeError("secret internals"))
    await append_ok(client, "s")
    with caplog.at_level(logging.ERROR, logger="logserver.http"):
        message = await expect(await consume(client, "s"), 500)
    match = re.fullmatch(r"Internal Server Error - ([0-9a-f]{16})", message)
    assert match, message
    [record] = [r for r in caplog.records if match[1] in r.getMessage()]
    assert record.exc_info is not None
    assert "secret internals" in str(record.exc_info[1])
    assert "secret" not in message


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (StorageFull("ENOSPC on segment 3"), 507, "Insufficient Storage - the disk is full"),
        (StorageIOError("fsync failed"), 500, None),
    ],
)
async def test_storage_failures_map_to_their_status(
    make_client: MakeClient,
    engine: Engine,
    config: ServerConfig,
    error: Exception,
    status: int,
    message: str | None,
) -> None:
    # The engine's own fault tests produce these for real; here only the mapping is under test.
    client = await failing_client(make_client, engine, config, "append", error)
    body = await expect(await append(client, "s"), status)
    if message is not None:
        assert body == message
    else:
        assert body.startswith("Internal Server Error - ")
        assert "fsync" not in body


@pytest.mark.file_engine_only("flips a bit in a file engine segment and reopens the data dir")
async def test_stream_damaged_before_its_tail_is_503(make_client: MakeClient, config: ServerConfig) -> None:
    store = await FileStore.open(config.storage_config())
    client = await make_client(build_server(store, Authenticator(config.users_path), config))
    for i in range(40):  # several 4 KiB segments
        await append_ok(client, "ledger", event_body(payload={"i": i, "pad": "x" * 100}))
    await client.close()
    await store.close()

    first_segment = min((config.data_dir / "streams" / "ledger").glob("*.log"))
    data = bytearray(first_segment.read_bytes())
    position = data.index(b'"pad"')
    data[position + 8] ^= 0x01  # one flipped bit inside a sealed segment
    first_segment.write_bytes(bytes(data))
    # Sealed segments are trusted through their persisted index; without it recovery rescans.
    first_segment.with_suffix(".idx").unlink()

    store = await FileStore.open(config.storage_config())
    try:
        client = await make_client(build_server(store, Authenticator(config.users_path), config))
        message = await expect(await consume(client, "ledger"), 503)
        assert message == "Service Unavailable - stream 'ledger' is damaged and awaits repair"
        health = await expect(await client.get("/health"), 200)
        assert health["status"] == "ok"
    finally:
        await store.close()


async def test_every_response_is_json_even_for_an_html_client(client: Client) -> None:
    headers = {**AUTH, "Accept": "text/html"}
    await expect(await client.get("/missing", headers=headers), 404, "Not Found")
    await expect(await client.get(events_path("s"), headers={"Accept": "text/html"}), 401)

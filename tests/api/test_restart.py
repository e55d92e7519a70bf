"""Ownership and consumer positions survive closing the engine and starting a new app on it."""

from __future__ import annotations

from logserver.auth import Authenticator
from logserver.config import ServerConfig
from logserver.engine import Engine
from logserver.http import build_server
from logserver.server import open_engine

from .conftest import MakeClient
from .http_calls import Client, ack, append, append_ok, consume_ok, event_body, expect


async def start(make_client: MakeClient, config: ServerConfig) -> tuple[Engine, Client]:
    engine = await open_engine(config)
    return engine, await make_client(build_server(engine, Authenticator(config.users_path), config))


async def test_positions_and_owner_survive_a_restart(make_client: MakeClient, config: ServerConfig) -> None:
    engine, client = await start(make_client, config)
    ids = [
        await append_ok(client, "orders", event_body(payload={"i": i}), producer="shop") for i in range(30)
    ]
    for event_id in [ids[0], ids[1], ids[3]]:  # 2 is still open: the position stops before it
        await expect(await ack(client, "orders", event_id), 200, "OK")
    await client.close()
    await engine.close()

    engine, client = await start(make_client, config)
    try:
        events = await consume_ok(client, "orders", limit=3)
        assert [e["eventId"] for e in events] == [ids[2], ids[4], ids[5]]
        await expect(
            await append(client, "orders", producer="intruder"), 423, "Locked - Second writers not allowed"
        )
        new_id = await append_ok(client, "orders", producer="shop")
        assert new_id not in ids
        for event_id in ids[2:]:
            await expect(await ack(client, "orders", event_id), 200, "OK")
        assert [e["eventId"] for e in await consume_ok(client, "orders")] == [new_id]
    finally:
        await client.close()
        await engine.close()

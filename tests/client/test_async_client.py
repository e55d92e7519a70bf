"""The asyncio client: the same methods as the blocking one, against the same real server."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

import pytest

from logserver.client import AckResult, AsyncClient, Client, Conflict, NotFound, RetryPolicy, StreamLocked

from .conftest import PASSWORD, USER, MakeProxy, ServerProcess, event


def public_methods(cls: type) -> dict[str, list[inspect.Parameter]]:
    """Each public method's parameters (the return types differ: coroutines, async iterators)."""
    return {
        name: list(inspect.signature(member).parameters.values())
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


def test_both_clients_have_the_same_methods_and_parameters() -> None:
    assert public_methods(AsyncClient) == public_methods(Client)
    assert "subscribe" in public_methods(Client) and "follow" in public_methods(Client)


async def test_every_method(server: ServerProcess, stream: str) -> None:
    async with AsyncClient(server.url, USER, PASSWORD) as client:
        assert (await client.health())["status"] == "ok"
        first = await client.append(stream, event(n=0), producer="shop", expected_sequence=0)
        ids = [first, *await client.append_batch(stream, [event(n=1), event(n=2)], producer="shop")]
        assert (await client.get_event(stream, first)).payload == {"n": 0}
        with pytest.raises(StreamLocked):
            await client.append(stream, event(), producer="intruder")
        with pytest.raises(Conflict) as conflict:
            await client.append(stream, event(), producer="shop", expected_sequence=1)
        assert conflict.value.current_sequence == 3

        assert [e.id for e in await client.consume(stream, "OrderPlaced", "mailer", limit=2)] == ids[:2]
        await client.ack(stream, "mailer", ids[0])
        assert await client.ack_many(stream, "mailer", [ids[1]]) == [AckResult(ids[1], True)]
        assert [e.id for e in await client.consume(stream, "OrderPlaced", "mailer", wait=1)] == ids[2:]

        leased = await client.consume_leased(stream, "OrderPlaced", "workers", 30, limit=1)
        await client.nack(stream, "workers", leased[0].id)
        again = await client.consume_leased(stream, "OrderPlaced", "workers", 30, limit=1)
        assert again[0].delivery_count == 2

        page = await client.history(stream, from_sequence=1, limit=2)
        assert ([e.id for e in page.events], page.next_sequence) == (ids[:2], 3)
        assert [e.id async for e in client.iter_history(stream, limit=1)] == ids
        since = datetime(2000, 1, 1, tzinfo=UTC)
        assert [e.id async for e in client.iter_history(stream, from_time=since)] == ids

        assert stream in {s["name"] for s in await client.streams()}
        assert (await client.stream(stream))["eventCount"] == 3
        rows = {c["consumer"]: c for c in await client.consumers(stream)}
        assert set(rows) == {"mailer", "workers"}  # workers has only leased, and is listed too
        assert rows["workers"]["inFlight"] == 1 and rows["workers"]["acknowledged"] == 0
        await client.seek(stream, "mailer", to="start")
        assert len(await client.consume(stream, "OrderPlaced", "mailer")) == 3
        retention = await client.set_retention(stream, max_bytes=1 << 30)
        assert retention["retention"] == {"maxBytes": 1 << 30}
        with pytest.raises(NotFound):
            await client.consumers(stream + " missing")


async def test_async_retry_keeps_the_idempotency_key(make_proxy: MakeProxy, stream: str) -> None:
    proxy = make_proxy(cut=1)
    async with AsyncClient(proxy.url, USER, PASSWORD, retry=RetryPolicy(base_delay=0.02)) as client:
        event_id = await client.append(stream, event(), producer="shop")
        assert [e.id async for e in client.iter_history(stream)] == [event_id]
    assert proxy.exchanges[0].header("Idempotency-Key") == proxy.exchanges[1].header("Idempotency-Key")

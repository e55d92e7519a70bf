"""Races over HTTP against the real app on a real socket: concurrent acks from one consumer, and
reads while tiny segments roll under concurrent appends.

(Fifty producers racing to create one stream is tests/api/test_append.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import pytest

from logserver.auth import Authenticator
from logserver.config import ServerConfig
from logserver.engine import Engine
from logserver.filestore import FileStore, FsyncPolicy
from logserver.http import build_server
from logserver.server import open_engine

from .conftest import MakeClient
from .http_calls import Client, ack, append_ok, consume_ok, event_body, expect

NAMES = ("OrderPlaced", "OrderPaid")
SERVER_FIELDS = {"eventId", "stream", "sequence", "producerId", "receivedAt"}


def payload_for(i: int) -> dict[str, Any]:
    """A payload that checks itself: a torn or mixed-up event can't carry a matching one."""
    return {"i": i, "echo": f"event {i} " + "x" * (i % 97)}


def check_complete(event: dict[str, Any], stream: str) -> None:
    assert event.keys() >= SERVER_FIELDS, event
    assert event["stream"] == stream
    assert event["event"]["version"] == 1
    i = event["payload"]["i"]
    assert event["payload"] == payload_for(i)


def sequence_of(k: int, name: str) -> int:
    """The sequence of the k-th event of a name: the two names alternate, OrderPlaced first."""
    return 2 * k + 1 + NAMES.index(name)


async def positions(engine: Engine, consumer: str) -> dict[str, tuple[int, int]]:
    """(position, acknowledged beyond it) per event name, as the consumer lag reports them."""
    rows = await engine.consumer_lag("orders")
    return {
        r["eventName"]: (r["position"], r["acknowledgedOutOfOrder"])
        for r in rows
        if r["consumer"] == consumer
    }


async def test_concurrent_acks_from_one_consumer_are_all_applied(
    client: Client, engine: Engine, config: ServerConfig, make_client: MakeClient
) -> None:
    ids: dict[str, list[str]] = {name: [] for name in NAMES}
    for i in range(120):
        name = NAMES[i % 2]
        ids[name].append(await append_ok(client, "orders", event_body(name, payload=payload_for(i))))
    # Every event twice (acks are idempotent), all at once, in random order; hold back three
    # of OrderPlaced so the position must stop before the first of them.
    held_back = set(ids["OrderPlaced"][20:23])
    to_ack = [event_id for name in NAMES for event_id in ids[name] if event_id not in held_back] * 2
    random.shuffle(to_ack)
    responses = await asyncio.gather(
        *(ack(client, "orders", event_id, consumer="acker") for event_id in to_ack)
    )
    for response in responses:
        await expect(response, 200, "OK")

    remaining = await consume_ok(client, "orders", "OrderPlaced", consumer="acker", limit=50)
    assert [e["eventId"] for e in remaining] == ids["OrderPlaced"][20:23]
    assert await consume_ok(client, "orders", "OrderPaid", consumer="acker") == []
    # Up to the first one held back; acknowledged beyond the gap, kept individually.
    assert await positions(engine, "acker") == {
        "OrderPlaced": (sequence_of(19, "OrderPlaced"), 60 - 23),
        "OrderPaid": (sequence_of(59, "OrderPaid"), 0),
    }

    # The held-back acks, concurrently too: the position closes the gap and runs to the end.
    responses = await asyncio.gather(*(ack(client, "orders", i, consumer="acker") for i in held_back))
    for response in responses:
        await expect(response, 200, "OK")
    assert (await positions(engine, "acker"))["OrderPlaced"] == (sequence_of(59, "OrderPlaced"), 0)

    await client.close()
    await engine.close()  # and the same after a restart: every ack was persisted
    reopened = await open_engine(config)
    try:
        again = await make_client(build_server(reopened, Authenticator(config.users_path), config))
        for name in NAMES:
            assert await consume_ok(again, "orders", name, consumer="acker") == []
        assert await consume_ok(again, "orders", "OrderPlaced", consumer="another") != []
    finally:
        await reopened.close()


@pytest.fixture(params=[FsyncPolicy.ALWAYS, FsyncPolicy.NEVER], ids=lambda p: f"fsync-{p.value}")
def config(config: ServerConfig, request: pytest.FixtureRequest) -> ServerConfig:
    # A segment rolls every two or three events.
    return dataclasses.replace(config, segment_bytes=512, fsync=request.param)


async def test_reads_while_segments_roll_see_complete_events_in_order(client: Client, engine: Engine) -> None:
    writers, per_writer, readers = 4, 40, 6
    total = writers * per_writer
    created = asyncio.Event()

    async def write(w: int) -> None:
        for k in range(per_writer):
            # One owner, several connections: the stream's appends still come one at a time.
            await append_ok(
                client, "rolling", event_body("OrderPlaced", payload=payload_for(w * per_writer + k))
            )
            created.set()

    async def read(r: int) -> list[int]:
        """Read, check, ack, repeat: this consumer walks the log while it grows and rolls."""
        seen: list[int] = []
        consumer = f"reader-{r}"
        await created.wait()  # waiting for the stream must not use up the bound below
        for _ in range(50_000):  # a bound instead of a hang, should an event never show up
            if len(seen) == total:
                break
            batch = await consume_ok(client, "rolling", "OrderPlaced", consumer=consumer, limit=7)
            for event in batch:
                check_complete(event, "rolling")
            sequences = [event["sequence"] for event in batch]
            assert sequences == sorted(set(sequences)), sequences
            assert not seen or not sequences or sequences[0] > seen[-1], (seen[-3:], sequences)
            seen += sequences
            acks = await asyncio.gather(*(ack(client, "rolling", e["eventId"], consumer) for e in batch))
            for response in acks:
                await expect(response, 200, "OK")
        return seen

    reading = [asyncio.ensure_future(read(r)) for r in range(readers)]
    await asyncio.gather(*(write(w) for w in range(writers)))
    seen_by_reader = await asyncio.gather(*reading)
    if isinstance(engine, FileStore):  # JetStream has no segments to roll; the reads are the same
        assert len(engine.stream("rolling").log.segments) > total // 4  # it really rolled, many times
    for seen in seen_by_reader:
        assert seen == list(range(1, total + 1))  # every event once, in order, none skipped


@pytest.mark.file_engine_only("watches the file engine's log between event-loop iterations")
async def test_first_appends_to_a_new_stream_go_on_together_once_it_exists(config: ServerConfig) -> None:
    # Queued on the creation lock, they used to go on one per event-loop iteration while later
    # appends overtook them: a pool of 256 connections waited up to 3 s for first answers.
    store = await FileStore.open(dataclasses.replace(config, segment_bytes=1 << 26).storage_config())
    try:
        body = event_body()
        written: list[int] = []  # events in the stream, once per event-loop iteration

        async def note_each_iteration() -> None:
            while True:
                exists = (await store.health()).streams
                written.append(store.stream("new").log.next_sequence - 1 if exists else 0)
                await asyncio.sleep(0)

        counter = asyncio.create_task(note_each_iteration())
        appends = [asyncio.create_task(store.append("new", "p", dict(body))) for _ in range(50)]
        ids = await asyncio.gather(*appends)
        counter.cancel()
        assert len(set(ids)) == 50
        # The creating append waits for its fsync; the other 49 are written once it is answered.
        first = next(i for i, count in enumerate(written) if count >= 2)
        last = written.index(50)
        assert last - first <= 2, written[first : last + 1]  # not one append per iteration
    finally:
        await store.close()

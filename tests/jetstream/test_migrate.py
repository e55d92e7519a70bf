"""`logserver migrate` from a real file-engine data dir into the real 3-node cluster, run as the CLI."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from logserver.engine import Bound, Engine, HistoryQuery, StreamLocked
from logserver.filestore import FileStore, StorageConfig

from .cluster import NatsCluster
from .conftest import OpenEngine

pytestmark = pytest.mark.jetstream


def event(name: str, k: int) -> dict[str, Any]:
    return {"event": {"name": name, "version": 1}, "payload": {"k": k, "text": "x" * 40}}


def migrate(cluster: NatsCluster, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run `logserver migrate` as a user would, in its own process."""
    command = [sys.executable, "-m", "logserver", "migrate", "--to", ",".join(cluster.urls)]
    command += ["--nats-monitor-url", ",".join(cluster.monitor_urls), "--data-dir", str(data_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


async def everything(engine: Engine, stream: str) -> list[dict[str, Any]]:
    """Every stored event of the stream, oldest first."""
    found: list[dict[str, Any]] = []
    cursor: int | None = 1
    while cursor is not None:
        page = await engine.history(stream, HistoryQuery(start=Bound(sequence=cursor), limit=1000))
        found += orjson.loads(page.body)
        cursor = page.next_sequence
    return found


def contents(events: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """What must survive a migration: producer, name and payload, in order."""
    return [(e["producerId"], e["event"]["name"], e["payload"]) for e in events]


async def unacked_payloads(engine: Engine, stream: str, consumer: str, name: str) -> list[Any]:
    return [e["payload"] for e in orjson.loads(await engine.consume(stream, name, consumer, 100_000))]


class SourceStreams:
    """The data dir's streams: names unique to the test (the cluster is shared by the session)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.orders = f"Orders {tag}"
        self.audit = f"Audit {tag}"
        self.trimmed = f"Trimmed {tag}"

    @property
    def names(self) -> list[str]:
        return [self.orders, self.audit, self.trimmed]


async def build_data_dir(data_dir: Path, streams: SourceStreams) -> dict[str, Any]:
    """Streams, consumers at positions (with out-of-order acks), retention; returns what it saw."""
    store = await FileStore.open(StorageConfig(data_dir=data_dir, segment_bytes=4096))
    try:
        ids = []
        for start in range(0, 1200, 400):  # 1,200 events: more than two migration batches
            bodies = [event("OrderPlaced" if k % 3 else "OrderShipped", k) for k in range(start, start + 400)]
            ids += await store.append_batch(streams.orders, "shop", bodies, None, None)
        placed = [ids[k] for k in range(1200) if k % 3]
        await store.ack_many(streams.orders, "billing", placed[:500])  # in order: a position
        await store.ack_many(streams.orders, "billing", [placed[510], placed[700]])  # out of order
        shipped = [ids[k] for k in range(1200) if k % 3 == 0]
        await store.ack_many(streams.orders, "mail", shipped[:7])
        for k in range(3):
            await store.append(streams.audit, "auditor", event("Login", k), None, None)
        await store.set_retention(streams.audit, 86_400.0, None)
        trimmed_ids = [await store.append(streams.trimmed, "sensor", event("Reading", k)) for k in range(200)]
        await store.ack_many(streams.trimmed, "dashboard", trimmed_ids[:150])
        await store.set_retention(streams.trimmed, None, 8192)  # drops the oldest sealed segments
        seen: dict[str, Any] = {name: await everything(store, name) for name in streams.names}
        seen["lag"] = {name: await store.consumer_lag(name) for name in streams.names}
        seen["unacked"] = {
            (name, row["consumer"], row["eventName"]): await unacked_payloads(
                store, name, row["consumer"], row["eventName"]
            )
            for name in streams.names
            for row in seen["lag"][name]
        }
        return seen
    finally:
        await store.close()


async def test_migrate_copies_events_and_positions_and_a_rerun_duplicates_nothing(
    nats_cluster: NatsCluster, open_engine: OpenEngine, tmp_path: Path
) -> None:
    streams = SourceStreams()
    seen = await build_data_dir(tmp_path / "data", streams)
    assert seen[streams.trimmed][0]["sequence"] > 1  # retention really moved the first sequence

    first_run = migrate(nats_cluster, tmp_path / "data")
    assert first_run.returncode == 0, first_run.stderr
    assert "event ids differ" in first_run.stdout
    target = await open_engine()
    for name in streams.names:
        copied = await everything(target, name)
        assert contents(copied) == contents(seen[name])
        assert [e["eventId"] for e in copied] != [e["eventId"] for e in seen[name]]
    assert (await target.describe_stream(streams.audit))["retention"] == {"maxAgeSeconds": 86_400.0}

    shift = seen[streams.trimmed][0]["sequence"] - 1
    for name in streams.names:
        source_rows = {(r["consumer"], r["eventName"]): r for r in seen["lag"][name]}
        target_rows = {(r["consumer"], r["eventName"]): r for r in await target.consumer_lag(name)}
        assert source_rows.keys() == target_rows.keys()
        for key, row in source_rows.items():
            moved = target_rows[key]
            assert moved["position"] == row["position"] - (shift if name == streams.trimmed else 0)
            assert (moved["acknowledged"], moved["behind"]) == (row["acknowledged"], row["behind"])
            assert await unacked_payloads(target, name, *key) == seen["unacked"][(name, *key)]
    assert seen["unacked"][(streams.orders, "billing", "OrderPlaced")][0]["k"] == 751  # placed[500]
    with pytest.raises(StreamLocked):  # the owner came along
        await target.append(streams.orders, "someone else", event("OrderPlaced", 0), None, None)

    second_run = migrate(nats_cluster, tmp_path / "data")
    assert second_run.returncode == 0, second_run.stderr
    assert "3 streams, 0 events appended" in second_run.stdout
    for name in streams.names:
        assert contents(await everything(target, name)) == contents(seen[name])


async def test_a_rerun_after_more_appends_and_retention_copies_only_the_new_events(
    nats_cluster: NatsCluster, open_engine: OpenEngine, tmp_path: Path
) -> None:
    stream = f"Growing {uuid.uuid4().hex[:8]}"
    config = StorageConfig(data_dir=tmp_path / "data", segment_bytes=4096)
    store = await FileStore.open(config)
    await store.append_batch(stream, "writer", [event("Tick", k) for k in range(100)], None, None)
    first_copy = contents(await everything(store, stream))
    await store.close()
    assert migrate(nats_cluster, tmp_path / "data").returncode == 0

    store = await FileStore.open(config)  # the old server ran on: more events, and retention
    await store.append_batch(stream, "writer", [event("Tick", k) for k in range(100, 140)], None, None)
    await store.set_retention(stream, None, 8192)
    remaining = await everything(store, stream)
    await store.close()
    assert remaining[0]["sequence"] > 1
    rerun = migrate(nats_cluster, tmp_path / "data")
    assert rerun.returncode == 0, rerun.stderr
    assert "40 events appended, 100 already there" in rerun.stdout
    target = await open_engine()
    copied = await everything(target, stream)
    # The stream's retention came along, so the target dropped its oldest events too; what it
    # keeps runs on without a gap or a repeat to the last event, each at the source's sequence.
    ks = [e["payload"]["k"] for e in copied]
    assert ks == list(range(ks[0], 140))
    assert [e["sequence"] for e in copied] == [k + 1 for k in ks]
    assert contents(copied) == (first_copy + contents(remaining[-40:]))[ks[0] :]


async def test_migrate_refuses_a_target_stream_it_did_not_write(
    nats_cluster: NatsCluster, open_engine: OpenEngine, tmp_path: Path
) -> None:
    stream = f"Taken {uuid.uuid4().hex[:8]}"
    target = await open_engine()
    await target.append(stream, "writer", event("Tick", -1), None, None)
    store = await FileStore.open(StorageConfig(data_dir=tmp_path / "data"))
    await store.append(stream, "writer", event("Tick", 0), None, None)
    await store.close()
    refused = migrate(nats_cluster, tmp_path / "data")
    assert refused.returncode == 1
    assert "did not write" in refused.stderr
    assert [e["payload"]["k"] for e in await everything(target, stream)] == [-1]

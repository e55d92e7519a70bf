"""Issue 11 findings 1 and 5 exactly as reported, on a real `logserver serve` process and the
real `logserver check` command: streams with `--segment-bytes 65536`, ~1,000 events of
~300 B."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from .conftest import AUTH, ServerProcess

VICTIM, BYSTANDER = "orders", "audit"
PRODUCER = {**AUTH, "X-Producer-ID": "shop", "Content-Type": "application/json"}


def logserver(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logserver", *args], capture_output=True, text=True, timeout=120
    )


def events_url(server: ServerProcess, stream: str) -> str:
    return f"{server.url}/api/v1/streams/{quote(stream, safe='')}/events"


async def append(server: ServerProcess, stream: str, count: int) -> list[str]:
    """`count` events of about 300 bytes each, in batches; their ids."""
    ids: list[str] = []
    async with aiohttp.ClientSession(headers=PRODUCER) as session:
        for start in range(0, count, 100):
            batch = [
                {"event": {"name": "OrderPlaced", "version": 1}, "payload": {"n": n, "pad": "x" * 180}}
                for n in range(start, min(start + 100, count))
            ]
            async with session.post(f"{events_url(server, stream)}:batch", data=orjson.dumps(batch)) as r:
                assert r.status == 200, await r.text()
                ids += orjson.loads(await r.read())
    return ids


async def consume(server: ServerProcess, stream: str, consumer: str) -> tuple[int, object]:
    params = {"eventName": "OrderPlaced", "limit": "1000"}
    headers = {**AUTH, "X-Consumer-ID": consumer}
    url = events_url(server, stream)
    async with aiohttp.ClientSession() as session, session.get(url, params=params, headers=headers) as r:
        return r.status, orjson.loads(await r.read())


async def health(server: ServerProcess) -> dict[str, object]:
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/health") as r:
        assert r.status == 200
        body: dict[str, object] = orjson.loads(await r.read())
        return body


async def ack(server: ServerProcess, stream: str, consumer: str, event_ids: list[str]) -> None:
    headers = {**AUTH, "X-Consumer-ID": consumer}
    async with aiohttp.ClientSession() as session:
        for event_id in event_ids:
            url = f"{events_url(server, stream)}/{event_id}"
            async with session.post(url, data={"action": "ACK"}, headers=headers) as r:
                assert r.status == 200, await r.text()


def stream_dir(server: ServerProcess, stream: str) -> Path:
    return server.data_dir / "streams" / stream


BAD_CHECKPOINTS = {
    "garbage": lambda real: b"\x8f\x01 not json at all",
    "empty": lambda real: b"",
    "half a file": lambda real: real[: len(real) // 2],
    "a JSON array": lambda real: b"[]",
    "a position that is not a number": lambda real: real.replace(b'"position":5', b'"position":"x"'),
}


async def test_finding_1_a_bad_consumers_json_refuses_only_its_stream(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(segment_bytes=65536).start()
    victims = {damage: f"orders-{n}" for n, damage in enumerate(BAD_CHECKPOINTS)}  # one damage each
    ids = {}
    for stream in victims.values():
        ids[stream] = await append(server, stream, 40)
        await ack(server, stream, "billing", ids[stream][:5])
    await append(server, BYSTANDER, 10)
    assert server.stop() == 0
    for damage, stream in victims.items():
        checkpoint = stream_dir(server, stream) / "consumers.json"
        bad = BAD_CHECKPOINTS[damage](checkpoint.read_bytes())
        assert bad != checkpoint.read_bytes()
        checkpoint.write_bytes(bad)

    server.start()  # starts: was exit 1 with a traceback
    for stream in victims.values():
        status, body = await consume(server, stream, "billing")
        assert status == 503 and isinstance(body, str) and body.startswith("Service Unavailable - ")
        assert any(
            "ERROR" in line and stream in line and "consumers.json" in line
            for line in server.log().splitlines()
        )
    status, events = await consume(server, BYSTANDER, "billing")
    assert status == 200 and isinstance(events, list) and len(events) == 10
    assert (await health(server))["damaged"] == sorted(victims.values())
    assert server.stop() == 0

    check = logserver("check", "--data-dir", str(server.data_dir))
    assert check.returncode == 1 and "consumers.json" in check.stdout
    assert all(f"DAMAGED  {stream}:" in check.stdout for stream in victims.values()), check.stdout
    repaired = logserver("check", "--repair", "--data-dir", str(server.data_dir))
    assert repaired.returncode == 0, repaired.stdout
    server.start()
    for stream in victims.values():
        status, events = await consume(server, stream, "billing")
        assert status == 200 and isinstance(events, list)
        # After a clean stop only the snapshot held position 5, and it cannot be trusted: the
        # consumer starts over (redelivered, never skipped).
        assert [e["eventId"] for e in events] == ids[stream]


async def test_finding_5_repair_keeps_999_of_1000_events_and_appends_go_on_at_1001(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(segment_bytes=65536).start()
    ids = await append(server, VICTIM, 1000)
    assert server.stop() == 0
    directory = stream_dir(server, VICTIM)
    for segment in sorted(directory.glob("*.log")):
        data = bytearray(segment.read_bytes())
        at = data.find(b'"sequence":236,')
        if at >= 0:
            data[at + 100] ^= 0x01  # one flipped byte inside record 236's payload
            segment.write_bytes(bytes(data))
            break
    else:
        pytest.fail("record 236 not found")

    check = logserver("check", "--data-dir", str(server.data_dir))
    assert check.returncode == 1 and segment.name in check.stdout
    repaired = logserver("check", "--repair", "--data-dir", str(server.data_dir))
    assert repaired.returncode == 0 and "236-236" in repaired.stdout, repaired.stdout

    server.start()
    status, events = await consume(server, VICTIM, "reader")
    assert status == 200 and isinstance(events, list), (events, repaired.stdout, server.log())
    assert [(e["sequence"], e["eventId"]) for e in events] == [
        (n, event_id) for n, event_id in enumerate(ids, 1) if n != 236
    ]
    [new_id] = await append(server, VICTIM, 1)
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.get(f"{events_url(server, VICTIM)}/{new_id}") as r:
            assert orjson.loads(await r.read())["sequence"] == 1001
        async with session.get(f"{events_url(server, VICTIM)}/{ids[235]}") as r:
            assert r.status == 404  # the lost event is reported gone, not served

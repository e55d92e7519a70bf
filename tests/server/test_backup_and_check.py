"""Backups of a live server (cp -a and `logserver backup`), `logserver check`, and the data-dir lock."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from .conftest import AUTH, ServerProcess

STREAM = "Backup Stream"


def logserver(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logserver", *args], capture_output=True, text=True, timeout=120
    )


async def load(server: ServerProcess, answered: list[str], stop: asyncio.Event) -> None:
    url = f"{server.url}/api/v1/streams/{quote(STREAM, safe='')}/events"
    headers = {**AUTH, "X-Producer-ID": "backup-producer"}
    async with aiohttp.ClientSession() as session:

        async def one_writer(n: int) -> None:
            i = 0
            while not stop.is_set():
                body = orjson.dumps({"event": {"name": "Tick", "version": 1}, "payload": {"n": n, "i": i}})
                async with session.post(url, data=body, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    answered.append(orjson.loads(await r.read()))
                i += 1

        async def one_acker() -> None:
            consumer = {**AUTH, "X-Consumer-ID": "acker"}
            while not stop.is_set():
                async with session.get(
                    url, params={"eventName": "Tick", "limit": "10"}, headers=consumer
                ) as r:
                    batch = orjson.loads(await r.read()) if r.status == 200 else []  # 404 until created
                if not batch:
                    await asyncio.sleep(0.01)
                for event in batch:
                    async with session.post(
                        f"{url}/{event['eventId']}", data={"action": "ACK"}, headers=consumer
                    ):
                        pass

        await asyncio.gather(*(one_writer(n) for n in range(4)), one_acker())


async def all_ids(server: ServerProcess) -> list[str]:
    """Every event of the stream, by paging with acks as a fresh consumer."""
    url = f"{server.url}/api/v1/streams/{quote(STREAM, safe='')}/events"
    headers = {**AUTH, "X-Consumer-ID": "verifier"}
    seen: list[str] = []
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url, params={"eventName": "Tick", "limit": "1000"}, headers=headers) as r:
                assert r.status == 200
                batch = orjson.loads(await r.read())
            if not batch:
                return seen
            seen += [e["eventId"] for e in batch]
            for event in batch:
                async with session.post(
                    f"{url}/{event['eventId']}", data={"action": "ACK"}, headers=headers
                ) as r:
                    assert r.status == 200


@pytest.mark.parametrize("method", ["cp -a", "logserver backup"])
async def test_backup_under_load_starts_and_holds_everything_answered_before_it(
    server_factory: Callable[..., ServerProcess], tmp_path: Path, method: str
) -> None:
    server = server_factory(segment_bytes=8192).start()
    answered: list[str] = []
    stop = asyncio.Event()
    loader = asyncio.create_task(load(server, answered, stop))
    await asyncio.sleep(0.7)
    before_copy = list(answered)
    copy = tmp_path / "copy"
    if method == "cp -a":
        result = await asyncio.to_thread(
            subprocess.run, ["cp", "-a", str(server.data_dir), str(copy)], capture_output=True
        )
        # cp exits 1 when a file vanishes between its listing and its copy; the server's temp
        # files (.name.tmp, renamed into place) do, and the copy needs none of them.
        complaints = [line for line in result.stderr.decode().splitlines() if line]
        vanished_temp = re.compile(r"cp: cannot (stat|open) '.*/\.[^/]*\.tmp'.*No such file or directory")
        assert result.returncode == 0 or all(vanished_temp.match(c) for c in complaints), complaints
    else:
        result = await asyncio.to_thread(logserver, "backup", str(copy), "--data-dir", str(server.data_dir))
        assert result.returncode == 0, result.stderr
    await asyncio.sleep(0.2)
    stop.set()
    await loader
    assert len(before_copy) > 20

    second = server_factory(data_dir=copy).start()  # a second server on the copy, beside the first
    stored = await all_ids(second)
    assert len(stored) == len(set(stored))
    missing = [i for i in before_copy if i not in set(stored)]
    assert not missing, f"{len(missing)} events answered before the copy are missing"


async def test_check_and_repair_through_the_command_line(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(segment_bytes=4096).start()
    answered: list[str] = []
    stop = asyncio.Event()
    loader = asyncio.create_task(load(server, answered, stop))
    deadline = asyncio.get_running_loop().time() + 30
    while len(answered) < 60 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)  # enough events for a few 4 KB segments, however busy the machine
    stop.set()
    await loader

    busy = logserver("check", "--repair", "--data-dir", str(server.data_dir))
    assert busy.returncode == 1 and "in use" in busy.stderr  # never repairs under a running server
    assert server.stop() == 0

    healthy = logserver("check", "--data-dir", str(server.data_dir))
    assert healthy.returncode == 0 and "0 damaged" in healthy.stdout, healthy.stdout

    [stream_dir] = (server.data_dir / "streams").iterdir()
    sealed = sorted(stream_dir.glob("*.log"))[1]
    data = bytearray(sealed.read_bytes())
    data[len(data) // 3] ^= 0x10
    sealed.write_bytes(bytes(data))
    damaged = logserver("check", "--data-dir", str(server.data_dir))
    assert damaged.returncode == 1 and "DAMAGED" in damaged.stdout and sealed.name in damaged.stdout

    repaired = logserver("check", "--repair", "--data-dir", str(server.data_dir))
    assert repaired.returncode == 0 and "quarantine" in repaired.stdout, repaired.stdout
    assert logserver("check", "--data-dir", str(server.data_dir)).returncode == 0

    server.start()  # serves again, with every event but the damaged one (two if a newline was hit)
    survivors = await all_ids(server)
    assert len(answered) - 2 <= len(survivors) < len(answered)
    assert set(survivors) <= set(answered)


def test_a_second_server_on_the_same_data_dir_is_refused(
    server_factory: Callable[..., ServerProcess],
) -> None:
    first = server_factory().start()
    second = server_factory(data_dir=first.data_dir)
    with pytest.raises(RuntimeError, match="in use by another logserver process"):
        second.start()

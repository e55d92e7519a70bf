"""Issue 11's damage matrix: every file kind a stream keeps x six kinds of damage, on the real
server (its HTTP listener on a real socket over the file engine) and `logserver check`.

Each case must end "repaired with nothing acknowledged lost, or loud": either the server
heals it at start (a rebuilt index) and serves every event, or the damaged stream answers
503 JSON while the other stream is served, /health names it, an ERROR log line names the
file, `check` exits non-zero naming stream and file; then `check --repair` keeps every
record that is still intact with its id and sequence, never redelivers less than the
consumer had left (redelivering more is allowed), and new appends go on after the last
sequence ever used.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from logserver.auth import Authenticator, hash_password
from logserver.cli import main as logserver_main
from logserver.config import ServerConfig
from logserver.filestore import FileStore
from logserver.http import build_server
from logserver.server import start_listener

from .conftest import AUTH, PASSWORD, USER

VICTIM, BYSTANDER = "victim", "bystander"
EVENTS, FIRST_ACKS, LATER_ACKS, OUT_OF_ORDER = 150, 60, 65, 70
SEGMENT_BYTES = 8192

# Builds the data dir in a child process: appends, acks 1..60 and 70, stops cleanly (the
# snapshot and every segment's end recorded), starts again, acks 61..65 (ack log lines)
# and dies without closing, as a crash right after those answers.
BUILDER = f"""
import asyncio, os, sys
from pathlib import Path
from logserver.filestore import FileStore, FsyncPolicy, StorageConfig

def event(i):
    return {{"event": {{"name": "OrderPlaced", "version": 1}}, "payload": {{"i": i, "pad": "x" * 200}}}}

async def main():
    config = StorageConfig(Path(sys.argv[1]), fsync=FsyncPolicy.ALWAYS, segment_bytes={SEGMENT_BYTES})
    store = await FileStore.open(config)
    ids = [await store.append("{VICTIM}", "p", event(i)) for i in range({EVENTS})]
    for i in range(5):
        await store.append("{BYSTANDER}", "p", event(i))
    for n in [*range(1, {FIRST_ACKS} + 1), {OUT_OF_ORDER}]:
        await store.ack("{VICTIM}", "c", ids[n - 1])
    await store.close()
    store = await FileStore.open(config)
    for n in range({FIRST_ACKS} + 1, {LATER_ACKS} + 1):
        await store.ack("{VICTIM}", "c", ids[n - 1])
    os._exit(0)

asyncio.run(main())
"""


@dataclass(frozen=True)
class Template:
    """The data dir every case starts from, and the victim's records as they were."""

    data_dir: Path
    records: list[tuple[int, str, bytes]]  # (sequence, eventId, stored line with its newline)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    data_dir = tmp_path_factory.mktemp("template") / "data"
    built = subprocess.run([sys.executable, "-c", BUILDER, str(data_dir)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (data_dir / "users").write_text(f"{USER}:{hash_password(PASSWORD)}\n")
    records = []
    for path in sorted((data_dir / "streams" / VICTIM).glob("*.log")):
        for line in path.read_bytes().splitlines(keepends=True):
            record = orjson.loads(line)
            records.append((record["sequence"], record["eventId"], line))
    assert [r[0] for r in records] == list(range(1, EVENTS + 1))
    assert (data_dir / "streams" / VICTIM / "consumers.acks").read_bytes().count(b"\n") > 3
    return Template(data_dir, records)


# ---- the file kinds and the damage ---------------------------------------------------------


def active_log(directory: Path) -> Path:
    return max(directory.glob("*.log"))


def sealed_log(directory: Path) -> Path:
    return sorted(directory.glob("*.log"))[1]


def sealed_idx(directory: Path) -> Path:
    return sorted(directory.glob("*.log"))[1].with_suffix(".idx")


FILE_KINDS: dict[str, Callable[[Path], Path]] = {
    "active .log": active_log,
    "sealed .log": sealed_log,
    ".idx": sealed_idx,
    "consumers.json": lambda d: d / "consumers.json",
    "consumers.acks": lambda d: d / "consumers.acks",
    "meta.json": lambda d: d / "meta.json",
}


def edit_a_value(path: Path, data: bytes) -> bytes:
    """Change one value and keep the length, as a person with an editor would."""
    if path.suffix == ".log":  # one event's payload, in the middle record
        lines = data.splitlines(keepends=True)
        middle = len(lines) // 2
        lines[middle] = lines[middle].replace(b'"pad":"x', b'"pad":"y', 1)
        return b"".join(lines)
    if path.name == "consumers.json":  # finding 3: position 60 edited to 99
        return data.replace(b'"position":60', b'"position":99', 1)
    if path.name == "consumers.acks":  # the third line's position
        lines = data.splitlines(keepends=True)
        lines[3] = lines[3].replace(b",63,", b",93,", 1)
        return b"".join(lines)
    if path.name == "meta.json":
        return data.replace(b'"owner": "p"', b'"owner": "q"', 1)
    edited = bytearray(data)  # an index: a digit of its header
    at = data.index(b'"count":') + 8
    edited[at] = ord("9") if edited[at] != ord("9") else ord("8")
    return bytes(edited)


def flip_a_byte(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01  # (0x20 can turn a hex digit of a checksum to upper case)
    return bytes(flipped)


DAMAGES: dict[str, Callable[[Path, bytes], bytes | None]] = {
    "garbage": lambda _, data: (b"\x8f\x01garbage{not json\xff\xfe\n" * (len(data) // 24 + 1))[: len(data)],
    "empty": lambda _, data: b"",
    "truncated": lambda _, data: data[: len(data) * 6 // 10],
    "deleted": lambda _, data: None,
    "flipped byte mid-file": lambda _, data: flip_a_byte(data),
    "edited value": edit_a_value,
}


def damage_file(path: Path, damage: str) -> bytes | None:
    """Apply the damage; returns the file's new bytes (None: deleted)."""
    data = path.read_bytes()
    damaged = DAMAGES[damage](path, data)
    assert damaged != data, "the damage must change the file"
    if damaged is None:
        path.unlink()
    else:
        path.write_bytes(damaged)
    return damaged


def intact_after(template: Template, path: Path, damaged: bytes | None) -> list[tuple[int, str]]:
    """(sequence, id) of every record whose stored line is still whole after the damage."""
    original = template.data_dir / "streams" / VICTIM / path.name
    in_file = set(original.read_bytes().splitlines(keepends=True)) if path.suffix == ".log" else set()
    survivors = b"\n" + (damaged or b"")
    return [(s, i) for s, i, line in template.records if line not in in_file or b"\n" + line in survivors]


# ---- the real server ------------------------------------------------------------------------


@asynccontextmanager
async def serving(data_dir: Path) -> AsyncIterator[tuple[aiohttp.ClientSession, str, FileStore]]:
    """`logserver serve`'s engine and listener on a real socket, and a client session."""
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        segment_bytes=SEGMENT_BYTES,
        users_file=data_dir / "users",
    )
    store = await FileStore.open(config.storage_config())
    runner = await start_listener(build_server(store, Authenticator(config.users_path), config), config, None)
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}", headers=AUTH) as session:
            yield session, f"http://{host}:{port}", store
    finally:
        await runner.cleanup()
        await store.close()


def events_url(stream: str) -> str:
    return f"/api/v1/streams/{quote(stream, safe='')}/events"


async def consume(session: aiohttp.ClientSession, stream: str, consumer: str) -> tuple[int, Any]:
    params = {"eventName": "OrderPlaced", "limit": "1000"}
    async with session.get(events_url(stream), params=params, headers={"X-Consumer-ID": consumer}) as r:
        return r.status, orjson.loads(await r.read())


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = logserver_main(["check", *args])
    return code, capsys.readouterr().out


CASES = [(kind, damage) for kind in FILE_KINDS for damage in DAMAGES]


@pytest.mark.parametrize(("kind", "damage"), CASES, ids=[f"{k}-{d}" for k, d in CASES])
async def test_damage_is_repaired_with_nothing_acknowledged_lost_or_loud(
    template: Template,
    tmp_path: Path,
    kind: str,
    damage: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(template.data_dir, data_dir)
    stream_dir = data_dir / "streams" / VICTIM
    path = FILE_KINDS[kind](stream_dir)
    damaged = damage_file(path, damage)
    expected = intact_after(template, path, damaged)
    unacked = {s for s, _ in expected if s > LATER_ACKS and s != OUT_OF_ORDER}
    caplog.set_level(logging.INFO)

    async with serving(data_dir) as (session, _, _):  # the server starts whatever the damage
        status, body = await consume(session, VICTIM, "audit")
        bystander_status, bystander = await consume(session, BYSTANDER, "audit")
        assert bystander_status == 200 and len(bystander) == 5  # other streams are served
        async with session.get("/health") as r:
            health = orjson.loads(await r.read())
        loud = status != 200
        if loud:
            assert status == 503 and isinstance(body, str) and body.startswith("Service Unavailable - ")
            assert VICTIM in health["damaged"]
        else:  # healed at start (a rebuilt index, a torn ack-log tail): everything still there
            assert (
                [e["eventId"] for e in body] == [i for _, i in expected] == [r[1] for r in template.records]
            )
            assert "damaged" not in health
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    if loud:
        assert any(path.name in message for message in errors), errors
        code, report = run_check(capsys, "--data-dir", str(data_dir))
        assert code != 0 and VICTIM in report and path.name in report, report
        code, report = run_check(capsys, "--data-dir", str(data_dir), "--repair")
        assert code == 0, report
    else:
        assert any(path.name in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert run_check(capsys, "--data-dir", str(data_dir))[0] == 0

    async with serving(data_dir) as (session, _, _):
        status, body = await consume(session, VICTIM, "audit-after")
        assert status == 200, body
        assert [(e["sequence"], e["eventId"]) for e in body] == expected  # intact: same ids, sequences
        status, redelivered = await consume(session, VICTIM, "c")
        delivered = {e["sequence"] for e in redelivered}
        assert status == 200 and unacked <= delivered  # nothing the consumer had left is skipped
        if kind not in ("consumers.json", "consumers.acks"):
            assert delivered == unacked  # its state was intact: not a single extra redelivery
        headers = {"X-Producer-ID": "p", "Content-Type": "application/json"}
        new = {"event": {"name": "OrderPlaced", "version": 1}}
        async with session.post(events_url(VICTIM), data=orjson.dumps(new), headers=headers) as r:
            assert r.status == 200, await r.text()
            new_id = orjson.loads(await r.read())
        async with session.get(f"{events_url(VICTIM)}/{new_id}") as r:
            assert orjson.loads(await r.read())["sequence"] == EVENTS + 1  # no lost sequence reused

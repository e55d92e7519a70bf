"""kill -9 of a process that appends and acks, and a model-based test of the whole engine."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from logserver.engine import EventNotFound
from logserver.filestore import FileStore, FsyncPolicy, StorageConfig

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from logserver.filestore import FileStore, FsyncPolicy, StorageConfig

    async def main() -> None:
        sys.stdout.reconfigure(write_through=True)  # each line is written as soon as it is reported
        config = StorageConfig(Path(sys.argv[1]), fsync=FsyncPolicy(sys.argv[2]), segment_bytes=8192)
        store = await FileStore.open(config)
        i = 0
        while True:
            body = {"event": {"name": "N", "version": 1}}
            batch = [store.append("crash", "p", body | {"payload": {"i": i + k}}) for k in range(8)]
            for event_id in await asyncio.gather(*batch):
                sys.stdout.write(f"appended {event_id}\\n")  # one write (print makes two, unbuffered)
            await store.ack("crash", "c", event_id)
            sys.stdout.write(f"acked {event_id}\\n")
            i += 8

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
@pytest.mark.parametrize("delay", [0.3, 0.8])
async def test_kill_9_loses_nothing_that_was_reported_done(tmp_path: Path, policy: str, delay: float) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), policy], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    reported: list[str] = []
    acked: str | None = None
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:  # read while it runs: the kill lands mid-append
        kind, event_id = child.stdout.readline().split()
        if kind == "appended":
            reported.append(event_id)
        else:
            acked = event_id
    os.kill(child.pid, signal.SIGKILL)
    for line in child.stdout:  # lines it printed before dying were also answered
        if line.endswith("\n"):  # a line the kill cut short was not fully reported
            kind, event_id = line.split()
            if kind == "appended":
                reported.append(event_id)
            else:
                acked = event_id
    child.wait()
    assert reported, "the child appended nothing"

    store = await FileStore.open(StorageConfig(tmp_path, segment_bytes=8192))
    try:
        stream = store.stream("crash")
        stored = [
            orjson.loads(stream.log.read_line(s))["eventId"] for s in range(1, stream.log.next_sequence)
        ]
        assert stored[: len(reported)] == reported  # every one, once, in order
        assert len(set(stored)) == len(stored)
        if acked is not None:
            position = stream.consumers.checkpoint.get("c", "N")
            sequence = stored.index(acked) + 1
            assert position is not None
            assert sequence <= position.position or sequence in position.acked
    finally:
        await store.close()


class EngineMatchesModel(RuleBasedStateMachine):
    """Random appends, reads, acks and reopens against a list-and-sets model."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="logserver-model-"))
        self.config = StorageConfig(self.dir, fsync=FsyncPolicy.NEVER, segment_bytes=700)
        self.store = self.run(FileStore.open(self.config))
        self.events: list[tuple[str, str]] = []  # (event id, name) in append order
        self.acked: dict[tuple[str, str], set[str]] = {}

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    @rule(name=st.sampled_from(["A", "B", "C d"]), size=st.integers(0, 300))
    def append(self, name: str, size: int) -> None:
        body = {"event": {"name": name, "version": 1}, "payload": {"pad": "x" * size}}
        self.events.append((self.run(self.store.append("s", "p", body)), name))

    @rule(
        consumer=st.sampled_from(["c1", "c2"]),
        name=st.sampled_from(["A", "B", "C d"]),
        limit=st.integers(1, 6),
    )
    def read(self, consumer: str, name: str, limit: int) -> None:
        if not self.events:
            return
        got = orjson.loads(self.run(self.store.consume("s", name, consumer, limit)))
        done = self.acked.get((consumer, name), set())
        expected = [i for i, n in self.events if n == name and i not in done][:limit]
        assert [e["eventId"] for e in got] == expected

    @precondition(lambda self: bool(self.events))
    @rule(consumer=st.sampled_from(["c1", "c2"]), pick=st.integers(0, 10_000))
    def ack(self, consumer: str, pick: int) -> None:
        event_id, name = self.events[pick % len(self.events)]
        self.run(self.store.ack("s", consumer, event_id))
        self.acked.setdefault((consumer, name), set()).add(event_id)

    @precondition(lambda self: bool(self.events))
    @rule(consumer=st.sampled_from(["c1", "c2"]))
    def ack_unknown(self, consumer: str) -> None:
        with pytest.raises(EventNotFound):
            self.run(self.store.ack("s", consumer, self.events[0][0][:-4] + "ffff"))

    @rule()
    def reopen(self) -> None:
        self.run(self.store.close())
        self.store = self.run(FileStore.open(self.config))

    @invariant()
    def positions_never_pass_an_unacked_event(self) -> None:
        if not self.events:
            return
        stream = self.store.stream("s")
        for (consumer, name), done in self.acked.items():
            entry = stream.consumers.checkpoint.get(consumer, name)
            assert entry is not None
            for sequence, (event_id, n) in enumerate(self.events, start=1):
                if n == name and sequence <= entry.position:
                    assert event_id in done

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestEngineMatchesModel = EngineMatchesModel.TestCase
TestEngineMatchesModel.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

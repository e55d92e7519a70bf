"""`logserver migrate`: copy every stream of a file engine's data dir into another engine.

Everything goes through the engine interface (`logserver.engine.Engine`): the source is read
with `list_streams`, `history`, `consumer_lag` and `consume` (which moves nothing), the target
written with `append_batch`, `set_retention`, `seek` and `ack_many`.

Re-runs are safe. Each batch carries `X-Expected-Sequence` (the target's last sequence) and an
`Idempotency-Key` derived from (stream, first source sequence of the batch), so a retried batch
is stored once; a later run starts where the target stream ends, after checking that its last
event was written by a migration of the same stream (anything else is refused). Consumer
positions are set with `seek`, out-of-order acks restored with `ack_many`: both are idempotent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from logserver.config import ServerConfig
from logserver.engine import (
    DEAD_LETTER_SUFFIX,
    Bound,
    ConsumerLag,
    Engine,
    EngineError,
    HistoryQuery,
    StreamInfo,
    StreamNotFound,
)

BATCH_EVENTS = 500  # events per append_batch (the JetStream engine takes up to 1000)
ACK_CHUNK = 1000  # event ids per ack_many
# A consumer with more unacknowledged events than this keeps only its position: its
# out-of-order acks (events acked above it) are then redelivered, which at-least-once allows.
MAX_UNACKED_READ = 100_000
KEY_PREFIX = "logserver-migrate-"


class MigrationRefused(EngineError):
    """The target cannot take the copy (another owner, events the migration did not write)."""


def migration_key(stream: str, first_sequence: int) -> str:
    """The Idempotency-Key of the batch that starts at `first_sequence` of the source stream."""
    return f"{stream_key_prefix(stream)}{first_sequence}"


def stream_key_prefix(stream: str) -> str:
    """What every migration key of `stream` starts with (a digest: names may be 255 characters)."""
    return f"{KEY_PREFIX}{hashlib.sha256(stream.encode()).hexdigest()[:32]}-"


@dataclass
class StreamReport:
    """What one stream's migration did (or why it was skipped); plain data, filled by one Migration."""

    name: str
    copied: int = 0  # events this run appended
    already: int = 0  # events an earlier run had appended
    sequence_shift: int = 0  # target sequence = source sequence - shift
    positions: int = 0  # (consumer, event name) positions set
    acks_restored: int = 0  # out-of-order acks applied on the target
    acks_redelivered: int = 0  # out-of-order acks not carried over (too many unacked events)
    skipped: str | None = None

    def line(self) -> str:
        """One line of the summary."""
        if self.skipped is not None:
            return f"skipped  {self.name}: {self.skipped}"
        text = (
            f"copied   {self.name}: {self.copied} events appended, {self.already} already there, "
            f"{self.positions} consumer positions, {self.acks_restored} out-of-order acks"
        )
        if self.sequence_shift:
            text += f"; sequences shifted down by {self.sequence_shift}"
        if self.acks_redelivered:
            text += f"; {self.acks_redelivered} out-of-order acks not carried over (redelivered)"
        return text


class Migration:
    """Copies the streams of `source` into `target`, one stream and one batch at a time.

    Owns nothing but the two engines it was given (the caller opens and closes them).
    Sequential: one coroutine drives it; the target should have no other writer meanwhile.
    """

    def __init__(self, source: Engine, target: Engine, batch_events: int = BATCH_EVENTS) -> None:
        self._source = source
        self._target = target
        self._batch_events = batch_events

    async def run(self) -> list[StreamReport]:
        """Migrate every stream of the source; returns a report per stream, sorted by name."""
        return [await self.migrate_stream(info) for info in await self._source.list_streams()]

    async def migrate_stream(self, info: StreamInfo) -> StreamReport:
        """Copy one stream's events, retention and consumer positions."""
        name = info["name"]
        report = StreamReport(name)
        if "damaged" in info:
            report.skipped = f"damaged ({info['damaged']}): run `logserver check --repair` first"
            return report
        if name.endswith(DEAD_LETTER_SUFFIX):
            report.skipped = "a dead-letter stream: only the server appends to one (read it with history)"
            return report
        report.already, report.sequence_shift = await self._copied_already(name, info)
        report.copied = await self._copy_events(name, info["owner"], report)
        retention = info.get("retention")
        if retention:
            max_bytes = retention.get("maxBytes")
            await self._target.set_retention(
                name, retention.get("maxAgeSeconds"), int(max_bytes) if max_bytes is not None else None
            )
        for row in await self._source.consumer_lag(name):
            await self._move_consumer(name, row, report)
        return report

    async def _copied_already(self, name: str, info: StreamInfo) -> tuple[int, int]:
        """The target's last sequence from earlier runs (0: none yet), and source minus target sequence.

        The shift is read from the target, not the source: retention may have dropped more of
        the source's oldest events since the earlier run.
        """
        first = info.get("firstSequence", 1)  # of an empty stream: its last sequence + 1
        try:
            existing = await self._target.describe_stream(name)
        except StreamNotFound:
            return 0, first - 1
        if existing["owner"] != info["owner"]:
            owners = f"owner {existing['owner']!r}, not {info['owner']!r}"
            raise MigrationRefused(f"stream {name!r} exists on the target with {owners}")
        last = existing.get("lastSequence", 0)
        if last == 0:
            return 0, first - 1
        shift = await self._shift_of_last_batch(name, last)
        if last + shift > info.get("lastSequence", 0):
            raise MigrationRefused(f"stream {name!r} on the target holds more events than the source")
        return last, shift

    async def _shift_of_last_batch(self, name: str, last: int) -> int:
        """Source minus target sequence, from the migration key of the target's last batch."""
        start = max(last - self._batch_events + 1, 1)
        page = await self._target.history(
            name, HistoryQuery(start=Bound(sequence=start), limit=last - start + 1)
        )
        events: list[dict[str, Any]] = orjson.loads(page.body)
        prefix = stream_key_prefix(name)
        key = str(events[-1].get("idempotencyKey", "")) if events else ""
        if not key.startswith(prefix) or events[-1]["sequence"] != last:
            raise MigrationRefused(
                f"stream {name!r} on the target holds events `logserver migrate` did not write"
            )
        batch_first = int(next(e["sequence"] for e in events if e.get("idempotencyKey") == key))
        return int(key.removeprefix(prefix)) - batch_first

    async def _copy_events(self, name: str, owner: str, report: StreamReport) -> int:
        """Append the source's events after those the target holds; returns how many were appended."""
        copied = 0
        expected_last = report.already
        cursor: int | None = expected_last + report.sequence_shift + 1
        while cursor is not None:
            query = HistoryQuery(start=Bound(sequence=cursor), limit=self._batch_events)
            page = await self._source.history(name, query)
            events: list[dict[str, Any]] = orjson.loads(page.body)
            if not events:
                break
            check_contiguous(name, events, expected_last + report.sequence_shift + 1)
            key = migration_key(name, events[0]["sequence"])
            ids = await self._target.append_batch(name, owner, events, expected_last, key)
            copied += len(ids)
            expected_last += len(ids)
            cursor = page.next_sequence
        return copied

    async def _move_consumer(self, name: str, row: ConsumerLag, report: StreamReport) -> None:
        """Set one (consumer, event name) position on the target, then its out-of-order acks."""
        shift = report.sequence_shift
        position = max(row["position"] - shift, 0)
        await self._target.seek(name, row["consumer"], Bound(sequence=position + 1), row["eventName"])
        report.positions += 1
        if not row["acknowledgedOutOfOrder"]:
            return
        acked = await self._acked_above_position(name, row)
        if acked is None:
            report.acks_redelivered += row["acknowledgedOutOfOrder"]
            return
        target_ids = [await self._target_event_id(name, sequence - shift) for sequence in acked]
        for start in range(0, len(target_ids), ACK_CHUNK):
            await self._target.ack_many(name, row["consumer"], target_ids[start : start + ACK_CHUNK])
        report.acks_restored += len(target_ids)

    async def _acked_above_position(self, name: str, row: ConsumerLag) -> list[int] | None:
        """Source sequences the consumer acked above its position (None: too many to read).

        They are the events of the name after the position that a consume does not return.
        """
        unacked_count = row["behind"]
        if unacked_count > MAX_UNACKED_READ:
            return None
        unacked: set[int] = set()
        if unacked_count:
            body = await self._source.consume(name, row["eventName"], row["consumer"], unacked_count)
            unacked = {event["sequence"] for event in orjson.loads(body)}
        acked: list[int] = []
        cursor: int | None = row["position"] + 1
        while cursor is not None and len(acked) < row["acknowledgedOutOfOrder"]:
            query = HistoryQuery(
                start=Bound(sequence=cursor), limit=self._batch_events, event_name=row["eventName"]
            )
            page = await self._source.history(name, query)
            for event in orjson.loads(page.body):
                if event["sequence"] not in unacked:
                    acked.append(event["sequence"])
            cursor = page.next_sequence
        return acked[: row["acknowledgedOutOfOrder"]]

    async def _target_event_id(self, name: str, sequence: int) -> str:
        """The target's id of its event at `sequence` (ids encode each engine's own prefix)."""
        page = await self._target.history(name, HistoryQuery(start=Bound(sequence=sequence), limit=1))
        event_id: str = orjson.loads(page.body)[0]["eventId"]
        return event_id


def check_contiguous(name: str, events: list[dict[str, Any]], expected: int) -> None:
    """Raise unless the page's sequences run on from `expected` without a gap (positions map by offset)."""
    for offset, event in enumerate(events):
        if event["sequence"] != expected + offset:
            raise MigrationRefused(
                f"stream {name!r}: expected sequence {expected + offset}, read {event['sequence']}"
            )


async def migrate_data_dir(data_dir: Path, config: ServerConfig) -> list[StreamReport]:
    """Open the data dir (taking its lock) and the JetStream cluster `config` names; copy; close both."""
    from logserver.filestore import FileStore
    from logserver.jetstream import JetStreamEngine, settings_from

    if not (data_dir / "streams").is_dir():
        raise FileNotFoundError(f"{data_dir} is not a logserver data dir (no streams/ in it)")
    source = await FileStore.open(ServerConfig(data_dir=data_dir).storage_config())
    try:
        target = await JetStreamEngine.open(settings_from(config))
        try:
            return await Migration(source, target).run()
        finally:
            await target.close()
    finally:
        await source.close()

"""BatchAppender: a batch of events appended all or nothing (JetStream's atomic batch publish)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError

from logserver.engine import Body, EngineUnavailable, InvalidRequest, check_name

from .appends import announce, internal_msg_id, refusal, stored_body
from .catalog import StreamCatalog
from .connection import PUBLISH_ATTEMPT_SECONDS, Cluster
from .names import digest, format_event_id
from .reads import READ_PAGE
from .records import StreamRecord
from .retry import RETRY_PAUSE_SECONDS, cluster_errors
from .sightings import Sightings

MAX_ATOMIC_BATCH = 1000  # the server's limit of messages in one atomic batch
BATCH_DUPLICATE_MESSAGE_ID = 10201


class BatchAppender:
    """Appends a batch as one atomic batch publish (raw Nats-Batch-* headers: nats-py has no helper).

    Owns the batch-keys bucket's use: a keyed batch's (first, count) is kept there for the
    idempotency window. Invariant: a batch is stored whole or not at all, once per
    Nats-Msg-Id (the key, else a random id shared by the attempts): a repeat answers the
    stored batch's sequences. Concurrency: batches run concurrently with every other call,
    here and in other gateways; JetStream serialises commits. Event loop only.
    """

    def __init__(self, cluster: Cluster, catalog: StreamCatalog, sightings: Sightings) -> None:
        self._nc = cluster.nc
        self._reader = cluster.reader
        self._batch_keys = cluster.batch_keys
        self._catalog = catalog
        self._sightings = sightings
        self._limits = cluster.settings.limits
        self._timeout = cluster.settings.publish_timeout_seconds

    async def append_batch(
        self,
        stream: str,
        producer_id: str,
        bodies: list[Body],
        expected_last: int | None,
        key: str | None,
    ) -> list[str]:
        """Append every body or none; the event ids in order."""
        most = min(self._limits.max_batch, MAX_ATOMIC_BATCH)
        if not 1 <= len(bodies) <= most:
            raise InvalidRequest(f"a batch holds 1 to {most} events")
        record = await self._catalog.writable(stream, producer_id, expected_last)
        for index, body in enumerate(bodies):
            check_name(
                body["event"]["name"], f"events[{index}].event.name", self._limits.max_event_name_chars
            )
        if key is not None:
            check_name(key, "idempotency key")
        msg_id = key if key is not None else internal_msg_id()
        first, count = await self._publish_batch(record, producer_id, bodies, expected_last, key, msg_id)
        last_by_name: dict[str, int] = {}
        for offset, body in enumerate(bodies[:count]):
            last_by_name[body["event"]["name"]] = first + offset
        await announce(self._nc, record, last_by_name)
        return [format_event_id(record.prefix, first + k) for k in range(count)]

    async def _publish_batch(
        self,
        record: StreamRecord,
        producer_id: str,
        bodies: list[Body],
        expected_last: int | None,
        key: str | None,
        msg_id: str,
    ) -> tuple[int, int]:
        """One atomic batch publish, retried through elections; returns (first sequence, count).
        A batch whose Nats-Msg-Id was stored before (a retried request, or a retry after a lost
        commit answer) answers that batch's sequences."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        names = record.names
        payloads = [(names.subject(b["event"]["name"]), stored_body(producer_id, key, b)) for b in bodies]
        while True:
            try:
                answer = await self._send_batch(payloads, expected_last, msg_id)
            except (NatsError, TimeoutError) as exc:
                failure = repr(exc)
            else:
                error = answer.get("error")
                if error is None and "seq" in answer:
                    last, count = int(answer["seq"]), int(answer.get("count", len(bodies)))
                    self._sightings.saw(record.name, last)
                    if key is not None:
                        await self._remember_batch(record, key, last - count + 1, count)
                    return last - count + 1, count
                if (error or {}).get("err_code") == BATCH_DUPLICATE_MESSAGE_ID:
                    return await self._stored_batch(record, key, msg_id)
                failure = refusal(error or {}, {"Nats-Expected-Last-Sequence": str(expected_last or 0)})
            if asyncio.get_running_loop().time() > deadline:
                raise EngineUnavailable(f"stream {record.name!r} did not commit the batch: {failure}")
            await asyncio.sleep(RETRY_PAUSE_SECONDS)

    async def _send_batch(
        self, payloads: list[tuple[str, bytes]], expected_last: int | None, msg_id: str
    ) -> dict[str, Any]:
        """The messages of one batch attempt; the commit's answer (a pub ack or an error)."""
        batch_id = secrets.token_hex(16)
        last = len(payloads)
        for number, (subject, data) in enumerate(payloads, start=1):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
            if number == 1:
                headers["Nats-Msg-Id"] = msg_id
                if expected_last is not None:
                    headers["Nats-Expected-Last-Sequence"] = str(expected_last)
            if number == last:
                headers["Nats-Batch-Commit"] = "1"
            if number == 1 or number == last:  # the first is confirmed (an early refusal), the last commits
                reply = await self._nc.request(subject, data, PUBLISH_ATTEMPT_SECONDS, headers=headers)
                if reply.data:
                    answer: dict[str, Any] = orjson.loads(reply.data)
                    if number == last or "error" in answer:
                        return answer
            else:
                await self._nc.publish(subject, data, headers=headers)
        raise EngineUnavailable("the batch commit was not answered")

    async def _remember_batch(self, record: StreamRecord, key: str, first: int, count: int) -> None:
        """Keep a keyed batch's sequences for the idempotency window (a repeat answers them)."""
        with cluster_errors("recording the batch's idempotency key"):
            await self._batch_keys.put(
                f"{record.names.key}.{digest(key)}", orjson.dumps({"first": first, "count": count})
            )

    async def _stored_batch(self, record: StreamRecord, key: str | None, msg_id: str) -> tuple[int, int]:
        """The (first, count) of the stored batch whose first message carries `msg_id`."""
        if key is not None:
            with cluster_errors("reading the batch's idempotency key"):
                try:
                    entry = await self._batch_keys.get(f"{record.names.key}.{digest(key)}")
                except KeyNotFoundError:
                    entry = None
            if entry is not None and entry.value:
                seen = orjson.loads(entry.value)
                return int(seen["first"]), int(seen["count"])
        return await self._scan_for_batch(record, msg_id)

    async def _scan_for_batch(self, record: StreamRecord, msg_id: str) -> tuple[int, int]:
        """Find a batch by its first message's Nats-Msg-Id in the idempotency window (the rare
        path: the commit was stored but its answer lost, or its key record not yet written)."""
        since = datetime.now(UTC) - timedelta(seconds=self._limits.idempotency_window_seconds + 5)
        js_stream = record.names.js_stream
        page = await self._reader.batch_from_time(js_stream, since, READ_PAGE)
        first: int | None = None
        while page:
            for message in page:
                if first is None and message.headers.get("Nats-Msg-Id") == msg_id:
                    first = message.sequence
                if first is not None and message.headers.get("Nats-Batch-Commit"):
                    return first, message.sequence - first + 1
            page = await self._reader.batch(js_stream, page[-1].sequence + 1, None, READ_PAGE)
        raise EngineUnavailable(f"stream {record.name!r}: a stored batch was not found again")

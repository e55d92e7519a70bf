"""Appender: single appends, with Idempotency-Key (Nats-Msg-Id) and X-Expected-Sequence."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from typing import Any

import orjson
from nats.aio.client import Client
from nats.errors import Error as NatsError

from logserver.engine import Body, EngineUnavailable, InvalidRequest, SequenceMismatch, check_name

from .catalog import StreamCatalog
from .connection import PUBLISH_ATTEMPT_SECONDS, Cluster
from .names import format_event_id
from .records import StreamRecord
from .retry import RETRY_PAUSE_SECONDS
from .sightings import Sightings

SERVER_FIELDS = frozenset(
    ("_crc", "_more", "eventId", "stream", "sequence", "producerId", "receivedAt", "idempotencyKey")
)
WRONG_LAST_SEQUENCE = 10071
INTERNAL_MSG_ID_PREFIX = "logserver-append-"
_CURRENT_SEQUENCE = re.compile(r"wrong last sequence: (\d+)")


class Appender:
    """Appends one event: publish with a Nats-Msg-Id, wait for the stream's ack, announce it.

    Owns nothing but its collaborators. Invariant: every attempt of one append carries the
    same Nats-Msg-Id (the client's Idempotency-Key, else a random one), so retries through a
    leader election store it once; a sequence is returned only from the stream's ack.
    Concurrency: appends run concurrently, here and in other gateways; JetStream orders them
    and checks Nats-Expected-Last-Sequence. Event loop only.
    """

    def __init__(self, cluster: Cluster, catalog: StreamCatalog, sightings: Sightings) -> None:
        self._nc = cluster.nc
        self._catalog = catalog
        self._sightings = sightings
        self._limits = cluster.settings.limits
        self._timeout = cluster.settings.publish_timeout_seconds

    async def append(
        self,
        stream: str,
        producer_id: str,
        body: Body,
        expected_last: int | None,
        key: str | None,
        server: bool = False,
    ) -> str:
        """One append; `server` for the engine's own (dead letters), which reserved streams take."""
        record = await self._catalog.writable(stream, producer_id, expected_last, server)
        event_name = body["event"]["name"]
        check_name(event_name, "event.name", self._limits.max_event_name_chars)
        if key is not None:
            check_name(key, "idempotency key")
        headers = {"Nats-Msg-Id": key if key is not None else internal_msg_id()}
        if expected_last is not None:
            headers["Nats-Expected-Last-Sequence"] = str(expected_last)
        data = stored_body(producer_id, key, body)
        subject = record.names.subject(event_name)
        sequence = await self._publish(record, subject, data, headers)
        await announce(self._nc, record, {event_name: sequence})
        return format_event_id(record.prefix, sequence)

    async def _publish(self, record: StreamRecord, subject: str, data: bytes, headers: dict[str, str]) -> int:
        """Publish and wait for the stream's acknowledgement, retrying through leader elections.

        Every attempt carries the same Nats-Msg-Id, so a retry of an append that was stored
        answers the stored one (the issue's probe: exactly once through a leader kill).
        """
        deadline = asyncio.get_running_loop().time() + self._timeout
        while True:
            try:
                reply = await self._nc.request(subject, data, PUBLISH_ATTEMPT_SECONDS, headers=headers)
                answer = orjson.loads(reply.data) if reply.data else {}
            except (NatsError, TimeoutError) as exc:
                failure: str = repr(exc)
            else:
                error = answer.get("error")
                if error is None and "seq" in answer:
                    sequence = int(answer["seq"])
                    self._sightings.saw(record.name, sequence)
                    return sequence
                failure = refusal(error or {}, headers)
            if asyncio.get_running_loop().time() > deadline:
                raise EngineUnavailable(f"stream {record.name!r} did not acknowledge the append: {failure}")
            await asyncio.sleep(RETRY_PAUSE_SECONDS)


def refusal(error: dict[str, Any], headers: dict[str, str]) -> str:
    """Raise for an answer a retry cannot change; return the text of one that may pass."""
    if error.get("err_code") == WRONG_LAST_SEQUENCE:
        found = _CURRENT_SEQUENCE.search(str(error.get("description", "")))
        expected = int(headers.get("Nats-Expected-Last-Sequence", "0"))
        raise SequenceMismatch(expected, int(found[1]) if found else 0)
    if error.get("code") == 400:
        raise InvalidRequest(str(error.get("description", "refused by the stream")))
    return str(error.get("description", error))  # 503 and the like: no leader yet


async def announce(nc: Client, record: StreamRecord, last_by_name: dict[str, int]) -> None:
    """Wake long-poll readers (in every gateway) of the names just stored."""
    with contextlib.suppress(NatsError):
        for event_name, sequence in last_by_name.items():
            await nc.publish(record.names.notify_subject(event_name), b"%d" % sequence)


def stored_body(producer_id: str, key: str | None, body: Body) -> bytes:
    """The message data: producerId (and idempotencyKey) first, then the body without server fields."""
    members: dict[str, Any] = {"producerId": producer_id}
    if key is not None:
        members["idempotencyKey"] = key
    members.update((k, v) for k, v in body.items() if k not in SERVER_FIELDS)
    return orjson.dumps(members)


def internal_msg_id() -> str:
    """A Nats-Msg-Id for an append without Idempotency-Key, so that its retries store it once."""
    return f"{INTERNAL_MSG_ID_PREFIX}{secrets.token_hex(16)}"

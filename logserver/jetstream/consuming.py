"""Consumption: reads for a consumer (plain and leased) and the dead letters of leased reads."""

from __future__ import annotations

import logging

import orjson

from logserver.engine import DEAD_LETTER_PRODUCER, EngineError, check_name, dead_letter_stream

from .acknowledging import Acknowledgements
from .appends import SERVER_FIELDS, Appender
from .catalog import StreamCatalog
from .consumers import ConsumerRecord, ConsumerStore, now
from .names import digest
from .reads import StoredMessage
from .records import StreamRecord
from .retry import cluster_errors
from .scanning import EventScanner, json_array, render

log = logging.getLogger("logserver.jetstream")


class Consumption:
    """GET .../events for a consumer: the events after its position that it has not acknowledged;
    with leases, the ones no lease holds, each counted as a delivery.

    Owns no state (positions, leases and counts are the consumers bucket's, via ConsumerStore).
    Invariant: a leased event is handed to one reader at a time until its lease ends; past
    --max-deliveries it moves to `<stream>.dlq` once (a keyed append) and is then acknowledged.
    Concurrency: leases are taken in one CAS write per read, so readers in several gateways
    get disjoint events. Event loop only.
    """

    def __init__(
        self,
        catalog: StreamCatalog,
        scanner: EventScanner,
        consumers: ConsumerStore,
        appender: Appender,
        acknowledgements: Acknowledgements,
        max_deliveries: int,
    ) -> None:
        self._catalog = catalog
        self._scanner = scanner
        self._consumers = consumers
        self._appender = appender
        self._acknowledgements = acknowledgements
        self._max_deliveries = max_deliveries

    async def consume(self, stream: str, event_name: str, consumer_id: str, limit: int) -> bytes:
        """Up to `limit` events of the name the consumer has not acknowledged, as a JSON array."""
        record = await self._catalog.readable(stream)
        check_name(event_name, "eventName")
        key = record.names.consumer_key(consumer_id, event_name)
        with cluster_errors(f"reading consumer {consumer_id!r}"):
            state, _ = await self._consumers.load(key, consumer_id, event_name)
        messages = await self._scanner.scan(
            record,
            record.names.subject(event_name),
            state.position + 1,
            lambda m: not state.is_acked(m.sequence),
            limit,
        )
        return json_array([render(record, m) for m in messages])

    async def consume_leased(
        self, stream: str, event_name: str, consumer_id: str, limit: int, ack_wait: float
    ) -> bytes:
        """Up to `limit` events no lease holds, leased for `ack_wait` seconds, with delivery counts."""
        record = await self._catalog.readable(stream)
        check_name(event_name, "eventName")
        subject = record.names.subject(event_name)
        max_deliveries = self._max_deliveries
        delivered: list[tuple[StoredMessage, int]] = []
        dead: list[tuple[StoredMessage, int]] = []

        async def lease(state: ConsumerRecord) -> bool:
            delivered.clear()
            dead.clear()
            moment = now()
            state.forget_expired_leases(moment)

            def deliverable(message: StoredMessage) -> bool:
                sequence = message.sequence
                if state.is_acked(sequence) or state.leases.get(sequence, 0.0) > moment:
                    return False
                count = state.deliveries.get(sequence, 0) + 1
                if max_deliveries and count > max_deliveries:
                    dead.append((message, count - 1))
                    state.leases[sequence] = moment + ack_wait  # not handed out again while it moves
                    return False
                return True

            for message in await self._scanner.scan(record, subject, state.position + 1, deliverable, limit):
                count = state.deliveries.get(message.sequence, 0) + 1
                state.deliveries[message.sequence] = count
                state.leases[message.sequence] = moment + ack_wait
                delivered.append((message, count))
            return bool(delivered or dead)

        key = record.names.consumer_key(consumer_id, event_name)
        with cluster_errors(f"leasing for consumer {consumer_id!r}"):
            await self._consumers.change(key, consumer_id, event_name, lease)
        for message, deliveries in dead:
            await self._dead_letter(record, consumer_id, event_name, message, deliveries)
        return json_array([render(record, m, n) for m, n in delivered])

    async def _dead_letter(
        self, source: StreamRecord, consumer_id: str, event_name: str, message: StoredMessage, deliveries: int
    ) -> None:
        """Append the event to `<stream>.dlq` (once, keyed), then acknowledge it for the consumer."""
        original = orjson.loads(render(source, message))
        body = {k: v for k, v in original.items() if k not in SERVER_FIELDS}
        body["deadLetter"] = {
            "stream": source.name,
            "eventId": original["eventId"],
            "sequence": message.sequence,
            "producerId": original["producerId"],
            "receivedAt": original["receivedAt"],
            "consumer": consumer_id,
            "deliveries": deliveries,
        }
        where = "\n".join((source.name, consumer_id, str(message.sequence)))
        key = f"dead-letter-{digest(where)}"
        try:
            dead_letters = dead_letter_stream(source.name)
            await self._appender.append(dead_letters, DEAD_LETTER_PRODUCER, body, None, key, server=True)
        except EngineError as exc:
            log.error(
                "stream %r: event %d not dead-lettered (%s); it stays", source.name, message.sequence, exc
            )
            return
        await self._acknowledgements.ack_sequences(source, consumer_id, event_name, [message.sequence])

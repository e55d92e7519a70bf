"""Acknowledgements: acks, nacks and seeks of consumer positions (CAS writes in the consumers bucket)."""

from __future__ import annotations

from logserver.engine import Bound, EventNotFound, check_name

from .catalog import StreamCatalog
from .consumers import ConsumerRecord, ConsumerStore
from .js_streams import JetStreamStreams
from .names import event_name_of_subject, name_from_token
from .reads import READ_PAGE, MessageReader
from .records import StreamRecord
from .retry import cluster_errors
from .scanning import EventScanner


class Acknowledgements:
    """Changes of consumer positions: ack (one or many), nack (release a lease), seek.

    Owns no state: every change is one ConsumerStore.change (a CAS write, combined per key in
    this gateway). Invariant: a position only covers events that are acknowledged, in order,
    with no gap (or that a seek set it past); acknowledged events above it are kept in the
    record's `acked` set. Concurrency: any number of changes of one consumer, in any gateways,
    meet by compare-and-swap and lose none. Event loop only.
    """

    def __init__(
        self,
        catalog: StreamCatalog,
        streams: JetStreamStreams,
        scanner: EventScanner,
        consumers: ConsumerStore,
        reader: MessageReader,
    ) -> None:
        self._catalog = catalog
        self._streams = streams
        self._scanner = scanner
        self._consumers = consumers
        self._reader = reader

    async def ack(self, stream: str, consumer_id: str, event_id: str) -> None:
        """Acknowledge one event for the consumer; durable when it returns."""
        record = await self._catalog.readable(stream)
        message = await self._scanner.stored(record, event_id)
        await self.ack_sequences(
            record, consumer_id, event_name_of_subject(message.subject), [message.sequence]
        )

    async def ack_many(self, stream: str, consumer_id: str, event_ids: list[str]) -> list[bool]:
        """Acknowledge the events that exist (one write per event name); which ones did."""
        record = await self._catalog.readable(stream)
        found: list[bool] = []
        by_name: dict[str, list[int]] = {}
        for event_id in event_ids:
            try:
                message = await self._scanner.stored(record, event_id)
            except EventNotFound:
                found.append(False)
                continue
            found.append(True)
            by_name.setdefault(event_name_of_subject(message.subject), []).append(message.sequence)
        for event_name, sequences in by_name.items():
            await self.ack_sequences(record, consumer_id, event_name, sequences)
        return found

    async def ack_sequences(
        self, record: StreamRecord, consumer_id: str, event_name: str, sequences: list[int]
    ) -> None:
        """Record acknowledgements in one compare-and-swap write; durable when it returns."""
        subject = record.names.subject(event_name)

        async def acknowledge(state: ConsumerRecord) -> bool:
            changed = False
            for sequence in sequences:
                changed |= state.leases.pop(sequence, None) is not None
                changed |= state.deliveries.pop(sequence, None) is not None
                if not state.is_acked(sequence):
                    state.acked.add(sequence)
                    changed = True
            return changed

        async def advance(state: ConsumerRecord) -> bool:
            await self._advance(record, subject, state)
            return True

        key = record.names.consumer_key(consumer_id, event_name)
        with cluster_errors(f"acknowledging for consumer {consumer_id!r}"):
            await self._consumers.change(key, consumer_id, event_name, acknowledge, settle=advance)

    async def _advance(self, record: StreamRecord, subject: str, state: ConsumerRecord) -> None:
        """Move the position over the acknowledged events that follow it without a gap.

        Acknowledged sequences below the first stored event of the name are gone (retention)
        and dropped. A lagging replica only stops the walk early, it never skips an event.
        """
        js_stream = record.names.js_stream
        size = 1  # usually the next event is not acknowledged yet: read one, more only while they are
        while state.acked:
            page = await self._reader.batch(
                js_stream, state.position + 1, subject, min(size, len(state.acked))
            )
            if not page:
                return
            state.acked = {s for s in state.acked if s >= page[0].sequence}
            for message in page:
                if message.sequence not in state.acked:
                    return
                state.acked.remove(message.sequence)
                state.position = message.sequence
            size = min(size * 2, READ_PAGE)

    async def nack(self, stream: str, consumer_id: str, event_id: str) -> None:
        """Release the consumer's lease of the event (it is delivered again on the next read)."""
        record = await self._catalog.readable(stream)
        message = await self._scanner.stored(record, event_id)
        event_name = event_name_of_subject(message.subject)

        async def release(state: ConsumerRecord) -> bool:
            return state.leases.pop(message.sequence, None) is not None

        key = record.names.consumer_key(consumer_id, event_name)
        with cluster_errors(f"releasing for consumer {consumer_id!r}"):
            await self._consumers.change(key, consumer_id, event_name, release)

    async def seek(self, stream: str, consumer_id: str, target: Bound, event_name: str | None) -> int:
        """Set the consumer's position (of one event name, or of every stored name); the position."""
        record = await self._catalog.readable(stream)
        if event_name is not None:
            check_name(event_name, "eventName")
        state = await self._streams.state(record, per_subject=event_name is None)
        first, end = int(state["first_seq"]), int(state["last_seq"]) + 1
        position = min(max(await self._scanner.sequence_at(record, target), first), end) - 1
        if event_name is not None:
            names = [event_name]
        else:
            names = [name_from_token(s.rsplit(".", 1)[1]) for s in (state.get("subjects") or {})]

        async def move(entry: ConsumerRecord) -> bool:
            entry.position = position
            entry.acked.clear()
            return True

        with cluster_errors(f"moving consumer {consumer_id!r}"):
            for name in names:
                await self._consumers.change(
                    record.names.consumer_key(consumer_id, name), consumer_id, name, move
                )
        return position

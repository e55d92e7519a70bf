"""Browsing: reads that move no consumer: one event by id, history pages, and the long-poll wait."""

from __future__ import annotations

import contextlib

import nats
from nats.errors import Error as NatsError

from logserver.engine import HistoryPage, HistoryQuery, check_name

from .catalog import StreamCatalog
from .connection import Cluster
from .retry import cluster_errors
from .scanning import EventScanner, json_array, render
from .sightings import Sightings


class Browsing:
    """GET of one event, of a history page, and the wait for new events (long-poll, follow).

    Owns no state but counts its waiters in Sightings. Invariant: a wait returns True only
    once an event it waits for is stored (announced by the appending gateway, or found at the
    leader after what this gateway's reads covered), so a long-poll never misses one appended
    between its last read and its subscription. Concurrency: stateless per call; any number
    of readers at once. Event loop only.
    """

    def __init__(
        self, cluster: Cluster, catalog: StreamCatalog, scanner: EventScanner, sightings: Sightings
    ) -> None:
        self._nc = cluster.nc
        self._reader = cluster.reader
        self._catalog = catalog
        self._scanner = scanner
        self._sightings = sightings

    async def get_event(self, stream: str, event_id: str) -> bytes:
        """One event by its id."""
        record = await self._catalog.readable(stream)
        return render(record, await self._scanner.stored(record, event_id))

    async def history(self, stream: str, query: HistoryQuery) -> HistoryPage:
        """A page of events between the query's bounds (of one name, if asked), and the next sequence."""
        record = await self._catalog.readable(stream)
        if query.event_name is not None:
            check_name(query.event_name, "eventName")
        until: int | None = None
        if query.stop is not None:  # inclusive: a time stop names the first event after it
            stop = await self._scanner.sequence_at(record, query.stop)
            until = stop if query.stop.time is not None else stop + 1
        start = await self._scanner.sequence_at(record, query.start)
        subject = record.names.subject(query.event_name) if query.event_name is not None else None
        messages = await self._scanner.scan(record, subject, start, lambda m: True, query.limit + 1, until)
        following = messages[query.limit].sequence if len(messages) > query.limit else None
        return HistoryPage(json_array([render(record, m) for m in messages[: query.limit]]), following)

    async def wait_for_events(self, stream: str, event_name: str | None, timeout: float) -> bool:
        """Wait up to `timeout` seconds for an event (of the name) after what reads here covered."""
        record = await self._catalog.readable(stream)
        names = record.names
        subject = names.notify_subject(event_name) if event_name is not None else names.all_notifications
        events = names.subject(event_name) if event_name is not None else None
        if events is not None:
            looked = self._sightings.covered(stream, events)
        else:
            looked = self._sightings.last_seen(stream)
        with self._sightings.waiting(stream):
            with cluster_errors("waiting for events"):
                subscription = await self._nc.subscribe(subject, max_msgs=1)
                try:
                    if await self._reader.leader_next(names.js_stream, looked, events) is not None:
                        return True  # stored before the subscription began
                    message = await subscription.next_msg(timeout=timeout)
                except (TimeoutError, nats.errors.TimeoutError):
                    return False
                finally:
                    with contextlib.suppress(NatsError):
                        await subscription.unsubscribe()
            with contextlib.suppress(ValueError):
                self._sightings.saw(stream, int(message.data))
            return True

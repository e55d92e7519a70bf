"""The console's recent history: a ring of samples the server takes every few seconds.

Each sample records, per stream, its event count and last sequence, and per consumer and event
name how many events it is `behind`. The console draws append rates and lag over time from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from logserver.engine import ConsumerLag, EngineError, StreamInfo

log = logging.getLogger("logserver.console")

# Every stream's facts (Engine.list_streams): "eventCount" and "lastSequence" unless damaged.
StreamsSource = Callable[[], Awaitable[Sequence[StreamInfo]]]
# One stream's consumers (Engine.consumer_lag): "consumer", "eventName" and "behind".
ConsumersSource = Callable[[str], Awaitable[Sequence[ConsumerLag]]]

Key = TypeVar("Key", str, tuple[str, str])

DEFAULT_CAPACITY = 120  # samples kept: 10 minutes at the default 5 s interval


class _Series:
    """One quantity's values for the last `capacity` ticks, tick t at index t % capacity, from
    `first_tick` on without gaps (a series missing from a sample is dropped, never left holed)."""

    __slots__ = ("first_tick", "values")

    def __init__(self, capacity: int, first_tick: int) -> None:
        self.values = array("q", bytes(8 * capacity))
        self.first_tick = first_tick


class SampleRing:
    """Owns the last `capacity` samples of the streams and consumers the two sources report, and
    the timer that takes one every `interval` seconds once started.

    Concurrency: event-loop only. A sample first reads the sources (which may await), then
    records everything in one synchronous call, and the views are built in one synchronous call
    too, so a reader never sees half a sample. Memory: 8 bytes per
    value kept (two per stream, one per consumer and event name, `capacity` of each).
    """

    def __init__(
        self,
        streams: StreamsSource,
        consumers: ConsumersSource,
        interval: float,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self._streams_source = streams
        self._consumers_source = consumers
        self._capacity = capacity
        self._clock = clock
        self._ticks = 0  # samples taken so far; the next one is tick number self._ticks
        self._times = array("d", bytes(8 * capacity))
        self._event_counts: dict[str, _Series] = {}
        self._last_sequences: dict[str, _Series] = {}
        self._behind: dict[str, dict[tuple[str, str], _Series]] = {}  # stream -> (consumer, name)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Take a sample now and one every `interval` seconds until stop(); needs a running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """Take no more samples (those kept stay readable)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        """Sample, whatever it raises, every `interval` seconds, until stop() replaced this task.

        That is checked, not only the cancellation: Python 3.11's wait_for (nats-py's requests,
        which the JetStream engine's sources await) drops a cancellation that arrives as its
        answer does, and a sample read then must not be recorded after stop().
        """
        while self._running():
            try:
                read = await self._read_sources()
                if not self._running():
                    return
                self._record(*read)
            except Exception:
                log.exception("the console's sample failed; the next one follows in %s s", self.interval)
            await asyncio.sleep(self.interval)

    def _running(self) -> bool:
        """Whether the current task is the ring's sampling task (stop() sets none)."""
        return self._task is not None and self._task is asyncio.current_task()

    async def sample(self) -> None:
        """Record one sample of every stream and consumer the sources report now."""
        self._record(*await self._read_sources())

    async def _read_sources(self) -> tuple[list[StreamInfo], dict[str, Sequence[ConsumerLag]]]:
        """The streams and, for those with consumers, their consumers' lag, as reported now."""
        streams = list(await self._streams_source())
        consumers: dict[str, Sequence[ConsumerLag]] = {}
        for info in streams:
            if "eventCount" in info and info.get("consumers"):
                with contextlib.suppress(EngineError):  # damaged or gone since the listing
                    consumers[info["name"]] = await self._consumers_source(info["name"])
        return streams, consumers

    def _record(self, streams: list[StreamInfo], consumers: dict[str, Sequence[ConsumerLag]]) -> None:
        """Enter one sample into the ring (no await: readers see all of it or none)."""
        tick = self._ticks
        slot = tick % self._capacity
        counts: dict[str, _Series] = {}
        lasts: dict[str, _Series] = {}
        behind: dict[str, dict[tuple[str, str], _Series]] = {}
        for info in streams:
            if "eventCount" not in info:  # damaged: no numbers to record
                continue
            name = info["name"]
            counts[name] = self._series(self._event_counts, name, tick)
            counts[name].values[slot] = info["eventCount"]
            lasts[name] = self._series(self._last_sequences, name, tick)
            lasts[name].values[slot] = info["lastSequence"]
            if name in consumers:
                behind[name] = self._consumer_series(name, consumers[name], tick, slot)
        self._times[slot] = self._clock()
        self._event_counts, self._last_sequences, self._behind = counts, lasts, behind
        self._ticks = tick + 1

    def _consumer_series(
        self, stream: str, rows: Sequence[ConsumerLag], tick: int, slot: int
    ) -> dict[tuple[str, str], _Series]:
        """This tick's `behind` of each consumer of `stream`, in the series that hold the earlier ones."""
        kept = self._behind.get(stream, {})
        series: dict[tuple[str, str], _Series] = {}
        for row in rows:
            key = (row["consumer"], row["eventName"])
            series[key] = self._series(kept, key, tick)
            series[key].values[slot] = row["behind"]
        return series

    def _series(self, kept: dict[Key, _Series], key: Key, tick: int) -> _Series:
        """The series `key` continues from the last sample, or a new one starting at `tick`."""
        found = kept.get(key)
        return found if found is not None else _Series(self._capacity, tick)

    # ---- the views the JSON routes answer --------------------------------------------------------

    def knows(self, stream: str) -> bool:
        """Whether the latest sample has `stream`."""
        return stream in self._event_counts

    def streams_view(self, visible: Callable[[str], bool]) -> dict[str, Any]:
        """Times and per-stream series of every sampled stream `visible` admits, by name."""
        return {
            **self._header(),
            "streams": [
                {
                    "name": name,
                    "eventCount": self._values(series),
                    "lastSequence": self._values(self._last_sequences[name]),
                }
                for name, series in sorted(self._event_counts.items())
                if visible(name)
            ],
        }

    def stream_view(self, stream: str) -> dict[str, Any]:
        """Times, the stream's series and its consumers' `behind` series; the stream must be known."""
        return {
            **self._header(),
            "name": stream,
            "eventCount": self._values(self._event_counts[stream]),
            "lastSequence": self._values(self._last_sequences[stream]),
            "consumers": [
                {"consumer": consumer, "eventName": event_name, "behind": self._values(series)}
                for (consumer, event_name), series in sorted(self._behind.get(stream, {}).items())
            ],
        }

    def _kept_ticks(self) -> range:
        """The ticks still in the ring, oldest first."""
        return range(max(0, self._ticks - self._capacity), self._ticks)

    def _header(self) -> dict[str, Any]:
        """The interval and the Unix times of the kept samples, oldest first."""
        times = [round(self._times[t % self._capacity], 3) for t in self._kept_ticks()]
        return {"intervalSeconds": self.interval, "times": times}

    def _values(self, series: _Series) -> list[int | None]:
        """The series aligned with the kept times: null before it began."""
        kept = self._kept_ticks()
        start = max(kept.start, series.first_tick)
        head, count = start % self._capacity, kept.stop - start
        values: list[int | None] = [None] * (start - kept.start)
        values += series.values[head : head + count].tolist()
        if head + count > self._capacity:  # the ring wrapped: the rest is at its front
            values += series.values[: head + count - self._capacity].tolist()
        return values

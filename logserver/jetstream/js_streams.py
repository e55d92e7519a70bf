"""JetStreamStreams: the `LS_*` JetStream stream behind each logserver stream: config, creation, state."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import orjson
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from logserver.engine import EngineUnavailable

from .connection import PUBLISH_ATTEMPT_SECONDS, Cluster
from .records import StreamRecord
from .retry import cluster_errors
from .sightings import Sightings

log = logging.getLogger("logserver.jetstream")

INSUFFICIENT_RESOURCES = 10047  # "insufficient storage resources available"


class JetStreamStreams:
    """The JetStream streams of logserver's streams: their config (from a record's retention and
    the server-wide defaults), their creation, their state (STREAM.INFO from the leader).

    Owns the set of streams this gateway knows exist. Invariant: a stream is in it only after
    the cluster confirmed it (created here or found). Concurrency: creation is idempotent
    (stream_info, then add_stream; a racing creator's add answers the same stream), so any
    number of gateways may ensure one stream at once. Event loop only.
    """

    def __init__(self, cluster: Cluster, sightings: Sightings) -> None:
        self._cluster = cluster
        self._settings = cluster.settings
        self._sightings = sightings
        self._created: set[str] = set()

    def config(self, record: StreamRecord) -> StreamConfig:
        """The JetStream stream config for a record: its own retention, else the server's."""
        own = record.retention or {}
        max_age = own.get("maxAgeSeconds", self._settings.retention_max_age_seconds)
        max_bytes = own.get("maxBytes", self._settings.retention_max_bytes)
        names = record.names
        return StreamConfig(
            name=names.js_stream,
            description=f"logserver stream {record.name}",
            subjects=[names.all_events],
            num_replicas=self._settings.replicas,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            allow_direct=True,
            allow_atomic=True,
            # JetStream refuses a duplicate window longer than the stream's max age
            duplicate_window=min(self._settings.limits.idempotency_window_seconds, max_age or float("inf")),
            max_age=max_age if max_age is not None else 0,
            max_bytes=int(max_bytes) if max_bytes is not None else -1,
        )

    async def ensure(self, record: StreamRecord) -> None:
        """Create the JetStream stream of a record unless it exists (a creator may have died between)."""
        if record.name in self._created:
            return
        names = record.names
        js = self._cluster.js

        async def create() -> None:
            try:
                await js.stream_info(names.js_stream)
            except NotFoundError:
                await self.configure(self.config(record), create=True)

        with cluster_errors(f"creating stream {record.name!r}"):
            await self._cluster.retrying(create, "creating a stream")
        self._created.add(record.name)

    async def configure(self, config: StreamConfig, create: bool) -> None:
        """Add or update a JetStream stream.

        JetStream reserves a stream's max_bytes on every replica's disk up front, and refuses a
        limit it cannot reserve (insufficient storage resources). Such a limit is more than the
        disks hold beside the other streams' reservations, so the stream cannot reach it: it is
        then configured without a byte limit, while logserver keeps and reports the one asked
        for, as the file engine accepts any limit up to 2^62 bytes.
        """
        js = self._cluster.js
        put = js.add_stream if create else js.update_stream
        try:
            await put(config)
        except APIError as exc:
            if exc.err_code != INSUFFICIENT_RESOURCES or config.max_bytes in (None, -1):
                raise
            log.info(
                "stream %s: max_bytes %s is more than JetStream can reserve", config.name, config.max_bytes
            )
            await put(dataclasses.replace(config, max_bytes=-1))

    async def state(self, record: StreamRecord, per_subject: bool = False) -> dict[str, Any]:
        """STREAM.INFO's state of the stream (per-subject counts when asked), from the leader."""
        request: dict[str, Any] = {"subjects_filter": record.names.all_events} if per_subject else {}
        nc = self._cluster.nc
        with cluster_errors(f"reading stream {record.name!r}"):
            reply = await self._cluster.retrying(
                lambda: nc.request(
                    f"$JS.API.STREAM.INFO.{record.names.js_stream}",
                    orjson.dumps(request),
                    PUBLISH_ATTEMPT_SECONDS,
                ),
                "reading a stream's state",
            )
        answer = orjson.loads(reply.data)
        if "error" in answer:
            if answer["error"].get("code") == 404:
                return {"messages": 0, "bytes": 0, "first_seq": 1, "last_seq": 0}
            raise EngineUnavailable(f"stream {record.name!r}: {answer['error'].get('description')}")
        state: dict[str, Any] = answer["state"]
        if not state.get("messages"):
            state["first_seq"] = state.get("last_seq", 0) + 1
        self._sightings.saw(record.name, int(state.get("last_seq", 0)))
        return state

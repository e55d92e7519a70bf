"""Cluster: the gateway's one NATS connection, its JetStream context and logserver's KV buckets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from logserver.engine import EngineUnavailable

from .names import BATCH_KEYS_BUCKET, CONSUMERS_BUCKET, STREAMS_BUCKET
from .preflight import check_servers
from .reads import MessageReader
from .retry import RETRY_PAUSE_SECONDS, cluster_errors, through_elections
from .settings import JetStreamSettings

log = logging.getLogger("logserver.jetstream")

PUBLISH_ATTEMPT_SECONDS = 2.0  # one request's wait; retries go on to publish_timeout_seconds
T = TypeVar("T")


class Cluster:
    """The engine's link to the cluster: one NATS connection and what is opened on it.

    Owns the connection (closed by `close`), the JetStream context, the three buckets (streams,
    consumers, batch keys) and a MessageReader. Invariant: once `open` returned, the buckets
    exist and the nodes passed the preflight check. Concurrency: shared by every part of the
    engine; nats-py multiplexes concurrent requests on the one connection (event loop only).
    """

    def __init__(
        self,
        settings: JetStreamSettings,
        connection: Client,
        js: JetStreamContext,
        buckets: tuple[KeyValue, KeyValue, KeyValue],
    ) -> None:
        self.settings = settings
        self.nc = connection
        self.js = js
        self.streams, self.consumers, self.batch_keys = buckets
        self.reader = MessageReader(connection)

    @classmethod
    async def open(cls, settings: JetStreamSettings) -> Cluster:
        """Check every node (preflight), connect, and open (or create) the three buckets."""
        await check_servers(settings.monitor_urls)
        try:
            connection = await nats.connect(
                servers=settings.servers,
                connect_timeout=settings.connect_timeout_seconds,
                max_reconnect_attempts=-1,
                name="logserver",
            )
        except (NatsError, OSError, TimeoutError) as exc:
            raise EngineUnavailable(f"cannot connect to NATS at {settings.servers}: {exc!r}") from exc
        js = connection.jetstream(timeout=PUBLISH_ATTEMPT_SECONDS * 2)
        try:
            buckets = await _open_buckets(js, settings)
        except BaseException:
            await connection.close()
            raise
        log.info("JetStream engine connected to %s", connection.connected_url)
        return cls(settings, connection, js, buckets)

    async def close(self) -> None:
        """Drain the connection: in-flight requests finish, then it closes."""
        with contextlib.suppress(NatsError, TimeoutError):
            await self.nc.drain()

    async def retrying(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """`operation` retried through a leader election (for repeatable operations only)."""
        return await through_elections(operation, self.settings.publish_timeout_seconds, what)

    async def bucket_keys(self, bucket: str, key_filter: str) -> list[str]:
        """The keys of a bucket matching the filter, as its leader knows them (KV watches read
        a replica, which may not hold a key written a moment ago)."""
        prefix = f"$KV.{bucket}."
        with cluster_errors(f"listing {bucket}"):
            counts = await self.retrying(
                lambda: self.reader.subject_counts(f"KV_{bucket}", f"{prefix}{key_filter}"), "listing"
            )
        return [subject.removeprefix(prefix) for subject in counts]


async def _open_buckets(
    js: JetStreamContext, settings: JetStreamSettings
) -> tuple[KeyValue, KeyValue, KeyValue]:
    """The streams, consumers and batch-keys buckets, waiting through a first leader election."""
    deadline = asyncio.get_running_loop().time() + settings.publish_timeout_seconds
    keys_ttl = settings.limits.idempotency_window_seconds
    while True:  # a bucket without a leader yet (an election) answers after a few seconds
        try:
            streams = await _bucket(js, STREAMS_BUCKET, settings.replicas, None)
            consumers = await _bucket(js, CONSUMERS_BUCKET, settings.replicas, None)
            batch_keys = await _bucket(js, BATCH_KEYS_BUCKET, settings.replicas, keys_ttl)
            return streams, consumers, batch_keys
        except (NatsError, TimeoutError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise EngineUnavailable(f"opening the logserver buckets: {exc!r}") from exc
            await asyncio.sleep(RETRY_PAUSE_SECONDS)


async def _bucket(js: JetStreamContext, bucket: str, replicas: int, ttl: float | None) -> KeyValue:
    """Open a KV bucket, creating it (replicated, leader reads only) if it does not exist."""
    try:
        return await js.key_value(bucket)
    except NotFoundError:
        config = KeyValueConfig(bucket=bucket, history=1, replicas=replicas, direct=False, ttl=ttl)
        return await js.create_key_value(config)

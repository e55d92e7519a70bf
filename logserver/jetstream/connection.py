"""Cluster: the gateway's one NATS connection, its JetStream context and logserver's KV buckets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from logserver.engine import EngineUnavailable

from .access import (
    NatsLoginRefused,
    Redactor,
    check_files,
    connect_options,
    is_refusal,
    tls_context,
    url_login,
)
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
        redactor = Redactor(settings)
        check_files(settings.access)
        servers, login = url_login(settings.servers)
        try:
            tls = tls_context(settings.access)
        except OSError as exc:  # a certificate or key that does not parse, or do not fit
            raise NatsLoginRefused(f"--nats-tls-*: {exc}") from None
        await check_servers(settings.monitor_urls, tls)
        connection = await _connect(settings, servers, connect_options(settings.access, tls, login), redactor)
        js = connection.jetstream(timeout=PUBLISH_ATTEMPT_SECONDS * 2)
        try:
            buckets = await _open_buckets(js, settings)
        except BaseException:
            await connection.close()
            raise
        url = connection.connected_url
        log.info("JetStream engine connected to %s", redactor.scrub(url.geturl() if url else "NATS"))
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


class ConnectionErrors:
    """nats-py's error callback for one connection.

    Owns the errors of the first connect: while it runs they are kept (the last one goes into
    the start's message) and a refusal of the login or TLS handshake is noted in `refused`;
    once `started`, each error is logged as a warning. Texts never carry a traceback or a
    secret (Redactor). Event loop only.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self.refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self.last = "no answer"
        self.started = False

    def describe(self, exc: BaseException) -> str:
        """The error's type and text, secrets replaced."""
        return self._redactor.scrub(f"{type(exc).__name__}: {exc}")

    async def report(self, exc: Exception) -> None:
        """The callback (nats-py takes only a coroutine function)."""
        if self.started:
            log.warning("NATS: %s", self.describe(exc))
            return
        self.last = self.describe(exc)
        if is_refusal(exc) and not self.refused.done():
            self.refused.set_result(exc)


async def _connect(
    settings: JetStreamSettings, servers: list[str], options: dict[str, Any], redactor: Redactor
) -> Client:
    """A connection to one of `servers` (URLs without logins: those are in `options`, with the
    TLS context); NatsLoginRefused at once when they refuse the login or the TLS handshake,
    EngineUnavailable when none answers within publish_timeout_seconds.

    nats-py itself retries a failed first connect for ever (max_reconnect_attempts=-1, which
    the gateway wants later, after a server is lost); so the first connect is watched here.
    """
    client = Client()
    errors = ConnectionErrors(redactor)
    connecting = asyncio.create_task(
        client.connect(
            servers=servers,
            connect_timeout=settings.connect_timeout_seconds,
            max_reconnect_attempts=-1,
            name="logserver",
            error_cb=errors.report,
            **options,
        )
    )
    done, _ = await asyncio.wait(
        (connecting, errors.refused),
        timeout=settings.publish_timeout_seconds,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if connecting in done and connecting.exception() is None:
        errors.started = True
        return client
    failed = connecting.exception() if connecting in done else None  # a login nats-py cannot set up
    if failed is None:  # still trying: stop it (its setup ran, so the client can close)
        connecting.cancel()
        await asyncio.wait((connecting,))
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await client.close()
    where = redactor.urls()
    if failed is not None or errors.refused.done():
        cause = errors.refused.result() if errors.refused.done() else failed
        assert cause is not None
        raise NatsLoginRefused(
            f"NATS at {where} refused this gateway: {errors.describe(cause)} "
            "(check the --nats-* login and TLS options)"
        )
    raise EngineUnavailable(
        f"cannot connect to NATS at {where} within {settings.publish_timeout_seconds:g} s: {errors.last}"
    )


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

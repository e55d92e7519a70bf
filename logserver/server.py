"""The `serve` lifecycle: users file, engine recovery, listen, and a graceful stop on a signal."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from logserver.auth import Authenticator, create_first_user
from logserver.config import ServerConfig
from logserver.engine import Engine
from logserver.filestore import FileStore
from logserver.http import ApiServer, build_server

log = logging.getLogger("logserver")

# aiohttp's default of 128 overflowed at 256 benchmark connections (nstat TcpExtListenOverflows),
# each drop a 1 s client retry; the kernel caps this at net.core.somaxconn anyway.
LISTEN_BACKLOG = 4096
# Young-generation collections every this many allocations (CPython's default is 700).
GC_YOUNG_THRESHOLD = 20_000
# Wanted when the hard limit is unlimited: every stream keeps its active segment open.
_OPEN_FILES_WANTED = 65536


def announce_first_user(config: ServerConfig) -> None:
    """Create the users file on first start and print its generated password, this once only."""
    created = create_first_user(config.users_path)
    if created is None:
        return
    name, password = created
    print(
        f"logserver: created {config.users_path} with user {name!r} and password {password!r}\n"
        f"logserver: it is shown only now; add users with `logserver user add NAME`",
        file=sys.stderr,
        flush=True,
    )


def tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The server's TLS context for --tls-cert/--tls-key, or None for plain HTTP.

    Raises OSError (ssl.SSLError is one) for a missing file or a key that doesn't fit.
    """
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def start_listener(
    server: ApiServer, config: ServerConfig, tls: ssl.SSLContext | None = None
) -> web.ServerRunner:
    """Listen on config.host:config.port with the server; the caller cleans the runner up.

    `runner.addresses` tells the port when config.port is 0 (tests).
    """
    runner = web.ServerRunner(server)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=tls, backlog=LISTEN_BACKLOG)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def raise_open_file_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard one: each stream holds open files, each client a socket.

    A soft limit of 1024 (many distributions' default) would otherwise fail appends and
    accepts with EMFILE long before --max-streams is reached.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("open-file limit stays at %d: %s", soft, exc)
            return
        log.info("open-file limit raised from %d to %d", soft, wanted)


def settle_heap() -> None:
    """Tune the cyclic garbage collector for a server whose start-up objects live until it stops.

    Frozen, those objects are never scanned again, and the youngest generation is collected
    every GC_YOUNG_THRESHOLD allocations instead of 700: a request allocates a few hundred
    objects, so by default a collection ran every few requests and a full one stalled the
    loop now and then. A/B at 64 connections, fsync=always: p99 of append 46-53 ms -> 26-32 ms,
    throughput +4 to +20% (bench/ceiling.py does the same, so the ceiling is as tuned).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting, finish in-flight requests, close the store."""
    config.check()
    tls = tls_context(config)  # a bad certificate fails now, before recovery takes its time
    raise_open_file_limit()
    announce_first_user(config)
    authenticator = Authenticator(config.users_path)
    # Recovery happens here, before the socket opens: a reachable /health means recovered.
    engine = await open_engine(config)
    try:
        server = build_server(engine, authenticator, config)
        settle_heap()
        runner = await start_listener(server, config, tls)
        try:
            log.info(
                "listening on %s://%s:%d (data dir %s, fsync %s, %d streams)",
                "https" if tls else "http",
                config.host,
                config.port,
                config.data_dir,
                config.fsync.value,
                (await engine.health()).streams,
            )
            await _until_signalled()
            log.info("shutting down: finishing in-flight requests")
        finally:
            await runner.cleanup()
    finally:
        await engine.close()
        log.info("stopped; all files closed")


async def open_file_engine(config: ServerConfig) -> Engine:
    """The default engine: everything in one data directory on this host."""
    return await FileStore.open(config.storage_config())


async def open_jetstream_engine(config: ServerConfig) -> Engine:
    """A gateway to a NATS JetStream cluster (the `jetstream` extra: nats-py), checked at start."""
    from logserver.jetstream import open_jetstream_engine as open_on_cluster

    return await open_on_cluster(config)


# --engine NAME -> how to open it (config.ENGINES lists the names).
ENGINE_OPENERS: dict[str, Callable[[ServerConfig], Awaitable[Engine]]] = {
    "file": open_file_engine,
    "jetstream": open_jetstream_engine,
}


async def open_engine(config: ServerConfig) -> Engine:
    """The engine `--engine` names, opened (and recovered) and ready to serve."""
    return await ENGINE_OPENERS[config.engine](config)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

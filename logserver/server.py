"""The `serve` lifecycle: users file, store recovery, listen, and a graceful stop on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from logserver.auth import Authenticator, create_first_user
from logserver.config import ServerConfig
from logserver.http import build_app
from logserver.storage import EventStore

log = logging.getLogger("logserver")

# One short line per request: client, request line, status, body bytes, seconds.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'


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


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting, finish in-flight requests, close the store."""
    announce_first_user(config)
    authenticator = Authenticator(config.users_path)
    # Recovery happens here, before the socket opens: a reachable /health means recovered.
    store = await EventStore.open(config.storage_config())
    try:
        runner = web.AppRunner(build_app(store, authenticator, config), access_log_format=ACCESS_LOG_FORMAT)
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.host, config.port)
            await site.start()
            log.info(
                "listening on http://%s:%d (data %s, fsync %s, %d streams)",
                config.host,
                config.port,
                config.data_dir,
                config.fsync.value,
                store.stream_count(),
            )
            await _until_signalled()
            log.info("shutting down: finishing in-flight requests")
        finally:
            await runner.cleanup()
    finally:
        await store.close()
        log.info("stopped; all files closed")


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

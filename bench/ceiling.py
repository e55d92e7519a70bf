"""The ceiling: a bare aiohttp app, served the way `logserver serve` serves (uvloop when installed).

    python bench/ceiling.py --port P

Its handlers do the least any aiohttp event server must: read the body, parse it with
orjson when it is the event JSON, and answer a constant JSON string. Same routes as
logserver, no middleware, no auth, no storage, no access log; the garbage collector tuned as
logserver tunes it. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
from collections.abc import Callable

import orjson
from aiohttp import web

HEADERS = {"Content-Type": "application/json; charset=utf-8"}
EVENT_ID = orjson.dumps("5a0c1e57-2f2b-8d41-8000-000000000001")
OK = orjson.dumps("OK")
EMPTY = b"[]"


async def append(request: web.Request) -> web.Response:
    orjson.loads(await request.read())
    return web.Response(body=EVENT_ID, headers=HEADERS)


async def consume(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=EMPTY, headers=HEADERS)


async def ack(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=OK, headers=HEADERS)


async def health(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', headers=HEADERS)


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/api/v1/streams/{stream}/events", append)
    app.router.add_get("/api/v1/streams/{stream}/events", consume)
    app.router.add_post("/api/v1/streams/{stream}/events/{eventID}", ack)
    app.router.add_get("/health", health)
    return app


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed, as logserver's CLI chooses it."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def serve_until_signalled(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The garbage collector tuned as logserver.server.settle_heap tunes it: same process setup.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve_until_signalled(build_app(), args.host, args.port))


if __name__ == "__main__":
    main()

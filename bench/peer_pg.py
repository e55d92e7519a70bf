"""The peer: the design logserver replaces, an aiohttp + asyncpg append into PostgreSQL.

    python bench/peer_pg.py --port P --dsn postgresql://...

POST /api/v1/streams/{stream}/events parses the body with orjson (a JSON object, as
logserver requires), inserts it as jsonb with the stream, producer and receive time,
and answers the new row's id as a JSON string, once PostgreSQL has committed it with
synchronous_commit=on (the cluster's setting, checked at start). Auth is a constant
header comparison, cheaper than logserver's cached check. Served like the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg
import orjson
from aiohttp import web
from ceiling import HEADERS, loop_factory, serve_until_signalled

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id bigserial PRIMARY KEY,
    stream text NOT NULL,
    producer_id text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    body jsonb NOT NULL
)
"""
INSERT = "INSERT INTO events (stream, producer_id, body) VALUES ($1, $2, $3::jsonb) RETURNING id"
POOL = web.AppKey("pool", asyncpg.Pool)


def build_app(dsn: str, pool_size: int, auth: str) -> web.Application:
    async def append(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != auth:
            return web.Response(status=401, body=b'"Unauthorized"', headers=HEADERS)
        raw = await request.read()
        body = orjson.loads(raw)
        if not isinstance(body, dict):
            return web.Response(status=400, body=b'"Bad Request"', headers=HEADERS)
        producer = request.headers.get("X-Producer-ID", "")
        stream = request.match_info["stream"]
        row_id = await request.app[POOL].fetchval(INSERT, stream, producer, raw.decode())
        return web.Response(body=orjson.dumps(str(row_id)), headers=HEADERS)

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', headers=HEADERS)

    async def pool_context(app: web.Application):  # type: ignore[no-untyped-def]
        pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
        async with pool.acquire() as conn:
            await conn.execute(SCHEMA)
            setting = await conn.fetchval("SHOW synchronous_commit")
            if setting != "on":
                sys.exit(f"peer: synchronous_commit is {setting!r}, expected 'on'")
        app[POOL] = pool
        yield
        await pool.close()

    app = web.Application()
    app.router.add_post("/api/v1/streams/{stream}/events", append)
    app.router.add_get("/health", health)
    app.cleanup_ctx.append(pool_context)
    return app


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--pool-size", type=int, default=16)
    parser.add_argument("--auth", default="", help="the Authorization header value to accept")
    args = parser.parse_args()
    app = build_app(args.dsn, args.pool_size, args.auth)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve_until_signalled(app, args.host, args.port))


if __name__ == "__main__":
    main()

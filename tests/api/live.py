"""The server behind `logserver serve`'s own listener (start_listener, TLS) on a real socket,
in this process: for tests that talk raw HTTP or TLS rather than through aiohttp's test client.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from logserver.auth import Authenticator, FailedLoginThrottle
from logserver.config import ServerConfig
from logserver.engine import Engine
from logserver.http import build_server
from logserver.server import start_listener


@dataclass(frozen=True)
class Listening:
    host: str
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@asynccontextmanager
async def listening(
    engine: Engine,
    config: ServerConfig,
    throttle: FailedLoginThrottle | None = None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Listening]:
    config = dataclasses.replace(config, host="127.0.0.1", port=0)
    server = build_server(engine, Authenticator(config.users_path), config, throttle)
    runner = await start_listener(server, config, tls)
    try:
        host, port = runner.addresses[0][:2]
        yield Listening(str(host), int(port), "https" if tls else "http")
    finally:
        await runner.cleanup()

"""Assemble the HTTP server from the route table, the engine and the authenticator."""

from __future__ import annotations

import asyncio

import orjson

from logserver.auth import Authenticator, FailedLoginThrottle
from logserver.config import ServerConfig
from logserver.console.samples import SampleRing
from logserver.engine import Engine

from .api import StreamApi
from .console import ApiDocs, ConsoleApi, console_files
from .dispatch import Dispatcher
from .extensions import ExtensionApi
from .metrics import RequestMetrics
from .openapi import openapi_document
from .protocol import ApiServer, ConnectionLimits, default_max_connections
from .routes import RouteTable, route_table


def build_server(
    engine: Engine,
    authenticator: Authenticator,
    config: ServerConfig,
    throttle: FailedLoginThrottle | None = None,
) -> ApiServer:
    """The server for an already-open engine; the caller closes the engine after the server stops.

    Call it with the event loop running. `throttle` defaults to one built from the config;
    tests pass one with their own clock.
    """
    api = StreamApi(engine, config.max_limit)
    metrics = RequestMetrics()
    document = orjson.dumps(
        openapi_document(
            config.max_limit, config.max_batch, config.max_event_name_chars, config.public_metrics
        )
    )
    stopping = asyncio.Event()
    extensions = ExtensionApi(engine, config.max_limit, config.max_batch, document, metrics, stopping)
    samples = SampleRing(engine.list_streams, engine.consumer_lag, config.samples_interval)
    console = ConsoleApi(samples, console_files())
    docs = ApiDocs(console_files("apidocs"))
    routes = RouteTable(route_table(api, extensions, console, docs, config.public_metrics))
    if throttle is None:
        throttle = FailedLoginThrottle(config.auth_failures_per_minute)
    dispatcher = Dispatcher(routes, authenticator, throttle, metrics, config.max_body_bytes)
    connections = ConnectionLimits(
        config.idle_timeout, config.read_timeout, config.max_connections or default_max_connections()
    )
    samples.start()
    return ApiServer(
        dispatcher,
        stopping,
        max_body_bytes=config.max_body_bytes,
        max_header_bytes=config.max_header_bytes,
        on_shutdown=samples.stop,
        limits=connections,
        access_log=config.access_log,
    )

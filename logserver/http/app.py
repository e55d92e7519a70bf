"""Assemble the HTTP server from the route table, the store and the authenticator."""

from __future__ import annotations

import orjson

from logserver.auth import Authenticator, FailedLoginThrottle
from logserver.config import ServerConfig
from logserver.storage import EventStore

from .api import ApiLimits, StreamApi
from .dispatch import Dispatcher
from .extensions import ExtensionApi
from .metrics import RequestMetrics
from .openapi import openapi_document
from .protocol import ApiServer, ConnectionLimits, default_max_connections
from .routes import RouteTable, route_table


def build_server(
    store: EventStore,
    authenticator: Authenticator,
    config: ServerConfig,
    throttle: FailedLoginThrottle | None = None,
) -> ApiServer:
    """The server for an already-open store; the caller closes the store after the server stops.

    Call it with the event loop running. `throttle` defaults to one built from the config;
    tests pass one with their own clock.
    """
    limits = ApiLimits(
        config.max_limit, config.max_event_name_chars, config.max_streams, config.max_deliveries
    )
    api = StreamApi(store, limits)
    metrics = RequestMetrics()
    document = orjson.dumps(openapi_document(config.max_limit, config.max_batch))
    more = ExtensionApi(
        store, api, config.max_limit, config.max_batch, config.max_event_name_chars, document, metrics
    )
    routes = RouteTable(route_table(api, more, config.public_metrics))
    if throttle is None:
        throttle = FailedLoginThrottle(config.auth_failures_per_minute)
    dispatcher = Dispatcher(routes, authenticator, throttle, metrics, config.max_body_bytes)
    connections = ConnectionLimits(
        config.idle_timeout, config.read_timeout, config.max_connections or default_max_connections()
    )
    return ApiServer(
        dispatcher,
        max_body_bytes=config.max_body_bytes,
        max_header_bytes=config.max_header_bytes,
        limits=connections,
        access_log=config.access_log,
    )

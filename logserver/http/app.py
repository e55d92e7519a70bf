"""Assemble the HTTP server from the route table, the store and the authenticator."""

from __future__ import annotations

import orjson

from logserver.auth import Authenticator, FailedLoginThrottle
from logserver.config import ServerConfig
from logserver.console.samples import SampleRing
from logserver.storage import EventStore

from .api import ApiLimits, StreamApi
from .console import ConsoleApi, console_files
from .dispatch import Dispatcher
from .extensions import ExtensionApi
from .metrics import RequestMetrics
from .openapi import openapi_document
from .protocol import ApiServer
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
    # The console's samples: what it reads of the streams and consumers, in this one place.
    samples = SampleRing(
        streams=store.describe_streams,
        consumers=lambda stream: store.stream(stream).consumer_lag(),
        interval=config.samples_interval,
    )
    console = ConsoleApi(samples, console_files())
    routes = RouteTable(route_table(api, more, console, config.public_metrics))
    if throttle is None:
        throttle = FailedLoginThrottle(config.auth_failures_per_minute)
    dispatcher = Dispatcher(routes, authenticator, throttle, metrics, config.max_body_bytes)
    samples.start()
    return ApiServer(
        dispatcher,
        max_body_bytes=config.max_body_bytes,
        max_header_bytes=config.max_header_bytes,
        on_shutdown=samples.stop,
    )

"""Assemble the aiohttp application from the route table, the store and the authenticator."""

from __future__ import annotations

import orjson
from aiohttp import web

from logserver.auth import Authenticator, FailedLoginThrottle
from logserver.config import ServerConfig
from logserver.storage import EventStore

from .api import ApiLimits, StreamApi
from .extensions import ExtensionApi
from .metrics import RequestMetrics
from .middleware import request_middleware
from .openapi import openapi_document
from .routes import register, route_table


def build_app(
    store: EventStore,
    authenticator: Authenticator,
    config: ServerConfig,
    throttle: FailedLoginThrottle | None = None,
) -> web.Application:
    """The app for an already-open store; the caller closes the store after the app stops.

    `throttle` defaults to one built from the config; tests pass one with their own clock.
    """
    app = web.Application(client_max_size=config.max_body_bytes)
    limits = ApiLimits(
        config.max_limit, config.max_event_name_chars, config.max_streams, config.max_deliveries
    )
    api = StreamApi(store, limits)
    metrics = RequestMetrics()
    document = orjson.dumps(openapi_document(config.max_limit, config.max_batch))
    more = ExtensionApi(
        store, api, config.max_limit, config.max_batch, config.max_event_name_chars, document, metrics
    )
    rules = register(app.router, route_table(api, more, config.public_metrics))
    if throttle is None:
        throttle = FailedLoginThrottle(config.auth_failures_per_minute)
    app.middlewares.append(request_middleware(authenticator, rules, throttle, metrics, config.max_body_bytes))
    return app

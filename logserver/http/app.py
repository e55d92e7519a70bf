"""Assemble the aiohttp application from the route table, the store and the authenticator."""

from __future__ import annotations

from aiohttp import web

from logserver.auth import Authenticator
from logserver.config import ServerConfig
from logserver.storage import EventStore

from . import validation
from .api import StreamApi
from .middleware import auth_middleware, error_middleware
from .routes import register, route_table


def build_app(store: EventStore, authenticator: Authenticator, config: ServerConfig) -> web.Application:
    """The app for an already-open store; the caller closes the store after the app stops."""
    validation.preload()
    app = web.Application(client_max_size=config.max_body_bytes)
    public_routes = register(app.router, route_table(StreamApi(store, config.max_limit)))
    # Outermost first: errors are rendered for everything, auth runs before any handler.
    app.middlewares.append(error_middleware(config.max_body_bytes))
    app.middlewares.append(auth_middleware(authenticator, public_routes))
    return app

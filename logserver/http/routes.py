"""The route table: every route the server has, secured unless declared public here."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from .api import StreamApi


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    public: bool = False  # the only way a route escapes authentication


def route_table(api: StreamApi) -> tuple[Route, ...]:
    return (
        Route("POST", "/api/v1/streams/{stream}/events", api.append),
        Route("GET", "/api/v1/streams/{stream}/events", api.consume),
        Route("POST", "/api/v1/streams/{stream}/events/{eventID}", api.ack),
        Route("GET", "/health", api.health, public=True),
    )


def register(router: web.UrlDispatcher, routes: tuple[Route, ...]) -> frozenset[web.AbstractRoute]:
    """Add `routes` to `router`; returns the public ones for the auth middleware."""
    public = set()
    for route in routes:
        registered = router.add_route(route.method, route.path, route.handler)
        if route.public:
            public.add(registered)
    return frozenset(public)

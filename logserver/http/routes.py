"""The route table: every route the server has, secured unless declared public here.

A secured route also declares what the user must be allowed to do to the
stream named in its path (users-file permissions); a route added outside this
table still needs credentials, and a user with unrestricted access.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from logserver.auth import Action, User

from .api import StreamApi
from .extensions import ExtensionApi

# How a 403 names each action: "may not produce to stream 'x'".
_ACTION_PHRASES: dict[Action, str] = {
    "produce": "produce to",
    "consume": "consume from",
    "admin": "administer",
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    permission: Action | None = None  # checked against the path's {stream}
    public: bool = False  # the only way a route escapes authentication
    full_access: bool = False  # only for users without a permissions field (it spans all streams)


def route_table(api: StreamApi, more: ExtensionApi, public_metrics: bool) -> tuple[Route, ...]:
    stream = "/api/v1/streams/{stream}"
    return (
        # SPEC v1
        Route("POST", f"{stream}/events", api.append, permission="produce"),
        Route("GET", f"{stream}/events", api.consume, permission="consume"),
        # An ack moves the consumer's position: part of consuming, not producing.
        Route("POST", f"{stream}/events/{{eventID}}", api.ack, permission="consume"),
        Route("GET", "/health", api.health, public=True),
        # Extensions (README "Extensions", /api/v1/openapi.json)
        Route("POST", f"{stream}/events:batch", more.append_batch, permission="produce"),
        Route("GET", f"{stream}/events/{{eventID}}", more.get_event, permission="consume"),
        Route("GET", f"{stream}/history", more.history, permission="consume"),
        Route("GET", "/api/v1/streams", more.list_streams),  # lists only the user's streams
        Route("GET", stream, more.describe_stream, permission="consume"),
        Route("GET", f"{stream}/consumers", more.list_consumers, permission="consume"),
        Route("PUT", f"{stream}/consumers/{{consumer}}", more.seek_consumer, permission="consume"),
        Route("PUT", f"{stream}/retention", more.set_retention, permission="admin"),
        # Metrics name every stream, so a user limited to some streams may not read them.
        Route("GET", "/metrics", more.metrics, public=public_metrics, full_access=True),
        Route("GET", "/api/v1/openapi.json", more.openapi, public=True),
    )


@dataclass(frozen=True)
class AccessRules:
    """What the auth middleware needs to know about each registered route."""

    public: frozenset[web.AbstractRoute]
    declared: dict[web.AbstractRoute, Route]

    def denial(self, user: User, match_info: web.UrlMappingMatchInfo) -> str | None:
        """Why `user` may not use the matched route, or None if they may."""
        route = self.declared.get(match_info.route)
        if route is None:
            if user.permissions.unrestricted:
                return None
            return f"user '{user.name}' may not use {match_info.route.method} {match_info.route.resource}"
        if route.full_access and not user.permissions.unrestricted:
            return f"user '{user.name}' may not use {route.method} {route.path}"
        if route.permission is None:
            return None
        stream = match_info["stream"]
        if user.permissions.allows(route.permission, stream):
            return None
        return f"user '{user.name}' may not {_ACTION_PHRASES[route.permission]} stream '{stream}'"


def register(router: web.UrlDispatcher, routes: tuple[Route, ...]) -> AccessRules:
    """Add `routes` to `router`; returns their access rules for the auth middleware."""
    public = set()
    declared = {}
    for route in routes:
        if route.permission is not None and "{stream}" not in route.path:
            raise ValueError(f"{route.path}: a permission needs a {{stream}} in the path")
        registered = router.add_route(route.method, route.path, route.handler)
        declared[registered] = route
        if route.public:
            public.add(registered)
    return AccessRules(frozenset(public), declared)

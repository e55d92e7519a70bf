"""The route table: every route the server has, secured unless declared public here.

A secured route also declares what the user must be allowed to do to the
stream named in its path (users-file permissions). The server answers only
the routes of this table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from logserver.auth import Action, User

from .responses import ApiError

if TYPE_CHECKING:  # they import PathParams from here
    from .api import StreamApi
    from .console import ApiDocs, ConsoleApi
    from .extensions import ExtensionApi

# How a 403 names each action: "may not produce to stream 'x'".
_ACTION_PHRASES: dict[Action, str] = {
    "produce": "produce to",
    "consume": "consume from",
    "admin": "administer",
}


PathParams = dict[str, str]
RouteHandler = Callable[[web.BaseRequest, PathParams], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: RouteHandler
    permission: Action | None = None  # checked against the path's {stream}
    public: bool = False  # the only way a route escapes authentication
    full_access: bool = False  # only for users without a permissions field (it spans all streams)

    def denial(self, user: User, params: PathParams) -> str | None:
        """Why `user` may not use this route with these path parameters, or None if they may."""
        if self.full_access and not user.permissions.unrestricted:
            return f"user '{user.name}' may not use {self.method} {self.path}"
        if self.permission is None:
            return None
        stream = params["stream"]
        if user.permissions.allows(self.permission, stream):
            return None
        return f"user '{user.name}' may not {_ACTION_PHRASES[self.permission]} stream '{stream}'"


def route_table(
    api: StreamApi, more: ExtensionApi, console: ConsoleApi, docs: ApiDocs, public_metrics: bool
) -> tuple[Route, ...]:
    stream = "/api/v1/streams/{stream}"
    return (
        # SPEC v1
        Route("POST", f"{stream}/events", api.append, permission="produce"),
        Route("GET", f"{stream}/events", api.consume, permission="consume"),
        # An ack moves the consumer's position: part of consuming, not producing.
        Route("POST", f"{stream}/events/{{eventID}}", api.ack, permission="consume"),
        Route("GET", "/health", api.health, public=True),
        # Extensions (docs/api.md "Extensions", /api/v1/openapi.json)
        Route("POST", f"{stream}/events:batch", more.append_batch, permission="produce"),
        Route("POST", f"{stream}/events:ack", more.ack_many, permission="consume"),
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
        # The console (README "Console"): its files need credentials like everything else.
        Route("GET", "/", console.to_console),
        Route("GET", "/console", console.to_console),
        Route("GET", "/console/", console.index),
        Route("GET", "/console/{file}", console.file),
        Route("GET", "/api/v1/samples", console.all_samples),  # only the user's streams
        # The API reference renders the public OpenAPI document, so it is public too.
        Route("GET", "/api/v1/docs", docs.index, public=True),
        Route("GET", "/api/v1/docs/{file}", docs.file, public=True),
        Route("GET", f"{stream}/samples", console.stream_samples, permission="consume"),
    )


class RouteTable:
    """Finds the route and path parameters of a request path, as aiohttp's router would, in one
    walk down a tree of path segments instead of a regular expression per route.

    A parameter matches one non-empty segment without `{`, `}` or `/` (aiohttp's `[^{}/]+`),
    read from the path with everything decoded but `%2F` and `%25`, which are decoded last; so
    `a%2Fb` is the stream `a/b`. A literal segment and a parameter may not share a parent, so
    the walk never backtracks; the empty segment (a trailing `/`) may, as no parameter matches it.
    """

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self._root = _Node()
        for route in routes:
            if route.permission is not None and "{stream}" not in route.path:
                raise ValueError(f"{route.path}: a permission needs a {{stream}} in the path")
            node = self._root
            for segment in route.path.split("/")[1:]:
                node = node.child(segment, route.path)
            if route.method in node.methods:
                raise ValueError(f"{route.method} {route.path} is declared twice")
            node.methods[route.method] = route

    def resolve(self, method: str, path: str) -> tuple[Route, PathParams]:
        """The route for `method` on `path` (aiohttp's `path_safe`) and its parameters.

        Raises HTTPNotFound, or HTTPMethodNotAllowed naming the methods the path has.
        """
        segments = path.split("/")
        if segments[0]:
            raise web.HTTPNotFound()
        node = self._root
        params: PathParams = {}
        for segment in segments[1:]:
            following = node.literals.get(segment)
            if following is None and node.parameter is not None and segment and _plain(segment):
                if "%" in segment:
                    segment = _decoded(segment)
                params[node.parameter] = segment
                following = node.parameter_node
            if following is None:
                raise web.HTTPNotFound()
            node = following
        route = node.methods.get(method)
        if route is None:
            if not node.methods:
                raise web.HTTPNotFound()
            raise web.HTTPMethodNotAllowed(method, sorted(node.methods))
        return route, params


def _decoded(segment: str) -> str:
    """A parameter segment with `%2F` and `%25` decoded; 400 for an escape `path_safe` left undecoded.

    yarl decodes every escape that forms UTF-8 text and keeps the rest as they came: a `%`
    other than those two is bytes that are not UTF-8 (`%FF`) or no escape at all (`%zz`).
    """
    if "%" in segment.replace("%2F", "").replace("%25", ""):
        raise ApiError(400, "the path has a percent-escape that is not UTF-8 text")
    return segment.replace("%2F", "/").replace("%25", "%")


def _plain(segment: str) -> bool:
    return "{" not in segment and "}" not in segment


class _Node:
    __slots__ = ("literals", "methods", "parameter", "parameter_node")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.parameter: str | None = None
        self.parameter_node: _Node | None = None
        self.methods: dict[str, Route] = {}

    def child(self, segment: str, path: str) -> _Node:
        if segment.startswith("{") and segment.endswith("}"):
            name = segment[1:-1]
            if self.literals.keys() - {""} or (self.parameter is not None and self.parameter != name):
                raise ValueError(f"{path}: {segment} shares its place with another segment")
            if self.parameter_node is None:
                self.parameter, self.parameter_node = name, _Node()
            return self.parameter_node
        if segment and self.parameter is not None:
            raise ValueError(f"{path}: {segment} shares its place with a parameter")
        return self.literals.setdefault(segment, _Node())

"""The route table resolves paths as aiohttp's router did, and refuses a table it can't walk."""

from __future__ import annotations

import pytest
from aiohttp import web

from logserver.http.routes import PathParams, Route, RouteTable


async def answer(request: web.BaseRequest, params: PathParams) -> web.Response:
    return web.Response()


TABLE = RouteTable(
    (
        Route("GET", "/api/v1/streams", answer),
        Route("GET", "/api/v1/streams/{stream}/events", answer, permission="consume"),
        Route("POST", "/api/v1/streams/{stream}/events", answer, permission="produce"),
        Route("POST", "/api/v1/streams/{stream}/events/{eventID}", answer, permission="consume"),
        Route("GET", "/health", answer, public=True),
    )
)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/streams/orders/events", {"stream": "orders"}),
        ("/api/v1/streams/a%2Fb/events", {"stream": "a/b"}),  # %2F is part of the name
        ("/api/v1/streams/100%25/events", {"stream": "100%"}),
        ("/api/v1/streams/s/events/e-1", {"stream": "s", "eventID": "e-1"}),
    ],
)
def test_parameters_are_single_segments_decoded_last(path: str, params: PathParams) -> None:
    route, found = TABLE.resolve("POST", path)
    assert found == params
    assert route.path.count("{") == len(params)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/streams//events", "/api/v1/streams/a{b/events", "/health/", "/api/v1", "health", "/nope"],
)
def test_what_no_route_matches_is_404(path: str) -> None:
    with pytest.raises(web.HTTPNotFound):
        TABLE.resolve("GET", path)


def test_a_known_path_with_another_method_is_405_naming_the_methods() -> None:
    with pytest.raises(web.HTTPMethodNotAllowed) as raised:
        TABLE.resolve("DELETE", "/api/v1/streams/s/events")
    assert raised.value.headers["Allow"] == "GET,POST"


@pytest.mark.parametrize(
    "routes",
    [
        (Route("GET", "/a/{x}", answer), Route("GET", "/a/b", answer)),  # literal beside parameter
        (Route("GET", "/a/{x}", answer), Route("GET", "/a/{y}/z", answer)),  # two names, one place
        (Route("GET", "/a", answer), Route("GET", "/a", answer)),
        (Route("GET", "/a", answer, permission="consume"),),  # a permission without a {stream}
    ],
)
def test_a_table_the_walk_cannot_serve_unambiguously_is_refused(routes: tuple[Route, ...]) -> None:
    with pytest.raises(ValueError):
        RouteTable(routes)


def test_a_trailing_slash_may_sit_beside_a_parameter_as_no_parameter_matches_it() -> None:
    table = RouteTable((Route("GET", "/console/", answer), Route("GET", "/console/{file}", answer)))
    assert table.resolve("GET", "/console/")[0].path == "/console/"
    route, params = table.resolve("GET", "/console/app.js")
    assert (route.path, params) == ("/console/{file}", {"file": "app.js"})
    with pytest.raises(web.HTTPNotFound):
        table.resolve("GET", "/console//")

"""The console's HTTP side: its files, the redirect, and the samples ring and its routes.

The pages themselves run in a real browser in tests/server/test_console_browser.py.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
from importlib import resources
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientResponse

from logserver.auth import Permissions, UserRecord, format_user_line
from logserver.config import ServerConfig
from logserver.console.samples import SampleRing
from logserver.engine import Engine, StreamInfo

from .http_calls import AUTH, PASSWORD, Client, ack, append_ok, consume_ok, expect

STATIC = resources.files("logserver.console") / "static"
CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()}


def check_console_file(response: ClientResponse, body: bytes, name: str) -> None:
    assert response.status == 200, name
    assert response.headers["Content-Type"] == CONTENT_TYPES[name]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert body == (STATIC / name).read_bytes(), f"{name} is not the package's file"


async def test_the_console_page_and_every_file_it_loads_are_served_with_their_types(client: Client) -> None:
    response = await client.get("/console/", headers=AUTH)
    page = await response.read()
    check_console_file(response, page, "index.html")
    loaded = re.findall(r'(?:src|href)="(?!data:)([^"#]+)"', page.decode())
    assert set(loaded) == set(CONTENT_TYPES) - {"index.html"}, loaded
    for name in loaded:
        response = await client.get(f"/console/{name}", headers=AUTH)
        check_console_file(response, await response.read(), name)


async def test_every_console_route_asks_for_credentials(client: Client) -> None:
    for path in ("/", "/console", "/console/", "/console/console.js", "/console/nope.js", "/api/v1/samples"):
        response = await client.get(path)
        await expect(response, 401, "Unauthorized")
        assert response.headers["WWW-Authenticate"] == 'Basic realm="logserver"'


NOT_FILES = ["nope.js", "VENDORED.md", "uPlot.LICENSE", "..%2Fapp.py", "%2Fetc%2Fpasswd"]


@pytest.mark.parametrize("name", NOT_FILES)
async def test_what_is_not_a_console_file_is_a_json_404(client: Client, name: str) -> None:
    detail = await expect(await client.get(f"/console/{name}", headers=AUTH), 404)
    assert detail.startswith("Not Found - the console has no file '")


@pytest.mark.parametrize("path", ["/", "/console"])
async def test_the_root_redirects_to_the_console(client: Client, path: str) -> None:
    response = await client.get(path, headers=AUTH, allow_redirects=False)
    await expect(response, 302, "Found - /console/")
    assert response.headers["Location"] == "/console/"


# ---- samples ----------------------------------------------------------------------------------


@pytest.fixture
def config(config: ServerConfig, users_text: str) -> ServerConfig:
    """Samples every 50 ms, and a user `team` who may read only the streams `team-*`."""
    password_hash = users_text.strip().split(":", 1)[1]
    team = UserRecord(password_hash, Permissions(produce=("team-*",), consume=("team-*",)))
    config.users_path.write_text(users_text + format_user_line("team", team) + "\n")
    return dataclasses.replace(config, samples_interval=0.05)


async def samples_until(client: Client, path: str, done: Any, headers: dict[str, str] = AUTH) -> Any:
    """GET `path` until `done(answer)` holds (the sampler runs every 50 ms), at most 5 s."""
    for _ in range(100):
        response = await client.get(path, headers=headers)
        if response.status == 200:
            answer = await expect(response, 200)
            if done(answer):
                return answer
        else:
            await response.read()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never showed what the test waits for")


async def test_samples_record_counts_sequences_and_lag_in_the_documented_shape(client: Client) -> None:
    ids = [await append_ok(client, "team-a") for _ in range(3)]
    await consume_ok(client, "team-a", consumer="mailer")
    await expect(await ack(client, "team-a", ids[0], consumer="mailer"), 200)

    def caught_up(answer: dict[str, Any]) -> bool:
        consumers = answer["consumers"]
        return answer["lastSequence"][-1] == 3 and bool(consumers) and consumers[0]["behind"][-1] == 2

    one = await samples_until(client, "/api/v1/streams/team-a/samples", caught_up)
    assert one["name"] == "team-a" and one["intervalSeconds"] == 0.05
    assert one["eventCount"][-1] == 3
    assert [(c["consumer"], c["eventName"]) for c in one["consumers"]] == [("mailer", "OrderPlaced")]
    times = one["times"]
    assert times == sorted(times) and len(times) >= 2
    for series in (one["eventCount"], one["lastSequence"], one["consumers"][0]["behind"]):
        assert len(series) == len(times)

    every = await expect(await client.get("/api/v1/samples", headers=AUTH), 200)
    assert [s["name"] for s in every["streams"]] == ["team-a"]

    document = await expect(await client.get("/api/v1/openapi.json"), 200)
    schemas = {"components": document["components"]}
    paths = document["paths"]
    for path, answer in (("/api/v1/streams/{stream}/samples", one), ("/api/v1/samples", every)):
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.validate(answer, {**schema, **schemas})


async def test_samples_show_a_user_only_the_streams_it_may_see(client: Client) -> None:
    await append_ok(client, "orders")
    await append_ok(client, "team-b")
    await samples_until(client, "/api/v1/samples", lambda a: len(a["streams"]) == 2)
    mine = await expect(await client.get("/api/v1/samples", headers=basic("team")), 200)
    assert [s["name"] for s in mine["streams"]] == ["team-b"]
    denied = await client.get("/api/v1/streams/orders/samples", headers=basic("team"))
    await expect(denied, 403, "Forbidden - user 'team' may not consume from stream 'orders'")


async def test_samples_of_a_stream_never_sampled_are_404(client: Client) -> None:
    detail = await expect(await client.get("/api/v1/streams/ghost/samples", headers=AUTH), 404)
    assert detail == "Not Found - no samples of stream 'ghost' (none yet, or no such stream)"


async def test_the_ring_samples_every_interval_until_stopped(engine: Engine) -> None:
    ring = SampleRing(engine.list_streams, engine.consumer_lag, interval=0.02)
    ring.start()
    await asyncio.sleep(0.2)
    ring.stop()
    taken = len(ring.streams_view(lambda name: True)["times"])
    assert taken >= 3
    await asyncio.sleep(0.1)
    assert len(ring.streams_view(lambda name: True)["times"]) == taken


async def test_the_ring_keeps_its_capacity_aligned_with_times_and_drops_vanished_series(
    engine: Engine,
) -> None:
    clock = iter(range(100, 200))
    visible = {"a", "b"}

    async def visible_streams() -> list[StreamInfo]:
        return [s for s in await engine.list_streams() if s["name"] in visible]

    ring = SampleRing(
        streams=visible_streams,
        consumers=engine.consumer_lag,
        interval=1.0,
        capacity=3,
        clock=lambda: float(next(clock)),
    )
    await engine.append("a", "p", {"event": {"name": "E", "version": 1}})
    await ring.sample()  # t=100: a=1
    await engine.append("b", "p", {"event": {"name": "E", "version": 1}})
    await ring.sample()  # t=101: a=1, b=1
    await engine.append("a", "p", {"event": {"name": "E", "version": 1}})
    await ring.sample()  # t=102: a=2, b=1
    await ring.sample()  # t=103: a=2, b=1 (the ring holds 3: t=100 is gone)
    view = ring.streams_view(lambda name: True)
    assert view["times"] == [101.0, 102.0, 103.0]
    assert view["streams"] == [
        {"name": "a", "eventCount": [1, 2, 2], "lastSequence": [1, 2, 2]},
        {"name": "b", "eventCount": [1, 1, 1], "lastSequence": [1, 1, 1]},
    ]
    visible.discard("b")
    await ring.sample()  # t=104: b missing, so its series goes
    visible.add("b")
    await ring.sample()  # t=105: b back, a new series with nothing before
    view = ring.streams_view(lambda name: True)
    assert view["times"] == [103.0, 104.0, 105.0]
    assert view["streams"][1] == {"name": "b", "eventCount": [None, None, 1], "lastSequence": [None, None, 1]}
    assert ring.streams_view(lambda name: name == "a")["streams"][0]["name"] == "a"
    assert ring.knows("a") and not ring.knows("c")


async def test_the_api_reference_and_its_scripts_are_public_and_nothing_else_is_served(
    client: Client,
) -> None:
    response = await client.get("/api/v1/docs")  # no credentials: it renders the public document
    page = (await response.read()).decode()
    assert response.status == 200 and response.content_type == "text/html"
    assert "style-src 'self' 'unsafe-inline'" in response.headers["Content-Security-Policy"]
    scripts = re.findall(r'src="([^"]+)"', page)
    assert scripts == ["/api/v1/docs/redoc.standalone.js", "/api/v1/docs/apidocs.js"]
    for path in scripts:
        script = await client.get(path)
        assert script.status == 200 and script.content_type == "text/javascript"
        assert len(await script.read()) > 0
    assert b"/api/v1/openapi.json" in await (await client.get(scripts[1])).read()
    for name in ("VENDORED.md", "redoc.LICENSE", "nope.js"):
        detail = await expect(await client.get(f"/api/v1/docs/{name}"), 404)
        assert detail == f"Not Found - the API reference has no file '{name}'"

"""Per-user stream permissions from the users file: 403 when authenticated but not allowed."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientResponse

from logserver import auth
from logserver.auth import (
    FULL_ACCESS,
    Permissions,
    UserRecord,
    UsersFileError,
    add_user,
    format_user_line,
    read_users,
)
from logserver.cli import main
from logserver.config import ServerConfig
from logserver.http import ApiServer

from .http_calls import AUTH, PASSWORD, USER, Client, append_ok, event_body, events_path, expect


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()}


def session_hash(users_text: str) -> str:
    """The session's one scrypt hash of PASSWORD, reused so each user costs no key derivation."""
    return users_text.strip().split(":", 1)[1]


@pytest.fixture
def config(config: ServerConfig, users_text: str) -> ServerConfig:
    password_hash = session_hash(users_text)
    records = {
        USER: UserRecord(password_hash),  # a line without permissions: full access
        "shop": UserRecord(password_hash, Permissions(produce=("orders-*",), consume=("orders-eu",))),
        "billing-admin": UserRecord(password_hash, Permissions(admin=("billing",))),
        "nobody": UserRecord(password_hash, Permissions()),
    }
    config.users_path.write_text("".join(format_user_line(n, r) + "\n" for n, r in records.items()))
    return config


async def post_event(client: Client, user: str, stream: str, body: bytes | None = None) -> ClientResponse:
    headers = {**basic(user), "X-Producer-ID": user}
    data = orjson.dumps(event_body()) if body is None else body
    return await client.post(events_path(stream), data=data, headers=headers)


async def get_events(client: Client, user: str, stream: str) -> ClientResponse:
    headers = {**basic(user), "X-Consumer-ID": user}
    return await client.get(
        events_path(stream), params={"eventName": "OrderPlaced", "limit": "10"}, headers=headers
    )


async def test_a_producer_limited_to_its_streams(client: Client) -> None:
    await expect(await post_event(client, "shop", "orders-eu"), 200)
    await expect(await post_event(client, "shop", "orders-us"), 200)
    await expect(
        await post_event(client, "shop", "billing"),
        403,
        "Forbidden - user 'shop' may not produce to stream 'billing'",
    )
    await expect(await get_events(client, "shop", "orders-eu"), 200)
    await expect(
        await get_events(client, "shop", "orders-us"),
        403,
        "Forbidden - user 'shop' may not consume from stream 'orders-us'",
    )


async def test_ack_needs_the_consume_permission(client: Client) -> None:
    event_id = await append_ok(client, "orders-us")  # by the unrestricted test user
    headers = {**basic("shop"), "X-Consumer-ID": "c"}
    response = await client.post(events_path("orders-us", event_id), data=b"action=ACK", headers=headers)
    await expect(response, 403, "Forbidden - user 'shop' may not consume from stream 'orders-us'")
    event_id = await append_ok(client, "orders-eu")
    response = await client.post(events_path("orders-eu", event_id), data=b"action=ACK", headers=headers)
    await expect(response, 200, "OK")


async def test_admin_covers_producing_and_consuming_its_streams_only(client: Client) -> None:
    await expect(await post_event(client, "billing-admin", "billing"), 200)
    await expect(await get_events(client, "billing-admin", "billing"), 200)
    await expect(await post_event(client, "billing-admin", "billing-eu"), 403)  # globs match whole names
    await expect(await get_events(client, "billing-admin", "orders-eu"), 403)


async def test_a_permissions_field_without_patterns_grants_nothing(client: Client) -> None:
    await expect(await post_event(client, "nobody", "anything"), 403)
    await expect(await get_events(client, "nobody", "anything"), 403)


async def test_a_line_without_permissions_has_full_access(client: Client) -> None:
    for stream in ("orders-eu", "billing", "anything at all"):
        await expect(await post_event(client, USER, stream), 200)
        await expect(await get_events(client, USER, stream), 200)


async def test_403_comes_after_401_and_before_validation_and_existence(client: Client) -> None:
    wrong = {"Authorization": "Basic " + base64.b64encode(b"shop:wrong").decode()}
    response = await client.post(events_path("billing"), data=b"{not json", headers=wrong)
    await expect(response, 401, "Unauthorized")
    # Not 400 for the body, not 404 for the unknown stream: nothing is revealed about streams
    # the user may not use.
    await expect(await post_event(client, "shop", "billing", b"{not json"), 403)
    await expect(await get_events(client, "shop", "no such stream"), 403)
    await expect(await get_events(client, "shop", "orders-eu"), 404)


async def test_a_user_without_permissions_is_refused_every_stream_route(
    client: Client, server: ApiServer
) -> None:
    await append_ok(client, "orders-eu")
    for route in server.dispatcher.routes.routes:
        if route.public:
            continue
        path = route.path.format(stream="orders-eu", eventID="e", consumer="c", file="console.js")
        response = await client.request(route.method, path, headers=basic("nobody"), allow_redirects=False)
        if route.permission is None and not route.full_access:
            assert route.method == "GET"
            if route.path == "/api/v1/streams":
                await expect(response, 200, [])  # lists only the streams the user may use
            elif route.path == "/api/v1/samples":
                assert (await expect(response, 200))["streams"] == []  # the same streams
            else:  # the console's pages, which name no stream
                assert route.path in ("/", "/console", "/console/", "/console/{file}"), route
                assert response.status in (200, 302), route
        else:
            assert response.status == 403, route


async def test_changed_permissions_apply_without_a_restart(
    client: Client, config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "RELOAD_CHECK_SECONDS", 0.0)
    await expect(await post_event(client, "shop", "billing"), 403)
    add_user(config.users_path, "shop", PASSWORD, Permissions(produce=("billing",)))
    await expect(await post_event(client, "shop", "billing"), 200)
    await expect(await post_event(client, "shop", "orders-eu"), 403)


@pytest.mark.parametrize(
    ("pattern", "stream", "allowed"),
    [
        ("*", "Codello Newsletter Subscriptions", True),
        ("orders-*", "orders-", True),
        ("orders-*", "Orders-eu", False),  # case-sensitive, like stream names
        ("orders-?", "orders-eu", False),
        ("[*]", "*", True),  # a literal star
        ("[*]", "x", False),
        ("Webshop *", "Webshop Orders", True),
    ],
)
def test_patterns_are_case_sensitive_globs_over_the_whole_name(
    pattern: str, stream: str, allowed: bool
) -> None:
    assert Permissions(produce=(pattern,)).allows("produce", stream) is allowed


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ('{"consumer": ["*"]}', "unknown permission 'consumer'"),
        ('{"produce": "*"}', "produce must be a list"),
        ('{"produce": [""]}', "produce must be a list"),
        ('["*"]', "must be a JSON object"),
        ("produce=*", "must be a JSON object"),
    ],
)
def test_malformed_permissions_name_the_line(
    tmp_path: Path, users_text: str, field: str, message: str
) -> None:
    users = tmp_path / "users"
    users.write_text(f"ok:{session_hash(users_text)}\nbad:{session_hash(users_text)}:{field}\n")
    with pytest.raises(UsersFileError, match=rf"users:2: .*{message}"):
        read_users(users)


def test_user_add_sets_keeps_and_clears_permissions(tmp_path: Path) -> None:
    users = tmp_path / "users"
    command = ["user", "add", "shop", "--password", "pw", "--users-file", str(users)]
    assert main([*command, "--produce", "orders-*", "--produce", "returns", "--consume", "orders-eu"]) == 0
    expected = Permissions(produce=("orders-*", "returns"), consume=("orders-eu",))
    assert read_users(users)["shop"].permissions == expected
    line = users.read_text().strip()
    assert line.endswith(':{"produce":["orders-*","returns"],"consume":["orders-eu"],"admin":[]}')
    assert main(command) == 0  # a new password only: the permissions stay
    assert read_users(users)["shop"].permissions == expected
    assert main([*command, "--full-access"]) == 0
    assert read_users(users)["shop"].permissions == FULL_ACCESS
    assert users.read_text().count(":") == 1  # back to the original name:hash line
    assert main(["user", "add", "new", "--password", "pw", "--users-file", str(users)]) == 0
    assert read_users(users)["new"].permissions == FULL_ACCESS


def test_user_add_refuses_full_access_with_patterns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = tmp_path / "users"
    argv = [
        "user",
        "add",
        "x",
        "--password",
        "pw",
        "--users-file",
        str(users),
        "--full-access",
        "--admin",
        "*",
    ]
    assert main(argv) == 1
    assert "--full-access" in capsys.readouterr().err
    assert not users.exists()


async def test_the_stream_listing_shows_only_the_users_streams(client: Client) -> None:
    for stream in ("orders-eu", "orders-us", "billing", "hr"):
        await append_ok(client, stream)
    listed = await expect(await client.get("/api/v1/streams", headers=basic("shop")), 200)
    assert [s["name"] for s in listed] == ["orders-eu", "orders-us"]
    listed = await expect(await client.get("/api/v1/streams", headers=basic("billing-admin")), 200)
    assert [s["name"] for s in listed] == ["billing"]
    assert await expect(await client.get("/api/v1/streams", headers=basic("nobody")), 200) == []
    listed = await expect(await client.get("/api/v1/streams", headers=AUTH), 200)
    assert [s["name"] for s in listed] == ["billing", "hr", "orders-eu", "orders-us"]


async def test_metrics_which_name_every_stream_need_full_access(client: Client) -> None:
    response = await client.get("/metrics", headers=basic("billing-admin"))
    await expect(response, 403, "Forbidden - user 'billing-admin' may not use GET /metrics")
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200

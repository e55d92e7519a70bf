"""SPEC §2: Basic auth before validation, the users file, hashes and the first start."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import stat
from pathlib import Path

import orjson
import pytest

from logserver import auth
from logserver.auth import (
    Authenticator,
    UsersFileError,
    add_user,
    create_first_user,
    hash_password,
    read_users,
    verify_password,
)
from logserver.config import ServerConfig
from logserver.http import ApiServer

from .http_calls import AUTH, PASSWORD, USER, Client, append_ok, event_body, events_path, expect


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def pbkdf2_hash(password: str) -> str:
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 1000)
    return f"pbkdf2_sha256$1000${unpadded_b64(salt)}${unpadded_b64(key)}"


def unpadded_b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [
        ("POST", events_path("s"), {}, b"{not json"),
        ("POST", events_path("s"), {"Content-Type": "application/json"}, orjson.dumps(event_body())),
        ("POST", events_path("bad/name"), {"X-Producer-ID": "p"}, b"[]"),
        ("GET", events_path("s"), {}, b""),
        ("GET", events_path("no such stream") + "?eventName=A&limit=0", {"X-Consumer-ID": "c"}, b""),
        ("POST", events_path("s", "not-an-id"), {}, b"action=NOPE"),
    ],
    ids=["bad json", "no producer", "slash in name", "no params", "unknown stream", "bad ack"],
)
async def test_auth_runs_before_any_validation(
    client: Client, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    response = await client.request(method, path, headers=headers, data=body)
    await expect(response, 401, "Unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="logserver"'


async def test_oversized_body_without_credentials_is_401_not_413(client: Client) -> None:
    response = await client.post(events_path("s"), data=b"x" * (2 * 1024 * 1024))
    await expect(response, 401, "Unauthorized")


@pytest.mark.parametrize(
    "headers",
    [
        basic(USER, "wrong"),
        basic("nobody", PASSWORD),
        basic(USER, ""),
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()},
        {"Authorization": ""},
    ],
    ids=[
        "wrong password",
        "unknown user",
        "empty password",
        "bearer",
        "bad base64",
        "no colon",
        "not utf8",
        "empty",
    ],
)
async def test_bad_credentials_are_401(client: Client, headers: dict[str, str]) -> None:
    response = await client.get(events_path("s"), params={"eventName": "A", "limit": "10"}, headers=headers)
    await expect(response, 401, "Unauthorized")


async def test_scheme_is_case_insensitive(client: Client) -> None:
    header = AUTH["Authorization"].replace("Basic", "bAsIc")
    response = await client.get("/health", headers={"Authorization": header})
    await expect(response, 200)
    await append_ok(client, "s")
    response = await client.get(
        events_path("s"),
        params={"eventName": "OrderPlaced", "limit": "10"},
        headers={"Authorization": header, "X-Consumer-ID": "c"},
    )
    await expect(response, 200)


async def test_health_is_public(client: Client) -> None:
    body = await expect(await client.get("/health"), 200)
    assert body["status"] == "ok"


async def test_every_route_but_the_public_ones_asks_for_credentials(
    client: Client, server: ApiServer
) -> None:
    routes = server.dispatcher.routes.routes
    public = {"/health", "/api/v1/openapi.json", "/api/v1/docs", "/api/v1/docs/{file}"}
    assert {route.path for route in routes if route.public} == public
    for route in routes:
        file = "apidocs.js" if route.path.startswith("/api/v1/docs") else "console.js"
        path = route.path.format(stream="s", eventID="e", consumer="c", file=file)
        response = await client.request(route.method, path)
        if route.public:
            assert response.status == 200, route
        else:
            await expect(response, 401, "Unauthorized")
            assert response.headers["WWW-Authenticate"] == 'Basic realm="logserver"'


async def test_user_added_while_running_is_accepted_at_once(client: Client, config: ServerConfig) -> None:
    response = await client.get("/api/v1/streams/s/events", headers=basic("newbie", "fresh pw"))
    await expect(response, 401)
    add_user(config.users_path, "newbie", "fresh pw")
    await append_ok(client, "s")
    headers = {**basic("newbie", "fresh pw"), "X-Consumer-ID": "c"}
    response = await client.get(
        events_path("s"), params={"eventName": "OrderPlaced", "limit": "10"}, headers=headers
    )
    await expect(response, 200)


async def test_replaced_password_stops_working(
    client: Client, config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "RELOAD_CHECK_SECONDS", 0.0)
    await expect(
        await client.get(
            events_path("none"),
            params={"eventName": "A", "limit": "10"},
            headers={**AUTH, "X-Consumer-ID": "c"},
        ),
        404,
    )
    add_user(config.users_path, USER, "rotated")
    response = await client.get(
        events_path("none"), params={"eventName": "A", "limit": "10"}, headers={**AUTH, "X-Consumer-ID": "c"}
    )
    await expect(response, 401)


async def test_pbkdf2_hashes_are_accepted(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(f"legacy:{pbkdf2_hash('old secret')}\n# a comment\n\n")
    authenticator = Authenticator(users)
    user = await authenticator.authenticate(basic("legacy", "old secret")["Authorization"])
    assert user is not None and user.name == "legacy"
    assert await authenticator.authenticate(basic("legacy", "wrong")["Authorization"]) is None


async def test_concurrent_first_requests_with_one_header_all_succeed(tmp_path: Path, users_text: str) -> None:
    users = tmp_path / "users"
    users.write_text(users_text)
    authenticator = Authenticator(users)
    results = await asyncio.gather(*(authenticator.authenticate(AUTH["Authorization"]) for _ in range(20)))
    assert [user.name if user else None for user in results] == [USER] * 20


def test_scrypt_hash_round_trip_and_salting() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second  # salted
    assert first.startswith("scrypt$")
    assert verify_password("pw", first)
    assert not verify_password("pW", first)


def test_users_file_is_owner_only_and_replaced_atomically(tmp_path: Path) -> None:
    users = tmp_path / "conf" / "users"
    add_user(users, "alice", "a")
    add_user(users, "bob", "b")
    # "-" and "!" are outside the hash's base64 alphabet, so the check cannot match by chance.
    add_user(users, "alice", "second-secret!")
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    assert sorted(p.name for p in users.parent.iterdir()) == ["users"]  # no temp files left
    stored = read_users(users)
    assert list(stored) == ["alice", "bob"]
    assert verify_password("second-secret!", stored["alice"].password_hash)
    assert "second-secret!" not in users.read_text()


@pytest.mark.parametrize("name", ["", "with:colon", "with space", "tab\t"])
def test_bad_user_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        add_user(tmp_path / "users", name, "pw")


@pytest.mark.parametrize(
    "line",
    ["no-hash-here", "bob:md5$abc", "bob:scrypt$3$8$1$c2FsdA$a2V5", "bob:scrypt$16384$8$1$!!$a2V5"],
)
def test_malformed_users_file_names_the_line(tmp_path: Path, line: str) -> None:
    users = tmp_path / "users"
    users.write_text(f"# users\n{line}\n")
    with pytest.raises(UsersFileError, match=r"users:2:"):
        read_users(users)


def test_first_start_creates_an_owner_only_file_with_a_working_password(tmp_path: Path) -> None:
    users = tmp_path / "data" / "users"
    created = create_first_user(users)
    assert created is not None
    name, password = created
    assert len(password) >= 20
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    assert verify_password(password, read_users(users)[name].password_hash)
    assert create_first_user(users) is None  # never again, never overwritten

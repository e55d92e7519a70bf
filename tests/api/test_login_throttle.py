"""Failed logins are throttled per client address and user name, with a looser bound per address
(429 + Retry-After); valid users are not slowed, and nothing tells an unknown user from a wrong
password."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from logserver import auth
from logserver.auth import (
    ADDRESS_FAILURE_FACTOR,
    Authenticator,
    FailedLoginThrottle,
    client_key,
    hash_password,
)
from logserver.config import ServerConfig
from logserver.engine import Engine
from logserver.http import ApiServer, build_server

from .conftest import MakeClient
from .http_calls import AUTH, PASSWORD, USER, Client, events_path, expect

FAILURES_PER_MINUTE = 3
SECONDS_PER_TOKEN = 60 // FAILURES_PER_MINUTE


@dataclass
class ManualClock:
    """The throttle's time source, moved by the test: no test here waits on the wall clock."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Derivations:
    """Every scrypt key derivation the process makes, with its cost parameters."""

    calls: list[tuple[int, int, int, int]]


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> Iterator[Derivations]:
    auth._dummy_hash()  # made once per process; not one of the derivations a request makes
    real = auth._scrypt
    seen = Derivations([])

    def counted(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
        seen.calls.append((n, r, p, dklen))
        return real(password, salt, n, r, p, dklen)  # the real derivation still runs

    monkeypatch.setattr(auth, "_scrypt", counted)
    yield seen


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def server(engine: Engine, config: ServerConfig, clock: ManualClock) -> ApiServer:
    throttle = FailedLoginThrottle(FAILURES_PER_MINUTE, clock=clock)
    return build_server(engine, Authenticator(config.users_path), config, throttle)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def attempt(client: Client, headers: dict[str, str]) -> tuple[int, str, str | None]:
    response = await client.get(
        events_path("s"), params={"eventName": "A", "limit": "1"}, headers={**headers, "X-Consumer-ID": "c"}
    )
    body = await expect(response, response.status)
    return response.status, body, response.headers.get("Retry-After")


async def exhaust(client: Client) -> None:
    for i in range(FAILURES_PER_MINUTE):
        assert (await attempt(client, basic(USER, f"guess {i}")))[0] == 401


async def test_failures_beyond_the_limit_are_429_with_retry_after(client: Client) -> None:
    await exhaust(client)
    status, body, retry_after = await attempt(client, basic(USER, "one more guess"))
    assert status == 429
    assert (
        body
        == f"Too Many Requests - too many failed logins from this address; retry in {SECONDS_PER_TOKEN} s"
    )
    assert retry_after == str(SECONDS_PER_TOKEN)


async def test_a_throttled_address_gets_no_key_derivation(client: Client, derivations: Derivations) -> None:
    await exhaust(client)
    assert len(derivations.calls) == FAILURES_PER_MINUTE
    for i in range(5):
        assert (await attempt(client, basic(USER, f"more {i}")))[0] == 429
    assert len(derivations.calls) == FAILURES_PER_MINUTE  # guessing goes nowhere and costs nothing


async def test_a_credential_that_worked_from_this_address_still_works_when_throttled(client: Client) -> None:
    assert (await attempt(client, AUTH))[0] == 404  # authenticated: the stream doesn't exist
    await exhaust(client)
    assert (await attempt(client, basic(USER, "blocked")))[0] == 429
    assert (await attempt(client, AUTH))[0] == 404


async def test_guesses_at_one_user_leave_other_users_of_the_address_alone(
    client: Client, config: ServerConfig
) -> None:
    with config.users_path.open("a") as users:
        users.write(f"colleague:{hash_password('their own password')}\n")
    await exhaust(client)
    assert (await attempt(client, basic(USER, "blocked")))[0] == 429
    # The issue-11 finding: this first request from the same address got 429.
    assert (await attempt(client, basic("colleague", "their own password")))[0] == 404
    assert (await attempt(client, basic("colleague", "a typo")))[0] == 401


async def test_the_address_as_a_whole_has_a_looser_bound(client: Client, clock: ManualClock) -> None:
    per_address = FAILURES_PER_MINUTE * ADDRESS_FAILURE_FACTOR
    for i in range(per_address):  # one guess each at many names: no name's own bucket runs dry
        assert (await attempt(client, basic(f"name-{i}", "guess")))[0] == 401
    status, _, retry_after = await attempt(client, basic("yet-another-name", "guess"))
    assert (status, retry_after) == (429, str(SECONDS_PER_TOKEN // ADDRESS_FAILURE_FACTOR))
    assert (await attempt(client, AUTH))[0] == 429  # a new credential waits, as for one user
    clock.now += SECONDS_PER_TOKEN
    assert (await attempt(client, AUTH))[0] == 404


async def test_a_valid_but_new_credential_waits_like_a_guess(client: Client, clock: ManualClock) -> None:
    # The documented trade-off: checking it would let a throttled address keep guessing.
    await exhaust(client)
    assert (await attempt(client, AUTH))[0] == 429
    clock.now += SECONDS_PER_TOKEN
    assert (await attempt(client, AUTH))[0] == 404


async def test_the_bucket_refills_with_time(client: Client, clock: ManualClock) -> None:
    await exhaust(client)
    clock.now += SECONDS_PER_TOKEN - 1
    status, _, retry_after = await attempt(client, basic(USER, "too early"))
    assert (status, retry_after) == (429, "1")
    clock.now += 1
    assert (await attempt(client, basic(USER, "one token back")))[0] == 401
    assert (await attempt(client, basic(USER, "and used")))[0] == 429
    clock.now += 3600
    await exhaust(client)  # a full bucket again after a long pause, but not more than full
    assert (await attempt(client, basic(USER, "over")))[0] == 429


async def test_requests_without_credentials_are_not_charged(client: Client) -> None:
    for _ in range(FAILURES_PER_MINUTE * 3):
        assert (await attempt(client, {}))[0] == 401
    await exhaust(client)
    assert (await attempt(client, {}))[0] == 401  # a challenge reveals nothing, even when throttled


async def test_concurrent_guesses_cannot_overdraw_the_bucket(
    client: Client, derivations: Derivations
) -> None:
    results = await asyncio.gather(*(attempt(client, basic(USER, f"parallel {i}")) for i in range(12)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [401] * FAILURES_PER_MINUTE + [429] * (12 - FAILURES_PER_MINUTE)
    assert len(derivations.calls) == FAILURES_PER_MINUTE


async def test_concurrent_first_requests_with_one_valid_credential_share_one_token(client: Client) -> None:
    results = await asyncio.gather(*(attempt(client, AUTH) for _ in range(30)))
    assert {status for status, _, _ in results} == {404}


async def test_a_replaced_password_is_charged_once_it_fails(
    client: Client, config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "RELOAD_CHECK_SECONDS", 0.0)
    assert (await attempt(client, AUTH))[0] == 404
    auth.add_user(config.users_path, USER, "rotated")
    for _ in range(FAILURES_PER_MINUTE):
        assert (await attempt(client, AUTH))[0] == 401
    assert (await attempt(client, AUTH))[0] == 429


async def test_zero_turns_the_throttle_off(
    make_client: MakeClient, engine: Engine, config: ServerConfig
) -> None:
    client = await make_client(
        build_server(engine, Authenticator(config.users_path), config, FailedLoginThrottle(0))
    )
    for i in range(FAILURES_PER_MINUTE * 2):
        assert (await attempt(client, {"Authorization": f"Basic not-base64-{i}"}))[0] == 401


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # one host's /64 is one client
        ("::ffff:192.0.2.7", "192.0.2.7"),
        (None, ""),
    ],
)
def test_client_keys(remote: str | None, key: str) -> None:
    assert client_key(remote) == key


async def test_unknown_user_and_wrong_password_are_indistinguishable(
    client: Client, derivations: Derivations
) -> None:
    answers = []
    for headers in (basic("no-such-user", PASSWORD), basic(USER, "wrong password")):
        before = len(derivations.calls)
        response = await client.get(events_path("s"), params={"eventName": "A"}, headers=headers)
        body = await response.read()
        answers.append((response.status, body, response.headers.get("WWW-Authenticate")))
        # Exactly one key derivation each, at the same cost: the dummy hash stands in for the
        # unknown user's, so neither the answer nor its time tells the two apart.
        assert derivations.calls[before:] == [(auth.SCRYPT_N, auth.SCRYPT_R, auth.SCRYPT_P, auth.KEY_BYTES)]
    assert answers[0] == answers[1] == (401, b'"Unauthorized"', 'Basic realm="logserver"')

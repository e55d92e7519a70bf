"""Retrying cluster calls through a leader election, then giving up as EngineUnavailable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from logserver.engine import EngineError, EngineUnavailable

RETRY_PAUSE_SECONDS = 0.25
# What a stream or bucket answers while it has no leader (just created, or electing one).
LEADERLESS = (NoStreamResponseError, NoRespondersError, ServiceUnavailableError, NatsTimeout, TimeoutError)
# JetStream API errors that mean "not now" rather than "no". 10005, "no suitable peers for
# placement": what a cluster still forming answers a replicated stream's creation (and one
# asked for more replicas than it has nodes, until an operator fixes --nats-replicas).
NOT_YET = frozenset({10005})

T = TypeVar("T")


async def through_elections(operation: Callable[[], Awaitable[T]], seconds: float, what: str) -> T:
    """Run `operation`, again after a pause while the cluster answers as leaderless (or NOT_YET),
    for `seconds`.

    Only for operations that are safe to repeat (reads, create-only and compare-and-swap writes,
    idempotent stream creation): a repeat of one that took effect fails its own guard.
    """
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await operation()
        except (*LEADERLESS, APIError) as exc:
            if not worth_retrying(exc):
                raise
            if asyncio.get_running_loop().time() > deadline:
                raise EngineUnavailable(f"{what}: the cluster did not answer ({describe(exc)})") from exc
            await asyncio.sleep(RETRY_PAUSE_SECONDS)


def worth_retrying(exc: BaseException) -> bool:
    """Whether the cluster answers this only until it settles: leaderless, or a NOT_YET error."""
    # KV's errors subclass APIError without its fields
    return isinstance(exc, LEADERLESS) or getattr(exc, "err_code", None) in NOT_YET


def describe(exc: BaseException) -> str:
    """An error for the log: JetStream's own description and code (nats-py's repr shows neither)."""
    if isinstance(exc, APIError) and getattr(exc, "description", None):
        return f"{type(exc).__name__}: {exc.description} (JetStream error {exc.err_code})"
    return repr(exc)


@contextlib.contextmanager
def cluster_errors(what: str) -> Iterator[None]:
    """Turn the NATS client's errors (timeouts, no responders, lost connection) into EngineUnavailable."""
    try:
        yield
    except EngineError:
        raise
    except (NatsError, TimeoutError) as exc:
        raise EngineUnavailable(f"{what}: {describe(exc)}") from exc

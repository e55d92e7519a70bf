"""Retrying cluster calls through a leader election, then giving up as EngineUnavailable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from logserver.engine import EngineError, EngineUnavailable

RETRY_PAUSE_SECONDS = 0.25
# What a stream or bucket answers while it has no leader (just created, or electing one).
LEADERLESS = (NoStreamResponseError, NoRespondersError, ServiceUnavailableError, NatsTimeout, TimeoutError)

T = TypeVar("T")


async def through_elections(operation: Callable[[], Awaitable[T]], seconds: float, what: str) -> T:
    """Run `operation`, again after a pause while the cluster answers as leaderless, for `seconds`.

    Only for operations that are safe to repeat (reads, create-only and compare-and-swap writes,
    idempotent stream creation): a repeat of one that took effect fails its own guard.
    """
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await operation()
        except LEADERLESS as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise EngineUnavailable(f"{what}: the cluster did not answer ({exc!r})") from exc
            await asyncio.sleep(RETRY_PAUSE_SECONDS)


@contextlib.contextmanager
def cluster_errors(what: str) -> Iterator[None]:
    """Turn the NATS client's errors (timeouts, no responders, lost connection) into EngineUnavailable."""
    try:
        yield
    except EngineError:
        raise
    except (NatsError, TimeoutError) as exc:
        raise EngineUnavailable(f"{what}: {exc!r}") from exc

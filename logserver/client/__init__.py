"""The logserver client: `Client` (blocking) and `AsyncClient` (asyncio), one method per route,
typed errors, retries that keep an append's idempotency key, and consumer iterators.

    from logserver.client import Client

    with Client("http://127.0.0.1:8080", "demo", "demo-password") as client:
        client.append("Orders", {"event": {"name": "OrderPlaced", "version": 1}}, producer="shop")
        with client.subscribe("Orders", "OrderPlaced", "mailer", stop_when_idle=True) as events:
            for event in events:
                print(event.sequence, event.payload)  # acked once this body finishes
"""

from .aio import AsyncClient, AsyncSubscription
from .core import Connection
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InsufficientStorage,
    LogserverError,
    NotFound,
    PayloadTooLarge,
    ServerError,
    StreamLocked,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from .model import AckResult, Event, HistoryPage
from .retry import RetryPolicy
from .sync import Client, Subscription

__all__ = [
    "AckResult",
    "ApiError",
    "AsyncClient",
    "AsyncSubscription",
    "BadRequest",
    "Client",
    "Conflict",
    "Connection",
    "ConnectionFailed",
    "Event",
    "Forbidden",
    "HistoryPage",
    "InsufficientStorage",
    "LogserverError",
    "NotFound",
    "PayloadTooLarge",
    "RetryPolicy",
    "ServerError",
    "StreamLocked",
    "Subscription",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
]

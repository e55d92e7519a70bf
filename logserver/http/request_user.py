"""The authenticated user of a request, set by the dispatcher for handlers that need it."""

from __future__ import annotations

from aiohttp import web

from logserver.auth import User

AUTHENTICATED_USER = web.RequestKey("logserver_authenticated_user", User)


def request_user(request: web.BaseRequest) -> User:
    """The user the dispatcher let through; only on secured routes."""
    return request[AUTHENTICATED_USER]

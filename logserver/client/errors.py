"""The client's exceptions: one class per status the server documents, each with its message."""

from __future__ import annotations

import httpx
import orjson


class LogserverError(Exception):
    """Base of every error the client raises; `message` is the server's text (or the transport's)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectionFailed(LogserverError):
    """The server could not be reached, or the connection broke before an answer (after retries)."""


class ApiError(LogserverError):
    """The server answered with an error status; `status` is it, `message` the JSON body's string."""

    status = 0

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    """400: the request broke a rule; the message names the first offending field."""

    status = 400


class Unauthorized(ApiError):
    """401: missing or wrong credentials."""

    status = 401


class Forbidden(ApiError):
    """403: valid credentials whose permissions don't cover this stream or route."""

    status = 403


class NotFound(ApiError):
    """404: no such stream or event (or, with the bare message "Not Found", no such route)."""

    status = 404


class Conflict(ApiError):
    """409: an expected sequence that did not match (`current_sequence` is the stream's), or the
    server's stream limit (`current_sequence` None)."""

    status = 409

    def __init__(self, message: str, current_sequence: int | None = None) -> None:
        super().__init__(message)
        self.current_sequence = current_sequence


class PayloadTooLarge(ApiError):
    """413: the request body exceeds the server's --max-body-bytes."""

    status = 413


class StreamLocked(ApiError):
    """423: another producer owns the stream (single writer)."""

    status = 423


class TooManyRequests(ApiError):
    """429: too many failed logins from this address; `retry_after` is the server's wait in seconds."""

    status = 429

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(ApiError):
    """500: an unexpected failure; the message carries the reference the server's log holds."""

    status = 500


class Unavailable(ApiError):
    """503: the stream is damaged and awaits repair (or the server is not ready)."""

    status = 503


class InsufficientStorage(ApiError):
    """507: the server's disk is full; nothing was written."""

    status = 507


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        PayloadTooLarge,
        StreamLocked,
        ServerError,
        Unavailable,
        InsufficientStorage,
    )
}


def server_message(response: httpx.Response) -> str:
    """The error body's JSON string, or the raw text when the body is not one."""
    try:
        decoded = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, str):
        return decoded
    return response.text or f"HTTP {response.status_code}"


def _header_number(response: httpx.Response, name: str) -> float | None:
    """A numeric header's value, or None when it is absent or not a number."""
    try:
        return float(response.headers[name])
    except (KeyError, ValueError):
        return None


def error_for(response: httpx.Response) -> ApiError:
    """The exception for an error response, carrying the server's message and headers."""
    status = response.status_code
    message = server_message(response)
    if status == 409:
        current = _header_number(response, "X-Current-Sequence")
        return Conflict(message, None if current is None else int(current))
    if status == 429:
        return TooManyRequests(message, _header_number(response, "Retry-After"))
    cls = _BY_STATUS.get(status)
    if cls is None:
        return ApiError(message, status)
    return cls(message)


def connection_failed(exc: httpx.TransportError) -> ConnectionFailed:
    """The client's error for a transport failure (refused, reset, timed out, cut short)."""
    return ConnectionFailed(f"{type(exc).__name__}: {exc}")

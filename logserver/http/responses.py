"""JSON responses and the `"<Reason> - <detail>"` error bodies every route shares."""

from __future__ import annotations

from http import HTTPStatus

import orjson
from aiohttp import web

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
_JSON_HEADERS = {"Content-Type": JSON_CONTENT_TYPE}

# The spec's reason phrases; some differ from http.HTTPStatus (413 is "Request Entity Too Large").
REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    417: "Expectation Failed",
    423: "Locked",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A response whose body is already JSON bytes (consume passes the store's bytes through)."""
    if status == 200 and not headers:
        return web.Response(body=body, headers=_JSON_HEADERS)  # web.Response copies the headers
    all_headers = {"Content-Type": JSON_CONTENT_TYPE}
    if headers:
        all_headers.update(headers)
    return web.Response(body=body, status=status, reason=REASONS.get(status), headers=all_headers)


def error_response(
    status: int, detail: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    reason = REASONS.get(status) or HTTPStatus(status).phrase
    message = reason if detail is None else f"{reason} - {detail}"
    return json_response(orjson.dumps(message), status, headers)


class ApiError(Exception):
    """A client error found by a handler; the dispatcher turns it into its response."""

    def __init__(self, status: int, detail: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def bad_request(detail: str) -> ApiError:
    return ApiError(400, detail)

"""The app's runner, with JSON bodies also for what aiohttp answers outside the application.

aiohttp answers some requests before any middleware runs: a request its HTTP
parser rejects (a header field over --max-header-bytes, a malformed request
line, a bad header byte), an `Expect` other than 100-continue, and anything that
escapes the app. Its own answers are text/plain; here they become the same
`"<Reason> - <detail>"` JSON as every other error. This hooks aiohttp's
low-level `Server` and `RequestHandler`, so tests/api/test_limits.py and the
fuzzer check it against each aiohttp upgrade.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .responses import error_response

log = logging.getLogger("logserver.http")

RawHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]
_EXPECT_DETAIL = "only 'Expect: 100-continue' is supported"


class ApiRunner(web.AppRunner):
    def __init__(self, app: web.Application, *, max_header_bytes: int, access_log_format: str) -> None:
        self._handler_kwargs: dict[str, Any] = {
            "access_log_class": AccessLogger,
            "access_log_format": access_log_format,
            "max_line_size": max_header_bytes,
            "max_field_size": max_header_bytes,
        }
        super().__init__(app, **self._handler_kwargs)

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the application up
        return _JsonErrorServer(
            _json_http_exceptions(made.request_handler),
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            **self._handler_kwargs,
        )


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        # What web.Server.__call__ does, with our handler class.
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class _JsonErrorRequestHandler(RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # As in aiohttp: part of a response is out, so only closing the connection is left.
            raise ConnectionError("response already started; cannot send an error instead")
        if status >= 500:
            reference = secrets.token_hex(8)
            log.error("internal error %s serving %s", reference, request.remote, exc_info=exc)
            response = error_response(500, reference)
        else:
            status, detail = _parser_error(exc, self.max_field_size)
            # The client's mistake: no traceback (aiohttp would log one at ERROR for each).
            log.info("unparseable request from %s: %s", request.remote, detail)
            response = error_response(status, detail)
        response.force_close()
        return response


def _parser_error(exc: BaseException | None, max_header_bytes: int) -> tuple[int, str]:
    """Status and detail for a request the HTTP parser refused, without echoing its bytes."""
    if isinstance(exc, LineTooLong):
        return 431, f"the request line or a header field exceeds {max_header_bytes} bytes"
    if isinstance(exc, BadHttpMessage):
        # aiohttp's message is a reason, then the offending line (which may hold credentials).
        reason = exc.message.split("\n", 1)[0].rstrip(": ")
        if reason == "Too many headers received":
            return 431, "too many header fields"
        return 400, f"malformed HTTP request: {reason}"
    return 400, "malformed HTTP request"


def _json_http_exceptions(handler: RawHandler) -> RawHandler:
    """Wrap the app's entry point so what aiohttp answers before the middlewares is JSON too:
    an `Expect` other than 100-continue (417), and any HTTPException raised there."""

    async def handle(request: BaseRequest) -> web.StreamResponse:
        expect = request.headers.get(hdrs.EXPECT)
        if expect and request.version == HttpVersion11 and expect.lower() != "100-continue":
            # Answered here: aiohttp's own 417 echoes the value into a UTF-8 body and fails (500)
            # on one that is not UTF-8.
            return error_response(417, _EXPECT_DETAIL)
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            detail = _EXPECT_DETAIL if exc.status == 417 else None
            return error_response(exc.status, detail)
        return response

    return handle

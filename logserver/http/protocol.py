"""The HTTP server: aiohttp's low-level Server and RequestHandler, with JSON for parser errors.

aiohttp answers some requests before the dispatcher runs: a request its HTTP
parser rejects (a header field over --max-header-bytes, a malformed request
line, a bad header byte), and anything that escapes the dispatcher. Its own
answers are text/plain; here they become the same `"<Reason> - <detail>"` JSON
as every other error. This hooks aiohttp's `Server` and `RequestHandler`, so
tests/api/test_limits.py and the fuzzer check it against each aiohttp upgrade.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .dispatch import Dispatcher
from .responses import error_response

log = logging.getLogger("logserver.http")

# One short line per request: client, request line, status, body bytes, seconds.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'


class ApiServer(web.Server):
    """aiohttp's low-level server with the dispatcher as its one handler.

    No Application, router or middleware chain stands between the HTTP parser and the
    dispatcher: against a bare aiohttp Application answering a constant, this server alone is
    about 1.2x faster (bench/README). Requests carry `client_max_size`, so read() raises 413.
    At shutdown (before it waits for in-flight requests) it sets `stopping`, which ends long-lived
    answers (live follows), and calls `on_shutdown`, which stops what the server runs besides
    requests (the console's sampler).
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        stopping: asyncio.Event,
        *,
        max_body_bytes: int,
        max_header_bytes: int,
        on_shutdown: Callable[[], None],
    ) -> None:
        super().__init__(
            dispatcher,
            access_log_class=AccessLogger,
            access_log_format=ACCESS_LOG_FORMAT,
            max_line_size=max_header_bytes,
            max_field_size=max_header_bytes,
        )
        self.dispatcher = dispatcher
        self.stopping = stopping
        self._max_body_bytes = max_body_bytes
        self._on_shutdown = on_shutdown

    async def shutdown(self, timeout: float | None = None) -> None:
        """End live follows and background work, then wait for in-flight requests (aiohttp's)."""
        self.stopping.set()
        self._on_shutdown()
        await super().shutdown(timeout)

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        return BaseRequest(
            message, payload, protocol, writer, task, self._loop, client_max_size=self._max_body_bytes
        )

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

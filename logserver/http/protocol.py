"""The HTTP server: aiohttp's low-level Server and RequestHandler, with JSON for parser errors,
connection timeouts and a cap on open connections.

aiohttp answers some requests before the dispatcher runs: a request its HTTP
parser rejects (a header field over --max-header-bytes, a malformed request
line, a bad header byte), and anything that escapes the dispatcher. Its own
answers are text/plain; here they become the same `"<Reason> - <detail>"` JSON
as every other error. This hooks aiohttp's `Server` and `RequestHandler`, so
tests/api/test_limits.py, tests/server/test_connections.py and the fuzzer check
it against each aiohttp upgrade.

Connections are bounded three ways (docs/operations.md "Limits"): aiohttp's keep-alive timer
closes a connection without a complete request `idle_timeout` seconds after it
opened or after its last response; a sweep once a second closes one whose request
head or body has been arriving for more than `read_timeout` seconds (a slowloris
client); and at `max_connections` a new connection closes the oldest one that has
no request in flight, or is refused with a 503 when every one has.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.log import access_logger
from aiohttp.streams import StreamReader
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .access_log import AccessLog
from .dispatch import Dispatcher
from .responses import JSON_CONTENT_TYPE, error_response

log = logging.getLogger("logserver.http")

# aiohttp builds an AccessLogger per connection from this; log_access writes the lines instead.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'
# Descriptors kept for the storage engine's files when --max-connections is derived from
# the open-file limit: a quarter of the limit, and never fewer than this.
MIN_RESERVED_FILES = 64
MIN_CONNECTIONS = 16
# How often the sweep looks for requests that take longer than read_timeout to arrive.
SWEEP_SECONDS = 1.0


def default_max_connections() -> int:
    """The soft RLIMIT_NOFILE minus the engine's reserve (a quarter, at least MIN_RESERVED_FILES)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(MIN_CONNECTIONS, soft - max(MIN_RESERVED_FILES, soft // 4))


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a connection may idle or take to send a request, and how many may be open.

    Immutable; read by the server and its connections on the event loop's thread.
    """

    idle_timeout: float = 60.0
    read_timeout: float = 30.0
    max_connections: int = 1024


def _canned(status: int, detail: str) -> bytes:
    """A complete `Connection: close` answer, for connections no request object exists for."""
    response = error_response(status, detail)
    assert isinstance(response.body, bytes)
    body = response.body
    head = (
        f"HTTP/1.1 {status} {response.reason}\r\nContent-Type: {JSON_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ApiServer(web.Server):
    """aiohttp's low-level server with the dispatcher as its one handler; owns the open connections.

    No Application, router or middleware chain stands between the HTTP parser and the
    dispatcher: against a bare aiohttp Application answering a constant, this server alone is
    about 1.2x faster (docs/performance.md). Requests carry `client_max_size`, so read() raises 413.
    At shutdown (before it waits for in-flight requests) it sets `stopping`, which ends long-lived
    answers (live follows), and calls `on_shutdown`, which stops what the server runs besides
    requests (the console's sampler).
    Everything runs on the event loop's thread; the read-timeout sweep is one task per server,
    started with the first connection and cancelled by shutdown().
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        stopping: asyncio.Event,
        *,
        max_body_bytes: int,
        max_header_bytes: int,
        on_shutdown: Callable[[], None],
        limits: ConnectionLimits | None = None,
        access_log: bool = False,
    ) -> None:
        self.limits = limits if limits is not None else ConnectionLimits()
        # Handlers call log_access only when the `aiohttp.access` logger is on (at INFO).
        self.access_log = AccessLog() if access_log else None
        super().__init__(
            dispatcher,
            access_log_class=AccessLogger,
            access_log=access_logger if access_log else None,
            access_log_format=ACCESS_LOG_FORMAT,
            max_line_size=max_header_bytes,
            max_field_size=max_header_bytes,
            keepalive_timeout=self.limits.idle_timeout,
        )
        self.dispatcher = dispatcher
        self.stopping = stopping
        self._max_body_bytes = max_body_bytes
        self._on_shutdown = on_shutdown
        self._sweeper: asyncio.Task[None] | None = None
        self._evicted = 0  # idle connections closed for new ones since the last sweep
        self._refused = 0  # connections refused with a 503 since the last sweep
        seconds = f"{self.limits.read_timeout:g}"
        self._timeout_answer = _canned(408, f"the request did not arrive within {seconds} s")
        self._full_answer = _canned(503, "the server has no free connection; retry later")

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        if isinstance(protocol, _JsonErrorRequestHandler):
            protocol.head_complete(payload)
        return BaseRequest(
            message, payload, protocol, writer, task, self._loop, client_max_size=self._max_body_bytes
        )

    def __call__(self) -> RequestHandler:
        # What web.Server.__call__ does, with our handler class.
        if self._sweeper is None:
            self._sweeper = self._loop.create_task(self._sweep_slow_requests())
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)

    def admit(self, handler: RequestHandler) -> bool:
        """Whether a new connection may open, closing the oldest idle one at the cap."""
        if len(self._connections) < self.limits.max_connections:
            return True
        for other in self._connections:
            if other is not handler and isinstance(other, _JsonErrorRequestHandler) and other.idle:
                other.force_close()
                self._evicted += 1
                return True
        self._refused += 1
        return False

    @property
    def full_answer(self) -> bytes:
        """The 503 a connection beyond the cap gets before it is closed."""
        return self._full_answer

    async def shutdown(self, timeout: float | None = None) -> None:
        """End live follows and background work, then wait for in-flight requests (aiohttp's)."""
        self.stopping.set()
        self._on_shutdown()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().shutdown(timeout)
        if self.access_log is not None:
            self.access_log.flush()

    async def _sweep_slow_requests(self) -> None:
        """Close connections whose request head, and fail requests whose body, arrive too slowly."""
        interval = min(SWEEP_SECONDS, self.limits.read_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            started_before = self._loop.time() - self.limits.read_timeout
            late = 0
            for handler in list(self._connections):
                if isinstance(handler, _JsonErrorRequestHandler):
                    late += handler.enforce_read_deadline(started_before, self._timeout_answer)
            self._report(late)

    def _report(self, late: int) -> None:
        """One log line per sweep for what a flood of connections did, not one per connection."""
        if late:
            log.info("closed %d connections whose request took over %g s", late, self.limits.read_timeout)
        if self._evicted or self._refused:
            log.warning(
                "at --max-connections %d: closed %d idle connections for new ones, refused %d",
                self.limits.max_connections,
                self._evicted,
                self._refused,
            )
            self._evicted = self._refused = 0


class _JsonErrorRequestHandler(RequestHandler):
    """One connection: aiohttp's handler with JSON parser errors and read-timeout bookkeeping.

    `_head_started` is when the first byte of a request head arrived (0: none arriving),
    `_body_started` when a request whose body was still arriving reached the dispatcher
    (0: its body was complete).
    Both are touched only on the event loop's thread.
    """

    __slots__ = ("_body_started", "_head_started")

    def __init__(self, manager: ApiServer, **kwargs: object) -> None:
        super().__init__(manager, **kwargs)  # type: ignore[arg-type]
        self._head_started = 0.0
        self._body_started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._manager
        if isinstance(server, ApiServer) and not server.admit(self):
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(server.full_answer)
            transport.close()
            self._manager = None  # never registered: connection_lost has nothing to undo
            return
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._head_started and not self._request_in_progress and not self._messages:
            self._head_started = self._loop.time()
        super().data_received(data)

    def log_access(self, request: BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        # aiohttp's AccessLogger formatted and wrote each line on the request path.
        server = self._manager
        if time is not None and isinstance(server, ApiServer) and server.access_log is not None:
            server.access_log.record(request, response, self._loop.time() - time)

    def head_complete(self, payload: StreamReader) -> None:
        """A request head was parsed: its deadline ends, its body's starts unless it is all here."""
        self._head_started = 0.0
        self._body_started = 0.0 if payload.is_eof() else self._loop.time()

    @property
    def idle(self) -> bool:
        """No request in flight or queued (it may be mid-head): closing it loses no answer."""
        return not self._request_in_progress and not self._messages and not self._force_close

    def enforce_read_deadline(self, started_before: float, timeout_answer: bytes) -> bool:
        """Answer 408 and close if a request head or body began arriving before `started_before`.

        A handler waiting for the body then sees the connection lost, as when a client hangs up.
        """
        head_late = self._head_started and self._head_started < started_before and self.idle
        request = self._current_request
        body_late = (
            self._body_started
            and self._body_started < started_before
            and request is not None
            and not request.content.is_eof()
        )
        if not (head_late or body_late):
            return False
        if self.transport is not None:
            self.transport.write(timeout_answer)
        self.force_close()
        return True

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

"""The one entry point of every request: route, authenticate, run the handler, render errors, count."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError

from logserver.auth import (
    Authenticator,
    FailedLoginThrottle,
    Throttled,
    User,
    basic_user_name,
    client_key,
)
from logserver.engine import (
    EngineError,
    EngineUnavailable,
    EventNotFound,
    InvalidName,
    InvalidRequest,
    ReservedStream,
    SequenceMismatch,
    StorageFull,
    StreamCorrupt,
    StreamLimitReached,
    StreamLocked,
    StreamNotFound,
)

from .metrics import RequestMetrics
from .request_user import AUTHENTICATED_USER
from .responses import ApiError, error_response
from .routes import PathParams, Route, RouteTable

log = logging.getLogger("logserver.http")

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="logserver"'}
_EXPECT_DETAIL = "only 'Expect: 100-continue' is supported"


class Dispatcher:
    """What aiohttp's Application, router and middleware chain did, in one call per request:
    they cost about a fifth of a bare aiohttp app's time per request (docs/performance.md).

    Public routes skip auth, and so do unmatched paths (their 404/405 reveals only the route
    table). A client address with too many recent failures gets 429 for credentials it has not
    used successfully before (see FailedLoginThrottle). Every failure is a JSON error body (a
    traceback goes to the log, never the client), and every request is counted in /metrics.
    """

    def __init__(
        self,
        routes: RouteTable,
        authenticator: Authenticator,
        throttle: FailedLoginThrottle,
        metrics: RequestMetrics,
        max_body_bytes: int,
    ) -> None:
        self.routes = routes
        self._authenticator = authenticator
        self._throttle = throttle
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        route: Route | None = None
        params: PathParams = {}
        response: web.StreamResponse
        try:
            expects = bool(request.headers.get(hdrs.EXPECT))
            if expects and (refusal := _unmet_expectation(request)) is not None:
                response = refusal
            else:
                route, params = self.routes.resolve(request.method, request.rel_url.path_safe)
                response = await self._authorized(request, route, params, expects)
        # One name per handler: compiled (mypyc), a reused `as exc` is typed by its first clause.
        except ApiError as refusal_error:
            response = error_response(refusal_error.status, refusal_error.detail)
        except EngineError as engine_error:
            response = _engine_error(request, params, engine_error)
        except web.HTTPException as http_error:
            response = _http_exception(http_error, self._max_body_bytes)
        except ConnectionResetError:
            # aiohttp's word for "the client closed before its body was complete": whoever
            # reads the answer (nobody, usually), it is not a server error.
            log.info("%s %s: the client went away mid-request", request.method, request.path)
            response = error_response(400, "the connection closed before the request body was complete")
        except HttpProcessingError as parse_error:
            # A body the parser rejects while the handler reads it (bad chunked encoding,
            # a Content-Length the connection ended short of): the client's fault, not ours.
            log.info("malformed request body from %s: %s", request.remote, parse_error.message.split("\n")[0])
            response = error_response(400, "malformed request body")
        except Exception:
            response = _internal_error(request)
        path = route.path if route is not None else "unmatched"
        self._metrics.observe(path, request.method, response.status, time.perf_counter() - started)
        return response

    async def _authorized(
        self, request: web.BaseRequest, route: Route, params: PathParams, expects: bool
    ) -> web.StreamResponse:
        if route.public:
            return await self._handled(request, route, params, expects)
        header = request.headers.get("Authorization")
        if not header:
            # No guess was made, so nothing is charged: this is every client's first challenge.
            return error_response(401, headers=_CHALLENGE)
        client = client_key(request.remote)
        credential = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
        user = self._authenticator.cached(credential)
        if user is None or not self._throttle.knows(client, credential):
            # Not known good from this address: the full check, with the throttle's bookkeeping.
            checked = await _check_credential(self._authenticator, self._throttle, header, client, credential)
            if isinstance(checked, web.Response):
                return checked
            user = checked
        if (denial := route.denial(user, params)) is not None:
            return error_response(403, denial)
        request[AUTHENTICATED_USER] = user
        return await self._handled(request, route, params, expects)

    async def _handled(
        self, request: web.BaseRequest, route: Route, params: PathParams, expects: bool
    ) -> web.StreamResponse:
        """The handler's response; first, for `Expect: 100-continue`, the 413 or the 100 Continue."""
        if expects and request.version == HttpVersion11:
            declared = request.content_length
            if declared is not None and declared > self._max_body_bytes:
                # Refused before the client sends it: no 100 Continue, and nothing of it is read.
                response = error_response(413, f"request body exceeds {self._max_body_bytes} bytes")
                response.force_close()
                return response
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the interim answer is not the response (handle_error checks)
            await request.writer.drain()
        return await route.handler(request, params)


def _unmet_expectation(request: web.BaseRequest) -> web.Response | None:
    """A JSON 417 for an `Expect` other than 100-continue (which _handled answers), else None.

    aiohttp's own 417 echoes the value into a UTF-8 body and fails (500) on one that is not UTF-8.
    """
    if request.version != HttpVersion11 or request.headers[hdrs.EXPECT].lower() == "100-continue":
        return None
    return error_response(417, _EXPECT_DETAIL)


async def _check_credential(
    authenticator: Authenticator, throttle: FailedLoginThrottle, header: str, client: str, credential: bytes
) -> User | web.Response:
    """The full check of a credential (`header`'s sha256) from `client`: the user, or a 401/429."""
    name = basic_user_name(header)
    try:
        admission = throttle.admit(client, credential, name)
    except Throttled as exc:
        return error_response(
            429,
            f"too many failed logins from this address; retry in {exc.retry_after} s",
            headers={"Retry-After": str(exc.retry_after)},
        )
    user = None
    try:
        user = await authenticator.authenticate(header, credential)
    finally:
        # Also when the client hangs up mid-check: the admission must not stay open.
        throttle.settle(client, credential, name, admission, valid=user is not None)
    if user is None:
        return error_response(401, headers=_CHALLENGE)
    return user


def _engine_error(request: web.BaseRequest, params: PathParams, exc: EngineError) -> web.Response:
    """The status and body of each engine error (logserver.engine)."""
    stream = params.get("stream", "")
    if isinstance(exc, StreamNotFound):
        return error_response(404, f"stream '{stream}' does not exist")
    if isinstance(exc, EventNotFound):
        event_id = params.get("eventID", "")
        return error_response(404, f"event '{event_id}' does not exist in stream '{stream}'")
    if isinstance(exc, SequenceMismatch):
        return error_response(409, str(exc), headers={"X-Current-Sequence": str(exc.current)})
    if isinstance(exc, ReservedStream):
        return error_response(403, str(exc))
    if isinstance(exc, StreamLocked):
        return error_response(423, "Second writers not allowed")
    if isinstance(exc, InvalidName | InvalidRequest):
        return error_response(400, str(exc))
    if isinstance(exc, StreamLimitReached):
        return error_response(409, str(exc))
    if isinstance(exc, StreamCorrupt):
        # The engine's detail names files: log it for the operator, tell the client what it means.
        log.error("stream %r refused: %s", stream, exc)
        return error_response(503, f"stream '{stream}' is damaged and awaits repair")
    if isinstance(exc, StorageFull):
        log.error("disk full: %s", exc)
        return error_response(507, "the disk is full")
    if isinstance(exc, EngineUnavailable):
        log.error("engine unavailable: %s", exc)
        return error_response(503, "the storage engine is unavailable; retry later")
    return _internal_error(request)


def _http_exception(exc: web.HTTPException, max_body_bytes: int) -> web.Response:
    """No route, wrong method, body too large (aiohttp raises it from read()) in our JSON shape."""
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    if exc.status == 413:
        return error_response(413, f"request body exceeds {max_body_bytes} bytes")
    return error_response(exc.status, headers=headers)


def _internal_error(request: web.BaseRequest) -> web.Response:
    reference = secrets.token_hex(8)
    log.exception("internal error %s in %s %s", reference, request.method, request.path)
    return error_response(500, reference)

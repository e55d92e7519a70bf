"""The one middleware around every route: authentication, error rendering and request metrics."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from logserver.auth import Authenticator, FailedLoginThrottle, Throttled, User, client_key
from logserver.storage.errors import (
    EventNotFound,
    InvalidName,
    SequenceMismatch,
    StorageError,
    StorageFull,
    StreamCorrupt,
    StreamLocked,
    StreamNotFound,
)

from .metrics import RequestMetrics
from .request_user import AUTHENTICATED_USER
from .responses import ApiError, error_response
from .routes import AccessRules

log = logging.getLogger("logserver.http")

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="logserver"'}


def request_middleware(
    authenticator: Authenticator,
    rules: AccessRules,
    throttle: FailedLoginThrottle,
    metrics: RequestMetrics,
    max_body_bytes: int,
) -> Middleware:
    """Everything around a handler, in one layer (each aiohttp middleware is a call and a
    coroutine per request): basic auth and the user's permissions before the handler, every
    failure as a JSON error body (a traceback goes to the log, never the client), and the
    request counted in /metrics whatever its answer.

    Public routes skip auth. A client address with too many recent failures gets 429 for
    credentials it has not used successfully before (see FailedLoginThrottle).
    """

    @web.middleware
    async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            match_info = request.match_info
            # Unmatched paths (404/405) skip auth: their answer reveals only the route table.
            if match_info.http_exception is not None or match_info.route in rules.public:
                response = await handler(request)
            else:
                user = _known_user(request, authenticator, throttle)
                if user is None:
                    user = await _check_credential(request, authenticator, throttle)
                if isinstance(user, web.Response):
                    response = user
                elif (denial := rules.denial(user, match_info)) is not None:
                    response = error_response(403, denial)
                else:
                    request[AUTHENTICATED_USER] = user
                    response = await handler(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.detail)
        except StorageError as exc:
            response = _storage_error(request, exc)
        except web.HTTPException as exc:
            response = _http_exception(exc, max_body_bytes)
        except ConnectionResetError:
            # aiohttp's word for "the client closed before its body was complete": whoever
            # reads the answer (nobody, usually), it is not a server error.
            log.info("%s %s: the client went away mid-request", request.method, request.path)
            response = error_response(400, "the connection closed before the request body was complete")
        except HttpProcessingError as exc:
            # A body the parser rejects while the handler reads it (bad chunked encoding,
            # a Content-Length the connection ended short of): the client's fault, not ours.
            log.info("malformed request body from %s: %s", request.remote, exc.message.split("\n")[0])
            response = error_response(400, "malformed request body")
        except Exception:
            response = _internal_error(request)
        metrics.observe(request, response.status, time.perf_counter() - started)
        return response

    return serve


def _known_user(
    request: web.Request, authenticator: Authenticator, throttle: FailedLoginThrottle
) -> User | web.Response | None:
    """The user of a credential already verified and known good from this address (what the full
    check would answer, without its bookkeeping), a 401 without credentials, else None."""
    header = request.headers.get("Authorization")
    if not header:
        # No guess was made, so nothing is charged: this is every client's first challenge.
        return error_response(401, headers=_CHALLENGE)
    credential = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
    user = authenticator.cached(credential)
    if user is not None and throttle.knows(client_key(request.remote), credential):
        return user
    return None


async def _check_credential(
    request: web.Request, authenticator: Authenticator, throttle: FailedLoginThrottle
) -> User | web.Response:
    """The full check of a credential not known good from this address: the user, or a 401/429."""
    header = request.headers["Authorization"]
    client = client_key(request.remote)
    credential = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
    try:
        admission = throttle.admit(client, credential)
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
        throttle.settle(client, credential, admission, valid=user is not None)
    if user is None:
        return error_response(401, headers=_CHALLENGE)
    return user


def _storage_error(request: web.Request, exc: StorageError) -> web.Response:
    stream = request.match_info.get("stream", "")
    if isinstance(exc, StreamNotFound):
        return error_response(404, f"stream '{stream}' does not exist")
    if isinstance(exc, EventNotFound):
        event_id = request.match_info.get("eventID", "")
        return error_response(404, f"event '{event_id}' does not exist in stream '{stream}'")
    if isinstance(exc, SequenceMismatch):
        return error_response(409, str(exc), headers={"X-Current-Sequence": str(exc.current)})
    if isinstance(exc, StreamLocked):
        return error_response(423, "Second writers not allowed")
    if isinstance(exc, InvalidName):
        return error_response(400, str(exc))
    if isinstance(exc, StreamCorrupt):
        # The engine's detail names files: log it for the operator, tell the client what it means.
        log.error("stream %r refused: %s", stream, exc)
        return error_response(503, f"stream '{stream}' is damaged and awaits repair")
    if isinstance(exc, StorageFull):
        log.error("disk full: %s", exc)
        return error_response(507, "the disk is full")
    return _internal_error(request)


def _http_exception(exc: web.HTTPException, max_body_bytes: int) -> web.Response:
    """aiohttp's own errors (no route, wrong method, body too large) in our JSON shape."""
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    if exc.status == 413:
        return error_response(413, f"request body exceeds {max_body_bytes} bytes")
    return error_response(exc.status, headers=headers)


def _internal_error(request: web.Request) -> web.Response:
    reference = secrets.token_hex(8)
    log.exception("internal error %s in %s %s", reference, request.method, request.path)
    return error_response(500, reference)

"""Reading stored messages: JetStream direct gets (batched), with the leader as the fallback.

A direct get may be answered by any replica, and a follower may lag the leader by the last
few writes (nats-server 2.15 has no `min_last_seq` read-after-write option). So a read that
must see one known sequence (an ack, a look-up by id) or find the first event after a time (a
seek) asks the leader (`STREAM.MSG.GET`) when a replica says "not found", and a batch that
comes back short while this gateway knows of later sequences is completed from the leader.
Stale replicas can only make reads shorter, never skip or reorder: a replica that holds
sequence n holds every sequence before it.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout

from logserver.engine import EngineUnavailable

REQUEST_TIMEOUT_SECONDS = 5.0
READ_PAGE = 256  # messages per batched direct get
NO_MESSAGE_ERROR = 10037  # JSNoMessageFoundErr


class StoredMessage(NamedTuple):
    """One message as the stream holds it."""

    sequence: int
    subject: str
    data: bytes
    timestamp: str  # RFC 3339 with nanoseconds, as the server stamped it
    headers: dict[str, str]


def received_at(timestamp: str) -> str:
    """The server's RFC 3339 nanosecond stamp cut to the API's microseconds, UTC with Z."""
    head, _, fraction = timestamp.rstrip("Z").partition(".")
    return f"{head}.{(fraction + '000000')[:6]}Z"


def nats_time(moment: datetime) -> str:
    """A time as JetStream's requests take it (RFC 3339, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _DirectBatch:
    """The answers to one batched direct get as they arrive, until its end (204/404) or an error.

    Owns `found`, the messages in the order the server sent them; once `finished` is done
    nothing more is taken, and it ends in an error rather than with a message left out.
    Touched only by the subscription's callback and the one reader awaiting `finished`.
    """

    def __init__(self, stream: str, finished: asyncio.Future[list[StoredMessage]]) -> None:
        self.stream = stream
        self.found: list[StoredMessage] = []
        self.finished = finished

    async def take(self, msg: Msg) -> None:
        """One answer: a message, the end of the batch, or a failure status."""
        if self.finished.done():
            return
        status = (msg.headers or {}).get("Status")
        if status is None:
            try:
                self.found.append(_from_direct(msg))
            except (KeyError, ValueError) as exc:
                # nats-py would hand the error to its error callback and go on: a read
                # would skip the event in silence.
                self.finished.set_exception(
                    EngineUnavailable(f"direct get on {self.stream}: an answer without {exc} header")
                )
        elif status in ("204", "404"):  # end of batch, or nothing at all
            self.finished.set_result(self.found)
        else:
            self.finished.set_exception(EngineUnavailable(f"direct get on {self.stream} answered {status}"))


class MessageReader:
    """Direct and leader gets on one NATS connection. Stateless; safe for concurrent use."""

    def __init__(self, connection: Client, api_prefix: str = "$JS.API") -> None:
        self._nc = connection
        self._prefix = api_prefix

    async def batch(self, stream: str, start: int, subject: str | None, count: int) -> list[StoredMessage]:
        """Up to `count` messages from sequence `start` on (of `subject` only, if given)."""
        request: dict[str, Any] = {"seq": max(start, 1), "batch": count}
        if subject is not None:
            request["next_by_subj"] = subject
        return await self._direct_batch(stream, request)

    async def batch_from_time(self, stream: str, moment: datetime, count: int) -> list[StoredMessage]:
        """Up to `count` messages stored at or after `moment`."""
        return await self._direct_batch(stream, {"start_time": nats_time(moment), "batch": count})

    async def _direct_batch(self, stream: str, request: dict[str, Any]) -> list[StoredMessage]:
        """The messages of one batched direct get, collected by a callback until its end marker.

        A callback, not `next_msg`: nats-py's next_msg starts a task, a wait_for and a uuid4
        per message, which was a third of a consume's time through a gateway.
        """
        batch = _DirectBatch(stream, asyncio.get_running_loop().create_future())
        try:
            subscription = await self._nc.subscribe(self._nc.new_inbox(), cb=batch.take)
            try:
                subject = f"{self._prefix}.DIRECT.GET.{stream}"
                await self._nc.publish(subject, orjson.dumps(request), subscription.subject)
                return await asyncio.wait_for(batch.finished, REQUEST_TIMEOUT_SECONDS)
            finally:
                await subscription.unsubscribe()
        except (NatsTimeout, TimeoutError) as exc:
            raise EngineUnavailable(f"no answer reading stream {stream}") from exc
        except NatsError as exc:
            raise EngineUnavailable(f"reading stream {stream} failed: {exc!r}") from exc

    async def one(self, stream: str, sequence: int) -> StoredMessage | None:
        """The message at `sequence` (a replica first, then the leader), or None if none is.

        One request on the connection's shared reply inbox: a one-message batch subscribed
        and unsubscribed an inbox of its own, three protocol messages instead of one.
        """
        try:
            reply = await self._nc.request(
                f"{self._prefix}.DIRECT.GET.{stream}",
                orjson.dumps({"seq": sequence}),
                REQUEST_TIMEOUT_SECONDS,
            )
        except (NatsTimeout, TimeoutError) as exc:
            raise EngineUnavailable(f"no answer reading stream {stream}") from exc
        except NatsError as exc:
            raise EngineUnavailable(f"reading stream {stream} failed: {exc!r}") from exc
        status = (reply.headers or {}).get("Status")
        if status is None:
            found = _from_direct(reply)
            if found.sequence == sequence:
                return found
        elif status != "404":
            raise EngineUnavailable(f"direct get on {stream} answered {status}")
        return await self.leader_get(stream, {"seq": sequence})

    async def leader_next(self, stream: str, after: int, subject: str | None) -> StoredMessage | None:
        """The first message after `after` (of `subject`), as the stream leader sees it."""
        request: dict[str, Any] = {"seq": after + 1}
        if subject is not None:
            request["next_by_subj"] = subject
        return await self.leader_get(stream, request)

    async def leader_from_time(self, stream: str, moment: datetime) -> StoredMessage | None:
        """The first message stored at or after `moment`, as the stream leader sees it."""
        return await self.leader_get(stream, {"start_time": nats_time(moment)})

    async def subject_counts(self, stream: str, subject_filter: str) -> dict[str, int]:
        """Messages per subject matching the filter (STREAM.INFO, from the leader; every page)."""
        subjects: dict[str, int] = {}
        while True:
            request = {"subjects_filter": subject_filter, "offset": len(subjects)}
            try:
                reply = await self._nc.request(
                    f"{self._prefix}.STREAM.INFO.{stream}", orjson.dumps(request), REQUEST_TIMEOUT_SECONDS
                )
            except (NatsTimeout, TimeoutError) as exc:
                raise EngineUnavailable(f"no answer from the leader of stream {stream}") from exc
            except NatsError as exc:
                raise EngineUnavailable(f"reading stream {stream} failed: {exc!r}") from exc
            answer = orjson.loads(reply.data)
            if "error" in answer:
                raise EngineUnavailable(f"stream {stream}: {answer['error'].get('description')}")
            page = answer["state"].get("subjects") or {}
            subjects.update(page)
            if not page or len(subjects) >= int(answer.get("total", len(subjects))):
                return subjects

    async def leader_get(self, stream: str, request: dict[str, Any]) -> StoredMessage | None:
        """STREAM.MSG.GET, answered by the stream leader; None when no message matches."""
        try:
            reply = await self._nc.request(
                f"{self._prefix}.STREAM.MSG.GET.{stream}", orjson.dumps(request), REQUEST_TIMEOUT_SECONDS
            )
        except (NatsTimeout, TimeoutError) as exc:
            raise EngineUnavailable(f"no answer from the leader of stream {stream}") from exc
        except NatsError as exc:
            raise EngineUnavailable(f"reading stream {stream} failed: {exc!r}") from exc
        answer = orjson.loads(reply.data)
        error = answer.get("error")
        if error is not None:
            if error.get("err_code") == NO_MESSAGE_ERROR or error.get("code") == 404:
                return None
            raise EngineUnavailable(f"reading stream {stream}: {error.get('description')}")
        message = answer["message"]
        sequence = int(message["seq"])
        if "seq" in request and "next_by_subj" not in request and sequence != request["seq"]:
            return None
        return StoredMessage(
            sequence,
            message["subject"],
            base64.b64decode(message.get("data") or b""),
            message["time"],
            {},
        )


def _from_direct(msg: Msg) -> StoredMessage:
    """A direct get's answer as a StoredMessage (KeyError, ValueError: a header missing or bad)."""
    headers = msg.headers or {}
    return StoredMessage(
        int(headers["Nats-Sequence"]),
        headers["Nats-Subject"],
        msg.data,
        headers["Nats-Time-Stamp"],
        headers,
    )

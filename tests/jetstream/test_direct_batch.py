"""A batched direct get's answers, taken as nats-py hands them to the subscription callback."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from logserver.engine import EngineUnavailable
from logserver.jetstream.reads import _DirectBatch

pytestmark = pytest.mark.jetstream


def answer(headers: dict[str, str], data: bytes = b"{}") -> Msg:
    """One message as nats-py builds it for a direct get's reply (no client: nothing replies)."""
    return Msg(_client=None, subject="_INBOX.x", reply="", data=data, headers=headers)  # type: ignore[arg-type]


def stored(sequence: int) -> Msg:
    return answer(
        {
            "Nats-Sequence": str(sequence),
            "Nats-Subject": "ls.s.n",
            "Nats-Time-Stamp": "2026-12-02T00:00:00.000000001Z",
        }
    )


async def test_a_batch_ends_with_its_messages_in_order_and_ignores_what_comes_after() -> None:
    batch = _DirectBatch("S", asyncio.get_running_loop().create_future())
    for message in (stored(1), stored(2), answer({"Status": "204"}), stored(3)):
        await batch.take(message)
    assert [m.sequence for m in await batch.finished] == [1, 2]


async def test_an_answer_missing_a_header_fails_the_read_instead_of_leaving_the_event_out() -> None:
    batch = _DirectBatch("S", asyncio.get_running_loop().create_future())
    await batch.take(stored(1))
    await batch.take(answer({"Nats-Subject": "ls.s.n"}))  # no sequence, no time stamp
    await batch.take(stored(3))
    with pytest.raises(EngineUnavailable, match="Nats-Sequence"):
        await batch.finished

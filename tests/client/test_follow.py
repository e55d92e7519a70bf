"""`follow`: the stored events, then each new one as it is appended, once each and in order;
over Server-Sent Events where the server offers them, else by polling history. And the batch-ack
route."""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import quote

import httpx

from logserver.client import AsyncClient, Client, Event

from .conftest import PASSWORD, USER, MakeProxy, ServerProcess, event

EVENTS = 60
DEADLINE_SECONDS = 30.0


def append_while_following(server: ServerProcess, stream: str) -> list[str]:
    """Append EVENTS - 10 events in small batches, pausing between them; their ids."""
    ids = []
    with Client(server.url, USER, PASSWORD) as producer:
        for start in range(10, EVENTS, 5):
            ids += producer.append_batch(
                stream, [event(n=n) for n in range(start, start + 5)], producer="shop"
            )
            time.sleep(0.02)
    return ids


def collect(
    server: ServerProcess, client: Client, stream: str, poll_interval: float
) -> tuple[list[str], list[str]]:
    """The ids appended (10 before, the rest while following) and the ids the follow yielded."""
    stored = client.append_batch(stream, [event(n=n) for n in range(10)], producer="shop")
    seen: list[Event] = []
    done = threading.Event()

    def follow() -> None:
        with Client(server.url, USER, PASSWORD) as follower:
            for item in follower.follow(stream, poll_interval=poll_interval):
                seen.append(item)
                if len(seen) == EVENTS:
                    break
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    appended = stored + append_while_following(server, stream)
    assert done.wait(DEADLINE_SECONDS), f"the follow yielded {len(seen)} of {EVENTS} events"
    return appended, [item.id for item in seen]


def test_follow_polls_history_where_the_server_has_no_live_follow(
    server: ServerProcess, client: Client, stream: str
) -> None:
    appended, seen = collect(server, client, stream, poll_interval=0.05)
    assert seen == appended


async def test_the_async_follow_too(server: ServerProcess, stream: str) -> None:
    async with AsyncClient(server.url, USER, PASSWORD) as client:
        ids = await client.append_batch(stream, [event(n=n) for n in range(3)], producer="shop")

        async def first(count: int, from_sequence: int) -> list[str]:
            seen = []
            async for item in client.follow(stream, from_sequence=from_sequence, poll_interval=0.05):
                seen.append(item.id)
                if len(seen) == count:
                    return seen
            raise AssertionError("the follow ended")

        following = asyncio.create_task(first(3, from_sequence=2))
        await asyncio.sleep(0.2)
        later = await client.append(stream, event(n=3), producer="shop")
        assert await asyncio.wait_for(following, DEADLINE_SECONDS) == [*ids[1:], later]


def test_the_live_follow_is_server_sent_events(server: ServerProcess, client: Client, stream: str) -> None:
    client.append(stream, event(), producer="shop")
    url = f"{server.url}/api/v1/streams/{quote(stream, safe='')}/history"
    params = {"fromSequence": "1", "follow": "true"}
    headers = {"Accept": "text/event-stream"}
    with httpx.stream("GET", url, params=params, headers=headers, auth=(USER, PASSWORD), timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        lines = answer.iter_lines()
        assert next(lines) == "id: 1"
        assert next(lines) == "event: event"
        assert next(lines).startswith("data: {")


def test_the_live_follow_delivers_every_event_once_in_order(
    server: ServerProcess, client: Client, stream: str
) -> None:
    # Polling once a minute could not deliver within the deadline: only the live follow can.
    appended, seen = collect(server, client, stream, poll_interval=60.0)
    assert seen == appended


def test_ack_many_is_one_request_on_the_batch_route(
    make_proxy: MakeProxy, client: Client, stream: str
) -> None:
    ids = client.append_batch(stream, [event(n=n) for n in range(50)], producer="shop")
    proxy = make_proxy()
    with Client(proxy.url, USER, PASSWORD) as through:
        through.ack_many(stream, "mailer", ids[:3])
        [ack] = proxy.exchanges
        assert b"/events:ack " in ack.head
        with through.subscribe(
            stream, "OrderPlaced", "mailer", batch=100, wait=0, stop_when_idle=True
        ) as events:
            assert [item.id for item in events] == ids[3:]
    acks = [exchange for exchange in proxy.exchanges if b"/events:ack " in exchange.head]
    assert len(acks) == 2  # the three, then the other 47 in one request
    assert client.consume(stream, "OrderPlaced", "mailer") == []

"""The subscription iterator acks exactly the events whose loop body finished: not the one that
raised, not the ones never reached; a nack hands a leased event back at once; and it goes on
across a restart of the server."""

from __future__ import annotations

import pytest

from logserver.client import AsyncClient, Client, RetryPolicy

from .conftest import PASSWORD, USER, MakeServer, ServerProcess, event


class Boom(Exception):
    pass


def remaining(client: Client, stream: str, consumer: str) -> list[str]:
    return [e.id for e in client.consume(stream, "OrderPlaced", consumer, limit=100)]


def test_events_are_acked_once_their_body_finished(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=n) for n in range(10)] + [event("Other")], producer="shop")
    processed = []
    with pytest.raises(Boom), client.subscribe(stream, "OrderPlaced", "mailer", wait=0) as events:
        for item in events:
            processed.append(item.id)
            if len(processed) == 6:
                raise Boom
    assert processed == ids[:6]
    assert remaining(client, stream, "mailer") == ids[5:10]  # the sixth raised: delivered again


def test_a_break_counts_as_finished(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=n) for n in range(5)], producer="shop")
    with client.subscribe(stream, "OrderPlaced", "mailer", wait=0) as events:
        for item in events:
            if item.id == ids[2]:
                break
    assert remaining(client, stream, "mailer") == ids[3:]


def test_without_with_the_event_the_loop_stopped_at_stays_unacked(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=n) for n in range(5)], producer="shop")
    for item in client.subscribe(stream, "OrderPlaced", "mailer", wait=0):
        if item.id == ids[2]:
            break  # the iterator, dropped here, acks what finished before it
    assert remaining(client, stream, "mailer") == ids[2:]


def test_stop_when_idle_ends_after_the_last_event(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=n) for n in range(25)], producer="shop")
    with client.subscribe(stream, "OrderPlaced", "mailer", batch=10, wait=0, stop_when_idle=True) as events:
        seen = [item.id for item in events]
    assert seen == ids
    assert remaining(client, stream, "mailer") == []


def test_nack_on_error_hands_a_leased_event_back_at_once(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=n) for n in range(4)], producer="shop")
    subscription = client.subscribe(stream, "OrderPlaced", "workers", wait=0, ack_wait=30, on_error="nack")
    with pytest.raises(Boom), subscription as events:
        for item in events:
            if item.id == ids[1]:
                raise Boom
    # ids[0] acked, ids[1] nacked, ids[2:] still leased to the subscription's page.
    again = client.consume_leased(stream, "OrderPlaced", "workers", 30, limit=10)
    assert [(e.id, e.delivery_count) for e in again] == [(ids[1], 2)]


def test_leave_on_error_keeps_a_leased_event_leased(client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=n) for n in range(2)], producer="shop")
    subscription = client.subscribe(stream, "OrderPlaced", "workers", wait=0, ack_wait=30)
    with pytest.raises(Boom), subscription as events:
        for item in events:
            assert item.id == ids[0]
            raise Boom
    assert client.consume_leased(stream, "OrderPlaced", "workers", 30, limit=10) == []


def test_nack_needs_a_lease(client: Client, stream: str) -> None:
    with pytest.raises(ValueError, match="ack_wait"):
        client.subscribe(stream, "OrderPlaced", "mailer", on_error="nack")


def test_the_subscription_goes_on_across_a_server_restart(make_server: MakeServer) -> None:
    server: ServerProcess = make_server()
    patient = RetryPolicy(attempts=40, base_delay=0.05, max_delay=0.5)  # about 10 s of tries
    with Client(server.url, USER, PASSWORD, retry=patient) as client:
        ids = client.append_batch("orders", [event(n=n) for n in range(30)], producer="shop")
        processed = []
        with client.subscribe("orders", "OrderPlaced", "mailer", batch=10, wait=1) as events:
            for item in events:
                processed.append(item.id)
                if len(processed) == 15:
                    server.stop()  # acks of 11..14 are still batched; the next poll finds no server
                    server.start()
                if len(processed) == 25:
                    break
        assert processed == ids[:25]  # each once, in order
        assert remaining(client, "orders", "mailer") == ids[25:]
    server.kill()
    server.start()  # and the acks were durable
    with Client(server.url, USER, PASSWORD) as client:
        assert remaining(client, "orders", "mailer") == ids[25:]


async def test_the_async_subscription_acks_the_same_way(server: ServerProcess, stream: str) -> None:
    async with AsyncClient(server.url, USER, PASSWORD) as client:
        ids = await client.append_batch(stream, [event(n=n) for n in range(6)], producer="shop")
        processed = []
        with pytest.raises(Boom):
            async with client.subscribe(stream, "OrderPlaced", "mailer", batch=4, wait=0) as events:
                async for item in events:
                    processed.append(item.id)
                    if len(processed) == 5:
                        raise Boom
        assert processed == ids[:5]
        assert [e.id for e in await client.consume(stream, "OrderPlaced", "mailer")] == ids[4:]
        async with client.subscribe(stream, "OrderPlaced", "mailer", wait=0, stop_when_idle=True) as events:
            assert [item.id async for item in events] == ids[4:]
        assert await client.consume(stream, "OrderPlaced", "mailer") == []

"""Retries: an answer lost between request and reply (the connection cut, or a stall past the
timeout) is tried again with the same Idempotency-Key, so nothing is appended twice; 4xx answers
are never retried; a 429's Retry-After is waited out."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from logserver.client import BadRequest, Client, ConnectionFailed, RetryPolicy, TooManyRequests

from .conftest import PASSWORD, USER, MakeProxy, MakeServer, event

RETRY = RetryPolicy(attempts=4, base_delay=0.02)


def test_a_cut_answer_is_retried_with_the_same_key_and_appends_once(
    make_proxy: MakeProxy, client: Client, stream: str
) -> None:
    proxy = make_proxy(cut=1)
    with Client(proxy.url, USER, PASSWORD, retry=RETRY) as cut:
        event_id = cut.append(stream, event(orderId=7), producer="shop")
    first, second = proxy.exchanges
    assert not first.delivered and second.delivered  # the server did append on the first try
    assert first.header("Idempotency-Key") == second.header("Idempotency-Key") is not None
    assert [e.id for e in client.iter_history(stream)] == [event_id]


def test_an_answer_stalled_past_the_timeout_is_retried_with_the_same_key(
    make_proxy: MakeProxy, client: Client, stream: str
) -> None:
    proxy = make_proxy(cut=1, stall=3.0)
    with Client(proxy.url, USER, PASSWORD, timeout=0.5, retry=RETRY) as slow:
        ids = slow.append_batch(stream, [event(n=1), event(n=2)], producer="shop")
    assert [exchange.delivered for exchange in proxy.exchanges] == [False, True]
    keys = {exchange.header("Idempotency-Key") for exchange in proxy.exchanges}
    assert len(keys) == 1
    assert [e.id for e in client.iter_history(stream)] == ids


def test_separate_appends_use_separate_keys_through_retries(
    make_proxy: MakeProxy, client: Client, stream: str
) -> None:
    proxy = make_proxy(cut=2)
    with Client(proxy.url, USER, PASSWORD, retry=RETRY) as cut:
        ids = [cut.append(stream, event(n=n), producer="shop") for n in range(3)]
    keys = [exchange.header("Idempotency-Key") for exchange in proxy.exchanges]
    assert len(keys) == 5 and keys[0] == keys[1] == keys[2] and len(set(keys)) == 3
    assert [e.id for e in client.iter_history(stream)] == ids


def test_a_4xx_is_never_retried(make_proxy: MakeProxy, client: Client, stream: str) -> None:
    proxy = make_proxy()
    with Client(proxy.url, USER, PASSWORD, retry=RETRY) as direct, pytest.raises(BadRequest):
        direct.append(stream, {"event": {"name": "", "version": 1}}, producer="shop")
    assert len(proxy.exchanges) == 1


def test_retries_stop_after_the_attempts_with_connection_failed() -> None:
    accepted = []
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, then hangs up at once

    def hang_up() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    port = listener.getsockname()[1]
    try:
        client = Client(f"http://127.0.0.1:{port}", USER, PASSWORD, retry=RETRY)
        with client, pytest.raises(ConnectionFailed):
            client.append("s", event(), producer="shop")
    finally:
        listener.close()
    assert len(accepted) == RETRY.attempts


def test_retry_after_is_honoured(make_server: MakeServer, make_proxy: MakeProxy) -> None:
    # 12 failures a minute: once the bucket is empty, one more try is due in 5 s (long enough
    # that the bucket is still empty when the valid client comes, even on a busy machine).
    server = make_server("--auth-failures-per-minute", "12")
    with Client(server.url, USER, "wrong", retry=RetryPolicy(attempts=1)) as guesser:
        for _ in range(40):
            try:
                guesser.streams()
            except TooManyRequests:
                break
            except Exception:
                continue
        else:
            raise AssertionError("the throttle never answered 429")
    proxy = make_proxy(upstream=server)
    # A valid credential never used from this address waits like a guess: 429, then 200.
    started = time.monotonic()
    with Client(proxy.url, USER, PASSWORD, retry=RetryPolicy(attempts=3, base_delay=0.01)) as valid:
        assert valid.streams() == []
    elapsed = time.monotonic() - started
    assert len(proxy.exchanges) == 2
    assert elapsed >= 1.0  # Retry-After (up to 5 s), not the 10 ms backoff

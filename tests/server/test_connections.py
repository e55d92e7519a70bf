"""Connection floods against a real `logserver serve` on loopback: idle sockets, slowloris heads,
slow bodies, and more connections than the open-file limit allows (README "Limits").

Each test opens a few hundred sockets at most and finishes in seconds: the server runs with
short --idle-timeout and --read-timeout so that the closes can be waited for.
"""

from __future__ import annotations

import resource
import selectors
import socket
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from .conftest import AUTH, ServerProcess

IDLE_TIMEOUT = 3.0
READ_TIMEOUT = 2.0
# The sweep runs once a second and a timer may fire a little late on a loaded machine.
SLACK = 3.0
SLOW_HEAD = b"POST /api/v1/streams/flood/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def request(
    port: int, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request on a new connection; (status, body)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in {**AUTH, **(headers or {})}.items()]
    lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(raw)
        answer = bytearray()
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, content = bytes(answer).partition(b"\r\n\r\n")
    return int(head.split()[1]), content


def append(port: int, stream: str) -> tuple[int, bytes]:
    event = orjson.dumps({"event": {"name": "Flooded", "version": 1}})
    return request(port, "POST", f"/api/v1/streams/{stream}/events", event, {"X-Producer-ID": "p"})


def health(port: int) -> int:
    return request(port, "GET", "/health")[0]


def open_sockets(port: int, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first_bytes:
            connection.sendall(first_bytes)
        connection.setblocking(False)
        sockets.append(connection)
    return sockets


def wait_closed(sockets: list[socket.socket], within: float) -> dict[socket.socket, bytes]:
    """What each socket received before the server closed it; fails if any stays open `within` s."""
    received = {connection: b"" for connection in sockets}
    open_ones = set(sockets)
    with selectors.DefaultSelector() as selector:
        for connection in sockets:
            selector.register(connection, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while open_ones and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.2):
                connection = key.fileobj
                assert isinstance(connection, socket.socket)
                try:
                    chunk = connection.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    received[connection] += chunk
                else:
                    selector.unregister(connection)
                    open_ones.discard(connection)
    for connection in sockets:
        connection.close()
    assert not open_ones, f"{len(open_ones)} of {len(sockets)} connections still open after {within} s"
    return received


def flood_server(server_factory: Callable[..., ServerProcess], tmp_path: Path, *extra: str) -> ServerProcess:
    timeouts = ["--idle-timeout", str(IDLE_TIMEOUT), "--read-timeout", str(READ_TIMEOUT)]
    return server_factory(tmp_path / "data", extra_args=[*timeouts, *extra]).start()


def test_idle_and_slowloris_connections_are_closed_and_the_server_keeps_answering(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = flood_server(server_factory, tmp_path, "--max-connections", "1000")
    started = time.monotonic()
    idle = open_sockets(server.port, 300)
    slow = open_sockets(server.port, 150, SLOW_HEAD)
    assert health(server.port) == 200
    assert append(server.port, "flood")[0] == 200
    # Slowloris: one more header byte now and then must not keep a head alive past its deadline.
    for connection in slow[:50]:
        connection.send(b"X")
    closed = wait_closed(slow, READ_TIMEOUT + SLACK)
    assert time.monotonic() - started >= READ_TIMEOUT - 0.5
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in closed.values()), set(closed.values())
    assert all(b'"Request Timeout - the request did not arrive within 2 s"' in a for a in closed.values())
    assert health(server.port) == 200
    closed_idle = wait_closed(idle, IDLE_TIMEOUT + SLACK)
    assert set(closed_idle.values()) == {b""}  # an idle connection is just closed, as HTTP allows
    assert time.monotonic() - started >= IDLE_TIMEOUT - 0.5
    assert append(server.port, "flood")[0] == 200


def test_a_slow_body_is_answered_408_but_a_long_poll_is_not_cut(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = flood_server(server_factory, tmp_path)
    assert append(server.port, "bodies")[0] == 200
    head = (
        "POST /api/v1/streams/bodies/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Producer-ID: p\r\n"
        f"Authorization: {AUTH['Authorization']}\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    slow_bodies = open_sockets(server.port, 20, head + b'{"event": ')
    # A consume that waits longer than the read timeout: its request arrived whole, so it runs on.
    status, body = request(
        server.port,
        "GET",
        "/api/v1/streams/bodies/events?eventName=Nothing&limit=1&wait=" + str(READ_TIMEOUT + 1.5),
        headers={"X-Consumer-ID": "c"},
    )
    assert (status, body) == (200, b"[]")
    closed = wait_closed(slow_bodies, SLACK)
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in closed.values()), set(closed.values())
    assert append(server.port, "bodies")[0] == 200
    assert "Traceback" not in server.log()


def test_at_the_connection_cap_new_connections_close_the_oldest_idle_ones(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = flood_server(server_factory, tmp_path, "--max-connections", "50")
    idle = open_sockets(server.port, 200)
    for attempt in range(3):  # each request's connection evicts an idle one
        assert health(server.port) == 200, attempt
        assert append(server.port, f"capped-{attempt}")[0] == 200
    # 200 idle sockets against a cap of 50: at least 150 were closed to make room, long before
    # the idle timeout.
    time.sleep(0.5)
    evicted = 0
    for connection in idle:
        try:
            evicted += connection.recv(1) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            evicted += 1
        connection.close()
    assert evicted >= 150
    assert "closed" in server.log() and "--max-connections 50" in server.log()


def _lowered_open_files(limit: int) -> Callable[[], None]:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return lower


def test_under_a_low_open_file_limit_a_flood_leaves_files_for_the_engine(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # 256 descriptors: the default cap is 192 connections, 64 are kept for the engine's files.
    server = server_factory(tmp_path / "data", preexec=_lowered_open_files(256), segment_bytes=4096)
    server.start()
    idle = open_sockets(server.port, 400)
    try:
        assert health(server.port) == 200
        for number in range(12):  # new streams and segment rolls need new files
            status, body = append(server.port, f"stream-{number}")
            assert status == 200, body
        for _ in range(40):
            assert append(server.port, "stream-0")[0] == 200
        assert health(server.port) == 200
    finally:
        for connection in idle:
            connection.close()
    assert "Too many open files" not in server.log()

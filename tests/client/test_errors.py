"""Each documented error status raises its own class carrying the server's message; every one of
them produced by a real server (a damaged stream, a full disk, a vanished directory)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logserver.client import (
    ApiError,
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    InsufficientStorage,
    NotFound,
    PayloadTooLarge,
    RetryPolicy,
    ServerError,
    StreamLocked,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)

from .conftest import (
    LIMITED_USER,
    MAX_BODY_BYTES,
    PASSWORD,
    USER,
    MakeProxy,
    MakeServer,
    ServerProcess,
    event,
)

ONCE = RetryPolicy(attempts=1)


def test_bad_request_names_the_field(client: Client, stream: str) -> None:
    with pytest.raises(BadRequest) as raised:
        client.append(stream, {"event": {"version": 1}}, producer="shop")
    assert raised.value.status == 400
    assert raised.value.message.startswith("Bad Request - event.name")


def test_unauthorized(server: ServerProcess, stream: str) -> None:
    with Client(server.url, USER, "wrong", retry=ONCE) as wrong, pytest.raises(Unauthorized) as raised:
        wrong.streams()
    assert raised.value.message == "Unauthorized"


def test_forbidden_outside_the_users_patterns(server: ServerProcess, stream: str) -> None:
    with Client(server.url, LIMITED_USER, PASSWORD) as limited:
        limited.append("mine-" + stream, event(), producer="shop")  # allowed
        with pytest.raises(Forbidden) as raised:
            limited.append(stream, event(), producer="shop")
    assert raised.value.message == f"Forbidden - user 'limited' may not produce to stream '{stream}'"


def test_not_found(client: Client, stream: str) -> None:
    with pytest.raises(NotFound) as raised:
        client.consume(stream, "OrderPlaced", "mailer")
    assert raised.value.message == f"Not Found - stream '{stream}' does not exist"


def test_conflict_carries_the_current_sequence(client: Client, stream: str) -> None:
    client.append_batch(stream, [event(), event()], producer="shop")
    with pytest.raises(Conflict) as raised:
        client.append(stream, event(), producer="shop", expected_sequence=1)
    assert raised.value.current_sequence == 2
    assert raised.value.message == "Conflict - expected sequence 1, stream is at 2"


def test_payload_too_large(client: Client, stream: str) -> None:
    with pytest.raises(PayloadTooLarge) as raised:
        client.append(stream, event(pad="x" * MAX_BODY_BYTES), producer="shop")
    assert raised.value.message == f"Payload Too Large - request body exceeds {MAX_BODY_BYTES} bytes"


def test_second_writer_is_stream_locked(client: Client, stream: str) -> None:
    client.append(stream, event(), producer="shop")
    with pytest.raises(StreamLocked) as raised:
        client.append(stream, event(), producer="intruder")
    assert raised.value.message == "Locked - Second writers not allowed"


def test_too_many_failed_logins_carry_retry_after(make_server: MakeServer) -> None:
    throttled = make_server("--auth-failures-per-minute", "1")
    short_wait = RetryPolicy(attempts=3, max_retry_after=5)
    with Client(throttled.url, USER, "wrong", retry=short_wait) as guesser:
        with pytest.raises(Unauthorized):
            guesser.streams()
        started = time.monotonic()
        with pytest.raises(TooManyRequests) as raised:
            guesser.streams()  # a minute's wait is beyond max_retry_after: raised at once
    assert time.monotonic() - started < 2
    assert raised.value.retry_after is not None and 5 < raised.value.retry_after <= 60
    assert raised.value.message.startswith("Too Many Requests - too many failed logins")


def test_a_vanished_stream_directory_is_a_server_error(make_server: MakeServer) -> None:
    server = make_server("--segment-bytes", "4096")
    with Client(server.url, USER, PASSWORD, retry=ONCE) as client:
        client.append("ledger", event(), producer="shop")
        [directory] = (server.data_dir / "streams").iterdir()
        shutil.rmtree(directory)  # the next segment roll cannot create its file
        with pytest.raises(ServerError) as raised:
            for i in range(100):
                client.append("ledger", event(i=i, pad="x" * 300), producer="shop")
    assert raised.value.status == 500
    assert raised.value.message.startswith("Internal Server Error - ")


def damage_first_segment(data_dir: Path, stream: str) -> None:
    """Flip one bit inside the first (sealed) segment and drop its index, as bit rot would."""
    [directory] = (data_dir / "streams").iterdir()
    first = min(directory.glob("*.log"))
    data = bytearray(first.read_bytes())
    data[data.index(b'"pad"') + 8] ^= 0x01
    first.write_bytes(bytes(data))
    first.with_suffix(".idx").unlink()


def test_a_damaged_stream_is_unavailable_after_the_retries(
    make_server: MakeServer, make_proxy: MakeProxy
) -> None:
    server = make_server("--segment-bytes", "4096")
    with Client(server.url, USER, PASSWORD) as client:
        client.append_batch("ledger", [event(i=i, pad="x" * 100) for i in range(40)], producer="shop")
    server.stop()
    damage_first_segment(server.data_dir, "ledger")
    server.start()
    proxy = make_proxy(upstream=server)
    with Client(proxy.url, USER, PASSWORD, retry=RetryPolicy(attempts=3, base_delay=0.01)) as client:
        with pytest.raises(Unavailable) as raised:
            client.consume("ledger", "OrderPlaced", "mailer")
        assert client.health()["status"] == "ok"
    assert raised.value.message == "Service Unavailable - stream 'ledger' is damaged and awaits repair"
    assert len(proxy.exchanges) == 3 + 1  # three tries of the consume (503 is retried), one health


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, so ENOSPC comes from the kernel (needs root, as on CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Write a ballast file until the disk has no byte left."""
    fd = os.open(disk / "ballast", os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_disk_is_insufficient_storage(small_disk: Path, make_server: MakeServer) -> None:
    server = make_server(data_dir=small_disk / "data")
    with Client(server.url, USER, PASSWORD, retry=ONCE) as client:
        client.append("ledger", event(), producer="shop")
        fill(small_disk)
        with pytest.raises(InsufficientStorage) as raised:
            for i in range(50):
                client.append("ledger", event(i=i, pad="x" * 1000), producer="shop")
    assert raised.value.message == "Insufficient Storage - the disk is full"
    assert isinstance(raised.value, ApiError) and raised.value.status == 507

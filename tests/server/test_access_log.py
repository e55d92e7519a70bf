"""The access log (issue 15): off by default, so INFO logs the lifecycle and not each request; with
--access-log one line per request reaches stderr within a fraction of a second, and every line
by the time the server has stopped."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson

from .conftest import AUTH, ServerProcess

REQUESTS = 7


def append_events(server: ServerProcess) -> None:
    body = orjson.dumps({"event": {"name": "Logged", "version": 1}})
    for _ in range(REQUESTS):
        request = urllib.request.Request(
            f"{server.url}/api/v1/streams/logged/events",
            data=body,
            headers={**AUTH, "X-Producer-ID": "p"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def request_lines(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if '"POST /api/v1/streams/logged/events' in line]


def test_by_default_info_logs_the_lifecycle_and_no_request(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "data").start()
    append_events(server)
    assert server.stop() == 0
    assert request_lines(server) == []
    log = server.log()
    assert "INFO logserver: listening on http://" in log and "INFO logserver: stopped" in log


def test_access_log_writes_one_line_per_request_soon_and_all_by_the_stop(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "data", extra_args=["--access-log"]).start()
    append_events(server)
    deadline = time.monotonic() + 5
    while len(request_lines(server)) < REQUESTS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(request_lines(server)) == REQUESTS
    append_events(server)
    assert server.stop() == 0
    lines = request_lines(server)
    assert len(lines) == 2 * REQUESTS
    assert all(" INFO logserver.access: 127.0.0.1 " in line and '" 200 ' in line for line in lines), lines

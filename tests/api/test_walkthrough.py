"""The README's curl walkthrough and docs/api.md's examples, run as written against a real
`python -m logserver serve`."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from logserver.config import ServerConfig

from .conftest import engine_environment

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
API_DOC = ROOT / "docs" / "api.md"  # the extensions' examples continue the walkthrough
STARTUP_DEADLINE_SECONDS = 60.0


def walkthrough_script() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- walkthrough -->\n```sh\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its <!-- walkthrough --> block"
    return match[1]


def extension_examples() -> list[str]:
    text = API_DOC.read_text(encoding="utf-8") + README.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- extension -->\n```sh\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 9, "docs/api.md lost its extension examples"
    return blocks


def as_run_here(script: str, port: int) -> str:
    script = script.replace("http://127.0.0.1:8080", f"http://127.0.0.1:{port}")
    # `make run` made .venv; here the interpreter running the tests stands in for it.
    return script.replace(".venv/bin/logserver", f"{shlex.quote(sys.executable)} -m logserver")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path, config: ServerConfig) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`logserver serve` with its defaults, as `make run` starts it, on a free port (and on the
    engine under test)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGSERVER_")}
    env.update(engine_environment(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "logserver", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_healthy(process, port)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def wait_until_healthy(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during start-up"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise AssertionError("the server did not answer /health")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's walkthrough uses curl")
def test_readme_walkthrough_works_as_written(
    server: tuple[subprocess.Popen[str], int], tmp_path: Path, config: ServerConfig
) -> None:
    process, port = server
    script = as_run_here(walkthrough_script(), port)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr

    event_id, consumed, acked, consumed_again = result.stdout.splitlines()
    assert str(uuid.UUID(event_id)) == event_id
    [event] = orjson.loads(consumed)
    assert event["eventId"] == event_id
    assert event["stream"] == "Webshop Orders"
    assert event["payload"] == {"orderId": 42}
    assert orjson.loads(acked) == "OK"
    assert orjson.loads(consumed_again) == []

    # The extension examples continue from here, each as written but failing on a non-2xx answer.
    examples = "\n".join(extension_examples()).replace("curl -s ", "curl -sSf ")
    more = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", as_run_here(script + examples, port)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert more.returncode == 0, more.stderr
    assert 'logserver_stream_last_sequence{stream="Webshop Orders"}' in more.stdout

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    # The first start printed the generated password exactly once, and the shutdown was clean.
    assert stderr.count("with user 'admin' and password") == 1
    assert "stopped; all files closed" in stderr
    if config.engine == "jetstream":  # the walkthrough really ran on the cluster
        assert "JetStream engine connected" in stderr

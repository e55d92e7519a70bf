"""A real `logserver serve` subprocess on a free port, for tests that kill, copy and restart it."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from logserver.auth import hash_password

USER, PASSWORD = "loader", "load-test-password"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    data_dir: Path
    fsync: str = "always"
    segment_bytes: int = 16384
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)  # more `serve` flags
    cwd: Path | None = None  # the server's working directory (default: the test's)
    preexec: Callable[[], None] | None = None  # run in the child before exec (e.g. setrlimit)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        users = self.data_dir / "users"
        if not users.exists():
            users.write_text(f"{USER}:{hash_password(PASSWORD)}\n")
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        command = [sys.executable, "-m", "logserver", "serve", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--fsync", self.fsync]
        command += ["--segment-bytes", str(self.segment_bytes), "--fsync-interval-ms", "50"]
        command += self.extra_args
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=log, cwd=self.cwd, preexec_fn=self.preexec
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        return self.process.returncode


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(data_dir: Path | None = None, **kwargs: object) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()

"""Fixtures: a real `logserver serve` process on a real socket, clients for it, and a TCP proxy
that cuts or stalls chosen answers (the failures a client's retries exist for)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from logserver.auth import hash_password
from logserver.client import Client, RetryPolicy

USER = "tester"
PASSWORD = "correct horse battery"
LIMITED_USER = "limited"  # may produce to and consume from streams named mine-* only
STARTUP_SECONDS = 60.0
MAX_BODY_BYTES = 64 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_users(path: Path, password_hash: str) -> None:
    limited = '{"produce":["mine-*"],"consume":["mine-*"],"admin":[]}'
    path.write_text(f"{USER}:{password_hash}\n{LIMITED_USER}:{password_hash}:{limited}\n")


@dataclass
class ServerProcess:
    """`python -m logserver serve` on a fixed port over one data dir; restartable on that port."""

    directory: Path
    options: list[str] = field(default_factory=list)
    data_dir: Path = Path()  # <directory>/data unless given
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if self.data_dir == Path():
            self.data_dir = self.directory / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "logserver", "serve", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--users-file", str(self.directory / "users")]
        command += ["--log-level", "WARNING", *self.options]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGSERVER_")}
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.directory / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise AssertionError("the server did not answer /health")

    def stop(self) -> None:
        """SIGTERM and wait: the clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=60)
        self.process = None


MakeServer = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)  # one key derivation for the session


@pytest.fixture
def make_server(tmp_path: Path, password_hash: str) -> Iterator[MakeServer]:
    """Start servers of one's own (own options, own data dir); all stopped at the end."""
    started: list[ServerProcess] = []

    def make(*options: str, data_dir: Path = Path()) -> ServerProcess:
        directory = tmp_path / f"server-{len(started)}"
        directory.mkdir()
        write_users(directory / "users", password_hash)
        server = ServerProcess(directory, list(options), data_dir)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, password_hash: str) -> Iterator[ServerProcess]:
    """One server for the tests that only need some stream of their own."""
    directory = tmp_path_factory.mktemp("shared-server")
    write_users(directory / "users", password_hash)
    shared = ServerProcess(
        directory, ["--max-body-bytes", str(MAX_BODY_BYTES), "--auth-failures-per-minute", "0"]
    )
    shared.start()
    yield shared
    shared.kill()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, USER, PASSWORD, retry=RetryPolicy(attempts=3, base_delay=0.05)) as opened:
        yield opened


@pytest.fixture
def stream(request: pytest.FixtureRequest) -> str:
    """A stream name of this test's own, with a space as users write them."""
    return f"{request.node.name[:60]} {uuid.uuid4().hex[:8]}"


def event(name: str = "OrderPlaced", **payload: object) -> dict[str, object]:
    return {"event": {"name": name, "version": 1}, "payload": payload}


@dataclass
class Exchange:
    """One request the proxy saw (its head) and what it did with the answer."""

    head: bytes
    delivered: bool

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode()
        return None


class CuttingProxy:
    """A TCP proxy in front of the server that passes each request on and, for the first
    `cut` of them, withholds the server's answer: it closes the client's connection (`stall`
    0) or keeps it silent for `stall` seconds first. Everything it saw is in `exchanges`.
    Threads: one accepting, one per client connection; `exchanges` is appended under a lock.
    """

    def __init__(self, upstream_port: int, cut: int = 0, stall: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.cut = cut
        self.stall = stall
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            buffered = b""
            while True:
                request, buffered = _read_request(connection, buffered)
                if request is None:
                    return
                answer = self._forward(request)
                with self._lock:
                    withhold = self.cut > 0
                    self.cut -= withhold
                    head = request.split(b"\r\n\r\n", 1)[0]
                    self.exchanges.append(Exchange(head, delivered=not withhold))
                if withhold:
                    time.sleep(self.stall)
                    return
                connection.sendall(answer)

    def _forward(self, request: bytes) -> bytes:
        """The server's whole answer to `request`, sent on a connection of its own."""
        head, _, body = request.partition(b"\r\n\r\n")
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        with socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            upstream.sendall(b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body)
            chunks = []
            while chunk := upstream.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _read_request(connection: socket.socket, buffered: bytes) -> tuple[bytes | None, bytes]:
    """One whole HTTP request (head and Content-Length body) and the bytes after it."""
    while b"\r\n\r\n" not in buffered:
        chunk = connection.recv(65536)
        if not chunk:
            return None, b""
        buffered += chunk
    head, _, rest = buffered.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = connection.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


MakeProxy = Callable[..., CuttingProxy]


@pytest.fixture
def make_proxy(server: ServerProcess) -> Iterator[MakeProxy]:
    proxies: list[CuttingProxy] = []

    def make(cut: int = 0, stall: float = 0.0, upstream: ServerProcess = server) -> CuttingProxy:
        proxy = CuttingProxy(upstream.port, cut, stall)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()

"""--tls-cert/--tls-key: the listener speaks HTTPS with a certificate made here by `openssl`."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from logserver.auth import hash_password
from logserver.config import ServerConfig
from logserver.engine import Engine
from logserver.server import tls_context

from .conftest import OnEngine
from .http_calls import AUTH, PASSWORD, USER
from .live import listening

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def make_certificate(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1 and its key, as PEM files."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_path)


@pytest.fixture
def config(tmp_path: Path, certificate: tuple[Path, Path], on_engine: OnEngine) -> ServerConfig:
    users = tmp_path / "users"
    users.write_text(f"{USER}:{hash_password(PASSWORD)}\n")
    cert, key = certificate
    return on_engine(ServerConfig(data_dir=tmp_path / "data", users_file=users, tls_cert=cert, tls_key=key))


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


async def test_the_api_over_tls(engine: Engine, config: ServerConfig, certificate: tuple[Path, Path]) -> None:
    async with listening(engine, config, tls=tls_context(config)) as server:
        assert server.url.startswith("https://")
        events = f"{server.url}/api/v1/streams/{quote('secure stream')}/events"
        body = orjson.dumps({"event": {"name": "Sealed", "version": 1}, "payload": {"n": 1}})
        connector = aiohttp.TCPConnector(ssl=trusting(certificate[0]))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(f"{server.url}/health") as response:
                assert response.status == 200
            async with session.post(events, data=body, headers={**AUTH, "X-Producer-ID": "p"}) as response:
                assert response.status == 200
                event_id = orjson.loads(await response.read())
            params = {"eventName": "Sealed", "limit": "10"}
            async with session.get(events, params=params, headers={**AUTH, "X-Consumer-ID": "c"}) as response:
                [event] = orjson.loads(await response.read())
                assert (event["eventId"], event["payload"]) == (event_id, {"n": 1})


async def test_plain_http_and_untrusted_clients_get_nowhere(
    engine: Engine, config: ServerConfig, tmp_path: Path
) -> None:
    other_cert, _ = make_certificate(tmp_path, "other")
    async with listening(engine, config, tls=tls_context(config)) as server:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"http://{server.host}:{server.port}/health") as response:
                    await response.read()
        connector = aiohttp.TCPConnector(ssl=trusting(other_cert))
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(f"{server.url}/health") as response:
                    await response.read()


def test_logserver_serve_speaks_https(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "logserver",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "d"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGSERVER_")}
    env |= {"LOGSERVER_TLS_CERT": str(cert), "LOGSERVER_TLS_KEY": str(key)}  # the env form, too
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/health", timeout=2, context=trusting(cert)
                ) as response:
                    assert response.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the server did not answer over TLS"
                time.sleep(0.05)
        process.terminate()
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0
        assert f"listening on https://127.0.0.1:{port}" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("missing", ["key", "cert"])
def test_half_a_tls_configuration_is_refused(
    tmp_path: Path, certificate: tuple[Path, Path], missing: str
) -> None:
    cert, key = certificate
    given = ["--tls-cert", str(cert)] if missing == "key" else ["--tls-key", str(key)]
    result = subprocess.run(
        [sys.executable, "-m", "logserver", "serve", "--data-dir", str(tmp_path / "d"), *given],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "--tls-cert and --tls-key must be given together" in result.stderr
    assert not (tmp_path / "d").exists()  # refused before touching the data dir


def test_a_key_that_does_not_fit_the_certificate_is_refused(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    _, other_key = make_certificate(tmp_path, "other")
    config = dataclasses.replace(ServerConfig(), tls_cert=certificate[0], tls_key=other_key)
    with pytest.raises(ssl.SSLError):
        tls_context(config)

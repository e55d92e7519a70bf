"""Logging in to NATS as NATS users do (token, user:password, NKey, creds file, TLS and mutual TLS),
each against a real single-node nats-server configured for it; and the option rules of `serve`."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nkeys
import orjson
import pytest

from logserver.auth import add_user
from logserver.config import ServerConfig
from logserver.engine import Bound, EngineUnavailable, HistoryQuery
from logserver.filestore import FileStore, StorageConfig
from logserver.jetstream import JetStreamEngine, JetStreamSettings, NatsLoginRefused, open_jetstream_engine

from .cluster import NatsCluster, free_port
from .nats_login import NKey, certificate_authority, operator_setup

pytestmark = pytest.mark.jetstream

TOKEN = "tok-3f9a1c-secret"
PASSWORD = "pw-8d2e7b-secret"
BODY: dict[str, Any] = {"event": {"name": "LoggedIn", "version": 1}, "payload": {"k": 1}}
START_SECONDS = 60.0


@contextmanager
def nats_server(root: Path, extra: str, monitor_tls: ssl.SSLContext | None = None) -> Iterator[NatsCluster]:
    """One nats-server (JetStream, sync always) with `extra` in its config, stopped afterwards."""
    server = NatsCluster(root / "nats", size=1, extra_config=extra, monitor_tls=monitor_tls).start()
    try:
        yield server
    finally:
        server.stop()


def gateway(server: NatsCluster, url: str | None = None, **options: Any) -> ServerConfig:
    """`serve --engine jetstream` settings for the one-node server, with these NATS options."""
    return ServerConfig(
        engine="jetstream",
        nats_url=url or server.urls[0],
        nats_monitor_url=server.monitor_urls[0],
        nats_replicas=1,
        **options,
    )


async def append_and_read_back(config: ServerConfig) -> None:
    """Open the engine on `config`, append an event and read it back from the stream."""
    config.check()
    engine = await open_jetstream_engine(config)
    try:
        event_id = await engine.append("Logins", "gateway-test", BODY)
        page = await engine.history("Logins", HistoryQuery(Bound(sequence=1), 10))
        assert [event["eventId"] for event in orjson.loads(page.body)] == [event_id]
    finally:
        await engine.close()


async def refused(config: ServerConfig) -> str:
    """The message of the NatsLoginRefused that opening the engine on `config` raises."""
    config.check()
    started = time.monotonic()
    with pytest.raises(NatsLoginRefused) as raised:
        await open_jetstream_engine(config)
    assert time.monotonic() - started < 10, "a refused login must fail at once, not after retries"
    return str(raised.value)


# ---- token and user:password -------------------------------------------------------------------


def serve(
    tmp_path: Path, server: NatsCluster, environment: dict[str, str]
) -> tuple[subprocess.Popen[str], int]:
    """`logserver serve --engine jetstream` in its own process, with these LOGSERVER_* variables."""
    add_user(tmp_path / "users", "admin", "admin-password")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGSERVER_")}
    env.update(
        {
            "LOGSERVER_ENGINE": "jetstream",
            "LOGSERVER_NATS_URL": server.urls[0],
            "LOGSERVER_NATS_MONITOR_URL": server.monitor_urls[0],
            "LOGSERVER_NATS_REPLICAS": "1",
            "LOGSERVER_USERS_FILE": str(tmp_path / "users"),
            "LOGSERVER_PORT": str(port),
            **environment,
        }
    )
    command = [sys.executable, "-m", "logserver", "serve", "--data-dir", str(tmp_path / "data")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, port


def http_append(port: int) -> int:
    """POST one event with the admin's credentials; the status."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/streams/Logins/events",
        data=orjson.dumps(BODY),
        headers={
            "Authorization": "Basic " + base64.b64encode(b"admin:admin-password").decode(),
            "X-Producer-ID": "gateway-test",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        status: int = response.status
        return status


def wait_until_listening(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError("the gateway did not answer /health")


def test_a_gateway_with_the_servers_token_serves_appends(tmp_path: Path) -> None:
    with nats_server(tmp_path, f'authorization {{ token: "{TOKEN}" }}') as server:
        process, port = serve(tmp_path, server, {"LOGSERVER_NATS_TOKEN": TOKEN})
        try:
            wait_until_listening(process, port)
            assert http_append(port) == 200
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
        assert TOKEN not in stderr


@pytest.mark.parametrize("token", ["not-the-token", None])
def test_a_gateway_with_a_wrong_or_no_token_exits_with_a_clear_message(
    tmp_path: Path, token: str | None
) -> None:
    with nats_server(tmp_path, f'authorization {{ token: "{TOKEN}" }}') as server:
        process, _ = serve(tmp_path, server, {"LOGSERVER_NATS_TOKEN": token} if token else {})
        _, stderr = process.communicate(timeout=START_SECONDS)
    assert process.returncode != 0
    assert "refused this gateway" in stderr and "Authorization" in stderr, stderr
    assert "Traceback" not in stderr
    assert token is None or token not in stderr


async def test_user_and_password_in_the_url_log_in_and_a_wrong_password_is_never_shown(
    tmp_path: Path,
) -> None:
    users = f'authorization {{ users: [ {{ user: gateway, password: "{PASSWORD}" }} ] }}'
    with nats_server(tmp_path, users) as server:
        port = server.nodes[0].client_port
        await append_and_read_back(gateway(server, f"nats://gateway:{PASSWORD}@127.0.0.1:{port}"))
        message = await refused(gateway(server, f"nats://gateway:{PASSWORD}-wrong@127.0.0.1:{port}"))
        assert "gateway:***@127.0.0.1" in message
        assert PASSWORD not in message


async def test_a_url_password_is_percent_decoded_as_urls_encode_it(tmp_path: Path) -> None:
    """A password with `@` or `/` must be percent-encoded in a URL; NATS clients decode it."""
    password = "p@ss/word-secret"
    users = f'authorization {{ users: [ {{ user: gateway, password: "{password}" }} ] }}'
    with nats_server(tmp_path, users) as server:
        port = server.nodes[0].client_port
        await append_and_read_back(gateway(server, f"nats://gateway:p%40ss%2Fword-secret@127.0.0.1:{port}"))


async def test_urls_with_different_logins_are_refused_before_any_connect() -> None:
    urls = f"nats://gateway:{PASSWORD}@127.0.0.1:4222,nats://gateway:other-secret@127.0.0.1:4223"
    with pytest.raises(NatsLoginRefused, match="different logins") as raised:
        await open_jetstream_engine(ServerConfig(engine="jetstream", nats_url=urls, nats_monitor_url=""))
    assert PASSWORD not in str(raised.value) and "other-secret" not in str(raised.value)


async def test_a_url_login_reaches_the_nodes_the_cluster_announces_once_its_node_dies(
    tmp_path: Path,
) -> None:
    """One URL with user:password, on a 3-node cluster: after that node is killed the gateway
    reconnects to a node it only learned of from the cluster, and must log in there too."""
    users = f'authorization {{ users: [ {{ user: gateway, password: "{PASSWORD}" }} ] }}'
    cluster = NatsCluster(tmp_path / "nats", size=3, extra_config=users).start()
    try:
        first = cluster.nodes[0]
        config = ServerConfig(
            engine="jetstream",
            nats_url=f"nats://gateway:{PASSWORD}@127.0.0.1:{first.client_port}",
            nats_monitor_url=",".join(cluster.monitor_urls),
        )
        engine = await open_jetstream_engine(config)
        try:
            before = await engine.append("Logins", "gateway-test", BODY)
            cluster.kill(first.name)
            after = await engine.append("Logins", "gateway-test", BODY)  # retried through the failover
            page = await engine.history("Logins", HistoryQuery(Bound(sequence=1), 10))
            assert [event["eventId"] for event in orjson.loads(page.body)] == [before, after]
        finally:
            await engine.close()
    finally:
        cluster.stop()


async def test_migrate_logs_in_with_the_same_options(tmp_path: Path) -> None:
    source = await FileStore.open(StorageConfig(data_dir=tmp_path / "data"))
    try:
        await source.append("Logins", "gateway-test", BODY)
    finally:
        await source.close()
    with nats_server(tmp_path, f'authorization {{ token: "{TOKEN}" }}') as server:
        command = [
            sys.executable,
            "-m",
            "logserver",
            "migrate",
            "--to",
            server.urls[0],
            "--nats-replicas",
            "1",
        ]
        command += ["--nats-monitor-url", server.monitor_urls[0], "--data-dir", str(tmp_path / "data")]
        refused_run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert refused_run.returncode == 1 and "refused this gateway" in refused_run.stderr
        run = subprocess.run([*command, "--nats-token", TOKEN], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert "1 events appended" in run.stdout
        assert TOKEN not in run.stdout + run.stderr


async def test_servers_that_never_answer_stop_the_start_after_the_timeout(tmp_path: Path) -> None:
    with nats_server(tmp_path, "") as server:
        nobody = f"nats://gateway:{PASSWORD}@127.0.0.1:{free_port()}"
        settings = JetStreamSettings([nobody], server.monitor_urls, replicas=1, publish_timeout_seconds=1.0)
        with pytest.raises(
            EngineUnavailable, match=r"cannot connect to NATS at nats://gateway:\*\*\*@"
        ) as raised:
            await JetStreamEngine.open(settings)
        assert PASSWORD not in str(raised.value)


# ---- NKey and creds ----------------------------------------------------------------------------------


async def test_an_nkey_seed_file_logs_in_and_another_users_seed_is_refused(tmp_path: Path) -> None:
    user, stranger = NKey(nkeys.PREFIX_BYTE_USER), NKey(nkeys.PREFIX_BYTE_USER)
    (tmp_path / "user.nk").write_bytes(user.seed)
    (tmp_path / "stranger.nk").write_bytes(stranger.seed)
    with nats_server(tmp_path, f"authorization {{ users: [ {{ nkey: {user.public} }} ] }}") as server:
        await append_and_read_back(gateway(server, nats_nkey=tmp_path / "user.nk"))
        message = await refused(gateway(server, nats_nkey=tmp_path / "stranger.nk"))
        assert stranger.seed.decode() not in message


async def test_a_creds_file_logs_in_to_an_operator_mode_server(tmp_path: Path) -> None:
    block, creds = operator_setup(tmp_path)
    with nats_server(tmp_path, block) as server:
        await append_and_read_back(gateway(server, nats_creds=creds))
        assert "refused this gateway" in await refused(gateway(server))  # no credentials at all


async def test_a_missing_login_file_is_named_before_any_connect(tmp_path: Path) -> None:
    with pytest.raises(NatsLoginRefused, match=r"--nats-creds .*absent\.creds"):
        await open_jetstream_engine(
            ServerConfig(engine="jetstream", nats_creds=tmp_path / "absent.creds", nats_monitor_url="")
        )


# ---- TLS -------------------------------------------------------------------------------------------------


def tls_block(certificates: Path) -> str:
    return (
        f'tls {{ cert_file: "{certificates / "server.pem"}", key_file: "{certificates / "server-key.pem"}", '
        f'ca_file: "{certificates / "ca.pem"}", verify: true, timeout: 2 }}'
    )


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    certificate_authority(tmp_path / "certs")
    return tmp_path / "certs"


def client_tls(certificates: Path) -> dict[str, Path]:
    return {
        "nats_tls_ca": certificates / "ca.pem",
        "nats_tls_cert": certificates / "client.pem",
        "nats_tls_key": certificates / "client-key.pem",
    }


async def test_mutual_tls_needs_the_ca_and_the_client_certificate(tmp_path: Path, certificates: Path) -> None:
    with nats_server(tmp_path, tls_block(certificates)) as server:
        tls_url = f"tls://127.0.0.1:{server.nodes[0].client_port}"
        full = client_tls(certificates)
        await append_and_read_back(gateway(server, tls_url, **full))
        without_ca = {k: v for k, v in full.items() if k != "nats_tls_ca"}
        assert "CERTIFICATE_VERIFY_FAILED" in await refused(gateway(server, tls_url, **without_ca))
        without_client_certificate = {"nats_tls_ca": full["nats_tls_ca"]}
        message = await refused(gateway(server, tls_url, **without_client_certificate))
        assert "CERTIFICATE_REQUIRED" in message


async def test_an_https_monitoring_endpoint_is_verified_with_the_same_ca(
    tmp_path: Path, certificates: Path
) -> None:
    monitor = ssl.create_default_context(cafile=certificates / "ca.pem")
    with nats_server(tmp_path, tls_block(certificates), monitor_tls=monitor) as server:
        assert server.monitor_urls[0].startswith("https://")
        full = client_tls(certificates)
        await append_and_read_back(gateway(server, **full))  # a nats:// URL: the server asks for TLS
        without_ca = {k: v for k, v in full.items() if k != "nats_tls_ca"}
        message = await refused(gateway(server, **without_ca))
        assert "monitoring endpoint" in message and "CERTIFICATE_VERIFY_FAILED" in message


# ---- the option rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        ({"nats_token": TOKEN}, "apply to --engine jetstream only"),
        ({"engine": "jetstream", "nats_token": TOKEN, "nats_nkey": Path("u.nk")}, "one way to log in"),
        ({"engine": "jetstream", "nats_tls_cert": Path("c.pem")}, "must be given together"),
    ],
)
def test_contradictory_nats_options_are_refused_without_showing_the_token(
    options: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(ValueError, match=refusal) as raised:
        ServerConfig(**options).check()
    assert TOKEN not in str(raised.value)
    assert TOKEN not in repr(ServerConfig(**options))


def test_serve_on_the_file_engine_refuses_nats_options(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "logserver", "serve", "--data-dir", str(tmp_path), "--nats-creds", "u.creds"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "--nats-creds apply to --engine jetstream only" in result.stderr

"""The command line: every option has a flag and an env variable; `user add` writes the users file."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from logserver.auth import read_users, verify_password
from logserver.cli import build_parser, main
from logserver.config import SERVE_OPTIONS, ServerConfig, env_defaults, from_namespace
from logserver.filestore import FsyncPolicy
from logserver.jetstream import settings_from


def serve_config(argv: list[str], environ: dict[str, str]) -> ServerConfig:
    return from_namespace(build_parser(env_defaults(environ)).parse_args(["serve", *argv]))


def test_defaults_match_the_spec() -> None:
    config = serve_config([], {})
    assert (config.host, config.port, config.data_dir) == ("127.0.0.1", 8080, Path("data"))
    assert config.users_path == Path("data/users")
    assert config.fsync is FsyncPolicy.ALWAYS
    assert (config.max_body_bytes, config.max_limit, config.log_level) == (1024 * 1024, 1000, "INFO")


def test_flag_beats_environment_beats_default() -> None:
    environ = {"LOGSERVER_PORT": "9000", "LOGSERVER_FSYNC": "interval", "LOGSERVER_DATA_DIR": "/srv/logs"}
    config = serve_config(["--port", "9100"], environ)
    assert config.port == 9100
    assert config.fsync is FsyncPolicy.INTERVAL
    assert config.data_dir == Path("/srv/logs")
    assert config.users_path == Path("/srv/logs/users")


def test_every_option_can_come_from_the_environment() -> None:
    environ = {
        "LOGSERVER_HOST": "0.0.0.0",
        "LOGSERVER_PORT": "1234",
        "LOGSERVER_ENGINE": "file",
        "LOGSERVER_DATA_DIR": "d",
        "LOGSERVER_USERS_FILE": "u",
        "LOGSERVER_FSYNC": "never",
        "LOGSERVER_FSYNC_INTERVAL_MS": "50",
        "LOGSERVER_SEGMENT_BYTES": "4096",
        "LOGSERVER_MAX_BODY_BYTES": "2048",
        "LOGSERVER_MAX_LIMIT": "7",
        "LOGSERVER_MAX_HEADER_BYTES": "4096",
        "LOGSERVER_MAX_STREAMS": "12",
        "LOGSERVER_MAX_EVENT_NAME_CHARS": "64",
        "LOGSERVER_AUTH_FAILURES_PER_MINUTE": "0",
        "LOGSERVER_MAX_BATCH": "10",
        "LOGSERVER_MAX_DELIVERIES": "0",
        "LOGSERVER_IDEMPOTENCY_WINDOW": "30.5",
        "LOGSERVER_RETENTION_MAX_AGE": "86400",
        "LOGSERVER_RETENTION_MAX_BYTES": "1000000",
        "LOGSERVER_PUBLIC_METRICS": "true",
        "LOGSERVER_SAMPLES_INTERVAL": "2.5",
        "LOGSERVER_TLS_CERT": "c.pem",
        "LOGSERVER_TLS_KEY": "k.pem",
        "LOGSERVER_LOG_LEVEL": "debug",
        "LOGSERVER_ACCESS_LOG": "on",
        "LOGSERVER_IDLE_TIMEOUT": "15",
        "LOGSERVER_READ_TIMEOUT": "2.5",
        "LOGSERVER_MAX_CONNECTIONS": "300",
        "LOGSERVER_NATS_URL": "nats://a:4222,nats://b:4222",
        "LOGSERVER_NATS_MONITOR_URL": "http://a:8222",
        "LOGSERVER_NATS_REPLICAS": "5",
        "LOGSERVER_NATS_CREDS": "user.creds",
        "LOGSERVER_NATS_NKEY": "user.nk",
        "LOGSERVER_NATS_TOKEN": "s3cret",
        "LOGSERVER_NATS_TLS_CA": "ca.pem",
        "LOGSERVER_NATS_TLS_CERT": "client.pem",
        "LOGSERVER_NATS_TLS_KEY": "client-key.pem",
    }
    assert {o.env for o in SERVE_OPTIONS} == set(environ)
    assert serve_config([], environ) == ServerConfig(
        host="0.0.0.0",
        port=1234,
        engine="file",
        data_dir=Path("d"),
        users_file=Path("u"),
        fsync=FsyncPolicy.NEVER,
        fsync_interval_ms=50,
        segment_bytes=4096,
        max_body_bytes=2048,
        max_limit=7,
        max_header_bytes=4096,
        max_streams=12,
        max_event_name_chars=64,
        auth_failures_per_minute=0,
        max_batch=10,
        max_deliveries=0,
        idempotency_window=30.5,
        retention_max_age=86400.0,
        retention_max_bytes=1000000,
        public_metrics=True,
        samples_interval=2.5,
        tls_cert=Path("c.pem"),
        tls_key=Path("k.pem"),
        log_level="DEBUG",
        access_log=True,
        idle_timeout=15.0,
        read_timeout=2.5,
        max_connections=300,
        nats_url="nats://a:4222,nats://b:4222",
        nats_monitor_url="http://a:8222",
        nats_replicas=5,
        nats_creds=Path("user.creds"),
        nats_nkey=Path("user.nk"),
        nats_token="s3cret",
        nats_tls_ca=Path("ca.pem"),
        nats_tls_cert=Path("client.pem"),
        nats_tls_key=Path("client-key.pem"),
    )


def test_no_repr_of_the_settings_shows_a_nats_password() -> None:
    urls = "nats://gw:pw-secret@a:4222,nats://tok-secret@b:4222"
    monitor = "https://mon:mon-secret@a:8222"
    config = serve_config(["--engine", "jetstream", "--nats-url", urls, "--nats-monitor-url", monitor], {})
    shown = repr(config) + repr(settings_from(config))
    assert "secret" not in shown and "jetstream" in shown


def test_the_access_log_is_off_by_default_and_a_bare_flag_turns_it_on() -> None:
    assert serve_config([], {}).access_log is False
    assert serve_config(["--access-log"], {}).access_log is True
    assert serve_config(["--access-log", "false"], {"LOGSERVER_ACCESS_LOG": "1"}).access_log is False


def test_bad_environment_value_is_reported_with_its_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOGSERVER_MAX_LIMIT", "lots")
    assert main(["serve"]) == 2
    assert "LOGSERVER_MAX_LIMIT" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"]])
def test_help_lists_every_option_with_its_env_variable(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in SERVE_OPTIONS:
        assert option.flag in text
        assert option.env in text


@pytest.mark.parametrize(
    "argv", [["serve", "--fsync", "sometimes"], ["serve", "--port", "70000"], ["serve", "--max-limit", "0"]]
)
def test_bad_flag_values_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2


def test_user_add_with_password_flag(tmp_path: Path) -> None:
    users = tmp_path / "users"
    assert main(["user", "add", "alice", "--password", "pw one", "--users-file", str(users)]) == 0
    assert verify_password("pw one", read_users(users)["alice"].password_hash)
    assert stat.S_IMODE(users.stat().st_mode) == 0o600


def test_user_add_reads_the_password_from_stdin_into_the_data_dir(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "logserver", "user", "add", "bob", "--data-dir", str(tmp_path / "d")],
        input="from stdin\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert verify_password("from stdin", read_users(tmp_path / "d" / "users")["bob"].password_hash)


def test_user_add_refuses_a_bad_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["user", "add", "a:b", "--password", "x", "--users-file", str(tmp_path / "u")]) == 1
    assert "user name" in capsys.readouterr().err


def test_readme_configuration_table_lists_every_option() -> None:
    readme = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    for option in SERVE_OPTIONS:
        row = f"| `{option.flag}` | `{option.env}` | `{option.default_text}` | {option.help} |"
        assert row in readme, f"docs/operations.md's configuration table lacks or misstates {option.flag}"

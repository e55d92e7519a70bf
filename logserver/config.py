"""Server settings and the one table of options that the CLI flags and LOGSERVER_* env share.

Precedence is flag > environment > default. Keeping every option in one table
means `--help`, the env names and docs/operations.md can't drift apart.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from logserver.engine import MAX_NAME_CHARS, EngineLimits
from logserver.filestore import FsyncPolicy, StorageConfig

ENV_PREFIX = "LOGSERVER_"
MIB = 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIN_HEADER_BYTES = 256
ENGINES = ("file", "jetstream")  # logserver.server.ENGINE_OPENERS opens each
NATS_LOGIN_FLAGS = (
    "--nats-creds",
    "--nats-nkey",
    "--nats-token",
)  # one at most (or user:password in the URL)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    engine: str = "file"
    data_dir: Path = Path("data")
    users_file: Path | None = None  # None means <data_dir>/users
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    fsync_interval_ms: int = 200
    segment_bytes: int = 64 * MIB
    max_body_bytes: int = 1 * MIB
    max_limit: int = 1000
    max_header_bytes: int = 8190  # aiohttp's own default for a request line or header field
    max_streams: int = 10_000
    max_event_name_chars: int = MAX_NAME_CHARS
    auth_failures_per_minute: int = 20
    max_batch: int = 1000
    max_deliveries: int = 5
    idempotency_window: float = 120.0
    retention_max_age: float | None = None
    retention_max_bytes: int | None = None
    public_metrics: bool = False
    samples_interval: float = 5.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_level: str = "INFO"
    access_log: bool = False
    idle_timeout: float = 60.0
    read_timeout: float = 20.0
    max_connections: int | None = None  # None: the open-file limit minus the engine's reserve
    # URLs may carry user:password or a token: never in a repr (a traceback's locals, a log line)
    nats_url: str = field(default="nats://127.0.0.1:4222", repr=False)
    nats_monitor_url: str = field(default="http://127.0.0.1:8222", repr=False)
    nats_replicas: int = 3
    nats_creds: Path | None = None
    nats_nkey: Path | None = None
    nats_token: str | None = field(default=None, repr=False)  # a secret: never in a log line
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None

    def check(self) -> None:
        """Raise ValueError for settings that are each valid but wrong together."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key must be given together")
        if self.engine == "jetstream" and self.fsync is not FsyncPolicy.ALWAYS:
            raise ValueError(
                "--fsync does not apply to --engine jetstream: durability is the NATS servers' "
                "`sync_interval: always`, which the engine checks at start"
            )
        self.check_nats_access()

    def check_nats_access(self) -> None:
        """Raise ValueError for NATS login or TLS options that contradict each other or the engine."""
        given = [flag for flag, value in self._nats_access_options() if value is not None]
        if given and self.engine != "jetstream":
            raise ValueError(f"{', '.join(given)} apply to --engine jetstream only")
        logins = [flag for flag in given if flag in NATS_LOGIN_FLAGS]
        if len(logins) > 1:
            raise ValueError(f"{' and '.join(logins)}: give one way to log in to NATS")
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ValueError("--nats-tls-cert and --nats-tls-key must be given together")

    def _nats_access_options(self) -> list[tuple[str, object]]:
        """(flag, value) of each NATS login and TLS option."""
        return [
            ("--nats-creds", self.nats_creds),
            ("--nats-nkey", self.nats_nkey),
            ("--nats-token", self.nats_token),
            ("--nats-tls-ca", self.nats_tls_ca),
            ("--nats-tls-cert", self.nats_tls_cert),
            ("--nats-tls-key", self.nats_tls_key),
        ]

    @property
    def users_path(self) -> Path:
        return self.users_file if self.users_file is not None else self.data_dir / "users"

    def engine_limits(self) -> EngineLimits:
        """The limits every engine enforces."""
        return EngineLimits(
            max_streams=self.max_streams,
            max_event_name_chars=self.max_event_name_chars,
            max_batch=self.max_batch,
            max_deliveries=self.max_deliveries,
            idempotency_window_seconds=self.idempotency_window,
        )

    def storage_config(self) -> StorageConfig:
        """The file engine's settings."""
        return StorageConfig(
            data_dir=self.data_dir,
            fsync=self.fsync,
            fsync_interval_ms=self.fsync_interval_ms,
            segment_bytes=self.segment_bytes,
            retention_max_age_seconds=self.retention_max_age,
            retention_max_bytes=self.retention_max_bytes,
            limits=self.engine_limits(),
        )


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 0")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


def _event_name_chars(text: str) -> int:
    # The API's name rules stop at 255 characters; the setting may only tighten them.
    value = _positive_int(text)
    if value > MAX_NAME_CHARS:
        raise argparse.ArgumentTypeError(f"{text!r} must be at most {MAX_NAME_CHARS}")
    return value


def _header_bytes(text: str) -> int:
    # Below this a normal Authorization or Content-Type header would not fit.
    value = _integer(text)
    if value < MIN_HEADER_BYTES:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least {MIN_HEADER_BYTES}")
    return value


def _fsync_policy(text: str) -> FsyncPolicy:
    try:
        return FsyncPolicy(text.lower())
    except ValueError:
        choices = ", ".join(p.value for p in FsyncPolicy)
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {choices}") from None


def _engine(text: str) -> str:
    if text not in ENGINES:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(ENGINES)}")
    return text


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


@dataclass(frozen=True)
class Option:
    """One `serve` setting: its ServerConfig field, flag, env variable and parser."""

    field: str
    parse: Callable[[str], Any]
    help: str
    metavar: str
    shown_default: str | None = None  # for defaults derived from another option

    @property
    def switch(self) -> bool:
        """A boolean option: its flag alone means true (`--access-log`)."""
        return self.parse is _boolean

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.field.upper()

    @property
    def default(self) -> Any:
        return _DEFAULTS[self.field]

    @property
    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        value = self.default
        if value is None:
            return "off"
        return str(value.value if isinstance(value, FsyncPolicy) else value)


_DEFAULTS = {f.name: f.default for f in fields(ServerConfig)}

SERVE_OPTIONS: tuple[Option, ...] = (
    Option("host", str, "address to listen on", "HOST"),
    Option("port", _port, "TCP port to listen on", "PORT"),
    Option("engine", _engine, "storage engine: file (the data dir) or jetstream (a NATS cluster)", "ENGINE"),
    Option("data_dir", Path, "directory holding streams, checkpoints and users", "DIR"),
    Option("users_file", Path, "users file, one name:hash line per user", "FILE", "<data-dir>/users"),
    Option("fsync", _fsync_policy, "when appends reach the disk: always, interval or never", "POLICY"),
    Option("fsync_interval_ms", _positive_int, "fsync period for --fsync interval", "MS"),
    Option("segment_bytes", _positive_int, "roll a stream's segment file at this size", "BYTES"),
    Option("max_body_bytes", _positive_int, "largest accepted request body (else 413)", "BYTES"),
    Option("max_limit", _positive_int, "largest `limit` a consume request may ask for", "N"),
    Option("max_header_bytes", _header_bytes, "longest request line or header field (else 431)", "BYTES"),
    Option("max_streams", _positive_int, "most streams the server holds (else 409 on create)", "N"),
    Option("max_event_name_chars", _event_name_chars, "longest event name, at most 255 (else 400)", "N"),
    Option(
        "auth_failures_per_minute",
        _non_negative_int,
        "failed logins per address and user name a minute before 429 (5x per address); 0: off",
        "N",
    ),
    Option("max_batch", _positive_int, "most events in one batch append (else 400)", "N"),
    Option(
        "max_deliveries",
        _non_negative_int,
        "deliveries of a leased event before it moves to STREAM.dlq; 0: no limit",
        "N",
    ),
    Option("idempotency_window", _positive_seconds, "how long an Idempotency-Key is remembered", "SECONDS"),
    Option("retention_max_age", _positive_seconds, "delete sealed segments older than this", "SECONDS"),
    Option("retention_max_bytes", _positive_int, "keep each stream below about this many bytes", "BYTES"),
    Option("public_metrics", _boolean, "serve /metrics without credentials", "BOOL"),
    Option(
        "samples_interval",
        _positive_seconds,
        "how often the console's rate and lag samples are taken (the last 120 are kept)",
        "SECONDS",
    ),
    Option("tls_cert", Path, "PEM certificate chain: serve HTTPS (needs --tls-key)", "FILE"),
    Option("tls_key", Path, "PEM private key of --tls-cert", "FILE"),
    Option("log_level", _log_level, "DEBUG, INFO, WARNING or ERROR", "LEVEL"),
    Option("access_log", _boolean, "log one line per request (at INFO)", "BOOL"),
    Option("idle_timeout", _positive_seconds, "close a connection without a request after this", "SECONDS"),
    Option("read_timeout", _positive_seconds, "a request's head and body must arrive within this", "SECONDS"),
    Option(
        "max_connections",
        _positive_int,
        "most open client connections; at the cap the oldest idle one is closed (else 503)",
        "N",
        "open-file limit - max(64, limit/4)",
    ),
    Option("nats_url", str, "jetstream engine: NATS server URLs, comma-separated", "URLS"),
    Option(
        "nats_monitor_url",
        str,
        "jetstream engine: every NATS node's HTTP monitoring URL, comma-separated (checked at start)",
        "URLS",
    ),
    Option("nats_replicas", _positive_int, "jetstream engine: replicas of each stream and bucket", "N"),
    Option("nats_creds", Path, "jetstream engine: NATS credentials file (user JWT and NKey seed)", "FILE"),
    Option(
        "nats_nkey",
        Path,
        "jetstream engine: NATS NKey seed file (a user nkey in the server's config)",
        "FILE",
    ),
    Option(
        "nats_token", str, "jetstream engine: NATS token (prefer the environment: flags show in ps)", "TOKEN"
    ),
    Option(
        "nats_tls_ca", Path, "jetstream engine: CA file verifying the NATS servers (else system CAs)", "FILE"
    ),
    Option(
        "nats_tls_cert",
        Path,
        "jetstream engine: client certificate for NATS TLS (needs --nats-tls-key)",
        "FILE",
    ),
    Option("nats_tls_key", Path, "jetstream engine: private key of --nats-tls-cert", "FILE"),
)


def env_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given by LOGSERVER_* variables, parsed; raises ValueError naming the variable."""
    values: dict[str, Any] = {}
    for option in SERVE_OPTIONS:
        text = environ.get(option.env)
        if text is None or text == "":
            continue
        try:
            values[option.field] = option.parse(text)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"{option.env}: {exc}") from None
    return values


def from_namespace(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(**{option.field: getattr(args, option.field) for option in SERVE_OPTIONS})

"""JetStreamSettings: where the cluster is, how the gateway logs in, and how the engine uses it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from logserver.engine import EngineLimits


@dataclass(frozen=True)
class NatsAccess:
    """How the gateway authenticates to NATS and checks the servers' certificates.

    At most one of a credentials file (user JWT and seed), an NKey seed file or a token; a
    user and password go in the URL (`nats://user:password@host:4222`). TLS: a CA file to
    verify the servers (else the system's CAs), and a client certificate and key for servers
    that verify clients. The token is kept out of repr(): it must never reach a log line.
    """

    credentials_file: Path | None = None
    nkey_seed_file: Path | None = None
    token: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass(frozen=True)
class JetStreamSettings:
    """Where the cluster is and how the engine uses it."""

    # URLs may carry user:password or a token: never in a repr (Redactor.urls shows them bare)
    servers: list[str] = field(repr=False)
    monitor_urls: list[str] = field(repr=False)
    replicas: int = 3
    limits: EngineLimits = field(default_factory=EngineLimits)
    retention_max_age_seconds: float | None = None  # the server-wide defaults of a stream
    retention_max_bytes: int | None = None
    publish_timeout_seconds: float = 15.0  # appends retry this long through a leader election
    connect_timeout_seconds: int = 5  # per attempt (nats-py takes whole seconds)
    access: NatsAccess = field(default_factory=NatsAccess)

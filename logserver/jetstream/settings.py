"""JetStreamSettings: where the cluster is and how the engine uses it (from `serve`'s options)."""

from __future__ import annotations

from dataclasses import dataclass, field

from logserver.engine import EngineLimits


@dataclass(frozen=True)
class JetStreamSettings:
    """Where the cluster is and how the engine uses it."""

    servers: list[str]
    monitor_urls: list[str]
    replicas: int = 3
    limits: EngineLimits = field(default_factory=EngineLimits)
    retention_max_age_seconds: float | None = None  # the server-wide defaults of a stream
    retention_max_bytes: int | None = None
    publish_timeout_seconds: float = 15.0  # appends retry this long through a leader election
    connect_timeout_seconds: float = 5.0

"""The JetStream engine: the engine interface on a NATS JetStream cluster (`--engine jetstream`)."""

from __future__ import annotations

from logserver.config import ServerConfig
from logserver.engine import Engine

from .access import NatsLoginRefused
from .engine import JetStreamEngine
from .preflight import NatsServerRefused
from .settings import JetStreamSettings, NatsAccess

__all__ = [
    "JetStreamEngine",
    "JetStreamSettings",
    "NatsAccess",
    "NatsLoginRefused",
    "NatsServerRefused",
    "open_jetstream_engine",
    "settings_from",
]


def settings_from(config: ServerConfig) -> JetStreamSettings:
    """The engine's settings from `serve`'s options."""
    return JetStreamSettings(
        servers=_urls(config.nats_url),
        monitor_urls=_urls(config.nats_monitor_url),
        replicas=config.nats_replicas,
        limits=config.engine_limits(),
        retention_max_age_seconds=config.retention_max_age,
        retention_max_bytes=config.retention_max_bytes,
        access=NatsAccess(
            credentials_file=config.nats_creds,
            nkey_seed_file=config.nats_nkey,
            token=config.nats_token,
            tls_ca=config.nats_tls_ca,
            tls_cert=config.nats_tls_cert,
            tls_key=config.nats_tls_key,
        ),
    )


async def open_jetstream_engine(config: ServerConfig) -> Engine:
    """Check the cluster, connect, and return the engine (NatsServerRefused, EngineUnavailable)."""
    return await JetStreamEngine.open(settings_from(config))


def _urls(text: str) -> list[str]:
    return [url.strip() for url in text.split(",") if url.strip()]

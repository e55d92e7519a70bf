"""The start-up check: every NATS node must be able to keep the promises the engine makes.

Read from each node's HTTP monitoring endpoint (`/varz`): the version (2.12 or later: atomic
batches, and the replica-divergence fixes of nats-server #4365 and #4777), JetStream enabled,
and `sync_always` (the `sync_interval: always` setting: fsync before every acknowledgement;
the default syncs every 2 minutes, and Jepsen lost acknowledged writes of 2.12.1 that way).
`sync_interval` is a per-server setting, so every node is checked, not just one. The number of
nodes is not checked: /varz's `cluster_size` counts the peers a node knows of, which is fewer
while some are down or not yet met, so it would refuse a healthy start.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

import aiohttp

from logserver.engine import EngineError, EngineUnavailable

from .access import NatsLoginRefused

MINIMUM_VERSION = (2, 12, 0)
CHECK_TIMEOUT_SECONDS = 5.0


class NatsServerRefused(EngineError):
    """A NATS server that is reachable but set up so that the engine would break its promises."""


def parse_version(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a version string such as "2.15.1" or "2.12.0-RC.3"."""
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text)
    if match is None:
        raise NatsServerRefused(f"unreadable nats-server version {text!r}")
    return int(match[1]), int(match[2]), int(match[3])


def check_varz(url: str, varz: dict[str, Any]) -> None:
    """Raise NatsServerRefused naming what is wrong with one node's /varz."""
    version = str(varz.get("version", ""))
    if parse_version(version) < MINIMUM_VERSION:
        raise NatsServerRefused(
            f"nats-server at {url} is {version}; the JetStream engine needs 2.12 or later"
        )
    jetstream = varz.get("jetstream") or {}
    config = jetstream.get("config")
    if not config:
        raise NatsServerRefused(f"nats-server at {url} does not have JetStream enabled")
    if config.get("sync_always") is not True:
        raise NatsServerRefused(
            f"nats-server at {url} does not fsync every write: set `sync_interval: always` in its "
            "jetstream block (acknowledged appends could be lost in a power failure otherwise)"
        )


async def check_servers(monitor_urls: list[str], tls: ssl.SSLContext | None = None) -> None:
    """Check every node's /varz; NatsServerRefused or EngineUnavailable (unreachable) otherwise.

    An `https://` monitoring URL is verified with `tls` (the --nats-tls-* context) when given.
    """
    if not monitor_urls:
        raise NatsServerRefused(
            "no NATS monitoring URL given: the engine must read every node's /varz to check "
            "its version and `sync_interval: always` (--nats-monitor-url)"
        )
    timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(ssl=tls if tls is not None else True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for url in monitor_urls:
            try:
                async with session.get(f"{url.rstrip('/')}/varz") as response:
                    response.raise_for_status()
                    varz = await response.json()
            except aiohttp.ClientSSLError as exc:
                raise NatsLoginRefused(
                    f"NATS monitoring endpoint {url}: TLS failed ({exc}); check --nats-tls-ca, "
                    "--nats-tls-cert and --nats-tls-key"
                ) from None
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise EngineUnavailable(f"NATS monitoring endpoint {url} unreachable: {exc}") from exc
            check_varz(url, varz)

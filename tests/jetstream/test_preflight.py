"""The start-up check against real servers: a node without `sync_interval: always` is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from logserver.config import ServerConfig
from logserver.engine import EngineUnavailable
from logserver.filestore import FsyncPolicy
from logserver.jetstream import JetStreamEngine, JetStreamSettings, NatsServerRefused, settings_from
from logserver.jetstream.preflight import check_varz, parse_version

from .cluster import NatsCluster, free_port

pytestmark = pytest.mark.jetstream


async def test_a_server_without_sync_always_is_refused(tmp_path: Path) -> None:
    lazy = NatsCluster(tmp_path, size=1, sync_always=False).start()
    try:
        settings = JetStreamSettings(servers=lazy.urls, monitor_urls=lazy.monitor_urls, replicas=1)
        with pytest.raises(NatsServerRefused, match="sync_interval: always"):
            await JetStreamEngine.open(settings)
    finally:
        lazy.stop()


async def test_one_lazy_node_among_good_ones_is_refused(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    lazy = NatsCluster(tmp_path, size=1, sync_always=False).start()
    try:
        settings = JetStreamSettings(
            servers=nats_cluster.urls, monitor_urls=[*nats_cluster.monitor_urls, *lazy.monitor_urls]
        )
        with pytest.raises(NatsServerRefused, match=lazy.monitor_urls[0]):
            await JetStreamEngine.open(settings)
    finally:
        lazy.stop()


async def test_the_cluster_under_test_passes(nats_cluster: NatsCluster) -> None:
    settings = JetStreamSettings(servers=nats_cluster.urls, monitor_urls=nats_cluster.monitor_urls)
    engine = await JetStreamEngine.open(settings)
    try:
        assert (await engine.health()).damaged == []
    finally:
        await engine.close()


async def test_no_monitoring_url_is_refused(nats_cluster: NatsCluster) -> None:
    with pytest.raises(NatsServerRefused, match="monitoring"):
        await JetStreamEngine.open(JetStreamSettings(servers=nats_cluster.urls, monitor_urls=[]))


async def test_an_unreachable_monitoring_url_is_unavailable(nats_cluster: NatsCluster) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnavailable, match="unreachable"):
        await JetStreamEngine.open(JetStreamSettings(servers=nats_cluster.urls, monitor_urls=[url]))


def test_old_servers_and_servers_without_jetstream_are_refused() -> None:
    good = {"version": "2.15.1", "jetstream": {"config": {"sync_always": True}}}
    check_varz("u", good)
    with pytest.raises(NatsServerRefused, match=r"2\.9\.10"):
        check_varz("u", {**good, "version": "2.9.10"})
    with pytest.raises(NatsServerRefused, match="JetStream enabled"):
        check_varz("u", {"version": "2.15.1", "jetstream": {}})
    assert parse_version("2.12.0-RC.3") == (2, 12, 0)


def test_serve_refuses_fsync_settings_the_cluster_decides() -> None:
    with pytest.raises(ValueError, match="sync_interval: always"):
        ServerConfig(engine="jetstream", fsync=FsyncPolicy.NEVER).check()
    ServerConfig(engine="jetstream").check()


def test_serve_options_become_engine_settings() -> None:
    config = ServerConfig(
        engine="jetstream",
        nats_url="nats://a:4222, nats://b:4222",
        nats_monitor_url="http://a:8222,http://b:8222",
        nats_replicas=5,
        max_deliveries=7,
    )
    settings = settings_from(config)
    assert settings.servers == ["nats://a:4222", "nats://b:4222"]
    assert settings.monitor_urls == ["http://a:8222", "http://b:8222"]
    assert (settings.replicas, settings.limits.max_deliveries) == (5, 7)

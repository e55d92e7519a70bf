"""The deployment files of README "Scaling out": the compose file parses and says what the README
says, and the NATS node config is one the pinned nats-server accepts. (No docker engine runs here.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .cluster import nats_server_binary

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.jetstream.yml"
NATS_CONFIG = ROOT / "deploy" / "nats.conf"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def test_compose_file_has_three_nats_nodes_and_two_jetstream_gateways() -> None:
    services = compose()["services"]
    nodes = {name: spec for name, spec in services.items() if name.startswith("nats-")}
    gateways = {name: spec for name, spec in services.items() if name.startswith("gateway-")}
    assert sorted(nodes) == ["nats-1", "nats-2", "nats-3"]
    assert len(gateways) == 2
    for name, spec in nodes.items():
        assert spec["environment"]["NATS_NAME"] == name
        assert "./deploy/nats.conf:/etc/nats/nats.conf:ro" in spec["volumes"]
        assert spec["command"] == ["-c", "/etc/nats/nats.conf"]
    for spec in gateways.values():
        environment = spec["environment"]
        assert environment["LOGSERVER_ENGINE"] == "jetstream"
        assert environment["LOGSERVER_NATS_URL"].split(",") == [f"nats://{n}:4222" for n in sorted(nodes)]
        assert environment["LOGSERVER_NATS_MONITOR_URL"].split(",") == [
            f"http://{n}:8222" for n in sorted(nodes)
        ]
        assert "jetstream" in spec["build"]["args"]["LOGSERVER_EXTRAS"].split(",")
    assert len({spec["ports"][0] for spec in gateways.values()}) == 2


def test_nats_config_syncs_always_and_routes_to_every_node() -> None:
    text = NATS_CONFIG.read_text()
    assert "sync_interval: always" in text
    for node in ("nats-1", "nats-2", "nats-3"):
        assert f"nats-route://{node}:6222" in text


@pytest.mark.jetstream
def test_the_pinned_nats_server_accepts_the_node_config() -> None:
    checked = subprocess.run(
        [nats_server_binary(), "-c", str(NATS_CONFIG), "-t"],
        env={**os.environ, "NATS_NAME": "nats-1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "is valid" in checked.stdout + checked.stderr

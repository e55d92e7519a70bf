"""Appends through the JetStream engine (one gateway, then two) beside the file engine, in one run.

    python bench/jetstream.py [--seconds 10] [--connections 64]

Starts a 3-node nats-server cluster on loopback with tests/jetstream/cluster.py's launcher
(`sync_interval: always`), two `logserver serve --engine jetstream` gateways on it and one
file-engine server (`--fsync always`), then runs wrk with bench/wrk/append.lua: against the file
engine, through one gateway, and through both at once (one wrk per gateway, half the
connections each). Every server process floats over the cores (two gateways are how logserver
uses a second core); wrk runs on CLIENT_CPU. Prints req/s, latencies and the ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
from harness import (
    ROOT,
    Server,
    add_bench_user,
    ensure_apt_package,
    log,
    logserver_command,
    run_wrk,
    start_server,
)
from run import APPEND_PATH, EVENT, append_env

sys.path.insert(0, str(ROOT / "tests" / "jetstream"))
from cluster import NatsCluster  # the tests' launcher (tests/ is not a package)

WARMUP_SECONDS = 3.0


def gateway_command(cluster: NatsCluster, users_file: Path, data_dir: Path) -> list[str]:
    """`logserver serve --engine jetstream` on the cluster, with the bench's users file."""
    return [
        sys.executable, "-m", "logserver", "serve", "--port", "{port}", "--users-file", str(users_file),
        "--data-dir", str(data_dir), "--engine", "jetstream", "--nats-url", ",".join(cluster.urls),
        "--nats-monitor-url", ",".join(cluster.monitor_urls),
    ]  # fmt: skip


def appends(servers: list[Server], env: dict[str, str], connections: int, seconds: float) -> dict[str, float]:
    """wrk appends against every server at once, the connections split between them; summed req/s."""
    share = max(1, connections // len(servers))
    with ThreadPoolExecutor(len(servers)) as pool:
        runs = list(pool.map(lambda server: run_wrk(server.url, "append.lua", env, share, seconds), servers))
    return {
        "req_s": sum(run["req_s"] for run in runs),
        "p50_ms": max(run["p50_ms"] for run in runs),
        "p99_ms": max(run["p99_ms"] for run in runs),
        "requests": sum(run["requests"] for run in runs),
    }


def measure(
    label: str, servers: list[Server], env: dict[str, str], args: argparse.Namespace
) -> dict[str, float]:
    """A warm-up, then the measured run; logs its line."""
    appends(servers, env, args.connections, WARMUP_SECONDS)
    result = appends(servers, env, args.connections, args.seconds)
    latency = f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms"
    log(f"  {label:28} {result['req_s']:>8,.0f} req/s  {latency}")
    return result


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    """The table and the ratios, on stdout."""
    print(f"appends, {args.connections} connections in all, {args.seconds:.0f} s each, one run")
    print(f"{'engine':30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, result in results.items():
        print(f"{label:30} {result['req_s']:>9,.0f} {result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f}")
    file_rate = results["file engine (fsync always)"]["req_s"]
    one = results["jetstream, 1 gateway"]["req_s"]
    two = results["jetstream, 2 gateways"]["req_s"]
    print(f"jetstream 1 gateway / file engine: {one / file_rate:.2f}")
    print(f"jetstream 2 gateways / 1 gateway:  {two / one:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections in all")
    args = parser.parse_args()
    if not ensure_apt_package("wrk", "wrk"):
        return 1
    with tempfile.TemporaryDirectory(prefix="logserver-bench-js-") as directory:
        work = Path(directory)
        users = work / "users"
        add_bench_user(users)
        body_file = work / "event.json"
        body_file.write_bytes(orjson.dumps(EVENT))
        env = append_env(body_file, APPEND_PATH)
        cluster = NatsCluster(work / "nats").start()
        started: list[Server] = []
        try:
            log("starting the file engine and two gateways")
            file_server = start_server(
                "file", logserver_command(work / "file", users, "always"), work, cpu=None
            )
            started.append(file_server)
            for number in (1, 2):
                command = gateway_command(cluster, users, work / f"gateway{number}")
                started.append(start_server(f"gateway{number}", command, work, cpu=None))
            gateways = started[1:]
            results = {
                "file engine (fsync always)": measure("file engine", [file_server], env, args),
                "jetstream, 1 gateway": measure("jetstream, 1 gateway", gateways[:1], env, args),
                "jetstream, 2 gateways": measure("jetstream, 2 gateways", gateways, env, args),
            }
        finally:
            for server in started:
                server.stop()
            cluster.stop()
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

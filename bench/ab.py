"""Before/after figures for a speed change: appends against two or more trees and the ceiling,
in alternating rounds, as the commit message of a speed change quotes them.

    python bench/ab.py --tree before=/path/to/old/checkout --tree after=. [--fsync always,never]
                       [--rounds 5] [--seconds 6] [--connections 64]

Each tree runs `python -m logserver serve` from its own directory with this venv's
interpreter, on SERVER_CPU, with the defaults (bench/harness.py's logserver_command); wrk
runs on CLIENT_CPU. Every round runs the ceiling and each tree in each fsync mode, the order
rotated from round to round, so drift hits all of them. Prints each tree's median req/s, its
median ratio to the same round's ceiling, and its median ratio to the first tree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import orjson
from compiled import in_tree
from harness import BENCH, Server, add_bench_user, log, logserver_command, run_wrk, start_server
from run import EVENT, append_env


def parse_trees(values: list[str]) -> dict[str, Path]:
    """`label=path` pairs, in the order given."""
    trees = {}
    for value in values:
        label, _, path = value.partition("=")
        trees[label] = Path(path).resolve()
    return trees


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", action="append", required=True, help="label=path of a checkout")
    parser.add_argument("--fsync", default="always", help="comma-separated fsync modes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    trees = parse_trees(args.tree)
    with tempfile.TemporaryDirectory(prefix="logserver-ab-") as scratch:
        work = Path(scratch)
        users = work / "users"
        add_bench_user(users)
        body_file = work / "event.json"
        body_file.write_bytes(orjson.dumps(EVENT))
        env = append_env(body_file)
        servers = [
            start_server("ceiling", [sys.executable, str(BENCH / "ceiling.py"), "--port", "{port}"], work)
        ]
        try:
            for label, tree in trees.items():
                for fsync in args.fsync.split(","):
                    command = logserver_command(work / f"{label}-{fsync}", users, fsync)
                    servers.append(start_server(f"{label} {fsync}", in_tree(tree, command), work))
            rates = run_rounds(servers, env, args.rounds, args.seconds, args.connections)
        finally:
            for server in servers:
                server.stop()
    report(rates, args.rounds)
    return 0


def run_rounds(
    servers: list[Server], env: dict[str, str], rounds: int, seconds: float, connections: int
) -> dict[str, list[float]]:
    """req/s of every server in every round, after a warm-up run each (the stream, the auth cache).

    The order rotates from round to round, so drift on a shared machine hits each server alike.
    """
    for server in servers:
        run_wrk(server.url, "append.lua", env, connections, 2)
    rates: dict[str, list[float]] = {server.label: [] for server in servers}
    for round_number in range(rounds):
        shift = round_number % len(servers)
        for server in servers[shift:] + servers[:shift]:
            result = run_wrk(server.url, "append.lua", env, connections, seconds)
            rates[server.label].append(result["req_s"])
            log(f"round {round_number + 1}: {server.label:16} {result['req_s']:9,.0f} req/s")
    return rates


def report(rates: dict[str, list[float]], rounds: int) -> None:
    """Medians, ratios to the ceiling of the same round, and ratios to the first tree's same mode."""
    ceiling = rates["ceiling"]
    labels = [label for label in rates if label != "ceiling"]
    first = labels[0].split(" ")[0]
    print(f"\n{'server':18} {'median req/s':>12} {'/ ceiling':>10} {f'/ {first}':>10}")
    print(f"{'ceiling':18} {statistics.median(ceiling):12,.0f}")
    for label in labels:
        mode = label.split(" ", 1)[1]
        base = rates[f"{first} {mode}"]
        to_ceiling = statistics.median(r / c for r, c in zip(rates[label], ceiling, strict=True))
        to_first = statistics.median(r / b for r, b in zip(rates[label], base, strict=True))
        print(f"{label:18} {statistics.median(rates[label]):12,.0f} {to_ceiling:10.2f} {to_first:10.2f}")
    print(f"({rounds} alternating rounds)")


if __name__ == "__main__":
    sys.exit(main())

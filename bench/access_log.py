"""What logging costs appends (issue 15 item 1): `logserver serve` with its defaults, with
`--log-level WARNING`, and with `--access-log`, in alternating rounds.

    python bench/access_log.py [--rounds 3] [--duration 8] [--connections 64] [--fsync always]
                               [--tree LABEL=DIR ...]

`--tree` adds a variant: the logserver sources in DIR (e.g. `git archive 5aa3c3a | tar -x -C
DIR`) with their default flags, to compare with the code before a change in the same rounds.

Each round runs every variant once, the order rotated from round to round so that drift on
a shared machine hits each variant alike; the servers run on core 0 and wrk on core 1
(bench/harness.py). Prints each run, then per variant the median req/s and its ratio to the
WARNING run of the same round. The servers' stderr (their log) goes to a file, as it would
to journald or a pipe.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import orjson
from harness import AUTH_HEADER, Server, add_bench_user, ensure_apt_package, log, run_wrk, start_server
from run import APPEND_PATH, EVENT

VARIANTS: dict[str, list[str]] = {
    "defaults": [],
    "--log-level WARNING": ["--log-level", "WARNING"],
    "--access-log": ["--access-log"],
}
BASELINE = "--log-level WARNING"


def command(data_dir: Path, users: Path, fsync: str, extra: list[str], tree: Path | None) -> list[str]:
    """`logserver serve` on {port} with only `extra` beyond the data dir, users file and fsync;
    the sources of `tree` instead of this checkout's when given."""
    serve = [
        "serve", "--port", "{port}", "--data-dir", str(data_dir), "--users-file", str(users),
        "--fsync", fsync, *extra,
    ]  # fmt: skip
    if tree is None:
        return [sys.executable, "-m", "logserver", *serve]
    start = f"import sys; sys.path.insert(0, {str(tree)!r}); from logserver.cli import main; sys.exit(main())"
    return [sys.executable, "-c", start, *serve]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--fsync", default="always", choices=("always", "interval", "never"))
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR")
    args = parser.parse_args()
    variants: dict[str, tuple[list[str], Path | None]] = {
        label: (extra, None) for label, extra in VARIANTS.items()
    }
    for given in args.tree:
        label, _, directory = given.partition("=")
        variants[label] = ([], Path(directory).resolve())
    if not ensure_apt_package("wrk", "wrk"):
        return 1
    with tempfile.TemporaryDirectory(prefix="logserver-bench-log-") as scratch:
        work = Path(scratch)
        users = work / "users"
        add_bench_user(users)
        body = work / "event.json"
        body.write_bytes(orjson.dumps(EVENT))
        env = {
            "BENCH_PATH": APPEND_PATH,
            "BENCH_BODY_FILE": str(body),
            "BENCH_AUTH": AUTH_HEADER,
            "BENCH_PRODUCER": "bench-producer",
            "BENCH_CONTENT_TYPE": "application/json",
        }
        servers: dict[str, Server] = {}
        try:
            for number, (label, (extra, tree)) in enumerate(variants.items()):
                data = work / f"data-{number}"
                servers[label] = start_server(label, command(data, users, args.fsync, extra, tree), work)
                run_wrk(servers[label].url, "append.lua", env, args.connections, 2)  # warm: stream, auth
            rates: dict[str, list[float]] = {label: [] for label in variants}
            ratios: dict[str, list[float]] = {label: [] for label in variants}
            labels = list(variants)
            for round_number in range(args.rounds):
                order = labels[round_number % len(labels) :] + labels[: round_number % len(labels)]
                this_round: dict[str, float] = {}
                for label in order:
                    result = run_wrk(servers[label].url, "append.lua", env, args.connections, args.duration)
                    this_round[label] = result["req_s"]
                    log(f"round {round_number + 1}: {label:<28} {result['req_s']:9,.0f} req/s")
                for label in labels:
                    rates[label].append(this_round[label])
                    ratios[label].append(this_round[label] / this_round[BASELINE])
            access_lines = servers["--access-log"].log_path.read_text(errors="replace").count('"POST ')
        finally:
            for server in servers.values():
                server.stop()
    load = f"wrk -t1 -c{args.connections} -d{args.duration:g}s"
    print(f"\nappend, fsync={args.fsync}, {load}, {args.rounds} rounds")
    print(f"{'variant':<28} {'median req/s':>13} {'ratio to WARNING (median per round)':>37}")
    for label in labels:
        rate, ratio = statistics.median(rates[label]), statistics.median(ratios[label])
        print(f"{label:<28} {rate:13,.0f} {ratio:37.3f}")
    print(f"(--access-log wrote {access_lines:,} request lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

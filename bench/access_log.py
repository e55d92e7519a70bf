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
from ab import parse_trees, run_rounds
from compiled import in_tree
from harness import Server, add_bench_user, ensure_apt_package, logserver_command, start_server
from run import EVENT, append_env

VARIANTS: dict[str, list[str]] = {
    "defaults": [],
    "--log-level WARNING": ["--log-level", "WARNING"],
    "--access-log": ["--access-log"],
}
BASELINE = "--log-level WARNING"


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
    for label, tree in parse_trees(args.tree).items():
        variants[label] = ([], tree)
    if not ensure_apt_package("wrk", "wrk"):
        return 1
    with tempfile.TemporaryDirectory(prefix="logserver-bench-log-") as scratch:
        work = Path(scratch)
        users = work / "users"
        add_bench_user(users)
        body = work / "event.json"
        body.write_bytes(orjson.dumps(EVENT))
        env = append_env(body)
        servers: dict[str, Server] = {}
        try:
            for number, (label, (extra, tree)) in enumerate(variants.items()):
                serve = [*logserver_command(work / f"data-{number}", users, args.fsync), *extra]
                servers[label] = start_server(label, serve if tree is None else in_tree(tree, serve), work)
            labels = list(variants)
            rates = run_rounds(list(servers.values()), env, args.rounds, args.duration, args.connections)
            ratios = {
                label: [r / b for r, b in zip(rates[label], rates[BASELINE], strict=True)] for label in labels
            }
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

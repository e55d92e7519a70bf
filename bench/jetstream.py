"""bench/run.py's `jetstream` part: append, consume and ack through one and two JetStream gateways
on a 3-node cluster, beside the file engine, in the same run.

    make bench                       # every part, this one included when nats-server is installed
    make bench-jetstream             # this part alone: bench/run.py --only jetstream --name jetstream

Starts a 3-node nats-server cluster on loopback with tests/jetstream/cluster.py's launcher
(`sync_interval: always`), two `logserver serve --engine jetstream` gateways on it and one
file-engine server (`--fsync always`). Both engines get the same stored stream, built through
their HTTP batch appends: --jetstream-events events of 10 names (storage_footprint.event_body).
Then, per repeat, each of append (append.lua, a stream of its own), consume (consume.lua,
`limit=100`, a consumer that never acks) and ack (ack.lua, distinct events, a new consumer each
run) against the file engine, through one gateway, and through both at once (one wrk per gateway,
half the connections each; the two ackers take disjoint halves of the sequences). Every server
process floats over the cores (two gateways are how logserver uses a second core, and the three
nats-servers need them too), so the file engine here is unpinned as well; wrk runs on CLIENT_CPU.
The cost lines are medians over repeats of the same repeat's ratios, per event (consume: events/s).
"""

from __future__ import annotations

import statistics
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from harness import (
    AUTH_HEADER,
    ROOT,
    Server,
    ack_env,
    consume_env,
    event_id_prefix,
    events_per_answer,
    log,
    logserver_command,
    start_server,
    warm,
)
from storage_footprint import event_body

sys.path.insert(0, str(ROOT / "tests" / "jetstream"))
from cluster import NatsCluster, nats_server_binary  # the tests' launcher (tests/ is not a package)

if TYPE_CHECKING:
    from run import Plan, Recorder

STORED_STREAM = "bench%20js%20stream"  # URL-encoded, like run.READ_STREAM
APPEND_PATH = "/api/v1/streams/bench%20js%20appends/events"
CONSUME_LIMIT = 100
FILL_BATCH = 1000  # events per batch append while filling (the server's default --max-batch)
FILE_ENGINE, ONE_GATEWAY, TWO_GATEWAYS = "file engine", "1 gateway", "2 gateways"
SCENARIOS = {"append": "js append", "consume": "js consume", "ack": "js ack"}


def missing() -> str | None:
    """Why this part cannot run here (no nats-server binary), or None when it can."""
    try:
        nats_server_binary()
    except RuntimeError as exc:
        return str(exc)
    return None


def gateway_command(cluster: NatsCluster, users_file: Path, data_dir: Path) -> list[str]:
    """`logserver serve --engine jetstream` on the cluster, with the bench's users file."""
    return [
        sys.executable, "-m", "logserver", "serve", "--port", "{port}", "--users-file", str(users_file),
        "--data-dir", str(data_dir), "--engine", "jetstream", "--nats-url", ",".join(cluster.urls),
        "--nats-monitor-url", ",".join(cluster.monitor_urls),
    ]  # fmt: skip


def fill(server: Server, events: int) -> None:
    """Store `events` events of the consume data set in STORED_STREAM, FILL_BATCH to a batch append."""
    url = f"{server.url}/api/v1/streams/{STORED_STREAM}/events:batch"
    headers = {"Authorization": AUTH_HEADER, "X-Producer-ID": "bench-producer"}
    headers["Content-Type"] = "application/json"
    for first in range(0, events, FILL_BATCH):
        body = orjson.dumps([event_body(n) for n in range(first, min(events, first + FILL_BATCH))])
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()


@dataclass(frozen=True)
class Stored:
    """What one engine answers about the filled STORED_STREAM: immutable, taken once before measuring."""

    events: int
    per_answer: int  # events in a GET with limit=CONSUME_LIMIT
    id_prefix: str  # what every event id of the stream starts with (ack.lua adds the sequence)

    @classmethod
    def probe(cls, server: Server, events: int) -> Stored:
        """Ask `server` for the events per answer and the id prefix."""
        per_answer = events_per_answer(server, STORED_STREAM, [CONSUME_LIMIT])[CONSUME_LIMIT]
        return cls(events, per_answer, event_id_prefix(server, STORED_STREAM))

    def ack_envs(self, servers: list[Server], consumer: str) -> list[dict[str, str]]:
        """One ack.lua environment per server: the same consumer, disjoint runs of the sequences."""
        share = self.events // len(servers)
        return [
            ack_env(STORED_STREAM, consumer, self.id_prefix, 1 + index * share, (index + 1) * share)
            for index in range(len(servers))
        ]


def bench_jetstream(
    plan: Plan, rec: Recorder, work: Path, users: Path, append: dict[str, str]
) -> dict[str, Any]:
    """The part: start the cluster and the servers, fill, warm, measure; what the run needs to report."""
    connections = plan.jetstream_connections
    cluster = NatsCluster(work / "nats").start()
    started: list[Server] = []
    try:
        log("jetstream: starting the file engine and two gateways on a 3-node cluster")
        file_command = logserver_command(work / "js-file-engine", users, "always")
        started.append(start_server("file", file_command, work, cpu=None))
        for number in (1, 2):
            command = gateway_command(cluster, users, work / f"gateway{number}")
            started.append(start_server(f"gateway{number}", command, work, cpu=None))
        setups = {FILE_ENGINE: started[:1], ONE_GATEWAY: started[1:2], TWO_GATEWAYS: started[1:]}
        log(f"jetstream: storing {plan.jetstream_events:,} events on each engine")
        for server in started[:2]:  # the second gateway reads what the first stored
            fill(server, plan.jetstream_events)
        stored = {server.label: Stored.probe(server, plan.jetstream_events) for server in started}
        append_env = {**append, "BENCH_PATH": APPEND_PATH}
        for server in started:
            warm(server, "append.lua", append_env, plan.warmup)
            warm(server, "consume.lua", consume_env(STORED_STREAM, CONSUME_LIMIT), plan.warmup)
            warm(
                server, "ack.lua", stored[server.label].ack_envs([server], "bench-ack-warmup")[0], plan.warmup
            )
        for rep in range(plan.repeats):
            log(f"jetstream: append, consume and ack, repeat {rep + 1} of {plan.repeats}")
            for variant, servers in setups.items():
                envs = [append_env] * len(servers)
                rec.wrk_across(servers, SCENARIOS["append"], variant, "append.lua", envs, connections, rep)
            for variant, servers in setups.items():
                envs = [consume_env(STORED_STREAM, CONSUME_LIMIT)] * len(servers)
                count = stored[servers[0].label].per_answer
                rec.wrk_across(
                    servers, SCENARIOS["consume"], variant, "consume.lua", envs, connections, rep, count
                )
            for number, (variant, servers) in enumerate(setups.items()):
                # a new consumer per run: every ack is a first one
                envs = stored[servers[0].label].ack_envs(servers, f"bench-ack-{number}-{rep}")
                sample = rec.wrk_across(servers, SCENARIOS["ack"], variant, "ack.lua", envs, connections, rep)
                if sample["requests"] > plan.jetstream_events:
                    log(f"  {variant}: acks wrapped around to repeats: raise --jetstream-events")
    finally:
        for server in started:
            server.stop()
        cluster.stop()
    return {
        "events": plan.jetstream_events,
        "connections": connections,
        "events_per_answer": {label: figures.per_answer for label, figures in stored.items()},
        "costs": costs(rec.samples),
    }


def costs(samples: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per scenario, the cluster's cost per event (1 gateway / file engine) and what a second gateway
    adds (2 gateways / 1 gateway): medians over repeats of the same repeat's events/s ratios."""
    rates: dict[tuple[str, str, int], float] = {}
    for sample in samples:
        if sample["scenario"] in SCENARIOS.values():
            rates[(sample["scenario"], sample["variant"], sample["rep"])] = sample["req_s"] * (
                sample["events_per_answer"] or 1
            )

    def ratio(scenario: str, over: str, under: str) -> float | None:
        reps = {rep for (name, _, rep) in rates if name == scenario}
        values = [
            rates[(scenario, over, rep)] / rates[(scenario, under, rep)]
            for rep in reps
            if rates.get((scenario, under, rep)) and (scenario, over, rep) in rates
        ]
        return round(statistics.median(values), 3) if values else None

    return {
        part: {
            "cluster_over_file_engine": ratio(scenario, ONE_GATEWAY, FILE_ENGINE),
            "two_over_one_gateway": ratio(scenario, TWO_GATEWAYS, ONE_GATEWAY),
        }
        for part, scenario in SCENARIOS.items()
    }


def cost_lines(info: dict[str, Any]) -> list[str]:
    """The report's lines: what a cluster costs per event, what a second gateway adds."""

    def ratios(key: str) -> str:
        return ", ".join(
            f"{part} {'-' if figures[key] is None else format(figures[key], '.2f')}"
            for part, figures in info["costs"].items()
        )

    return [
        f"jetstream (3-node cluster, sync_interval always; servers unpinned, wrk on core 1; "
        f"{info['events']:,} stored events, {info['connections']} connections in all; consume "
        f"limit={CONSUME_LIMIT} in events/s; medians of the same repeat's ratios):",
        f"- what a cluster costs per event, 1 gateway / file engine: {ratios('cluster_over_file_engine')}",
        f"- what a second gateway adds, 2 gateways / 1 gateway: {ratios('two_over_one_gateway')}",
    ]

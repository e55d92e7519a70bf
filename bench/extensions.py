"""Long-poll and batch figures (issue 6), against baselines measured in the same run.

    python bench/extensions.py [--waiters N] [--seconds S]

* Idle long-poll waiters: server RSS and CPU time with N requests parked on `wait=30`,
  against the same server idle with none.
* Wake-up latency: from the start of an append to each parked reader's answer, for 1 and for N
  waiters; the append's own round trip is the baseline.
* Batch append: events/s with batches of 100 and 1000 against single appends, each driven by
  4 concurrent connections from this process for S seconds (the client runs on the other core).
Prints a table and writes bench/results/extensions.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from harness import (
    AUTH_HEADER,
    BENCH,
    add_bench_user,
    log,
    logserver_command,
    start_server,
)

EVENT = {"event": {"name": "OrderPlaced", "version": 1}, "payload": {"orderId": 42}}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def park(
    session: aiohttp.ClientSession, url: str, consumer: str, name: str = "Wake", seconds: int = 30
) -> float:
    """One long-poll request; returns when it was answered (perf_counter)."""
    headers = {"Authorization": AUTH_HEADER, "X-Consumer-ID": consumer}
    params = {"eventName": name, "wait": str(seconds)}
    async with session.get(url, params=params, headers=headers) as response:
        await response.read()
        assert response.status == 200, response.status
    return time.perf_counter()


async def append(session: aiohttp.ClientSession, url: str, body: dict[str, object]) -> None:
    headers = {"Authorization": AUTH_HEADER, "X-Producer-ID": "bench"}
    async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
        await response.read()
        assert response.status == 200, await response.text()


async def long_poll(base: str, pid: int, waiters: int) -> dict[str, float]:
    url = f"{base}/api/v1/streams/waits/events"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        await append(session, url, {"event": {"name": "Other", "version": 1}})
        await asyncio.sleep(0.5)
        rss_idle, cpu_idle = rss_bytes(pid), cpu_seconds(pid)
        await asyncio.sleep(2)
        idle_cpu = cpu_seconds(pid) - cpu_idle
        parked = [asyncio.create_task(park(session, url, f"c{i}")) for i in range(waiters)]
        await asyncio.sleep(8)  # every request reaches the server and parks
        rss_parked, cpu_parked = rss_bytes(pid), cpu_seconds(pid)
        await asyncio.sleep(2)
        parked_cpu = cpu_seconds(pid) - cpu_parked
        started = time.perf_counter()
        await append(session, url, {"event": {"name": "Wake", "version": 1}})
        appended = time.perf_counter() - started
        woken = sorted(t - started for t in await asyncio.gather(*parked))
        single: list[float] = []
        for k in range(20):  # a name never appended before: the reader really waits
            one = asyncio.create_task(park(session, url, "solo", f"Solo {k}"))
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            await append(session, url, {"event": {"name": f"Solo {k}", "version": 1}})
            single.append((await one) - started)
    return {
        "waiters": waiters,
        "bytes_per_waiting_request": round((rss_parked - rss_idle) / waiters),
        "server_cpu_seconds_per_2s_idle": round(idle_cpu, 3),
        "server_cpu_seconds_per_2s_with_waiters_parked": round(parked_cpu, 3),
        "append_round_trip_ms": round(appended * 1000, 2),
        "wake_one_waiter_median_ms": round(statistics.median(single) * 1000, 2),
        "wake_all_waiters_median_ms": round(woken[len(woken) // 2] * 1000, 2),
        "wake_all_waiters_last_ms": round(woken[-1] * 1000, 2),
    }


async def throughput(base: str, batch: int, seconds: float, stream: str) -> float:
    """Events appended per second with 4 connections sending batches of `batch` (1: singles)."""
    if batch == 1:
        url, data = f"{base}/api/v1/streams/{stream}/events", orjson.dumps(EVENT)
    else:
        url, data = f"{base}/api/v1/streams/{stream}/events:batch", orjson.dumps([EVENT] * batch)
    headers = {"Authorization": AUTH_HEADER, "X-Producer-ID": "bench", "Content-Type": "application/json"}
    done = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.post(url, data=data, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                done += batch

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(4)))
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waiters", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="logserver-bench-ext-"))
    users = work / "users"
    add_bench_user(users)
    command = logserver_command(work / "data", users, "always")
    command[command.index("--port") : command.index("--port")] = ["--max-body-bytes", str(8 * 1024 * 1024)]
    server = start_server("logserver extensions", command, work)
    try:
        log(f"long-poll with {args.waiters} waiters")
        polls = asyncio.run(long_poll(server.url, server.pid, args.waiters))
        rates = {}
        for batch in (1, 100, 1000, 1):  # singles twice, first and last: drift shows
            log(f"append throughput, batches of {batch}")
            rates.setdefault(batch, []).append(
                asyncio.run(throughput(server.url, batch, args.seconds, f"b{batch}"))
            )
    finally:
        server.stop()
    singles = statistics.mean(rates[1])
    result = {
        "long_poll": polls,
        "append_events_per_second": {str(k): round(statistics.mean(v)) for k, v in rates.items()},
        "batch_100_over_single": round(statistics.mean(rates[100]) / singles, 1),
        "batch_1000_over_single": round(statistics.mean(rates[1000]) / singles, 1),
        "fsync": "always",
        "load_average_at_end": os.getloadavg(),
    }
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "extensions.json").write_text(json.dumps(result, indent=2) + "\n")
    for key, value in polls.items():
        print(f"{key:<48}{value:>12}")
    for batch, events in result["append_events_per_second"].items():
        label = "single appends" if batch == "1" else f"batches of {batch}"
        print(f"{'events/s, ' + label + ' (fsync always)':<48}{events:>12,}")
    print(f"{'batch of 100 / single':<48}{result['batch_100_over_single']:>11}x")
    print(f"{'batch of 1000 / single':<48}{result['batch_1000_over_single']:>11}x")


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    main()

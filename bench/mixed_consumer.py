"""The consumer side of the mixed run: poll, measure append-to-delivery latency, ack every event.

    python bench/mixed_consumer.py --url URL --stream S --event-name N --consumer C --seconds T

Loops for T seconds: GET up to --limit unacknowledged events, note for each event seen
for the first time how long ago the server stamped it (`receivedAt`, taken when the
append arrived, so the figure covers write, group-commit fsync, visibility and the
poll), then ack each event individually (--ack-concurrency at a time) and poll again;
an empty answer waits --idle-ms. Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import time
from datetime import datetime

import aiohttp
import orjson


async def consume(args: argparse.Namespace) -> dict[str, float | int]:
    credentials = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    headers = {"X-Consumer-ID": args.consumer, "Authorization": f"Basic {credentials}"}
    events_url = f"{args.url}/api/v1/streams/{args.stream}/events"
    params = {"eventName": args.event_name, "limit": str(args.limit)}
    seen: set[int] = set()
    latencies: list[float] = []
    acks = polls = 0
    gate = asyncio.Semaphore(args.ack_concurrency)
    connector = aiohttp.TCPConnector(limit=args.ack_concurrency + 1)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def ack(event_id: str) -> None:
            async with gate, session.post(f"{events_url}/{event_id}", data="action=ACK") as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"ack answered {response.status}")

        started = time.monotonic()
        deadline = started + args.seconds
        while time.monotonic() < deadline:
            async with session.get(events_url, params=params) as response:
                body = await response.read()
                status = response.status
            now = time.time()
            polls += 1
            if status == 404:  # the producers have not created the stream yet
                await asyncio.sleep(args.idle_ms / 1000)
                continue
            if status != 200:
                raise RuntimeError(f"consume answered {status}: {body[:200]!r}")
            events = orjson.loads(body)
            if not events:
                await asyncio.sleep(args.idle_ms / 1000)
                continue
            for event in events:
                if event["sequence"] not in seen:
                    seen.add(event["sequence"])
                    latencies.append(now - datetime.fromisoformat(event["receivedAt"]).timestamp())
            await asyncio.gather(*(ack(event["eventId"]) for event in events))
            acks += len(events)
        elapsed = time.monotonic() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else 0.0

    return {
        "delivered": len(seen),
        "acked": acks,
        "polls": polls,
        "seconds": round(elapsed, 3),
        "delivered_per_s": round(len(seen) / elapsed, 1),
        "e2e_p50_ms": round(percentile(50), 2),
        "e2e_p99_ms": round(percentile(99), 2),
        "e2e_max_ms": round(latencies[-1] * 1000, 2) if latencies else 0.0,
        "e2e_mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True, help="as it appears in the URL (percent-encoded)")
    parser.add_argument("--event-name", required=True)
    parser.add_argument("--consumer", required=True)
    parser.add_argument("--user", default="bench")
    parser.add_argument("--password", default="bench-password")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--ack-concurrency", type=int, default=100)
    parser.add_argument("--idle-ms", type=float, default=2)
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(consume(args))).decode(), flush=True)


if __name__ == "__main__":
    main()

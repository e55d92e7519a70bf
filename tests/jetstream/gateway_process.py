"""A gateway in a process of its own, for the kill -9 test: it appends numbered events and acks
each one, printing a line as each append and each ack is answered.

    python gateway_process.py NATS_URLS MONITOR_URLS STREAM
"""

from __future__ import annotations

import asyncio
import sys

from logserver.jetstream import JetStreamEngine, JetStreamSettings


async def main(servers: str, monitors: str, stream: str) -> None:
    settings = JetStreamSettings(servers=servers.split(","), monitor_urls=monitors.split(","))
    engine = await JetStreamEngine.open(settings)
    k = 0
    while True:
        body = {"event": {"name": "Numbered", "version": 1}, "payload": {"k": k}}
        event_id = await engine.append(stream, "writer", body, None, None)
        print(f"appended {k} {event_id}", flush=True)
        await engine.ack(stream, "c", event_id)
        print(f"acked {event_id}", flush=True)
        k += 1


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

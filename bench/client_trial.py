"""Issue 12's trial, timed: 2,000 appends and two consumers acking all 4,000 deliveries, once with
one plain HTTP request per append and per ack, once through logserver.client (batches, subscribe).

    python bench/client_trial.py [--events 2000] [--fsync always]

Starts its own `logserver serve` on a free port over a temporary data dir and prints one line per
measurement. The machine's load moves the figures; compare the lines of one run.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx

from logserver.auth import add_user
from logserver.client import Client

USER, PASSWORD = "bench", "bench-password"
CONSUMERS = ("mailer", "invoicer")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(directory: Path, fsync: str) -> tuple[subprocess.Popen[bytes], str]:
    """`logserver serve` over `directory`, once it answers /health; the process and its URL."""
    add_user(directory / "users", USER, PASSWORD)
    port = free_port()
    command = [sys.executable, "-m", "logserver", "serve", "--port", str(port), "--log-level", "WARNING"]
    command += [
        "--data-dir",
        str(directory / "data"),
        "--users-file",
        str(directory / "users"),
        "--fsync",
        fsync,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGSERVER_")}
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def body(n: int) -> dict[str, object]:
    return {"event": {"name": "OrderPlaced", "version": 1}, "payload": {"orderId": n}}


def timed(what: str, run: Callable[[], int]) -> float:
    started = time.perf_counter()
    count = run()
    seconds = time.perf_counter() - started
    print(f"{what:<58} {count:>6,} in {seconds:6.2f} s  ({count / seconds:8,.0f}/s)", flush=True)
    return seconds


def plain_http(url: str, stream: str, events: int) -> tuple[float, float]:
    """One request per append and per ack, as the trial wrote them by hand."""
    path = f"/api/v1/streams/{quote(stream, safe='')}"
    with httpx.Client(base_url=url, auth=(USER, PASSWORD)) as http:

        def append() -> int:
            for n in range(events):
                http.post(
                    f"{path}/events", json=body(n), headers={"X-Producer-ID": "shop"}
                ).raise_for_status()
            return events

        def consume_and_ack() -> int:
            acked = 0
            for consumer in CONSUMERS:
                headers = {"X-Consumer-ID": consumer}
                while True:
                    params = {"eventName": "OrderPlaced", "limit": "100"}
                    page = http.get(f"{path}/events", params=params, headers=headers).json()
                    if not page:
                        break
                    for item in page:
                        answer = http.post(
                            f"{path}/events/{item['eventId']}", data={"action": "ACK"}, headers=headers
                        )
                        answer.raise_for_status()
                        acked += 1
            return acked

        return timed("plain HTTP: append, one request each", append), timed(
            "plain HTTP: consume + ack, one request per ack", consume_and_ack
        )


def with_client(url: str, stream: str, events: int) -> tuple[float, float]:
    """Batches of 100 (as `logserver produce` sends them) and a subscription per consumer."""
    with Client(url, USER, PASSWORD) as client:

        def append() -> int:
            for start in range(0, events, 100):
                batch = [body(n) for n in range(start, min(start + 100, events))]
                client.append_batch(stream, batch, producer="shop")
            return events

        def consume_and_ack() -> int:
            acked = 0
            for consumer in CONSUMERS:
                with client.subscribe(
                    stream, "OrderPlaced", consumer, wait=0, stop_when_idle=True
                ) as subscription:
                    for _ in subscription:
                        acked += 1
            return acked

        appended = timed("client: append_batch, 100 a request", append)
        consumed = timed("client: subscribe, acks via ack_many", consume_and_ack)
        print(f"  (ack_many sent {batch_ack_route(url, stream)})")
        return appended, consumed


def batch_ack_route(url: str, stream: str) -> str:
    """Which way ack_many acks on this server: the batch route, or one v1 ack per id."""
    path = f"/api/v1/streams/{quote(stream, safe='')}/events:ack"
    with httpx.Client(base_url=url, auth=(USER, PASSWORD)) as http:
        answer = http.post(path, json={"eventIds": []}, headers={"X-Consumer-ID": "probe"})
    missing = answer.status_code == 405 or (answer.status_code == 404 and answer.json() == "Not Found")
    return "one v1 ack per id: the server has no events:ack route" if missing else "one events:ack per page"


def single_appends(url: str, stream: str, events: int) -> float:
    """client.append one at a time: what the client itself adds to a request."""
    with Client(url, USER, PASSWORD) as client:

        def append() -> int:
            for n in range(events):
                client.append(stream, body(n), producer="shop")
            return events

        return timed("client: append, one request each", append)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--fsync", default="always", choices=("always", "interval", "never"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="logserver-client-trial-") as directory:
        process, url = start_server(Path(directory), args.fsync)
        try:
            print(f"{args.events:,} events, {len(CONSUMERS)} consumers, --fsync {args.fsync}")
            plain = plain_http(url, "plain", args.events)
            client = with_client(url, "client", args.events)
            single_appends(url, "client single", args.events)
            print(f"plain HTTP total {sum(plain):.2f} s; client total {sum(client):.2f} s")
        finally:
            process.terminate()
            process.wait(timeout=60)


if __name__ == "__main__":
    main()

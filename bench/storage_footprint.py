"""Memory per stored event and start-up time for a data dir of 1,000,000 events.

    python bench/storage_footprint.py [--events N] [--segments S] [--keep DIR]

Builds the data dir through the real engine (fsync=never to save time), then
measures in fresh processes, each against a baseline taken in the same run:
  * resident memory: RSS after FileStore.open of the full dir minus RSS after
    opening an empty dir, divided by the event count;
  * start-up: process start to the first 200 from /health of `logserver serve`,
    for the full dir and for an empty one (the baseline: interpreter + imports).
Medians of --runs runs are printed and written to bench/results/storage_footprint.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = {
    "event": {"name": "OrderPlaced", "version": 1},
    "system": {
        "id": "alv123",
        "name": "codello alvine",
        "time": "2017-09-06 13:58:12",
        "timezone": "Europe/Berlin",
    },
    "trigger": {"type": "system", "name": "/path/to/script.php"},
    "payload": {},
}

MEASURE_RSS = """
import asyncio, sys, time
from pathlib import Path
from logserver.filestore import FileStore, FsyncPolicy, StorageConfig

def rss() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")

async def main() -> None:
    before = rss()
    started = time.perf_counter()
    store = await FileStore.open(StorageConfig(Path(sys.argv[1]), fsync=FsyncPolicy.NEVER))
    opened = time.perf_counter() - started
    print(rss() - before, opened)
    await store.close()

asyncio.run(main())
"""


def event_body(n: int) -> dict[str, object]:
    """The n-th event of the data set: the example with one of 10 names in turn and n as its payload."""
    return dict(EXAMPLE, event={"name": f"Event name {n % 10}", "version": 1}, payload={"n": n})


async def build(data_dir: Path, events: int, segment_bytes: int) -> None:
    from logserver.filestore import FileStore, FsyncPolicy, StorageConfig

    store = await FileStore.open(
        StorageConfig(data_dir, fsync=FsyncPolicy.NEVER, segment_bytes=segment_bytes)
    )
    for n in range(events):
        await store.append("bench stream", "bench-producer", event_body(n))
    await store.close()


def stored_bytes_per_event(scratch: Path, sample: int = 2000) -> float:
    """What the engine stores per event of build()'s kind: measured, as its record format may change."""
    asyncio.run(build(scratch, sample, 1 << 40))
    return sum(f.stat().st_size for f in scratch.glob("streams/*/*.log")) / sample


def measure_rss(data_dir: Path) -> tuple[int, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE_RSS, str(data_dir)], capture_output=True, text=True, check=True
    )
    grown, opened = out.stdout.split()
    return int(grown), float(opened)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_to_health(data_dir: Path) -> float:
    port = free_port()
    env = dict(os.environ, LOGSERVER_LOG_LEVEL="WARNING")
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "logserver", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError("server exited during start-up") from None
                time.sleep(0.005)
    finally:
        server.terminate()
        server.wait()


def ensure_data_dir(full: Path, events: int, segments: int) -> None:
    """Build `full` with `events` events of 10 names in about `segments` segments, unless it exists.

    Built under a temporary name and renamed when complete, so an interrupted build is never reused.
    """
    if (full / "streams").exists():
        return
    partial = full.with_name(full.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    # The sample's sequences and payload numbers have fewer digits than the full set's (about
    # 1.2% fewer bytes at 1M events): 2.5% over an even split keeps it to `segments` segments,
    # the last one a little shorter.
    segment_bytes = int(events * stored_bytes_per_event(partial) / segments * 1.025)
    shutil.rmtree(partial, ignore_errors=True)
    asyncio.run(build(partial, events, segment_bytes))
    partial.rename(full)
    print(f"built {events:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def measure(full: Path, events: int, runs: int) -> dict[str, float | int]:
    """Memory per event and start-up figures for the built dir `full`: medians of `runs` runs."""
    work = Path(tempfile.mkdtemp(prefix="logserver-bench-"))
    empty = work / "empty"
    empty.mkdir()
    try:
        segments = len(list(full.glob("streams/*/*.log")))
        rss_full, rss_empty, open_full, start_full, start_empty = [], [], [], [], []
        for _ in range(runs):  # alternate full and baseline so drift hits both
            grown, opened = measure_rss(full)
            rss_full.append(grown)
            open_full.append(opened)
            rss_empty.append(measure_rss(empty)[0])
            start_full.append(time_to_health(full))
            start_empty.append(time_to_health(empty))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_event = (statistics.median(rss_full) - statistics.median(rss_empty)) / events
    return {
        "events": events,
        "segments": segments,
        "bytes_per_event_rss": round(per_event, 2),
        "engine_open_seconds_median": round(statistics.median(open_full), 3),
        "startup_to_health_seconds_median": round(statistics.median(start_full), 3),
        "startup_empty_dir_seconds_median": round(statistics.median(start_empty), 3),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="reuse/keep the generated data dir here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="logserver-bench-"))
    full = args.keep or work / "full"
    try:
        ensure_data_dir(full, args.events, args.segments)
        result = measure(full, args.events, args.runs)
        out = ROOT / "bench" / "results" / "storage_footprint.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        per_event = result["bytes_per_event_rss"]
        print(f"{'events':<34}{args.events:>12,}")
        print(f"{'segments':<34}{result['segments']:>12}")
        print(f"{'resident bytes per event':<34}{per_event:>12.1f}   (target <= 24)")
        print(f"{'FileStore.open, median s':<34}{result['engine_open_seconds_median']:>12.3f}")
        startup = result["startup_to_health_seconds_median"]
        print(f"{'start to /health 200, median s':<34}{startup:>12.3f}   (target <= 1)")
        print(f"{'  baseline: empty data dir, s':<34}{result['startup_empty_dir_seconds_median']:>12.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

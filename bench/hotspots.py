"""Where logserver spends its time under wrk load: py-spy samples of the append, consume and ack paths.

    python bench/hotspots.py [--seconds S] [--rate HZ] [--top N] [--svg]

Runs logserver (fsync=always, on core 0) and wrk (-t1 -c64, core 1) as bench/run.py
does, and samples the server with `py-spy record` while each load runs:
  append   POST of the bench event, fresh data dir
  consume  GET limit=100 on the cached 1,000,000-event stream (bench/run.py builds it)
  ack      POST action=ACK of distinct events of that stream by a new consumer
For each path it prints the functions with the most samples of their own ("self") and
those on the stack most often ("total"), as % of the non-idle samples, and writes the
collapsed stacks to bench/results/profile-<path>.txt (--svg: flame graphs instead of
collapsed stacks; a second pass would cost the same time again). py-spy needs ptrace:
run as root or with CAP_SYS_PTRACE.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
import storage_footprint
from harness import (
    AUTH_HEADER,
    BENCH,
    CLIENT_CPU,
    LUA_DIR,
    Server,
    add_bench_user,
    get_json,
    log,
    logserver_command,
    machine_info,
    pinned,
    start_server,
)
from run import EVENT, READ_STREAM, RESULTS, append_env, link_copy

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    """`function (path/to/file.py:12)` as `function (package/file.py)`, lines merged."""
    match = FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    # Libraries first: a checkout named logserver holds its venv's site-packages too.
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/lib/python3" in path:
        path = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    elif "/logserver/" in path:
        path = "logserver/" + path.rsplit("/logserver/", 1)[1]
    return f"{match['function']} ({path})"


# Where a loop-thread sample is, by its innermost logserver frame (bench/ceiling.py counts as one).
ENTRY_POINTS = ("main (", "_serve (", "<module> (", "serve (")
LAYERS = ("logserver's own Python", "libraries called by logserver", "aiohttp and the event loop")


def layer(names: list[str]) -> str:
    """Which of LAYERS a stack (outermost first, shortened names) belongs to.

    A C call (orjson, a syscall) has no frame: it counts where its Python caller does.
    """

    def ours(name: str) -> bool:
        return "(logserver/" in name or "ceiling.py)" in name

    if ours(names[-1]):
        return LAYERS[0]
    # Entry points hold every frame; protocol.py's handler wraps aiohttp's parsing.
    calling = [n for n in names if ours(n) and not n.startswith(ENTRY_POINTS) and "http/protocol.py" not in n]
    return LAYERS[1] if calling else LAYERS[2]


def layers_per_request(collapsed: str, rate: int, requests: float) -> dict[str, float]:
    """Microseconds of the loop thread per request in each of LAYERS (py-spy's overhead included)."""
    samples: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        thread, *frames = stack.split(";")
        if frames and thread.endswith(": MainThread"):
            samples[layer([short(f) for f in frames])] += int(count_text)
    return {name: samples[name] / rate / requests * 1e6 for name in LAYERS}


def summarise(collapsed: str, top: int) -> tuple[int, int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(event-loop samples, other threads' samples, top self %, top logserver total %) of the loop thread.

    Percentages are of the event loop thread's non-idle samples: that thread is the one
    core a request's Python work runs on. A C function (uvloop, the HTTP parser, orjson)
    has no frame of its own: its time counts as self time of the Python frame that called it.
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    loop = other = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        if not thread.endswith(": MainThread"):
            # py-spy takes an executor thread waiting for work for a busy one: not counted
            if frames and not frames[-1].startswith("_worker (") and not frames[-1].endswith("_worker"):
                other += count
            continue
        names = [short(f) for f in frames]
        if not names:  # a sample py-spy took between two frames: no function to charge
            continue
        loop += count
        own[names[-1]] += count
        for name in set(names):
            if "(logserver/" in name and not name.startswith(("main (", "_serve (", "<module> (")):
                total[name] += count
    if not loop:
        return 0, other, [], []

    def percent(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(f, 100 * n / loop) for f, n in counter.most_common(top)]

    return loop, other, percent(own), percent(total)


def record(pid: int, seconds: float, rate: int, out: Path, svg: bool) -> None:
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", str(rate)]
    command += ["--threads", "--format", "flamegraph" if svg else "raw", "--output", str(out)]
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    subprocess.run(pinned(CLIENT_CPU, [py_spy, *command[1:]]), check=True, capture_output=True)


def profile(url: str, pid: int, env: dict[str, str], script: str, seconds: float, rate: int, out: Path,
            svg: bool) -> float:  # fmt: skip
    """wrk for seconds + 3 in the background, py-spy for `seconds` after a 1 s ramp; returns the
    requests answered while sampled (wrk's rate times `seconds`)."""
    wrk = subprocess.Popen(
        pinned(
            CLIENT_CPU, ["wrk", "-t1", "-c64", f"-d{round(seconds) + 3}s", "-s", str(LUA_DIR / script), url]
        ),
        env={**os.environ, "BENCH_LUA_DIR": str(LUA_DIR), **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)
        record(pid, seconds, rate, out, svg)
    finally:
        output, _ = wrk.communicate(timeout=seconds + 60)
    summary = [line for line in output.splitlines() if line.startswith("BENCH_JSON")]
    if summary:
        figures = orjson.loads(summary[-1].removeprefix("BENCH_JSON "))
        if figures["status"]:
            raise RuntimeError(f"{figures['status']} non-2xx answers under {script}")
        rate_seen = figures["requests"] / (figures["duration_us"] / 1e6)
        log(f"  {script}: {rate_seen:,.0f} req/s while sampled (py-spy slows the server a little)")
        return rate_seen * seconds
    raise RuntimeError(f"wrk printed no summary under {script}")


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument(
        "--data-cache", type=Path, default=Path(tempfile.gettempdir()) / "logserver-bench-cache"
    )
    parser.add_argument("--only", default="append,consume,ack")
    parser.add_argument("--svg", action="store_true", help="write flame graphs (profile-<path>.svg)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="logserver-bench-profile-"))
    servers = []
    reports = []
    try:
        users = work / "users"
        add_bench_user(users)
        body_file = work / "event.json"
        body_file.write_bytes(orjson.dumps(EVENT))
        jobs: list[tuple[str, str, dict[str, str], Server]] = []
        if "append" in args.only:
            server = start_server("profile-append", logserver_command(work / "append", users, "always"), work)
            servers.append(server)
            jobs.append(("append", "append.lua", append_env(body_file), server))
            # The same load on the ceiling: what aiohttp and the loop cost an append anyway.
            ceiling = start_server(
                "profile-ceiling", [sys.executable, str(BENCH / "ceiling.py"), "--port", "{port}"], work
            )
            servers.append(ceiling)
            jobs.append(("ceiling append", "append.lua", append_env(body_file), ceiling))
        if "consume" in args.only or "ack" in args.only:
            data = args.data_cache / f"events-{args.events}-segments-{args.segments}"
            args.data_cache.mkdir(parents=True, exist_ok=True)
            storage_footprint.ensure_data_dir(data, args.events, args.segments)
            link_copy(data, work / "read")
            server = start_server("profile-read", logserver_command(work / "read", users, "always"), work)
            servers.append(server)
            events = f"/api/v1/streams/{READ_STREAM}/events"
            probe = {"Authorization": AUTH_HEADER, "X-Consumer-ID": "probe"}
            first = get_json(f"{server.url}{events}?eventName=Event%20name%200&limit=1", probe)
            assert isinstance(first, list) and first
            base = {"BENCH_AUTH": AUTH_HEADER}
            if "consume" in args.only:
                path = f"{events}?eventName=Event%20name%200&limit=100"
                jobs.append(
                    ("consume", "consume.lua", {**base, "BENCH_PATH": path, "BENCH_CONSUMER": "c"}, server)
                )
            if "ack" in args.only:
                ack = {
                    **base,
                    "BENCH_PATH": f"{events}/",
                    "BENCH_CONSUMER": f"profile-{int(time.time())}",
                    "BENCH_CONTENT_TYPE": "application/x-www-form-urlencoded",
                    "BENCH_ID_PREFIX": first[0]["eventId"][:24],
                    "BENCH_FIRST": "1",
                    "BENCH_LAST": str(args.events),
                }
                jobs.append(("ack", "ack.lua", ack, server))
        RESULTS.mkdir(exist_ok=True)
        for name, script, env, server in jobs:
            out = RESULTS / f"profile-{name.replace(' ', '-')}.{'svg' if args.svg else 'txt'}"
            log(f"profiling {name}: wrk -c64 on {server.url}, py-spy on {server.pid} for {args.seconds:g} s")
            requests = profile(server.url, server.pid, env, script, args.seconds, args.rate, out, args.svg)
            if args.svg:
                continue
            collapsed = out.read_text()
            loop, other, own, total = summarise(collapsed, args.top)
            possible = args.seconds * args.rate
            lines = [
                f"== {name}: event loop thread busy in {loop} samples (~{100 * loop / possible:.0f}% of wall "
                f"time); other threads busy (fsync, file writes) in {other} samples",
                "   µs/request  layer (loop-thread samples / rate / requests answered while sampled)",
            ]
            per_request = layers_per_request(collapsed, args.rate, requests)
            lines += [f"  {micros:8.1f}    {layer_name}" for layer_name, micros in per_request.items()]
            lines += [
                f"  {sum(per_request.values()):8.1f}    in all",
                "   self %  function (% of the loop thread's busy samples)",
            ]
            lines += [f"  {pct:6.1f}   {function}" for function, pct in own]
            lines.append("  total %  logserver function (on the stack)")
            lines += [f"  {pct:6.1f}   {function}" for function, pct in total]
            reports.append("\n".join(lines))
            print(reports[-1], flush=True)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    if reports:
        command = "python bench/hotspots.py " + " ".join(sys.argv[1:])
        commit = machine_info()["git_commit"]
        header = (
            f"py-spy profile of {commit} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): {command}"
        )
        (RESULTS / "profile.md").write_text("```\n" + header + "\n\n" + "\n\n".join(reports) + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

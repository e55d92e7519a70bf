"""What the benchmarks share: pinned server processes, wrk runs, tools from apt, a private PostgreSQL.

The machine has 2 cores: every server-side process runs on SERVER_CPU and the load
generator on CLIENT_CPU, so the client never takes the server's core (a Python client
would measure itself; wrk with one thread does not).
"""

from __future__ import annotations

import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from storage_footprint import free_port

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LUA_DIR = BENCH / "wrk"
SERVER_CPU = "0"
CLIENT_CPU = "1"
USER, PASSWORD = "bench", "bench-password"
AUTH_HEADER = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pinned(cpu: str, command: Sequence[str]) -> list[str]:
    """`command` bound to one core, when taskset exists and the machine has that core."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > int(cpu):
        return ["taskset", "-c", cpu, *command]
    return list(command)


# ---- tools from the OS packages ------------------------------------------------------------------


def ensure_apt_package(binary: str, package: str) -> bool:
    """True when `binary` is on PATH, installing `package` with apt-get if it is missing and we are root."""
    if shutil.which(binary):
        return True
    apt_install(package)
    if shutil.which(binary):
        return True
    log(f"{binary} is not available: skipping what needs it")
    return False


def apt_install(package: str) -> bool:
    """`apt-get install -y package` (after `apt-get update` if the first try fails); False if impossible."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log(f"{package} is missing and cannot be installed here (needs root and apt-get)")
        return False
    log(f"installing {package}: apt-get install -y {package}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    if subprocess.run(["apt-get", "install", "-y", package], check=False, **quiet).returncode == 0:
        return True
    subprocess.run(["apt-get", "update"], check=False, **quiet)  # a fresh machine has no package lists yet
    if subprocess.run(["apt-get", "install", "-y", package], check=False, **quiet).returncode == 0:
        return True
    log(f"apt-get could not install {package}")
    return False


# ---- server processes --------------------------------------------------------------------------


@dataclass
class Server:
    """One HTTP server process on SERVER_CPU, answering at `url`."""

    label: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def pid(self) -> int:
        return self.process.pid


def start_server(
    label: str, command: Sequence[str], work: Path, timeout: float = 120, cpu: str | None = SERVER_CPU
) -> Server:
    """Start `command` (which must listen on the port given as {port}) and wait for /health 200.

    It runs on `cpu`, or on any core for None (several processes that should spread out).
    """
    port = free_port()
    log_path = work / f"{label.replace(' ', '-').replace('=', '-')}.log"
    argv = [part.format(port=port) for part in command]
    argv = pinned(cpu, argv) if cpu is not None else argv
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT)
    server = Server(label, f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{label} did not start (see {log_path}):\n{tail}")
        time.sleep(0.05)


def logserver_command(data_dir: Path, users_file: Path, fsync: str) -> list[str]:
    # The defaults, as a user runs it: no access log line per request (the ceiling writes none
    # either); bench/access_log.py measures the access log and the log levels.
    return [
        sys.executable, "-m", "logserver", "serve", "--port", "{port}", "--data-dir", str(data_dir),
        "--users-file", str(users_file), "--fsync", fsync,
    ]  # fmt: skip


def add_bench_user(users_file: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "logserver", "user", "add", USER, "--password", PASSWORD,
         "--users-file", str(users_file)],
        check=True, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def get_json(url: str, headers: dict[str, str]) -> object:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


# ---- a stored stream to consume and ack --------------------------------------------------------


def events_per_answer(server: Server, stream: str, limits: Sequence[int]) -> dict[int, int]:
    """How many events a GET of `Event name 0` with each limit answers (a probe consumer that never acks)."""
    probe = {"Authorization": AUTH_HEADER, "X-Consumer-ID": "bench-probe"}
    counts = {}
    for limit in limits:
        answer = get_json(
            f"{server.url}/api/v1/streams/{stream}/events?eventName=Event%20name%200&limit={limit}", probe
        )
        assert isinstance(answer, list)
        counts[limit] = len(answer)
    return counts


def event_id_prefix(server: Server, stream: str) -> str:
    """The first 24 characters every event id of `stream` shares, which ack.lua completes with a sequence."""
    probe = {"Authorization": AUTH_HEADER, "X-Consumer-ID": "bench-probe"}
    first = get_json(f"{server.url}/api/v1/streams/{stream}/events?eventName=Event%20name%201&limit=1", probe)
    assert isinstance(first, list) and first
    event_id, sequence = first[0]["eventId"], first[0]["sequence"]
    if event_id[-12:] != f"{sequence:012x}":
        raise RuntimeError(f"event id {event_id} does not end in its sequence {sequence}: ack.lua needs it")
    return str(event_id[:24])


def consume_env(stream: str, limit: int) -> dict[str, str]:
    """consume.lua's environment: GET `Event name 0` with `limit` as a consumer that never acks."""
    return {
        "BENCH_AUTH": AUTH_HEADER,
        "BENCH_PATH": f"/api/v1/streams/{stream}/events?eventName=Event%20name%200&limit={limit}",
        "BENCH_CONSUMER": "bench-reader",
    }


def ack_env(stream: str, consumer: str, prefix: str, first: int, last: int) -> dict[str, str]:
    """ack.lua's environment: `consumer` acks the events of sequences first..last in turn."""
    return {
        "BENCH_AUTH": AUTH_HEADER,
        "BENCH_PATH": f"/api/v1/streams/{stream}/events/",
        "BENCH_CONSUMER": consumer,
        "BENCH_CONTENT_TYPE": "application/x-www-form-urlencoded",
        "BENCH_ID_PREFIX": prefix,
        "BENCH_FIRST": str(first),
        "BENCH_LAST": str(last),
    }


# ---- wrk ---------------------------------------------------------------------------------------


class WrkError(RuntimeError):
    pass


def run_wrk(
    url: str, script: str, env: dict[str, str], connections: int, duration: float
) -> dict[str, float]:
    """One wrk run (one thread, on CLIENT_CPU); its summary, with req/s and latencies in ms.

    Fails loudly on any non-2xx answer: a benchmark of errors measures nothing.
    """
    command = pinned(CLIENT_CPU, [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "10s",
        "-s", str(LUA_DIR / script), url,
    ])  # fmt: skip
    full_env = dict(os.environ, BENCH_LUA_DIR=str(LUA_DIR), **env)
    overflows = listen_overflows()
    out = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=duration + 120)
    overflows = listen_overflows() - overflows
    lines = [line for line in out.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if out.returncode != 0 or not lines:
        raise WrkError(f"wrk failed ({out.returncode}) on {url}:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    if raw["status"]:
        raise WrkError(
            f"{raw['status']} non-2xx answers of {raw['requests']} from {url} ({script}, -c{connections}); "
            "the server's log tells why"
        )
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "req_s": raw["requests"] / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "socket_errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        "listen_overflows": overflows,
    }


def run_wrk_across(
    servers: Sequence[Server], script: str, envs: Sequence[dict[str, str]], connections: int, duration: float
) -> dict[str, float]:
    """wrk against every server at once, one wrk each (envs[i] for servers[i]), the connections split
    between them: one summary, with requests and req/s summed and each latency the slowest run's."""
    if len(servers) == 1:
        return run_wrk(servers[0].url, script, envs[0], connections, duration)
    share = max(1, connections // len(servers))
    with ThreadPoolExecutor(len(servers)) as pool:
        runs = list(
            pool.map(lambda server, env: run_wrk(server.url, script, env, share, duration), servers, envs)
        )
    summed = ("requests", "req_s", "socket_errors")
    # each run counts the machine's listen-queue overflows in the same seconds: the largest is all
    worst = ("seconds", "p50_ms", "p90_ms", "p99_ms", "max_ms", "listen_overflows")
    return {
        **{key: sum(run[key] for run in runs) for key in summed},
        **{key: max(run[key] for run in runs) for key in worst},
    }


def warm(server: Server, script: str, env: dict[str, str], seconds: float) -> None:
    """Creates the stream, fills the auth cache and the page cache: not recorded."""
    run_wrk(server.url, script, env, 64, seconds)


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (all sockets).

    A dropped handshake is retried by the client after 1 s, so one overflow during a run
    puts a second into its tail latency: run.py flags such runs.
    """
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


# ---- PostgreSQL, private and temporary -------------------------------------------------------


def postgres_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


@contextmanager
def postgres_cluster() -> Iterator[str | None]:
    """A throw-away cluster on 127.0.0.1 with synchronous_commit=on, pinned to SERVER_CPU: its DSN.

    Yields None (after saying why) when PostgreSQL cannot be installed or started.
    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
    """
    bindir = postgres_bindir()
    if bindir is None and apt_install("postgresql"):
        bindir = postgres_bindir()
    if bindir is None:
        log("PostgreSQL is not installed and could not be: the peer is skipped")
        yield None
        return
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="logserver-bench-pg-"))
    if os.geteuid() == 0:
        try:
            import pwd

            entry = pwd.getpwnam("postgres")
        except KeyError:
            log("no `postgres` user to run PostgreSQL as: the peer is skipped")
            shutil.rmtree(base, ignore_errors=True)
            yield None
            return
        os.chown(base, entry.pw_uid, entry.pw_gid)
        base.chmod(0o700)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    options = (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c synchronous_commit=on -c fsync=on "
        "-c autovacuum=off"  # no vacuum of the insert-only table stealing the server core mid-run
    )
    started = False
    try:
        initdb = [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        subprocess.run([*initdb, "--no-sync"], capture_output=True, check=True)
        start = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w"]
        start += ["-o", options]
        subprocess.run(pinned(SERVER_CPU, [*start, "start"]), stdout=subprocess.DEVNULL, check=True)
        started = True
    except (subprocess.CalledProcessError, OSError) as exc:
        log(f"PostgreSQL did not start ({exc}): the peer is skipped")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres" if started else None
    finally:
        if started:
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
            )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


# ---- what the figures came from ----------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, object]:
    model = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0
    with suppress(OSError, ValueError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "logserver"], cwd=ROOT, capture_output=True, text=True
    )
    has_wrk = shutil.which("wrk") is not None
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True) if has_wrk else None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in ("aiohttp", "uvloop", "orjson", "asyncpg")},
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if wrk else None,
        "git_commit": git.stdout.strip() + ("+local changes in logserver/" if dirty.stdout.strip() else ""),
        "loadavg_at_start": os.getloadavg(),
    }

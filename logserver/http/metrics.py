"""GET /metrics in the Prometheus text format: request counters and latency histograms per
route, plus the engine's figures read at scrape time (nothing is sampled in between)."""

from __future__ import annotations

import math
import os
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from logserver.engine import StreamFigures

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    math.inf,
)
Emit = Callable[[str], None]


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(**values: object) -> str:
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in values.items()) + "}"


def _bound(value: float) -> str:
    return "+Inf" if value == math.inf else repr(value)


def _family(emit: Emit, name: str, kind: str, help_text: str) -> None:
    emit(f"# HELP {name} {help_text}")
    emit(f"# TYPE {name} {kind}")


class RequestMetrics:
    """Request counts and latency histograms by route template. Event-loop only."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: defaultdict[tuple[str, str], list[int]] = defaultdict(
            lambda: [0] * len(LATENCY_BUCKETS)
        )
        self.latency_sum: defaultdict[tuple[str, str], float] = defaultdict(float)

    def observe(self, route: str, method: str, status: int, elapsed: float) -> None:
        """Count one answered request to `route` (its path template) that took `elapsed` seconds."""
        key = (route, method)
        self.requests[(*key, status)] += 1
        self.latency[key][bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        self.latency_sum[key] += elapsed

    def render(self, figures: list[StreamFigures]) -> bytes:
        lines: list[str] = []
        emit = lines.append
        _family(emit, "logserver_http_requests_total", "counter", "Requests by route, method and status.")
        for (route, method, status), n in sorted(self.requests.items()):
            emit(f"logserver_http_requests_total{labels(route=route, method=method, status=status)} {n}")
        _family(
            emit, "logserver_http_request_seconds", "histogram", "Time in the handler by route and method."
        )
        for (route, method), counts in sorted(self.latency.items()):
            cumulative = 0
            for bound, n in zip(LATENCY_BUCKETS, counts, strict=True):
                cumulative += n
                le = labels(route=route, method=method, le=_bound(bound))
                emit(f"logserver_http_request_seconds_bucket{le} {cumulative}")
            common = labels(route=route, method=method)
            emit(f"logserver_http_request_seconds_sum{common} {self.latency_sum[(route, method)]}")
            emit(f"logserver_http_request_seconds_count{common} {cumulative}")
        render_engine(figures, emit)
        _family(emit, "logserver_open_files", "gauge", "File descriptors the process holds.")
        emit(f"logserver_open_files {len(os.listdir('/proc/self/fd'))}")
        render_process(emit)
        return ("\n".join(lines) + "\n").encode()


def render_process(emit: Emit) -> None:
    """The process metrics Prometheus clients export by these names (read from /proc, Linux)."""
    times = os.times()
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    _family(emit, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.")
    emit(f"process_cpu_seconds_total {times.user + times.system}")
    _family(emit, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
    emit(f"process_resident_memory_bytes {resident_pages * os.sysconf('SC_PAGE_SIZE')}")
    _family(emit, "process_open_fds", "gauge", "Number of open file descriptors.")
    emit(f"process_open_fds {len(os.listdir('/proc/self/fd'))}")
    _family(emit, "process_start_time_seconds", "gauge", "Start time of the process since the epoch (s).")
    emit(f"process_start_time_seconds {_process_start_time()}")


def _process_start_time() -> float:
    """When this process started (Unix seconds): boot time plus its start in clock ticks after boot."""
    # The command name (field 2) may hold spaces: count the fields after its closing parenthesis.
    after_name = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
    started_ticks = int(after_name[19])  # field 22, the 20th after the name
    boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
    return int(boot.split()[1]) + started_ticks / os.sysconf("SC_CLK_TCK")


def render_engine(streams: list[StreamFigures], emit: Emit) -> None:
    """The engine's figures per stream (damaged streams are listed by /api/v1/streams instead)."""
    gauges: list[tuple[str, str, Callable[[StreamFigures], float]]] = [
        ("logserver_stream_last_sequence", "Last readable sequence.", lambda s: s.last_sequence),
        ("logserver_stream_events", "Events stored (after retention).", lambda s: s.events),
        ("logserver_stream_bytes", "Bytes of the segments on disk.", lambda s: s.bytes),
        ("logserver_stream_waiting_readers", "Long-poll requests waiting.", lambda s: s.waiting_readers),
        ("logserver_fsyncs_total", "fsyncs of appended records.", lambda s: s.fsyncs),
        ("logserver_fsync_seconds_total", "Time spent in those fsyncs.", lambda s: s.fsync_seconds),
    ]
    for metric, help_text, value in gauges:
        _family(emit, metric, "counter" if metric.endswith("_total") else "gauge", help_text)
        for s in streams:
            emit(f"{metric}{labels(stream=s.name)} {value(s)}")
    _family(emit, "logserver_group_commit_batch_size", "histogram", "Appends covered by one commit.")
    for s in streams:
        commit = s.appends
        for bound, n in commit.batch_sizes.items():
            emit(f"logserver_group_commit_batch_size_bucket{labels(stream=s.name, le=_bound(bound))} {n}")
        emit(f"logserver_group_commit_batch_size_count{labels(stream=s.name)} {commit.flushes}")
        emit(f"logserver_group_commit_batch_size_sum{labels(stream=s.name)} {commit.requests}")
    _family(emit, "logserver_consumer_behind", "gauge", "Events of that name not yet acknowledged.")
    for s in streams:
        for row in s.consumers:
            tags = labels(stream=s.name, consumer=row["consumer"], event_name=row["eventName"])
            emit(f"logserver_consumer_behind{tags} {row['behind']}")

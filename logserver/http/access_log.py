"""The access log: one line per request, formatted on the request path, written in batches.

aiohttp's AccessLogger formats each line through its format string and hands it to
`logging`, whose stream handler writes and flushes once per request: at INFO that cost
about a quarter of the append throughput (bench/access_log.py). Here a request costs one
f-string and a list append; the lines of FLUSH_SECONDS go to stderr in one write, each in
the same shape as the log's own lines.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from aiohttp import web

# How long a line may wait for its batch's write.
FLUSH_SECONDS = 0.2
MAX_PENDING_LINES = 10_000


class AccessLog:
    """The pending lines of one server and the timer that writes them; event-loop thread only."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""

    def record(self, request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> None:
        """Queue the line of one answered request."""
        now = time.time()
        whole = int(now)
        if whole != self._second:
            self._second, self._stamp = whole, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole))
        version = request.version
        self._lines.append(
            f"{self._stamp},{int(now % 1 * 1000):03d} INFO logserver.access: {request.remote} "
            f'"{request.method} {request.path_qs} HTTP/{version.major}.{version.minor}" '
            f"{response.status} {response.body_length} {seconds:.6f}\n"
        )
        if len(self._lines) >= MAX_PENDING_LINES:
            self.flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write every pending line now."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._lines:
            return
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write("".join(self._lines))
        stream.flush()
        self._lines.clear()

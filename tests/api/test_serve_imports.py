"""`logserver serve` loads no client library: httpx and rich cost its start-up a quarter second."""

from __future__ import annotations

import subprocess
import sys

CLIENT_ONLY = ("httpx", "rich", "logserver.client", "logserver.client_commands")


def test_the_command_line_loads_the_client_only_for_client_commands() -> None:
    probe = (
        "import sys; from logserver.cli import build_parser; build_parser({}); "
        f"print(','.join(m for m in {CLIENT_ONLY!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""
    # And a client command still finds its handler (it imports them when it runs).
    streams = subprocess.run(
        [sys.executable, "-m", "logserver", "streams", "--url", "http://127.0.0.1:9", "--timeout", "0.5"],
        capture_output=True,
        text=True,
    )
    assert streams.returncode == 3, streams.stderr  # EXIT_UNREACHABLE: the command ran

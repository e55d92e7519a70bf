"""The OpenAPI document against the server it describes: schemathesis (`--checks all`) drives a real
`logserver serve` subprocess on a real socket with the repository's schemathesis.toml, and must find
no failure: no 5xx, no undocumented status, no schema-valid request refused, no schema-violating
request accepted, every body as its schema says.

Bounded to finish in a few minutes on two cores: few examples per operation, and consume's long-poll
`wait` pinned to 0 (every case would otherwise wait up to 30 s; tests/api covers the long-poll).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import PASSWORD, USER, ServerProcess

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLES_PER_OPERATION = 15
# Consume long-polls up to `wait` seconds; the bounded run asks for none.
BOUNDED_RUN = """
[[operations]]
include-operation-id = "consumeEvents"
parameters = { "query.wait" = 0 }
"""

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_failure(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = server_factory(fsync="interval").start()
    config = tmp_path / "schemathesis.toml"
    config.write_text((REPOSITORY / "schemathesis.toml").read_text() + BOUNDED_RUN)
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run"]
    command += [f"{server.url}/api/v1/openapi.json", "--checks", "all", "--auth", f"{USER}:{PASSWORD}"]
    command += ["--max-examples", str(EXAMPLES_PER_OPERATION), "--request-timeout", "20", "--workers", "1"]
    command += ["--seed", "1"]  # the same cases each run: a failure here reproduces
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-20000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts is not None and int(counts[1]) > 0 and counts[1] == counts[2], report[-5000:]
    assert "internal error" not in server.log(), server.log()[-5000:]

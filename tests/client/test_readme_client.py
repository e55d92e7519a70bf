"""The README's Client section, run as written (the Python example, then the command-line one)
against a real server with the walkthrough's user."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import orjson

from logserver.auth import add_user
from logserver.client import Client, Unauthorized

from .conftest import MakeServer, ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(marker: str, language: str) -> str:
    match = re.search(
        rf"<!-- {marker} -->\n```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL
    )
    assert match, f"README.md lost its <!-- {marker} --> block"
    return match[1]


def as_run_here(script: str, server: ServerProcess) -> str:
    script = script.replace("http://127.0.0.1:8080", server.url)
    return script.replace(".venv/bin/logserver", f"{shlex.quote(sys.executable)} -m logserver")


def with_demo_user(server: ServerProcess) -> None:
    """Add the walkthrough's user to the running server, and wait until it knows it."""
    add_user(server.directory / "users", "demo", "demo-password")
    deadline = time.monotonic() + 10
    with Client(server.url, "demo", "demo-password") as client:
        while True:
            try:
                client.streams()
                return
            except Unauthorized:
                assert time.monotonic() < deadline, "the server never picked up the new user"
                time.sleep(0.1)


def test_readme_client_examples_run_as_written(make_server: MakeServer, tmp_path: Path) -> None:
    server = make_server()
    with_demo_user(server)
    python = subprocess.run(
        [sys.executable, "-c", as_run_here(readme_block("client", "python"), server)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert python.returncode == 0, python.stderr
    *printed, consumers = python.stdout.splitlines()
    assert printed == [f"{n + 1} {{'orderId': {n}}}" for n in range(3)]
    [lag] = ast.literal_eval(consumers)
    assert (lag["consumer"], lag["acknowledged"], lag["behind"]) == ("invoicer", 3, 0)

    shell = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", as_run_here(readme_block("client-cli", "sh"), server)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert shell.returncode == 0, shell.stderr
    assert "produced 2,000 events to 'Webshop Orders' in 20 batches" in shell.stderr
    lines = shell.stdout.splitlines()
    assert lines[0].strip() == "2000"  # consumed and acked
    tailed = [orjson.loads(line) for line in lines[1:5]]
    assert [event["sequence"] for event in tailed] == [2000, 2001, 2002, 2003]
    assert tailed[-1]["payload"] == {"orderId": 2000}
    assert lines[5].split()[:2] == ["STREAM", "OWNER"]
    assert lines[6].split()[-6:-4] == ["webshop", "2003"]

"""The newcomer's stumbles of issue 13, each held: generated passwords, the help table, boolean
switches, `user add` at a real terminal (a pty), the start-up line, the Dockerfile, the process
metrics, the dependencies and `make run`'s install."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from logserver.auth import generated_password, read_users, verify_password
from logserver.cli import _options_epilog
from logserver.config import SERVE_OPTIONS

from .conftest import ApiTestServer
from .http_calls import AUTH, Client, expect
from .test_cli import serve_config

REPOSITORY = Path(__file__).resolve().parents[2]


def test_generated_passwords_never_start_with_a_dash() -> None:
    # token_urlsafe starts with '-' one time in 64: 5000 draws would show it about 78 times.
    passwords = [generated_password() for _ in range(5000)]
    assert not [p for p in passwords if p.startswith("-")]
    assert len(set(passwords)) == 5000 and all(len(p) == 24 for p in passwords)


def test_help_columns_never_run_together() -> None:
    rows = _options_epilog().splitlines()[1:]
    assert len(rows) == len(SERVE_OPTIONS)
    for row, option in zip(rows, SERVE_OPTIONS, strict=True):
        assert re.fullmatch(rf"  {re.escape(option.flag)}  +{re.escape(option.env)}  +default .*", row), row


def test_boolean_options_are_switches_with_a_boolean_environment_value() -> None:
    switches = [option for option in SERVE_OPTIONS if option.switch]
    assert {"public_metrics", "access_log"} <= {option.field for option in switches}
    for option in switches:
        assert getattr(serve_config([option.flag], {}), option.field) is True
        assert getattr(serve_config([], {option.env: "true"}), option.field) is True
        assert getattr(serve_config([], {option.env: "1"}), option.field) is True
        assert getattr(serve_config([option.flag, "false"], {option.env: "1"}), option.field) is False


def _at_a_terminal(argv: list[str], keystrokes: list[bytes]) -> tuple[int, str]:
    """Run logserver with a pty as its controlling terminal, typing each of `keystrokes` after the
    next prompt (a line ending in ': '); its exit status and everything it wrote."""
    pid, master = pty.fork()
    if pid == 0:  # the child: the pty is its terminal
        os.execv(sys.executable, [sys.executable, "-m", "logserver", *argv])
    output = b""
    pending = list(keystrokes)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if pending and output.rstrip(b" ").endswith(b":"):
                os.write(master, pending.pop(0))
                output += b"\n"  # so the same prompt is not answered twice
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_user_add_at_a_terminal_asks_twice(tmp_path: Path) -> None:
    users = tmp_path / "users"
    code, output = _at_a_terminal(
        ["user", "add", "carol", "--users-file", str(users)], [b"secret one\r", b"secret one\r"]
    )
    assert code == 0, output
    assert "password:" in output and "again:" in output
    assert verify_password("secret one", read_users(users)["carol"].password_hash)


def test_user_add_at_a_terminal_refuses_different_passwords(tmp_path: Path) -> None:
    users = tmp_path / "users"
    code, output = _at_a_terminal(["user", "add", "carol", "--users-file", str(users)], [b"one\r", b"two\r"])
    assert code == 1 and "the passwords differ" in output, output
    assert not users.exists()


def test_ctrl_d_at_the_password_prompt_ends_cleanly(tmp_path: Path) -> None:
    users = tmp_path / "users"
    code, output = _at_a_terminal(["user", "add", "carol", "--users-file", str(users)], [b"\x04"])
    assert code == 1, output
    assert "no password given; nothing changed" in output and "Traceback" not in output, output
    assert not users.exists()


def test_empty_stdin_is_no_password(tmp_path: Path) -> None:
    users = tmp_path / "users"
    result = subprocess.run(
        [sys.executable, "-m", "logserver", "user", "add", "dave", "--users-file", str(users)],
        input="",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "no password on stdin" in result.stderr, result.stderr
    assert not users.exists()


def test_the_start_up_line_names_the_data_dir(tmp_path: Path) -> None:
    from tests.server.conftest import ServerProcess

    server = ServerProcess(tmp_path / "data").start()
    try:
        line = next(line for line in server.log().splitlines() if "listening on" in line)
        assert f"(data dir {tmp_path / 'data'}, fsync always, 0 streams)" in line, line
    finally:
        server.stop()


def test_the_image_takes_its_settings_from_the_environment() -> None:
    dockerfile = (REPOSITORY / "Dockerfile").read_text()
    assert 'CMD ["logserver", "serve"]' in dockerfile
    assert "LOGSERVER_HOST=0.0.0.0" in dockerfile and "LOGSERVER_DATA_DIR=/data" in dockerfile
    command = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    assert "--" not in command


async def test_metrics_include_the_process_metrics(client: Client) -> None:
    assert isinstance(client.server, ApiTestServer)
    text = await (await client.get("/metrics", headers=AUTH)).text()
    values = dict(
        line.split(" ", 1) for line in text.splitlines() if line.startswith("process_") and " " in line
    )
    assert float(values["process_cpu_seconds_total"]) > 0
    assert float(values["process_resident_memory_bytes"]) > 10_000_000  # a Python process, at least
    assert int(values["process_open_fds"]) >= 3
    started = float(values["process_start_time_seconds"])
    assert time.time() - 3600 < started <= time.time()  # the test process started within the hour
    assert "# TYPE process_cpu_seconds_total counter" in text
    await expect(await client.get("/health"), 200)


def test_aiofiles_is_not_a_dependency_and_nothing_imports_it() -> None:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("aiofiles")]
    sources = (REPOSITORY / "logserver").rglob("*.py")
    assert not [path for path in sources if "aiofiles" in path.read_text()]


@pytest.mark.parametrize(("target", "extras"), [("run", "'.[speed]'"), ("test", "'.[test,speed]'")])
def test_make_run_installs_only_what_serving_needs(target: str, extras: str) -> None:
    """`make -n` prints what a target would run on a fresh clone (no .venv yet)."""
    plan = subprocess.run(
        ["make", "-n", "-B", target, "VENV=/nonexistent-venv"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line for line in plan.splitlines() if "pip install" in line]
    assert installs and installs[-1].endswith(extras), installs
    if target == "run":
        assert not [line for line in installs if "test" in line], installs

"""The client commands, each run as `python -m logserver ...` in a subprocess against a live server:
JSON lines on stdout, messages on stderr, exit codes that say what failed."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import orjson
import pytest

from logserver.auth import read_users
from logserver.client import Client

from .conftest import PASSWORD, USER, ServerProcess, event

ENV_WITHOUT_LOGSERVER = {k: v for k, v in os.environ.items() if not k.startswith("LOGSERVER_")}


def cli_env(server: ServerProcess, **more: str) -> dict[str, str]:
    return {
        **ENV_WITHOUT_LOGSERVER,
        "LOGSERVER_URL": server.url,
        "LOGSERVER_USER": USER,
        "LOGSERVER_PASSWORD": PASSWORD,
        **more,
    }


def run(
    server: ServerProcess, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logserver", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=cli_env(server, **env),
        timeout=60,
        check=False,
    )


def json_lines(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines()]


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "orders.jsonl"
    path.write_text("".join(orjson.dumps({"orderId": n}).decode() + "\n" for n in range(250)) + "\n")
    return path


def test_produce_a_file_in_batches_each_with_its_own_key(
    server: ServerProcess, client: Client, stream: str, events_file: Path
) -> None:
    result = run(
        server,
        "produce",
        stream,
        "--producer",
        "shop",
        "--event-name",
        "OrderPlaced",
        "--file",
        str(events_file),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert f"produced 250 events to {stream!r} in 3 batches" in result.stderr
    stored = list(client.iter_history(stream))
    assert [e.payload for e in stored] == [{"orderId": n} for n in range(250)]
    assert {e.name for e in stored} == {"OrderPlaced"}
    assert len({e["idempotencyKey"] for e in stored}) == 3


def test_produce_whole_events_from_stdin_and_arguments(
    server: ServerProcess, client: Client, stream: str
) -> None:
    lines = "".join(orjson.dumps(event("OrderPaid", n=n)).decode() + "\n" for n in range(3))
    assert run(server, "produce", stream, "--producer", "shop", stdin=lines).returncode == 0
    one = orjson.dumps(event("Refund", n=9)).decode()
    result = run(server, "produce", stream, "--producer", "shop", one, one)
    assert result.returncode == 0, result.stderr
    assert [e.name for e in client.iter_history(stream)] == ["OrderPaid"] * 3 + ["Refund"] * 2


def test_produce_stops_at_a_line_that_is_not_json(server: ServerProcess, client: Client, stream: str) -> None:
    lines = '{"n": 1}\n{"n": 2}\nnot json\n{"n": 4}\n'
    result = run(
        server, "produce", stream, "--producer", "shop", "--event-name", "E", "--batch-size", "2", stdin=lines
    )
    assert result.returncode == 2
    assert "line 3: not valid JSON" in result.stderr
    assert [e.payload for e in client.iter_history(stream)] == [{"n": 1}, {"n": 2}]  # the batch before it


def test_produce_reports_a_rejected_batch_by_its_lines(server: ServerProcess, stream: str) -> None:
    lines = orjson.dumps(event()).decode() + "\n" + '{"event": {"version": 1}}\n'
    result = run(server, "produce", stream, "--producer", "shop", stdin=lines)
    assert result.returncode == 1
    assert "lines 1-2: Bad Request - events[1].event.name" in result.stderr


def test_consume_prints_json_lines_and_acks_what_it_printed(
    server: ServerProcess, client: Client, stream: str
) -> None:
    ids = client.append_batch(stream, [event(n=n) for n in range(150)], producer="shop")
    peek = run(
        server, "consume", stream, "--event-name", "OrderPlaced", "--consumer", "mailer", "--limit", "2"
    )
    assert peek.returncode == 0, peek.stderr
    assert [e["eventId"] for e in json_lines(peek.stdout)] == ids[:2]
    limited = run(
        server,
        "consume",
        stream,
        "--event-name",
        "OrderPlaced",
        "--consumer",
        "mailer",
        "--ack",
        "--limit",
        "120",
    )
    assert [e["eventId"] for e in json_lines(limited.stdout)] == ids[:120]
    rest = run(server, "consume", stream, "--event-name", "OrderPlaced", "--consumer", "mailer", "--ack")
    assert [e["eventId"] for e in json_lines(rest.stdout)] == ids[120:]
    again = run(server, "consume", stream, "--event-name", "OrderPlaced", "--consumer", "mailer", "--ack")
    assert (again.returncode, again.stdout) == (0, "")


def test_consume_follow_waits_for_new_events(server: ServerProcess, client: Client, stream: str) -> None:
    client.append(stream, event(n=0), producer="shop")
    command = [sys.executable, "-m", "logserver", "consume", stream, "--event-name", "OrderPlaced"]
    command += ["--consumer", "mailer", "--ack", "--follow", "--limit", "3"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=cli_env(server)) as follower:
        assert follower.stdout is not None
        [first] = read_lines(follower.stdout, 1)
        later = client.append_batch(stream, [event(n=1), event(n=2)], producer="shop")
        rest = read_lines(follower.stdout, 2)
        assert follower.wait(timeout=30) == 0
    assert [first["payload"], *(e["payload"] for e in rest)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert rest[-1]["eventId"] == later[-1]
    assert client.consume(stream, "OrderPlaced", "mailer") == []


def test_consume_follow_without_ack_is_refused(server: ServerProcess, stream: str) -> None:
    result = run(server, "consume", stream, "--event-name", "E", "--consumer", "c", "--follow")
    assert result.returncode == 2
    assert "--follow needs --ack" in result.stderr


def test_tail_prints_history_from_where_asked(server: ServerProcess, client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=n) for n in range(5)] + [event("Other")], producer="shop")
    everything = run(server, "tail", stream, "--from-beginning")
    assert [e["eventId"] for e in json_lines(everything.stdout)] == ids
    assert [e["eventId"] for e in json_lines(run(server, "tail", stream, "--from", "4").stdout)] == ids[3:]
    assert [
        e["eventId"] for e in json_lines(run(server, "tail", stream, "--from-sequence", "6").stdout)
    ] == ids[5:]
    named = run(server, "tail", stream, "--event-name", "Other", "--from", "2000-01-01T00:00:00Z")
    assert [e["eventId"] for e in json_lines(named.stdout)] == ids[5:]
    assert run(server, "tail", stream, "--from", "end").stdout == ""
    assert run(server, "tail", stream, "--from", "yesterday").returncode == 2


def read_lines(stream: IO[str], count: int) -> list[dict[str, object]]:
    """`count` JSON lines from a child's stdout, or fewer if it has not printed them within 30 s."""
    lines: list[dict[str, object]] = []

    def read() -> None:
        while len(lines) < count and (line := stream.readline()):
            lines.append(orjson.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    return lines


def test_tail_follow_prints_new_events(server: ServerProcess, client: Client, stream: str) -> None:
    client.append(stream, event(n=0), producer="shop")
    command = [sys.executable, "-m", "logserver", "tail", stream, "-f", "--from", "2"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=cli_env(server)) as tail:
        assert tail.stdout is not None
        try:
            later = client.append_batch(stream, [event(n=1), event(n=2)], producer="shop")
            lines = read_lines(tail.stdout, len(later))
        finally:
            tail.terminate()
    assert [e["eventId"] for e in lines] == later


def test_streams_and_consumers_as_tables_and_json(server: ServerProcess, client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=n) for n in range(4)], producer="shop")
    client.ack(stream, "mailer", ids[0])
    table = run(server, "streams")
    assert table.returncode == 0
    header = table.stdout.splitlines()[0].split()
    assert header[:3] == ["STREAM", "OWNER", "EVENTS"]
    assert stream in table.stdout
    listed = {s["name"]: s for s in json_lines(run(server, "streams", "--json").stdout)}
    assert listed[stream]["eventCount"] == 4
    lag = run(server, "consumers", stream)
    assert "CONSUMER" in lag.stdout and "mailer" in lag.stdout
    [row] = json_lines(run(server, "consumers", stream, "--json").stdout)
    assert (row["consumer"], row["acknowledged"], row["behind"]) == ("mailer", 1, 3)


def test_seek_replays(server: ServerProcess, client: Client, stream: str) -> None:
    ids = client.append_batch(stream, [event(n=n) for n in range(3)], producer="shop")
    client.ack_many(stream, "mailer", ids)
    result = run(server, "seek", stream, "mailer", "--sequence", "2")
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["consumer"] == "mailer"
    assert [e.id for e in client.consume(stream, "OrderPlaced", "mailer")] == ids[1:]
    assert run(server, "seek", stream, "mailer", "--to", "start").returncode == 0
    assert len(client.consume(stream, "OrderPlaced", "mailer")) == 3


def test_exit_codes_say_what_failed(server: ServerProcess, client: Client, stream: str) -> None:
    client.append(stream, event(), producer="shop")
    missing = run(server, "consumers", stream + " missing")
    assert (missing.returncode, missing.stderr.strip()) == (
        5,
        f"logserver: Not Found - stream '{stream} missing' does not exist",
    )
    assert run(server, "streams", "--password", "wrong").returncode == 4
    assert run(server, "produce", stream, "--producer", "intruder", "--event-name", "E", "{}").returncode == 6
    unreachable = run(server, "streams", "--url", "http://127.0.0.1:9", "--timeout", "1")
    assert unreachable.returncode == 3
    assert "Connect" in unreachable.stderr
    without_password = run(server, "streams", LOGSERVER_PASSWORD="")
    assert without_password.returncode == 2  # stdin is no terminal to ask on
    assert "no password" in without_password.stderr


def run_on_a_terminal(
    args: list[str], env: dict[str, str], answer: tuple[bytes, bytes] | None = None
) -> tuple[int, str]:
    """Run a command with stdin, stdout and stderr on a new pseudo-terminal; its exit code and
    output. `answer` (prompt, typed): type once the prompt shows (getpass flushes earlier input)."""
    controller, terminal = os.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "logserver", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        start_new_session=True,  # no controlling terminal: getpass reads the pty as stdin
    ) as process:
        os.close(terminal)
        output = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if answer is not None and answer[0] in output:
                os.write(controller, answer[1])
                answer = None
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        else:
            process.kill()
        code = process.wait(timeout=60)
    os.close(controller)
    return code, output.decode(errors="replace")


def test_password_prompt_on_a_terminal(server: ServerProcess, stream: str) -> None:
    env = {**ENV_WITHOUT_LOGSERVER, "LOGSERVER_URL": server.url}
    answer = (b"password for", f"{PASSWORD}\n".encode())
    code, output = run_on_a_terminal(["streams", "--json", "--user", USER], env, answer)
    assert code == 0, output
    assert f"password for {USER}:" in output


def test_progress_bar_when_a_file_is_read_to_a_terminal(
    server: ServerProcess, client: Client, stream: str, events_file: Path
) -> None:
    args = [
        "produce",
        stream,
        "--producer",
        "shop",
        "--event-name",
        "OrderPlaced",
        "--file",
        str(events_file),
    ]
    code, output = run_on_a_terminal(args, cli_env(server))
    assert code == 0, output
    assert "100%" in output and "events/s" in output
    assert client.stream(stream)["eventCount"] == 250


def test_user_list_and_remove(tmp_path: Path, server: ServerProcess) -> None:
    users = tmp_path / "users"
    for name, *rights in (("alice",), ("shop", "--produce", "orders-*")):
        added = run(server, "user", "add", name, "--password", "pw", "--users-file", str(users), *rights)
        assert added.returncode == 0, added.stderr
    listing = run(server, "user", "list", "--users-file", str(users))
    assert listing.stdout.splitlines() == [
        "alice\tfull access",
        'shop\t{"produce":["orders-*"],"consume":[],"admin":[]}',
    ]
    assert run(server, "user", "remove", "alice", "--users-file", str(users)).returncode == 0
    assert list(read_users(users)) == ["shop"]
    gone = run(server, "user", "remove", "alice", "--users-file", str(users))
    assert gone.returncode == 1
    assert "no user 'alice'" in gone.stderr

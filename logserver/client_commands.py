"""What the client commands do (parsed by client_cli.py): a running server through the client.
JSON lines on stdout, messages on stderr, and exit codes that say what failed.

Imported only when a client command runs: httpx and rich cost `logserver serve` a quarter of a
second of start-up otherwise.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskProgressColumn, TimeElapsedColumn
from rich.text import Text

from logserver.client import (
    ApiError,
    Client,
    Conflict,
    ConnectionFailed,
    Event,
    Forbidden,
    LogserverError,
    NotFound,
    StreamLocked,
    Unauthorized,
)
from logserver.client_cli import DEFAULT_BATCH, Handler

EXIT_OK = 0
EXIT_SERVER_ERROR = 1  # the server refused or failed the request (any status not listed below)
EXIT_USAGE = 2  # bad arguments or input (argparse uses 2 as well)
EXIT_UNREACHABLE = 3  # no connection to the server
EXIT_AUTH = 4  # 401 or 403
EXIT_NOT_FOUND = 5  # 404: no such stream or event
EXIT_CONFLICT = 6  # 409 or 423: an expected sequence, the stream limit, another owner
EXIT_INTERRUPTED = 130  # Ctrl-C

FOLLOW_WAIT_SECONDS = 30.0


class UsageError(Exception):
    """Input the command cannot use (bad JSON line, conflicting options); exit code 2."""


def _guarded(command: Callable[[argparse.Namespace], int]) -> Handler:
    """`command` with every failure turned into a message on stderr and its exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except UsageError as exc:
            return _fail(str(exc), EXIT_USAGE)
        except LogserverError as exc:
            return _fail(exc.message, exit_code(exc))
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader went away (`| head`): nothing more to say, and nothing to flush.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK

    return run


def _fail(message: str, code: int) -> int:
    print(f"logserver: {message}", file=sys.stderr)
    return code


def exit_code(error: LogserverError) -> int:
    """The exit code that names what failed."""
    if isinstance(error, ConnectionFailed):
        return EXIT_UNREACHABLE
    if isinstance(error, Unauthorized | Forbidden):
        return EXIT_AUTH
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, Conflict | StreamLocked):
        return EXIT_CONFLICT
    return EXIT_SERVER_ERROR


def _client(args: argparse.Namespace) -> Client:
    """A client from --url/--user/--password, the LOGSERVER_* variables, or a password prompt."""
    user = args.user if args.user is not None else os.environ.get("LOGSERVER_USER") or None
    password = args.password if args.password is not None else os.environ.get("LOGSERVER_PASSWORD") or None
    if user is not None and password is None:
        if not sys.stdin.isatty():
            raise UsageError("no password: give --password, set LOGSERVER_PASSWORD or run on a terminal")
        password = getpass.getpass(f"password for {user}: ")
    return Client(args.url, user, password, timeout=args.timeout)


def _print_json(item: Any) -> None:
    sys.stdout.write(orjson.dumps(item).decode() + "\n")


@dataclass(frozen=True)
class _Line:
    """One input event and where it came from (for messages)."""

    number: int
    event: dict[str, Any]


def _input_lines(args: argparse.Namespace) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank input: the arguments, --file, or stdin."""
    if args.file is not None:
        with args.file.open(encoding="utf-8") as file:
            yield from _numbered(file)
    else:
        yield from _numbered(args.events or sys.stdin)


def _numbered(source: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, text in enumerate(source, start=1):
        if text.strip():
            yield number, text


def _parse_events(args: argparse.Namespace, lines: Iterable[tuple[int, str]]) -> Iterator[_Line]:
    """Each input line as an event body (wrapped as a payload with --event-name)."""
    for number, text in lines:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise UsageError(f"line {number}: not valid JSON") from None
        if not isinstance(value, dict):
            raise UsageError(f"line {number}: not a JSON object")
        if args.event_name is not None:
            value = {"event": {"name": args.event_name, "version": args.event_version}, "payload": value}
        yield _Line(number, value)


def _batches(lines: Iterable[_Line], size: int) -> Iterator[list[_Line]]:
    batch: list[_Line] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _RateColumn(ProgressColumn):
    """events/s of a progress task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} events/s")


def _progress(args: argparse.Namespace) -> Progress | None:
    """A progress bar when reading --file with stderr on a terminal, else None."""
    if args.file is None or not sys.stderr.isatty():
        return None
    return Progress(
        BarColumn(),
        TaskProgressColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
    )


def _count_lines(path: Path) -> int:
    with path.open("rb") as file:
        return sum(1 for line in file if line.strip())


def _produce(args: argparse.Namespace) -> int:
    if not 1 <= args.batch_size <= 1000:
        raise UsageError("--batch-size must be between 1 and 1000")
    if args.events and args.file is not None:
        raise UsageError("give events as arguments or --file, not both")
    started = time.monotonic()
    sent = batches = 0
    progress = _progress(args)
    with _client(args) as client, progress or nullcontext():
        task = None if progress is None else progress.add_task("produce", total=_count_lines(args.file))
        for batch in _batches(_parse_events(args, _input_lines(args)), args.batch_size):
            try:
                client.append_batch(args.stream, [line.event for line in batch], producer=args.producer)
            except ApiError as exc:
                exc.message = f"lines {batch[0].number}-{batch[-1].number}: {exc.message} ({sent:,} sent)"
                raise
            sent += len(batch)
            batches += 1
            if progress is not None and task is not None:
                progress.advance(task, len(batch))
    seconds = time.monotonic() - started
    rate = sent / seconds if seconds else 0.0
    print(
        f"logserver: produced {sent:,} events to {args.stream!r} in {batches:,} batches, "
        f"{seconds:.2f} s ({rate:,.0f} events/s)",
        file=sys.stderr,
    )
    return EXIT_OK


def _consume(args: argparse.Namespace) -> int:
    if args.follow and not args.ack:
        raise UsageError("--follow needs --ack (unacknowledged events come back); `tail -f` only reads")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with _client(args) as client:
        if not args.ack:
            return _consume_once(client, args)
        return _consume_acking(client, args)


def _consume_once(client: Client, args: argparse.Namespace) -> int:
    """One request: print what it returns."""
    limit = args.limit or 10
    wait = args.wait or 0
    if args.ack_wait is None:
        events = client.consume(args.stream, args.event_name, args.consumer, limit=limit, wait=wait)
    else:
        events = client.consume_leased(
            args.stream, args.event_name, args.consumer, args.ack_wait, limit=limit, wait=wait
        )
    for event in events:
        _print_json(event)
    return EXIT_OK


def _consume_acking(client: Client, args: argparse.Namespace) -> int:
    """Print and acknowledge, until none is left (or for ever with --follow), at most --limit."""
    wait = args.wait if args.wait is not None else (FOLLOW_WAIT_SECONDS if args.follow else 0.0)
    batch = min(args.limit or DEFAULT_BATCH, DEFAULT_BATCH)
    printed = 0
    subscription = client.subscribe(
        args.stream,
        args.event_name,
        args.consumer,
        batch=batch,
        wait=wait,
        ack_wait=args.ack_wait,
        stop_when_idle=not args.follow,
    )
    with subscription as events:
        for event in events:
            _print_json(event)
            sys.stdout.flush()  # printed before it is acked
            printed += 1
            if printed == args.limit:
                break
    return EXIT_OK


def _start_sequence(client: Client, args: argparse.Namespace) -> int:
    """The sequence `tail` begins at: --from start|end|SEQ|TIME."""
    start = args.start or ("end" if args.follow else "start")
    if start == "start":
        return 1
    if start == "end":
        return int(client.stream(args.stream)["lastSequence"]) + 1
    if start.isdigit():
        return max(1, int(start))
    try:
        page = client.history(args.stream, from_time=start, limit=1)
    except ApiError as exc:
        if exc.status == 400:
            raise UsageError(f"--from {start!r}: not start, end, a sequence or an RFC 3339 time") from None
        raise
    if page.events:
        return page.events[0].sequence
    return int(client.stream(args.stream)["lastSequence"]) + 1


def _tail(args: argparse.Namespace) -> int:
    with _client(args) as client:
        start = _start_sequence(client, args)
        events: Iterable[Event]
        if args.follow:
            events = client.follow(args.stream, event_name=args.event_name, from_sequence=start)
        else:
            events = client.iter_history(args.stream, from_sequence=start, event_name=args.event_name)
        for event in events:
            _print_json(event)
            sys.stdout.flush()
    return EXIT_OK


def _table(columns: list[tuple[str, str]], rows: list[dict[str, Any]]) -> None:
    """Print `rows` as aligned columns (header, key) on stdout; never cut, whatever the width."""
    cells = [[header for header, _ in columns]]
    cells += [["" if row.get(key) is None else f"{row[key]}" for _, key in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        sys.stdout.write(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
        sys.stdout.write("\n")


def _listing(rows: list[dict[str, Any]], as_json: bool, columns: list[tuple[str, str]]) -> int:
    if as_json:
        for row in rows:
            _print_json(row)
    else:
        _table(columns, rows)
    return EXIT_OK


def _streams(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = client.streams()
    columns = [
        ("STREAM", "name"),
        ("OWNER", "owner"),
        ("EVENTS", "eventCount"),
        ("BYTES", "bytes"),
        ("FIRST", "firstSequence"),
        ("LAST", "lastSequence"),
        ("LAST APPEND", "lastAppendAt"),
    ]
    return _listing(rows, args.json, columns)


def _consumers(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = client.consumers(args.stream)
    columns = [
        ("CONSUMER", "consumer"),
        ("EVENT NAME", "eventName"),
        ("POSITION", "position"),
        ("ACKED", "acknowledged"),
        ("BEHIND", "behind"),
        ("CONSUMED %", "consumedPercentage"),
    ]
    return _listing(rows, args.json, columns)


def _seek(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.seek(
            args.stream,
            args.consumer,
            to=args.to,
            sequence=args.sequence,
            time=args.time,
            event_name=args.event_name,
        )
    _print_json(answer)
    return EXIT_OK


# command name (client_cli.add_commands) -> its handler, each failure turned into an exit code
HANDLERS: dict[str, Handler] = {
    name: _guarded(handler)
    for name, handler in {
        "produce": _produce,
        "consume": _consume,
        "tail": _tail,
        "streams": _streams,
        "consumers": _consumers,
        "seek": _seek,
    }.items()
}

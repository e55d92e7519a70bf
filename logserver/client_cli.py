"""`logserver produce | consume | tail | streams | consumers | seek`: the client commands' arguments.

What they do is client_commands.py, imported when one of them runs (so `serve` never loads httpx).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path

DEFAULT_BATCH = 100

Handler = Callable[[argparse.Namespace], int]


def _connection_parent() -> argparse.ArgumentParser:
    """The options every client command shares."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument("--url", help="server URL [env LOGSERVER_URL, default http://127.0.0.1:8080]")
    group.add_argument("--user", help="user name [env LOGSERVER_USER]")
    group.add_argument(
        "--password", help="password [env LOGSERVER_PASSWORD; asked for on a terminal when absent]"
    )
    group.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    return parent


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the client subcommands on `commands`; each sets `client_command` to its handler."""
    parent = [_connection_parent()]
    produce = commands.add_parser(
        "produce",
        parents=parent,
        help="append JSON events from arguments, a file or stdin",
        description="Append events, one JSON object per argument or per line of --file or stdin, in "
        "batches (each with its own Idempotency-Key, so a retried batch is stored once). With "
        "--event-name each line is the payload of an event of that name; without it each line "
        "is a whole event body. A progress bar shows when --file is read with stderr on a terminal.",
    )
    produce.add_argument("stream", metavar="STREAM")
    produce.add_argument("events", nargs="*", metavar="JSON", help="events (instead of --file or stdin)")
    produce.add_argument("--producer", required=True, help="the X-Producer-ID (the stream's owner)")
    produce.add_argument("--event-name", help="wrap each line as the payload of an event of this name")
    produce.add_argument("--event-version", type=int, default=1, help="event.version with --event-name")
    produce.add_argument("--file", type=Path, help="read events from this file, one JSON object a line")
    produce.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="events per request (100)")

    consume = commands.add_parser(
        "consume",
        parents=parent,
        help="print a consumer's unacknowledged events as JSON lines",
        description="Print up to --limit unacknowledged events as JSON lines. Without --ack one "
        "request; with --ack every printed event is acknowledged and reading goes on until none "
        "is left (or, with --follow, waits for new ones until Ctrl-C or --limit).",
    )
    consume.add_argument("stream", metavar="STREAM")
    consume.add_argument("--event-name", required=True, help="the event name to consume")
    consume.add_argument("--consumer", required=True, help="the X-Consumer-ID")
    consume.add_argument("--limit", type=int, help="print at most this many (default 10 without --ack)")
    consume.add_argument("--ack", action="store_true", help="acknowledge each event once printed")
    consume.add_argument("--follow", "-f", action="store_true", help="wait for new events (needs --ack)")
    consume.add_argument("--wait", type=float, help="long-poll seconds per request (0; 30 with --follow)")
    consume.add_argument("--ack-wait", type=float, help="lease the events for this many seconds")

    tail = commands.add_parser(
        "tail",
        parents=parent,
        help="print a stream's stored events, and with -f each new one",
        description="Print stored events as JSON lines from --from on (moves no consumer); with -f "
        "keep printing new ones as they are appended (Server-Sent Events, or polling on a server "
        "without them). --from is start (the default), end (the default with -f), a sequence, or "
        "an RFC 3339 time.",
    )
    tail.add_argument("stream", metavar="STREAM")
    tail.add_argument("--event-name", help="only events of this name")
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--from", dest="start", metavar="start|end|SEQ|TIME", help="where to begin")
    start.add_argument("--from-beginning", dest="start", action="store_const", const="start")
    start.add_argument("--from-sequence", dest="start", metavar="SEQ")
    tail.add_argument("--follow", "-f", action="store_true", help="keep following new events")

    streams = commands.add_parser("streams", parents=parent, help="list the streams")
    streams.add_argument("--json", action="store_true", help="one JSON object a line instead of a table")

    consumers = commands.add_parser("consumers", parents=parent, help="list a stream's consumers and lag")
    consumers.add_argument("stream", metavar="STREAM")
    consumers.add_argument("--json", action="store_true", help="one JSON object a line instead of a table")

    seek = commands.add_parser(
        "seek",
        parents=parent,
        help="move a consumer to the start, the end, a sequence or a time",
    )
    seek.add_argument("stream", metavar="STREAM")
    seek.add_argument("consumer", metavar="CONSUMER")
    target = seek.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", choices=("start", "end"))
    target.add_argument("--sequence", type=int)
    target.add_argument("--time", help="an RFC 3339 time")
    seek.add_argument("--event-name", help="only this event name's position")
    handlers = {produce: "produce", consume: "consume", tail: "tail", streams: "streams"}
    handlers.update({consumers: "consumers", seek: "seek"})
    for subparser, handler in handlers.items():
        subparser.set_defaults(client_command=_deferred(handler))


def claim_arguments(args: argparse.Namespace, extras: list[str]) -> bool:
    """Take JSON events that follow produce's options (`produce S --producer P '{...}'`), which
    argparse leaves over once STREAM is matched; False when `extras` are not that."""
    if getattr(args, "client_command", None) is None or not hasattr(args, "events"):
        return False
    if any(extra.startswith("-") for extra in extras):
        return False
    args.events.extend(extras)
    return True


def _deferred(command: str) -> Handler:
    """The handler of `command`, imported from client_commands when it runs."""

    def run(args: argparse.Namespace) -> int:
        commands = importlib.import_module("logserver.client_commands")
        handler: Handler = commands.HANDLERS[command]
        return handler(args)

    return run

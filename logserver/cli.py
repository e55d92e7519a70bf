"""`logserver serve | user add|list|remove | check | backup`, and the client commands of client_cli.py;
every serve flag also reads a LOGSERVER_* variable."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from logserver import __version__, client_cli
from logserver.auth import (
    ACTIONS,
    FULL_ACCESS,
    Permissions,
    UsersFileError,
    add_user,
    read_users,
    remove_user,
)
from logserver.config import SERVE_OPTIONS, Option, ServerConfig, env_defaults, from_namespace
from logserver.engine import EngineError
from logserver.filestore.backup import backup
from logserver.filestore.maintenance import check_data_dir
from logserver.filestore.store import lock_data_dir
from logserver.server import serve

# The serve options `migrate` shares: where the cluster is checked, and how to log in to it.
MIGRATE_NATS_OPTIONS = (
    "nats_monitor_url",
    "nats_replicas",
    "nats_creds",
    "nats_nkey",
    "nats_token",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
)


def _options_epilog() -> str:
    """The serve options' table: flag, environment variable, default, each column two spaces wider
    than its longest entry so that none runs into the next."""
    flag_width = max(len(option.flag) for option in SERVE_OPTIONS) + 2
    env_width = max(len(option.env) for option in SERVE_OPTIONS) + 2
    lines = ["serve options (flag > environment > default):"]
    for option in SERVE_OPTIONS:
        lines.append(f"  {option.flag:<{flag_width}}{option.env:<{env_width}}default {option.default_text}")
    return "\n".join(lines)


def _add_data_dir(parser: argparse._ActionsContainer, env: dict[str, Any], help_text: str) -> None:
    """The offline commands' `--data-dir`, defaulting as `serve`'s does (LOGSERVER_DATA_DIR, data)."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        default=env.get("data_dir", ServerConfig.data_dir),
        help=help_text,
    )


def build_parser(env: dict[str, Any]) -> argparse.ArgumentParser:
    """The parser; `env` holds the parsed LOGSERVER_* values that replace the defaults."""
    parser = argparse.ArgumentParser(
        prog="logserver",
        description="HTTP event server: append JSON events to streams, consume and ack them.",
        epilog=_options_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"logserver {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_parser = commands.add_parser("serve", help="run the server in the foreground")
    for option in SERVE_OPTIONS:
        _add_option(serve_parser, option, env)

    user = commands.add_parser("user", help="manage the users file")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_commands.add_parser(
        "add",
        help="add a user or replace its password and permissions",
        description="Add a user or replace its password. A running server picks it up at once. "
        "Without --produce/--consume/--admin a new user gets full access and an existing "
        "one keeps its permissions; with any of them the user gets exactly those. Patterns "
        "are globs over stream names (* ? [abc]); quote them for the shell.",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("--password", help="the password; read from stdin when absent")
    add.add_argument(
        "--produce", action="append", metavar="PATTERN", help="may append to matching streams (repeatable)"
    )
    add.add_argument(
        "--consume",
        action="append",
        metavar="PATTERN",
        help="may read and ack matching streams (repeatable)",
    )
    add.add_argument(
        "--admin",
        action="append",
        metavar="PATTERN",
        help="may administer, produce to and consume from matching streams (repeatable)",
    )
    add.add_argument("--full-access", action="store_true", help="unrestricted, as a line without permissions")
    _users_file_options(add, env)
    listing = user_commands.add_parser("list", help="list the users and their permissions")
    _users_file_options(listing, env)
    remove = user_commands.add_parser("remove", help="remove a user (a running server drops it at once)")
    remove.add_argument("name", metavar="NAME")
    _users_file_options(remove, env)
    data_dir_help = "data directory [env LOGSERVER_DATA_DIR, default data]"
    check = commands.add_parser(
        "check",
        help="verify every file of every stream offline; --repair keeps what is intact",
        description="Read every record of every segment against the manifest, every index, meta.json "
        "and the consumer checkpoint. Exit 1 naming each damaged stream and file if damage remains. "
        "--repair takes the data dir's lock, so stop the server first.",
    )
    _add_data_dir(check, env, data_dir_help)
    check.add_argument(
        "--repair",
        action="store_true",
        help="keep every intact record, rebuild metadata and consumer state; old files to quarantine/",
    )

    backup_parser = commands.add_parser(
        "backup",
        help="copy the data dir consistently, also while the server runs",
        description="Copy the data directory to DEST (which must not exist), checkpoints before "
        "segments, and fsync the copy. Safe while the server runs.",
    )
    backup_parser.add_argument("destination", type=Path, metavar="DEST")
    _add_data_dir(backup_parser, env, data_dir_help)
    _migrate_options(commands, env, data_dir_help)
    client_cli.add_commands(commands)
    return parser


def _add_option(parser: argparse.ArgumentParser, option: Option, env: dict[str, Any]) -> None:
    """One option of the table as a flag of `parser` (its env variable replaces the default)."""
    parser.add_argument(
        option.flag,
        dest=option.field,
        type=option.parse,
        nargs="?" if option.switch else None,
        const=True if option.switch else None,
        default=env.get(option.field, option.default),
        metavar=option.metavar,
        help=f"{option.help} [env {option.env}, default {option.default_text}]",
    )


def _migrate_options(commands: Any, env: dict[str, Any], data_dir_help: str) -> None:
    """`migrate`: where the data dir is and which NATS cluster takes its streams."""
    migrate = commands.add_parser(
        "migrate",
        help="copy every stream and consumer position of a data dir into a JetStream cluster",
        description="Append every stream's events, in order and with the same owner, to the "
        "JetStream engine on the cluster, then set every consumer's position. Idempotent: a re-run "
        "appends only what is missing. Takes the data dir's lock, so stop the server first. "
        "Event ids change (the summary says how sequences map).",
    )
    migrate.add_argument("--to", required=True, metavar="URLS", help="NATS server URLs, comma-separated")
    for option in SERVE_OPTIONS:
        if option.field in MIGRATE_NATS_OPTIONS:
            _add_option(migrate, option, env)
    _add_data_dir(migrate, env, data_dir_help)


def _users_file_options(parser: argparse.ArgumentParser, env: dict[str, Any]) -> None:
    """--users-file or --data-dir: which users file a `user` action works on."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--users-file",
        type=Path,
        metavar="FILE",
        default=env.get("users_file"),
        help="users file [env LOGSERVER_USERS_FILE, default <data-dir>/users]",
    )
    _add_data_dir(
        where, env, "data directory whose users file to change [env LOGSERVER_DATA_DIR, default data]"
    )


def _check(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    lock = None
    try:
        if args.repair:
            lock = lock_data_dir(data_dir)
        reports = check_data_dir(data_dir, repair=args.repair)
    except (EngineError, OSError) as exc:
        print(f"logserver: {exc}", file=sys.stderr)
        return 1
    finally:
        if lock is not None:
            os.close(lock)
    damaged = 0
    for report in reports:
        state = "ok" if not report.problems else ("DAMAGED" if report.damaged else "repaired")
        print(f"{state:9}{report.directory.name}: {report.events} events in {report.segments} segments")
        for problem in report.problems:
            print(f"         problem: {problem}")
        for repair in report.repairs:
            print(f"         repair:  {repair}")
        for left in report.unrepaired:
            print(f"         not repaired: {left}")
        damaged += report.damaged
    print(f"{len(reports)} streams checked, {damaged} damaged")
    return 1 if damaged else 0


def _backup(args: argparse.Namespace) -> int:
    try:
        copied = backup(args.data_dir, args.destination)
    except (OSError, EngineError) as exc:
        print(f"logserver: {exc}", file=sys.stderr)
        return 1
    print(f"logserver: copied {copied:,} bytes of streams to {args.destination}", file=sys.stderr)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from logserver.migrate import migrate_data_dir

    config = ServerConfig(
        engine="jetstream",
        nats_url=args.to,
        **{field: getattr(args, field) for field in MIGRATE_NATS_OPTIONS},
    )
    try:
        config.check()
    except ValueError as exc:
        print(f"logserver: {exc}", file=sys.stderr)
        return 1
    try:
        reports = asyncio.run(migrate_data_dir(args.data_dir, config))
    except ImportError as exc:
        print(f"logserver: {exc}: pip install -e '.[jetstream]'", file=sys.stderr)
        return 1
    except (EngineError, OSError) as exc:
        print(f"logserver: migrate stopped: {exc}; a re-run resumes where it stopped", file=sys.stderr)
        return 1
    for report in reports:
        print(report.line())
    copied = sum(report.copied for report in reports)
    print(
        f"{len(reports)} streams, {copied} events appended; event ids differ on the new engine "
        "(same order; sequences the same unless a line says they shifted)"
    )
    return 1 if any(report.skipped for report in reports) else 0


def _read_password() -> str:
    """At a terminal: asked twice, unechoed (Ctrl-D or Ctrl-C gives up); else stdin's first line."""
    if sys.stdin.isatty():
        try:
            password = getpass.getpass("password: ")
            if password != getpass.getpass("again: "):
                raise ValueError("the passwords differ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)  # the prompt's line is left open
            raise ValueError("no password given; nothing changed") from None
        return password
    line = sys.stdin.readline()
    if not line:
        raise ValueError("no password on stdin; nothing changed")
    return line.rstrip("\r\n")


def _permissions(args: argparse.Namespace) -> Permissions | None:
    """The permissions `user add` was given; None to keep the user's (full access if new)."""
    patterns = {action: tuple(getattr(args, action) or ()) for action in ACTIONS}
    if args.full_access:
        if any(patterns.values()):
            raise ValueError("--full-access can't be combined with --produce, --consume or --admin")
        return FULL_ACCESS
    if not any(patterns.values()):
        return None
    if any(not pattern for listed in patterns.values() for pattern in listed):
        raise ValueError("a pattern must not be empty")
    return Permissions(patterns["produce"], patterns["consume"], patterns["admin"])


def _users_path(args: argparse.Namespace) -> Path:
    """The users file a `user` action names (--users-file, else the data dir's)."""
    users_file: Path = args.users_file or ServerConfig(data_dir=args.data_dir).users_path
    return users_file


def _user_add(args: argparse.Namespace) -> int:
    users_file = _users_path(args)
    try:
        permissions = _permissions(args)
        password = args.password if args.password is not None else _read_password()
        add_user(users_file, args.name, password, permissions)
    except (ValueError, UsersFileError, OSError) as exc:
        print(f"logserver: {exc}", file=sys.stderr)
        return 1
    print(f"logserver: user {args.name!r} saved in {users_file}", file=sys.stderr)
    return 0


def _user_list(args: argparse.Namespace) -> int:
    try:
        users = read_users(_users_path(args))
    except UsersFileError as exc:
        print(f"logserver: {exc}", file=sys.stderr)
        return 1
    for name, record in users.items():
        print(f"{name}\t{record.permissions.to_field() or 'full access'}")
    return 0


def _user_remove(args: argparse.Namespace) -> int:
    users_file = _users_path(args)
    try:
        remove_user(users_file, args.name)
    except (KeyError, UsersFileError, OSError) as exc:
        message = f"no user {args.name!r} in {users_file}" if isinstance(exc, KeyError) else exc
        print(f"logserver: {message}", file=sys.stderr)
        return 1
    print(f"logserver: user {args.name!r} removed from {users_file}", file=sys.stderr)
    return 0


def _user(args: argparse.Namespace) -> int:
    actions = {"add": _user_add, "list": _user_list, "remove": _user_remove}
    return actions[args.user_command](args)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _serve(args: argparse.Namespace) -> int:
    config = from_namespace(args)
    try:
        config.check()
    except ValueError as exc:
        print(f"logserver: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(serve(config))
    except (UsersFileError, OSError, EngineError) as exc:
        logging.getLogger("logserver").error("cannot serve: %s", exc)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        env = env_defaults(os.environ)
    except ValueError as exc:
        print(f"logserver: {exc}", file=sys.stderr)
        return 2
    parser = build_parser(env)
    args, extras = parser.parse_known_args(argv)
    if extras and not client_cli.claim_arguments(args, extras):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _serve,
        "user": _user,
        "check": _check,
        "backup": _backup,
        "migrate": _migrate,
    }
    run: Callable[[argparse.Namespace], int] = getattr(args, "client_command", None) or commands[args.command]
    return run(args)

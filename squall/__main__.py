"""The ``squall`` command.

``squall`` / ``squall run``: the processor as a child process (restarted if it
dies) and the web node in this one. ``squall web`` and ``squall processor`` run
the two parts apart; ``squall cluster`` runs several of each on this machine.
Ctrl-C or SIGTERM stops everything cleanly. ``squall chat [URL] --nick N`` is
the terminal client (docs/chat.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import socket
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from . import __version__
from .config import FIELD_HELP, Settings, load_settings
from .errors import ConfigError
from .listener import raise_open_file_limit

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="squall", description="Squall: real-time chat on Tornado."
    )
    parser.add_argument("--config", help="TOML file of settings (also SQUALL_CONFIG)")
    parser.add_argument("--version", action="version", version=f"squall {__version__}")
    commands = parser.add_subparsers(dest="command")
    for name, text in (
        ("run", "run processor and web node together (the default)"),
        ("web", "run a web node"),
        ("processor", "run a processor"),
        ("cluster", "run several web nodes and processors on this machine"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--config", help="TOML file of settings (also SQUALL_CONFIG)")
        _add_setting_flags(sub)
        if name == "cluster":
            sub.add_argument("--web", dest="web_nodes", type=int, default=2, metavar="N",
                             help="web nodes, on port, port+1, … (default: 2)")
            sub.add_argument("--processors", dest="processors", type=int, default=2, metavar="N",
                             help="processors (default: 2)")
        if name == "processor":  # `squall run` hands its child the socket it bound
            sub.add_argument("--inherited-sockets", dest="inherited_sockets",
                             default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    _add_chat_parser(commands)
    _add_setting_flags(parser)
    return parser


def _add_chat_parser(commands: Any) -> None:
    port = next(field.default for field in dataclasses.fields(Settings) if field.name == "port")
    chat = commands.add_parser("chat", help="chat in a terminal (docs/chat.md)")
    chat.add_argument("url", nargs="?", default=f"http://127.0.0.1:{port}",
                      help=f"the server's web address (default: http://127.0.0.1:{port})")
    chat.add_argument("--nick", required=True, help="your nick (a guest session, or an account with --password)")
    chat.add_argument("--password", action="store_true",
                      help="sign in to the account NICK: asks for its password (also SQUALL_CHAT_PASSWORD)")
    chat.add_argument("--room", dest="rooms", action="append", metavar="ROOM",
                      help="room to join at start; repeat for more (default: lobby)")


def _chat(args: argparse.Namespace) -> int:
    import getpass
    import os

    from .chat.commands import normalise_room

    rooms = []
    for text in args.rooms or ["lobby"]:
        room = normalise_room(text)
        if room is None:
            print(f"squall chat: not a room name: {text!r} (a–z, 0–9, _ and -, up to 64)", file=sys.stderr)
            return 2
        rooms.append(room)
    password = None
    if args.password:
        password = os.environ.get("SQUALL_CHAT_PASSWORD") or getpass.getpass(f"password for {args.nick}: ")
    from .chat.app import run_chat
    from .chat.net import SessionError, open_session, websocket_url

    try:
        websocket_url(args.url)
    except ValueError as exc:
        print(f"squall chat: {exc}", file=sys.stderr)
        return 2

    async def chat() -> int:
        try:
            session = await open_session(args.url, args.nick, password)
        except SessionError as exc:
            print(f"squall chat: {args.url} refused a session for {args.nick!r}: {exc}", file=sys.stderr)
            return 1
        await run_chat(args.url, session, rooms, password=password)
        return 0

    return asyncio.run(chat())


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        text = FIELD_HELP.get(field.name, f"default: {field.default!r}")
        if field.type == "bool":
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(flag, dest=field.name, default=argparse.SUPPRESS, help=text)
    parser.add_argument("--processor-port", dest="processor_port", default=argparse.SUPPRESS,
                        help="shorthand: the processor's port on 127.0.0.1 (sets --processor and --listen)")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k not in {"command", "config", "processor_port", "inherited_sockets", "web_nodes", "processors"}
    }
    port = getattr(args, "processor_port", None)
    if port is not None:
        overrides.setdefault("processor", f"127.0.0.1:{port}")
        overrides.setdefault("listen", f"127.0.0.1:{port}")
    return load_settings(overrides, config_file=args.config)


def _run(settings: Settings, coroutine: Coroutine[Any, Any, None]) -> None:
    if settings.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coroutine)
    else:
        asyncio.run(coroutine)


def _inherited_sockets(text: str) -> list[socket.socket]:
    sockets = [socket.socket(fileno=int(fd)) for fd in text.split(",")]
    for sock in sockets:
        sock.setblocking(False)
    return sockets


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; 0 when it stopped cleanly, 2 for settings that cannot work,
    1 when ``squall run``'s processor cannot start. A refusal is one line on
    stderr, never a traceback."""
    args = _parser().parse_args(argv)
    command = args.command or "run"
    if command == "chat":
        return _chat(args)
    try:
        settings = _settings(args)
        if command == "cluster":
            from .cluster import check_cluster

            check_cluster(settings, web=args.web_nodes, processors=args.processors)
    except ConfigError as exc:
        print(f"squall {command}: {exc}", file=sys.stderr)
        return ConfigError.exit_status
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    raise_open_file_limit()  # every connection is a file descriptor
    try:
        if command == "processor":
            from .processor.main import serve_processor

            inherited = getattr(args, "inherited_sockets", None)
            sockets = _inherited_sockets(inherited) if inherited else None
            _run(settings, serve_processor(settings, sockets=sockets))
        elif command == "web":
            from .web.main import serve_web

            _run(settings, serve_web(settings))
        elif command == "cluster":
            from .cluster import run_cluster
            from .supervisor import ProcessorFailed

            try:
                _run(settings, run_cluster(settings, web=args.web_nodes, processors=args.processors))
            except ProcessorFailed as exc:
                print(f"squall {command}: {exc}", file=sys.stderr)
                return 1
        else:
            from .supervisor import ProcessorFailed, run_all

            try:
                _run(settings, run_all(settings))
            except ProcessorFailed as exc:
                print(f"squall {command}: {exc}", file=sys.stderr)
                return 1
    except ConfigError as exc:
        print(f"squall {command}: {exc}", file=sys.stderr)
        return ConfigError.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())

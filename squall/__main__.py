"""The ``squall`` command.

``squall`` / ``squall run``: the processor as a child process (restarted if it
dies) and the web node in this one. ``squall web`` and ``squall processor`` run
the two parts apart; ``squall cluster`` runs several of each on this machine.
Ctrl-C or SIGTERM stops everything cleanly.
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
    _add_setting_flags(parser)
    return parser


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

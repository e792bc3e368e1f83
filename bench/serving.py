"""What every bench server process shares: the command line, the event loop, the ready line.

A bench server runs as ``python -m bench.<name> --port 0``. Once it listens it
prints exactly one line, ``listening <port>``, to stdout and flushes it: the
harness waits on that line instead of polling the port. It stops on SIGTERM or
SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["BACKLOG", "BENCH_SECRET", "announce", "loop_factory", "serve_main", "set_nodelay"]

# asyncio's default listen backlog is 100; the bench connects hundreds of clients
# at once, and a dropped SYN costs a one-second retransmit that would pollute
# connection-time figures.
BACKLOG = 4096
# The `secret` of every Squall the bench starts: the processor link is
# authenticated (docs/protocol.md §6), and the load generator and the processor
# ceiling prove and check the key derived from it, as a web node would.
BENCH_SECRET = "squall-bench-link-secret"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """Return a factory for the event loop called ``name`` ("uvloop" or "asyncio")."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"unknown event loop {name!r}: expected 'uvloop' or 'asyncio'")


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle off: a broadcast is many small writes that must leave at once."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def announce(port: int) -> None:
    """Tell the harness the server is ready, on the one line it waits for."""
    sys.stdout.write(f"listening {port}\n")
    sys.stdout.flush()


def serve_main(
    description: str,
    start: Callable[[argparse.Namespace], Awaitable[Any]],
    argv: list[str] | None = None,
    *,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse the common flags, run ``start(args)`` and then serve until signalled.

    ``start`` must begin listening, call :func:`announce` and return an object with
    a ``close()`` method (an ``asyncio.Server`` will do). ``add_arguments`` may add
    flags of the server's own.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()

        def _stop() -> None:
            if not stop.done():
                stop.set_result(None)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop)
        server = await start(args)
        try:
            await stop
        finally:
            server.close()

    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(run())

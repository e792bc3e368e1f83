"""``squall cluster``: several web nodes and processors on this machine, one command.

Theory of operation. It is ``squall run`` widened: every part is a child
process, started again with back-off when it dies (:class:`ChildSupervisor`).
Over TCP (``queue`` unset) the parent binds one private listening socket per
processor (port 0: the OS picks) and hands each to its child, so the addresses
the web nodes dial never change across restarts; every web node dials all of
them (``processor = A,B,…``). Through the queue (``queue = redis://…``) the
processors listen nowhere: they and the web nodes meet in Redis Streams.

Web node ``i`` listens on ``port + i``. Web nodes share nothing in this
process: with more than one, their members meet only through a shared bus, so
``bus = local`` is refused then. Every part opens the same ``database``: the
default SQLite file is safe for several processors on one machine (their commits
take turns), PostgreSQL lets them commit side by side. It is for trying the
distributed parts and for tests; production runs each part under its own
service manager (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

from .config import Settings
from .errors import ConfigError
from .processor.main import listening_sockets
from .supervisor import ChildSupervisor, ProcessorFailed
from .web.auth import load_or_create_secret
from .web.main import READY_LINE

__all__ = ["run_cluster", "MAX_WEB_NODES", "MAX_PROCESSORS"]

log = logging.getLogger("squall.cluster")

# A local cluster is for one machine: more children than this only compete for its cores.
MAX_WEB_NODES = 16
MAX_PROCESSORS = 16


def check_cluster(settings: Settings, *, web: int, processors: int) -> None:
    """Raise :class:`ConfigError` for a cluster that cannot work as asked."""
    if not 1 <= web <= MAX_WEB_NODES:
        raise ConfigError(f"--web {web}: run 1 to {MAX_WEB_NODES} web nodes")
    if not 1 <= processors <= MAX_PROCESSORS:
        raise ConfigError(f"--processors {processors}: run 1 to {MAX_PROCESSORS} processors")
    if web > 1 and settings.bus == "local":
        raise ConfigError(
            f"--web {web}: web nodes reach each other's members only through a shared bus;"
            " set --bus redis://HOST:PORT"
        )
    if web > 1 and settings.port == 0:
        raise ConfigError("--port 0: web nodes listen on port, port+1, …; give a port")


def _processor_sockets(settings: Settings, count: int) -> list[list[socket.socket]]:
    bound: list[list[socket.socket]] = []
    try:
        for _ in range(count):
            bound.append(listening_sockets(settings.replace(listen="127.0.0.1:0")))
    except BaseException:
        for sockets in bound:
            for sock in sockets:
                sock.close()
        raise
    return bound


async def run_cluster(settings: Settings, *, web: int, processors: int) -> None:
    """Run ``processors`` processors and ``web`` web nodes until SIGTERM/SIGINT.

    Raises :class:`ConfigError` for settings that cannot work and
    :class:`ProcessorFailed` when a part cannot start.
    """
    check_cluster(settings, web=web, processors=processors)
    load_or_create_secret(settings.secret, settings.data_dir)  # one secret file for every child
    by_queue = bool(settings.queue)
    sockets = [[] for _ in range(processors)] if by_queue else _processor_sockets(settings, processors)
    addresses = ",".join("127.0.0.1:%d" % group[0].getsockname()[1] for group in sockets if group)
    parts = [
        ChildSupervisor(settings.replace(listen=addresses.split(",")[i]) if not by_queue else settings, group)
        for i, group in enumerate(sockets)
    ]
    web_settings = settings if by_queue else settings.replace(processor=addresses)
    nodes = [
        ChildSupervisor(web_settings.replace(port=settings.port + i), [], command="web", ready_line=READY_LINE)
        for i in range(web)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    processors_stop, nodes_stop = asyncio.Event(), asyncio.Event()
    running = [asyncio.ensure_future(part.run(processors_stop)) for part in parts]
    try:
        # Web nodes start once every processor listens, as in `squall run`.
        if await _all_ready(parts, stop):
            running += [asyncio.ensure_future(node.run(nodes_stop)) for node in nodes]
            if await _all_ready(nodes, stop):
                log.info("cluster up: %d web nodes on ports %d-%d, %d processors (%s)", web,
                         settings.port, settings.port + web - 1, processors,
                         "through the queue" if by_queue else addresses)
                await _first(stop, *(part.failed for part in parts + nodes))
    finally:
        # Web nodes first: they drain their in-flight sends; then the processors may go.
        nodes_stop.set()
        await asyncio.gather(*running[processors:])
        processors_stop.set()
        await asyncio.gather(*running[:processors])
        for group in sockets:
            for sock in group:
                sock.close()
    for part in parts + nodes:
        if part.failed.is_set():
            raise ProcessorFailed(part.failure)


async def _all_ready(parts: list[ChildSupervisor], stop: asyncio.Event) -> bool:
    """Wait until every part has started; False if stopped or one gave up first."""
    for part in parts:
        await _first(part.listening, part.failed, stop)
        if not part.listening.is_set():
            return False
    return True


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()

"""Running a web node as a process: ``squall web --processor HOST:PORT``."""

from __future__ import annotations

import asyncio
import logging
import signal

from ..config import Settings
from ..errors import ConfigError
from ..queue import redacted_url
from .node import WebNode

__all__ = ["serve_web", "READY_LINE"]

# The line a web node prints once it listens (`squall cluster` and the tests wait for it).
READY_LINE = "Squall is running at"

log = logging.getLogger("squall.web")


async def serve_web(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``), then shut down cleanly.

    Raises :class:`ConfigError` when the port cannot be bound (in use, not ours).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    node = WebNode(settings)
    try:
        await node.start()
    except OSError as exc:
        await node.stop()  # the store's thread and the link's task must not outlive us
        raise ConfigError(
            f"port = {settings.port}: cannot listen on {settings.host}:{settings.port}:"
            f" {exc.strerror or exc}"
        ) from None
    url = f"http://{settings.host}:{node.port}/"
    via = f"queue {redacted_url(settings.queue)}" if settings.queue else f"processor at {settings.processor}"
    log.info("web node listening on %s (%s)", url, via)
    print(f"{READY_LINE} {url}", flush=True)
    await stop.wait()
    log.info("shutting down")
    await node.stop()

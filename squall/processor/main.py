"""Running the processor as a process: ``squall processor --listen HOST:PORT``."""

from __future__ import annotations

import asyncio
import logging
import signal

from ..config import Settings
from ..store import open_store
from .pipeline import Pipeline, StageContext
from .server import ProcessorServer
from .stages import BatchWriter

__all__ = ["serve_processor"]

log = logging.getLogger("squall.processor")


async def serve_processor(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then finish what is in flight."""
    store = open_store(settings.database_url)
    await store.open()
    writer = BatchWriter(store, max_batch=settings.store_batch)
    pipeline = Pipeline.from_settings(StageContext(settings=settings, store=store, writer=writer))
    server = ProcessorServer(pipeline, max_line=settings.max_line_bytes)
    host, port = settings.listen_address
    server.listen(port, host)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("processor listening on %s:%d (stages: %s)", host, port, ", ".join(settings.stages))
    print(f"squall processor listening on {host}:{port}", flush=True)
    await stop.wait()
    server.stop()
    if not await server.wait_idle(settings.shutdown_timeout):
        log.warning("stopping with %d messages still in flight", server.in_flight)
    await store.close()

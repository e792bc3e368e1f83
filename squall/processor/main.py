"""Running the processor as a process: ``squall processor --listen HOST:PORT``."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from ..config import Settings
from ..errors import ConfigError
from ..pipeline.mail import Deliverer, OutboxDeliverer, SmtpDeliverer
from ..store import open_store
from .notifier import Notifier
from .pipeline import Pipeline, StageContext
from .server import ProcessorServer
from .stages import BatchWriter

__all__ = ["serve_processor", "make_deliverer"]

log = logging.getLogger("squall.processor")


def make_deliverer(settings: Settings) -> Deliverer:
    """SMTP when ``smtp`` is set, else ``.eml`` files in ``<data_dir>/outbox``."""
    if settings.smtp:
        try:
            return SmtpDeliverer(settings.smtp)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return OutboxDeliverer(Path(settings.data_dir) / "outbox")


async def serve_processor(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then finish what is in flight."""
    store = open_store(settings.database_url)
    await store.open()
    notifier = Notifier(
        store, make_deliverer(settings), base_url=settings.base_url,
        mail_from=settings.mail_from, retry_min=settings.mail_retry_min,
    )
    writer = BatchWriter(
        store, max_batch=settings.store_batch,
        notify_delay_ms=int(settings.notify_delay * 1000), on_commit=notifier.stored,
    )
    server = ProcessorServer(max_line=settings.max_line_bytes, on_seen=notifier.seen)
    pipeline = server.pipeline = Pipeline.from_settings(StageContext(
        settings=settings, store=store, writer=writer, send_update=server.send_to_all,
    ))
    host, port = settings.listen_address
    server.listen(port, host)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, pipeline.reload)
    notifying = asyncio.ensure_future(notifier.run(stop))

    log.info("processor listening on %s:%d (stages: %s)", host, port, ", ".join(settings.stages))
    print(f"squall processor listening on {host}:{port}", flush=True)
    await stop.wait()
    server.stop()
    if not await server.wait_idle(settings.shutdown_timeout):
        log.warning("stopping with %d messages still in flight", server.in_flight)
    await pipeline.close()
    await notifying
    await store.close()

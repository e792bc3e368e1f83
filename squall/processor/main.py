"""Running the processor as a process: ``squall processor --listen HOST:PORT``.

Start-up does everything that can fail for a reason of configuration before it
serves anything, and in an order that leaves nothing running behind a failure:
the secret and the listening socket first, then the stages, then the store (the
one part that starts a thread). A failure raises :class:`ConfigError` with one
line that names the setting; ``squall`` prints it and exits non-zero.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
from pathlib import Path

from tornado.netutil import bind_sockets

from ..config import Settings
from ..errors import ConfigError
from ..handshake import link_key
from ..pipeline.mail import Deliverer, OutboxDeliverer, SmtpDeliverer
from ..store import open_store
from ..web.auth import load_or_create_secret
from .notifier import Notifier
from .pipeline import Pipeline, StageContext
from .server import ProcessorServer
from .stages import BatchWriter

__all__ = ["serve_processor", "make_deliverer", "listening_sockets", "is_loopback", "LISTENING_LINE"]

log = logging.getLogger("squall.processor")

# Printed once the processor listens: `squall run` (and the tests) wait for it.
LISTENING_LINE = "squall processor listening on"


def make_deliverer(settings: Settings) -> Deliverer:
    """SMTP when ``smtp`` is set, else ``.eml`` files in ``<data_dir>/outbox``."""
    if settings.smtp:
        try:
            return SmtpDeliverer(settings.smtp)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return OutboxDeliverer(Path(settings.data_dir) / "outbox")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


def listening_sockets(settings: Settings) -> list[socket.socket]:
    """Bind ``listen``; a port in use is a :class:`ConfigError` naming the setting."""
    host, port = settings.listen_address
    if not is_loopback(host) and not settings.secret:
        raise ConfigError(
            f"listen = {settings.listen!r} is reachable from other machines: set secret"
            " (the same on the processor and its web nodes) so that the link can authenticate"
        )
    try:
        return bind_sockets(port, host)
    except OSError as exc:
        raise ConfigError(f"listen = {settings.listen!r}: cannot listen there: {exc.strerror or exc}") from None


async def serve_processor(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then finish what is in flight.

    ``sockets`` are listening sockets to serve instead of binding ``listen``
    (``squall run`` binds once and hands the same sockets to every child).
    Raises :class:`ConfigError` if it cannot start.
    """
    key = link_key(load_or_create_secret(settings.secret, settings.data_dir))
    sockets = sockets if sockets is not None else listening_sockets(settings)
    # The processor's loop may block (no client waits on it directly): its
    # writes run on it, with no thread hop per transaction.
    store = open_store(settings.database_url, writes_in_loop=True)
    notifier = Notifier(
        store, make_deliverer(settings), base_url=settings.base_url,
        mail_from=settings.mail_from, retry_min=settings.mail_retry_min,
    )
    writer = BatchWriter(
        store, max_batch=settings.store_batch,
        notify_delay_ms=int(settings.notify_delay * 1000), on_commit=notifier.stored,
    )
    server = ProcessorServer(
        key=key, max_line=settings.max_line_bytes, max_body_chars=settings.max_body_chars,
        on_seen=notifier.seen,
    )
    try:
        pipeline = server.pipeline = Pipeline.from_settings(StageContext(
            settings=settings, store=store, writer=writer, send_update=server.send_to_all,
        ))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    try:
        await store.open()
    except BaseException as exc:
        await pipeline.close()
        for sock in sockets:
            sock.close()
        if isinstance(exc, Exception):
            raise ConfigError(f"database = {settings.database_url!r}: cannot open it: {exc}") from None
        raise
    host, port = sockets[0].getsockname()[:2]  # before the event loop takes the sockets
    await server.listen(sockets)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, pipeline.reload)
    notifying = asyncio.ensure_future(notifier.run(stop))

    log.info("processor listening on %s:%d (stages: %s)", host, port, ", ".join(settings.stages))
    print(f"{LISTENING_LINE} {host}:{port}", flush=True)
    await stop.wait()
    server.stop()
    if not await server.wait_idle(settings.shutdown_timeout):
        log.warning("stopping with %d messages still in flight", server.in_flight)
    await pipeline.close()
    await notifying
    await store.close()

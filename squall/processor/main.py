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

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from ..address import HostPolicy, default_allowed_hosts, parse_networks
from ..config import Settings, parse_address
from ..errors import ConfigError
from ..handshake import link_key
from ..metrics import ProcessorMetrics
from ..message import ChangeRules
from ..pipeline.mail import Deliverer, OutboxDeliverer, SmtpDeliverer
from ..store import Store, open_store, redacted_url
from ..web.auth import load_or_create_secret
from ..web.operations import processor_operations_app
from .notifier import Notifier
from .pipeline import Pipeline, StageContext
from .server import ProcessorServer
from .stages import BatchWriter

__all__ = [
    "serve_processor", "make_deliverer", "listening_sockets", "metrics_sockets", "is_loopback", "LISTENING_LINE",
    "METRICS_LINE",
]

log = logging.getLogger("squall.processor")

# Printed once the processor listens: `squall run` (and the tests) wait for it.
LISTENING_LINE = "squall processor listening on"
# Printed once the processor serves /metrics (`processor_metrics`).
METRICS_LINE = "squall processor metrics on"


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


def metrics_sockets(settings: Settings) -> list[socket.socket]:
    """Bind ``processor_metrics`` (none when it is empty); a :class:`ConfigError` names it."""
    if not settings.processor_metrics:
        return []
    host, port = parse_address(settings.processor_metrics)
    try:
        return bind_sockets(port, host)
    except OSError as exc:
        raise ConfigError(
            f"processor_metrics = {settings.processor_metrics!r}: cannot listen there: {exc.strerror or exc}"
        ) from None


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


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
    if settings.queue:
        for sock in sockets or ():
            sock.close()  # a queue processor dials Redis; it listens nowhere
        await _serve_queue(settings, key, stop=stop)
        return
    sockets = sockets if sockets is not None else listening_sockets(settings)
    try:
        operations = metrics_sockets(settings)
    except ConfigError:
        _close(sockets)
        raise
    metrics = ProcessorMetrics()
    store, notifier, writer = _storing(settings, metrics)
    server = ProcessorServer(
        key=key, max_line=settings.max_line_bytes, max_body_chars=settings.max_body_chars,
        on_seen=notifier.seen,
    )
    metrics.in_flight.set_function(lambda: server.in_flight)
    metrics.links.set_function(lambda: len(server.connections))
    try:
        pipeline = server.pipeline = Pipeline.from_settings(StageContext(
            settings=settings, store=store, writer=writer, send_update=server.send_to_all,
        ))
    except BaseException:
        _close(sockets + operations)
        raise
    try:
        await _open_store(store, settings)
    except BaseException:
        await pipeline.close()
        _close(sockets + operations)
        raise
    host, port = sockets[0].getsockname()[:2]  # before the event loop takes the sockets
    await server.listen(sockets)
    operations_server: HTTPServer | None = None
    if operations:
        operations_server = HTTPServer(
            processor_operations_app(
                metrics, allow=parse_networks(settings.metrics_allow),
                trusted=parse_networks(settings.trusted_proxies),
                hosts=HostPolicy(settings.allowed_hosts or default_allowed_hosts(
                    parse_address(settings.processor_metrics)[0], settings.public_url
                )),
            ),
            idle_connection_timeout=settings.idle_timeout, body_timeout=settings.idle_timeout,
            max_body_size=settings.max_body_bytes,
        )
        operations_server.add_sockets(operations)

    stop = _stop_on_signals(stop, pipeline)
    notifying = asyncio.ensure_future(notifier.run(stop))

    log.info("processor listening on %s:%d (stages: %s)", host, port, ", ".join(settings.stages))
    if operations:
        metrics_host, metrics_port = operations[0].getsockname()[:2]
        print(f"{METRICS_LINE} http://{metrics_host}:{metrics_port}/metrics", flush=True)
    print(f"{LISTENING_LINE} {host}:{port}", flush=True)
    await stop.wait()
    server.stop()
    if operations_server is not None:
        operations_server.stop()
    if not await server.wait_idle(settings.shutdown_timeout):
        log.warning("stopping with %d messages still in flight", server.in_flight)
    await pipeline.close()
    await notifying
    await store.close()


def _storing(settings: Settings, metrics: ProcessorMetrics | None) -> tuple[Store, Notifier, BatchWriter]:
    """The store, its mention-mail notifier and the group-commit writer, as both
    ways of taking sends (TCP links, the queue) use them. The processor's loop
    may block (no client waits on it directly): its writes run on it, with no
    thread hop per transaction."""
    store = open_store(
        settings.database_url, pool_size=settings.database_pool_size, timeout=settings.database_timeout,
        writes_in_loop=True,
    )
    notifier = Notifier(
        store, make_deliverer(settings), base_url=settings.base_url,
        mail_from=settings.mail_from, retry_min=settings.mail_retry_min,
    )
    writer = BatchWriter(
        store, max_batch=settings.store_batch,
        notify_delay_ms=int(settings.notify_delay * 1000), on_commit=notifier.stored, metrics=metrics,
        rules=ChangeRules(
            edit_window_ms=int(settings.edit_window * 1000), max_reactions=settings.max_reactions
        ),
    )
    return store, notifier, writer


async def _open_store(store: Store, settings: Settings) -> None:
    """Open ``store``; one that cannot be opened is a :class:`ConfigError` naming it."""
    try:
        await store.open()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"database = {redacted_url(settings.database_url)!r}: cannot open it: {exc}"
        ) from None


def _stop_on_signals(stop: asyncio.Event | None, pipeline: Pipeline) -> asyncio.Event:
    """SIGTERM/SIGINT set the returned event (``stop`` if given); SIGHUP reloads the pipeline."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, pipeline.reload)
    return stop


async def _serve_queue(settings: Settings, key: bytes, *, stop: asyncio.Event | None) -> None:
    """``serve_processor`` with ``queue`` set: the same pipeline, fed by Redis Streams."""
    from ..queue.worker import QueueWorker

    store, notifier, writer = _storing(settings, None)
    worker = QueueWorker(
        settings.queue, key=key, prefix=settings.queue_prefix, on_seen=notifier.seen,
        max_body_chars=settings.max_body_chars, claim_idle=settings.queue_claim_idle,
        read_batch=settings.store_batch, max_bytes=settings.max_line_bytes,
        reconnect_min=settings.reconnect_min, reconnect_max=settings.reconnect_max,
    )
    pipeline = worker.pipeline = Pipeline.from_settings(StageContext(
        settings=settings, store=store, writer=writer, send_update=worker.send_update,
    ))
    try:
        await _open_store(store, settings)
    except BaseException:
        await pipeline.close()
        raise
    try:
        await worker.open()
    except Exception as exc:
        await pipeline.close()
        await store.close()
        raise ConfigError(f"queue = {redacted_url(settings.queue)!r}: cannot use it: {exc}") from None

    stop = _stop_on_signals(stop, pipeline)
    notifying = asyncio.ensure_future(notifier.run(stop))
    log.info("processor %s taking sends from %s (stages: %s)", worker.consumer,
             worker.keys.sends, ", ".join(settings.stages))
    print(f"{LISTENING_LINE} queue {redacted_url(settings.queue)} stream {worker.keys.sends}"
          f" as {worker.consumer}", flush=True)
    await worker.run(stop, shutdown_timeout=settings.shutdown_timeout)
    await pipeline.close()
    await notifying
    await store.close()

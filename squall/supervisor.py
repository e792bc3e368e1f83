"""``squall run``: the processor as a child process, the web node in this one.

Theory of operation. The parent binds the processor's listening socket itself,
once, and hands that same socket to every child it starts (``pass_fds``), so
the address the web node dials never changes across restarts and no other
process can take it in between. Unless ``listen`` or ``processor`` is set, the
socket is bound to port 0 on 127.0.0.1: the OS picks a free port, private to
this instance, so two instances on one machine never share a processor. Both
ends read one secret (``secret``, else ``<data_dir>/secret``, created here before
the child starts) and authenticate the link with it (docs/protocol.md §6), so a
web node never talks to a processor of another instance either.

The child is started again with back-off whenever it dies, so a crashed
processor costs a short wait, not the chat: the web node queues sends meanwhile
and resends what was in flight. A child that exits before it says it listens
has *failed to start*; after :data:`MAX_FAILED_STARTS` of those in a row, or at
once when it exits with ``ConfigError.exit_status``, the parent stops and
exits non-zero instead of serving a web node that can never store anything.
The web node starts only once the first child listens.

The child gets the parent's settings through ``SQUALL_*`` environment
variables; its standard output is relayed line by line (it is how the parent
learns that the child listens), its standard error is the parent's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import signal
import socket
import sys

from .backoff import backoff_delay
from .config import Settings
from .errors import ConfigError, SquallError
from .processor.main import LISTENING_LINE, listening_sockets
from .web.auth import load_or_create_secret
from .web.main import serve_web

__all__ = [
    "run_all", "settings_environment", "ChildSupervisor", "ProcessorFailed",
    "MAX_FAILED_STARTS", "PRIVATE_LISTEN",
]

log = logging.getLogger("squall.supervisor")

# A child that lived this long counts as healthy: the next crash restarts at once.
HEALTHY_SECONDS = 10.0
# Failed starts in a row before `squall run` gives up. A start fails for a
# reason that does not go away by itself (a setting, a missing module, a
# database it cannot open) far more often than for a passing one; three tries
# (about a second with the back-off) cover the passing kind.
MAX_FAILED_STARTS = 3
# Where the child listens when neither `listen` nor `processor` is set.
PRIVATE_LISTEN = "127.0.0.1:0"


class ProcessorFailed(SquallError):
    """The processor child of ``squall run`` could not start; ``squall`` exits with 1."""


def settings_environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"SQUALL_{field.name.upper()}"] = str(value)
    env.pop("SQUALL_CONFIG", None)  # everything is already in the variables above
    return env


class ChildSupervisor:
    """Starts one ``squall <command>`` child, again whenever it dies.

    The processor child of ``squall run`` gets ``sockets`` (bound by the parent);
    ``squall cluster`` also supervises web nodes this way. A child has started
    once a line of its output begins with ``ready_line``.
    """

    def __init__(
        self,
        settings: Settings,
        sockets: list[socket.socket],
        *,
        command: str = "processor",
        ready_line: str = LISTENING_LINE,
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        self.command = command
        self.ready_line = ready_line
        self.listening = asyncio.Event()  # the first child listens: the web node may start
        self.failed = asyncio.Event()  # given up; `failure` says why
        self.failure = ""

    async def run(self, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        fds = [sock.fileno() for sock in self.sockets]
        inherit = ["--inherited-sockets", ",".join(map(str, fds))] if fds else []
        attempt = 0
        failed_starts = 0
        while not stopping.is_set():
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "squall", self.command, *inherit,
                env=settings_environment(self.settings), stdout=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL, pass_fds=fds,
            )
            started = loop.time()
            log.info("%s started, pid %d", self.command, child.pid)
            child_listens = asyncio.Event()
            relay = asyncio.ensure_future(_relay_output(child, child_listens, self.ready_line))
            exited = asyncio.ensure_future(child.wait())
            listens = asyncio.ensure_future(child_listens.wait())
            stopper = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({exited, listens, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if child_listens.is_set():
                failed_starts = 0
                self.listening.set()
                await asyncio.wait({exited, stopper}, return_when=asyncio.FIRST_COMPLETED)
            listens.cancel()
            if stopping.is_set():
                stopper.cancel()
                await self._stop_child(child, exited)
                await relay
                return
            stopper.cancel()
            await relay
            status = child.returncode
            if not child_listens.is_set():
                failed_starts += 1
                if status == ConfigError.exit_status or failed_starts >= MAX_FAILED_STARTS:
                    why = "its settings cannot work" if status == ConfigError.exit_status else (
                        f"it failed to start {failed_starts} times in a row")
                    self.failure = (
                        f"the {self.command} could not start (exit status {status}; {why});"
                        " see its message above"
                    )
                    self.failed.set()
                    return
            attempt = 0 if loop.time() - started > HEALTHY_SECONDS else attempt + 1
            delay = backoff_delay(attempt, low=0.1, high=5.0, rand=random.random()) if attempt else 0.0
            log.error("%s exited with %s; restarting in %.2f s", self.command, status, delay)
            if delay:
                try:
                    await asyncio.wait_for(stopping.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def _stop_child(self, child: asyncio.subprocess.Process, exited: asyncio.Future[int]) -> None:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(exited), self.settings.shutdown_timeout + 1)
            except asyncio.TimeoutError:
                child.kill()
        await exited


async def _relay_output(child: asyncio.subprocess.Process, listens: asyncio.Event, ready_line: str) -> None:
    """Copy the child's output to ours, and set ``listens`` when it says it listens."""
    assert child.stdout is not None
    while line := await child.stdout.readline():
        text = line.decode("utf-8", "replace")
        sys.stdout.write(text)
        sys.stdout.flush()
        if text.startswith(ready_line):
            listens.set()


def _one_processor_address(settings: Settings) -> Settings:
    """In ``squall run`` the child listens where the web node dials: one address.

    ``--listen`` names it; a ``--processor`` given alone does too; with neither,
    it is :data:`PRIVATE_LISTEN`, a port the OS picks.
    """
    defaults = Settings()
    if settings.listen == defaults.listen and settings.processor == defaults.processor:
        return settings.replace(listen=PRIVATE_LISTEN, processor=PRIVATE_LISTEN)
    if settings.listen == defaults.listen:
        return settings.replace(listen=settings.processor)
    return settings.replace(processor=settings.listen)


async def run_all(settings: Settings) -> None:
    """Run the processor child and the web node until a signal stops both.

    Raises :class:`~squall.errors.ConfigError` when the settings cannot work and
    :class:`ProcessorFailed` when the child cannot start.
    """
    if len(settings.processor_addresses) > 1:
        raise ConfigError(
            f"processor = {settings.processor!r}: squall run starts one processor; run several"
            " with squall processor and list them in squall web --processor"
        )
    settings = _one_processor_address(settings)
    sockets = listening_sockets(settings)
    host, port = sockets[0].getsockname()[:2]
    dial = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    settings = settings.replace(listen=f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
                                processor=f"{dial}:{port}" if ":" not in dial else f"[{dial}]:{port}")
    load_or_create_secret(settings.secret, settings.data_dir)  # one file for both processes
    supervisor = ChildSupervisor(settings, sockets)
    processor_stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # until the web node takes them over
        loop.add_signal_handler(signum, processor_stop.set)
    supervising = asyncio.ensure_future(supervisor.run(processor_stop))
    try:
        waits = [asyncio.ensure_future(event.wait())
                 for event in (supervisor.listening, supervisor.failed, processor_stop)]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        if supervisor.failed.is_set():
            raise ProcessorFailed(supervisor.failure)
        if processor_stop.is_set():
            return
        web_stop = asyncio.Event()
        giving_up = asyncio.ensure_future(supervisor.failed.wait())
        giving_up.add_done_callback(lambda _: web_stop.set())
        try:
            await serve_web(settings, stop=web_stop)
        finally:
            giving_up.cancel()
        if supervisor.failed.is_set():
            raise ProcessorFailed(supervisor.failure)
    finally:
        # The web node has drained its in-flight sends; now the processor may go.
        processor_stop.set()
        await supervising
        for sock in sockets:
            sock.close()

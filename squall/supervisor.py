"""``squall run``: the processor as a child process, the web node in this one.

The child is started again with back-off whenever it dies, so a crashed
processor costs a short wait, not the chat: the web node queues sends meanwhile
and resends what was in flight. The child gets the parent's settings through
``SQUALL_*`` environment variables.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import signal
import sys

from .backoff import backoff_delay
from .config import Settings
from .web.main import serve_web

__all__ = ["run_all", "settings_environment"]

log = logging.getLogger("squall.supervisor")

# A child that lived this long counts as healthy: the next crash restarts at once.
HEALTHY_SECONDS = 10.0


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


async def _supervise(settings: Settings, stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    attempt = 0
    while not stopping.is_set():
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "squall", "processor", env=settings_environment(settings),
        )
        started = loop.time()
        log.info("processor started, pid %d", child.pid)
        waiter = asyncio.ensure_future(child.wait())
        stopper = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            stopper.cancel()
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(waiter, settings.shutdown_timeout + 1)
                except asyncio.TimeoutError:
                    child.kill()
                    await waiter
            return
        stopper.cancel()
        attempt = 0 if loop.time() - started > HEALTHY_SECONDS else attempt + 1
        delay = backoff_delay(attempt, low=0.1, high=5.0, rand=random.random()) if attempt else 0.0
        log.error("processor exited with %s; restarting in %.2f s", child.returncode, delay)
        if delay:
            try:
                await asyncio.wait_for(stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass


def _one_processor_address(settings: Settings) -> Settings:
    """In ``squall run`` the child listens where the web node dials: one address.

    ``--listen`` names it; a ``--processor`` given alone does too.
    """
    defaults = Settings()
    if settings.listen == defaults.listen and settings.processor != defaults.processor:
        return settings.replace(listen=settings.processor)
    return settings.replace(processor=settings.listen)


async def run_all(settings: Settings) -> None:
    """Run the processor child and the web node until a signal stops both."""
    settings = _one_processor_address(settings)
    web_stop = asyncio.Event()
    processor_stop = asyncio.Event()
    supervisor = asyncio.ensure_future(_supervise(settings, processor_stop))
    try:
        await serve_web(settings, stop=web_stop)
    finally:
        # The web node has drained its in-flight sends; now the processor may go.
        processor_stop.set()
        await supervisor

"""``/readyz``: whether this web node can do its job, proved by a canary message.

Theory of operation. A :class:`Canary` sends one real message, as the node
sends a user's, through every part a chat message crosses: the processor link,
the processor's pipeline and its store (the answer comes once it is
committed), the bus (the node watches for it there), and the node's own reads
of the store (it must see the new seq). It is posted by the nick
:data:`CANARY_NICK` in :data:`~squall.protocol.CANARY_ROOM`, which no client can
name, so it never shows in anyone's rooms, history or member lists. Each leg is
timed from the start; the first leg that fails or does not finish within
``deadline`` seconds is the answer.

:class:`Readiness` makes probing cheap whatever the load balancers do: probes
that come while a canary is out wait for that canary; a verdict is reused for
``cache`` seconds. However many probes arrive, at most one canary is sent per
``cache`` seconds — one stored message, not one per probe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import ClientError
from ..frames import Broadcast
from ..protocol import CANARY_ROOM

if TYPE_CHECKING:
    from ..processor.client import ProcessorLink
    from ..store import Store

__all__ = ["Canary", "Readiness", "Verdict", "CANARY_NICK", "CANARY_BODY"]

log = logging.getLogger("squall.readiness")

CANARY_NICK = "squall-canary"
CANARY_BODY = "readiness canary"


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What a canary found. ``failed`` names the first part that did not answer
    (``processor``, ``bus``, ``store`` or ``node``), ``reason`` says how;
    ``timings`` are milliseconds from the canary's start to each leg's end."""

    ready: bool
    checked_at: float  # monotonic seconds
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    seq: int | None = None
    failed: str | None = None
    reason: str = ""

    def to_dict(self, *, now: float) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "ready": self.ready, "timings_ms": self.timings, "age_ms": round((now - self.checked_at) * 1000, 1),
        }
        if self.seq is not None:
            answer["seq"] = self.seq
        if not self.ready:
            answer.update(code="not_ready", failed=self.failed, reason=self.reason)
        return answer


class Canary:
    """Sends canaries through ``link`` and reads them back from ``store``.

    The node hands every bus delivery to :meth:`seen` while :attr:`waiting`.
    """

    def __init__(self, link: ProcessorLink, store: Store, *, deadline: float) -> None:
        self.link = link
        self.store = store
        self.deadline = deadline
        # Ids unique to this node and this run: every canary is a new message,
        # so its commit proves the store takes writes.
        self._prefix = f"canary-{os.urandom(6).hex()}-"
        self._sent = 0
        self._on_bus: dict[str, asyncio.Future[float]] = {}  # canary id → when it came by

    @property
    def waiting(self) -> bool:
        """Whether a canary is out (it may have come by the bus already)."""
        return bool(self._on_bus)

    def seen(self, broadcasts: Sequence[Broadcast]) -> None:
        """A bus delivery: note the time if it carries a canary that is out."""
        for broadcast in broadcasts:
            if broadcast.room == CANARY_ROOM and broadcast.seq is not None:
                on_bus = self._on_bus.get(orjson.loads(broadcast.payload).get("id"))
                if on_bus is not None and not on_bus.done():
                    on_bus.set_result(asyncio.get_running_loop().time())

    async def run(self) -> Verdict:
        """Send one canary and follow it; a verdict within :attr:`deadline` seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        timings: dict[str, float] = {}

        def verdict(failed: str | None = None, reason: str = "", seq: int | None = None) -> Verdict:
            timings["total"] = _ms(loop.time() - start)
            return Verdict(failed is None, time.monotonic(), timings, seq, failed, reason)

        if not self.link.connected.is_set():  # its address is in the log, not for strangers
            return verdict("processor", "the link to the processor is down")
        self._sent += 1
        cid = f"{self._prefix}{self._sent}"
        on_bus = self._on_bus[cid] = loop.create_future()
        leg = "processor"
        try:
            async with asyncio.timeout(self.deadline):
                message = await self.link.process(
                    room=CANARY_ROOM, nick=CANARY_NICK, id=cid, body=CANARY_BODY, ts=int(time.time() * 1000),
                )
                seq = int(message["seq"])
                timings["processor"] = _ms(loop.time() - start)  # processed and committed
                leg = "bus"
                timings["bus"] = _ms(await on_bus - start)
                leg = "store"
                stored = await self.store.last_seq(CANARY_ROOM)
                timings["store"] = _ms(loop.time() - start)
        except TimeoutError:
            return verdict(leg, f"no answer within ready_timeout ({self.deadline:g} s)")
        except ClientError as exc:  # refused by the pipeline, or unavailable
            return verdict(leg, f"{exc.code}: {exc.reason}")
        except Exception:
            log.exception("the readiness canary failed at the %s", leg)
            return verdict(leg, "failed; the web node's log has the details")
        finally:
            del self._on_bus[cid]
            on_bus.cancel()  # no-op if it came by
        if stored < seq:
            return verdict("store", f"this node reads seq {stored} for the canary the processor stored as {seq}", seq)
        return verdict(seq=seq)


class Readiness:
    """Coalesces probes onto one canary run and reuses its verdict for ``cache`` seconds.

    ``probe`` is :meth:`Canary.run` (or any coroutine function giving a :class:`Verdict`).
    """

    def __init__(
        self, probe: Callable[[], Awaitable[Verdict]], *, cache: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe = probe
        self.cache = cache
        self.clock = clock
        self.runs = 0  # probes run
        self._last: Verdict | None = None
        self._last_at = 0.0  # by clock
        self._running: asyncio.Future[Verdict] | None = None

    async def check(self) -> Verdict:
        """The newest verdict if it is fresh; else that of the run under way, or of a new one."""
        if self._last is not None and self.clock() - self._last_at < self.cache:
            return self._last
        if self._running is None:
            self.runs += 1
            self._running = asyncio.ensure_future(self._run())
        # Shielded: a prober that hangs up must not cancel the others' canary.
        return await asyncio.shield(self._running)

    async def _run(self) -> Verdict:
        try:
            verdict = await self.probe()
            was_ready = self._last.ready if self._last is not None else True
            if verdict.ready != was_ready:  # once per change, not per probe
                if verdict.ready:
                    log.warning("ready again (canary back in %.1f ms)", verdict.timings.get("total", 0.0))
                else:
                    log.warning("not ready: %s: %s", verdict.failed, verdict.reason)
            self._last, self._last_at = verdict, self.clock()
        finally:
            self._running = None
        return verdict


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)

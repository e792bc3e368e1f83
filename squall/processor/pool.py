"""The web node's links to its processors (``--processor HOST:PORT,HOST:PORT,…``).

Theory of operation. Every processor gets one :class:`ProcessorLink`; the sends
live in one :class:`~squall.processor.sends.PendingSends` table. A send goes to
the link that :func:`choose` picks for its room among the links that are up:
rendezvous hashing (highest random weight) over ``(address, room)``.

Why by room, not least-in-flight: a room's sends then meet in one processor,
so a client's pipelined sends are stored in the order it sent them, the
answers come back in seq order (the hub has nothing to hold back or to read
from the store), and one group commit holds many of a busy room's messages.
Every web node that lists the same processors sends a room to the same one
(the hash is BLAKE2b, not Python's per-process ``hash``; CRC-32 was tried
and is too linear: similar room names piled onto one processor). The price: one room
never uses more than one processor; the rooms, not the messages, are spread.
Rendezvous hashing moves only the rooms of a processor that goes down or comes
back, and spreads them over the others.

When a link goes down, every send it carried moves at once to the link now
chosen for its room, and is written there; the store's idempotency on
``(room, nick, id)`` keeps a message that the dead processor had already
stored to one copy, answered with its original seq. When no link is up,
sends wait on the link their room hashes to among all, and move as soon as
any link comes up. A send not answered within ``send_timeout`` gets
``unavailable``; one never written is dropped, one written stays until
answered (its message may be stored, and is then published).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..config import Address
from ..errors import Unavailable
from ..lines import encode_line
from .client import ProcessorLink
from .sends import PendingSends, Send, answer_of, process_request

__all__ = ["ProcessorPool", "choose", "link_weight"]

log = logging.getLogger("squall.link")


def link_weight(address: Address, room: str) -> int:
    """Rendezvous weight of ``address`` for ``room``: the same in every process."""
    text = f"{address[0]}:{address[1]}\n{room}".encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def choose(addresses: Sequence[Address], room: str) -> int:
    """Index of the address that serves ``room``: the highest weight, ties to the first."""
    best, best_weight = 0, -1
    for index, address in enumerate(addresses):
        weight = link_weight(address, room)
        if weight > best_weight:
            best, best_weight = index, weight
    return best


class ProcessorPool:
    """Sends spread over the processors at ``addresses`` by room; see the module's docstring.

    :param max_pending: sends that may wait at once, over all links; default 10,000.
    :param send_timeout: seconds a send waits for its answer; default 10.
    """

    def __init__(
        self,
        addresses: Sequence[Address],
        *,
        key: bytes,
        on_processed: Callable[[list[dict[str, Any]]], None],
        on_updated: Callable[[dict[str, Any]], None] | None = None,
        max_pending: int = 10_000,
        send_timeout: float = 10.0,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
    ) -> None:
        if not addresses:
            raise ValueError("a processor pool needs at least one address")
        self.send_timeout = send_timeout
        self.sends = PendingSends(max_pending=max_pending, waiting_for="the processor")
        self.links = [
            ProcessorLink(
                address, key=key, sends=self.sends, on_processed=on_processed,
                on_updated=on_updated, on_state=self._link_changed, max_unsent_seen=max_pending,
                reconnect_min=reconnect_min, reconnect_max=reconnect_max,
            )
            for address in addresses
        ]
        self._closing = False
        self.connected = asyncio.Event()  # set while at least one link is up

    @property
    def pending(self) -> int:
        return len(self.sends)

    def states(self) -> list[dict[str, Any]]:
        """Each link's address, whether it is up and its sends in flight (``/api/health``)."""
        return [
            {"address": f"{link.address[0]}:{link.address[1]}",
             "state": "connected" if link.connected.is_set() else "unreachable",
             "in_flight": link.in_flight}
            for link in self.links
        ]

    def start(self) -> None:
        for link in self.links:
            link.start()

    def _link_for(self, room: str) -> ProcessorLink:
        up = [link for link in self.links if link.connected.is_set()] or self.links
        return up[choose([link.address for link in up], room)]

    async def process(
        self, *, room: str, nick: str, id: str, body: str, ts: int,
        attachments: Sequence[dict[str, Any]] = (), event: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The processed message (or change) as a processor returned it.

        ``event`` holds a change's or a reply's own fields (``kind``, ``target``,
        ``emoji``, ``reply_to``, ``moderator``), sent along as they are.

        Raises :class:`~squall.errors.Rejected` when the pipeline refuses it and
        :class:`~squall.errors.Unavailable` when the table is full or no answer
        came in time.
        """
        send = self.sends.joined(room, nick, id)
        if send is None:
            if self._closing:
                raise Unavailable("the server is shutting down; retry with the same id")
            send = self.sends.start(room, nick, id, lambda ref: encode_line(process_request(
                ref, room=room, nick=nick, id=id, body=body, ts=ts, attachments=attachments, event=event,
            )))
            self._link_for(room).carry(send)
        return await answer_of(
            send, self.send_timeout, on_timeout=self._timed_out, waiting_for="the processor"
        )

    def _timed_out(self, send: Send) -> None:
        if not send.written:
            if send.owner is not None:
                send.owner.drop(send)
            self.sends.forget(send)

    def report_seen(self, key: str, room: str, seq: int) -> None:
        """Tell a processor that user ``key`` was handed message ``seq`` of ``room`` (best effort)."""
        self._link_for(room).report_seen(key, room, seq)

    def _link_changed(self, link: ProcessorLink) -> None:
        up = [other for other in self.links if other.connected.is_set()]
        if up:
            self.connected.set()
        else:
            self.connected.clear()
        if self._closing or not up:
            return
        # Sends on links that are down go to one that is up, at once.
        moved = 0
        for down in self.links:
            if not down.connected.is_set():
                for send in down.release():
                    self._link_for(send.room).carry(send)
                    moved += 1
        if moved:
            log.warning("moved %d sends in flight to the processors that are up", moved)

    async def close(self, *, timeout: float) -> None:
        """Stop taking sends, wait up to ``timeout`` s for written ones' answers, then disconnect."""
        self._closing = True
        waiting = [send.future for send in self.sends if send.written]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        for link in self.links:
            await link.close()

"""Admission by event-loop turn: at most so many jobs start in one turn.

Theory of operation. Everything a web node does runs on one event loop, and
the loop runs every callback that is ready before it looks at its sockets
again. After a restart, a thousand clients whose joins arrive together would
all be served in one turn — each join, its member page and its catch-up —
while a message the processor has just returned waits behind them, for every
member of the room. :class:`Turns` lets ``per_turn`` jobs proceed in a turn and
holds the rest, in order, for the turns after: between two batches the loop
reads its sockets, and a live message goes out after at most one batch of
joins, however many are waiting. Nothing is refused or dropped; a storm only
takes as many turns as it takes.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Turns"]


class Turns:
    """Lets jobs proceed, at most ``per_turn`` in one turn of the running loop, the rest in later turns.

    A job awaits :meth:`wait_turn` before its costly part; it returns at once
    while this turn has room, else in a later turn, in the order jobs came.
    """

    def __init__(self, *, per_turn: int) -> None:
        if per_turn < 1:
            raise ValueError(f"per_turn must be 1 or more, got {per_turn}")
        self.per_turn = per_turn
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._admitted = 0  # jobs let through in the current turn
        self._next_turn: asyncio.Handle | None = None

    @property
    def waiting(self) -> int:
        """Jobs waiting for a later turn."""
        return len(self._waiting)

    async def wait_turn(self) -> None:
        """Return once this job may proceed: at once if the turn has room."""
        self._schedule()
        if not self._waiting and self._admitted < self.per_turn:
            self._admitted += 1
            return
        ticket = asyncio.get_running_loop().create_future()
        self._waiting.append(ticket)
        await ticket

    def _schedule(self) -> None:
        if self._next_turn is None:
            self._next_turn = asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        """A new turn: let the next batch of waiting jobs through."""
        self._next_turn = None
        self._admitted = 0
        waiting = self._waiting
        while waiting and self._admitted < self.per_turn:
            ticket = waiting.popleft()
            if not ticket.done():  # its job was cancelled meanwhile
                self._admitted += 1
                ticket.set_result(None)
        if waiting or self._admitted:
            self._schedule()

"""Keeping arrival order across awaits.

Work that arrives in order (one sender's messages) may wait on different things
before it reaches the step that fixes its order for good (the processor link on
the web node, the batch writer on the processor): an access check that reads
the store for the first send into a room and not for the next, a mention that
needs a user looked up. :class:`InOrder` keeps the order there: each item,
when it comes, takes its place behind the last one with the same key; it may
do its own waiting meanwhile, but passes the ordering step only after the one
before it has passed (or given up).

    earlier, mine = order.enter(key)
    try:
        ...                     # checks, lookups: may await
        await order.turn(earlier)
        order.leave(key, mine)  # before the step, which queues synchronously
        await step()
    finally:
        order.leave(key, mine)
"""

from __future__ import annotations

import asyncio

__all__ = ["InOrder"]


class InOrder:
    """Per key, the last item that has not passed yet (see the module docstring)."""

    def __init__(self) -> None:
        self._last: dict[object, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._last)

    def enter(self, key: object) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """``(earlier, mine)``: the item to wait for (None if none), and this one's."""
        earlier = self._last.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last[key] = mine
        return earlier, mine

    @staticmethod
    async def turn(earlier: asyncio.Future[None] | None) -> None:
        """Wait until the item before has passed; shielded, so that this one's
        cancellation leaves the one before alone."""
        if earlier is not None and not earlier.done():
            await asyncio.shield(earlier)

    def leave(self, key: object, mine: asyncio.Future[None]) -> None:
        """This item has passed (or given up): the next may go. Idempotent."""
        if not mine.done():
            mine.set_result(None)
        if self._last.get(key) is mine:
            del self._last[key]

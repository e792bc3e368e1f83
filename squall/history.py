"""Catch-up pages read from the store once, whoever asks.

Theory of operation. After a web node restarts, thousands of clients come back
at once, each joining with the ``since`` it last had — most of them the same
few cursors, since they were all live in the same rooms when the node went
down. Read per client, that is thousands of identical store queries, each one
decoded and re-encoded on the event loop. :class:`SharedReads` makes it one:

* **single flight**: a read of ``(room, since, limit)`` that is already under
  way is awaited, not repeated;
* **a small page cache**: the last ``max_pages`` full pages read stay, so a
  client that comes a moment after the read finished gets the same page too
  (the same list of broadcasts, each encoded once; the hub shares their joined
  frames as well).

Only a *full* page (``limit`` messages) is kept: its messages are committed
(a message is published after its commit) and no other can join them, so it
never goes stale but for one thing: link previews arrive later. The hub calls
:meth:`SharedReads.forget` for the room when they do, and the next reader reads
the store again. A short page (the room had fewer messages than ``limit`` after
``since``) is shared by the readers that asked while it was being read, and by
no one after: a message committed a moment later belongs in it, and a history
request or a ``wait=0`` poll that got the old one would be told, wrongly, that
it has everything.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from .frames import Broadcast
from .message import Draft
from .store import Store

__all__ = ["SharedReads", "MAX_PAGES"]

# Pages kept: enough for a few rooms' worth of clients coming back at different
# cursors; at backlog_page (200) messages of about 1 KiB each, a few MiB.
MAX_PAGES = 32


class SharedReads:
    """Pages of ``store.messages_after``, read once however many readers want them.

    ``encode`` turns each stored draft into the broadcast readers get (encoded
    once, here). :attr:`reads` counts the store reads made.
    """

    def __init__(
        self, store: Store, encode: Callable[[Draft], Broadcast], *, max_pages: int = MAX_PAGES
    ) -> None:
        self.store = store
        self.encode = encode
        self.max_pages = max_pages
        self.reads = 0
        self._pages: OrderedDict[tuple[str, int, int], list[Broadcast]] = OrderedDict()
        self._flights: dict[tuple[str, int, int], asyncio.Future[list[Broadcast]]] = {}
        # Times forget() was called: a read under way meanwhile does not cache its
        # page (it may predate the change). Any room's forget counts: rare, harmless.
        self._forgotten = 0

    async def after(self, room: str, since: int, limit: int) -> list[Broadcast]:
        """Up to ``limit`` messages of ``room`` with seq > ``since``, oldest first.
        Concurrent and recent callers share one read, and get the same list:
        do not change it."""
        key = (room, since, limit)
        if key in self._pages:
            self._pages.move_to_end(key)
            return self._pages[key]
        flight = self._flights.get(key)
        if flight is None:
            # A task of its own: a caller that gives up (a poller hanging up)
            # must not cancel the read the others wait for.
            flight = self._flights[key] = asyncio.ensure_future(self._read(key))
            flight.add_done_callback(_retrieve)
        return await asyncio.shield(flight)

    async def _read(self, key: tuple[str, int, int]) -> list[Broadcast]:
        room, since, limit = key
        generation = self._forgotten
        self.reads += 1
        try:
            drafts = await self.store.messages_after(room, since, limit)
        finally:
            del self._flights[key]
        page = [self.encode(d) for d in drafts]
        if len(page) == limit and self._forgotten == generation:
            self._pages[key] = page
            while len(self._pages) > self.max_pages:
                self._pages.popitem(last=False)
        return page

    def forget(self, room: str) -> None:
        """Drop the cached pages of ``room`` (a message of it changed: previews)."""
        self._forgotten += 1
        for key in [k for k in self._pages if k[0] == room]:
            del self._pages[key]



def _retrieve(flight: asyncio.Future[list[Broadcast]]) -> None:
    """Mark a failed read's exception as seen: its callers got it, if any were left."""
    if not flight.cancelled():
        flight.exception()

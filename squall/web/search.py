"""``GET /api/search``: full-text search over the rooms the caller may read.

The store finds and ranks a bounded window of matches (:meth:`Store.search
<squall.store.Store.search>`); this handler drops those in rooms the caller
may not read — every room goes through :func:`may_read`, the one access hook
of search — cuts the page at the cursor, reads the page's messages and
highlights them (:func:`squall.search.highlight`). docs/protocol.md,
"GET /api/search", is the contract.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import Forbidden
from ..protocol import CANARY_ROOM, check_room, int_param, nick_key
from ..search import (
    RANK_WINDOW, SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX, decode_cursor, encode_cursor, highlight, parse_query, rank,
)
from .base import BaseHandler, query_argument

if TYPE_CHECKING:
    from .node import WebNode

__all__ = ["SearchHandler", "may_read"]


async def may_read(node: WebNode, room: str, key: str) -> None:
    """Raise :class:`~squall.errors.Forbidden` (``forbidden``, ``not_member``,
    ``banned``) unless user ``key`` (a casefolded nick) may read ``room``.

    Every room a search touches goes through here, and only here. With the
    rooms feature's access check on the node (``node.access.may_read``) it
    decides; without it every room but the canary's is readable by any
    signed-in user.
    """
    if room == CANARY_ROOM:
        raise Forbidden(f"room {room!r} is not searchable")
    access = getattr(node, "access", None)
    if access is not None:
        await access.may_read(room, key)


class SearchHandler(BaseHandler):
    """``GET /api/search?q=WORDS&room=R&cursor=C&limit=L``."""

    async def get(self) -> None:
        key = nick_key(self.current_nick())
        query = parse_query(query_argument(self.request, "q"))
        raw_room = query_argument(self.request, "room")
        room = check_room(raw_room) if raw_room else None
        pin, offset = decode_cursor(query_argument(self.request, "cursor"))
        limit = int_param(
            query_argument(self.request, "limit"), "limit",
            default=SEARCH_LIMIT_DEFAULT, low=1, high=SEARCH_LIMIT_MAX,
        )
        assert limit is not None
        self.node.limits.check_search(key, now=time.monotonic())
        if room is not None:
            await may_read(self.node, room, key)  # a named room the caller may not read is refused
        found = await self.node.store.search(query, room=room, pin=pin, window=RANK_WINDOW)
        readable: dict[str, bool] = {}
        keys: list[tuple[str, int]] = []
        for hit in rank(found.candidates, query.terms, share=found.share):
            if hit.room not in readable:
                try:
                    await may_read(self.node, hit.room, key)
                    readable[hit.room] = True
                except Forbidden:
                    readable[hit.room] = False
            if readable[hit.room]:
                keys.append((hit.room, hit.seq))
        page = keys[offset:offset + limit]
        end = offset + len(page)
        results: list[dict[str, Any]] = [
            {
                "room": message.room, "seq": message.seq, "nick": message.nick, "ts": message.ts,
                "body": message.body, "highlight": highlight(message.body, query.terms),
            }
            for message in await self.node.store.messages_at(page)
        ]
        more = end < len(keys) and end < RANK_WINDOW
        self.write_json({
            "results": results,
            "next": encode_cursor(found.pin, end) if more else None,
            "terms": list(query.terms),
        })

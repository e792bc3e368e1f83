"""``/api/rooms/R/messages``: history, long-polling and plain HTTP sends.

A poll whose cursor is behind the room is answered at once. One whose cursor is
at the end waits on the hub; every poller waiting on the same cursor is
answered with the same encoded body. A poller that hangs up stops waiting
(``on_connection_close`` cancels its future), so nothing piles up for it.
"""

from __future__ import annotations

import asyncio
import time

from ..hub import PollAnswer, encode_poll_body
from ..protocol import check_client_id, check_room, float_param, int_param, nick_key
from .base import BaseHandler
from ..errors import BadRequest

__all__ = ["MessagesHandler"]

# Seq numbers are JavaScript-safe integers.
MAX_SEQ = 2**53 - 1


class MessagesHandler(BaseHandler):
    _waiting: asyncio.Future[PollAnswer] | None = None

    async def get(self, room_name: str) -> None:
        nick = self.current_nick()
        room_name = check_room(room_name)
        settings = self.node.settings
        since = int_param(self.get_query_argument("since", None), "since", default=None, low=0, high=MAX_SEQ)
        before = int_param(self.get_query_argument("before", None), "before", default=None, low=1, high=MAX_SEQ)
        limit = int_param(
            self.get_query_argument("limit", None), "limit",
            default=settings.poll_limit_default, low=1, high=settings.poll_limit_max,
        )
        wait = float_param(
            self.get_query_argument("wait", None), "wait",
            default=settings.poll_wait_default, low=0, high=settings.poll_wait_max,
        )
        assert limit is not None
        if since is not None and before is not None:
            raise BadRequest("give either since or before, not both", code="bad_param")

        hub = self.node.hub
        if since is None:
            # History: the newest `limit` messages (before `before`), at once.
            messages = await hub.read_before(room_name, before, limit)
            room = await hub.room(room_name)
            self.node.note_seen(nick_key(nick), messages)
            self.write_json(encode_poll_body(messages, room.last_seq))
            return

        now = time.monotonic()
        self.node.announce(self.node.presence.poll(room_name, nick, nick_key(nick), now=now, wait=wait))
        room = await hub.room(room_name)
        # A cursor past the end (the store was reset, or a client's bug) means
        # "everything from now on", as a WebSocket join treats it.
        since = min(since, room.last_seq)
        if since < room.last_seq or wait == 0:
            messages = await hub.read_after(room, since, limit)
            self.node.note_seen(nick_key(nick), messages)
            self.write_json(encode_poll_body(messages, room.last_seq))
            return

        future = self._waiting = hub.wait(room, since, limit)
        await asyncio.wait((future,), timeout=wait)
        self._waiting = None
        hub.forget_waiter(room, future, now=time.monotonic())
        if future.cancelled():
            return  # the poller hung up
        if future.done():
            answer = future.result()
            self.node.note_seen(nick_key(nick), answer.messages)
            self.write_json(answer.body)
        else:
            future.cancel()
            self.write_json(encode_poll_body((), room.last_seq))

    def on_connection_close(self) -> None:
        if self._waiting is not None:
            self._waiting.cancel()

    async def post(self, room_name: str) -> None:
        nick = self.current_nick()
        room_name = check_room(room_name)
        data = self.json_body()
        body = data.get("body")
        if not isinstance(body, str):
            raise BadRequest("body must be a string", code="bad_field")
        cid = check_client_id(data.get("id"))
        self.node.check_http_rate(nick_key(nick))
        message = await self.node.send(room=room_name, nick=nick, body=body, id=cid)
        self.write_json({"id": cid, "seq": message["seq"]})

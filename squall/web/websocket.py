"""``/ws``: the chat over WebSocket.

Frames are parsed by :func:`squall.protocol.parse_command`; every bad frame is
answered with an ``error`` and the connection stays open, except frames over
``max_frame_bytes`` (Tornado closes with 1009) and a bad token (close 4001).

Fan-out writes the broadcast's pre-built frame straight into the stream, so a
message costs one encode for the whole room, not one per member. Each member's
outbound buffer is bounded (``outbound_bytes``): above half of it, ephemeral
events for that member are dropped; when it would overflow, the member is
closed with 4008 and told its last delivered seq per room, to resume with
``since``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlparse

import orjson
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ..errors import ClientError, RateLimited
from ..frames import Broadcast, encode_text_frame
from ..limits import TokenBucket
from ..protocol import Command, Join, Leave, Ping, Send, Typing, nick_key, parse_command
from .auth import nick_from_token
from .base import BaseHandler, token_from_request
from .streams import buffered_bytes, write_now

__all__ = ["ChatSocket", "CLOSE_UNAUTHORIZED", "CLOSE_TOO_SLOW"]

log = logging.getLogger("squall.ws")

CLOSE_GOING_AWAY = 1001
CLOSE_UNAUTHORIZED = 4001
CLOSE_TOO_SLOW = 4008
# A client may announce typing in a room at most this often; more is dropped quietly.
TYPING_INTERVAL = 2.0


class ChatSocket(WebSocketHandler):
    def initialize(self, node: Any) -> None:
        self.node = node
        self.nick: str | None = None
        self.nick_key = ""
        self.closed = False
        self.rooms: dict[str, int] = {}  # room → last seq delivered
        self.stream: IOStream | None = None
        self.bucket: TokenBucket | None = None
        self._typing_at: dict[str, float] = {}

    # Tornado's WebSocketHandler is not our BaseHandler; share its header rules.
    set_default_headers = BaseHandler.set_default_headers

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if not self.node.settings.websocket or self.node.stopping:
            self.set_status(403 if not self.node.stopping else 503)
            self.set_header("Content-Type", "application/json; charset=utf-8")
            reason = "WebSocket is disabled on this server; use long-polling or SSE" \
                if not self.node.settings.websocket else "the server is shutting down"
            self.finish(orjson.dumps({"code": "websocket_disabled" if not self.node.settings.websocket
                                      else "unavailable", "reason": reason}))
            return
        token, _by_cookie = token_from_request(self)
        self.nick = nick_from_token(
            self.node.secret, token, max_age_days=self.node.settings.token_max_age_days
        )
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        # Cookies ride along on cross-site WebSocket handshakes; only our own
        # pages (and configured origins) may open one.
        if origin in self.node.settings.allowed_origins:
            return True
        return urlparse(origin).netloc.lower() == self.request.host.lower()

    def get_compression_options(self) -> None:
        # permessage-deflate would compress per member, undoing encode-once.
        return None

    def open(self, *args: Any, **kwargs: Any) -> None:
        if self.nick is None:
            self.closed = True
            self.close(CLOSE_UNAUTHORIZED, "unauthorized: missing or invalid token")
            return
        assert self.ws_connection is not None
        self.nick_key = nick_key(self.nick)
        self.stream = self.ws_connection.stream  # type: ignore[attr-defined]
        self.set_nodelay(True)
        self.bucket = TokenBucket(
            rate=self.node.settings.send_rate, burst=self.node.settings.send_burst,
            now=time.monotonic(),
        )
        self.node.websockets.add(self)

    def on_message(self, message: str | bytes) -> None:
        if self.closed or self.nick is None:
            return
        if isinstance(message, bytes):
            self.send_error_frame("binary_frame", "binary frames are not supported; send JSON text frames")
            return
        try:
            command = parse_command(message)
        except ClientError as exc:
            self.send_error_frame(exc.code, exc.reason)
            return
        self._dispatch(command)

    def _dispatch(self, command: Command) -> None:
        if isinstance(command, Send):
            asyncio.ensure_future(self._send(command))
        elif isinstance(command, Join):
            asyncio.ensure_future(self._join(command))
        elif isinstance(command, Leave):
            self._leave(command.room)
        elif isinstance(command, Typing):
            self._typing(command.room)
        elif isinstance(command, Ping):
            self.send_json({"type": "pong"})

    async def _send(self, command: Send) -> None:
        assert self.bucket is not None and self.nick is not None
        try:
            if not self.bucket.take(now=time.monotonic()):
                raise RateLimited(
                    f"more than {self.node.settings.send_rate:g} messages per second;"
                    f" retry in {self.bucket.retry_after():.2f} s"
                )
            message = await self.node.send(
                room=command.room, nick=self.nick, body=command.body, id=command.id
            )
        except ClientError as exc:
            self.send_error_frame(exc.code, exc.reason, id=command.id)
            return
        except Exception:
            log.exception("send %s/%s failed", command.room, command.id)
            self.send_error_frame("internal", "the server could not take this message", id=command.id)
            return
        self.send_json({"type": "ack", "id": command.id, "room": command.room, "seq": message["seq"]})

    async def _join(self, command: Join) -> None:
        assert self.nick is not None
        room_name = command.room
        if room_name not in self.rooms and len(self.rooms) >= self.node.settings.max_rooms_per_connection:
            self.send_error_frame(
                "too_many_rooms",
                f"a connection may join at most {self.node.settings.max_rooms_per_connection} rooms",
            )
            return
        if room_name in self.rooms:
            self._leave(room_name)  # a re-join restarts from its own `since`
        node = self.node
        self.rooms[room_name] = command.since or 0
        try:
            room, cursor = await node.hub.join(room_name, command.since)
        except Exception:
            log.exception("join %s failed", room_name)
            self.rooms.pop(room_name, None)
            self.send_error_frame("internal", f"could not join {room_name}")
            return
        if self.closed or room_name not in self.rooms:
            return
        self.rooms[room_name] = cursor
        node.announce(node.presence.connect(room_name, self.nick, nick_key(self.nick)))
        self.send_json({
            "type": "joined", "room": room_name, "seq": room.last_seq,
            "members": node.presence.members(room_name),
        })
        await node.hub.catch_up(self, room, cursor)

    def _leave(self, room_name: str) -> None:
        if self.rooms.pop(room_name, None) is None:
            return
        self.node.hub.leave(self, room_name, now=time.monotonic())
        assert self.nick is not None
        self.node.announce(self.node.presence.disconnect(room_name, nick_key(self.nick)))

    def _typing(self, room_name: str) -> None:
        assert self.nick is not None
        now = time.monotonic()
        if now - self._typing_at.get(room_name, -TYPING_INTERVAL) < TYPING_INTERVAL:
            return
        self._typing_at[room_name] = now
        self.node.publish_presence(room_name, self.nick, "typing")

    # -- hub.Member -----------------------------------------------------

    def subscribed(self, room: str) -> bool:
        return room in self.rooms

    def deliver(self, broadcast: Broadcast) -> None:
        stream = self.stream
        if self.closed or stream is None or stream.closed():
            return
        pending = buffered_bytes(stream)
        limit = self.node.settings.outbound_bytes
        if broadcast.ephemeral:
            if pending > limit // 2:
                return
        elif pending + len(broadcast.ws_frame) > limit:
            self._too_slow()
            return
        try:
            write_now(stream, broadcast.ws_frame)
        except StreamClosedError:
            self.closed = True
            return
        if broadcast.seq is not None:
            self.rooms[broadcast.room] = broadcast.seq
            if broadcast.mentions and self.nick_key in broadcast.mentions:
                self.node.note_seen(self.nick_key, (broadcast,))

    async def drain(self) -> None:
        if self.stream is not None and not self.stream.closed():
            try:
                await self.stream.write(b"")
            except StreamClosedError:
                self.closed = True

    def _too_slow(self) -> None:
        log.info("closing %s: outbound buffer over %d bytes", self.nick, self.node.settings.outbound_bytes)
        self.send_json({
            "type": "error", "code": "too_slow",
            "reason": "you fell too far behind; reconnect and join with since=<seq> for each room",
            "rooms": dict(self.rooms),
        })
        self._close_member(CLOSE_TOO_SLOW, "too slow: resume with since")

    # -- sending helpers ------------------------------------------------

    def send_json(self, value: dict[str, Any]) -> None:
        if self.stream is None or self.stream.closed():
            return
        try:
            write_now(self.stream, encode_text_frame(orjson.dumps(value)))
        except StreamClosedError:
            self.closed = True

    def send_error_frame(self, code: str, reason: str, **extra: Any) -> None:
        self.send_json({"type": "error", **extra, "code": code, "reason": reason})

    def _close_member(self, code: int, reason: str) -> None:
        self._forget_member()
        try:
            self.close(code, reason)
        except WebSocketClosedError:
            pass

    def _forget_member(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.node.websockets.discard(self)
        for room_name in list(self.rooms):
            self._leave(room_name)

    def on_close(self) -> None:
        self._forget_member()

    def on_ping(self, data: bytes) -> None:
        pass

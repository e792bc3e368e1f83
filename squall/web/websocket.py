"""``/ws``: the chat over WebSocket, on a socket Squall owns after the handshake.

Theory of operation. Tornado parses the upgrade request, and
:class:`WebSocketEndpoint` checks it (WebSocket enabled, RFC 6455 headers,
Origin) the way any handler checks a request. Then it writes the ``101``
answer itself and hands the bare socket to a :class:`ChatConnection`: one
``__slots__`` object per client, fed by the event loop's reader callback, with
the framing done by the sans-I/O ``websockets.protocol.Protocol``
(fragmentation, control frames, the close handshake, size limits), made when
bytes arrive and let go between frames (``web/framing.py``). Owning the socket
is what keeps an idle connection to a few KiB — no coroutine, future, timer,
framing state or queue per connection while it is idle — and lets fan-out hand
one pre-built frame to ``socket.send`` for every member.

A bad token still completes the handshake and then closes with 4001, because
a browser cannot read the status of a refused upgrade, only a close code. Such
a socket goes to a :class:`RefusedConnection`, which has no chat commands at
all, never to a :class:`ChatConnection` (which cannot be made without a nick):
frames sent in the same read as the upgrade request are dropped like any other.

Frames are parsed by :func:`squall.protocol.parse_command`; every bad frame is
answered with an ``error`` and the connection stays open, except frames over
``max_frame_bytes`` (close 1009) and invalid UTF-8 (close 1007).

Each member's outbound buffer is bounded (``outbound_bytes``), and everything
written to it counts, the answers to the client's own frames as much as
broadcasts: above half of it, ephemeral events for that member are dropped;
above three quarters (:func:`~squall.limits.high_water`) the socket is no
longer read until the buffer is back at half, so a client that sends without
reading its answers is held back by TCP; when a message or an answer would
overflow it, the member is told its last delivered seq per room and closed
with 4008. Every close ends in an abort after ``close_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from itertools import islice, repeat
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import orjson
from tornado.http1connection import HTTP1Connection
from tornado.websocket import WebSocketProtocol13
from websockets.frames import Frame, Opcode
from websockets.protocol import SEND_EOF, Protocol, Side, State

from ..errors import (
    BadRequest,
    ClientError,
    Forbidden,
    Unavailable,
    UpgradeRequired,
)
from ..frames import Batch, Broadcast, encode_text_frame
from ..limits import Outbound, TokenBucket, high_water, low_water, outbound_verdict
from ..presence import members_fields
from ..protocol import Change, Command, Join, Leave, Ping, Send, Typing, nick_key, parse_command
from ..rooms import Refusal
from .access import UNKNOWN
from .base import BaseHandler
from .framing import between_frames, new_framing
from .streams import receive, take_socket

if TYPE_CHECKING:
    from ..config import Settings
    from ..hub import Member
    from .node import WebNode

__all__ = [
    "WebSocketEndpoint", "ChatConnection", "RefusedConnection", "fan_out", "CLOSE_UNAUTHORIZED",
    "CLOSE_TOO_SLOW", "check_upgrade",
]

log = logging.getLogger("squall.ws")
# websockets logs every closed connection at INFO; that is our job, at our level.
_frames_log = logging.getLogger("squall.ws.frames")
_frames_log.setLevel(logging.WARNING)

CLOSE_GOING_AWAY = 1001
CLOSE_INVALID_DATA = 1007
CLOSE_UNAUTHORIZED = 4001
CLOSE_TOO_SLOW = 4008
# Most bytes queued for a refused (unauthenticated) client before it is aborted.
REFUSED_BUFFER = 4096
# A client may announce typing in a room at most this often; more is dropped quietly.
TYPING_INTERVAL = 2.0
_READ_SIZE = 64 * 1024


class WebSocketEndpoint(BaseHandler):
    """Checks the upgrade request, answers 101 and hands over the socket."""

    async def get(self) -> None:
        node = self.node
        if not node.settings.websocket:
            raise Forbidden(
                "WebSocket is disabled on this server; use long-polling or SSE",
                code="websocket_disabled",
            )
        if node.stopping:
            raise Unavailable("the server is shutting down")
        key = self._check_upgrade()
        session = self.session  # the token was checked in prepare(), the store asked if need be
        nick = session.nick if session is not None else None
        address = self.address_key
        # Counted with or without a session: a refused socket lives up to
        # close_timeout, and a flood of them must not escape the per-address bound.
        node.limits.open_connection(address)  # refused before the upgrade; released when closed

        # From here on this is no HTTP exchange: Tornado must not finish it.
        self._auto_finish = False
        self.set_status(101)
        self.application.log_request(self)
        assert isinstance(self.request.connection, HTTP1Connection)
        stream = self.request.connection.detach()
        sock, leftover = take_socket(stream)
        accept = WebSocketProtocol13.compute_accept_value(key)
        handshake = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode("ascii")
        if nick is None:
            # No ChatConnection at all: whatever frames came with the request
            # (``leftover``) or come later, nothing can dispatch them.
            RefusedConnection(sock, node.settings, on_closed=lambda: node.limits.close_connection(address)).start(
                handshake, leftover
            )
            return
        connection = ChatConnection(node, sock, nick, address)
        connection.session_id = session.id if session is not None else ""
        connection.write(handshake)
        connection.start(leftover)

    def _check_upgrade(self) -> str:
        return check_upgrade(self.request.headers.get, self.request.host, self.node.settings.allowed_origins)


def check_upgrade(header: Callable[[str], str | None], host: str, allowed_origins: tuple[str, ...]) -> str:
    """Check an upgrade request's headers (``header(name)`` reads one) as RFC
    6455 §4.2.1 asks, and its ``Origin``; returns the ``Sec-WebSocket-Key``, or
    raises the :class:`ClientError` to answer with."""
    if (header("Upgrade") or "").lower() != "websocket":
        raise BadRequest('Can "Upgrade" only to "WebSocket"')
    connection_tokens = {t.strip().lower() for t in (header("Connection") or "").split(",")}
    if "upgrade" not in connection_tokens:
        raise BadRequest('"Connection" must include "Upgrade"')
    if header("Sec-WebSocket-Version") != "13":
        raise UpgradeRequired("only WebSocket version 13 is supported")
    key = header("Sec-WebSocket-Key") or ""
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise BadRequest("Sec-WebSocket-Key must be 16 bytes in base64")
    origin = header("Origin")
    # Cookies ride along on cross-site handshakes; only our own pages (and
    # configured origins) may open a socket.
    if origin is not None and origin not in allowed_origins and urlparse(origin).netloc.lower() != host.lower():
        raise Forbidden(f"cross-origin WebSocket from {origin[:80]} refused")
    return key


class RefusedConnection:
    """A WebSocket without a valid session: it is told close 4001, and nothing else.

    It has no chat commands to dispatch, so nothing it sends can be acted on,
    whether its frames came in the same read as the upgrade request or later:
    they are parsed only to find the client's close reply, then dropped. Its
    output (the close frame, and pongs the framing layer owes until the client
    closes) is capped at :data:`REFUSED_BUFFER` bytes; past that, or after
    ``close_timeout`` seconds, the socket is aborted.
    """

    __slots__ = ("sock", "fd", "loop", "protocol", "on_closed", "_unsent", "_abort_handle")

    def __init__(self, sock: socket.socket, settings: Settings, *, on_closed: Callable[[], None]) -> None:
        self.sock = sock
        self.on_closed = on_closed  # gives back the connection slot
        self.fd = sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.protocol = Protocol(Side.SERVER, max_size=settings.max_frame_bytes, logger=_frames_log)
        self._unsent = b""
        self._abort_handle = self.loop.call_later(settings.close_timeout, self._finish)

    def start(self, handshake: bytes, leftover: bytes) -> None:
        """Send the 101 answer and close 4001; then read only for the close reply."""
        self.protocol.send_close(CLOSE_UNAUTHORIZED, "unauthorized: missing or invalid token")
        self._unsent = handshake
        self.loop.add_reader(self.fd, self._on_readable)
        self._receive(leftover)

    def _on_readable(self) -> None:
        data = receive(self.sock, _READ_SIZE)
        if data is None:
            return
        if data:
            self._receive(data)
        else:
            self._finish()

    def _receive(self, data: bytes) -> None:
        if data:
            self.protocol.receive_data(data)
        self.protocol.events_received()  # dropped unread: see the class docstring
        done = False
        for output in self.protocol.data_to_send():
            if output is SEND_EOF or output == b"":
                done = True  # the close handshake is over (or failed): hang up
            else:
                self._unsent += output
        if done or len(self._unsent) > REFUSED_BUFFER or self.protocol.state is State.CLOSED:
            self._finish()
            return
        self._flush()

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self._unsent) if self._unsent else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._finish()
            return
        self._unsent = self._unsent[sent:]
        if self._unsent:
            self.loop.add_writer(self.fd, self._flush)  # replaces any earlier registration
        else:
            self.loop.remove_writer(self.fd)

    def _finish(self) -> None:
        if self.sock.fileno() < 0:
            return
        self._abort_handle.cancel()
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock.close()
        self._unsent = b""
        self.on_closed()


class ChatConnection:
    """One client's WebSocket: socket I/O, framing, chat commands, room membership."""

    __slots__ = (
        "node", "sock", "fd", "loop", "protocol", "nick", "nick_key", "address", "rooms", "joins",
        "typing_at", "closed", "_out", "_out_marks", "_out_size", "_writing", "_paused",
        "_fragments", "_drained", "_abort_handle", "session_id", "_catching_up", "_ordered",
    )

    def __init__(self, node: WebNode, sock: socket.socket, nick: str, address: str) -> None:
        if not nick:
            raise ValueError("a ChatConnection needs the nick of a valid session")
        self.node = node
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = asyncio.get_running_loop()
        # The framing state machine, only while there is something to frame:
        # None between two frames of an open connection (web/framing.py).
        self.protocol: Protocol | None = None
        self.nick = nick
        self.nick_key = nick_key(self.nick)
        self.address = address  # the client's, as limits key it; counted open until _release
        # room → last seq handed over, while catching up or through the slow
        # path; in a room where it is live, the hub's position is newer (_positions).
        self.rooms: dict[str, int] = {}
        self.joins: TokenBucket | None = None
        self.typing_at: dict[str, float] | None = None
        self.closed = False
        # Bytes the kernel did not take yet, in order; beside each, the message
        # (room, seq) it carries, so a cut-off client is told what it really got.
        # None while nothing is queued, which is nearly always: two empty
        # deques would be 1.5 KiB of every idle connection.
        self._out: deque[bytes] | None = None
        self._out_marks: deque[tuple[str, int] | None] | None = None
        self._out_size = 0
        self._writing = False
        self._paused = False  # not reading: too much is queued for the client (back-pressure)
        self._fragments: tuple[Opcode, list[bytes]] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._abort_handle: asyncio.TimerHandle | None = None
        self.session_id = ""  # ends with that session: WebNode.end_sessions
        self._catching_up = 0  # rooms being caught up: deliveries there note the position
        self._ordered: asyncio.Lock | None = None  # joins and leaves, in order (made on the first)

    # -- socket I/O -----------------------------------------------------

    def start(self, leftover: bytes) -> None:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self.node.settings.socket_send_buffer:
            self.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, self.node.settings.socket_send_buffer
            )
        self.node.websockets.add(self)
        self.loop.add_reader(self.fd, self._on_readable)
        if leftover:
            self._receive(leftover)

    def _on_readable(self) -> None:
        data = receive(self.sock, _READ_SIZE)
        if data is None:
            return
        if data:
            self._receive(data)
        else:
            self.loop.remove_reader(self.fd)
            self._framing().receive_eof()
            self._after_protocol()

    def _framing(self) -> Protocol:
        protocol = self.protocol
        if protocol is None:
            protocol = self.protocol = new_framing(
                max_size=self.node.settings.max_frame_bytes, logger=_frames_log
            )
        return protocol

    def _open(self) -> bool:
        return self.protocol is None or self.protocol.state is State.OPEN

    def _receive(self, data: bytes) -> None:
        protocol = self._framing()
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Frame):
                self._on_frame(event)
        self._after_protocol()
        if self.protocol is not None and self._fragments is None and between_frames(self.protocol):
            self.protocol = None  # an idle connection keeps no framing state

    def _after_protocol(self) -> None:
        if self.protocol is None:
            return
        output = self.protocol.data_to_send()
        frames = [data for data in output if data]  # SEND_EOF is b""
        eof = len(frames) < len(output)
        if frames:
            # One write for a read's worth of pongs (thousands, from a flood of
            # pings), not one each; they count like any reply.
            self._reply(frames[0] if len(frames) == 1 else b"".join(frames))
        if eof:
            self._shutdown_write()
        if self.protocol.state is State.CLOSED:
            self._finish()
        elif self.protocol.close_expected() and self._abort_handle is None:
            timeout = self.node.settings.close_timeout
            self._abort_handle = self.loop.call_later(timeout, self._finish)

    def write(self, data: bytes, room: str | None = None, seq: int = 0) -> None:
        """Send ``data`` now if the kernel takes it, else queue it in order.

        ``room`` and ``seq`` name the message ``data`` carries, if it is one.
        With nothing queued, the bytes go straight to the kernel and nothing
        is allocated.
        """
        if not self._out:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._lost()  # a reset peer, or a socket already closed
                return
            if sent == len(data):
                return
            data = data[sent:]
        self._queue(data, room, seq)

    def _queue(self, data: bytes, room: str | None, seq: int) -> None:
        """Keep what the kernel did not take, in order, and watch for writability."""
        if self._out is None or self._out_marks is None:
            self._out, self._out_marks = deque(), deque()
        self._out.append(data)
        self._out_marks.append((room, seq) if room is not None else None)
        self._out_size += len(data)
        if not self._paused and self._out_size > high_water(self.node.settings.outbound_bytes):
            # Stop reading: a client that does not read its answers gets no
            # more of them, and TCP pushes back on its sending.
            self._paused = True
            self.loop.remove_reader(self.fd)
        if not self._writing:
            self._writing = True
            self.loop.add_writer(self.fd, self._on_writable)

    def _on_writable(self) -> None:
        out, marks = self._out, self._out_marks
        while out:
            chunk = out[0]
            try:
                sent = self.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._finish()
                return
            self._out_size -= sent
            if sent < len(chunk):
                out[0] = chunk[sent:]
                break
            out.popleft()
            marks.popleft()  # type: ignore[union-attr]
        if self._out_size <= low_water(self.node.settings.outbound_bytes):
            self._below_low_water()
        if self._out:
            return
        self._out = self._out_marks = None
        self.loop.remove_writer(self.fd)
        self._writing = False
        if self.protocol is not None and self.protocol.state is State.CLOSING and self.protocol.eof_sent:
            self._half_close()

    def _below_low_water(self) -> None:
        """The client has caught up enough: wake a waiting backlog, read again."""
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None
        if self._paused:
            self._paused = False
            self.loop.add_reader(self.fd, self._on_readable)

    def _shutdown_write(self) -> None:
        if not self._out:
            self._half_close()
        # else: _on_writable half-closes once the queue is empty

    def _half_close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _finish(self) -> None:
        """Release everything: the end of every close path."""
        if self.sock.fileno() < 0:
            return
        self._release()
        self._forget_member()

    def _lost(self) -> None:
        """A write found the peer gone. Let go of the socket now, but of the rooms
        only on the next loop turn: leaving announces presence to the other
        members, and doing that inside a fan-out to them would recurse through
        every dead peer at once (a mass disconnect is a thousand of them)."""
        if self.sock.fileno() >= 0:
            self._release()
            self.loop.call_soon(self._forget_member)

    def _release(self) -> None:
        """Close the socket and drop everything queued for it."""
        if self._abort_handle is not None:
            self._abort_handle.cancel()
            self._abort_handle = None
        self.loop.remove_reader(self.fd)
        self._paused = False
        if self._writing:
            self.loop.remove_writer(self.fd)
            self._writing = False
        self.sock.close()
        self.node.limits.close_connection(self.address)
        self._out = self._out_marks = None
        self._out_size = 0
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake; the socket is aborted if it does not finish."""
        if self._open():
            self._framing().send_close(code, reason)
        self._forget_member()
        self._after_protocol()

    # -- frames ---------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        # The protocol object has already checked the order of fragments and
        # the size of the whole message (RFC 6455 §5.4); this only joins them.
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._on_message(bytes(frame.data), binary=opcode is Opcode.BINARY)
            else:
                self._fragments = (opcode, [bytes(frame.data)])
        elif opcode is Opcode.CONT and self._fragments is not None:
            first_opcode, parts = self._fragments
            parts.append(bytes(frame.data))
            if frame.fin:
                self._fragments = None
                self._on_message(b"".join(parts), binary=first_opcode is Opcode.BINARY)

    def _on_message(self, data: bytes, *, binary: bool) -> None:
        if self.closed:
            return
        if binary:
            self.send_error("binary_frame", "binary frames are not supported; send JSON text frames")
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            # RFC 6455 §8.1: invalid UTF-8 in a text message fails the connection.
            self._framing().fail(CLOSE_INVALID_DATA, f"invalid UTF-8 at position {exc.start}")
            self._forget_member()
            return
        try:
            command = parse_command(text)
        except ClientError as exc:
            if exc.id is not None:
                self.send_error(exc.code, exc.reason, id=exc.id)
            else:
                self.send_error(exc.code, exc.reason)
            return
        self._dispatch(command)

    # -- chat commands --------------------------------------------------

    def _dispatch(self, command: Command) -> None:
        if isinstance(command, (Send, Change)):
            asyncio.ensure_future(self._send(command))
        elif isinstance(command, Join):
            asyncio.ensure_future(self._join(command))
        elif isinstance(command, Leave):
            asyncio.ensure_future(self._leave_in_turn(command.room))
        elif isinstance(command, Typing):
            self._typing(command.room)
        elif isinstance(command, Ping):
            self.send_json({"type": "pong"})

    async def _send(self, command: Send | Change) -> None:
        # A change (edit, delete, reaction) is answered as a send is: an ack
        # with its own seq, or an error with its id; it counts as a send.
        try:
            self.node.limits.check_send(self.nick_key, self.address, now=time.monotonic())
            if isinstance(command, Change):
                message = await self.node.change(command, nick=self.nick)
            else:
                message = await self.node.send(
                    room=command.room, nick=self.nick, body=command.body, id=command.id,
                    reply_to=command.reply_to, attachments=command.attachments,
                )
        except ClientError as exc:
            self.send_json({"type": "error", "id": command.id, **exc.to_dict()})
            return
        except Exception:
            log.exception("send %s/%s failed", command.room, command.id)
            self.send_error("internal", "the server could not take this message", id=command.id)
            return
        self.send_json({"type": "ack", "id": command.id, "room": command.room, "seq": message["seq"]})

    def _gate(self) -> asyncio.Lock:
        if self._ordered is None:
            self._ordered = asyncio.Lock()
        return self._ordered

    async def _join(self, command: Join) -> None:
        # The access check may read the store: the gate keeps a connection's joins
        # and leaves in the order it sent them while one waits (FIFO), as the
        # turns alone do when nothing waits.
        async with self._gate():
            if not await self._admit(command):
                return
        await self._joined(command)

    async def _admit(self, command: Join) -> bool:
        """Turn, limits and access: whether the join may go on (``rooms`` then holds the room)."""
        # A storm of joins takes turns with live messages (squall/turns.py).
        # Leaves queue behind them, so a connection's joins and leaves keep their order.
        await self.node.joins.wait_turn()
        if self.closed:
            return False
        room_name = command.room
        limit = self.node.settings.max_rooms_per_connection
        if room_name not in self.rooms and len(self.rooms) >= limit:
            self.send_error("too_many_rooms", f"a connection may join at most {limit} rooms", room=room_name)
            return False
        # Each join announces presence to every member: a join/leave flood is a
        # broadcast flood. Leaves need no bucket of their own: each follows a join.
        # Limited per connection, and per user so that reconnecting gains nothing.
        now = time.monotonic()
        if self.joins is None:
            self.joins = self.node.limits.join_bucket(now=now)
        try:
            self.node.limits.check_join(self.nick_key, self.joins, now=now)
        except ClientError as exc:
            self.send_json({"type": "error", "room": room_name, **exc.to_dict()})
            return False
        node = self.node
        try:
            await node.access.may_read(room_name, self.nick_key)
        except ClientError as exc:
            self.send_json({"type": "error", "room": room_name, **exc.to_dict()})
            return False
        except Exception:
            log.exception("checking access to %s failed", room_name)
            self.send_error("internal", f"could not join {room_name}", room=room_name)
            return False
        if self.closed:
            return False
        if room_name in self.rooms:
            self._leave(room_name)  # a re-join restarts from its own `since`
        self.rooms[room_name] = command.since or 0
        return True

    async def _joined(self, command: Join) -> None:
        """The rest of an admitted join: the hub, presence, ``joined``, the catch-up."""
        node = self.node
        room_name = command.room
        if room_name not in self.rooms:
            return  # left meanwhile
        try:
            room, cursor = await node.hub.join(room_name, command.since)
        except Exception:
            log.exception("join %s failed", room_name)
            self.rooms.pop(room_name, None)
            self.send_error("internal", f"could not join {room_name}")
            return
        if self.closed or room_name not in self.rooms:
            return
        self.rooms[room_name] = cursor
        node.access.note_join(room_name, self.nick_key)
        node.announce(node.presence.connect(room_name, self.nick, self.nick_key))
        # The member count and a first page: a room's whole list would make
        # filling it O(N²). The rest is paged from /members.
        page = await node.room_presence.page(room_name, after=None, limit=node.settings.members_page)
        if self.closed or room_name not in self.rooms:
            return
        self.send_json({"type": "joined", "room": room_name, "seq": room.last_seq, **members_fields(page)})
        self._catching_up += 1
        try:
            await node.hub.catch_up(self, room, cursor)
        finally:
            self._catching_up -= 1

    async def _leave_in_turn(self, room_name: str) -> None:
        """A ``leave`` frame: after the joins the connection sent before it."""
        async with self._gate():
            await self.node.joins.wait_turn()
            self._leave(room_name)

    def _leave(self, room_name: str) -> None:
        if self.rooms.pop(room_name, None) is None:
            return
        self.node.hub.leave(self, room_name, now=time.monotonic())
        self.node.announce(self.node.presence.disconnect(room_name, self.nick_key))

    def evict(self, room_name: str, code: str, reason: str) -> None:
        """Membership of ``room_name`` ended (kick, ban, removal): leave it and say why."""
        if room_name in self.rooms and not self.closed:
            self._leave(room_name)
            self.send_error(code, reason, room=room_name)

    def _typing(self, room_name: str) -> None:
        verdict = self.node.access.cached_refusal(room_name, self.nick_key, now=time.monotonic())
        if verdict is UNKNOWN:
            asyncio.ensure_future(self._typing_checked(room_name))
            return
        if verdict is not None:
            assert isinstance(verdict, Refusal)
            self.send_error(verdict.code, verdict.reason, room=room_name)
            return
        self._typing_allowed(room_name)

    async def _typing_checked(self, room_name: str) -> None:
        try:
            await self.node.access.may_read(room_name, self.nick_key)
        except ClientError as exc:
            self.send_json({"type": "error", "room": room_name, **exc.to_dict()})
            return
        except Exception:
            log.exception("checking access to %s failed", room_name)
            return
        if not self.closed:
            self._typing_allowed(room_name)

    def _typing_allowed(self, room_name: str) -> None:
        now = time.monotonic()
        if self.typing_at is None:
            self.typing_at = {}
        if now - self.typing_at.get(room_name, -TYPING_INTERVAL) < TYPING_INTERVAL:
            return
        self.typing_at[room_name] = now
        self.node.typing(room_name, self.nick)

    # -- hub.Member -----------------------------------------------------

    def subscribed(self, room: str) -> bool:
        return room in self.rooms

    def deliver(self, broadcast: Broadcast) -> None:
        seq = broadcast.seq
        if self._out_size or seq is None or self.closed or self._catching_up:
            self._deliver_checked(broadcast)
            return
        # Fan-out's hot path, once per member per message: nothing is queued,
        # so the pre-built frame goes straight to the kernel. It touches this
        # object and its socket, nothing else of the member (in a room of
        # thousands, every other object is a cache miss per member): the
        # position in the room is the hub's (_positions), and the set of
        # mentioned nicks is looked at only when there is one.
        frame = broadcast.ws_frame
        try:
            sent = self.sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._lost()  # a reset peer, or a socket already closed
            return
        if sent != len(frame):
            self._queue(frame[sent:], broadcast.room, seq)
        if broadcast.mentions and self.nick_key in broadcast.mentions:
            self.node.note_seen(self.nick_key, (broadcast,))

    def _deliver_checked(self, broadcast: Broadcast) -> None:
        """:meth:`deliver` with the outbound limits applied, and the position noted."""
        if self.closed:
            return
        seq = broadcast.seq
        if self._out or seq is None:
            # Something is queued already, or the event may be dropped: apply the limits.
            verdict = outbound_verdict(
                buffered=self._out_size, size=len(broadcast.ws_frame),
                limit=self.node.settings.outbound_bytes, ephemeral=broadcast.ephemeral,
            )
            if verdict is Outbound.DROP:
                return
            if verdict is Outbound.CUT:
                self._too_slow()
                return
        if seq is None:
            self.write(broadcast.ws_frame)
            return
        self.write(broadcast.ws_frame, broadcast.room, seq)
        self.rooms[broadcast.room] = seq
        if self.nick_key in broadcast.mentions:
            self.node.note_seen(self.nick_key, (broadcast,))

    def deliver_batch(self, batch: Batch) -> None:
        if self._out_size or self.closed or self._catching_up:
            for broadcast in batch.broadcasts:  # the limits apply message by message
                self._deliver_checked(broadcast)
            return
        self.write(batch.ws_frames, batch.room, batch.first_seq)
        if batch.mentions and self.nick_key in batch.mentions:
            self.node.note_seen(self.nick_key, batch.broadcasts)

    def _positions(self) -> dict[str, int]:
        """The seq of the last message handed over, per joined room."""
        hub = self.node.hub
        positions = {}
        for room, noted in self.rooms.items():
            live = hub.delivered_to(self, room)
            positions[room] = noted if live is None else max(noted, live)
        return positions

    async def drain(self) -> None:
        if self._out_size > low_water(self.node.settings.outbound_bytes) and not self.closed:
            if self._drained is None:
                self._drained = self.loop.create_future()
            await asyncio.shield(self._drained)

    def _too_slow(self) -> None:
        log.info("closing %s: outbound buffer over %d bytes", self.nick, self.node.settings.outbound_bytes)
        # The queued backlog is useless now (the client resumes with `since`):
        # drop every whole frame after the first, which may be half sent, and
        # tell the client what it will really have got.
        positions = self._positions()
        while self._out is not None and self._out_marks is not None and len(self._out) > 1:
            data = self._out.pop()
            mark = self._out_marks.pop()
            self._out_size -= len(data)
            if mark is not None:
                room, seq = mark
                if room in positions:
                    positions[room] = min(positions[room], seq - 1)
        self.write(encode_text_frame(orjson.dumps({
            "type": "error", "code": "too_slow",
            "reason": "you fell too far behind; reconnect and join with since=<seq> for each room",
            "rooms": positions,
        })))
        self.close(CLOSE_TOO_SLOW, "too slow: resume with since")

    # -- sending helpers ------------------------------------------------

    def send_json(self, value: dict[str, Any]) -> None:
        if self._open():
            self._reply(encode_text_frame(orjson.dumps(value)))

    def _reply(self, data: bytes) -> None:
        """Write an answer to the client's own input (error, ack, pong, joined…).

        It counts against ``outbound_bytes`` exactly as a message does: one
        that would overflow the queue cuts the client off with 4008, and a
        client that is closing and does not even read that is aborted.
        """
        if self._out and outbound_verdict(
            buffered=self._out_size, size=len(data),
            limit=self.node.settings.outbound_bytes, ephemeral=False,
        ) is Outbound.CUT:
            if self._open():
                self._too_slow()
            else:
                self._finish()
            return
        self.write(data)

    def send_error(self, code: str, reason: str, **extra: Any) -> None:
        self.send_json({"type": "error", **extra, "code": code, "reason": reason})

    def _forget_member(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.node.websockets.discard(self)
        for room_name in list(self.rooms):
            self._leave(room_name)


def fan_out(members: list[Member], broadcast: Broadcast) -> None:
    """Hand ``broadcast`` to every member of a room, as each member's ``deliver``
    would one by one: the web node's :data:`~squall.hub.FanOut`.

    A chat message to WebSocket members with nothing queued (nearly all of
    them) is one ``socket.send`` each, made by ``map`` in C, with no Python
    call per member: at thousands of members that call was most of what a
    message cost besides the kernel's own work. Every other member — another
    transport, a connection with something queued, closing or catching up —
    and every socket that did not take the whole frame go through the same
    steps as :meth:`ChatConnection.deliver`.
    """
    if broadcast.seq is None:  # an event that may be dropped: every member's own limits
        for member in members:
            member.deliver(broadcast)
        return
    ready: list[ChatConnection] = []
    others: list[Member] = []
    for member in members:
        if type(member) is ChatConnection and not (member._out_size or member.closed or member._catching_up):
            ready.append(member)
        else:
            others.append(member)
    frame = broadcast.ws_frame
    size = len(frame)
    socks = [member.sock for member in ready]
    sent: list[int] = []
    while len(sent) < len(socks):
        try:
            # extend() keeps what map produced before an exception stopped it.
            sent.extend(map(socket.socket.send, islice(socks, len(sent), None), repeat(frame)))
        except (BlockingIOError, InterruptedError):
            sent.append(0)  # nothing taken: queued below
        except OSError:
            sent.append(-1)  # a reset peer, or a socket already closed
    if sent.count(size) != len(sent):
        for member, taken in zip(ready, sent):
            if taken < 0:
                member._lost()
            elif taken != size:
                member._queue(frame[taken:], broadcast.room, broadcast.seq)
    if broadcast.mentions:
        for member, taken in zip(ready, sent):
            if taken >= 0 and member.nick_key in broadcast.mentions:
                member.node.note_seen(member.nick_key, (broadcast,))
    for member in others:
        member.deliver(broadcast)

"""The Redis bus: many web nodes, one Redis, pub/sub channels per room.

Theory of operation. Each room has a channel (:mod:`.wire`); a node is
subscribed to a room's channel while its hub has the room open, and always to
the control channel. A node delivers its own broadcasts at once, without
Redis, and publishes them for the others; it skips its own when they come
back. The publish goes out before
the node's own fan-out: the broadcast is queued and the publisher woken, and
the local delivery runs one loop step later, after the publisher has written
the ``PUBLISH`` — so members on other nodes do not wait for this node's
members to be served first. Two connections per node:

*Publishing* goes through a bounded queue (``max_queue`` broadcasts) drained
by one task: everything queued while the previous round trip was out goes in
the next one, one ``PUBLISH`` per room in a pipeline. While Redis is
unreachable the queue holds what is published, and the task retries with
capped exponential back-off (``reconnect_min`` … ``reconnect_max``). When the
queue is full the oldest broadcast is dropped — counted and logged — and once
Redis takes publishes again the node publishes a ``resync`` notice: every node
reads every open room from the store, so the drop is repaired rather than
silent. A publish whose round trip failed is sent again; the hub drops the
duplicate messages.

*Subscribing* is one connection that this module owns outright (redis-py's
``PubSub`` reconnects by itself, which would hide exactly the loss that must be
repaired). A session on it subscribes every wanted channel, and once Redis has
confirmed them all it goes *live* and asks the receiver to resync every
subscribed room from the store: whatever was published while the node had no
subscription — Redis down, the connection killed, the node's output buffer
overflowing on the server — is in the store, so reading each room's
``last_seq`` after the subscriptions are confirmed leaves no gap, including
the newest message that no later one would reveal. A session ends on any
error, or when Redis has not answered a ``PING`` sent every ``ping_interval``
seconds within another; the next one starts after a back-off.

:meth:`RedisBus.subscribe` returns once Redis confirms the subscription, so a
room's ``last_seq`` read after it misses nothing; while the bus is down it
returns at once, and the room is resynced when a session goes live.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any

import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..backoff import backoff_delay
from ..frames import Broadcast
from ..throttled_log import ThrottledLog
from . import Receiver
from .wire import (
    BadBusMessage,
    control_channel,
    decode_broadcasts,
    decode_control,
    encode_broadcasts,
    encode_control,
    room_channel,
    room_of,
)

__all__ = ["RedisBus"]

log = logging.getLogger("squall.bus")

# Most broadcasts taken from the queue for one round trip of PUBLISHes.
PUBLISH_BATCH = 2000
# Most channels named in one SUBSCRIBE command when a session starts.
SUBSCRIBE_CHUNK = 1000
# Most control notices (ended sessions) waiting while Redis is unreachable;
# past that the oldest go (a token cache refuses ended sessions within its TTL anyway).
MAX_CONTROL_QUEUE = 1000
# How long close() waits for the publish queue to empty.
FLUSH_ON_CLOSE_SECONDS = 2.0
# Failures and drops are logged at most this often.
LOG_INTERVAL_SECONDS = 10.0
_CONNECTION_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class _SessionLost(Exception):
    pass


class RedisBus:
    """A :class:`~squall.bus.Bus` on Redis pub/sub.

    :param url: ``redis://[user:password@]host:port/db`` or ``rediss://…``.
    :param prefix: starts every channel name, so several Squalls (or tests)
        can share one Redis; default ``squall:``.
    :param max_queue: broadcasts waiting to be published; default 10,000.
    :param reconnect_min: first retry delay in seconds; default 0.05.
    :param reconnect_max: longest retry delay in seconds; default 5.
    :param ping_interval: seconds between pings on the subscription; one
        not answered within another is a dead connection. Default 5.
    """

    def __init__(
        self, url: str, *, prefix: str = "squall:", max_queue: int = 10_000,
        reconnect_min: float = 0.05, reconnect_max: float = 5.0, ping_interval: float = 5.0,
        origin: bytes | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.max_queue = max_queue
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.ping_interval = ping_interval
        self.origin = origin or secrets.token_hex(8).encode()
        # No retries inside redis-py: this module retries, and must see every
        # failure. RESP2, so that pub/sub arrives as replies on the subscription
        # connection (RESP3, redis-py 8's default, turns it into push callbacks).
        self._client = redis.asyncio.Redis.from_url(
            # No socket_timeout: redis-py would put every write in a task of its
            # own (asyncio.wait_for), after the local fan-out. Round trips are
            # bounded here (asyncio.timeout), dead subscriptions by PING.
            url, protocol=2, retry=Retry(NoBackoff(), 0), socket_timeout=None,
            socket_connect_timeout=2 * ping_interval, health_check_interval=0,
            client_name=self._client_name("pub"),
        )
        self._control = control_channel(prefix)
        # Called with each received bus message's lag in seconds (publish on
        # its node to receipt here); the web node points it at /metrics.
        self.lag_observer: Callable[[float], None] | None = None
        self._receiver: Receiver | None = None
        self._closing = False
        # Publishing.
        self._queue: deque[Broadcast] = deque()
        self._notices: deque[bytes] = deque(maxlen=MAX_CONTROL_QUEUE)
        self._queued = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing is queued or in flight
        self._idle.set()
        self._dropped_messages = False  # a message was dropped: a resync is owed
        self._publisher: asyncio.Task[None] | None = None
        # Subscribing.
        self._wanted: set[str] = set()  # rooms the hub has open
        self._connection: AbstractConnection | None = None
        self._live = False
        self.live = asyncio.Event()  # set while subscribed to every wanted channel (for /api/health and tests)
        self._requested: set[bytes] = set()  # channels asked for on this session
        self._subscribed: set[bytes] = set()  # channels Redis confirmed on this session
        self._confirmations: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._outbox: deque[tuple[Any, ...]] = deque()
        self._outbox_ready = asyncio.Event()
        self._last_heard = 0.0
        self._subscriber: asyncio.Task[None] | None = None
        self._trouble = ThrottledLog(log, interval=LOG_INTERVAL_SECONDS, level=logging.WARNING)
        self.counts = {
            "published": 0, "received": 0, "dropped": 0, "bad": 0, "sessions": 0, "resyncs": 0,
        }

    # -- life cycle ---------------------------------------------------------

    async def start(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self._publisher = asyncio.ensure_future(self._publish_loop())
        self._subscriber = asyncio.ensure_future(self._subscribe_loop())

    async def close(self) -> None:
        self._closing = True
        if self._publisher is not None and not self._idle.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), FLUSH_ON_CLOSE_SECONDS)
            except asyncio.TimeoutError:
                log.warning("bus: %d broadcasts not published at shutdown", len(self._queue))
        for task in (self._publisher, self._subscriber):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        await self._client.aclose()
        self._receiver = None

    def status(self) -> dict[str, Any]:
        return {
            "kind": "redis", "node": self.origin.decode(), "subscribed": self._live, "rooms": len(self._wanted),
            "queued": len(self._queue), **self.counts,
        }

    # -- publishing ---------------------------------------------------------

    def publish(self, broadcast: Broadcast) -> None:
        self.publish_all((broadcast,))

    def publish_all(self, broadcasts: Sequence[Broadcast]) -> None:
        if not broadcasts:
            return
        self._queue.extend(broadcasts)
        self._trim_queue()
        self._idle.clear()
        self._queued.set()  # the publisher's step comes before the local delivery's
        asyncio.get_running_loop().call_soon(self._deliver_locally, tuple(broadcasts))

    def _deliver_locally(self, broadcasts: Sequence[Broadcast]) -> None:
        if self._receiver is not None:
            self._receiver.receive_all(broadcasts)

    def publish_sessions_ended(self, session_ids: Collection[str]) -> None:
        if session_ids:
            self._notices.append(encode_control(self.origin, "ended", sorted(session_ids)))
            self._idle.clear()
            self._queued.set()

    def publish_access_changed(self, changes: Sequence[tuple[str, str, str]]) -> None:
        if changes:
            self._notices.append(encode_control(self.origin, "access", changes=changes))
            self._idle.clear()
            self._queued.set()

    def publish_seen(self, marks: Sequence[tuple[str, str, str]]) -> None:
        if marks:
            self._notices.append(encode_control(self.origin, "seen", changes=marks))
            self._idle.clear()
            self._queued.set()

    def _trim_queue(self) -> None:
        excess = len(self._queue) - self.max_queue
        if excess <= 0:
            return
        for _ in range(excess):
            if self._queue.popleft().seq is not None:
                self._dropped_messages = True
        self.counts["dropped"] += excess
        self._trouble.note(
            f"bus: publish queue full ({self.max_queue}); dropped the oldest broadcasts"
            " (other nodes will read the store for them)", now=time.monotonic(),
        )

    async def _publish_loop(self) -> None:
        attempt = 0
        while True:
            if not self._queue and not self._notices and not self._dropped_messages:
                self._idle.set()
                await self._queued.wait()
            self._queued.clear()
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), PUBLISH_BATCH))]
            notices = list(self._notices)
            try:
                await self._send_publishes(batch, notices)
            except _CONNECTION_ERRORS as exc:
                self._queue.extendleft(reversed(batch))
                self._trim_queue()
                self._trouble.note(f"bus: cannot publish to {self._where()}: {exc}", now=time.monotonic())
                await asyncio.sleep(self._delay(attempt))
                attempt += 1
                continue
            for _ in notices:
                self._notices.popleft()
            self.counts["published"] += len(batch)
            if attempt:
                log.info("bus: publishing to %s again", self._where())
            attempt = 0

    async def _send_publishes(self, batch: list[Broadcast], notices: list[bytes]) -> None:
        by_room: dict[str, list[Broadcast]] = {}
        for broadcast in batch:
            by_room.setdefault(broadcast.room, []).append(broadcast)
        pipe = self._client.pipeline(transaction=False)
        published_ms = int(time.time() * 1000)
        for room, broadcasts in by_room.items():
            channel = room_channel(self.prefix, room)
            for message in encode_broadcasts(self.origin, broadcasts, published_ms=published_ms):
                pipe.publish(channel, message)
        for notice in notices:
            pipe.publish(self._control, notice)
        owed_resync = self._dropped_messages
        if owed_resync:
            pipe.publish(self._control, encode_control(self.origin, "resync"))
        async with asyncio.timeout(2 * self.ping_interval):
            await pipe.execute()
        if owed_resync:
            self._dropped_messages = False
            log.warning("bus: told every node to read its rooms from the store after dropped publishes")

    # -- subscribing --------------------------------------------------------

    async def subscribe(self, room: str) -> None:
        self._wanted.add(room)
        if not self._live:
            return  # subscribed, and resynced, when the session goes live
        channel = room_channel(self.prefix, room)
        future = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(channel, deque()).append(future)
        self._requested.add(channel)
        self._command("SUBSCRIBE", channel)
        await future

    def unsubscribe(self, room: str) -> None:
        self._wanted.discard(room)
        if self._live:
            channel = room_channel(self.prefix, room)
            self._requested.discard(channel)
            self._command("UNSUBSCRIBE", channel)

    def _command(self, *args: Any) -> None:
        """Queue a command for the subscription connection, in order."""
        self._outbox.append(args)
        self._outbox_ready.set()

    async def _subscribe_loop(self) -> None:
        attempt = 0
        while not self._closing:
            connection: AbstractConnection = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            connection.client_name = self._client_name("sub")
            try:
                await connection.connect()  # type: ignore[no-untyped-call]
                self.counts["sessions"] += 1
                await self._session(connection)
            except (*_CONNECTION_ERRORS, _SessionLost) as exc:
                self._trouble.note(
                    f"bus: subscription to {self._where()} lost: {exc}; every open room will be"
                    " read from the store when it is back", now=time.monotonic(),
                )
            finally:
                went_live = self._live
                self._end_session()
                await connection.disconnect(nowait=True)
            if went_live:
                attempt = 0
            await asyncio.sleep(self._delay(attempt))
            attempt += 1

    async def _session(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._last_heard = asyncio.get_running_loop().time()
        channels = [self._control, *(room_channel(self.prefix, r) for r in self._wanted)]
        self._requested = set(channels)
        for start in range(0, len(channels), SUBSCRIBE_CHUNK):
            self._command("SUBSCRIBE", *channels[start : start + SUBSCRIBE_CHUNK])
        tasks = [
            asyncio.ensure_future(self._read(connection)),
            asyncio.ensure_future(self._write(connection)),
            asyncio.ensure_future(self._ping()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise _SessionLost("the subscription connection ended")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _end_session(self) -> None:
        self._live = False
        self.live.clear()
        self._connection = None
        self._requested.clear()
        self._subscribed.clear()
        self._outbox.clear()
        confirmations, self._confirmations = self._confirmations, {}
        for waiting in confirmations.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)  # the next session's resync covers the room

    async def _write(self, connection: AbstractConnection) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            commands = list(self._outbox)
            self._outbox.clear()
            if commands:
                await connection.send_packed_command(connection.pack_commands(commands), check_health=False)

    async def _ping(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_interval)
            silent = loop.time() - self._last_heard
            if silent > 2 * self.ping_interval:
                raise _SessionLost(f"no answer from Redis for {silent:.1f} s")
            self._command("PING")

    async def _read(self, connection: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            response = await connection.read_response(timeout=math.inf, disconnect_on_error=False)
            self._last_heard = loop.time()
            if not isinstance(response, list) or not response:
                continue
            kind = response[0]
            if kind == b"message" and len(response) == 3:
                self._on_message(response[1], response[2])
            elif kind == b"subscribe":
                self._on_subscribed(response[1])
            elif kind == b"unsubscribe":
                self._subscribed.discard(response[1])

    def _on_subscribed(self, channel: bytes) -> None:
        self._subscribed.add(channel)
        waiting = self._confirmations.get(channel)
        if waiting:
            future = waiting.popleft()
            if not waiting:
                del self._confirmations[channel]
            if not future.done():
                future.set_result(None)
        if not self._live and self._requested <= self._subscribed:
            self._go_live()

    def _go_live(self) -> None:
        """Every channel asked for is confirmed: catch up with what the rooms
        opened meanwhile need, or resync them all from the store."""
        wanted = {self._control} | {room_channel(self.prefix, r) for r in self._wanted}
        missing = wanted - self._requested
        if missing:
            self._requested |= missing
            self._command("SUBSCRIBE", *missing)
            return
        extra = self._requested - wanted
        if extra:
            self._requested -= extra
            self._command("UNSUBSCRIBE", *extra)
        self._live = True
        self.live.set()
        if self.counts["sessions"] > 1:
            log.info("bus: subscribed to %s again; reading %d open rooms from the store",
                     self._where(), len(self._wanted))
        self._resync(self._wanted)

    def _resync(self, rooms: Collection[str]) -> None:
        if rooms and self._receiver is not None:
            self.counts["resyncs"] += 1
            self._receiver.resync(list(rooms))

    def _on_message(self, channel: bytes, data: bytes) -> None:
        receiver = self._receiver
        if receiver is None:
            return
        try:
            if channel == self._control:
                control = decode_control(data)
                if control.origin == self.origin:
                    return
                if control.op == "resync":
                    self._resync(self._wanted)
                elif control.op == "ended":
                    receiver.sessions_ended(control.sessions)
                elif control.op == "access":
                    receiver.access_changed(control.changes)
                elif control.op == "seen":
                    receiver.marked_seen(control.changes)
                return
            room = room_of(self.prefix, channel)
            if room is None:
                return
            origin, published_ms, broadcasts = decode_broadcasts(room, data)
        except BadBusMessage as exc:
            self.counts["bad"] += 1
            self._trouble.note(f"bus: dropped a message on {channel[:100]!r}: {exc}", now=time.monotonic())
            return
        if origin == self.origin:
            return
        if published_ms is not None and self.lag_observer is not None:
            # Across machines this includes their clocks' difference: NTP keeps it to a few ms.
            self.lag_observer(max(0.0, time.time() - published_ms / 1000))
        self.counts["received"] += len(broadcasts)
        try:
            receiver.receive_all(broadcasts)
        except Exception:
            log.exception("bus: handing over broadcasts of %s failed; reading it from the store", room)
            self._resync((room,))

    # -- helpers ------------------------------------------------------------

    def _client_name(self, role: str) -> str:
        """What ``CLIENT LIST`` shows for this node's connections."""
        return f"{self.prefix}node-{self.origin.decode()}-{role}"

    def _delay(self, attempt: int) -> float:
        return backoff_delay(attempt, low=self.reconnect_min, high=self.reconnect_max, rand=random.random())

    def _where(self) -> str:
        kwargs = self._client.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

"""The processor's side of the queue (``squall processor --queue redis://…``).

Theory of operation (the whole design is in :mod:`squall.queue`). One reader
task takes new entries from the consumer group (``XREADGROUP … >``) while
fewer than ``max_in_flight`` are in work; one claimer task, every half
``claim_idle``, takes over entries that another consumer (a dead processor, or
a live one that stalled) left unacknowledged for ``claim_idle`` seconds
(``XAUTOCLAIM``). Every entry runs in a task of its own, through the same
checks (:func:`~squall.processor.server.parse_process`) and pipeline as a TCP
request. Its answer joins the outbox; one flusher task writes the outbox with
one atomic Lua script per round (:data:`_FLUSH_SCRIPT`) — the answers to their
nodes' reply streams, then ``XACK`` and ``XDEL`` of the entries — so an entry is
acknowledged only after its result is
stored *and* its answer is on the way. Whatever completes during a round goes
into the next one. If Redis is unreachable, the round is retried with back-off;
the entries stay pending meanwhile and, should this processor die, are taken
over by another.

A stage's ``send_update`` (link previews, after the answer) reaches the node
that asked for the message: each entry's task sets :data:`ORIGIN`, and the
tasks a stage starts inherit it (``contextvars``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from ..backoff import backoff_delay
from ..errors import Rejected
from ..message import Draft
from ..processor.pipeline import Pipeline
from ..processor.server import parse_process, parse_seen
from ..throttled_log import ThrottledLog
from .client import stop_tasks
from . import (
    GROUP, NODE_ID, REPLY_MAX_LEN, REPLY_ROLE, REPLY_TTL_SECONDS, SEND_ROLE, QueueKeys,
    decode_entry, redacted_url, sign,
)

__all__ = ["QueueWorker", "ORIGIN"]

log = logging.getLogger("squall.queue")

# The node that asked for the entry being processed (None outside one).
ORIGIN: contextvars.ContextVar[str | None] = contextvars.ContextVar("squall_queue_origin", default=None)
# How long one XREADGROUP blocks, in ms: the reader notices stopping within this.
READ_BLOCK_MS = 1000
# Most entries one XAUTOCLAIM takes over.
CLAIM_BATCH = 100
# Bad entries are logged at most once per this many seconds (with a count).
BAD_ENTRY_LOG_SECONDS = 60.0
# An entry delivered this many times without being acknowledged is answered
# `internal` and acknowledged instead of being tried again: one that kills
# every processor that takes it must not go round for ever.
MAX_DELIVERIES = 5
# Every processor start adds a consumer to the group; one with nothing pending
# and idle this long is deleted (a live one that was merely idle is created
# again by its next read), so the group does not grow with every restart.
FORGET_CONSUMER_SECONDS = 3600.0

Entry = tuple[bytes, dict[bytes, bytes]]
# An answer (JSON) for a node, and/or the id of an entry to acknowledge.
Outgoing = tuple[str | None, bytes | None, bytes | None]
# A node's answers of one round go in reply entries of about this size at most.
REPLY_CHUNK_BYTES = 256 * 1024
# Acknowledging and deleting entries, and answering: one script per round, as
# atomic as MULTI, with one argument per entry and per reply entry instead of
# a command each. KEYS[1]: the send stream; KEYS[2..]: reply streams. ARGV: the
# group, the reply streams' MAXLEN and TTL, the number of entry ids, the ids,
# then (reply stream index, signature and payload) pairs. Answers go first: an
# entry is never acknowledged without its answer.
_FLUSH_SCRIPT = """
local ids = tonumber(ARGV[4])
for i = 5 + ids, #ARGV, 2 do
    local key, entry = KEYS[tonumber(ARGV[i])], ARGV[i + 1]
    redis.call('XADD', key, 'MAXLEN', '~', ARGV[2], '*', 'm', string.sub(entry, 65), 's', string.sub(entry, 1, 64))
    redis.call('EXPIRE', key, ARGV[3])
end
for first = 5, 4 + ids, 1000 do
    local last = math.min(first + 999, 4 + ids)
    redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, first, last))
    redis.call('XDEL', KEYS[1], unpack(ARGV, first, last))
end
return ids
"""


class QueueWorker:
    """Processes entries of the queue at ``url`` through ``pipeline``.

    :param claim_idle: seconds an entry may stay unacknowledged with another
        consumer before this one takes it over; default 5.
    :param max_in_flight: entries in work at once; default 4096.
    :param read_batch: most entries one read takes; default 512.
    :param max_bytes: longest entry payload accepted; default 64 KiB.
    """

    def __init__(
        self,
        url: str,
        *,
        key: bytes,
        prefix: str,
        pipeline: Pipeline | None = None,
        on_seen: Callable[[str, str, int], None] | None = None,
        max_body_chars: int = 4000,
        claim_idle: float = 5.0,
        max_in_flight: int = 4096,
        read_batch: int = 512,
        max_bytes: int = 64 * 1024,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
    ) -> None:
        self.url = url
        self.key = key
        self.keys = QueueKeys(prefix)
        self.pipeline = pipeline
        self.on_seen = on_seen
        self.max_body_chars = max_body_chars
        self.claim_idle = claim_idle
        self.max_in_flight = max_in_flight
        self.read_batch = read_batch
        self.max_bytes = max_bytes
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.bad_entries = ThrottledLog(log, interval=BAD_ENTRY_LOG_SECONDS)
        self._redis: aioredis.Redis | None = None
        self._working: set[bytes] = set()  # entry ids in work here
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()  # set while fewer than max_in_flight are in work
        self._room.set()
        self._idle = asyncio.Event()  # set while nothing is in work or in the outbox
        self._idle.set()
        self._outbox: list[Outgoing] = []
        self._flush = asyncio.Event()
        self._stop = asyncio.Event()  # run()'s, once it runs
        self._next_forget = 0.0  # monotonic time of the next sweep of old consumers
        self.processed = 0  # entries answered, for logs and tests
        self.claimed = 0  # entries taken over from other consumers

    @property
    def in_flight(self) -> int:
        return len(self._working)

    async def open(self) -> None:
        """Connect and make sure the group exists; raises if Redis cannot be reached."""
        self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=5, socket_keepalive=True)
        await self._ensure_group()

    async def _ensure_group(self) -> None:
        assert self._redis is not None
        try:
            # From the start of the stream: entries added before any processor
            # existed (or before Redis lost the group) are work too.
            await self._redis.xgroup_create(self.keys.sends, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def send_update(self, value: dict[str, Any]) -> None:
        """Send an unasked line (``updated``) to the node that asked for the current entry."""
        node = ORIGIN.get()
        if node is None:
            log.warning("an update outside any entry has no node to go to: %r", value.get("op"))
            return
        self._post(node, value, None)

    async def run(self, stop: asyncio.Event, *, shutdown_timeout: float) -> None:
        """Serve until ``stop`` is set, then finish the entries in work (up to ``shutdown_timeout`` s)."""
        assert self._redis is not None, "call open() first"
        self._stop = stop
        flusher = asyncio.ensure_future(self._flush_loop())
        takers = [asyncio.ensure_future(self._read_loop()), asyncio.ensure_future(self._claim_loop())]
        await stop.wait()
        # Not cancelled: redis-py can hang on a blocking command cancelled
        # mid-read. The takers end by themselves within one READ_BLOCK_MS.
        self._room.set()
        await stop_tasks(takers, grace=2 * READ_BLOCK_MS / 1000)
        try:
            await asyncio.wait_for(self._idle.wait(), shutdown_timeout)
        except asyncio.TimeoutError:
            log.warning("stopping with %d entries in work; another processor will take them over",
                        len(self._working))
        self._flush.set()
        await stop_tasks([flusher], grace=shutdown_timeout)
        await self._redis.aclose()

    # -- taking entries ------------------------------------------------------

    async def _retry_pause(self, attempt: int, what: str, exc: Exception) -> None:
        if attempt == 0:
            log.warning("queue at %s: %s failed (%s); retrying", redacted_url(self.url), what, exc)
        await asyncio.sleep(backoff_delay(attempt, low=self.reconnect_min, high=self.reconnect_max,
                                          rand=random.random()))

    async def _read_loop(self) -> None:
        assert self._redis is not None
        attempt = 0
        while not self._stop.is_set():
            await self._room.wait()
            if self._stop.is_set():
                return
            count = min(self.read_batch, self.max_in_flight - len(self._working))
            try:
                answer = cast(list[tuple[bytes, list[Entry]]], await self._redis.xreadgroup(
                    GROUP, self.consumer, {self.keys.sends: ">"}, count=count, block=READ_BLOCK_MS
                ))
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost the stream (restarted without its data)
                    await self._recreate_group(attempt, exc)
                    attempt += 1
                    continue
                raise
            except (RedisError, OSError) as exc:
                await self._retry_pause(attempt, "reading", exc)
                attempt += 1
                continue
            attempt = 0
            for _name, entries in answer or ():
                for entry in entries:
                    self._take(entry)

    async def _recreate_group(self, attempt: int, exc: Exception) -> None:
        try:
            await self._ensure_group()
        except (RedisError, OSError) as again:
            await self._retry_pause(attempt, "creating the group", again)
        else:
            log.warning("queue at %s had lost its group (%s); created it again", redacted_url(self.url), exc)

    async def _claim_loop(self) -> None:
        assert self._redis is not None
        pause = max(self.claim_idle / 2, 0.01)
        min_idle_ms = int(self.claim_idle * 1000)
        attempt = 0
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), pause)
                return
            except asyncio.TimeoutError:
                pass
            cursor: bytes | str = "0-0"
            try:
                while not self._stop.is_set():
                    await self._room.wait()
                    cursor, claimed, deleted = await self._redis.xautoclaim(
                        self.keys.sends, GROUP, self.consumer, min_idle_ms, start_id=cursor,
                        count=min(CLAIM_BATCH, self.max_in_flight - len(self._working)),
                    )
                    if deleted:  # pending, but gone from the stream: nothing left to do
                        await self._redis.xack(self.keys.sends, GROUP, *deleted)
                    fresh = [entry for entry in claimed if entry[0] not in self._working]
                    if fresh:
                        self.claimed += len(fresh)
                        log.warning("took over %d entries another processor left unacknowledged"
                                    " for %g s", len(fresh), self.claim_idle)
                    deliveries = await self._deliveries(fresh) if fresh else {}
                    for entry in fresh:
                        self._take(entry, deliveries=deliveries.get(entry[0], 1))
                    if cursor in (b"0-0", "0-0"):
                        break
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
            except (RedisError, OSError) as exc:
                await self._retry_pause(attempt, "taking over entries", exc)
                attempt += 1
                continue
            attempt = 0
            now = time.monotonic()
            if now >= self._next_forget:
                self._next_forget = now + FORGET_CONSUMER_SECONDS / 10
                await self._forget_consumers()

    async def _deliveries(self, entries: list[Entry]) -> dict[bytes, int]:
        """How many times each of ``entries`` has been delivered (XAUTOCLAIM does not say)."""
        assert self._redis is not None
        ids = sorted(entries, key=lambda entry: _id_order(entry[0]))
        # Ours now, so only our pending list: at most max_in_flight in work plus these.
        pending = await self._redis.xpending_range(
            self.keys.sends, GROUP, min=ids[0][0], max=ids[-1][0],
            count=self.max_in_flight + len(entries), consumername=self.consumer,
        )
        return {cast(bytes, item["message_id"]): int(item["times_delivered"]) for item in pending}

    async def _forget_consumers(self) -> None:
        assert self._redis is not None
        try:
            consumers = await self._redis.xinfo_consumers(self.keys.sends, GROUP)
            for consumer in consumers:
                if consumer["pending"] == 0 and consumer["idle"] > FORGET_CONSUMER_SECONDS * 1000:
                    await self._redis.xgroup_delconsumer(self.keys.sends, GROUP, consumer["name"])
        except (RedisError, OSError):
            pass  # tried again next time

    def _take(self, entry: Entry, *, deliveries: int = 1) -> None:
        entry_id, fields = entry
        value = decode_entry(self.key, SEND_ROLE, fields, max_bytes=self.max_bytes)
        if isinstance(value, str):
            self._drop(entry_id, value)
            return
        if deliveries > MAX_DELIVERIES:
            self._give_up(entry_id, value, deliveries)
            return
        op = value.get("op")
        if op == "seen":
            marker = parse_seen(value)
            if isinstance(marker, dict):
                self._drop(entry_id, f"seen: {marker['reason']}")
            else:
                if self.on_seen is not None:
                    self.on_seen(*marker)
                self._post(None, None, entry_id)
            return
        node = value.get("node")
        if op != "process" or not isinstance(node, str) or not NODE_ID.fullmatch(node):
            self._drop(entry_id, f"op {str(op)[:20]!r} with node {str(node)[:20]!r} is no send")
            return
        draft = parse_process(value, max_body_chars=self.max_body_chars)
        if isinstance(draft, dict):  # refused before the pipeline: answered as over TCP
            self._post(node, draft, entry_id)
            return
        self._working.add(entry_id)
        self._idle.clear()
        if len(self._working) >= self.max_in_flight:
            self._room.clear()
        context = contextvars.copy_context()
        context.run(ORIGIN.set, node)
        task = asyncio.get_running_loop().create_task(
            self._process(entry_id, node, value["ref"], draft), context=context
        )
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    def _give_up(self, entry_id: bytes, value: dict[str, Any], deliveries: int) -> None:
        log.error("queue entry %s was delivered %d times and never acknowledged (limit %d);"
                  " answering it internal", entry_id.decode(), deliveries, MAX_DELIVERIES)
        node = value.get("node")
        if value.get("op") == "process" and isinstance(node, str) and NODE_ID.fullmatch(node):
            self._post(node, {"op": "rejected", "ref": value.get("ref"), "code": "internal",
                              "reason": "the server could not process this message"}, entry_id)
        else:
            self._post(None, None, entry_id)

    def _drop(self, entry_id: bytes, why: str) -> None:
        self.bad_entries.note(f"dropped queue entry {entry_id.decode()}: {why}", now=time.monotonic())
        self._post(None, None, entry_id)

    async def _process(self, entry_id: bytes, node: str, ref: Any, draft: Draft) -> None:
        pipeline = self.pipeline
        assert pipeline is not None, "QueueWorker.pipeline must be set before run()"
        try:
            message = await pipeline.run(draft)
        except Rejected as exc:
            answer: dict[str, Any] = {"op": "rejected", "ref": ref, "code": exc.code, "reason": exc.reason}
        except Exception:
            # The store failed (e.g. the database is away): leave the entry
            # pending, so that it is taken over and tried again.
            log.exception("processing queue entry %s failed; it stays pending", entry_id.decode())
            self._done(entry_id)
            return
        else:
            answer = {"op": "processed", "ref": ref, "message": message.to_wire()}
            if message.duplicate:
                answer["duplicate"] = True
        self._post(node, answer, entry_id)
        self._done(entry_id)

    def _done(self, entry_id: bytes) -> None:
        self._working.discard(entry_id)
        if len(self._working) < self.max_in_flight:
            self._room.set()
        if not self._working and not self._outbox:
            self._idle.set()

    # -- answering -----------------------------------------------------------

    def _post(self, node: str | None, value: dict[str, Any] | None, entry_id: bytes | None) -> None:
        """Queue an answer for ``node`` and/or the acknowledgement of ``entry_id``."""
        answer = orjson.dumps(value) if value is not None else None
        self._outbox.append((node, answer, entry_id))
        self._idle.clear()
        self._flush.set()

    async def _flush_loop(self) -> None:
        assert self._redis is not None
        flush = self._redis.register_script(_FLUSH_SCRIPT)
        attempt = 0
        while True:
            await self._flush.wait()
            self._flush.clear()
            if self._stop.is_set() and not self._outbox:
                return
            while self._outbox:
                batch = self._outbox
                self._outbox = []
                keys, arguments = self._flush_arguments(batch)
                try:
                    await flush(keys=keys, args=arguments)
                except (RedisError, OSError) as exc:
                    self._outbox[:0] = batch
                    await self._retry_pause(attempt, "answering", exc)
                    attempt += 1
                    continue
                attempt = 0
                self.processed += sum(1 for _, answer, _ in batch if answer is not None)
            if not self._working and not self._outbox:
                self._idle.set()

    def _flush_arguments(self, batch: list[Outgoing]) -> tuple[list[str], list[bytes | str | int]]:
        """KEYS and ARGV of one round of :data:`_FLUSH_SCRIPT`.

        A node's answers of the round go in as few reply entries as fit
        :data:`REPLY_CHUNK_BYTES` each, ``{"op":"answers","answers":[...]}``,
        each signed: one ``XADD`` and one signature for many answers.
        """
        by_node: dict[str, list[bytes]] = {}
        done: list[bytes] = []
        for node, answer, entry_id in batch:
            if node is not None and answer is not None:
                by_node.setdefault(node, []).append(answer)
            if entry_id is not None:
                done.append(entry_id)
        keys = [self.keys.sends]
        replies: list[bytes | str | int] = []
        for node, answers in by_node.items():
            keys.append(self.keys.replies(node))
            for chunk in _chunks(answers, REPLY_CHUNK_BYTES):
                payload = b'{"op":"answers","answers":[' + b",".join(chunk) + b"]}"
                replies += [len(keys), sign(self.key, REPLY_ROLE, payload) + payload]
        arguments: list[bytes | str | int] = [GROUP, REPLY_MAX_LEN, REPLY_TTL_SECONDS, len(done), *done]
        return keys, arguments + replies


def _id_order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or b"0")


def _chunks(parts: list[bytes], limit: int) -> list[list[bytes]]:
    """``parts`` in order, in groups whose sizes add up to at most ``limit`` (one part may exceed it)."""
    chunks: list[list[bytes]] = [[]]
    size = 0
    for part in parts:
        if chunks[-1] and size + len(part) > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(part)
        size += len(part) + 1
    return chunks

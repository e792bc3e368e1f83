"""The web node's side of the queue (``--queue redis://…``); see :mod:`squall.queue`.

Theory of operation. :meth:`QueueClient.process` puts a send in the bounded
table (:class:`~squall.processor.sends.PendingSends`) and in the list of
entries to add. One writer task adds what accumulated, in one round trip (a Lua
script that checks the stream's length and ``XADD``\\ s the batch, admitting what
fits under ``queue_max_len``), while the sends that arrive meanwhile wait for
the next round: group commit, as the processor's store does it. One reader task
blocks on this node's reply stream (``XREAD``), settles the sends its replies
answer, hands every processed message to ``on_processed`` (whether or not its
sender still waits, so a stored message is always published), and trims what
it has read.

Once added, an entry is Redis's to keep: a send that times out is forgotten
here (its client got ``unavailable`` and may retry with the same id), and a
late reply is still published. While Redis is unreachable, both tasks retry
with capped back-off; sends wait, unwritten, until their ``send_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from ..backoff import backoff_delay
from ..errors import Unavailable
from ..processor.sends import PendingSends, Send, answer_of, process_request, route_answer, unavailable_answer
from . import GROUP, REPLY_ROLE, SEND_ROLE, QueueKeys, decode_entry, redacted_url, sign

__all__ = ["QueueClient", "WRITE_BATCH", "READ_BATCH", "stop_tasks"]

log = logging.getLogger("squall.queue")

Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry as redis-py returns it: (id, fields)

# Most entries one XADD round trip adds; sends beyond wait for the next one.
WRITE_BATCH = 512
# Most replies one XREAD returns.
READ_BATCH = 1000
# How long one XREAD blocks, in ms: the reader notices closing within this.
READ_BLOCK_MS = 1000
# Longest reply accepted from the queue, in bytes (a processed message and its html).
MAX_REPLY_BYTES = 1024 * 1024

# KEYS[1]: the send stream. ARGV[1]: queue_max_len; then one argument per
# entry, its signature (64 hex digits) followed by its payload: fewer
# arguments to pack than separate fields. Adds as many entries as fit under
# the bound, in order, and returns {added, length before}. Never trims: see
# squall.queue, "Bounds".
_ADD_SCRIPT = """
local room = tonumber(ARGV[1]) - redis.call('XLEN', KEYS[1])
local added = math.max(0, math.min(room, #ARGV - 1))
for i = 2, added + 1 do
    local entry = ARGV[i]
    redis.call('XADD', KEYS[1], '*', 'm', string.sub(entry, 65), 's', string.sub(entry, 1, 64))
end
return {added, tonumber(ARGV[1]) - room}
"""


class QueueClient:
    """Sends through the queue at ``url``; the same interface as the TCP pool.

    :param max_pending: sends that may wait at once; default 10,000.
    :param send_timeout: seconds a send waits for its reply; default 10.
    :param max_len: entries the send stream may hold; default 100,000.
    """

    def __init__(
        self,
        url: str,
        *,
        key: bytes,
        prefix: str,
        on_processed: Callable[[list[dict[str, Any]]], None],
        on_updated: Callable[[dict[str, Any]], None] | None = None,
        max_pending: int = 10_000,
        send_timeout: float = 10.0,
        max_len: int = 100_000,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
    ) -> None:
        self.url = url
        self.key = key
        self.keys = QueueKeys(prefix)
        self.node = secrets.token_hex(8)
        self.on_processed = on_processed
        self.on_updated = on_updated
        self.send_timeout = send_timeout
        self.max_len = max_len
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.sends = PendingSends(max_pending=max_pending, waiting_for="a processor")
        self._unwritten: deque[Send] = deque()
        self._unsent_seen: dict[tuple[str, str], int] = {}
        self._max_unsent_seen = max_pending
        self._wake = asyncio.Event()
        self._redis: aioredis.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._last_reply = b"0-0"
        self._trimming: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()  # set while the reply stream is being read

    @property
    def pending(self) -> int:
        return len(self.sends)

    def states(self) -> list[dict[str, Any]]:
        """The queue's address, whether it is reachable and the sends in flight (``/api/health``)."""
        return [{
            "queue": redacted_url(self.url), "stream": self.keys.sends, "node": self.node,
            "state": "connected" if self.connected.is_set() else "unreachable",
            "in_flight": len(self.sends),
        }]

    async def backlog(self) -> tuple[int, int]:
        """``(depth, pending)`` of the send stream, for ``/metrics``: entries no
        processor has read yet, and entries read but not acknowledged (a
        processor is working on them, or died holding them until ``XAUTOCLAIM``).
        Raises :class:`RedisError` or :class:`OSError` when Redis cannot say."""
        assert self._redis is not None, "start() first"
        try:
            groups = await self._redis.xinfo_groups(self.keys.sends)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return 0, 0  # nothing sent yet
            raise
        for group in groups:
            if group["name"] == GROUP.encode():
                # Redis leaves lag out (None) when it cannot count it (entries deleted
                # mid-range); the stream's length is then the honest upper bound.
                lag = group.get("lag")
                depth = lag if isinstance(lag, int) else await self._redis.xlen(self.keys.sends)
                return depth, int(group["pending"])
        return await self._redis.xlen(self.keys.sends), 0  # no processor has joined the group yet

    def start(self) -> None:
        self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=5, socket_keepalive=True)
        self._tasks = [asyncio.ensure_future(self._write_loop()), asyncio.ensure_future(self._read_loop())]

    async def process(
        self, *, room: str, nick: str, id: str, body: str, ts: int,
        attachments: Sequence[dict[str, Any]] = (), event: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The processed message (or change) as a processor returned it.

        ``event`` holds a change's or a reply's own fields (``kind``, ``target``,
        ``emoji``, ``reply_to``, ``moderator``), sent along as they are.

        Raises :class:`~squall.errors.Rejected` when the pipeline refuses it and
        :class:`~squall.errors.Unavailable` when the table or the stream is
        full, or no reply came in time.
        """
        send = self.sends.joined(room, nick, id)
        if send is None:
            if self._closing:
                raise Unavailable("the server is shutting down; retry with the same id")
            node = self.node
            send = self.sends.start(room, nick, id, lambda ref: orjson.dumps({
                **process_request(ref, room=room, nick=nick, id=id, body=body, ts=ts, attachments=attachments, event=event),
                "node": node,
            }))
            if len(self._unwritten) >= self.sends.max_pending:
                # Sends that timed out while Redis was away stay here until the
                # writer passes them; drop them now, or an outage grows this.
                self._unwritten = deque(s for s in self._unwritten if self.sends.get(s.ref) is s)
            self._unwritten.append(send)
            self._wake.set()
        return await answer_of(
            send, self.send_timeout, on_timeout=self.sends.forget, waiting_for="a processor"
        )

    def report_seen(self, key: str, room: str, seq: int) -> None:
        """Queue a read marker for a processor (best effort; the newest per user and room)."""
        marker = (key, room)
        if seq <= self._unsent_seen.get(marker, 0):
            return
        if marker not in self._unsent_seen and len(self._unsent_seen) >= self._max_unsent_seen:
            self._unsent_seen.pop(next(iter(self._unsent_seen)))
        self._unsent_seen[marker] = seq
        self._wake.set()

    # -- writing ----------------------------------------------------------

    def _next_batch(self) -> tuple[list[Send], list[bytes]]:
        """Sends still waiting and their payloads, then read markers: at most WRITE_BATCH."""
        batch: list[Send] = []
        payloads: list[bytes] = []
        while self._unwritten and len(payloads) < WRITE_BATCH:
            send = self._unwritten.popleft()
            if self.sends.get(send.ref) is send:  # its sender may have given up meanwhile
                batch.append(send)
                payloads.append(send.line)
        while self._unsent_seen and len(payloads) < WRITE_BATCH:
            (key, room), seq = self._unsent_seen.popitem()
            payloads.append(orjson.dumps({"op": "seen", "nick": key, "room": room, "seq": seq}))
        return batch, payloads

    async def _write_loop(self) -> None:
        assert self._redis is not None
        add = self._redis.register_script(_ADD_SCRIPT)
        attempt = 0
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while (self._unwritten or self._unsent_seen) and not self._closing:
                batch, payloads = self._next_batch()
                if not payloads:
                    break
                arguments: list[bytes | int] = [self.max_len]
                arguments += [sign(self.key, SEND_ROLE, payload) + payload for payload in payloads]
                try:
                    added, length = await add(keys=[self.keys.sends], args=arguments)
                except (RedisError, OSError) as exc:
                    # The script runs whole or not at all; if it ran and only its
                    # answer was lost, the retry adds the batch again, which is
                    # processed twice and stored once (idempotent by client id).
                    self._unwritten.extendleft(reversed(batch))
                    if attempt == 0:
                        log.warning("cannot add to the queue at %s (%s); retrying", redacted_url(self.url), exc)
                    await asyncio.sleep(backoff_delay(
                        attempt, low=self.reconnect_min, high=self.reconnect_max, rand=random.random()
                    ))
                    attempt += 1
                    continue
                attempt = 0
                self._written(batch, int(added), int(length))

    def _written(self, batch: list[Send], added: int, length: int) -> None:
        for index, send in enumerate(batch):
            if index < added:
                send.written = True
            else:
                self.sends.settle(send.ref, unavailable_answer(
                    f"the queue holds {length} entries not yet processed (limit {self.max_len});"
                    " retry with the same id"
                ))
        if added < len(batch):
            log.warning("queue full: %d sends refused (%d entries, limit %d)",
                        len(batch) - added, length, self.max_len)

    # -- reading ----------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._redis is not None
        stream = self.keys.replies(self.node)
        attempt = 0
        while not self._closing:
            try:
                if not self.connected.is_set():
                    await self._redis.ping()
                    log.info("reading replies from the queue at %s as node %s", redacted_url(self.url), self.node)
                    self.connected.set()
                answer = cast(list[tuple[bytes, list[Entry]]], await self._redis.xread(
                    {stream: self._last_reply}, count=READ_BATCH, block=READ_BLOCK_MS
                ))
            except (RedisError, OSError) as exc:
                if self.connected.is_set() or attempt == 0:
                    log.warning("cannot read replies from the queue at %s (%s); retrying",
                                redacted_url(self.url), exc)
                self.connected.clear()
                await asyncio.sleep(backoff_delay(
                    attempt, low=self.reconnect_min, high=self.reconnect_max, rand=random.random()
                ))
                attempt += 1
                continue
            attempt = 0
            for _name, entries in answer or ():
                if entries:
                    self._answer_all(entries)
                    self._last_reply = entries[-1][0]
                    if self._trimming is None or self._trimming.done():  # beside the next read
                        self._trimming = asyncio.ensure_future(self._trim(stream))

    async def _trim(self, stream: str) -> None:
        """Delete the replies read so far, again while more were read meanwhile."""
        assert self._redis is not None
        trimmed = None
        while trimmed != self._last_reply:
            trimmed = self._last_reply
            try:
                await self._redis.xtrim(stream, minid=_next_id(trimmed), approximate=False)
            except (RedisError, OSError):
                return  # read replies are skipped by id anyway; the next read trims them

    def _answer_all(self, entries: list[Entry]) -> None:
        """Answer what one read brought; its processed messages are published together."""
        processed: list[dict[str, Any]] = []
        for _entry_id, fields in entries:
            entry = decode_entry(self.key, REPLY_ROLE, fields, max_bytes=MAX_REPLY_BYTES)
            if isinstance(entry, str):
                log.error("ignored a reply in %s: %s", self.keys.replies(self.node), entry)
                continue
            answers = entry.get("answers") if entry.get("op") == "answers" else [entry]
            for value in answers if isinstance(answers, list) else ():
                if isinstance(value, dict):
                    self._answer(value, processed)
        if processed:
            self.on_processed(processed)

    def _answer(self, value: dict[str, Any], processed: list[dict[str, Any]]) -> None:
        """One answer: settle its send; a processed message joins ``processed``."""
        route_answer(value, processed, settle=self.sends.settle, on_processed=self.on_processed,
                     on_updated=self.on_updated)

    async def close(self, *, timeout: float) -> None:
        """Stop taking sends, wait up to ``timeout`` s for replies to those added, then disconnect."""
        self._closing = True
        waiting = [send.future for send in self.sends if send.written]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        # Not cancelled: redis-py can hang on a blocking command cancelled
        # mid-read. Both loops end by themselves within one READ_BLOCK_MS.
        self._wake.set()
        if self._tasks:
            await stop_tasks(self._tasks, grace=2 * READ_BLOCK_MS / 1000)
        if self._redis is not None:
            try:
                await self._redis.delete(self.keys.replies(self.node))
            except (RedisError, OSError):
                pass  # it expires by itself (REPLY_TTL_SECONDS)
            await self._redis.aclose()



async def stop_tasks(tasks: list[asyncio.Task[None]], *, grace: float) -> None:
    """Wait up to ``grace`` s for ``tasks`` to end by themselves, then cancel the rest."""
    _, running = await asyncio.wait(tasks, timeout=grace)
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running, timeout=grace)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("queue task failed", exc_info=task.exception())


def _next_id(entry_id: bytes) -> bytes:
    """The smallest stream id after ``entry_id`` (``XTRIM MINID`` keeps its threshold)."""
    ms, _, seq = entry_id.partition(b"-")
    return ms + b"-" + str(int(seq or b"0") + 1).encode()

"""Presence shared by every web node on one Redis (docs/presence.md).

Theory of operation. Each web node keeps its own clients in a
:class:`~squall.presence.PresenceTable` and coalesces their transitions; once
per interval it hands them to :meth:`RedisPresence.update`, which applies them
to Redis in one Lua script. The keys, all under the bus's prefix ``P``
(room names hold no ``:``, so no two keys can collide):

``P presence:room:R``      sorted set of the casefolded nicks online in R, all
                           with score 0: ``ZRANGEBYLEX`` pages, ``ZCARD`` counts
``P presence:nicks:R``     hash, casefolded nick → nick as spelled
``P presence:holders:R``  hash, casefolded nick K → the ids of the nodes on
                           which K is online in R, comma-separated (one hash
                           per room, not a set per nick: a key costs ~200 bytes)
``P presence:users``       hash, casefolded nick → rooms it is online in (the
                           guest-nick check asks it)
``P presence:skels``       hash, casefolded nick online → its confusable skeletons
``P presence:look:S``      hash, casefolded nick online → spelling, of each nick
                           with skeleton S (the guest-nick lookalike check)
``P presence:node:N``      node N's heartbeat, a key with a TTL
``P presence:node:N:pairs`` set of ``R:K``, what node N holds
``P presence:nodes``       set of the ids of nodes that hold (or held) pairs

``online`` adds the node to the holders and, if it is the first, the nick to
the room; ``offline`` removes it and, if it was the last, the nick. Both are
idempotent, so a change applied twice is harmless and a nick online on two
nodes goes offline only when the last one lets it go. The script publishes
the ``presence`` event of every room whose member set it changed, on the
room's channel, itself: events leave in the order the changes were applied,
so two nodes' events about one nick can never arrive the wrong way round. It
publishes them with an origin that is not the node's own bus origin, so the
node hears its own events back from Redis, in that same order.

Death. Every ``heartbeat`` seconds a node sets its heartbeat key to expire
``ttl`` seconds later, and sweeps: a node in ``presence:nodes`` whose
heartbeat has expired is dead, and the sweep script takes it out of every
pair it held as ``offline`` would, publishing the resulting events. So a dead
node's members leave within ``ttl + heartbeat`` seconds (20 s by default) of
its death, plus a delivery. Node ids are new at every process start
(the bus's origin), so a restarted node never inherits its former self's
pairs: they are swept like any dead node's. A node that stops cleanly deletes
its heartbeat and sweeps itself at once.

Redis unreachable. ``update`` then reports :attr:`~squall.presence.Reach.THIS_NODE`:
the node shows its members its own view (changes, counts and pages from its
table). Every later call first mends the shared view: once Redis answers, the
node compares its pairs there with its table and applies the difference as
changes (published like any others). The same mending runs when the node
finds that its heartbeat had expired (it was swept while it could not reach
Redis, or stood still longer than ``ttl``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from ..coalesce import OFFLINE, ONLINE, Change
from ..identity import nick_skeletons
from ..presence import MembersPage, PresenceTable, Reach, Updated
from ..protocol import nick_key
from ..throttled_log import ThrottledLog

__all__ = ["RedisPresence", "HEARTBEAT_SECONDS", "TTL_SECONDS"]

log = logging.getLogger("squall.presence")

# Defaults of presence_heartbeat and presence_ttl: a dead node's members
# leave within TTL + HEARTBEAT seconds. Three heartbeats per TTL, so that one
# slow round trip (or a loop held up a second or two) does not kill a node.
HEARTBEAT_SECONDS = 5.0
TTL_SECONDS = 15.0
# Most changes applied by one script: Redis runs nothing else meanwhile, and
# 1000 take about a millisecond or two.
CHANGES_PER_SCRIPT = 1000
# Most of a dead node's pairs one sweep script takes.
SWEEP_PER_SCRIPT = 1000
# How long a node that stops tries to take its members out itself (else a
# live node's sweep does, within the bound).
CLOSE_SECONDS = 2.0
# Failures are logged at most this often.
LOG_INTERVAL_SECONDS = 10.0
_CONNECTION_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

# Shared by the scripts: publish one room's presence event, in the bus's wire
# format (squall/bus/wire.py) and with encode_presence's shape (squall/coalesce.py).
_PUBLISH = """
-- origin: the bus message's start line after 'SQB1 ' (origin and publish time)
local function publish(prefix, origin, detail_max, room, count, changes)
  local payload
  if count <= detail_max then
    local items = {}
    for i = 1, #changes, 2 do
      items[#items + 1] = '{"nick":' .. cjson.encode(changes[i]) .. ',"state":"' .. changes[i + 1] .. '"}'
    end
    payload = '{"type":"presence","room":"' .. room .. '","count":' .. count
      .. ',"changes":[' .. table.concat(items, ',') .. ']}'
  else
    payload = '{"type":"presence","room":"' .. room .. '","count":' .. count .. '}'
  end
  redis.call('PUBLISH', prefix .. 'room:' .. room,
    'SQB1 ' .. origin .. '\\n[null,"presence",[],' .. #payload .. ']\\n' .. payload)
end

local function hold(prefix, node, room, key)
  -- node holds key in room (node ids are hex: no commas)
  local holders = prefix .. 'presence:holders:' .. room
  local ids = redis.call('HGET', holders, key)
  if not ids then
    redis.call('HSET', holders, key, node)
  elseif not string.find(',' .. ids .. ',', ',' .. node .. ',', 1, true) then
    redis.call('HSET', holders, key, ids .. ',' .. node)
  end
end

local function went(prefix, node, room, key)
  -- node no longer holds key in room; returns the spelling if the room lost key
  local holders = prefix .. 'presence:holders:' .. room
  local ids = redis.call('HGET', holders, key)
  if ids then
    local rest = {}
    for id in string.gmatch(ids, '[^,]+') do
      if id ~= node then rest[#rest + 1] = id end
    end
    if #rest > 0 then
      redis.call('HSET', holders, key, table.concat(rest, ','))
      return nil
    end
    redis.call('HDEL', holders, key)
  end
  redis.call('ZREM', prefix .. 'presence:room:' .. room, key)
  local spelling = prefix .. 'presence:nicks:' .. room
  local nick = redis.call('HGET', spelling, key) or key
  redis.call('HDEL', spelling, key)
  if redis.call('HINCRBY', prefix .. 'presence:users', key, -1) <= 0 then
    redis.call('HDEL', prefix .. 'presence:users', key)
    local skels = redis.call('HGET', prefix .. 'presence:skels', key)
    if skels then
      for skel in string.gmatch(skels, '[^\\n]+') do
        redis.call('HDEL', prefix .. 'presence:look:' .. skel, key)
      end
      redis.call('HDEL', prefix .. 'presence:skels', key)
    end
  end
  return nick
end

-- A change that altered `room`: rooms in the order they first changed, each
-- with its (nick, state) pairs in order.
local function note(order, changed, room, nick, state)
  if changed[room] == nil then
    changed[room] = {}
    order[#order + 1] = room
  end
  local list = changed[room]
  list[#list + 1] = nick
  list[#list + 1] = state
end

local function finish(prefix, origin, detail_max, order, changed, extra)
  -- publish each changed room's event; reply {room, count, {nick, state, ...}} per room
  local reply = {}
  local seen = {}
  for _, room in ipairs(order) do
    local count = redis.call('ZCARD', prefix .. 'presence:room:' .. room)
    publish(prefix, origin, detail_max, room, count, changed[room])
    reply[#reply + 1] = {room, count, changed[room]}
    seen[room] = true
  end
  for _, room in ipairs(extra) do
    if not seen[room] then
      seen[room] = true
      reply[#reply + 1] = {room, redis.call('ZCARD', prefix .. 'presence:room:' .. room), {}}
    end
  end
  return reply
end
"""

# ARGV: prefix, node, origin, detail_max, ttl_ms, rooms to count (n, then n
# rooms), then (room, key, nick, state, skeletons) per change, skeletons
# joined by newlines (only online needs them). Replies {alive, rooms}:
# alive is 0 when the node's heartbeat had expired (it may have been swept).
_UPDATE = _PUBLISH + """
local prefix, node, origin = ARGV[1], ARGV[2], ARGV[3]
local detail_max, ttl_ms = tonumber(ARGV[4]), ARGV[5]
local extra = {}
local n = tonumber(ARGV[6])
for i = 1, n do extra[i] = ARGV[6 + i] end
local beat = prefix .. 'presence:node:' .. node
local alive = redis.call('EXISTS', beat)
if alive == 0 then
  redis.call('SET', beat, '1', 'PX', ttl_ms)
  redis.call('SADD', prefix .. 'presence:nodes', node)
end
local pairs_key = beat .. ':pairs'
local order, changed = {}, {}
for i = 7 + n, #ARGV, 5 do
  local room, key, nick, state = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local altered = false
  if state == 'online' then
    redis.call('SADD', pairs_key, room .. ':' .. key)
    hold(prefix, node, room, key)
    redis.call('HSET', prefix .. 'presence:nicks:' .. room, key, nick)
    if redis.call('ZADD', prefix .. 'presence:room:' .. room, 0, key) == 1 then
      if redis.call('HINCRBY', prefix .. 'presence:users', key, 1) == 1 then
        local skels = ARGV[i + 4]
        redis.call('HSET', prefix .. 'presence:skels', key, skels)
        for skel in string.gmatch(skels, '[^\\n]+') do
          redis.call('HSET', prefix .. 'presence:look:' .. skel, key, nick)
        end
      end
      altered = true
    end
  else
    if redis.call('SREM', pairs_key, room .. ':' .. key) == 1 then
      local spelled = went(prefix, node, room, key)
      if spelled then
        nick = spelled
        altered = true
      end
    end
  end
  if altered then
    note(order, changed, room, nick, state)
  end
end
return {alive, finish(prefix, origin, detail_max, order, changed, extra)}
"""

# ARGV: prefix, origin, detail_max, budget. Takes up to `budget` pairs of dead
# nodes (heartbeat expired) out of their rooms. Replies {more, rooms}: more is
# 1 when pairs of dead nodes are left for another call.
_SWEEP = _PUBLISH + """
local prefix, origin = ARGV[1], ARGV[2]
local detail_max, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local nodes_key = prefix .. 'presence:nodes'
local order, changed = {}, {}
local more = 0
for _, node in ipairs(redis.call('SMEMBERS', nodes_key)) do
  local beat = prefix .. 'presence:node:' .. node
  if redis.call('EXISTS', beat) == 0 then
    if budget <= 0 then more = 1 break end
    local pairs_key = beat .. ':pairs'
    local taken = redis.call('SPOP', pairs_key, budget)
    budget = budget - #taken
    for _, pair in ipairs(taken) do
      local colon = string.find(pair, ':', 1, true)
      local room, key = string.sub(pair, 1, colon - 1), string.sub(pair, colon + 1)
      local nick = went(prefix, node, room, key)
      if nick then
        note(order, changed, room, nick, 'offline')
      end
    end
    if redis.call('EXISTS', pairs_key) == 0 then
      redis.call('SREM', nodes_key, node)
    else
      more = 1
    end
  end
end
return {more, finish(prefix, origin, detail_max, order, changed, {})}
"""

# ARGV: prefix, room, after ('' for the first page), limit. Replies
# {count, keys, spellings}: up to limit + 1 keys, to tell whether more follow.
_PAGE = """
local members = ARGV[1] .. 'presence:room:' .. ARGV[2]
local after = ARGV[3]
local low = '-'
if after ~= '' then low = '(' .. after end
local keys = redis.call('ZRANGEBYLEX', members, low, '+', 'LIMIT', 0, tonumber(ARGV[4]) + 1)
local nicks = {}
if #keys > 0 then nicks = redis.call('HMGET', ARGV[1] .. 'presence:nicks:' .. ARGV[2], unpack(keys)) end
return {redis.call('ZCARD', members), keys, nicks}
"""


# ARGV: prefix, besides, skeletons... Replies the spelling of an online nick
# (not besides) with one of the skeletons, or false. A skeleton's hash holds a
# nick or two (lookalikes of online and registered nicks are refused), so one
# HSCAN step sees it all.
_LOOKALIKE = """
for i = 3, #ARGV do
  local found = redis.call('HSCAN', ARGV[1] .. 'presence:look:' .. ARGV[i], 0, 'COUNT', 16)[2]
  for j = 1, #found, 2 do
    if found[j] ~= ARGV[2] then return found[j + 1] end
  end
end
return false
"""

# ARGV: prefix, node, ttl_ms. Replies 1 if the heartbeat was still there (0:
# it had expired, and the node may have been swept).
_BEAT = """
local beat = ARGV[1] .. 'presence:node:' .. ARGV[2]
local alive = redis.call('EXISTS', beat)
redis.call('SET', beat, '1', 'PX', ARGV[3])
redis.call('SADD', ARGV[1] .. 'presence:nodes', ARGV[2])
return alive
"""


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _change(
    table: PresenceTable, room: str, nick: str, key: str, state: str,
) -> tuple[str, str, str, str, str]:
    """One change as the update script takes it: with the nick's skeletons when
    it comes online (the table keeps those of its online nicks; computing them
    costs tens of microseconds)."""
    if state != ONLINE:
        return room, key, nick, state, ""
    skeletons = table.skeletons(key) or nick_skeletons(nick)
    return room, key, nick, state, "\n".join(sorted(skeletons))


def _updated(rooms: Iterable[Any]) -> tuple[dict[str, list[Change]], dict[str, int]]:
    """A script's reply, ``{room, count, {nick, state, ...}}`` per room, as changes and counts."""
    changes: dict[str, list[Change]] = {}
    counts: dict[str, int] = {}
    for room_b, count, flat in rooms:
        room = _as_str(room_b)
        counts[room] = int(count)
        if flat:
            changes[room] = [Change(_as_str(flat[i]), _as_str(flat[i + 1])) for i in range(0, len(flat), 2)]
    return changes, counts


class RedisPresence:
    """A :class:`~squall.presence.Presence` shared by every node on one Redis.

    :param url: the bus's ``redis://`` URL.
    :param table: this node's own connections and polls; what it shows
        while Redis is unreachable, and what it mends Redis from.
    :param node_id: unique per process start (the bus's origin).
    :param prefix: the bus's prefix; starts every key and channel.
    :param detail_max: ``presence_detail_max``: bigger rooms get counts only.
    :param heartbeat: seconds between heartbeats and sweeps; default 5.
    :param ttl: seconds a heartbeat keeps a node alive; default 15.

    Call :meth:`start` once the loop runs and :meth:`close` at shutdown
    (it takes this node's members out at once).
    """

    def __init__(
        self, url: str, table: PresenceTable, *, node_id: str, prefix: str = "squall:",
        detail_max: int = 500, heartbeat: float = HEARTBEAT_SECONDS, ttl: float = TTL_SECONDS,
    ) -> None:
        if not node_id or "," in node_id or " " in node_id:
            raise ValueError(f"node_id must be a word without commas or spaces, got {node_id!r}")
        if not 0 < heartbeat < ttl:
            raise ValueError(f"heartbeat ({heartbeat}) must be more than 0 and less than ttl ({ttl})")
        self.table = table
        self.node_id = node_id
        self.prefix = prefix
        self.detail_max = detail_max
        self.heartbeat = heartbeat
        self.ttl = ttl
        # Not the bus's own origin: the node hears its own presence events
        # back from Redis, in the order the scripts ran.
        self.origin = f"{node_id}/presence"
        self._client = redis.asyncio.Redis.from_url(
            url, protocol=2, retry=Retry(NoBackoff(), 0), socket_timeout=2 * heartbeat,
            socket_connect_timeout=2 * heartbeat, health_check_interval=0,
            client_name=f"{prefix}node-{node_id}-presence",
        )
        self._update = self._client.register_script(_UPDATE)
        self._sweep = self._client.register_script(_SWEEP)
        self._page = self._client.register_script(_PAGE)
        self._lookalike = self._client.register_script(_LOOKALIKE)
        self._heartbeat = self._client.register_script(_BEAT)
        self._lock = asyncio.Lock()  # one script of this node's at a time: changes stay in order
        self._mend = True  # Redis's view of this node's pairs may be wrong: compare with the table
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._trouble = ThrottledLog(log, interval=LOG_INTERVAL_SECONDS, level=logging.WARNING)
        self.stats = {"updates": 0, "changes": 0, "swept": 0, "mended": 0, "failures": 0}

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        """Beat and sweep every ``heartbeat`` seconds from now on (the first at once)."""
        self._task = asyncio.ensure_future(self._beat_loop())

    async def close(self) -> None:
        """Stop beating and take this node's members out of every room now."""
        # Not cancelled: redis-py may swallow a CancelledError in the middle
        # of a command, and the loop would beat on. The round trip it may be
        # in is bounded by the socket timeout.
        self._closing.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), CLOSE_SECONDS)
            except asyncio.TimeoutError:
                self._task.cancel()  # and the client's closing ends its round trip
            except Exception:
                pass  # the loop logs its own failures
        try:
            async with asyncio.timeout(CLOSE_SECONDS), self._lock:
                await self._client.delete(self._key("node", self.node_id))
                await self._sweep_dead()
        except _CONNECTION_ERRORS as exc:
            log.warning("presence: could not take this node's members out (%s); other nodes will"
                        " within %.0f s", exc, self.ttl + self.heartbeat)
        await self._client.aclose()

    def status(self) -> dict[str, object]:
        """``shared``: false while Redis is unreachable (or not yet mended), when
        this node shows its own members only."""
        return {"kind": "redis", "node": self.node_id, "shared": not self._mend, **self.stats}

    # -- Presence -------------------------------------------------------------

    async def update(self, changes: Mapping[str, Sequence[Change]], *, count: Iterable[str] = ()) -> Updated:
        extra = list(count)
        table = self.table
        flat = [_change(table, room, c.nick, nick_key(c.nick), c.state) for room, cs in changes.items() for c in cs]
        try:
            async with self._lock:
                await self._mend_if_needed()
                changed, counts = await self._apply(flat, extra)
                await self._mend_if_needed()  # the script found this node's heartbeat gone
            return Updated(changed, counts, Reach.PUBLISHED)
        except _CONNECTION_ERRORS as exc:
            self._failed(exc, mend=True)
            local = {room: list(cs) for room, cs in changes.items() if cs}
            return Updated(local, {room: self.table.count(room) for room in (*local, *extra)}, Reach.THIS_NODE)

    async def page(self, room: str, *, after: str | None, limit: int) -> MembersPage:
        if self._mend:  # not in Redis (yet): the node's own view is better than a stale one
            return self.table.page(room, after=after, limit=limit)
        try:
            count, keys, nicks = await self._page(args=[self.prefix, room, after or "", limit])
        except _CONNECTION_ERRORS as exc:
            self._failed(exc)
            return self.table.page(room, after=after, limit=limit)
        more = len(keys) > limit
        keys, nicks = keys[:limit], nicks[:limit]
        spelled = [_as_str(n if n is not None else k) for k, n in zip(keys, nicks)]
        return MembersPage(int(count), spelled, _as_str(keys[-1]) if more else None)

    async def counts(self, rooms: Iterable[str]) -> dict[str, int]:
        rooms = list(rooms)
        try:
            pipe = self._client.pipeline(transaction=False)
            for room in rooms:
                pipe.zcard(self._key("room", room))
            return {room: int(n) for room, n in zip(rooms, await pipe.execute())}
        except _CONNECTION_ERRORS as exc:
            self._failed(exc)
            return {room: self.table.count(room) for room in rooms}

    async def online(self, key: str) -> str | None:
        here = self.table.online(key)
        if here is not None:
            return here
        try:
            rooms = await self._client.hget(self._key("users"), key)
        except _CONNECTION_ERRORS as exc:
            self._failed(exc)
            return None
        return key if rooms is not None and int(rooms) > 0 else None

    async def lookalike(self, nick: str, *, besides: str) -> str | None:
        here = self.table.lookalike(nick, besides=besides)
        if here is not None:
            return here
        try:
            found = await self._lookalike(args=[self.prefix, besides, *sorted(nick_skeletons(nick))])
        except _CONNECTION_ERRORS as exc:
            self._failed(exc)
            return None
        return _as_str(found) if found else None

    # -- the scripts ----------------------------------------------------------

    async def _apply(
        self, flat: Sequence[tuple[str, str, str, str, str]], extra: Sequence[str]
    ) -> tuple[dict[str, list[Change]], dict[str, int]]:
        """Apply changes in scripts of at most CHANGES_PER_SCRIPT; returns what altered rooms."""
        changed: dict[str, list[Change]] = {}
        counts: dict[str, int] = {}
        start = 0
        while True:
            chunk = flat[start : start + CHANGES_PER_SCRIPT]
            last = start + CHANGES_PER_SCRIPT >= len(flat)
            wanted = extra if last else []
            args: list[Any] = [self.prefix, self.node_id, self._start_line(), self.detail_max,
                               int(self.ttl * 1000), len(wanted), *wanted]
            for change in chunk:
                args += change
            alive, rooms = await self._update(args=args)
            self.stats["updates"] += 1
            self.stats["changes"] += len(chunk)
            if not int(alive):
                self._mend = True  # swept meanwhile: mend on the next call
            part, part_counts = _updated(rooms)
            for room, cs in part.items():
                changed.setdefault(room, []).extend(cs)
            counts.update(part_counts)
            if last:
                return changed, counts
            start += CHANGES_PER_SCRIPT

    async def _beat(self) -> None:
        """Refresh this node's heartbeat; mend Redis if it had expired."""
        if not int(await self._heartbeat(args=[self.prefix, self.node_id, int(self.ttl * 1000)])):
            self._mend = True

    async def _sweep_dead(self) -> None:
        while True:
            more, rooms = await self._sweep(args=[self.prefix, self._start_line(), self.detail_max, SWEEP_PER_SCRIPT])
            changed, _ = _updated(rooms)
            swept = sum(len(cs) for cs in changed.values())
            if swept:
                self.stats["swept"] += swept
                log.info("presence: %d members of dead nodes left %d rooms", swept, len(changed))
            if not int(more):
                return

    async def _mend_if_needed(self) -> None:
        """Make this node's pairs in Redis those of its table, announcing the difference."""
        if not self._mend:
            return
        await self._beat()
        self._mend = False
        pairs_key = self._key("node", self.node_id) + ":pairs"
        held: set[str] = set()
        async for pair in self._client.sscan_iter(pairs_key, count=1000):
            held.add(_as_str(pair))
        flat: list[tuple[str, str, str, str, str]] = []
        here: set[str] = set()
        for room, key, nick in self.table.pairs():
            pair = f"{room}:{key}"
            here.add(pair)
            flat.append(_change(self.table, room, nick, key, ONLINE))  # also rewrites holders a sweep took
        for pair in held - here:
            room, _, key = pair.partition(":")
            flat.append(_change(self.table, room, key, key, OFFLINE))
        await self._apply(flat, [])
        self.stats["mended"] += 1
        log.info("presence: shared view mended (%d pairs here, %d were in Redis)", len(here), len(held))

    async def _beat_loop(self) -> None:
        while not self._closing.is_set():
            try:
                async with self._lock:
                    await self._beat()
                    await self._mend_if_needed()
                    await self._sweep_dead()
            except _CONNECTION_ERRORS as exc:
                self._failed(exc, mend=True)
            except Exception:
                # Beat on whatever went wrong: a node that stops beating is
                # swept while it still has members.
                self._mend = True
                log.exception("presence: heartbeat or sweep failed")
            try:
                await asyncio.wait_for(self._closing.wait(), self.heartbeat)
            except asyncio.TimeoutError:
                pass

    # -- helpers --------------------------------------------------------------

    def _failed(self, exc: BaseException, *, mend: bool = False) -> None:
        """Count and log a failed round trip; after a write (``mend``), Redis's
        view of this node may be wrong until it is mended."""
        if mend:
            self._mend = True
        self.stats["failures"] += 1
        # An error reply (a script refused: out of memory, a read-only
        # replica) degrades like an outage, but says what Redis said.
        what = "refused a command" if isinstance(exc, ResponseError) else "unreachable"
        self._trouble.note(
            f"presence: Redis {what} ({exc}); showing this node's members only until it is back",
            now=time.monotonic(),
        )

    def _start_line(self) -> str:
        """What follows ``SQB1`` on the bus messages the scripts publish: the
        origin and the publish time in ms, for the receivers' bus-lag metric
        (squall/bus/wire.py; a reader that knows no time takes it as part of
        the origin, which is not its own either way)."""
        return f"{self.origin} {int(time.time() * 1000)}"

    def _key(self, *parts: str) -> str:
        return self.prefix + "presence:" + ":".join(parts)

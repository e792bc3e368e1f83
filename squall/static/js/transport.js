// Transports: WebSocket, server-sent events and long-polling behind one interface.
//
// Theory of operation. An *adapter* speaks one transport for all joined rooms and
// reports three things to its sink: `opened(adapter)`, `event(adapter, ev)` with
// events shaped like the WebSocket frames (`joined`, `message`, `ack`, `error`,
// `presence`, `typing`, `update`, plus `members` from polling and `send-failed` when an HTTP
// send never got an answer), and `failed(adapter, info)` exactly once, after which
// the adapter is dead. Adapters never retry by themselves.
//
// The `Connection` owns everything that outlives one adapter:
//
// * the per-room cursor (last seq delivered). Every message from every adapter goes
//   through it, and anything at or below the cursor is dropped. That one rule is
//   what makes resume, SSE reconnects and the WebSocket upgrade free of duplicates;
//   joining with `since = cursor` is what makes them free of gaps.
// * the outbox of unacknowledged sends, keyed by the client id. Entries are sent
//   once a room is *ready* on the current adapter (joined, and the cursor has
//   reached the seq the join reported, so our own message would already have come
//   back in the backlog if the server had it); they are sent again, with the same
//   id, only after the adapter that carried them died.
// * the choice of transport. WebSocket first. It falls back to SSE (long-polling if
//   EventSource is missing or its stream never opens) when the socket cannot open
//   within OPEN_TIMEOUT_MS on a page that never had one, when the handshake keeps
//   failing after it had worked, or when it closes abnormally several times in a
//   row. On a fallback it probes WebSocket in the background; once the probe is
//   joined and caught up in every room it becomes the current adapter and the old
//   one is stopped, so the switch has neither gap nor duplicate.
//
// Time and randomness come in through `backoffDelay`'s arguments and the
// `timers`/`random` options, so the policy can be exercised without a network.

import {
  ApiError, eventsUrl, fetchMembers, fetchMessages, fetchSeen, postMessage, postTyping, websocketUrl,
} from "./api.js";

export const Kind = Object.freeze({ WS: "ws", SSE: "sse", LONGPOLL: "longpoll" });
export const State = Object.freeze({ CONNECTING: "connecting", OPEN: "open", OFFLINE: "offline" });

export const OPEN_TIMEOUT_MS = 3000; // the "cannot open within 3 s"
export const MAX_ABNORMAL_CLOSES = 3; // "closes abnormally several times in a row"
export const MAX_CONNECT_FAILURES = 5; // handshake failures after WebSocket had worked
const STABLE_OPEN_MS = 10_000; // a socket open this long resets the abnormal-close count
// A socket can die without a close (Wi-Fi gone, laptop lid, NAT timeout): only a
// missing answer tells. After PING_AFTER_MS without a frame the page pings; no frame
// within PONG_DEADLINE_MS after that and the socket counts as dead, so a lost network
// shows within about 14 s at worst, and at once where the browser fires `offline`.
export const HEARTBEAT_CHECK_MS = 2000;
export const PING_AFTER_MS = 8000;
export const PONG_DEADLINE_MS = 4000;
const READY_TIMEOUT_MS = 3000; // a room counts as caught up after this even if seqs have holes
const HISTORY_LIMIT = 50; // what a join without `since` shows, as on the WebSocket
const CATCHUP_LIMIT = 500;
const POLL_WAIT_S = 25;
const MEMBERS_POLL_MS = 10_000; // long-poll gets no presence events
const MAX_UNAVAILABLE_RETRIES = 5;
const RECONNECT = { baseMs: 500, capMs: 15_000 };
const PROBE = { baseMs: 5000, capMs: 60_000 };

// 1000 is ours, 1001 a server shutting down, 4008 "too slow, resume": none of those
// says the network is hostile to WebSocket.
const EXPECTED_CLOSE_CODES = new Set([1000, 1001, 4008]);

/**
 * Milliseconds to wait before reconnect attempt number `attempt` (0 first):
 * exponential from `baseMs`, capped at `capMs`, with "equal jitter" (half fixed,
 * half random) so that a restarted server is not hit by every page at once.
 */
export function backoffDelay(attempt, { baseMs, capMs, random = Math.random }) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + (random() * ceiling) / 2;
}

/** The last seq delivered per room. `accept` says whether a message is new. */
export class SeqCursor {
  constructor() {
    this._last = new Map();
  }

  last(room) {
    return this._last.get(room) ?? null;
  }

  accept(room, seq) {
    const last = this._last.get(room);
    if (last !== undefined && seq <= last) return false;
    this._last.set(room, seq);
    return true;
  }

  forget(room) {
    this._last.delete(room);
  }
}

/** The next transport to try after `kind` failed, or null to stay. */
export function fallbackKind(kind, { eventSource = "EventSource" in globalThis } = {}) {
  if (kind === Kind.WS) return eventSource ? Kind.SSE : Kind.LONGPOLL;
  if (kind === Kind.SSE) return Kind.LONGPOLL;
  return null;
}

class WebSocketAdapter {
  constructor(token, sink) {
    this.kind = Kind.WS;
    this._token = token;
    this._sink = sink;
    this._socket = null;
    this._dead = false;
    this._openedAt = null;
    this._lastHeard = 0;
    this._pingSentAt = null; // the unanswered ping's time, if one is out
    this._timers = [];
  }

  start() {
    const socket = new WebSocket(websocketUrl(this._token));
    this._socket = socket;
    this._timers.push(setTimeout(() => this._fail({ timeout: true }), OPEN_TIMEOUT_MS));
    socket.onopen = () => {
      this._clearTimers();
      this._openedAt = Date.now();
      this._lastHeard = Date.now();
      this._timers.push(setInterval(() => this._keepAlive(), HEARTBEAT_CHECK_MS));
      this._sink.opened(this);
    };
    socket.onmessage = (frame) => {
      this._lastHeard = Date.now();
      let event;
      try {
        event = JSON.parse(frame.data);
      } catch {
        return; // not ours to interpret; the server only sends JSON
      }
      if (event && typeof event.type === "string" && event.type !== "pong") {
        this._sink.event(this, event);
      }
    };
    socket.onclose = (close) => this._fail({ code: close.code });
    socket.onerror = () => {}; // always followed by close, which carries the code
  }

  get isOpen() {
    return this._socket?.readyState === WebSocket.OPEN && !this._dead;
  }

  join(room, since) {
    const frame = { type: "join", room };
    if (since !== null && since !== undefined) frame.since = since;
    return this._send(frame);
  }

  leave(room) {
    return this._send({ type: "leave", room });
  }

  send(room, body, id, extra = null) {
    return this._send({ type: "send", room, body, id, ...(extra ?? {}) });
  }

  typing(room) {
    return this._send({ type: "typing", room });
  }

  stop() {
    if (this._dead) return;
    this._dead = true;
    this._clearTimers();
    this._socket?.close(1000);
  }

  _send(frame) {
    if (!this.isOpen) return false;
    this._socket.send(JSON.stringify(frame));
    return true;
  }

  /** The browser says the network is gone: this socket is dead, whatever it says. */
  lost() {
    this._fail({ code: 1006, network: true });
  }

  /** Ask now whether the socket still works (the network came back, the tab woke up). */
  check() {
    if (this.isOpen && this._pingSentAt === null) this._ping();
  }

  _keepAlive() {
    const now = Date.now();
    if (this._pingSentAt !== null && this._lastHeard < this._pingSentAt) {
      if (now - this._pingSentAt > PONG_DEADLINE_MS) this._fail({ code: 1006, network: true });
      return;
    }
    this._pingSentAt = null;
    if (now - this._lastHeard >= PING_AFTER_MS) this._ping();
  }

  _ping() {
    this._pingSentAt = Date.now();
    this._send({ type: "ping" });
  }

  _fail(info) {
    if (this._dead) return;
    this._dead = true;
    this._clearTimers();
    const opened = this._openedAt !== null;
    try {
      this._socket?.close();
    } catch {
      // Closing a socket that never connected can throw in old engines.
    }
    this._sink.failed(this, {
      ...info,
      opened,
      openMs: opened ? Date.now() - this._openedAt : 0,
      unauthorized: info.code === 4001,
    });
  }

  _clearTimers() {
    for (const timer of this._timers) {
      clearTimeout(timer);
      clearInterval(timer);
    }
    this._timers = [];
  }
}

/** Sends, typing and the catch-up read are the same for SSE and long-polling. */
class HttpAdapter {
  constructor(token, sink) {
    this._token = token;
    this._sink = sink;
    this._rooms = new Map(); // room → AbortController
    this._dead = false;
    this._opened = false;
    this._timers = [];
  }

  get isOpen() {
    return !this._dead;
  }

  start() {}

  join(room, since) {
    if (this._dead || this._rooms.has(room)) return true;
    const controller = new AbortController();
    this._rooms.set(room, controller);
    this._run(room, since, controller.signal).catch((error) => {
      if (controller.signal.aborted || this._dead) return;
      if (error instanceof ApiError && error.status === 403 && ROOM_REFUSALS.includes(error.code)) {
        // This room is closed to us (private, banned, kicked): only it stops, told as on WebSocket.
        this._rooms.delete(room);
        this._sink.event(this, { type: "error", room, code: error.code, reason: error.reason });
        return;
      }
      this._fail({ unauthorized: error instanceof ApiError && error.unauthorized });
    });
    return true;
  }

  leave(room) {
    this._rooms.get(room)?.abort();
    this._rooms.delete(room);
    return true;
  }

  send(room, body, id, extra = null) {
    if (this._dead) return false;
    // Not tied to the adapter's lifetime: an answer that comes after an upgrade
    // still acknowledges the message.
    postMessage(this._token, room, body, id, { extra }).then(
      (answer) => this._sink.event(this, { type: "ack", id, room, seq: answer.seq }),
      (error) => {
        if (error instanceof ApiError && error.status < 500 && !error.unauthorized) {
          this._sink.event(this, { type: "error", id, room, code: error.code, reason: error.reason });
        } else if (error instanceof ApiError && error.code === "unavailable") {
          this._sink.event(this, { type: "error", id, room, code: error.code, reason: error.reason });
        } else {
          this._sink.event(this, { type: "send-failed", id, room });
        }
      },
    );
    return true;
  }

  typing(room) {
    if (this._dead) return false;
    postTyping(this._token, room).catch(() => {});
    return true;
  }

  stop() {
    if (this._dead) return;
    this._dead = true;
    this._teardown();
  }

  /** Read what is missing since `since` (or the recent history), announce the join. */
  async _catchUp(room, since, signal) {
    const [page, members] = await Promise.all([
      since === null || since === undefined
        ? fetchMessages(this._token, room, { limit: HISTORY_LIMIT, signal })
        : fetchMessages(this._token, room, { since, wait: 0, limit: CATCHUP_LIMIT, signal }),
      fetchMembers(this._token, room, { signal }),
    ]);
    if (signal.aborted) return since;
    this._markOpened();
    this._sink.event(this, {
      type: "joined", room, seq: page.seq, members: members.members, count: members.count, next: members.next,
    });
    let cursor = since ?? null;
    for (const message of page.messages) {
      this._sink.event(this, roomEvent(message, room));
      cursor = Math.max(cursor ?? 0, message.seq);
    }
    if (since === null || since === undefined) cursor = Math.max(cursor ?? 0, page.seq ?? 0);
    return cursor;
  }

  _markOpened() {
    if (this._opened || this._dead) return;
    this._opened = true;
    this._sink.opened(this);
  }

  _fail(info) {
    if (this._dead) return;
    this._dead = true;
    this._teardown();
    this._sink.failed(this, { opened: this._opened, ...info });
  }

  _teardown() {
    for (const controller of this._rooms.values()) controller.abort();
    this._rooms.clear();
    for (const timer of this._timers) clearInterval(timer);
    this._timers = [];
  }
}

// Refusals of one room (docs/protocol.md, "Rooms"): that room stops, the connection stays.
const ROOM_REFUSALS = ["not_member", "banned", "forbidden"];

class LongPollAdapter extends HttpAdapter {
  constructor(token, sink) {
    super(token, sink);
    this.kind = Kind.LONGPOLL;
    this._timers.push(setInterval(() => this._pollMembers(), MEMBERS_POLL_MS));
  }

  async _run(room, since, signal) {
    let cursor = await this._catchUp(room, since, signal);
    while (!signal.aborted) {
      const page = await fetchMessages(this._token, room, {
        since: cursor ?? 0, wait: POLL_WAIT_S, limit: CATCHUP_LIMIT, signal,
      });
      for (const message of page.messages) {
        this._sink.event(this, roomEvent(message, room));
        cursor = Math.max(cursor ?? 0, message.seq);
      }
    }
  }

  _pollMembers() {
    // Long-poll gets no `seen` events either: read positions come with the member poll.
    if (this._rooms.size) {
      fetchSeen(this._token).then(
        (answer) => {
          if (this._dead) return;
          for (const room of this._rooms.keys()) {
            const seq = answer.rooms?.[room];
            if (seq) this._sink.event(this, { type: "seen", room, seq });
          }
        },
        () => {},
      );
    }
    for (const [room, controller] of this._rooms) {
      fetchMembers(this._token, room, { signal: controller.signal }).then(
        (answer) => {
          if (!this._dead) {
            this._sink.event(this, {
              type: "members", room, members: answer.members, count: answer.count, next: answer.next,
            });
          }
        },
        () => {}, // the poll loop notices an outage on its own
      );
    }
  }
}

class EventSourceAdapter extends HttpAdapter {
  constructor(token, sink) {
    super(token, sink);
    this.kind = Kind.SSE;
    this._sources = new Map();
    this._streamOpened = false;
  }

  async _run(room, since, signal) {
    const cursor = await this._catchUp(room, since, signal);
    if (signal.aborted) return;
    const source = new EventSource(eventsUrl(this._token, room, cursor));
    this._sources.set(room, source);
    signal.addEventListener("abort", () => source.close());
    const forward = (type) => (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      this._sink.event(this, type === "message" ? roomEvent(data, room) : { ...data, type, room });
    };
    source.addEventListener("message", forward("message"));
    source.addEventListener("presence", forward("presence"));
    source.addEventListener("typing", forward("typing"));
    source.addEventListener("update", forward("update"));
    source.addEventListener("seen", forward("seen"));
    // Put out of the room (kick, ban, removal): the server ends the stream after this.
    source.addEventListener("refused", (event) => {
      source.close();
      this._rooms.get(room)?.abort();
      this._rooms.delete(room);
      forward("error")(event);
    });
    source.onopen = () => {
      this._streamOpened = true;
    };
    // EventSource would reconnect by itself with Last-Event-ID, but then a 401 or a
    // dead server looks the same as a blip; the Connection's back-off and catch-up
    // read handle both, and the cursor drops what the new stream repeats.
    source.onerror = () => this._fail({ stream: true, streamOpened: this._streamOpened });
  }

  _teardown() {
    for (const source of this._sources?.values() ?? []) source.close();
    this._sources?.clear();
    super._teardown();
  }
}

/** A message or a change (edit, delete, reaction) of `room`, as every adapter hands it on. */
function roomEvent(data, room) {
  return { ...data, type: data.type === "change" ? "change" : "message", room };
}

const ADAPTERS = { [Kind.WS]: WebSocketAdapter, [Kind.SSE]: EventSourceAdapter, [Kind.LONGPOLL]: LongPollAdapter };

/**
 * The adaptive connection for one session.
 *
 * `onEvent(ev)` gets de-duplicated, seq-ordered `message`s and `change`s per room, and `joined`,
 * `ack`, `error`, `presence`, `typing`, `members`, `update`. `onStatus({kind, state, forced,
 * fellBack, upgraded})` is called on every transport or state change.
 * `renewToken()` must resolve to a fresh token (or reject) when the server says
 * the session is no longer valid.
 */
export class Connection {
  constructor({ token, forced = null, onEvent, onStatus, renewToken, random = Math.random }) {
    this._token = token;
    this._forced = Object.values(Kind).includes(forced) ? forced : null;
    this._onEvent = onEvent;
    this._onStatus = onStatus;
    this._renewToken = renewToken;
    this._random = random;
    this._kind = this._forced ?? (globalThis.WebSocket ? Kind.WS : fallbackKind(Kind.WS));
    this._cursor = new SeqCursor();
    this._rooms = new Set();
    this._outbox = new Map(); // id → {room, body, id, extra, inFlight, sentOn, unavailable, timer}
    this._active = null;
    this._probe = null;
    this._state = State.CONNECTING;
    this._attempts = 0;
    this._probeAttempts = 0;
    this._wsEverOpened = false;
    this._wsConnectFailures = 0;
    this._abnormalCloses = 0;
    this._reconnectTimer = null;
    this._probeTimer = null;
    this._stopped = false;
    this._sink = {
      opened: (adapter) => this._opened(adapter),
      event: (adapter, event) => this._event(adapter, event),
      failed: (adapter, info) => this._failed(adapter, info),
    };
  }

  get kind() {
    return this._kind;
  }

  /** The token new adapters use: the one given, or the last `renewToken()` gave. */
  get token() {
    return this._token;
  }

  get state() {
    return this._state;
  }

  /** Sends written and not yet acknowledged: what waits for the connection. */
  get queued() {
    return this._outbox.size;
  }

  start() {
    this._connect();
  }

  /** The browser says the network is gone (`offline`): stop waiting on a dead socket. */
  networkLost() {
    if (this._stopped) return;
    const adapter = this._active;
    if (adapter?.lost) adapter.lost();
    else if (adapter) {
      this._active = null;
      this._retire(adapter);
      this._setState(State.OFFLINE);
      this._scheduleReconnect();
    }
  }

  /** The network is back (`online`), or the user asked: reconnect now, or check the socket we have. */
  reconnectNow() {
    if (this._stopped) return;
    if (this._active) {
      this._active.check?.();
      return;
    }
    this._attempts = 0;
    clearTimeout(this._reconnectTimer);
    this._connect();
  }

  /** The tab became visible: a socket that slept with it may be dead. */
  check() {
    this._active?.check?.();
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._probeTimer);
    this._active?.stop();
    this._probe?.stop();
    for (const entry of this._outbox.values()) clearTimeout(entry.timer);
  }

  join(room) {
    if (this._rooms.has(room)) return;
    this._rooms.add(room);
    for (const adapter of [this._active, this._probe]) {
      if (adapter && this._canJoin(adapter)) this._joinOn(adapter, room);
    }
  }

  leave(room) {
    if (!this._rooms.delete(room)) return;
    this._cursor.forget(room);
    for (const adapter of [this._active, this._probe]) {
      if (adapter) {
        adapter.leave(room);
        adapter.squallReady?.delete(room);
      }
    }
    for (const [id, entry] of this._outbox) {
      if (entry.room === room) {
        clearTimeout(entry.timer);
        this._outbox.delete(id);
      }
    }
  }

  /**
   * Queue a message; it goes out now if the room is ready, else on (re)connect.
   * `extra`: its `attachments` (file ids), or a reply (`{reply_to}`) or a change
   * (`{type, target, emoji}`),
   * answered and retried like a send.
   */
  send(room, body, id, extra = null) {
    const existing = this._outbox.get(id);
    if (existing) {
      clearTimeout(existing.timer);
      existing.timer = null;
      existing.unavailable = 0;
    } else {
      this._outbox.set(id, { room, body, id, extra, inFlight: false, sentOn: null, unavailable: 0, timer: null });
    }
    this._flush();
  }

  typing(room) {
    if (this._active && this._active.squallReady?.has(room)) this._active.typing(room);
  }

  lastSeq(room) {
    return this._cursor.last(room);
  }

  _connect() {
    if (this._stopped) return;
    clearTimeout(this._reconnectTimer);
    const adapter = this._makeAdapter(this._kind);
    this._active = adapter;
    this._setState(State.CONNECTING);
    adapter.start();
    if (this._canJoin(adapter)) {
      for (const room of this._rooms) this._joinOn(adapter, room);
      if (this._rooms.size === 0) this._opened(adapter);
    }
  }

  _makeAdapter(kind) {
    const adapter = new ADAPTERS[kind](this._token, this._sink);
    adapter.squallReady = new Set(); // rooms caught up on this adapter
    adapter.squallJoinSeq = new Map(); // room → seq its `joined` reported
    adapter.squallReadyTimers = [];
    return adapter;
  }

  _canJoin(adapter) {
    // HTTP adapters join by starting requests; a socket must be open first.
    return adapter.kind !== Kind.WS || adapter.isOpen;
  }

  _joinOn(adapter, room) {
    adapter.join(room, this._cursor.last(room));
  }

  _opened(adapter) {
    if (adapter === this._probe) {
      for (const room of this._rooms) this._joinOn(adapter, room);
      this._maybePromote();
      return;
    }
    if (adapter !== this._active) return;
    if (adapter.kind === Kind.WS) {
      this._wsEverOpened = true;
      this._wsConnectFailures = 0;
      for (const room of this._rooms) this._joinOn(adapter, room);
    }
    this._attempts = 0;
    this._setState(State.OPEN);
  }

  _event(adapter, event) {
    const current = adapter === this._active || adapter === this._probe;
    switch (event.type) {
      case "ack":
        this._acknowledged(event.id);
        this._onEvent(event);
        return;
      case "error":
        if (event.id !== undefined && event.id !== null) {
          this._sendFailed(event);
        } else if (current) {
          this._onEvent(event);
        }
        return;
      case "send-failed":
        this._sendLost(event.id);
        return;
      default:
        break;
    }
    if (!current || !this._rooms.has(event.room)) return;
    if (event.type === "joined") {
      adapter.squallJoinSeq.set(event.room, event.seq ?? 0);
      adapter.squallReadyTimers.push(
        setTimeout(() => this._markReady(adapter, event.room), READY_TIMEOUT_MS),
      );
      this._checkReady(adapter, event.room);
      if (adapter === this._active) this._onEvent(event);
      return;
    }
    if (event.type === "message" || event.type === "change") {
      if (typeof event.seq !== "number" || !this._cursor.accept(event.room, event.seq)) return;
      if (this._outbox.has(event.id)) this._acknowledged(event.id);
      this._onEvent(event);
      for (const each of [this._active, this._probe]) if (each) this._checkReady(each, event.room);
      return;
    }
    // Presence, typing and member lists only from the adapter we rely on.
    if (adapter === this._active) this._onEvent(event);
    else if (event.type === "update") this._onEvent(event);
  }

  _checkReady(adapter, room) {
    const joinSeq = adapter.squallJoinSeq.get(room);
    if (joinSeq === undefined) return;
    if ((this._cursor.last(room) ?? 0) >= joinSeq) this._markReady(adapter, room);
  }

  _markReady(adapter, room) {
    if (adapter.squallReady.has(room) || !this._rooms.has(room)) return;
    if (adapter !== this._active && adapter !== this._probe) return;
    adapter.squallReady.add(room);
    if (adapter === this._active) this._flush();
    else this._maybePromote();
  }

  _maybePromote() {
    const probe = this._probe;
    if (!probe || !probe.isOpen) return;
    for (const room of this._rooms) if (!probe.squallReady.has(room)) return;
    const old = this._active;
    this._probe = null;
    this._active = probe;
    this._kind = Kind.WS;
    this._wsEverOpened = true;
    this._attempts = 0;
    this._probeAttempts = 0;
    clearTimeout(this._reconnectTimer);
    if (old) this._retire(old);
    this._setState(State.OPEN, { upgraded: true });
    this._flush();
  }

  _retire(adapter) {
    adapter.stop();
    for (const timer of adapter.squallReadyTimers) clearTimeout(timer);
    for (const entry of this._outbox.values()) {
      // A WebSocket send that was never acknowledged is lost with its socket; an
      // HTTP send still gets its answer, so it stays in flight.
      if (entry.sentOn === adapter && adapter.kind === Kind.WS) entry.inFlight = false;
    }
  }

  _flush() {
    const adapter = this._active;
    if (!adapter) return;
    // A socket delivers frames in order, so everything can go at once. Parallel HTTP
    // requests may overtake each other, so over HTTP each room has one send in flight
    // and the rest wait their turn: the room's order is the order they were written.
    const ordered = adapter.kind !== Kind.WS;
    const busy = new Set();
    for (const entry of this._outbox.values()) {
      if (busy.has(entry.room)) continue;
      if (entry.inFlight || entry.timer) {
        if (ordered) busy.add(entry.room);
        continue;
      }
      if (!adapter.squallReady.has(entry.room)) continue;
      if (adapter.send(entry.room, entry.body, entry.id, entry.extra)) {
        entry.inFlight = true;
        entry.sentOn = adapter;
        if (ordered) busy.add(entry.room);
      }
    }
  }

  _acknowledged(id) {
    const entry = this._outbox.get(id);
    if (!entry) return;
    clearTimeout(entry.timer);
    this._outbox.delete(id);
    this._flush();
  }

  _sendFailed(event) {
    const entry = this._outbox.get(event.id);
    if (!entry) return;
    if (event.code === "unavailable" && entry.unavailable < MAX_UNAVAILABLE_RETRIES) {
      this._retryLater(entry, entry.unavailable++);
      return;
    }
    clearTimeout(entry.timer);
    this._outbox.delete(event.id);
    this._onEvent({ ...event, room: event.room ?? entry.room });
    this._flush();
  }

  _sendLost(id) {
    const entry = this._outbox.get(id);
    if (entry) this._retryLater(entry, entry.unavailable++);
  }

  _retryLater(entry, attempt) {
    entry.inFlight = false;
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => {
      entry.timer = null;
      this._flush();
    }, backoffDelay(attempt, { ...RECONNECT, random: this._random }));
  }

  async _failed(adapter, info) {
    if (adapter === this._probe) {
      this._probe = null;
      this._retire(adapter);
      this._scheduleProbe();
      return;
    }
    if (adapter !== this._active || this._stopped) return;
    this._active = null;
    this._retire(adapter);

    if (info.unauthorized) {
      this._setState(State.CONNECTING);
      try {
        this._token = await this._renewToken();
      } catch {
        this._setState(State.OFFLINE);
        this._scheduleReconnect();
        return;
      }
      this._connect();
      return;
    }

    let immediate = false;
    if (adapter.kind === Kind.WS && !this._forced) {
      if (!info.opened) {
        this._wsConnectFailures += 1;
        if (!this._wsEverOpened || this._wsConnectFailures >= MAX_CONNECT_FAILURES) {
          this._fallBack(Kind.WS);
          return;
        }
      } else if (!EXPECTED_CLOSE_CODES.has(info.code) && !info.network) {
        this._abnormalCloses = info.openMs >= STABLE_OPEN_MS ? 1 : this._abnormalCloses + 1;
        if (this._abnormalCloses >= MAX_ABNORMAL_CLOSES) {
          this._fallBack(Kind.WS);
          return;
        }
      } else {
        this._abnormalCloses = 0;
        // 4008: we were too slow; resuming from the cursor is all it takes.
        immediate = info.code === 4008;
      }
    }
    if (adapter.kind === Kind.SSE && !this._forced && info.stream && !info.streamOpened) {
      this._fallBack(Kind.SSE);
      return;
    }
    this._setState(State.OFFLINE);
    if (immediate) this._connect();
    else this._scheduleReconnect();
  }

  _fallBack(from) {
    this._kind = fallbackKind(from) ?? from;
    this._attempts = 0;
    this._connect();
    this._setState(this._state, { fellBack: true });
    this._scheduleProbe();
  }

  _scheduleReconnect() {
    clearTimeout(this._reconnectTimer);
    const delay = backoffDelay(this._attempts++, { ...RECONNECT, random: this._random });
    this._reconnectTimer = setTimeout(() => this._connect(), delay);
  }

  _scheduleProbe() {
    if (this._forced || this._kind === Kind.WS || !globalThis.WebSocket || this._stopped) return;
    clearTimeout(this._probeTimer);
    const delay = backoffDelay(this._probeAttempts++, { ...PROBE, random: this._random });
    this._probeTimer = setTimeout(() => {
      if (this._probe || this._kind === Kind.WS || this._stopped) return;
      this._probe = this._makeAdapter(Kind.WS);
      this._probe.start();
    }, delay);
  }

  _setState(state, extra = {}) {
    this._state = state;
    this._onStatus({ kind: this._kind, state, forced: this._forced !== null, queued: this.queued, ...extra });
  }
}

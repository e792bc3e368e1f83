// Chat state: joined rooms, their messages, unread and mention counts, members
// and who is typing. No DOM and no network here; main.js feeds events in and
// hands the returned changes to ui.js.

export const MessageState = Object.freeze({ SENT: "sent", PENDING: "pending", FAILED: "failed" });

export const TYPING_SHOWN_MS = 6000; // the server sends typing at most every few seconds
const ROOM_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** The room name the server will accept for what a person typed, or null. */
export function normaliseRoom(text) {
  const room = text.trim().replace(/^#/, "").toLowerCase();
  return ROOM_PATTERN.test(room) ? room : null;
}

/** Nicks compare case-insensitively, as the server's nick_key (str.casefold) does. */
export function sameNick(a, b) {
  return typeof a === "string" && typeof b === "string" && a.toLowerCase() === b.toLowerCase();
}

export class Room {
  constructor(name) {
    this.name = name;
    this.messages = []; // confirmed, ascending seq
    this.pending = new Map(); // client id → message not yet acknowledged (or failed)
    this.unread = 0;
    this.mentions = 0;
    this.members = new Set();
    this.typing = new Map(); // nick → time (ms) until which it is shown
    this.historyDone = false;
    this.loadingHistory = false;
    this.joined = false;
  }

  get oldestSeq() {
    return this.messages.length ? this.messages[0].seq : null;
  }

  bySeq(seq) {
    // Messages arrive in order, so the match is almost always near the end.
    for (let i = this.messages.length - 1; i >= 0; i -= 1) {
      if (this.messages[i].seq === seq) return this.messages[i];
      if (this.messages[i].seq < seq) return null;
    }
    return null;
  }

  /** Insert a confirmed message at its seq position; returns false if it was there. */
  insert(message) {
    if (this.bySeq(message.seq)) return false;
    let index = this.messages.length;
    while (index > 0 && this.messages[index - 1].seq > message.seq) index -= 1;
    this.messages.splice(index, 0, message);
    return true;
  }

  typingNicks(now) {
    const nicks = [];
    for (const [nick, until] of this.typing) {
      if (until > now) nicks.push(nick);
      else this.typing.delete(nick);
    }
    return nicks.sort((a, b) => a.localeCompare(b));
  }
}

function fromWire(event) {
  const links = Array.isArray(event.links) ? event.links : [];
  // `links` holds URLs until previews are fetched; a stored message may carry the
  // preview objects themselves (there or in `previews`).
  const previews = Array.isArray(event.previews) ? event.previews : links.filter((link) => link && typeof link === "object");
  return {
    room: event.room,
    seq: event.seq,
    id: event.id ?? null,
    nick: String(event.nick ?? ""),
    body: String(event.body ?? ""),
    html: typeof event.html === "string" ? event.html : null,
    mentions: Array.isArray(event.mentions) ? event.mentions.map(String) : [],
    links,
    previews,
    ts: typeof event.ts === "number" ? event.ts : Date.now(),
    state: MessageState.SENT,
    error: null,
  };
}

export class ChatStore {
  constructor(me) {
    this.me = me;
    this.rooms = new Map();
    this.active = null;
  }

  room(name) {
    return this.rooms.get(name) ?? null;
  }

  addRoom(name) {
    if (!this.rooms.has(name)) this.rooms.set(name, new Room(name));
    return this.rooms.get(name);
  }

  removeRoom(name) {
    this.rooms.delete(name);
    if (this.active === name) this.active = this.rooms.keys().next().value ?? null;
  }

  /** Make `name` the room on screen; its unread and mention counts are cleared. */
  activate(name) {
    this.active = name;
    const room = this.room(name);
    if (room) {
      room.unread = 0;
      room.mentions = 0;
    }
  }

  totalMentions() {
    let total = 0;
    for (const room of this.rooms.values()) total += room.mentions;
    return total;
  }

  mentionsMe(message) {
    return message.mentions.some((nick) => sameNick(nick, this.me));
  }

  /** A message written here, shown as pending until its ack. */
  addOwn(roomName, body, id) {
    const room = this.room(roomName);
    const message = {
      room: roomName, seq: null, id, nick: this.me, body, html: null, mentions: [], links: [],
      previews: [], ts: Date.now(), state: MessageState.PENDING, error: null,
    };
    room.pending.set(id, message);
    return message;
  }

  /**
   * A `message` event. Returns `{message, replaced, isNew, counts}`: `replaced` is
   * the pending message it confirms (if any), `isNew` false when it was known.
   * `seen` says whether the person is looking at this room right now.
   */
  receive(event, { live, seen }) {
    const room = this.room(event.room);
    if (!room) return null;
    const message = fromWire(event);
    const pending = message.id !== null && sameNick(message.nick, this.me) ? room.pending.get(message.id) : null;
    if (pending) room.pending.delete(message.id);
    const known = room.bySeq(message.seq);
    if (known) {
      // Our own message, placed by its ack before the echo: take the rendered html.
      Object.assign(known, { html: message.html, mentions: message.mentions, links: message.links });
      return { message: known, replaced: pending, isNew: false, counted: false };
    }
    room.insert(message);
    let counted = false;
    if (live && !sameNick(message.nick, this.me)) {
      room.typing.delete(message.nick);
      if (!seen) {
        room.unread += 1;
        if (this.mentionsMe(message)) room.mentions += 1;
        counted = true;
      }
    }
    return { message, replaced: pending, isNew: true, counted };
  }

  /** An `ack`: the pending message gets its seq and joins the confirmed list. */
  acknowledge(event) {
    const room = this.room(event.room);
    const pending = room?.pending.get(event.id);
    if (!pending) return null;
    room.pending.delete(event.id);
    const known = room.bySeq(event.seq);
    if (known) return { message: known, replaced: pending, isNew: false };
    pending.seq = event.seq;
    pending.state = MessageState.SENT;
    pending.error = null;
    room.insert(pending);
    return { message: pending, replaced: pending, isNew: true };
  }

  /** An `error` for one of our sends: the message is marked failed. */
  fail(event) {
    for (const room of this.rooms.values()) {
      const pending = room.pending.get(event.id);
      if (pending) {
        pending.state = MessageState.FAILED;
        pending.error = { code: event.code, reason: event.reason };
        return pending;
      }
    }
    return null;
  }

  retry(roomName, id) {
    const pending = this.room(roomName)?.pending.get(id);
    if (!pending) return null;
    pending.state = MessageState.PENDING;
    pending.error = null;
    return pending;
  }

  /** Older messages from `before=`; returns those that were not known, ascending. */
  prependHistory(roomName, events, { limit }) {
    const room = this.room(roomName);
    if (!room) return [];
    const added = [];
    for (const event of events) {
      const message = fromWire({ ...event, room: roomName });
      if (room.insert(message)) added.push(message);
    }
    if (events.length < limit) room.historyDone = true;
    return added;
  }

  /** An `update` with link previews; returns the message it belongs to. */
  update(event) {
    const message = this.room(event.room)?.bySeq(event.seq);
    if (!message) return null;
    if (Array.isArray(event.links)) message.previews = event.links;
    return message;
  }

  setMembers(roomName, members) {
    const room = this.room(roomName);
    if (room) room.members = new Set(members.map(String));
    return room;
  }

  presence(event, now) {
    const room = this.room(event.room);
    if (!room) return null;
    const nick = String(event.nick);
    if (event.state === "online") room.members.add(nick);
    if (event.state === "offline") {
      room.members.delete(nick);
      room.typing.delete(nick);
    }
    if (event.state === "typing" && !sameNick(nick, this.me)) {
      room.members.add(nick);
      room.typing.set(nick, now + TYPING_SHOWN_MS);
    }
    return room;
  }
}

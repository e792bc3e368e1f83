// Chat state: joined rooms, their messages, unread and mention counts, members
// and who is typing. No DOM and no network here; main.js feeds events in and
// hands the returned changes to ui.js.

export const MessageState = Object.freeze({ SENT: "sent", PENDING: "pending", FAILED: "failed" });

// Refusals a second try can get past: the connection or the server's load, not the message.
const RETRYABLE = new Set(["unavailable", "network", "rate_limited", "internal"]);

/** When a failed send may be tried again (ms since the epoch), or null if it never can as it is. */
export function retryAt(error, now) {
  if (!RETRYABLE.has(error.code)) return null;
  const wait = Number(error.retry_after);
  return error.code === "rate_limited" && Number.isFinite(wait) && wait > 0 ? now + wait * 1000 : now;
}

/** The emoji the reaction picker offers. */
export const COMMON_EMOJI = Object.freeze(["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀"]);

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

/** Whether `me` reacted to `message` with `emoji` (listed, or known from our own changes). */
export function reactedBy(message, emoji, me) {
  if (message.myReactions?.has(emoji)) return true;
  return (message.reactions.get(emoji) ?? []).some((nick) => sameNick(nick, me));
}

export class Room {
  constructor(name) {
    this.name = name;
    this.messages = []; // confirmed, ascending seq
    this.pending = new Map(); // client id → message not yet acknowledged (or failed)
    this.unread = 0;
    this.mentions = 0;
    this.muted = false; // no notifications, and not counted in the title or the icon
    this.firstUnreadSeq = null; // the oldest message counted in `unread`
    this.dividerSeq = null; // "New messages" goes above this one while the room is on screen
    this.members = new Set(); // the nicks known online: all of them, or the pages loaded so far
    this.memberCount = 0; // online in the room, as the server last said
    this.membersNext = null; // cursor of the next page of /members, null once all are here
    this.loadingMembers = false;
    this.refetchingMembers = false;
    this.membersExpanded = false; // "Show more" was used: a first page alone no longer replaces the list
    this.typing = new Map(); // nick → time (ms) until which it is shown
    this.historyDone = false;
    this.loadingHistory = false;
    this.joined = false;
    this.readUpTo = null; // the user's read position (any device), once known
  }

  get oldestSeq() {
    return this.messages.length ? this.messages[0].seq : null;
  }

  /** Where `seq` is, or would go, in `messages` (ascending seq): a binary search. */
  indexOf(seq) {
    let low = 0;
    let high = this.messages.length;
    // Messages arrive in order: the common case is "after the last one".
    if (high && this.messages[high - 1].seq < seq) return high;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.messages[middle].seq < seq) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  bySeq(seq) {
    const message = this.messages[this.indexOf(seq)];
    return message && message.seq === seq ? message : null;
  }

  /** Insert a confirmed message at its seq position; returns false if it was there. */
  insert(message) {
    const index = this.indexOf(message.seq);
    if (this.messages[index]?.seq === message.seq) return false;
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
    attachments: Array.isArray(event.attachments) ? event.attachments : [],
    ts: typeof event.ts === "number" ? event.ts : Date.now(),
    state: MessageState.SENT,
    error: null,
    ...eventFields(event),
  };
}

/** What edits, deletes, reactions and replies add to a message (docs/protocol.md, "Changes"). */
function eventFields(event) {
  const snippet = event.reply_snippet;
  // `reactions` lists the first 100 nicks per emoji; `reaction_counts` counts them all.
  const reactions = new Map();
  const reactionCounts = new Map();
  const counts = event.reaction_counts && typeof event.reaction_counts === "object" ? event.reaction_counts : {};
  if (event.reactions && typeof event.reactions === "object") {
    for (const [emoji, nicks] of Object.entries(event.reactions)) {
      if (!Array.isArray(nicks) || !nicks.length) continue;
      reactions.set(emoji, nicks.map(String));
      reactionCounts.set(emoji, typeof counts[emoji] === "number" ? counts[emoji] : nicks.length);
    }
  }
  return {
    replyTo: typeof event.reply_to === "number" ? event.reply_to : null,
    replySnippet: snippet && typeof snippet === "object" ? { nick: String(snippet.nick ?? ""), body: String(snippet.body ?? "") } : null,
    edited: event.edited === true,
    deleted: event.deleted === true,
    reactions,
    reactionCounts,
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

  /**
   * Make `name` the room on screen; its unread and mention counts are cleared, and
   * the "New messages" divider marks where the unread ones began (a room opened
   * with nothing unread has none).
   */
  activate(name) {
    const previous = this.active;
    this.active = name;
    const room = this.room(name);
    if (room) {
      if (room.unread > 0) room.dividerSeq = room.firstUnreadSeq;
      else if (previous !== name) room.dividerSeq = null;
      room.unread = 0;
      room.mentions = 0;
      room.firstUnreadSeq = null;
    }
  }

  /**
   * The user read `roomName` up to `seq`, here or on another device: what is
   * unread is counted again from the messages held. True if anything changed.
   */
  applySeen(roomName, seq) {
    const room = this.room(roomName);
    if (!room || !(seq > (room.readUpTo ?? 0))) return false;
    room.readUpTo = seq;
    let unread = 0;
    let mentions = 0;
    for (const message of room.messages) {
      if (message.seq > seq && !sameNick(message.nick, this.me)) {
        unread += 1;
        if (this.mentionsMe(message)) mentions += 1;
      }
    }
    const changed = unread !== room.unread || mentions !== room.mentions;
    room.unread = Math.min(room.unread, unread);
    room.mentions = Math.min(room.mentions, mentions);
    return changed;
  }

  totalMentions() {
    let total = 0;
    for (const room of this.rooms.values()) if (!room.muted) total += room.mentions;
    return total;
  }

  mentionsMe(message) {
    return message.mentions.some((nick) => sameNick(nick, this.me));
  }

  /**
   * A message written here, shown as pending until its ack: with `attachments`
   * (upload answers), and `replyTo` the message it answers.
   */
  addOwn(roomName, body, id, { attachments = [], replyTo = null } = {}) {
    const room = this.room(roomName);
    const message = {
      room: roomName, seq: null, id, nick: this.me, body, html: null, mentions: [], links: [],
      previews: [], attachments, ts: Date.now(), state: MessageState.PENDING, error: null,
      ...eventFields({}),
      replyTo: replyTo ? replyTo.seq : null,
      replySnippet: replyTo ? { nick: replyTo.nick, body: replyTo.body.slice(0, 100) } : null,
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
      Object.assign(known, {
        html: message.html, mentions: message.mentions, links: message.links, replySnippet: message.replySnippet,
      });
      return { message: known, replaced: pending, isNew: false, counted: false };
    }
    room.insert(message);
    let counted = false;
    // Past the user's read position (known from any device), history counts as unread too.
    const unreadHistory = !live && room.readUpTo !== null && message.seq > room.readUpTo;
    if ((live || unreadHistory) && !sameNick(message.nick, this.me)) {
      if (live) room.typing.delete(message.nick);
      if (!seen) {
        room.unread += 1;
        if (room.unread === 1) room.firstUnreadSeq = message.seq;
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

  /**
   * An `error` for one of our sends: the message is marked failed, and keeps its
   * place in time (`after`: the newest seq the room had then) instead of staying
   * below every newer message. `retryAt` (ms) when a retry can succeed, else null.
   */
  fail(event, { now = Date.now() } = {}) {
    for (const room of this.rooms.values()) {
      const pending = room.pending.get(event.id);
      if (pending) {
        pending.state = MessageState.FAILED;
        pending.error = { code: event.code, reason: event.reason };
        pending.after = room.messages.length ? room.messages[room.messages.length - 1].seq : 0;
        pending.retryAt = retryAt(event, now);
        return pending;
      }
    }
    return null;
  }

  retry(roomName, id) {
    const pending = this.room(roomName)?.pending.get(id);
    if (!pending || pending.state !== MessageState.FAILED || pending.retryAt === null) return null;
    pending.state = MessageState.PENDING;
    pending.error = null;
    pending.after = null;
    return pending;
  }

  /** Forget a failed message (discarded, or taken back into the composer to edit). */
  discard(roomName, id) {
    const room = this.room(roomName);
    const pending = room?.pending.get(id);
    if (!pending || pending.state !== MessageState.FAILED) return null;
    room.pending.delete(id);
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

  /**
   * A `change` (edit, delete, reaction): the message it targets takes the state it
   * carries, if we hold that message. Returns the messages to draw again: the
   * target, and for a delete the replies that quoted it.
   */
  applyChange(event) {
    const room = this.room(event.room);
    const target = room?.bySeq(event.target);
    if (!target || !event.message || typeof event.message !== "object") return [];
    const state = fromWire({ ...event.message, room: room.name });
    Object.assign(target, {
      body: state.body, html: state.html, mentions: state.mentions, links: state.links, previews: state.previews,
      replySnippet: state.replySnippet, edited: state.edited, deleted: state.deleted, reactions: state.reactions,
      reactionCounts: state.reactionCounts,
    });
    // Our own reactions, remembered from our changes: past the first 100 reactors
    // the state does not list us.
    if (sameNick(event.nick, this.me) && (event.kind === "react" || event.kind === "unreact")) {
      target.myReactions ??= new Set();
      if (event.kind === "react") target.myReactions.add(event.emoji);
      else target.myReactions.delete(event.emoji);
    }
    for (const emoji of target.myReactions ?? []) if (!target.reactions.has(emoji)) target.myReactions.delete(emoji);
    const touched = [target];
    if (target.deleted) {
      for (const message of room.messages) {
        if (message.replyTo === target.seq && message.replySnippet) {
          message.replySnippet = null;
          touched.push(message);
        }
      }
    }
    return touched;
  }

  /** Our newest confirmed message in `roomName` that is not deleted (Up-arrow edits it), or null. */
  lastOwn(roomName) {
    const messages = this.room(roomName)?.messages ?? [];
    for (let i = messages.length - 1; i >= 0; i -= 1) {
      if (sameNick(messages[i].nick, this.me) && !messages[i].deleted) return messages[i];
    }
    return null;
  }

  /** Whether we reacted to `message` with `emoji`. */
  reacted(message, emoji) {
    return reactedBy(message, emoji, this.me);
  }

  /** An `update` with link previews; returns the message it belongs to (an edit's: `target`). */
  update(event) {
    const message = this.room(event.room)?.bySeq(event.target ?? event.seq);
    if (!message) return null;
    if (Array.isArray(event.links)) message.previews = event.links;
    return message;
  }

  /**
   * A first page of members (`joined`, or a `members` poll): `{count, members, next}`.
   * It replaces what the room knew.
   */
  setMembers(roomName, page) {
    const room = this.room(roomName);
    if (!room) return null;
    const members = Array.isArray(page.members) ? page.members.map(String) : [];
    room.members = new Set(members);
    room.memberCount = typeof page.count === "number" ? page.count : members.length;
    room.membersNext = typeof page.next === "string" ? page.next : null;
    room.membersExpanded = false;
    return room;
  }

  /**
   * The first page again, from the members poll of long-polling (it has no presence
   * events): it replaces the list, unless the person paged further; then the count only.
   */
  refreshMembers(roomName, page) {
    const room = this.room(roomName);
    if (!room) return null;
    if (!room.membersExpanded) return this.setMembers(roomName, page);
    if (typeof page.count === "number") room.memberCount = page.count;
    return room;
  }

  /** A further page from /members (the "Show more" button): added to what is known. */
  addMembers(roomName, page) {
    const room = this.room(roomName);
    if (!room) return null;
    for (const nick of Array.isArray(page.members) ? page.members : []) room.members.add(String(nick));
    if (typeof page.count === "number") room.memberCount = page.count;
    room.membersNext = typeof page.next === "string" ? page.next : null;
    room.membersExpanded = true;
    return room;
  }

  /**
   * A batched `presence` event: `count`, and `changes` (each nick's last state) unless
   * the room is big. Returns `{room, drifted}`: `drifted` when the page holds every
   * member and the count says otherwise (an event was missed): fetch the list again.
   */
  presence(event) {
    const room = this.room(event.room);
    if (!room) return { room: null, drifted: false };
    for (const change of Array.isArray(event.changes) ? event.changes : []) {
      const nick = String(change.nick);
      if (change.state === "online") room.members.add(nick);
      else if (change.state === "offline") {
        room.members.delete(nick);
        room.typing.delete(nick);
      }
    }
    if (typeof event.count === "number") room.memberCount = event.count;
    const drifted = room.membersNext === null && room.members.size !== room.memberCount;
    return { room, drifted };
  }

  /** A `typing` event: each nick in it is shown typing for a few seconds. */
  typingEvent(event, now) {
    const room = this.room(event.room);
    if (!room) return null;
    for (const value of Array.isArray(event.nicks) ? event.nicks : []) {
      const nick = String(value);
      if (!sameNick(nick, this.me)) room.typing.set(nick, now + TYPING_SHOWN_MS);
    }
    return room;
  }
}

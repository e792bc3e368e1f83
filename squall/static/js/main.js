// The page: wires the session, the Connection, the store and the view together.

import {
  ApiError, createAccount, createSession, fetchMe, fetchMembers, fetchMessages, fetchSeen, logout, postSeen,
} from "./api.js";
import { loadTranslator, negotiateLanguage, saveLanguage, savedLanguage, LANGUAGES } from "./i18n.js";
import { SettingsPanel } from "./settings.js";
import { RoomsPanel } from "./rooms.js";
import { ChatStore, normaliseRoom, sameNick } from "./store.js";
import { Connection, Kind } from "./transport.js";
import { ChatView } from "./ui.js";

const SESSION_KEY = "squall.session";
const ROOMS_KEY = "squall.rooms";
// A read position is reported at most this often per room (the newest wins).
const SEEN_EVERY_MS = 1000;
const HISTORY_PAGE = 50;
const TYPING_EVERY_MS = 3000; // matches what the server relays at most
const LOAD_OLDER_AT_PX = 60;
// A member list that no longer adds up to the room's count is fetched again after
// a random delay up to this: every page in the room noticed at once.
const MEMBERS_REFETCH_SPREAD_MS = 1000;

function readJson(key) {
  try {
    return JSON.parse(localStorage.getItem(key) ?? "null");
  } catch {
    return null;
  }
}

function writeJson(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage off: the session lasts until the page is closed.
  }
}

/** The room named by the location's fragment (`#room` or `#room/seq`), if valid. */
function roomFromHash() {
  let name = "";
  try {
    name = decodeURIComponent(window.location.hash.slice(1).split("/")[0] || "");
  } catch {
    return null; // a malformed %-escape
  }
  return name && normaliseRoom(name) === name ? name : null;
}

function trimStop(text) {
  return String(text ?? "").trim().replace(/[.。]$/, "");
}

function forcedTransport() {
  const wanted = new URLSearchParams(location.search).get("transport");
  return Object.values(Kind).includes(wanted) ? wanted : null;
}

class App {
  constructor(view, translator) {
    this.view = view;
    this.translator = translator;
    this.session = null;
    this.store = null;
    this.connection = null;
    this.lastTypingSent = 0;
    this.composing = false;
    this.typingTimer = null;
    this.signingIn = false;
    this.seenTimers = new Map(); // room → pending report of the read position
    this.settings = new SettingsPanel(translator, {
      session: () => this.session,
      update: (changes) => this.updateSession(changes),
      signOut: () => this.signOut(),
      sessionEnded: () => this.sessionEnded(),
    });
    this.rooms = new RoomsPanel(translator, {
      token: () => this.token,
      open: (room) => this.openRoom(room),
      labelsChanged: () => {
        this.view.roomLabels = this.rooms.labels;
        if (!this.store) return;
        this.view.renderRoomList(this.store);
        this.view.roomTitle.textContent = this.store.active ? this.view.roomLabel(this.store.active) : "";
      },
    });
  }

  /** Join `room` (if need be) and show it: from the room browser and the DM list. */
  openRoom(room) {
    if (!this.store) return;
    this.joinRoom(room);
    this.switchRoom(room);
    if (this.view.sidebarOpen) this.view.setSidebarOpen(false);
    this.view.composer.focus();
  }

  /** The user's read positions, shared by every device: unread counts start from them. */
  async loadReadPositions() {
    const token = this.token;
    let answer;
    try {
      answer = await fetchSeen(token);
    } catch {
      return;
    }
    if (this.token !== token || !this.store) return;
    for (const [room, seq] of Object.entries(answer.rooms ?? {})) this.onSeen(room, seq);
  }

  onSeen(roomName, seq) {
    if (!this.store?.applySeen(roomName, seq)) return;
    this.view.renderRoomList(this.store);
    this.updateTitle();
  }

  /** The active room is on screen: report what is read, so the user's other devices clear it. */
  reportRead(roomName) {
    const room = this.store?.room(roomName);
    const newest = room?.messages.length ? room.messages[room.messages.length - 1].seq : null;
    if (!newest || newest <= (room.readUpTo ?? 0) || this.seenTimers.has(roomName)) return;
    this.seenTimers.set(roomName, setTimeout(async () => {
      this.seenTimers.delete(roomName);
      const current = this.store?.room(roomName);
      if (!current || !this.isSeen(roomName)) return;
      const seq = current.messages.length ? current.messages[current.messages.length - 1].seq : null;
      if (!seq || seq <= (current.readUpTo ?? 0)) return;
      current.readUpTo = seq;
      try {
        await postSeen(this.token, roomName, seq);
      } catch {
        current.readUpTo = null; // the next message or switch tries again
      }
    }, SEEN_EVERY_MS));
  }

  /** A first sign-in lands in the server's default room rather than an empty pane. */
  async joinDefaultRoom() {
    const token = this.token;
    let me;
    try {
      me = await fetchMe(token);
    } catch {
      return; // offline: the empty state says to join a room
    }
    if (this.token !== token || !this.store || this.store.rooms.size) return;
    const room = normaliseRoom(me.default_room ?? "");
    // No focus move: this answer may come while the person is typing elsewhere.
    if (room) {
      this.joinRoom(room);
      this.switchRoom(room);
    }
  }

  t(key, params) {
    return this.translator.t(key, params);
  }

  bind() {
    const v = this.view;
    v.loginForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.signIn(v.loginMode, v.nickInput.value.trim(), v.passwordInput.value);
    });
    v.loginModeField.addEventListener("change", () => {
      v.renderLoginMode();
      v.showLoginErrors();
    });
    v.joinForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const room = normaliseRoom(v.joinInput.value);
      if (!room) {
        v.showJoinError(this.t("rooms.join.invalid"));
        return;
      }
      v.showJoinError("");
      v.joinInput.value = "";
      this.joinRoom(room);
      this.switchRoom(room);
    });
    v.roomList.addEventListener("click", (event) => {
      const leave = event.target.closest(".leave-button");
      if (leave) {
        this.leaveRoom(leave.dataset.room);
        return;
      }
      const button = event.target.closest(".room-button");
      if (button) {
        this.switchRoom(button.dataset.room);
        if (v.sidebarOpen) {
          v.setSidebarOpen(false);
          v.composer.focus();
        }
      }
    });
    v.messages.addEventListener("click", (event) => {
      const retry = event.target.closest("button.retry");
      if (retry) this.retry(retry.dataset.room, retry.dataset.id);
    });
    v.composerForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendComposer();
    });
    v.composer.addEventListener("compositionstart", () => {
      this.composing = true;
    });
    v.composer.addEventListener("compositionend", () => {
      this.composing = false;
    });
    v.composer.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.shiftKey) return;
      // An IME uses Enter to commit its candidate; that Enter is not "send".
      // Safari reports it after compositionend, so keyCode 229 is checked too.
      if (event.isComposing || this.composing || event.keyCode === 229) return;
      event.preventDefault();
      this.sendComposer();
    });
    v.composer.addEventListener("input", () => {
      v.composer.classList.toggle("multiline", v.composer.value.includes("\n"));
      this.sendTyping();
    });
    v.scroller.addEventListener("scroll", () => {
      // Only a move up is the reader asking for more: the page's own moves
      // (sticking to the bottom as messages arrive, keeping the view in place
      // after a prepend) end near the top too while the list barely overflows.
      if (v.takeScrollUp() && v.scroller.scrollTop < LOAD_OLDER_AT_PX) this.loadOlder();
    }, { passive: true });
    v.loadOlder.addEventListener("click", () => this.loadOlder());
    v.membersMore.addEventListener("click", () => this.loadMoreMembers());
    v.roomsToggle.addEventListener("click", () => v.setSidebarOpen(!v.sidebarOpen));
    this.settings.bind();
    this.rooms.bind();
    v.langSelect.addEventListener("change", () => this.setLanguage(v.langSelect.value));
    document.addEventListener("keydown", (event) => this.onShortcut(event));
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && this.store?.active) this.markSeen();
    });
    setInterval(() => this.refreshTyping(), 1000);
  }

  onShortcut(event) {
    if (this.settings.isOpen || this.rooms.isOpen) return; // a modal dialog: its Escape closes it, and nothing else
    if (event.key === "Escape" && this.view.sidebarOpen) {
      this.view.setSidebarOpen(false);
      this.view.roomsToggle.focus();
      return;
    }
    // Alt+↑ / Alt+↓ move between joined rooms from anywhere, composer included.
    if (!this.store || !event.altKey || (event.key !== "ArrowUp" && event.key !== "ArrowDown")) return;
    const names = [...this.store.rooms.keys()];
    if (names.length < 2) return;
    event.preventDefault();
    const index = names.indexOf(this.store.active);
    const step = event.key === "ArrowUp" ? -1 : 1;
    this.switchRoom(names[(index + step + names.length) % names.length]);
  }

  start() {
    this.view.langSelect.value = this.translator.lang;
    const session = readJson(SESSION_KEY);
    if (session?.token && session?.nick) this.startChat(session);
    else this.view.showLogin();
  }

  /** The sign-in screen's submit: `mode` is `guest`, `signin` or `create`. */
  async signIn(mode, nick, password) {
    const v = this.view;
    v.showLoginErrors();
    if (mode !== "guest" && !password) {
      v.showLoginErrors({ password: this.t("login.error.password_required") });
      v.passwordInput.focus();
      return;
    }
    if (this.signingIn) return;
    this.signingIn = true;
    v.setLoginBusy(true);
    try {
      const session = mode === "create"
        ? await createAccount(nick, password)
        : await createSession(nick, mode === "signin" ? password : undefined);
      v.passwordInput.value = "";
      this.startChat(session);
    } catch (error) {
      const errors = this.loginErrors(error, mode);
      v.showLoginErrors(errors);
      if (errors.nick) v.nickInput.focus();
      else if (errors.password) v.passwordInput.focus();
    } finally {
      this.signingIn = false;
      v.setLoginBusy(false);
    }
  }

  /** What went wrong, in words, keyed by the field it belongs beside. */
  loginErrors(error, mode) {
    if (!(error instanceof ApiError)) return { form: this.t("login.error.network") };
    // The server's reason says which rule applies (registered, online, a look-alike;
    // the password's length); the words around it are the reader's language.
    const reason = trimStop(error.reason) || error.code;
    switch (error.code) {
      case "bad_nick":
        return { nick: this.t("login.error.bad_nick") };
      case "nick_taken":
        return { nick: this.t(`login.error.nick_taken.${mode === "create" ? "create" : "guest"}`, { reason }) };
      case "weak_password":
        return { password: this.t("login.error.weak_password", { reason }) };
      case "bad_credentials":
        return { password: this.t("login.error.bad_credentials") };
      case "guests_disabled":
        return { form: this.t("login.error.guests_disabled") };
      case "rate_limited":
        return { form: this.t("login.error.rate_limited", { seconds: Math.ceil(error.retryAfter ?? 1) }) };
      default:
        return { form: this.t("login.error.unknown", { reason: error.reason || error.code }) };
    }
  }

  /**
   * "Sign out": the live connection closes first (so that nothing renews the
   * token behind our back), then the server forgets the token, then the page.
   */
  async signOut() {
    const session = this.session;
    this.stopChat();
    if (session) {
      try {
        await logout(session.token);
      } catch {
        // Offline, or the token had already ended: either way it is gone from here.
      }
    }
    this.view.showLogin(session?.registered ? { nick: session.nick, mode: "signin" } : {});
  }

  /** The server no longer knows our token (revoked, expired, password changed elsewhere). */
  sessionEnded() {
    const session = this.session;
    this.stopChat();
    this.view.showLogin({ nick: session?.nick ?? "", mode: "signin", error: this.t("login.error.session_ended") });
  }

  stopChat() {
    this.settings.close();
    this.rooms.close();
    this.connection?.stop();
    this.connection = null;
    this.store = null;
    this.session = null;
    writeJson(SESSION_KEY, null);
    writeJson(ROOMS_KEY, null);
    this.view.setTitle(0);
  }

  updateSession(changes) {
    if (!this.session) return;
    this.session = { ...this.session, ...changes };
    writeJson(SESSION_KEY, this.session);
  }

  async renewToken() {
    // A password change ends every session of the account, this one's too: its 4001
    // can arrive before the answer that carries the new token. Wait for that answer.
    await this.settings.passwordChange;
    if (!this.session) throw new Error("signed out");
    // A password change here gave us a new token; the connection still had the old one.
    if (this.connection && this.session.token !== this.connection.token) return this.session.token;
    if (this.session.registered) {
      // An account's token is not renewed without its password.
      this.sessionEnded();
      throw new Error("session ended");
    }
    // The guest session expired or the secret changed: the same nick again.
    try {
      const session = await createSession(this.session.nick);
      this.updateSession({ token: session.token });
      return session.token;
    } catch (error) {
      if (error instanceof ApiError && error.status < 500 && this.session) {
        const nick = this.session.nick;
        this.stopChat();
        this.view.showLogin({ nick });
        this.view.showLoginErrors(this.loginErrors(error, "guest"));
      }
      throw error;
    }
  }

  startChat(session) {
    this.session = { nick: session.nick, token: session.token, registered: session.registered === true };
    writeJson(SESSION_KEY, this.session);
    this.store = new ChatStore(session.nick);
    this.view.showApp();
    this.view.renderMe(session.nick);
    this.connection = new Connection({
      token: session.token,
      forced: forcedTransport(),
      onEvent: (event) => this.onEvent(event),
      onStatus: (status) => this.onStatus(status),
      renewToken: () => this.renewToken(),
    });
    const saved = readJson(ROOMS_KEY);
    for (const room of saved?.rooms ?? []) {
      if (normaliseRoom(room) === room) this.joinRoom(room);
    }
    // A link such as the one in a mention e-mail (/#room/seq) opens that room.
    const linked = roomFromHash();
    if (linked) this.joinRoom(linked);
    const active = linked ?? (saved?.active && this.store.room(saved.active) ? saved.active : this.store.active);
    if (active) this.switchRoom(active);
    else this.view.renderRoom(this.store);
    this.connection.start();
    if (!this.store.rooms.size) this.joinDefaultRoom();
    this.rooms.refreshDms();
    this.loadReadPositions();
  }

  openLinkedRoom() {
    const linked = roomFromHash();
    if (!linked || !this.store) return;
    this.joinRoom(linked);
    this.switchRoom(linked);
  }

  get token() {
    return this.session?.token;
  }

  saveRooms() {
    writeJson(ROOMS_KEY, { rooms: [...this.store.rooms.keys()], active: this.store.active });
  }

  joinRoom(name) {
    if (this.store.room(name)) return;
    this.store.addRoom(name);
    this.connection.join(name);
    this.saveRooms();
    this.view.renderRoomList(this.store);
  }

  leaveRoom(name) {
    this.connection.leave(name);
    this.dropRoom(name);
  }

  dropRoom(name) {
    const wasActive = this.store.active === name;
    this.store.removeRoom(name);
    if (wasActive && this.store.active) this.store.activate(this.store.active);
    this.saveRooms();
    this.view.renderRoomList(this.store);
    this.view.renderRoom(this.store);
    this.updateTitle();
  }

  switchRoom(name) {
    if (!this.store.room(name)) return;
    this.store.activate(name);
    this.reportRead(name);
    this.saveRooms();
    this.view.renderRoomList(this.store);
    this.view.renderRoom(this.store);
    this.updateTitle();
  }

  markSeen() {
    const room = this.store.room(this.store.active);
    if (room) this.reportRead(room.name);
    if (room && (room.unread || room.mentions)) {
      this.store.activate(room.name);
      this.view.renderRoomList(this.store);
      this.updateTitle();
    }
  }

  updateTitle() {
    this.view.setTitle(this.store ? this.store.totalMentions() : 0);
  }

  isSeen(roomName) {
    return roomName === this.store.active && !document.hidden;
  }

  sendComposer() {
    const room = this.store?.active;
    const body = this.view.composer.value;
    if (!room || !body.trim()) return;
    const id = crypto.randomUUID();
    const message = this.store.addOwn(room, body, id);
    this.view.placeMessage(message, { me: this.store.me, ownAction: true });
    this.view.composer.value = "";
    this.view.composer.classList.remove("multiline");
    this.lastTypingSent = 0; // the next keystroke starts a new "is typing"
    this.connection.send(room, body, id);
  }

  retry(room, id) {
    const message = this.store.retry(room, id);
    if (!message) return;
    this.view.refreshMessage(message, this.store.me);
    this.connection.send(room, message.body, id);
  }

  sendTyping() {
    const room = this.store?.active;
    const now = Date.now();
    if (!room || !this.view.composer.value || now - this.lastTypingSent < TYPING_EVERY_MS) return;
    this.lastTypingSent = now;
    this.connection.typing(room);
  }

  refreshTyping() {
    const room = this.store?.room(this.store.active);
    if (room && room.typing.size) this.view.renderTyping(room, Date.now());
  }

  async loadOlder() {
    const room = this.store?.room(this.store.active);
    if (!room || room.loadingHistory || room.historyDone || room.oldestSeq === null) return;
    room.loadingHistory = true;
    this.view.renderHistoryState(room);
    try {
      const page = await fetchMessages(this.token, room.name, { before: room.oldestSeq, limit: HISTORY_PAGE });
      const added = this.store.prependHistory(room.name, page.messages, { limit: HISTORY_PAGE });
      if (this.store.active === room.name) this.view.prependMessages(added, this.store.me);
    } catch {
      // Offline: the button stays, and the next scroll tries again.
    } finally {
      room.loadingHistory = false;
      if (this.store?.active === room.name) this.view.renderHistoryState(room);
    }
  }

  /** "Show more": the next page of the active room's members. */
  async loadMoreMembers() {
    const room = this.store?.room(this.store.active);
    if (!room || room.loadingMembers || room.membersNext === null) return;
    room.loadingMembers = true;
    this.view.renderMembers(room, this.store.me);
    try {
      const page = await fetchMembers(this.token, room.name, { cursor: room.membersNext });
      this.store?.addMembers(room.name, page);
    } catch {
      // Offline: the button stays, and the next click tries again.
    } finally {
      room.loadingMembers = false;
      if (this.store?.active === room.name) this.view.renderMembers(room, this.store.me);
    }
  }

  /** The list no longer adds up to the room's count (an event was lost): read it again. */
  refetchMembers(room) {
    if (room.refetchingMembers) return;
    room.refetchingMembers = true;
    setTimeout(async () => {
      try {
        const page = await fetchMembers(this.token, room.name);
        if (this.store?.room(room.name) === room) this.store.setMembers(room.name, page);
      } catch {
        // The next event that does not add up tries again.
      } finally {
        room.refetchingMembers = false;
        if (this.store?.active === room.name) this.view.renderMembers(room, this.store.me);
      }
    }, Math.random() * MEMBERS_REFETCH_SPREAD_MS);
  }

  onStatus(status) {
    this.view.renderTransport(status);
    if (status.fellBack) {
      this.view.announce(this.t("transport.fellBack", { transport: this.t(`transport.${status.kind}`) }));
    }
    if (status.upgraded) this.view.announce(this.t("transport.upgraded"));
  }

  onEvent(event) {
    const store = this.store;
    if (!store) return;
    const active = event.room !== undefined && event.room === store.active;
    switch (event.type) {
      case "joined": {
        const room = store.room(event.room);
        if (!room) return;
        if (!room.joined) {
          room.joined = true;
          room.historyUpTo = event.seq ?? 0;
        }
        store.setMembers(event.room, event);
        if (active) this.view.renderMembers(room, store.me);
        return;
      }
      case "message":
        this.onMessage(event, active);
        return;
      case "ack": {
        const result = store.acknowledge(event);
        if (result && active) this.view.placeMessage(result.message, { replaced: result.replaced, me: store.me });
        return;
      }
      case "error": {
        if (event.id) {
          const message = store.fail(event);
          if (message && message.room === store.active) this.view.refreshMessage(message, store.me);
          if (message) this.view.announce(this.t("messages.failed", { reason: this.view.errorText(event) }));
        } else if (event.room && ["not_member", "banned"].includes(event.code) && store.room(event.room)) {
          // Refused, or put out (kick, ban, removal): the room goes from the list, and we say why.
          const label = this.view.roomLabel(event.room);
          this.dropRoom(event.room);
          this.view.announce(this.t("rooms.evicted", { room: label, reason: this.view.errorText(event) }));
        } else {
          this.view.announce(this.view.errorText(event));
        }
        return;
      }
      case "presence": {
        const { room, drifted } = store.presence(event);
        if (drifted) this.refetchMembers(room);
        if (room && active) {
          this.view.renderMembers(room, store.me);
          this.view.renderTyping(room, Date.now());
        }
        return;
      }
      case "typing": {
        const room = store.typingEvent(event, Date.now());
        if (room && active) this.view.renderTyping(room, Date.now());
        return;
      }
      case "members": {
        const room = store.refreshMembers(event.room, event);
        if (room && active) this.view.renderMembers(room, store.me);
        return;
      }
      case "seen":
        this.onSeen(event.room, event.seq);
        return;
      case "update": {
        const message = store.update(event);
        if (message && active) this.view.refreshMessage(message, store.me);
        return;
      }
      default:
        return;
    }
  }

  onMessage(event, active) {
    const store = this.store;
    const room = store.room(event.room);
    if (!room) return;
    const live = room.historyUpTo !== undefined && event.seq > room.historyUpTo;
    const result = store.receive(event, { live, seen: this.isSeen(event.room) });
    if (!result) return;
    if (this.isSeen(event.room)) this.reportRead(event.room);
    const { message } = result;
    if (active) {
      this.view.placeMessage(message, { replaced: result.replaced, me: store.me });
      if (room.historyDone === false && room.oldestSeq === 1) {
        room.historyDone = true;
        this.view.renderHistoryState(room);
      } else if (room.messages.length === 1) {
        this.view.renderHistoryState(room);
      }
      this.view.renderTyping(room, Date.now());
    } else if (room.oldestSeq === 1) {
      room.historyDone = true;
    }
    if (!result.isNew || !live || sameNick(message.nick, store.me)) return;
    if (active) {
      this.view.announce(this.t("messages.new", { nick: message.nick, room: room.name, body: message.body }));
    }
    if (result.counted) {
      this.view.renderRoomList(store);
      this.updateTitle();
    }
    if (store.mentionsMe(message) && !this.isSeen(room.name)) this.notify(message);
  }

  notify(message) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    try {
      const note = new Notification(this.t("notify.mention", { nick: message.nick, room: message.room }), {
        body: message.body,
        tag: `squall-${message.room}`,
        lang: this.translator.lang,
      });
      note.onclick = () => {
        window.focus();
        this.switchRoom(message.room);
        note.close();
      };
    } catch {
      // Some mobile browsers only allow notifications from a service worker.
    }
  }

  async setLanguage(lang) {
    if (!LANGUAGES.includes(lang)) return;
    saveLanguage(lang);
    this.translator = await loadTranslator(lang);
    this.view.setTranslator(this.translator);
    this.settings.setTranslator(this.translator);
    this.view.langSelect.value = lang;
    this.rooms.setTranslator(this.translator);
    if (this.session) this.view.renderMe(this.session.nick);
    this.view.renderTransport();
    if (this.store) {
      this.view.renderRoomList(this.store);
      this.view.renderRoom(this.store);
    }
    this.updateTitle();
  }
}

async function main() {
  const lang = savedLanguage() ?? negotiateLanguage(navigator.languages?.length ? navigator.languages : [navigator.language]);
  const translator = await loadTranslator(lang);
  translator.apply();
  const view = new ChatView(translator);
  view.setTitle(0);
  const app = new App(view, translator);
  app.bind();
  window.addEventListener("hashchange", () => app.openLinkedRoom());
  app.start();
  document.documentElement.dataset.ready = "true";
}

main();

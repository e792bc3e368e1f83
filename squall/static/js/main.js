// The page: wires the session, the Connection, the store and the view together.

import { Completer } from "./autocomplete.js";
import {
  ApiError, createAccount, createSession, fetchMe, fetchMembers, fetchMessages, fetchSeen, logout, postSeen,
} from "./api.js";
import { loadTranslator, negotiateLanguage, saveLanguage, savedLanguage, LANGUAGES } from "./i18n.js";
import { SearchPanel } from "./search.js";
import { Uploads, Viewer } from "./files.js";
import { SettingsPanel } from "./settings.js";
import { RoomsPanel } from "./rooms.js";
import { ChatStore, normaliseRoom, sameNick } from "./store.js";
import { Connection, Kind } from "./transport.js";
import { ChatView } from "./ui.js";

const SESSION_KEY = "squall.session";
const MUTED_KEY = "squall.muted";
const THEME_KEY = "squall.theme";
const THEMES = ["system", "light", "dark"];

/**
 * Pin the page to light or dark, or follow the system (`color-scheme` in the CSS
 * does the rest). js/theme.js applies the saved choice before the first paint.
 */
function applyTheme(theme) {
  const root = document.documentElement;
  if (theme === "light" || theme === "dark") root.dataset.theme = theme;
  else delete root.dataset.theme;
}
const ROOMS_KEY = "squall.rooms";
// A read position is reported at most this often per room (the newest wins).
const SEEN_EVERY_MS = 1000;
const HISTORY_PAGE = 50;
const TYPING_EVERY_MS = 3000; // matches what the server relays at most
const LOAD_OLDER_AT_PX = 60;
// A member list that no longer adds up to the room's count is fetched again after
// a random delay up to this: every page in the room noticed at once.
const MEMBERS_REFETCH_SPREAD_MS = 1000;
// A quote jumps to its message, loading older history at most this many pages for it.
const MAX_JUMP_PAGES = 20;

/** What a send carries besides its text: its files' ids, the seq it answers. */
function sendExtra(message) {
  const extra = {};
  if (message.attachments?.length) extra.attachments = message.attachments.map((file) => file.id);
  if (message.replyTo !== null && message.replyTo !== undefined) extra.reply_to = message.replyTo;
  return Object.keys(extra).length ? extra : null;
}

/** Characters as the server counts them (code points, not UTF-16 units). */
function characters(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

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

// "Open in room" from a search: how long to wait for the message to be on
// the page, and how many older pages it may load to reach it.
const OPEN_FOUND_MS = 10_000;
const OPEN_FOUND_PAGES = 10;

class App {
  constructor(view, translator) {
    this.view = view;
    this.translator = translator;
    this.session = null;
    this.store = null;
    this.connection = null;
    this.lastTypingSent = 0;
    this.composing = false;
    this.composerContext = null; // editing or replying: {kind, room, message}
    this.changeIds = new Set(); // ids of our edits, deletes and reactions not yet answered
    this.typingTimer = null;
    this.signingIn = false;
    // A phone or tablet: Enter makes a new line there, and the send button sends.
    this.touch = globalThis.matchMedia?.("(pointer: coarse)").matches ?? false;
    this.view.touch = this.touch;
    this.maxBodyChars = Number(document.querySelector('meta[name="squall-max-body-chars"]')?.content) || 4000;
    this.seenTimers = new Map(); // room → pending report of the read position
    this.settings = new SettingsPanel(translator, {
      session: () => this.session,
      update: (changes) => this.updateSession(changes),
      signOut: () => this.signOut(),
      sessionEnded: () => this.sessionEnded(),
    });
    this.search = new SearchPanel(translator, {
      token: () => this.session?.token ?? null,
      openRoom: (room, seq) => this.openFoundMessage(room, seq),
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

  /**
   * A search result's "Open in room": switch to the room and, once the message
   * is on the page (the room's history arrives after the join; an older one is
   * reached by loading older pages, at most OPEN_FOUND_PAGES of them), scroll
   * to it and focus it. Gives up quietly (focus in the composer) otherwise.
   */
  async openFoundMessage(room, seq) {
    this.joinRoom(room);
    this.switchRoom(room);
    const item = await this.waitForMessage(room, seq);
    if (!item) {
      this.view.composer.focus();
      return;
    }
    this.view.showItem(item);
    item.classList.add("found");
    item.tabIndex = -1;
    item.focus();
  }

  /** The element of message `seq` once the open room `room` shows it; null if it cannot. */
  waitForMessage(room, seq) {
    const selector = `li[data-seq="${Number(seq)}"]`;
    return new Promise((resolve) => {
      let pages = 0;
      let observer = null;
      let timer = null;
      const finish = (item) => {
        observer?.disconnect();
        clearTimeout(timer);
        resolve(item);
      };
      const check = () => {
        if (this.store?.active !== room) return finish(null);
        const item = this.view.messages.querySelector(selector);
        if (item) return finish(item);
        const state = this.store.room(room);
        // Still to come: the join's backlog (in seq order), or older pages.
        if (!state || state.oldestSeq === null || state.oldestSeq <= seq) return undefined;
        if (state.historyDone || pages >= OPEN_FOUND_PAGES) return finish(null);
        if (!state.loadingHistory) {
          pages++;
          this.loadOlder();
        }
        return undefined;
      };
      observer = new MutationObserver(check);
      observer.observe(this.view.messages, { childList: true });
      timer = setTimeout(() => finish(null), OPEN_FOUND_MS);
      check();
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
      const mute = event.target.closest(".mute-button");
      if (mute) {
        this.toggleMute(mute.dataset.room);
        return;
      }
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
      const action = event.target.closest(".failure button");
      if (!action) {
        this.onMessageAction(event.target.closest("button"));
        return;
      }
      const { room, id } = action.dataset;
      if (action.classList.contains("retry")) this.retry(room, id);
      else if (action.classList.contains("edit")) this.editFailed(room, id);
      else if (action.classList.contains("discard")) this.discardFailed(room, id);
    });
    v.messages.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && event.target.closest(".picker")) {
        const seq = Number(event.target.dataset.seq);
        this.view.closePickers();
        this.view.messages.querySelector(`li[data-seq="${seq}"] .react-add`)?.focus();
      }
    });
    v.composerCancel.addEventListener("click", () => {
      this.setComposerContext(null);
      v.composer.focus();
    });
    v.composerForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendComposer();
    });
    this.completer = new Completer(v.composer, document.getElementById("suggestions"), {
      nicks: () => this.nicksToOffer(),
      me: () => this.store?.me ?? "",
    });
    this.completer.bind(); // before the composer's own keydown: Enter picks while the list is open
    v.composer.addEventListener("compositionstart", () => {
      this.composing = true;
    });
    v.composer.addEventListener("compositionend", () => {
      this.composing = false;
    });
    v.composer.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.composerContext) {
        event.preventDefault();
        event.stopPropagation();
        this.setComposerContext(null);
        return;
      }
      // Up in an empty composer edits your last message in the room, as in most chats.
      if (event.key === "ArrowUp" && !v.composer.value && !event.altKey && !this.composing) {
        const last = this.store?.lastOwn(this.store.active);
        if (last) {
          event.preventDefault();
          this.startEdit(last);
        }
        return;
      }
      if (event.key !== "Enter" || event.shiftKey) return;
      // On a touch screen Enter is a new line, as in the platform's own apps; the button sends.
      if (this.touch) return;
      // An IME uses Enter to commit its candidate; that Enter is not "send".
      // Safari reports it after compositionend, so keyCode 229 is checked too.
      if (event.isComposing || this.composing || event.keyCode === 229) return;
      event.preventDefault();
      this.sendComposer();
    });
    v.composer.addEventListener("input", () => {
      this.onComposerInput();
      this.sendTyping();
    });
    v.scroller.addEventListener("scroll", () => {
      // Only a move up is the reader asking for more: the page's own moves
      // (sticking to the bottom as messages arrive, keeping the view in place
      // after a prepend) end near the top too while the list barely overflows.
      if (v.takeScrollUp() && v.scroller.scrollTop < LOAD_OLDER_AT_PX) this.loadOlder();
      v.onScrolled();
    }, { passive: true });
    v.jumpNewest.addEventListener("click", () => {
      v.scrollToBottom();
      v.composer.focus();
    });
    v.loadOlder.addEventListener("click", () => this.loadOlder());
    v.membersMore.addEventListener("click", () => this.loadMoreMembers());
    v.roomsToggle.addEventListener("click", () => v.setSidebarOpen(!v.sidebarOpen));
    this.settings.bind();
    this.search.bind();
    this.bindFiles();
    this.rooms.bind();
    v.langSelect.addEventListener("change", () => this.setLanguage(v.langSelect.value));
    v.settingsLang.addEventListener("change", () => this.setLanguage(v.settingsLang.value));
    const theme = THEMES.includes(localStorage.getItem(THEME_KEY)) ? localStorage.getItem(THEME_KEY) : "system";
    document.getElementById(`theme-${theme}`).checked = true;
    v.themeChoice.addEventListener("change", (event) => {
      const chosen = event.target.value;
      if (!THEMES.includes(chosen)) return;
      localStorage.setItem(THEME_KEY, chosen);
      applyTheme(chosen);
    });
    document.addEventListener("keydown", (event) => this.onShortcut(event));
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && this.store?.active) this.markSeen();
    });
    setInterval(() => this.refreshTyping(), 1000);
  }

  onShortcut(event) {
    if (this.settings.isOpen || this.viewer?.isOpen || this.rooms.isOpen) return; // a modal dialog: its Escape closes it, and nothing else
    if (this.session && this.search.onShortcut(event)) return;
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
    this.watchNetwork();
    this.view.langSelect.value = this.translator.lang;
    this.view.settingsLang.value = this.translator.lang;
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
    this.search.reset();
    this.viewer?.close();
    this.uploads?.clear();
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

  /** The browser's word on the network, and a tab waking up, reach the connection at once. */
  watchNetwork() {
    window.addEventListener("offline", () => this.connection?.networkLost());
    window.addEventListener("online", () => this.connection?.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.connection?.check();
    });
    this.view.reconnectNow.addEventListener("click", () => this.connection?.reconnectNow());
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

  /** Mute a room, or unmute it: remembered on this device. */
  toggleMute(name) {
    const room = this.store?.room(name);
    if (!room) return;
    room.muted = !room.muted;
    const muted = new Set(readJson(MUTED_KEY) ?? []);
    if (room.muted) muted.add(name);
    else muted.delete(name);
    writeJson(MUTED_KEY, [...muted]);
    this.view.renderRoomList(this.store);
    this.updateTitle();
  }

  joinRoom(name) {
    if (this.store.room(name)) return;
    const added = this.store.addRoom(name);
    added.muted = (readJson(MUTED_KEY) ?? []).includes(name);
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
    if (this.composerContext && this.composerContext.room !== name) this.setComposerContext(null);
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
      this.view.renderDivider(room);
      this.updateTitle();
    }
  }

  updateTitle() {
    this.view.setTitle(this.store ? this.store.totalMentions() : 0);
  }

  isSeen(roomName) {
    return roomName === this.store.active && !document.hidden;
  }

  /** Nicks for @-completion: who is online in the room, then who wrote lately. */
  nicksToOffer() {
    const room = this.store?.room(this.store.active);
    if (!room) return [];
    const authors = [];
    for (let i = room.messages.length - 1; i >= 0 && authors.length < 200; i -= 1) authors.push(room.messages[i].nick);
    return [...[...room.members].sort((a, b) => a.localeCompare(b)), ...authors];
  }

  /** The composer changed: its height, and the counter near the length limit. */
  onComposerInput() {
    const composer = this.view.composer;
    composer.classList.toggle("multiline", composer.value.includes("\n"));
    this.view.renderCounter(characters(composer.value.trim()), this.maxBodyChars);
  }

  sendComposer() {
    const room = this.store?.active;
    const body = this.view.composer.value;
    if (this.uploads.busy) {
      this.view.announce(this.t("files.wait"));
      return;
    }
    const files = this.uploads.ready;
    if (!room || (!body.trim() && !files.length)) return;
    const length = characters(body.trim());
    if (length > this.maxBodyChars) {
      // Refused here, with the text kept: the server would refuse it too.
      this.view.announce(this.t("composer.tooLong", { count: length - this.maxBodyChars }));
      this.view.renderCounter(length, this.maxBodyChars, { flash: true });
      return;
    }
    const id = crypto.randomUUID();
    const context = this.composerContext?.room === room ? this.composerContext : null;
    if (context?.kind === "edit") {
      this.sendChange(room, { type: "edit", target: context.message.seq }, body);
    } else {
      const replyTo = context?.kind === "reply" ? context.message : null;
      const message = this.store.addOwn(room, body, id, { attachments: files, replyTo });
      this.view.placeMessage(message, { me: this.store.me, ownAction: true });
      this.connection.send(room, body, id, sendExtra(message));
    }
    this.setComposerContext(null);
    this.view.composer.value = "";
    this.onComposerInput();
    this.uploads.clear();
    this.lastTypingSent = 0; // the next keystroke starts a new "is typing"
    this.renderQueue();
  }

  /** The banner counts what waits for the connection; it changes with each send and answer. */
  renderQueue() {
    if (this.connection) this.view.renderConnection(this.connection.state, this.connection.queued);
  }

  /** An edit, delete or reaction: sent like a message (outbox, retries); its error is announced. */
  sendChange(room, extra, body = "") {
    const id = crypto.randomUUID();
    this.changeIds.add(id);
    this.connection.send(room, body, id, extra);
  }

  /** Editing or replying in the composer (`{kind, room, message}`), or neither (null). */
  setComposerContext(context) {
    this.composerContext = context;
    this.view.renderComposerContext(context);
    if (!context) return;
    if (context.kind === "edit") {
      this.view.composer.value = context.message.body;
      this.view.composer.classList.toggle("multiline", context.message.body.includes("\n"));
    }
    this.view.composer.focus();
  }

  startEdit(message) {
    this.setComposerContext({ kind: "edit", room: message.room, message });
  }

  /** A click on a message's buttons: reactions, the picker, reply, edit, delete, a quote. */
  onMessageAction(button) {
    const room = this.store?.active;
    if (!button || !room) return;
    const message = this.store.room(room)?.bySeq(Number(button.dataset.seq ?? button.dataset.target));
    if (button.classList.contains("quote")) {
      this.jumpTo(room, Number(button.dataset.target));
      return;
    }
    if (!message) return;
    if (button.classList.contains("react-add")) {
      this.view.togglePicker(message.seq);
    } else if (button.classList.contains("picker-emoji") || button.classList.contains("reaction")) {
      const emoji = button.dataset.emoji;
      const type = this.store.reacted(message, emoji) ? "unreact" : "react";
      this.sendChange(room, { type, target: message.seq, emoji });
      if (button.classList.contains("picker-emoji")) {
        this.view.closePickers();
        this.view.messages.querySelector(`li[data-seq="${message.seq}"] .react-add`)?.focus();
      }
    } else if (button.classList.contains("reply-button")) {
      this.setComposerContext({ kind: "reply", room, message });
    } else if (button.classList.contains("edit-button")) {
      this.startEdit(message);
    } else if (button.classList.contains("delete-button")) {
      this.sendChange(room, { type: "delete", target: message.seq });
    }
  }

  /** Show message `seq`, loading older history until it is on screen (or there is none). */
  async jumpTo(roomName, seq) {
    for (let pages = 0; pages < MAX_JUMP_PAGES; pages += 1) {
      if (this.view.jumpTo(seq)) return;
      const room = this.store?.room(roomName);
      if (!room || room.historyDone || this.store.active !== roomName || (room.oldestSeq ?? 0) < seq) return;
      await this.loadOlder();
    }
  }

  retry(room, id) {
    const message = this.store.retry(room, id);
    if (!message) return;
    this.view.placeMessage(message, { replaced: message, me: this.store.me, ownAction: true });
    this.connection.send(room, message.body, id, sendExtra(message));
    this.renderQueue();
  }

  /** A failed message goes back into the composer to be fixed (what was there is kept below it). */
  editFailed(room, id) {
    const message = this.store.discard(room, id);
    if (!message) return;
    this.view.removeMessage(id);
    const composer = this.view.composer;
    composer.value = composer.value ? `${message.body}\n${composer.value}` : message.body;
    this.onComposerInput();
    composer.focus();
  }

  discardFailed(room, id) {
    if (!this.store.discard(room, id)) return;
    this.view.removeMessage(id);
    this.view.composer.focus();
  }

  /** Upload `files` (a FileList or array) into the composer's tray. */
  attach(files) {
    if (!this.store?.active || !this.session) return;
    const list = [...files].filter((file) => file instanceof File);
    if (list.length) this.uploads.add(list);
  }

  bindFiles() {
    const v = this.view;
    this.uploads = new Uploads({
      tray: v.uploadTray, input: v.fileInput, t: this.translator,
      token: () => this.session?.token, onChange: () => {}, announce: (text) => v.announce(text),
    });
    this.viewer = new Viewer(v.viewerDialog, this.translator);
    v.attachButton.addEventListener("click", () => v.fileInput.click());
    v.fileInput.addEventListener("change", () => {
      this.attach(v.fileInput.files);
      v.fileInput.value = "";
    });
    v.uploadTray.addEventListener("click", (event) => {
      const remove = event.target.closest("button.upload-remove");
      if (remove) this.uploads.remove(Number(remove.dataset.key));
    });
    v.messages.addEventListener("click", (event) => {
      const image = event.target.closest("button.attachment-image");
      if (image) this.viewer.open(image.dataset.url, image.dataset.name, image);
    });
    v.composer.addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files ?? [])];
      if (!files.length) return;
      event.preventDefault(); // the file, not its name as text
      this.attach(files);
    });
    const chat = v.scroller.closest(".chat");
    const dragging = (event) => [...(event.dataTransfer?.types ?? [])].includes("Files");
    chat.addEventListener("dragover", (event) => {
      if (!dragging(event) || !this.store?.active) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      chat.classList.add("dropping");
      v.dropHint.hidden = false;
    });
    chat.addEventListener("dragleave", (event) => {
      if (chat.contains(event.relatedTarget)) return;
      chat.classList.remove("dropping");
      v.dropHint.hidden = true;
    });
    chat.addEventListener("drop", (event) => {
      chat.classList.remove("dropping");
      v.dropHint.hidden = true;
      if (!dragging(event)) return;
      event.preventDefault();
      this.attach(event.dataTransfer.files);
    });
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
    if (!room || room.loadingHistory) return;
    if (this.view.hiddenOlder(room) > 0) {
      // Held in memory, not drawn yet: no request needed.
      this.view.revealOlder(room, HISTORY_PAGE, this.store.me);
      this.view.renderHistoryState(room);
      return;
    }
    if (room.historyDone || room.oldestSeq === null) return;
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
      case "change": {
        this.changeIds.delete(event.id);
        const touched = store.applyChange(event);
        if (active) for (const message of touched) this.view.refreshMessage(message, store.me);
        const editing = this.composerContext;
        if (editing && touched.length && touched[0].deleted && editing.message === touched[0]) this.setComposerContext(null);
        return;
      }
      case "ack": {
        this.renderQueue();
        const result = store.acknowledge(event);
        if (result && active) this.view.placeMessage(result.message, { replaced: result.replaced, me: store.me });
        return;
      }
      case "error": {
        this.renderQueue();
        if (event.id && this.changeIds.delete(event.id)) {
          this.view.announce(this.t("events.failed", { reason: this.view.errorText(event) }));
        } else if (event.id) {
          const message = store.fail(event);
          if (message && message.room === store.active) {
            this.view.placeMessage(message, { replaced: message, me: store.me });
          }
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
    if (this.store?.room(message.room)?.muted) return;
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
    this.search.setTranslator(this.translator);
    this.uploads.setTranslator(this.translator);
    this.viewer.t = this.translator;
    this.view.langSelect.value = lang;
    this.view.settingsLang.value = lang;
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

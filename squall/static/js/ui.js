// DOM rendering. Text from people (nicks, bodies, room names, preview titles)
// only ever goes in through textContent or attributes; the one exception is the
// server's `html`, which the server has sanitised (nh3) and which is the reason
// the server renders at all.

import { renderAttachments } from "./files.js";
import { COMMON_EMOJI, MessageState, reactedBy, sameNick } from "./store.js";

/** Where a message item sits in time: its seq; a failed one just after the seq it followed; pending last. */
function position(node) {
  if (node.dataset.seq !== undefined) return Number(node.dataset.seq);
  if (node.dataset.after !== undefined) return Number(node.dataset.after) + 0.5;
  return Infinity;
}

const NEAR_BOTTOM_PX = 80;
// A room's messages on screen when it opens: its newest RENDER_WINDOW. Older ones
// held in memory are drawn a page at a time as the reader scrolls up (revealOlder),
// so opening a room costs the same at 100 messages as at 10,000.
export const RENDER_WINDOW = 200;
// A message longer than this is folded to a few lines (CSS .collapsed) until
// "Show more". Decided from the text, not by measuring: no layout per message.
const LONG_MESSAGE_CHARS = 800;
const LONG_MESSAGE_LINES = 12;

function isLong(body) {
  if (body.length > LONG_MESSAGE_CHARS) return true;
  let lines = 1;
  for (let at = body.indexOf("\n"); at !== -1; at = body.indexOf("\n", at + 1)) {
    if (++lines > LONG_MESSAGE_LINES) return true;
  }
  return false;
}
const NICK_COLOURS = 8;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

/** `url` if it is an absolute http(s) URL, else null (no javascript:, data: …). */
export function safeHttpUrl(url) {
  try {
    const parsed = new URL(String(url));
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

// One person's messages less than this apart share one header (nick, avatar, time).
const GROUP_GAP_MS = 5 * 60 * 1000;

/** Initials for an avatar: the first letters of up to two words of the nick. */
export function initials(nick) {
  const words = nick.split(/[\s._-]+/u).filter(Boolean);
  const letters = (words.length > 1 ? [words[0], words[1]] : [nick]).map((word) => [...word][0] ?? "");
  return letters.join("").toUpperCase();
}

/** Turn the body's leading "/me " into "* nick " (text nodes only: the html stays the server's). */
function stripActionPrefix(body, nick) {
  const walker = document.createTreeWalker(body, NodeFilter.SHOW_TEXT);
  const first = walker.nextNode();
  if (!first || !first.nodeValue.startsWith("/me ")) return;
  first.nodeValue = first.nodeValue.slice(4);
  const who = el("span", "action-nick", `* ${nick} `);
  first.parentNode.insertBefore(who, first);
}

function localDay(ts) {
  const date = new Date(ts);
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

function nickColour(nick) {
  let hash = 0;
  for (const char of nick.toLowerCase()) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return `nick-colour-${hash % NICK_COLOURS}`;
}

/** Show `text` in the error line of `input` (empty hides it), and mark the input. */
export function showFieldError(input, line, text) {
  line.textContent = text;
  line.hidden = !text;
  input.setAttribute("aria-invalid", text ? "true" : "false");
}

export class ChatView {
  constructor(translator) {
    this.t = translator;
    const byId = (id) => document.getElementById(id);
    this.login = byId("login");
    this.loginForm = byId("login-form");
    this.nickInput = byId("nick-input");
    this.nickError = byId("nick-error");
    this.loginModeField = byId("login-mode");
    this.loginIntro = byId("login-intro");
    this.passwordField = byId("password-field");
    this.passwordInput = byId("password-input");
    this.passwordHint = byId("password-hint");
    this.passwordError = byId("password-error");
    this.loginError = byId("login-error");
    this.loginSubmit = byId("nick-submit");
    this.settingsButton = byId("settings-button");
    this.app = byId("app");
    this.roomsToggle = byId("rooms-toggle");
    this.roomTitle = byId("room-title");
    this.transport = byId("transport-indicator");
    this.connectionBanner = byId("connection-banner");
    this.composerCounter = byId("composer-counter");
    this.jumpNewest = byId("jump-newest");
    this._newBelow = 0; // messages that arrived below the view while the reader was scrolled up
    this._dividerSeq = null;
    this._oldestShownSeq = null; // the oldest message drawn in the open room
    this._itemBySeq = new Map(); // seq → item drawn in the open room
    this._ownItemById = new Map(); // client id → item, for our own messages (pending until acked)
    this._stick = null; // this frame's "follow the bottom?", measured once (see _followsBottom)
    this.connectionBannerText = byId("connection-banner-text");
    this.reconnectNow = byId("reconnect-now");
    this.langSelect = byId("lang-select");
    this.settingsLang = byId("settings-lang");
    this.themeChoice = byId("theme-choice");
    this.me = byId("me");
    this.roomList = byId("room-list");
    this.joinForm = byId("join-form");
    this.joinInput = byId("join-input");
    this.joinError = byId("join-error");
    this.members = byId("members");
    this.membersCount = byId("members-count");
    this.membersMore = byId("members-more");
    this.emptyState = byId("empty-state");
    this.roomEmpty = byId("room-empty");
    /** Room name → what to call it instead of #name (a direct message: the other people). */
    this.roomLabels = new Map();
    this.scroller = byId("scroller");
    this.loadOlder = byId("load-older");
    this.historyStart = byId("history-start");
    this.messages = byId("messages");
    this.typing = byId("typing");
    this.composerForm = byId("composer-form");
    this.composerLabel = byId("composer-label");
    this.composer = byId("composer");
    this.sendButton = byId("send-button");
    this.attachButton = byId("attach-button");
    this.fileInput = byId("file-input");
    this.uploadTray = byId("upload-tray");
    this.dropHint = byId("drop-hint");
    this.viewerDialog = byId("viewer");
    this.composerContext = byId("composer-context");
    this.composerContextText = byId("composer-context-text");
    this.composerCancel = byId("composer-cancel");
    this.liveRegion = byId("live-region");
    this._status = null;
    this._scrollTopSeen = 0; // see takeScrollUp()
    this._timeFormat = null;
    this._dateFormat = null;
  }

  setTranslator(translator) {
    this.t = translator;
    this._timeFormat = null;
    this._dateFormat = null;
    translator.apply();
    this.renderLoginMode();
  }

  /** The sign-in screen in `mode` (`guest`, `signin` or `create`), errors cleared. */
  showLogin({ nick = "", mode = "guest", error = "" } = {}) {
    this.app.hidden = true;
    this.login.hidden = false;
    this.nickInput.value = nick;
    this.passwordInput.value = "";
    this.setLoginMode(mode);
    this.showLoginErrors({ form: error });
    (nick && mode !== "guest" ? this.passwordInput : this.nickInput).focus();
  }

  get loginMode() {
    return this.loginModeField.querySelector("input[name=mode]:checked")?.value ?? "guest";
  }

  setLoginMode(mode) {
    const radio = this.loginModeField.querySelector(`input[name=mode][value="${mode}"]`);
    if (radio) radio.checked = true;
    this.renderLoginMode();
  }

  renderLoginMode() {
    const mode = this.loginMode;
    this.loginIntro.textContent = this.t.t(`login.intro.${mode}`);
    this.loginSubmit.textContent = this.t.t(`login.submit.${mode}`);
    this.passwordField.hidden = mode === "guest";
    this.passwordHint.hidden = mode !== "create"; // the rule matters only for a new password
    this.passwordInput.autocomplete = mode === "create" ? "new-password" : "current-password";
  }

  /** Errors in words beside their field: `{nick, password, form}`, each a string or empty. */
  showLoginErrors({ nick = "", password = "", form = "" } = {}) {
    showFieldError(this.nickInput, this.nickError, nick);
    showFieldError(this.passwordInput, this.passwordError, password);
    this.loginError.textContent = form;
    this.loginError.hidden = !form;
  }

  setLoginBusy(busy) {
    this.loginSubmit.disabled = busy;
    this.login.setAttribute("aria-busy", String(busy));
  }

  showApp() {
    this.login.hidden = true;
    this.app.hidden = false;
  }

  showJoinError(text) {
    showFieldError(this.joinInput, this.joinError, text);
  }

  setSidebarOpen(open) {
    this.app.classList.toggle("sidebar-open", open);
    this.roomsToggle.setAttribute("aria-expanded", String(open));
  }

  get sidebarOpen() {
    return this.app.classList.contains("sidebar-open");
  }

  /** Say something to screen readers without moving focus. */
  announce(text) {
    const line = el("p", null, text);
    this.liveRegion.append(line);
    while (this.liveRegion.childElementCount > 5) this.liveRegion.firstElementChild.remove();
  }

  setTitle(mentions) {
    document.title = mentions > 0 ? this.t.t("title.mentions", { count: mentions }) : this.t.t("title.base");
    this._badgeFavicon(mentions);
  }

  /** The tab's icon carries the mention count too: a red badge drawn into the plain icon. */
  async _badgeFavicon(mentions) {
    const icon = document.getElementById("favicon");
    if (!icon) return;
    icon.dataset.plain ??= icon.href;
    icon.dataset.count = String(mentions);
    if (mentions <= 0) {
      icon.href = icon.dataset.plain;
      return;
    }
    // An icon given as a data: URL cannot load anything, so the plain icon's own
    // markup goes in (read once).
    this._plainIcon ??= fetch(icon.dataset.plain).then((response) => response.text()).catch(() => null);
    const plain = await this._plainIcon;
    if (!plain || icon.dataset.count !== String(mentions)) return; // a newer count won meanwhile
    const label = mentions > 99 ? "99+" : String(mentions);
    const badge = `<circle cx="44" cy="20" r="20" fill="#d1242f"/>`
      + `<text x="44" y="28" font-size="${label.length > 2 ? 16 : 24}" font-family="sans-serif" `
      + `font-weight="bold" text-anchor="middle" fill="#fff">${label}</text>`;
    icon.href = `data:image/svg+xml,${encodeURIComponent(plain.replace("</svg>", `${badge}</svg>`))}`;
  }

  renderMe(nick) {
    this.me.textContent = this.t.t("me.label", { nick });
  }

  renderTransport(status = this._status) {
    if (!status) return;
    this._status = status;
    const name = this.t.t(`transport.${status.kind}`);
    let text;
    if (status.state === "offline") text = this.t.t("transport.offline");
    else if (status.state === "connecting") text = this.t.t("transport.connecting");
    else if (status.forced) text = this.t.t("transport.forced", { transport: name });
    else if (status.kind !== "ws") text = this.t.t("transport.fallback", { transport: name });
    else text = name;
    this.transport.textContent = text;
    this.transport.dataset.transport = status.kind;
    this.transport.dataset.state = status.state;
    this.transport.title = this.t.t("transport.label");
    this.renderConnection(status.state, status.queued ?? 0);
  }

  /**
   * The banner while the connection is down: hard to miss, unlike the pill, and it
   * says what happens to what the user wrote meanwhile. Not shown while the first
   * connection is being made (`connecting` before it was ever open).
   */
  renderConnection(state, queued) {
    if (state === "open") this._everOpen = true;
    const down = state === "offline" || (state === "connecting" && this._everOpen);
    this.connectionBanner.hidden = !down;
    this.connectionBanner.dataset.queued = String(queued);
    if (!down) return;
    const key = queued > 0 ? "connection.lostQueued" : "connection.lost";
    this.connectionBannerText.textContent = this.t.t(key, { count: queued });
  }

  renderRoomList(store) {
    const focused = document.activeElement?.closest?.("#room-list li")?.dataset.room;
    const focusedLeave = document.activeElement?.classList?.contains("leave-button");
    const focusedMute = document.activeElement?.classList?.contains("mute-button");
    this.roomList.replaceChildren();
    for (const room of store.rooms.values()) {
      const item = el("li", "room");
      item.dataset.room = room.name;
      item.dataset.testid = "room";
      const active = room.name === store.active;
      item.classList.toggle("active", active);
      item.classList.toggle("muted", room.muted);
      const button = el("button", "room-button");
      button.type = "button";
      button.dataset.room = room.name;
      if (active) button.setAttribute("aria-current", "true");
      button.append(el("span", "room-name", this.roomLabel(room.name)));
      const badge = el("span", "unread-badge", String(room.unread));
      badge.dataset.testid = "unread-badge";
      badge.hidden = room.unread === 0;
      badge.classList.toggle("has-mentions", room.mentions > 0);
      badge.setAttribute("aria-hidden", "true");
      button.append(badge);
      if (room.unread > 0) {
        const label = room.mentions > 0
          ? this.t.t("rooms.unreadMentions", { count: room.unread, mentions: room.mentions })
          : this.t.t("rooms.unread", { count: room.unread });
        button.append(el("span", "visually-hidden", `, ${label}`));
      }
      const leave = el("button", "leave-button", "×");
      leave.type = "button";
      leave.dataset.room = room.name;
      leave.dataset.testid = "leave-room";
      leave.setAttribute("aria-label", this.t.t("rooms.leave", { room: room.name }));
      const mute = el("button", "mute-button", room.muted ? "🔕" : "🔔");
      mute.type = "button";
      mute.dataset.room = room.name;
      mute.dataset.testid = "mute-room";
      mute.setAttribute("aria-pressed", String(room.muted));
      mute.setAttribute("aria-label", this.t.t("rooms.mute", { room: room.name }));
      item.append(button, mute, leave);
      this.roomList.append(item);
      if (focused === room.name) (focusedLeave ? leave : focusedMute ? mute : button).focus();
    }
  }

  /** Draw the active room from scratch: on switch, join and language change. */
  renderRoom(store) {
    const room = store.room(store.active);
    this.emptyState.hidden = room !== null;
    this.scroller.hidden = room === null;
    this.composer.disabled = room === null;
    this.sendButton.disabled = room === null;
    this.attachButton.disabled = room === null;
    this.roomTitle.textContent = room ? this.roomLabel(room.name) : "";
    this.messages.replaceChildren();
    this._oldestShownSeq = null;
    this._itemBySeq.clear();
    this._ownItemById.clear();
    this.members.replaceChildren();
    this.membersCount.textContent = "";
    this.membersMore.hidden = true;
    this.typing.textContent = "";
    if (!room) return;
    this.messages.setAttribute("aria-label", this.t.t("messages.label", { room: room.name }));
    this.composerLabel.textContent = this.t.t("composer.label", { room: room.name });
    this.composer.placeholder = this.t.t(this.touch ? "composer.placeholderTouch" : "composer.placeholder", { room: room.name });
    const shown = room.messages.slice(-RENDER_WINDOW);
    this._oldestShownSeq = shown.length ? shown[0].seq : null;
    const fragment = document.createDocumentFragment();
    for (const message of shown) fragment.append(this.renderMessage(message, store.me));
    this.messages.append(fragment);
    for (const message of room.pending.values()) this.placeMessage(message, { me: store.me });
    this._regroupAll();
    this._newBelow = 0;
    this.renderDivider(room);
    this.renderHistoryState(room);
    this.renderMembers(room, store.me);
    this.renderTyping(room, Date.now());
    this.scrollToBottom();
  }

  /** Older messages held in memory but not drawn yet (see RENDER_WINDOW). */
  hiddenOlder(room) {
    return this._oldestShownSeq === null ? 0 : room.indexOf(this._oldestShownSeq);
  }

  /** Draw up to `count` of the messages held above the oldest one on screen. */
  revealOlder(room, count, me) {
    const end = this.hiddenOlder(room);
    const older = room.messages.slice(Math.max(0, end - count), end);
    this.prependMessages(older, me);
  }

  roomLabel(name) {
    return this.roomLabels.get(name) ?? `#${name}`;
  }

  renderHistoryState(room) {
    // An empty room says what to do rather than showing a blank pane.
    this.roomEmpty.hidden = room.messages.length > 0 || room.pending.size > 0;
    this.roomEmpty.textContent = this.t.t("rooms.emptyRoom", { room: this.roomLabel(room.name) });
    this.loadOlder.hidden = (room.historyDone && this.hiddenOlder(room) === 0) || room.messages.length === 0;
    this.loadOlder.disabled = room.loadingHistory;
    this.loadOlder.textContent = this.t.t(room.loadingHistory ? "messages.loadingOlder" : "messages.loadOlder");
    this.historyStart.hidden = !room.historyDone || this.hiddenOlder(room) > 0;
    this.historyStart.textContent = this.t.t("messages.noOlder", { room: room.name });
  }

  renderMessage(message, me) {
    const item = el("li", "message");
    item.dataset.testid = "message";
    if (message.seq !== null) item.dataset.seq = String(message.seq);
    if (message.id) item.dataset.id = message.id;
    item.dataset.nick = message.nick;
    this._fillMessage(item, message, me);
    return item;
  }

  /**
   * Headers and day separators follow from the neighbours, so they are worked out
   * again around every insertion and removal: `continued` when the message above is
   * the same person's, the same day and less than GROUP_GAP_MS earlier;
   * `data-day` (shown as a separator) on the first message of each day.
   */
  _regroup(item) {
    if (!item) return;
    const previous = item.previousElementSibling;
    const ts = Number(item.dataset.ts);
    const newDay = !previous || localDay(Number(previous.dataset.ts)) !== localDay(ts);
    if (newDay) item.dataset.day = this._formatDay(ts);
    else delete item.dataset.day;
    const continued = !newDay
      && sameNick(previous.dataset.nick, item.dataset.nick)
      && ts - Number(previous.dataset.ts) < GROUP_GAP_MS
      && !previous.classList.contains("failed")
      && !item.classList.contains("failed");
    item.classList.toggle("continued", continued);
  }

  _regroupAround(item) {
    const next = item.nextElementSibling;
    this._regroup(item);
    this._regroup(next);
  }

  _regroupAll() {
    for (const item of this.messages.children) this._regroup(item);
  }

  _formatDay(ts) {
    const day = localDay(ts);
    const now = Date.now();
    if (day === localDay(now)) return this.t.t("messages.today");
    if (day === localDay(now - 86_400_000)) return this.t.t("messages.yesterday");
    const date = new Date(ts);
    const options = { weekday: "long", month: "long", day: "numeric" };
    if (date.getFullYear() !== new Date(now).getFullYear()) options.year = "numeric";
    return new Intl.DateTimeFormat(this.t.lang, options).format(date);
  }

  _fillMessage(item, message, me) {
    item.replaceChildren();
    if (message.seq !== null) this._itemBySeq.set(message.seq, item);
    if (message.id && sameNick(message.nick, me)) this._ownItemById.set(message.id, item);
    item.dataset.ts = String(message.ts);
    const firstUnread = message.seq !== null && message.seq === this._dividerSeq;
    item.classList.toggle("first-unread", firstUnread);
    if (firstUnread) {
      const divider = el("div", "unread-divider", this.t.t("messages.newDivider"));
      divider.dataset.testid = "unread-divider";
      item.append(divider);
    }
    const avatar = el("span", `avatar ${nickColour(message.nick)}`);
    avatar.setAttribute("aria-hidden", "true");
    avatar.append(el("span", null, initials(message.nick)));
    item.append(avatar);
    item.classList.toggle("own", sameNick(message.nick, me));
    item.classList.toggle("pending", message.state === MessageState.PENDING);
    item.classList.toggle("failed", message.state === MessageState.FAILED);
    const mentionsMe = message.mentions.some((nick) => sameNick(nick, me));
    item.classList.toggle("mention-me", mentionsMe);

    const meta = el("div", "meta");
    const nick = el("span", `nick ${nickColour(message.nick)}`, message.nick);
    nick.dataset.testid = "message-nick";
    const when = new Date(message.ts);
    const time = el("time", "time", this._formatTime(when));
    time.dateTime = when.toISOString();
    time.title = this._formatDate(when);
    meta.append(nick, time);
    if (message.edited && !message.deleted) {
      const edited = el("span", "edited", this.t.t("events.edited"));
      edited.dataset.testid = "edited";
      meta.append(edited);
    }
    if (mentionsMe) meta.append(el("span", "visually-hidden", this.t.t("messages.mentionsYou")));
    if (message.state === MessageState.PENDING) {
      meta.append(el("span", "status", this.t.t("messages.pending")));
    }

    item.classList.toggle("deleted", message.deleted);
    const body = el("div", "body");
    body.dataset.testid = "message-body";
    if (message.deleted) {
      body.append(el("em", "tombstone", this.t.t("events.deleted")));
    } else if (message.html !== null) {
      body.innerHTML = message.html; // sanitised by the server
    } else {
      body.classList.add("plain"); // newlines kept by CSS, as the server's <br> would
      body.textContent = message.body;
    }
    // "/me waves" (IRC's action, as `squall chat` sends it) reads "* nick waves".
    const action = !message.deleted && message.body.startsWith("/me ");
    item.classList.toggle("action", action);
    if (action) stripActionPrefix(body, message.nick);
    item.append(meta);
    if (message.replyTo !== null) item.append(this._renderQuote(message));
    item.append(body);
    if (isLong(message.body) && !message.deleted) {
      body.classList.toggle("collapsed", !message.expanded);
      const expand = el("button", "expand", this.t.t(message.expanded ? "messages.showLess" : "messages.showMore"));
      expand.type = "button";
      expand.dataset.testid = "expand";
      expand.setAttribute("aria-expanded", String(Boolean(message.expanded)));
      expand.addEventListener("click", () => {
        message.expanded = !message.expanded;
        body.classList.toggle("collapsed", !message.expanded);
        expand.textContent = this.t.t(message.expanded ? "messages.showLess" : "messages.showMore");
        expand.setAttribute("aria-expanded", String(message.expanded));
      });
      item.append(expand);
    }

    if (!message.body && message.attachments?.length) body.hidden = true; // files only
    const attachments = message.deleted ? null : renderAttachments(message.attachments, this.t);
    if (attachments) item.append(attachments);

    const previews = this._renderPreviews(message.previews);
    if (previews) item.append(previews);
    if (message.seq !== null && !message.deleted) item.append(this._renderReactions(message, me), this._renderActions(message, me));

    if (message.state === MessageState.FAILED) item.append(this._renderFailure(message));
  }

  /**
   * Why a send failed, in words, and what can be done: edit (the text goes back
   * into the composer), discard, and retry only where a retry can succeed — at
   * once for a lost connection or a busy server, after `retry_after` for a rate limit.
   */
  _renderFailure(message) {
    const failure = el("div", "failure");
    failure.dataset.testid = "failure";
    failure.dataset.code = message.error?.code ?? "";
    failure.append(el("span", "failure-reason", this.t.t("messages.failed", { reason: this.errorText(message.error) })));
    const actions = el("span", "failure-actions");
    const button = (action, label) => {
      const b = el("button", action, this.t.t(`messages.${action}`));
      b.type = "button";
      b.dataset.testid = action;
      b.dataset.id = message.id;
      b.dataset.room = message.room;
      b.setAttribute("aria-label", this.t.t(`messages.${label}`));
      actions.append(b);
      return b;
    };
    if (message.retryAt !== null && message.retryAt !== undefined) {
      const retry = button("retry", "retryLabel");
      const wait = message.retryAt - Date.now();
      if (wait > 0) {
        retry.disabled = true;
        setTimeout(() => {
          retry.disabled = false;
        }, wait);
      }
    }
    button("edit", "editLabel");
    button("discard", "discardLabel");
    failure.append(actions);
    return failure;
  }

  /** The quoted message a reply answers: a button that jumps to it. */
  _renderQuote(message) {
    const quote = el("button", "quote");
    quote.type = "button";
    quote.dataset.testid = "reply-quote";
    quote.dataset.target = String(message.replyTo);
    if (message.replySnippet) {
      quote.append(el("span", "quote-nick", message.replySnippet.nick), " ", el("span", "quote-body", message.replySnippet.body));
      quote.setAttribute("aria-label", this.t.t("events.jump", { nick: message.replySnippet.nick }));
    } else {
      quote.append(el("em", null, this.t.t("events.quoteDeleted")));
    }
    return quote;
  }

  /** Reaction chips (click toggles yours) and the button that opens the emoji picker. */
  _renderReactions(message, me) {
    const box = el("div", "reactions");
    box.dataset.testid = "reactions";
    for (const [emoji, nicks] of message.reactions) {
      const mine = reactedBy(message, emoji, me);
      const count = message.reactionCounts.get(emoji) ?? nicks.length;
      const chip = el("button", "reaction");
      chip.type = "button";
      chip.dataset.testid = "reaction";
      chip.dataset.emoji = emoji;
      chip.dataset.seq = String(message.seq);
      chip.setAttribute("aria-pressed", mine ? "true" : "false");
      chip.title = nicks.join(", ");
      chip.setAttribute("aria-label", this.t.t("events.reactionLabel", { emoji, count, nicks: nicks.join(", ") }));
      chip.append(el("span", "reaction-emoji", emoji), el("span", "reaction-count", String(count)));
      box.append(chip);
    }
    return box;
  }

  _renderActions(message, me) {
    const actions = el("div", "message-actions");
    const button = (className, key, testid) => {
      const node = el("button", className, this.t.t(key));
      node.type = "button";
      node.dataset.testid = testid;
      node.dataset.seq = String(message.seq);
      actions.append(node);
      return node;
    };
    button("react-add", "events.react", "react-add").setAttribute("aria-expanded", "false");
    button("reply-button", "events.reply", "reply-button");
    if (sameNick(message.nick, me)) {
      button("edit-button", "events.edit", "edit-button");
      button("delete-button", "events.delete", "delete-button");
    }
    return actions;
  }

  /** The emoji picker under message `seq`'s actions (toggled); focus goes to its first emoji. */
  togglePicker(seq) {
    const item = this._bySeq(seq);
    if (!item) return;
    const open = item.querySelector(".picker");
    const opener = item.querySelector(".react-add");
    this.closePickers();
    if (open) {
      opener?.focus();
      return;
    }
    const picker = el("div", "picker");
    picker.dataset.testid = "picker";
    picker.setAttribute("role", "group");
    picker.setAttribute("aria-label", this.t.t("events.react"));
    for (const emoji of COMMON_EMOJI) {
      const choice = el("button", "picker-emoji", emoji);
      choice.type = "button";
      choice.dataset.emoji = emoji;
      choice.dataset.seq = String(seq);
      choice.setAttribute("aria-label", this.t.t("events.reactWith", { emoji }));
      picker.append(choice);
    }
    opener?.setAttribute("aria-expanded", "true");
    item.append(picker);
    picker.querySelector("button").focus();
  }

  closePickers() {
    for (const picker of this.messages.querySelectorAll(".picker")) picker.remove();
    for (const opener of this.messages.querySelectorAll(".react-add")) opener.setAttribute("aria-expanded", "false");
  }

  /** What the composer is doing besides a new message: `{kind: "edit"|"reply", message}` or null. */
  renderComposerContext(context) {
    this.composerContext.hidden = !context;
    this.composerContext.classList.toggle("editing", context?.kind === "edit");
    if (!context) return;
    this.composerContextText.textContent = context.kind === "edit"
      ? this.t.t("events.editing")
      : this.t.t("events.replyingTo", { nick: context.message.nick, body: context.message.body.slice(0, 100) });
    this.composerCancel.textContent = this.t.t("events.cancel");
  }

  /** Scroll message `seq` into view and flash it; false if it is not on screen. */
  jumpTo(seq) {
    const item = this._bySeq(seq);
    if (!item) return false;
    item.scrollIntoView({ block: "center" });
    item.classList.remove("flash");
    void item.offsetWidth; // restart the animation
    item.classList.add("flash");
    item.tabIndex = -1;
    item.focus({ preventScroll: true });
    return true;
  }

  _renderPreviews(previews) {
    const cards = [];
    for (const preview of previews) {
      if (!preview || typeof preview !== "object") continue;
      const href = safeHttpUrl(preview.url);
      if (!href) continue;
      const card = el("a", "preview-card");
      card.href = href;
      card.target = "_blank";
      card.rel = "noopener noreferrer nofollow ugc";
      card.dataset.testid = "preview-card";
      const title = String(preview.title || preview.url);
      card.setAttribute("aria-label", this.t.t("preview.label", { title }));
      const image = safeHttpUrl(preview.image);
      if (image) {
        const img = el("img", "preview-image");
        img.src = image;
        img.alt = "";
        img.loading = "lazy";
        img.referrerPolicy = "no-referrer";
        card.append(img);
      }
      const text = el("span", "preview-text");
      if (preview.site_name) text.append(el("span", "preview-site", String(preview.site_name)));
      text.append(el("strong", "preview-title", title));
      if (preview.description) text.append(el("span", "preview-description", String(preview.description)));
      card.append(text);
      cards.push(card);
    }
    if (!cards.length) return null;
    const box = el("div", "previews");
    box.append(...cards);
    return box;
  }

  errorText(error) {
    if (!error) return this.t.t("error.unknown", { code: "?" });
    const key = `error.${error.code}`;
    const text = this.t.t(key);
    return text === key ? this.t.t("error.unknown", { code: error.code }) : text;
  }

  /**
   * Put `message` where it belongs in the open room: replacing the element of the
   * pending message it confirms, else by seq among the confirmed ones. Pending
   * messages stay at the bottom; a failed one stays where it was in time, after
   * the seq the room had reached when it failed.
   */
  placeMessage(message, { replaced = null, me, ownAction = false } = {}) {
    this.roomEmpty.hidden = true;
    const stick = ownAction || this._followsBottom();
    let item = replaced ? this._byId(replaced.id) : null;
    const existing = message.seq !== null ? this._bySeq(message.seq) : null;
    if (existing && item && existing !== item) item.remove();
    if (existing) item = existing;
    if (!item) item = this.renderMessage(message, me);
    else {
      if (message.seq !== null) item.dataset.seq = String(message.seq);
      this._fillMessage(item, message, me);
    }
    if (message.seq !== null) this._insertBySeq(item, message.seq);
    else if (message.state === MessageState.FAILED) {
      item.dataset.after = String(message.after ?? 0);
      this._insertBySeq(item, (message.after ?? 0) + 0.5);
    } else if (!item.isConnected || item.dataset.after !== undefined) {
      delete item.dataset.after;
      this.messages.append(item); // pending (or retried): at the bottom, in the order written
    }
    this._regroupAround(item);
    if (stick) this._scrollToBottomSoon();
    else if (message.seq !== null && !item.nextElementSibling && !replaced) {
      this._newBelow += 1; // arrived below a reader who is scrolled up: counted, not jumped to
      this.renderJump();
    }
    return item;
  }

  removeMessage(id) {
    const item = this._byId(id);
    if (!item) return;
    const next = item.nextElementSibling;
    item.remove();
    this._regroup(next);
  }

  /**
   * The characters left, shown from 90 % of the limit on (and in red past it).
   * `flash` when a send was refused for it, so that the eye goes there.
   */
  renderCounter(length, max, { flash = false } = {}) {
    const counter = this.composerCounter;
    const left = max - length;
    counter.hidden = length < max * 0.9;
    counter.textContent = String(left);
    counter.classList.toggle("over", left < 0);
    counter.setAttribute("aria-label", this.t.t(left < 0 ? "composer.over" : "composer.left", { count: Math.abs(left) }));
    this.sendButton.setAttribute("aria-disabled", String(left < 0));
    if (flash) {
      counter.classList.remove("flash");
      void counter.offsetWidth; // restart the animation
      counter.classList.add("flash");
    }
  }

  refreshMessage(message, me) {
    const item = (message.seq !== null && this._bySeq(message.seq)) || (message.id && this._byId(message.id));
    if (item) this._fillMessage(item, message, me);
  }

  /** Older messages at the top, with the messages on screen kept where they are. */
  prependMessages(messages, me) {
    if (!messages.length) return;
    const before = this.scroller.scrollHeight;
    const top = this.scroller.scrollTop;
    const items = [];
    for (const message of [...messages].reverse()) {
      const item = this.renderMessage(message, me);
      this._insertBySeq(item, message.seq);
      items.push(item);
    }
    if (this._oldestShownSeq === null || messages[0].seq < this._oldestShownSeq) this._oldestShownSeq = messages[0].seq;
    // Only the new items and the one below them can have changed groups.
    for (const item of items.reverse()) this._regroup(item);
    this._regroup(items[items.length - 1].nextElementSibling);
    this.scroller.scrollTop = top + (this.scroller.scrollHeight - before);
    this._scrollTopSeen = this.scroller.scrollTop;
  }

  _insertBySeq(item, seq) {
    const first = this.messages.firstElementChild;
    if (first && first !== item && position(first) > seq) {
      this.messages.insertBefore(item, first); // older than everything drawn: a prepend
      return;
    }
    // Walk back from the end: skip pending items and newer confirmed or failed ones.
    let next = null;
    for (let node = this.messages.lastElementChild; node; node = node.previousElementSibling) {
      if (node === item) continue;
      if (position(node) > seq) next = node;
      else break;
    }
    if (item.nextElementSibling === next && item.parentNode === this.messages && next !== null) return;
    this.messages.insertBefore(item, next);
  }

  // Items are found through maps filled as they are drawn (_fillMessage), not by
  // searching the list: a room scrolled back 10,000 messages has as many items.
  _bySeq(seq) {
    const item = this._itemBySeq.get(seq);
    return item?.parentNode === this.messages ? item : null;
  }

  _byId(id) {
    const item = this._ownItemById.get(id);
    return item?.parentNode === this.messages ? item : null;
  }

  /** The members panel: how many are online, the names known so far, "Show more" while there are more. */
  renderMembers(room, me) {
    this.members.replaceChildren();
    const nicks = [...room.members].sort((a, b) => a.localeCompare(b));
    if (!nicks.some((nick) => sameNick(nick, me))) nicks.unshift(me);
    this.membersCount.textContent = this.t.t("members.count", { count: Math.max(room.memberCount, 1) });
    this.membersMore.hidden = room.membersNext === null;
    this.membersMore.disabled = room.loadingMembers;
    for (const nick of nicks) {
      const text = sameNick(nick, me) ? this.t.t("members.you", { nick }) : nick;
      const item = el("li", `member ${nickColour(nick)}`, text);
      item.dataset.nick = nick;
      item.dataset.testid = "member";
      this.members.append(item);
    }
  }

  renderTyping(room, now) {
    const nicks = room.typingNicks(now);
    let text = "";
    if (nicks.length === 1) text = this.t.t("typing.one", { a: nicks[0] });
    else if (nicks.length === 2) text = this.t.t("typing.two", { a: nicks[0], b: nicks[1] });
    else if (nicks.length > 2) text = this.t.t("typing.many");
    if (this.typing.textContent !== text) this.typing.textContent = text;
  }

  isNearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  }

  /**
   * Whether new messages should keep the view at the bottom: measured once per
   * frame, before the frame's first insertion. A burst (a join's backlog, a busy
   * room) then costs one layout, not one per message: measuring after each
   * insertion would force the browser to lay the list out every time.
   */
  _followsBottom() {
    if (this._stick === null) {
      this._stick = this.isNearBottom();
      requestAnimationFrame(() => {
        this._stick = null;
      });
    }
    return this._stick;
  }

  /** Scroll to the bottom once, before the next paint, however many messages asked. */
  _scrollToBottomSoon() {
    if (this._scrollFrame) return;
    this._scrollFrame = requestAnimationFrame(() => {
      this._scrollFrame = null;
      this.scrollToBottom();
    });
  }

  /** The page is about to show a place of its own (a found message, the unread divider): no follow-the-bottom after it. */
  cancelScrollToBottom() {
    if (this._scrollFrame) cancelAnimationFrame(this._scrollFrame);
    this._scrollFrame = null;
    // Messages arriving in this same frame do not pull the view back down either.
    if (this._stick === null) requestAnimationFrame(() => {
      this._stick = null;
    });
    this._stick = false;
  }

  /** Bring `item` into the middle of the view, and keep it there. */
  showItem(item) {
    this.cancelScrollToBottom();
    item.scrollIntoView({ block: "center" });
    this._scrollTopSeen = this.scroller.scrollTop;
    this.renderJump();
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this._scrollTopSeen = this.scroller.scrollTop;
    this._newBelow = 0;
    this.renderJump();
  }

  /**
   * "New messages" above the first message that was unread when the room came on
   * screen, and the view opened there (where the reader left off) instead of at
   * the bottom.
   */
  renderDivider(room) {
    for (const old of this.messages.querySelectorAll(".first-unread")) {
      old.classList.remove("first-unread");
      old.querySelector(":scope > .unread-divider")?.remove();
    }
    this._dividerSeq = room.dividerSeq;
    const item = room.dividerSeq !== null ? this._bySeq(room.dividerSeq) : null;
    if (!item) return;
    item.classList.add("first-unread");
    const divider = el("div", "unread-divider", this.t.t("messages.newDivider"));
    divider.dataset.testid = "unread-divider";
    item.append(divider);
    this.cancelScrollToBottom();
    this.scroller.scrollTop = Math.max(0, item.offsetTop - this.scroller.offsetTop - NEAR_BOTTOM_PX);
    this._scrollTopSeen = this.scroller.scrollTop;
    this.renderJump();
  }

  /** The reader scrolled: at the bottom, everything below has been seen. */
  onScrolled() {
    if (this.isNearBottom()) this._newBelow = 0;
    this.renderJump();
  }

  /** "Jump to newest ↓", with how many arrived meanwhile, while the newest are out of sight. */
  renderJump() {
    const s = this.scroller;
    const away = s.scrollHeight - s.scrollTop - s.clientHeight > s.clientHeight; // more than a screen up
    const show = this._newBelow > 0 || away;
    const text = this._newBelow > 0
      ? this.t.t("messages.jumpCount", { count: this._newBelow })
      : this.t.t("messages.jump");
    // Called on every scroll event: write only what changed.
    if (this.jumpNewest.hidden === show) this.jumpNewest.hidden = !show;
    if (this.jumpNewest.textContent !== text) {
      this.jumpNewest.textContent = text;
      this.jumpNewest.dataset.count = String(this._newBelow);
    }
  }

  /**
   * Whether the scroller moved up since the last call or the page's own last move.
   * Call it from the scroll handler: the page's moves (scrollToBottom, the prepend
   * in prependMessages) are recorded as they are made, so a scroll event they cause
   * never reads as the reader scrolling up, whichever frame it is dispatched in.
   */
  takeScrollUp() {
    const top = this.scroller.scrollTop;
    const movedUp = top < this._scrollTopSeen;
    this._scrollTopSeen = top;
    return movedUp;
  }

  _formatTime(date) {
    this._timeFormat ??= new Intl.DateTimeFormat(this.t.lang, { hour: "2-digit", minute: "2-digit" });
    return this._timeFormat.format(date);
  }

  _formatDate(date) {
    this._dateFormat ??= new Intl.DateTimeFormat(this.t.lang, { dateStyle: "full", timeStyle: "medium" });
    return this._dateFormat.format(date);
  }
}

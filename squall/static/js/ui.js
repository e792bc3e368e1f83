// DOM rendering. Text from people (nicks, bodies, room names, preview titles)
// only ever goes in through textContent or attributes; the one exception is the
// server's `html`, which the server has sanitised (nh3) and which is the reason
// the server renders at all.

import { MessageState, sameNick } from "./store.js";

const NEAR_BOTTOM_PX = 80;
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
    this.langSelect = byId("lang-select");
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
  }

  renderRoomList(store) {
    const focused = document.activeElement?.closest?.("#room-list li")?.dataset.room;
    const focusedLeave = document.activeElement?.classList?.contains("leave-button");
    this.roomList.replaceChildren();
    for (const room of store.rooms.values()) {
      const item = el("li", "room");
      item.dataset.room = room.name;
      item.dataset.testid = "room";
      const active = room.name === store.active;
      item.classList.toggle("active", active);
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
      item.append(button, leave);
      this.roomList.append(item);
      if (focused === room.name) (focusedLeave ? leave : button).focus();
    }
  }

  /** Draw the active room from scratch: on switch, join and language change. */
  renderRoom(store) {
    const room = store.room(store.active);
    this.emptyState.hidden = room !== null;
    this.scroller.hidden = room === null;
    this.composer.disabled = room === null;
    this.sendButton.disabled = room === null;
    this.roomTitle.textContent = room ? this.roomLabel(room.name) : "";
    this.messages.replaceChildren();
    this.members.replaceChildren();
    this.membersCount.textContent = "";
    this.membersMore.hidden = true;
    this.typing.textContent = "";
    if (!room) return;
    this.messages.setAttribute("aria-label", this.t.t("messages.label", { room: room.name }));
    this.composerLabel.textContent = this.t.t("composer.label", { room: room.name });
    this.composer.placeholder = this.t.t("composer.placeholder", { room: room.name });
    for (const message of room.messages) this.messages.append(this.renderMessage(message, store.me));
    for (const message of room.pending.values()) this.messages.append(this.renderMessage(message, store.me));
    this.renderHistoryState(room);
    this.renderMembers(room, store.me);
    this.renderTyping(room, Date.now());
    this.scrollToBottom();
  }

  roomLabel(name) {
    return this.roomLabels.get(name) ?? `#${name}`;
  }

  renderHistoryState(room) {
    // An empty room says what to do rather than showing a blank pane.
    this.roomEmpty.hidden = room.messages.length > 0 || room.pending.size > 0;
    this.roomEmpty.textContent = this.t.t("rooms.emptyRoom", { room: this.roomLabel(room.name) });
    this.loadOlder.hidden = room.historyDone || room.messages.length === 0;
    this.loadOlder.disabled = room.loadingHistory;
    this.loadOlder.textContent = this.t.t(room.loadingHistory ? "messages.loadingOlder" : "messages.loadOlder");
    this.historyStart.hidden = !room.historyDone;
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

  _fillMessage(item, message, me) {
    item.replaceChildren();
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
    if (mentionsMe) meta.append(el("span", "visually-hidden", this.t.t("messages.mentionsYou")));
    if (message.state === MessageState.PENDING) {
      meta.append(el("span", "status", this.t.t("messages.pending")));
    }

    const body = el("div", "body");
    body.dataset.testid = "message-body";
    if (message.html !== null) {
      body.innerHTML = message.html; // sanitised by the server
    } else {
      body.classList.add("plain"); // newlines kept by CSS, as the server's <br> would
      body.textContent = message.body;
    }
    item.append(meta, body);

    const previews = this._renderPreviews(message.previews);
    if (previews) item.append(previews);

    if (message.state === MessageState.FAILED) {
      const failure = el("p", "failure");
      failure.append(el("span", null, this.t.t("messages.failed", { reason: this.errorText(message.error) })));
      const retry = el("button", "retry", this.t.t("messages.retry"));
      retry.type = "button";
      retry.dataset.testid = "retry";
      retry.dataset.id = message.id;
      retry.dataset.room = message.room;
      retry.setAttribute("aria-label", this.t.t("messages.retryLabel"));
      failure.append(" ", retry);
      item.append(failure);
    }
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
   * pending message it confirms, else by seq among the confirmed ones (pending
   * messages stay at the bottom).
   */
  placeMessage(message, { replaced = null, me, ownAction = false } = {}) {
    this.roomEmpty.hidden = true;
    const stick = ownAction || this.isNearBottom();
    let item = replaced ? this._byId(replaced.id) : null;
    const existing = message.seq !== null ? this._bySeq(message.seq) : null;
    if (existing && item && existing !== item) item.remove();
    if (existing) item = existing;
    if (!item) item = this.renderMessage(message, me);
    else {
      if (message.seq !== null) item.dataset.seq = String(message.seq);
      this._fillMessage(item, message, me);
    }
    if (message.seq === null) {
      if (!item.isConnected) this.messages.append(item);
    } else {
      this._insertBySeq(item, message.seq);
    }
    if (stick) this.scrollToBottom();
    return item;
  }

  refreshMessage(message, me) {
    const item = (message.seq !== null && this._bySeq(message.seq)) || (message.id && this._byId(message.id));
    if (item) this._fillMessage(item, message, me);
  }

  /** Older messages at the top, with the messages on screen kept where they are. */
  prependMessages(messages, me) {
    const before = this.scroller.scrollHeight;
    const top = this.scroller.scrollTop;
    for (const message of [...messages].reverse()) {
      const item = this.renderMessage(message, me);
      this._insertBySeq(item, message.seq);
    }
    this.scroller.scrollTop = top + (this.scroller.scrollHeight - before);
    this._scrollTopSeen = this.scroller.scrollTop;
  }

  _insertBySeq(item, seq) {
    // Walk back from the end: skip pending items and newer confirmed ones.
    let next = null;
    for (let node = this.messages.lastElementChild; node; node = node.previousElementSibling) {
      if (node === item) continue;
      if (node.dataset.seq === undefined || Number(node.dataset.seq) > seq) next = node;
      else break;
    }
    if (item.nextElementSibling === next && item.parentNode === this.messages && next !== null) return;
    this.messages.insertBefore(item, next);
  }

  _bySeq(seq) {
    return this.messages.querySelector(`li[data-seq="${Number(seq)}"]`);
  }

  _byId(id) {
    for (const node of this.messages.children) if (node.dataset.id === id) return node;
    return null;
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

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this._scrollTopSeen = this.scroller.scrollTop;
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

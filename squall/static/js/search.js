// Search: the box in the top bar, its results, and a message's context.
//
// `/` or Ctrl+K (⌘K) focuses the box from anywhere but a text field; Enter
// searches (GET /api/search); ↓/↑ move through the results; Enter or a click
// on one shows it among the messages around it (GET /api/rooms/R/messages
// with `before` and `since`), and "Open in room" switches to its room and
// scrolls to it when the room holds it. Escape goes back a step: from the
// context to the results, from the results to where the reader was.
//
// The server's `highlight` is HTML it escaped, with <mark> around matches.
// It is never assigned to innerHTML: it is parsed inertly and only its text
// and <mark> elements are copied (markedText), so even a server bug could not
// put a message's markup into the page.
//
// The panel owns no session: `host` lends what it needs.
//   host.token()               → the bearer token, or null when signed out
//   host.openRoom(room, seq)   — show this message in its room

import { ApiError, fetchMessages, searchMessages } from "./api.js";

const CONTEXT = 5; // messages shown before and after the one found

function byId(id) {
  return document.getElementById(id);
}

/** The text and <mark>s of server-escaped `html`, as DOM nodes; anything else as text. */
export function markedText(html) {
  const doc = new DOMParser().parseFromString(`<!doctype html><body>${html}`, "text/html");
  const fragment = document.createDocumentFragment();
  for (const node of doc.body.childNodes) {
    if (node.nodeType === Node.ELEMENT_NODE && node.nodeName === "MARK") {
      const mark = document.createElement("mark");
      mark.textContent = node.textContent;
      fragment.append(mark);
    } else {
      fragment.append(document.createTextNode(node.textContent ?? ""));
    }
  }
  return fragment;
}

export class SearchPanel {
  constructor(translator, host) {
    this.t = translator;
    this.host = host;
    this.form = byId("search-form");
    this.input = byId("search-input");
    this.panel = byId("search-panel");
    this.status = byId("search-status");
    this.results = byId("search-results");
    this.more = byId("search-more");
    this.context = byId("search-context");
    this.contextList = byId("search-context-list");
    this.openButton = byId("search-open");
    this.backButton = byId("search-back");
    this.closeButton = byId("search-close");
    this.query = "";
    this.next = null;
    this.shown = null; // the result whose context is open: {room, seq}
    this.returnFocus = null;
    this._asked = 0; // counts searches, so that a late answer for an earlier one is dropped
  }

  bind() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.search(this.input.value);
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown" && !this.panel.hidden) {
        event.preventDefault();
        this.results.querySelector("button")?.focus();
      } else if (event.key === "Escape") {
        event.preventDefault();
        this.close();
      }
    });
    this.results.addEventListener("click", (event) => {
      const button = event.target.closest("button.search-hit");
      if (button) this.showContext(button.dataset.room, Number(button.dataset.seq));
    });
    this.results.addEventListener("keydown", (event) => this.moveFocus(event));
    this.more.addEventListener("click", () => this.loadMore());
    this.backButton.addEventListener("click", () => this.backToResults());
    this.closeButton.addEventListener("click", () => this.close());
    this.openButton.addEventListener("click", () => {
      if (!this.shown) return;
      const { room, seq } = this.shown;
      this.close({ restoreFocus: false });
      this.host.openRoom(room, seq);
    });
    this.panel.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      event.preventDefault();
      event.stopPropagation();
      if (!this.context.hidden) this.backToResults();
      else this.close();
    });
  }

  setTranslator(translator) {
    this.t = translator;
  }

  /** The global shortcut: `/` (outside text fields) or Ctrl/⌘+K focuses the box. */
  onShortcut(event) {
    const typing = event.target instanceof HTMLElement
      && (event.target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName));
    const slash = event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey;
    const ctrlK = (event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "k";
    if (!slash && !ctrlK) return false;
    event.preventDefault();
    this.returnFocus = document.activeElement;
    this.input.focus();
    this.input.select();
    return true;
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  async search(text) {
    const query = text.trim();
    if (!query) return;
    this.query = query;
    this.next = null;
    this.results.replaceChildren();
    this.showPanel();
    await this.fetchPage(null);
  }

  loadMore() {
    if (this.next) this.fetchPage(this.next);
  }

  async fetchPage(cursor) {
    const token = this.host.token();
    if (!token) return;
    const asked = ++this._asked;
    this.setStatus(this.t.t("search.searching"));
    this.more.hidden = true;
    try {
      const page = await searchMessages(token, this.query, { cursor });
      if (asked !== this._asked) return;
      const first = this.results.children.length;
      for (const hit of page.results) this.results.append(this.renderHit(hit));
      this.next = page.next;
      this.more.hidden = !page.next;
      const count = this.results.children.length;
      this.setStatus(count
        ? this.t.t(page.next ? "search.countMore" : "search.count", { count, query: this.query })
        : this.t.t("search.none", { query: this.query }));
      if (cursor && this.results.children[first]) this.results.children[first].querySelector("button").focus();
    } catch (error) {
      if (asked !== this._asked) return;
      this.setStatus(this.errorText(error), true);
    }
  }

  errorText(error) {
    if (error instanceof ApiError) {
      const key = `search.error.${error.code}`;
      const text = this.t.t(key);
      return text === key ? this.t.t("search.error", { reason: error.reason || error.code }) : text;
    }
    return this.t.t("search.error", { reason: String(error.message ?? error) });
  }

  renderHit(hit) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "search-hit";
    button.dataset.room = hit.room;
    button.dataset.seq = String(hit.seq);
    button.dataset.testid = "search-hit";
    const head = document.createElement("span");
    head.className = "search-hit-head";
    const room = document.createElement("span");
    room.className = "search-hit-room";
    room.textContent = `#${hit.room}`;
    const nick = document.createElement("span");
    nick.className = "search-hit-nick";
    nick.textContent = hit.nick;
    const time = document.createElement("time");
    time.dateTime = new Date(hit.ts).toISOString();
    time.textContent = this.formatDate(hit.ts);
    head.append(room, " ", nick, " ", time);
    const text = document.createElement("span");
    text.className = "search-hit-text";
    text.append(markedText(hit.highlight));
    button.append(head, text);
    item.append(button);
    return item;
  }

  formatDate(ts) {
    return new Intl.DateTimeFormat(this.t.lang, { dateStyle: "medium", timeStyle: "short" }).format(new Date(ts));
  }

  moveFocus(event) {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const buttons = [...this.results.querySelectorAll("button.search-hit")];
    const index = buttons.indexOf(document.activeElement);
    if (index < 0) return;
    event.preventDefault();
    if (event.key === "ArrowUp" && index === 0) this.input.focus();
    else buttons[Math.min(buttons.length - 1, index + (event.key === "ArrowDown" ? 1 : -1))].focus();
  }

  /** The found message among the CONTEXT messages before and after it. */
  async showContext(room, seq) {
    const token = this.host.token();
    if (!token) return;
    this.shown = { room, seq };
    this.contextList.replaceChildren();
    this.context.hidden = false;
    this.results.hidden = true;
    this.more.hidden = true;
    this.setStatus(this.t.t("search.loadingContext", { room }));
    try {
      const [before, after] = await Promise.all([
        fetchMessages(token, room, { before: seq + 1, limit: CONTEXT + 1 }),
        fetchMessages(token, room, { since: seq, wait: 0, limit: CONTEXT }),
      ]);
      if (this.shown?.room !== room || this.shown?.seq !== seq) return;
      const seen = new Set();
      for (const message of [...before.messages, ...after.messages]) {
        if (seen.has(message.seq)) continue;
        seen.add(message.seq);
        this.contextList.append(this.renderContextMessage(message, message.seq === seq));
      }
      this.setStatus(this.t.t("search.context", { room }));
      const target = this.contextList.querySelector("[aria-current]");
      target?.scrollIntoView({ block: "center" });
      this.openButton.focus();
    } catch (error) {
      this.setStatus(this.errorText(error), true);
      this.backButton.focus();
    }
  }

  renderContextMessage(message, isTarget) {
    const item = document.createElement("li");
    item.className = "search-context-message";
    item.dataset.seq = String(message.seq);
    if (isTarget) {
      item.setAttribute("aria-current", "true");
      item.classList.add("search-target");
    }
    const head = document.createElement("span");
    head.className = "search-hit-head";
    const nick = document.createElement("span");
    nick.className = "search-hit-nick";
    nick.textContent = message.nick;
    const time = document.createElement("time");
    time.dateTime = new Date(message.ts).toISOString();
    time.textContent = this.formatDate(message.ts);
    head.append(nick, " ", time);
    const text = document.createElement("span");
    text.className = "search-hit-text";
    text.textContent = message.body;
    item.append(head, text);
    return item;
  }

  backToResults() {
    const shown = this.shown;
    this.shown = null;
    this.context.hidden = true;
    this.results.hidden = false;
    this.more.hidden = !this.next;
    const count = this.results.children.length;
    this.setStatus(count
      ? this.t.t(this.next ? "search.countMore" : "search.count", { count, query: this.query })
      : this.t.t("search.none", { query: this.query }));
    const button = shown && this.results.querySelector(
      `button.search-hit[data-room="${CSS.escape(shown.room)}"][data-seq="${Number(shown.seq)}"]`,
    );
    (button ?? this.input).focus();
  }

  showPanel() {
    this.panel.hidden = false;
    this.context.hidden = true;
    this.results.hidden = false;
    this.shown = null;
  }

  close({ restoreFocus = true } = {}) {
    this._asked++;
    this.panel.hidden = true;
    this.shown = null;
    const back = this.returnFocus;
    this.returnFocus = null;
    if (!restoreFocus) return;
    if (back && back !== document.body && document.contains(back)) back.focus();
    else byId("composer")?.focus();
  }

  /** Signed out: forget the query and what it found. */
  reset() {
    this.close({ restoreFocus: false });
    this.input.value = "";
    this.query = "";
    this.next = null;
    this.results.replaceChildren();
    this.contextList.replaceChildren();
  }

  setStatus(text, isError = false) {
    this.status.textContent = text;
    this.status.classList.toggle("error", isError);
  }
}

// Rooms you can find: the room browser (a dialog with the public directory,
// search and "create a room"), the list of direct messages named by the other
// people, and starting a new one. Text from the server goes in by textContent.

import { ApiError, createRoom, fetchDms, fetchRooms, startDm } from "./api.js";
import { normaliseRoom } from "./store.js";
import { showFieldError } from "./ui.js";

const SEARCH_DELAY_MS = 250;
const PAGE = 50;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

export class RoomsPanel {
  /**
   * `app` gives `token()`, `open(room)` (join it and show it) and `labelsChanged()`
   * (DM names changed: draw the room list again).
   */
  constructor(translator, app) {
    this.t = translator;
    this.app = app;
    const byId = (id) => document.getElementById(id);
    this.dialog = byId("room-browser");
    this.opener = byId("browse-button");
    this.search = byId("room-search");
    this.directory = byId("directory");
    this.status = byId("directory-status");
    this.more = byId("directory-more");
    this.createForm = byId("create-room-form");
    this.createName = byId("create-name");
    this.createTopic = byId("create-topic");
    this.createPrivate = byId("create-private");
    this.createError = byId("create-error");
    this.dmList = byId("dm-list");
    this.dmForm = byId("dm-form");
    this.dmInput = byId("dm-input");
    this.dmError = byId("dm-error");
    this.next = null;
    this.searchTimer = null;
    this.loading = null;
    this.dms = [];
    /** DM room name → "alice, bob": what the room list and title show instead of #dm-…. */
    this.labels = new Map();
  }

  setTranslator(translator) {
    this.t = translator;
    this.renderDms();
  }

  get isOpen() {
    return this.dialog.open;
  }

  bind() {
    this.opener.addEventListener("click", () => this.open());
    document.getElementById("browser-close").addEventListener("click", () => this.dialog.close());
    this.dialog.addEventListener("close", () => this.opener.focus());
    this.search.addEventListener("input", () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.load(false), SEARCH_DELAY_MS);
    });
    this.search.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault();
      clearTimeout(this.searchTimer);
      this.load(false);
    });
    this.more.addEventListener("click", () => this.load(true));
    this.directory.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-room]");
      if (!button) return;
      this.dialog.close();
      this.app.open(button.dataset.room);
    });
    this.createForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.create();
    });
    this.dmForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.startDm();
    });
    this.dmList.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-room]");
      if (button) this.app.open(button.dataset.room);
    });
  }

  open() {
    showFieldError(this.createName, this.createError, "");
    this.dialog.showModal();
    this.search.focus();
    this.load(false);
  }

  close() {
    if (this.isOpen) this.dialog.close();
  }

  /** The first page for the search box's text, or (`more`) the next page. */
  async load(more) {
    const token = this.app.token();
    if (!token) return;
    const q = this.search.value.trim().toLowerCase().replace(/[^a-z0-9_-]/g, "");
    const cursor = more ? this.next : null;
    const ticket = Symbol("load");
    this.loading = ticket;
    this.status.textContent = this.t.t("browser.loading");
    try {
      const page = await fetchRooms(token, { q, cursor, limit: PAGE });
      if (this.loading !== ticket) return; // a newer search answered first, or will
      if (!more) this.directory.replaceChildren();
      for (const room of page.rooms) this.directory.append(this.renderRoom(room));
      this.next = page.next;
      this.more.hidden = !page.next;
      this.status.textContent = this.directory.children.length ? "" : this.t.t("browser.none");
    } catch (error) {
      if (this.loading === ticket) this.status.textContent = this.t.t("error.network");
    }
  }

  renderRoom(room) {
    const item = el("li");
    item.dataset.testid = "directory-room";
    const join = el("button", "directory-join", `#${room.name}`);
    join.type = "button";
    join.dataset.room = room.name;
    join.setAttribute("aria-label", this.t.t("browser.join", { room: room.name }));
    item.append(join, el("span", "directory-topic", room.topic),
      el("span", "directory-count", this.t.t("browser.members", { count: room.members })));
    return item;
  }

  async create() {
    const name = normaliseRoom(this.createName.value);
    if (!name || name.startsWith("dm-")) {
      showFieldError(this.createName, this.createError, this.t.t("rooms.join.invalid"));
      this.createName.focus();
      return;
    }
    try {
      await createRoom(this.app.token(), name, this.createTopic.value.trim(), this.createPrivate.checked);
    } catch (error) {
      const text = !(error instanceof ApiError) ? this.t.t("error.network")
        : error.code === "room_exists" ? this.t.t("browser.create.exists")
        : error.code === "not_registered" ? this.t.t("browser.create.needsAccount")
        : this.t.t("browser.create.failed", { reason: error.reason || error.code });
      showFieldError(this.createName, this.createError, text);
      this.createName.focus();
      return;
    }
    this.createName.value = "";
    this.createTopic.value = "";
    this.createPrivate.checked = false;
    this.dialog.close();
    this.app.open(name);
  }

  async refreshDms() {
    const token = this.app.token();
    if (!token) return;
    try {
      this.dms = (await fetchDms(token)).dms;
    } catch {
      return; // offline: the list stays as it was
    }
    this.labels = new Map(this.dms.map((dm) => [dm.room, dm.nicks.join(", ")]));
    this.renderDms();
    this.app.labelsChanged();
  }

  renderDms() {
    this.dmList.replaceChildren();
    if (!this.dms.length) {
      this.dmList.append(el("li", "hint", this.t.t("dms.none")));
      return;
    }
    for (const dm of this.dms) {
      const item = el("li", "room");
      item.dataset.testid = "dm";
      const button = el("button", "room-button", dm.nicks.join(", "));
      button.type = "button";
      button.dataset.room = dm.room;
      item.append(button);
      this.dmList.append(item);
    }
  }

  async startDm() {
    const nicks = this.dmInput.value.split(/[,\s]+/).map((n) => n.replace(/^@/, "")).filter(Boolean);
    if (!nicks.length) {
      this.dmInput.focus();
      return;
    }
    let answer;
    try {
      answer = await startDm(this.app.token(), nicks);
    } catch (error) {
      const reason = error instanceof ApiError ? (error.reason || error.code) : this.t.t("error.network");
      showFieldError(this.dmInput, this.dmError, this.t.t("dms.new.failed", { reason }));
      this.dmInput.focus();
      return;
    }
    showFieldError(this.dmInput, this.dmError, "");
    this.dmInput.value = "";
    this.labels.set(answer.room, answer.nicks.join(", "));
    await this.refreshDms();
    this.app.open(answer.room);
  }
}

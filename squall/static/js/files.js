// Files on the page: the composer's tray of uploads (button, drag and drop,
// paste), each with its progress; attachments drawn in messages (image
// thumbnails that open the viewer, other files as download chips); the viewer.
//
// An upload starts as soon as a file is chosen; the message goes with the ids
// of those finished (sending waits while one is still on its way).

import { uploadFile } from "./api.js";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** `url` if it is one of our own file URLs (`/files/...`), else null. */
export function fileUrl(url) {
  return typeof url === "string" && /^\/files\/(thumbs\/)?[0-9a-f]{64}(\.[a-z0-9]{1,5})?$/.test(url) ? url : null;
}

export function formatSize(bytes, lang) {
  const units = ["B", "KB", "MB", "GB"];
  let value = Number(bytes) || 0;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = new Intl.NumberFormat(lang, { maximumFractionDigits: unit ? 1 : 0 }).format(value);
  return `${shown} ${units[unit]}`;
}

/** The attachments of a message, as elements (or null when it has none). */
export function renderAttachments(attachments, t) {
  if (!Array.isArray(attachments) || !attachments.length) return null;
  const box = el("div", "attachments");
  for (const file of attachments) {
    if (!file || typeof file !== "object") continue;
    const url = fileUrl(file.url);
    if (!url) continue;
    const name = String(file.name ?? "file");
    const thumb = fileUrl(file.thumb);
    if (String(file.type).startsWith("image/") && thumb) {
      const button = el("button", "attachment-image");
      button.type = "button";
      button.dataset.testid = "attachment-image";
      button.dataset.url = url;
      button.dataset.name = name;
      button.setAttribute("aria-label", t.t("files.open", { name }));
      const img = el("img");
      img.src = thumb;
      img.alt = name;
      img.loading = "lazy";
      if (file.width && file.height) {
        // Room kept before it loads, so the list does not jump.
        const scale = Math.min(1, 320 / Math.max(file.width, file.height));
        img.width = Math.round(file.width * scale);
        img.height = Math.round(file.height * scale);
      }
      button.append(img);
      box.append(button);
    } else {
      const link = el("a", "attachment-file");
      link.href = url;
      link.download = name;
      link.dataset.testid = "attachment-file";
      link.append(el("span", "attachment-icon", "📄"), el("span", "attachment-name", name),
        el("span", "attachment-size", formatSize(file.size, t.lang)));
      link.setAttribute("aria-label", t.t("files.download", { name, size: formatSize(file.size, t.lang) }));
      box.append(link);
    }
  }
  return box.childElementCount ? box : null;
}

/** The composer's uploads: start them, show them, hand their ids to a send. */
export class Uploads {
  constructor({ tray, input, t, token, onChange, announce }) {
    this.tray = tray;
    this.input = input;
    this.t = t;
    this.token = token; // () => the session token
    this.onChange = onChange;
    this.announce = announce;
    this.items = []; // {key, file, state: uploading|ready|failed, sent, total, result, error, abort}
    this._next = 0;
  }

  setTranslator(t) {
    this.t = t;
    this.render();
  }

  get busy() {
    return this.items.some((item) => item.state === "uploading");
  }

  /** The finished uploads' attachment objects, in the order they were added;
   * the same content twice is one file (the server answers it with one id). */
  get ready() {
    const byId = new Map();
    for (const item of this.items) {
      if (item.state === "ready" && !byId.has(item.result.id)) byId.set(item.result.id, item.result);
    }
    return [...byId.values()];
  }

  add(files) {
    for (const file of files) {
      if (!file) continue;
      const item = { key: ++this._next, file, state: "uploading", sent: 0, total: file.size, result: null,
        error: null, abort: null };
      this.items.push(item);
      const { promise, abort } = uploadFile(this.token(), file, (sent, total) => {
        item.sent = sent;
        item.total = total;
        this._renderItem(item);
      });
      item.abort = abort;
      promise.then((result) => {
        item.state = "ready";
        item.result = result;
        this.announce(this.t.t("files.uploaded", { name: result.name }));
      }, (error) => {
        if (error.code === "aborted") return;
        item.state = "failed";
        item.error = error;
        this.announce(this.t.t("files.failed", { name: file.name, reason: this._errorText(error) }));
      }).finally(() => {
        this.render();
        this.onChange();
      });
    }
    this.render();
    this.onChange();
  }

  remove(key) {
    const index = this.items.findIndex((item) => item.key === key);
    if (index < 0) return;
    const [item] = this.items.splice(index, 1);
    if (item.state === "uploading") item.abort?.();
    this.render();
    this.onChange();
  }

  /** After a send: the tray starts empty again. */
  clear() {
    for (const item of this.items) if (item.state === "uploading") item.abort?.();
    this.items = [];
    this.render();
    this.onChange();
  }

  _errorText(error) {
    const key = `error.${error.code}`;
    const text = this.t.t(key);
    return text === key ? this.t.t("error.unknown", { code: error.code }) : text;
  }

  render() {
    this.tray.replaceChildren(...this.items.map((item) => this._itemElement(item)));
    this.tray.hidden = this.items.length === 0;
  }

  _renderItem(item) {
    const old = this.tray.querySelector(`[data-key="${item.key}"]`);
    if (old) old.replaceWith(this._itemElement(item));
  }

  _itemElement(item) {
    const chip = el("li", `upload ${item.state}`);
    chip.dataset.key = String(item.key);
    chip.dataset.testid = "upload";
    chip.dataset.state = item.state;
    chip.append(el("span", "upload-name", item.file.name || "file"));
    if (item.state === "uploading") {
      const progress = el("progress", "upload-progress");
      progress.max = item.total || 1;
      progress.value = item.sent;
      progress.setAttribute("aria-label", this.t.t("files.progress", { name: item.file.name }));
      chip.append(progress);
    } else if (item.state === "failed") {
      const error = el("span", "upload-error", this._errorText(item.error));
      error.dataset.testid = "upload-error";
      chip.append(error);
    } else {
      chip.append(el("span", "upload-size", formatSize(item.result.size, this.t.lang)));
    }
    const remove = el("button", "upload-remove", "×");
    remove.type = "button";
    remove.dataset.key = String(item.key);
    remove.dataset.testid = "upload-remove";
    remove.setAttribute("aria-label", this.t.t("files.remove", { name: item.file.name }));
    chip.append(remove);
    return chip;
  }
}

/** The image viewer: a modal dialog; Escape (the dialog's own cancel) closes it. */
export class Viewer {
  constructor(dialog, t) {
    this.dialog = dialog;
    this.t = t;
    this.image = dialog.querySelector("img");
    this.caption = dialog.querySelector(".viewer-name");
    this.download = dialog.querySelector("a.viewer-download");
    this._opener = null;
    dialog.querySelector(".viewer-close").addEventListener("click", () => this.close());
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) this.close(); // the backdrop
    });
    dialog.addEventListener("close", () => {
      this.image.removeAttribute("src");
      this._opener?.focus();
      this._opener = null;
    });
  }

  get isOpen() {
    return this.dialog.open;
  }

  open(url, name, opener) {
    this._opener = opener ?? null;
    this.image.src = url;
    this.image.alt = name;
    this.caption.textContent = name;
    this.download.href = url;
    this.download.download = name;
    this.dialog.showModal();
    this.dialog.querySelector(".viewer-close").focus();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }
}

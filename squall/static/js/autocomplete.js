// Completion in the composer: `@` + letters offers nicks (and `@room`, which the
// server turns into a mention of everyone in the room), `:` + two letters offers
// emoji by shortcode. An ARIA combobox: the composer keeps focus, ↑/↓ move through
// the list, Enter or Tab takes the choice, Escape closes the list.
//
// `findToken` and `suggest` are pure; `Completer` binds them to the DOM.

const MAX_SUGGESTIONS = 8;
const TOKEN = /(^|\s)([@:])([\p{L}\p{N}_.+-]{0,32})$/u;

// The shortcodes people type most (GitHub/Slack names).
export const EMOJI = Object.freeze({
  "+1": "👍", "-1": "👎", "100": "💯", "clap": "👏", "confused": "😕", "cry": "😢",
  "eyes": "👀", "fire": "🔥", "grin": "😁", "grinning": "😀", "heart": "❤️", "heart_eyes": "😍",
  "hugs": "🤗", "joy": "😂", "laughing": "😆", "ok_hand": "👌", "party": "🥳", "pray": "🙏",
  "raised_hands": "🙌", "rocket": "🚀", "rofl": "🤣", "sad": "😞", "scream": "😱", "see_no_evil": "🙈",
  "slightly_smiling_face": "🙂", "smile": "😄", "smiley": "😃", "sob": "😭", "sparkles": "✨",
  "star": "⭐", "sunglasses": "😎", "tada": "🎉", "thinking": "🤔", "thumbsdown": "👎",
  "thumbsup": "👍", "upside_down": "🙃", "wave": "👋", "white_check_mark": "✅", "wink": "😉",
  "x": "❌", "warning": "⚠️", "zap": "⚡", "coffee": "☕", "bug": "🐛", "muscle": "💪",
  "point_up": "☝️", "question": "❓", "exclamation": "❗", "skull": "💀", "shrug": "🤷",
});

/** The `@…` or `:…` being typed just before the caret, or null. */
export function findToken(text, caret) {
  const match = TOKEN.exec(text.slice(0, caret));
  if (!match) return null;
  const [, , sigil, query] = match;
  if (sigil === ":" && query.length < 2) return null; // "a: b" or a time is not a shortcode
  return { sigil, query, start: caret - query.length - 1, end: caret };
}

/**
 * What to offer for `token`: `[{label, insert}]`, prefix matches first. `nicks`
 * in preference order (online members, then recent authors); `me` is left out.
 */
export function suggest(token, { nicks = [], me = "" } = {}) {
  const query = token.query.toLowerCase();
  const ranked = (names) => {
    const prefix = [];
    const inside = [];
    for (const name of names) {
      const folded = name.toLowerCase();
      if (folded.startsWith(query)) prefix.push(name);
      else if (query && folded.includes(query)) inside.push(name);
    }
    return [...prefix, ...inside];
  };
  if (token.sigil === "@") {
    const seen = new Set([me.toLowerCase()]);
    const unique = [];
    for (const nick of [...nicks, "room"]) {
      const key = nick.toLowerCase();
      if (!seen.has(key)) {
        seen.add(key);
        unique.push(nick);
      }
    }
    return ranked(unique).slice(0, MAX_SUGGESTIONS).map((nick) => ({ label: `@${nick}`, insert: `@${nick} ` }));
  }
  return ranked(Object.keys(EMOJI)).slice(0, MAX_SUGGESTIONS)
    .map((name) => ({ label: `${EMOJI[name]} :${name}:`, insert: `${EMOJI[name]} ` }));
}

export class Completer {
  /** `nicks()` returns the nicks to offer now, `me()` who is typing. */
  constructor(input, list, { nicks, me }) {
    this.input = input;
    this.list = list;
    this.nicks = nicks;
    this.me = me;
    this.token = null;
    this.items = [];
    this.index = 0;
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", list.id);
    input.setAttribute("aria-expanded", "false");
  }

  bind() {
    // Registered before the page's own keydown handler, so that Enter and Tab pick
    // a suggestion instead of sending while the list is open.
    this.input.addEventListener("keydown", (event) => this.onKey(event));
    this.input.addEventListener("input", () => this.update());
    this.input.addEventListener("click", () => this.update());
    this.input.addEventListener("blur", () => this.close());
    // mousedown, not click: the composer must not lose focus first.
    this.list.addEventListener("mousedown", (event) => {
      const option = event.target.closest("[role=option]");
      if (!option) return;
      event.preventDefault();
      this.accept(Number(option.dataset.index));
    });
  }

  get isOpen() {
    return this.items.length > 0;
  }

  update() {
    const token = findToken(this.input.value, this.input.selectionStart ?? this.input.value.length);
    this.token = token;
    this.items = token ? suggest(token, { nicks: this.nicks(), me: this.me() }) : [];
    // A name typed out in full needs no list: Enter then sends, as it would without one.
    const typed = token ? `${token.sigil}${token.query}`.toLowerCase() : "";
    if (this.items.some((item) => item.insert.trim().toLowerCase() === typed)) this.items = [];
    this.index = 0;
    this.render();
  }

  onKey(event) {
    if (!this.isOpen || event.isComposing) return;
    const step = { ArrowDown: 1, ArrowUp: -1 }[event.key];
    if (step) {
      this.index = (this.index + step + this.items.length) % this.items.length;
      this.render();
    } else if (event.key === "Enter" || event.key === "Tab") {
      this.accept(this.index);
    } else if (event.key === "Escape") {
      this.close();
    } else {
      return;
    }
    event.preventDefault();
    event.stopImmediatePropagation();
  }

  accept(index) {
    const item = this.items[index];
    const token = this.token;
    if (!item || !token) return;
    const value = this.input.value;
    this.input.value = value.slice(0, token.start) + item.insert + value.slice(token.end);
    const caret = token.start + item.insert.length;
    this.input.setSelectionRange(caret, caret);
    this.close();
    this.input.dispatchEvent(new Event("input", { bubbles: true }));
  }

  close() {
    if (!this.items.length && this.list.hidden) return;
    this.items = [];
    this.token = null;
    this.render();
  }

  render() {
    this.list.replaceChildren();
    this.list.hidden = !this.items.length;
    this.input.setAttribute("aria-expanded", String(this.items.length > 0));
    if (!this.items.length) {
      this.input.removeAttribute("aria-activedescendant");
      return;
    }
    this.items.forEach((item, index) => {
      const option = document.createElement("li");
      option.id = `${this.list.id}-${index}`;
      option.setAttribute("role", "option");
      option.dataset.index = String(index);
      option.dataset.testid = "suggestion";
      option.setAttribute("aria-selected", String(index === this.index));
      option.textContent = item.label;
      this.list.append(option);
    });
    this.input.setAttribute("aria-activedescendant", `${this.list.id}-${this.index}`);
  }
}

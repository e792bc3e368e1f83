// Message catalogues: one JSON file per language under ../i18n/, and nothing
// the page shows comes from anywhere else.
//
// The language is the saved choice of the switch if there is one, else the
// first of the browser's languages that we have a catalogue for, else English.
// Catalogue URLs come from <meta name="squall-catalogue-LANG"> so they carry
// Tornado's static_url version and can be cached for long.

export const LANGUAGES = ["en", "zh-CN"];
export const DEFAULT_LANGUAGE = "en";
const STORAGE_KEY = "squall.lang";

/** Pick one of LANGUAGES for a list of BCP 47 tags, best first. */
export function negotiateLanguage(preferred, available = LANGUAGES) {
  for (const tag of preferred) {
    const lower = String(tag).toLowerCase();
    const exact = available.find((lang) => lang.toLowerCase() === lower);
    if (exact) return exact;
    // zh, zh-Hans, zh-SG all read Simplified Chinese; zh-TW/zh-HK/zh-Hant don't,
    // but Simplified is still closer for them than English.
    const primary = lower.split("-")[0];
    const partial = available.find((lang) => lang.toLowerCase().split("-")[0] === primary);
    if (partial) return partial;
  }
  return DEFAULT_LANGUAGE;
}

export function savedLanguage(storage = globalThis.localStorage) {
  try {
    const lang = storage.getItem(STORAGE_KEY);
    return LANGUAGES.includes(lang) ? lang : null;
  } catch {
    return null;
  }
}

export function saveLanguage(lang, storage = globalThis.localStorage) {
  try {
    storage.setItem(STORAGE_KEY, lang);
  } catch {
    // Private mode or storage disabled: the choice lasts until reload.
  }
}

function catalogueUrl(lang) {
  const meta = document.querySelector(`meta[name="squall-catalogue-${lang}"]`);
  return meta ? meta.content : new URL(`../i18n/${lang}.json`, import.meta.url).href;
}

/** Fill `{name}` placeholders; unknown names stay as they are. */
export function format(template, params = {}) {
  return template.replace(/\{(\w+)\}/g, (whole, name) =>
    Object.hasOwn(params, name) ? String(params[name]) : whole,
  );
}

export class Translator {
  constructor(lang, messages, fallback) {
    this.lang = lang;
    this._messages = messages;
    this._fallback = fallback;
  }

  /** The string for `key`, formatted; the key itself if no catalogue has it. */
  t(key, params) {
    const template = this._messages[key] ?? this._fallback[key] ?? key;
    return format(template, params);
  }

  /** Apply data-i18n, data-i18n-placeholder, data-i18n-aria-label and data-i18n-title under `root`. */
  apply(root = document) {
    for (const el of root.querySelectorAll("[data-i18n]")) {
      el.textContent = this.t(el.dataset.i18n);
    }
    for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
      el.placeholder = this.t(el.dataset.i18nPlaceholder);
    }
    for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
      el.setAttribute("aria-label", this.t(el.dataset.i18nAriaLabel));
    }
    for (const el of root.querySelectorAll("[data-i18n-title]")) {
      el.title = this.t(el.dataset.i18nTitle);
    }
    document.documentElement.lang = this.lang;
  }
}

const cache = new Map();

async function fetchCatalogue(lang) {
  if (!cache.has(lang)) {
    cache.set(
      lang,
      fetch(catalogueUrl(lang), { credentials: "same-origin" }).then((response) => {
        if (!response.ok) throw new Error(`catalogue ${lang}: HTTP ${response.status}`);
        return response.json();
      }),
    );
  }
  return cache.get(lang);
}

/** Load the catalogue for `lang` (and English as the fallback for missing keys). */
export async function loadTranslator(lang) {
  const fallback = await fetchCatalogue(DEFAULT_LANGUAGE);
  const messages = lang === DEFAULT_LANGUAGE ? fallback : await fetchCatalogue(lang);
  return new Translator(lang, messages, fallback);
}

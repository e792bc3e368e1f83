// The HTTP half of the protocol: sessions and accounts, history, long-poll,
// sends, typing, members, settings. Every call takes the bearer token, which a
// cross-site page cannot send, so the server asks no XSRF token for it; writes
// still carry the `_xsrf` cookie's value in X-XSRFToken when there is one, so
// that they also pass where the server authenticates by the session cookie.

/** A 4xx/5xx answer, carrying the server's `{code, reason}` when it sent one. */
export class ApiError extends Error {
  constructor(status, code, reason, retryAfter = null) {
    super(`HTTP ${status}: ${code}: ${reason}`);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.reason = reason;
    this.retryAfter = retryAfter; // seconds, with `rate_limited`
  }

  get unauthorized() {
    return this.status === 401;
  }
}

function roomPath(room, tail) {
  return `/api/rooms/${encodeURIComponent(room)}/${tail}`;
}

async function request(method, path, { token, body, query, signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
  }
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const xsrf = method === "GET" ? null : xsrfCookie();
  if (xsrf) headers["X-XSRFToken"] = xsrf;
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    credentials: "same-origin",
    cache: "no-store",
  });
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    // A proxy's HTML error page; the status says enough.
  }
  if (!response.ok) {
    const retryAfter = Number(data?.retry_after ?? response.headers.get("Retry-After"));
    throw new ApiError(
      response.status, data?.code ?? `http_${response.status}`, data?.reason ?? "",
      Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null,
    );
  }
  return data;
}

function xsrfCookie() {
  for (const part of document.cookie.split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === "_xsrf") return decodeURIComponent(value.join("="));
  }
  return null;
}

/**
 * POST /api/session → `{nick, token, registered}`. Without `password` a guest
 * session (ApiError `bad_nick`, `nick_taken`, `guests_disabled`, `rate_limited`);
 * with it, signing in to an account (ApiError 401 `bad_credentials`).
 */
export function createSession(nick, password) {
  const body = password === undefined ? { nick } : { nick, password };
  return request("POST", "/api/session", { body });
}

/**
 * POST /api/account → `{nick, token, registered: true}`. ApiError `nick_taken`,
 * `weak_password`, `bad_nick` or `rate_limited` says why not.
 */
export function createAccount(nick, password) {
  return request("POST", "/api/account", { body: { nick, password } });
}

/** POST /api/logout: the server forgets this token (and clears the cookie). */
export function logout(token) {
  return request("POST", "/api/logout", { token });
}

/** POST /api/account/password → `{nick, token}`; the account's other sessions end. */
export function changePassword(token, password, newPassword) {
  return request("POST", "/api/account/password", { token, body: { password, new_password: newPassword } });
}

/** GET /api/me → `{nick, email, registered}`. */
export function fetchMe(token) {
  return request("GET", "/api/me", { token });
}

/** PATCH /api/me → `{nick, email}`; `email` null removes the address. ApiError `bad_email`. */
export function saveEmail(token, email) {
  return request("PATCH", "/api/me", { token, body: { email } });
}

/**
 * GET /api/rooms/R/messages → `{messages, seq}`.
 * Give `since` to wait (up to `wait` seconds) for newer messages, `before` to page
 * backwards, or neither for the newest `limit` messages.
 */
export function fetchMessages(token, room, { since, before, wait, limit, signal } = {}) {
  return request("GET", roomPath(room, "messages"), {
    token,
    signal,
    query: { since, before, wait, limit },
  });
}

/**
 * GET /api/search → `{results, next, terms}`: messages holding every word of `q`,
 * best first; `cursor` is the `next` of the page before. ApiError `bad_query`,
 * `bad_cursor`, `rate_limited` say why not.
 */
export function searchMessages(token, q, { room, cursor, limit, signal } = {}) {
  return request("GET", "/api/search", { token, signal, query: { q, room, cursor, limit } });
}

/**
 * POST /api/rooms/R/messages → `{id, seq}`; ApiError carries the send error code.
 * `attachments` are file ids; `extra` makes it a reply (`{reply_to}`) or a change
 * (`{type, target, emoji}`).
 */
export function postMessage(token, room, body, id, { signal, attachments = [], extra = null } = {}) {
  const payload = { body, id, ...(attachments.length ? { attachments } : {}), ...(extra ?? {}) };
  return request("POST", roomPath(room, "messages"), { token, body: payload, signal });
}

/**
 * POST /api/files?name=N with the file as the body → its attachment object
 * (`{id, name, type, size, url, thumb, width, height}`). XMLHttpRequest, not
 * fetch: only it reports upload progress (`onProgress(sent, total)`).
 * Returns `{promise, abort}`; the promise rejects with ApiError.
 */
export function uploadFile(token, file, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    const url = new URL("/api/files", location.origin);
    url.searchParams.set("name", file.name || "file");
    xhr.open("POST", url);
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => onProgress?.(event.loaded, event.total || file.size);
    xhr.onload = () => {
      const data = xhr.response;
      if (xhr.status === 201 && data) resolve(data);
      else reject(new ApiError(xhr.status, data?.code ?? `http_${xhr.status}`, data?.reason ?? "", null));
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "", null));
    xhr.onabort = () => reject(new ApiError(0, "aborted", "", null));
    xhr.send(file);
  });
  return { promise, abort: () => xhr.abort() };
}

export function postTyping(token, room) {
  return request("POST", roomPath(room, "typing"), { token });
}

/**
 * GET /api/rooms/R/members → `{room, count, members, next}`: a page of who is online,
 * from `cursor` (the `next` of the page before; none for the first).
 */
export function fetchMembers(token, room, { cursor = null, signal } = {}) {
  return request("GET", roomPath(room, "members"), { token, query: { cursor }, signal });
}

export function eventsUrl(token, room, since) {
  const url = new URL(roomPath(room, "events"), location.origin);
  if (since !== null && since !== undefined) url.searchParams.set("since", String(since));
  url.searchParams.set("token", token);
  return url.href;
}

export function websocketUrl(token) {
  const url = new URL("/ws", location.origin);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", token);
  return url.href;
}

/** GET /api/rooms → `{rooms: [{name, topic, private, members, last_activity}], next}`. */
export function fetchRooms(token, { q = "", cursor = null, limit = 50, signal } = {}) {
  return request("GET", "/api/rooms", { token, query: { q: q || undefined, cursor, limit }, signal });
}

/** POST /api/rooms → `{name, topic, private, owner}`; ApiError `room_exists`, `bad_room`, `not_registered`. */
export function createRoom(token, name, topic, isPrivate) {
  return request("POST", "/api/rooms", { token, body: { name, topic, private: isPrivate } });
}

/** GET /api/dms → `{dms: [{room, nicks, last_activity}]}`. */
export function fetchDms(token) {
  return request("GET", "/api/dms", { token });
}

/** POST /api/dms → `{room, nicks}`; ApiError `unknown_user`, `not_registered`, `bad_field`. */
export function startDm(token, nicks) {
  return request("POST", "/api/dms", { token, body: { nicks } });
}

/** POST /api/rooms/R/seen → `{room, seq}`: read up to `seq` here; the user's other devices are told. */
export function postSeen(token, room, seq) {
  return request("POST", roomPath(room, "seen"), { token, body: { seq } });
}

/** GET /api/seen → `{rooms: {room: seq}}`: the user's read positions, the same on every device. */
export function fetchSeen(token, { signal } = {}) {
  return request("GET", "/api/seen", { token, signal });
}

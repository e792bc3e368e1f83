// The HTTP half of the protocol: sessions, history, long-poll, sends, typing,
// members. Every call takes the bearer token, so no XSRF token is needed.

/** A 4xx/5xx answer, carrying the server's `{code, reason}` when it sent one. */
export class ApiError extends Error {
  constructor(status, code, reason) {
    super(`HTTP ${status}: ${code}: ${reason}`);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.reason = reason;
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
    throw new ApiError(response.status, data?.code ?? `http_${response.status}`, data?.reason ?? "");
  }
  return data;
}

/** POST /api/session → `{nick, token}`. Throws ApiError with code `bad_nick` on a bad nick. */
export function createSession(nick) {
  return request("POST", "/api/session", { body: { nick } });
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

/** POST /api/rooms/R/messages → `{id, seq}`; ApiError carries the send error code. */
export function postMessage(token, room, body, id, { signal } = {}) {
  return request("POST", roomPath(room, "messages"), { token, body: { body, id }, signal });
}

export function postTyping(token, room) {
  return request("POST", roomPath(room, "typing"), { token });
}

/** GET /api/rooms/R/members → `{room, members}`. */
export function fetchMembers(token, room, { signal } = {}) {
  return request("GET", roomPath(room, "members"), { token, signal });
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

// Small helpers the pages share. Plain ES modules, no build step.

/** Django's CSRF token, from the `csrftoken` cookie (session-authenticated POST/DELETE need it). */
export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** An error from the JSON API: `code` and `detail` from `{"error":{…}}`, plus the status. */
export class ApiError extends Error {
  constructor(status, code, detail, response) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.response = response;
  }
}

/** fetch() for the JSON API with the session cookie and the CSRF header; JSON in, JSON out. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, signal, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data?.error?.code, data?.error?.detail, response);
  return data;
}

/** Exponential back-off with full jitter: attempt 0, 1, 2… → up to 0.5 s, 1 s, 2 s… capped. */
export function backoff(attempt, { base = 500, cap = 30000 } = {}) {
  const ceiling = Math.min(cap, base * 2 ** attempt);
  return Math.round(ceiling / 2 + Math.random() * ceiling / 2);
}

/** A promise that resolves after `ms`, or at once when the browser comes back online. */
export function sleepOrOnline(ms) {
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); window.removeEventListener("online", done); resolve(); };
    const timer = setTimeout(done, ms);
    window.addEventListener("online", done);
  });
}

/**
 * Reads a `text/event-stream` body from fetch(): yields {event, data, id} for each event
 * (comments such as `: keepalive` are skipped). Throws if the network drops mid-stream.
 * `onData` is called for every chunk received, keep-alive comments included (a watchdog).
 */
export async function* readEventStream(response, onData = () => {}) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onData();
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = { event: "message", data: "", id: null };
        const data = [];
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event.event = value;
          else if (field === "data") data.push(value);
          else if (field === "id") event.id = value;
        }
        if (!data.length) continue;
        event.data = data.join("\n");
        yield event;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** "14:05" for today, "3 Mar 14:05" otherwise, in the reader's own time zone. */
export function shortTime(iso) {
  const when = new Date(iso);
  const sameDay = when.toDateString() === new Date().toDateString();
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return sameDay ? time : `${when.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
}

/** document.createElement with text content and attributes; never parses markup. */
export function el(tag, { text, className, attrs } = {}, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

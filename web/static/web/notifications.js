// The notification badge in the header (docs/protocol.md, "Other endpoints"): the unread count from
// GET /api/notifications/, kept live by GET /api/notifications/stream (EventSource).
import { api, el } from "./common.js";

const button = document.getElementById("notifications-button");
const badge = document.getElementById("notifications-count");
const panel = document.getElementById("notifications-panel");
const list = document.getElementById("notifications-list");
const empty = document.getElementById("notifications-empty");
const readButton = document.getElementById("notifications-read");

const KINDS = ["mention", "task", "moderation", "dm"];
const unread = new Map(); // id -> {kind, data}

function describe({ kind, data }) {
  const room = data.room ? `/rooms/${encodeURIComponent(data.room)}/` : null;
  switch (kind) {
    case "mention":
      return { text: `${data.from} mentioned you in ${data.room}: “${data.content}”`, href: room };
    case "dm":
      return { text: `${data.from} wrote to you: “${data.content}”`, href: room };
    case "task":
      return { text: `Task ${data.task_id} (${data.kind}): ${data.status}`, href: `/tasks/${encodeURIComponent(data.task_id)}/` };
    case "moderation": {
      const what = String(data.action || "moderation").replaceAll("_", " ");
      return { text: `Moderation: ${what}${data.room ? ` in ${data.room}` : ""}${data.reason ? ` (${data.reason})` : ""}`, href: room };
    }
    default:
      return { text: kind, href: null };
  }
}

function render() {
  const count = unread.size;
  badge.textContent = count > 99 ? "99+" : String(count);
  badge.hidden = count === 0;
  button.setAttribute("aria-label", count ? `Notifications, ${count} unread` : "Notifications");
  const newest = [...unread.entries()].sort((a, b) => b[0] - a[0]).slice(0, 20);
  list.replaceChildren(...newest.map(([id, notification]) => {
    const { text, href } = describe(notification);
    return el("li", { attrs: { "data-id": String(id) } }, href ? el("a", { text, attrs: { href } }) : el("span", { text }));
  }));
  empty.hidden = count > 0;
  readButton.hidden = count === 0;
}

async function refresh() {
  try {
    const { notifications } = await api("/api/notifications/");
    const newest = notifications.reduce((top, n) => Math.max(top, n.id), 0);
    for (const id of unread.keys()) if (id <= newest && !notifications.some((n) => n.id === id)) unread.delete(id);
    for (const n of notifications) unread.set(n.id, { kind: n.kind, data: n.data });
    render();
  } catch {
    // Offline: the stream's next open refreshes again.
  }
}

function listen() {
  const source = new EventSource("/api/notifications/stream");
  // Each (re)connection: the list is the truth for what is unread now, events add to it.
  source.onopen = refresh;
  for (const kind of KINDS) {
    source.addEventListener(kind, (event) => {
      const id = Number(event.lastEventId);
      if (!Number.isInteger(id) || id <= 0) return;
      try { unread.set(id, { kind, data: JSON.parse(event.data) }); } catch { return; }
      render();
    });
  }
}

function setOpen(open) {
  panel.hidden = !open;
  button.setAttribute("aria-expanded", String(open));
}

button.addEventListener("click", () => setOpen(panel.hidden));
document.addEventListener("keydown", (event) => { if (event.key === "Escape" && !panel.hidden) { setOpen(false); button.focus(); } });
document.addEventListener("click", (event) => { if (!panel.hidden && !event.target.closest(".notifications")) setOpen(false); });
readButton.addEventListener("click", async () => {
  const upTo = Math.max(0, ...unread.keys());
  try {
    await api("/api/notifications/read", { method: "POST", body: { up_to: upTo } });
    for (const id of [...unread.keys()]) if (id <= upTo) unread.delete(id);
    render();
  } catch {
    // Keep them; the person can try again.
  }
});

render();
listen();

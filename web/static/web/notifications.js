// The notification badge in the header (docs/protocol.md, "Other endpoints"): the unread count from
// GET /api/notifications/, kept live by GET /api/notifications/stream (EventSource), whose `read`
// events say what was marked read on any device. Reading what a notification is about marks it
// read: a room page says what its person has seen (a "room-seen" event on the document: the
// mentions on screen, and in a direct conversation how far it goes), and the notifications about
// those are marked read.
import { api, el } from "./common.js";

const button = document.getElementById("notifications-button");
const badge = document.getElementById("notifications-count");
const panel = document.getElementById("notifications-panel");
const list = document.getElementById("notifications-list");
const empty = document.getElementById("notifications-empty");
const readButton = document.getElementById("notifications-read");

const KINDS = ["mention", "task", "moderation", "dm"];
const LIST_LIMIT = 200; // GET /api/notifications/ lists at most this many
const unread = new Map(); // id -> {kind, data}
const seenUpTo = new Map(); // direct room slug -> every message up to this id was seen on this page
const seenMentions = new Map(); // room slug -> Set of the ids of messages mentioning the person seen
const marking = new Set(); // ids being marked read by this page

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
  const known = [...unread.keys()];
  try {
    const { notifications } = await api("/api/notifications/");
    const listed = new Set(notifications.map((n) => n.id));
    // The whole list, or its oldest part: what is missing was read (elsewhere, or long ago).
    const newest = notifications.length < LIST_LIMIT ? Infinity : Math.max(...listed);
    for (const id of known) if (id <= newest && !listed.has(id)) unread.delete(id);
    for (const n of notifications) unread.set(n.id, { kind: n.kind, data: n.data });
    render();
    markSeen();
  } catch {
    // Offline: the stream's next open refreshes again.
  }
}

function wasSeen({ kind, data }) {
  const room = String(data.room);
  const messageId = Number(data.message_id);
  if (kind === "dm") return messageId <= (seenUpTo.get(room) ?? 0);
  if (kind === "mention") return Boolean(seenMentions.get(room)?.has(messageId));
  return false;
}

/** Mentions and direct messages the person has seen on this page are read, on every device. */
async function markSeen() {
  const ids = [];
  for (const [id, notification] of unread) if (!marking.has(id) && wasSeen(notification)) ids.push(id);
  if (!ids.length) return;
  ids.forEach((id) => marking.add(id));
  try {
    await api("/api/notifications/read", { method: "POST", body: { ids } });
    ids.forEach((id) => unread.delete(id));
    render();
  } catch {
    // Still unread: the next message seen (or the stream's next open) tries again.
  } finally {
    ids.forEach((id) => marking.delete(id));
  }
}

document.addEventListener("room-seen", (event) => {
  const { room, upTo, mentions } = event.detail || {};
  if (typeof room !== "string") return;
  if (Number.isInteger(upTo) && upTo > 0) seenUpTo.set(room, Math.max(seenUpTo.get(room) ?? 0, upTo));
  if (Array.isArray(mentions) && mentions.length) {
    if (!seenMentions.has(room)) seenMentions.set(room, new Set());
    for (const id of mentions) seenMentions.get(room).add(Number(id));
  }
  markSeen();
});

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
      markSeen();
    });
  }
  // Marked read on some device (this one too): the badge drops everywhere at once.
  source.addEventListener("read", (event) => {
    let ids;
    try { ids = JSON.parse(event.data).ids; } catch { return; }
    if (!Array.isArray(ids)) return;
    for (const id of ids) unread.delete(Number(id));
    render();
  });
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

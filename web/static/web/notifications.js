// The notification badge in the header (docs/protocol.md, "Other endpoints"): the unread count from
// GET /api/notifications/, kept live by GET /api/notifications/stream (EventSource), whose `read`
// events say what was marked read on any device. Reading what a notification is about marks it
// read: a room page says what its person has seen (a "room-seen" event on the document: the
// mentions on screen, and in a direct conversation how far it goes), and the notifications about
// those are marked read.
//
// Browser notifications (with the person's permission, asked from a button in the panel): a
// mention or a direct message that arrives while the tab is hidden also shows as a system
// notification; clicking it brings the tab back on the room. Tagged with the notification's id,
// so two open tabs (or a replay after a reconnect) show it once.
import { api, el } from "./common.js";

const button = document.getElementById("notifications-button");
const badge = document.getElementById("notifications-count");
const panel = document.getElementById("notifications-panel");
const list = document.getElementById("notifications-list");
const empty = document.getElementById("notifications-empty");
const readButton = document.getElementById("notifications-read");
const alertsButton = document.getElementById("notifications-alerts");
const alertsHelp = document.getElementById("notifications-alerts-help");

const KINDS = ["mention", "task", "moderation", "dm"];
const LIST_LIMIT = 200; // GET /api/notifications/ lists at most this many
const unread = new Map(); // id -> {kind, data}
const seenUpTo = new Map(); // direct room slug -> every message up to this id was seen on this page
const seenMentions = new Map(); // room slug -> Set of the ids of messages mentioning the person seen
const marking = new Set(); // ids being marked read by this page
const ALERT_KINDS = new Set(["mention", "dm"]);
const alerted = new Set(); // ids shown as browser notifications by this page

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

const canAlert = () => "Notification" in window && Notification.permission === "granted";

/** A system notification for a mention or direct message that arrives while the tab is hidden. */
function alertIfHidden(id, notification) {
  if (document.visibilityState !== "hidden" || !canAlert()) return;
  if (!ALERT_KINDS.has(notification.kind) || alerted.has(id)) return;
  alerted.add(id);
  const { text, href } = describe(notification);
  try {
    const shown = new Notification(notification.kind === "dm" ? "New direct message" : "You were mentioned", {
      body: text, tag: `notification-${id}`, icon: "/static/web/icons/icon-192.png",
    });
    shown.onclick = () => {
      window.focus();
      if (href && location.pathname !== href) location.assign(href);
      shown.close();
    };
  } catch {
    // Some browsers (Chrome on Android) allow notifications only from a service worker: the badge still counts it.
  }
}

function renderAlerts() {
  const supported = "Notification" in window;
  const permission = supported ? Notification.permission : "unsupported";
  alertsButton.hidden = permission !== "default";
  alertsHelp.hidden = permission === "default";
  alertsHelp.textContent = {
    granted: "Mentions and direct messages also alert this device while the tab is in the background.",
    denied: "Alerts are blocked for this site in the browser's settings.",
    unsupported: "This browser cannot show alerts.",
  }[permission] || "";
}

alertsButton.addEventListener("click", async () => {
  try { await Notification.requestPermission(); } catch { /* Treated as not granted. */ }
  renderAlerts();
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
      alertIfHidden(id, unread.get(id));
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
renderAlerts();
listen();

// The room list: live online and unread counts (GET /api/rooms/ every few seconds, and at once
// when the page comes back into view; only the rows that changed are redrawn), direct messages, creating a room and opening a direct
// conversation. `unread` is what the user has not read yet (docs/protocol.md, "Room changes").
import { api, el } from "./common.js";

const POLL_MS = 4000;
const list = document.getElementById("rooms");
const dmList = document.getElementById("dms");
const me = list.dataset.user;
const createForm = document.getElementById("create-room");
const createError = document.getElementById("create-error");
const titleInput = document.getElementById("room-title");
const slugInput = document.getElementById("room-slug");
const dmForm = document.getElementById("open-dm");
const dmError = document.getElementById("dm-error");

/** "alice and bob" is "bob" to alice. */
function dmName(room) {
  const names = (room.title || "").split(" and ");
  return names.length === 2 && names.includes(me) ? names.find((name) => name !== me) || me : room.title;
}

function roomItem(room) {
  const item = el("li", { attrs: { "data-slug": room.slug } },
    el("a", { text: room.direct ? dmName(room) : room.title || room.slug, attrs: { href: `/rooms/${room.slug}/` } }));
  if (room.private && !room.direct) item.append(el("span", { className: "tag", text: "private" }));
  if (room.locked) item.append(el("span", { className: "tag", text: "locked" }));
  if (room.unread) {
    item.classList.add("unread");
    const count = room.unread > 99 ? "99+" : String(room.unread);
    item.append(el("span", { className: "badge", text: count, attrs: { title: `${room.unread} unread` } }));
    item.querySelector("a").setAttribute("aria-label", `${item.querySelector("a").textContent}, ${room.unread} unread`);
  }
  item.append(el("span", { className: "online", text: `${room.online} online` }));
  return item;
}

// What each row shows, to tell whether a poll changed it (rows drawn by the server have none,
// so the first poll redraws them once).
const shownAs = new WeakMap();

function signature(room) {
  return JSON.stringify([room.direct ? dmName(room) : room.title || room.slug, Boolean(room.private), Boolean(room.direct),
    Boolean(room.locked), room.unread || 0, room.online]);
}

/** Bring a list to `rooms` touching only the rows that changed (the lists are not live regions:
 * a poll that finds nothing new changes nothing, so assistive technology has nothing to say). */
function update(target, rooms, emptyText) {
  const rows = new Map();
  for (const row of target.children) rows.set(row.dataset.slug ?? "", row);
  const wanted = rooms.length ? rooms.map((room) => {
    const sig = signature(room);
    const row = rows.get(room.slug);
    if (row && shownAs.get(row) === sig) return row;
    const fresh = roomItem(room);
    shownAs.set(fresh, sig);
    return fresh;
  }) : [rows.get("") && rows.get("").classList.contains("empty") ? rows.get("") : el("li", { className: "empty", text: emptyText })];
  // A redrawn row keeps the keyboard focus where it was (on its link).
  const focused = [...target.children].find((row) => row.contains(document.activeElement))?.dataset.slug;
  wanted.forEach((row, i) => {
    const here = target.children[i];
    if (here !== row) target.insertBefore(row, here || null);
  });
  while (target.children.length > wanted.length) target.lastElementChild.remove();
  if (focused && !target.contains(document.activeElement)) {
    wanted.find((row) => row.dataset.slug === focused)?.querySelector("a")?.focus();
  }
}

function render(rooms) {
  const sorted = [...rooms].sort((a, b) => (a.title || a.slug).localeCompare(b.title || b.slug, undefined, { sensitivity: "base" }));
  update(list, sorted.filter((room) => !room.direct), "No rooms yet. Create the first one.");
  update(dmList, sorted.filter((room) => room.direct), "None yet.");
}

let pollTimer = null;

async function poll() {
  clearTimeout(pollTimer);
  try {
    if (document.visibilityState === "visible") render((await api("/api/rooms/")).rooms);
  } catch {
    // Offline or a server hiccup: keep what is shown, try again at the next tick.
  }
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, POLL_MS);
}
// Back from a room (the back button may show this page from the cache) or another tab: at once.
window.addEventListener("pageshow", (event) => { if (event.persisted) poll(); });
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") poll(); });

// Suggest an address from the title until the person edits the address themselves: accents are
// dropped ("Ünïcode Room!!" is unicode-room); a title with no such letters at all (Chinese,
// Japanese, Cyrillic…) gives no address, and the help under the field says to type one.
const slugHelp = document.getElementById("slug-help");
const SLUG_HELP = slugHelp.innerHTML; // the template's own text (a fixed string, with its <em>)
const NO_SLUG = "No address can be made from this title: type one, with lower-case letters a–z, digits and dashes (for example team-1).";
let slugEdited = false;
slugInput.addEventListener("input", () => { slugEdited = true; slugHelp.innerHTML = SLUG_HELP; });
titleInput.addEventListener("input", () => {
  if (slugEdited) return;
  slugInput.value = titleInput.value.normalize("NFKD").replace(/\p{M}+/gu, "").toLowerCase()
    .replace(/[^a-z0-9]+/g, "-").replace(/^-+/, "").slice(0, 50).replace(/-+$/, "");
  if (titleInput.value.trim() && !slugInput.value) slugHelp.textContent = NO_SLUG;
  else slugHelp.innerHTML = SLUG_HELP;
});

createForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  createError.textContent = "";
  const slug = slugInput.value.trim();
  try {
    const body = { slug, title: titleInput.value.trim() || slug };
    if (document.getElementById("room-private").checked) body.private = true; // docs/protocol.md, "Other endpoints"
    await api("/api/rooms/", { method: "POST", body });
    location.href = `/rooms/${slug}/`;
  } catch (error) {
    createError.textContent = error.status === 409 ? `A room at /rooms/${slug}/ exists already.` : error.message;
  }
});

dmForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  dmError.textContent = "";
  const user = document.getElementById("dm-user").value.trim();
  try {
    const room = await api("/api/dms/", { method: "POST", body: { user } });
    location.href = `/rooms/${room.slug}/`;
  } catch (error) {
    dmError.textContent = error.status === 400 && user === me ? "That is you." : error.message;
  }
});

poll();

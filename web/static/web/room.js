// A live room (docs/protocol.md, "The room protocol"). Reconnects with exponential back-off and jitter, resumes with
// last_id, and shows every message once, in id order. Everything user-written is inserted as
// text (textContent), never as markup.
import { api, backoff, el, shortTime } from "./common.js";

const root = document.getElementById("room");
const slug = root.dataset.slug;
const me = root.dataset.user;
const list = document.getElementById("messages");
const state = document.getElementById("state");
const reconnectButton = document.getElementById("reconnect");
const lockedBanner = document.getElementById("locked");
const typingLine = document.getElementById("typing");
const errorBox = document.getElementById("error");
const form = document.getElementById("composer");
const box = document.getElementById("message");
const sendButton = form.querySelector("button[type=submit]");
const presenceList = document.getElementById("presence");
const onlineCount = document.getElementById("online-count");

const FINAL_CLOSES = {
  4001: "You are signed out. Log in again to chat.",
  4003: "You are banned from this room.",
  4004: "This room does not exist (any more).",
};
const UNACKED_MS = 5000; // a sent message not echoed this long after a (re)sync is reported

const shown = new Map(); // message id -> <li>
const removed = new Set(); // ids a moderator removed: never shown again
const pending = new Map(); // nonce -> {item, content, timer}
const typers = new Map(); // username -> expiry timer
let lastId = 0;
let socket = null;
let attempt = 0;
let heartbeat = 20;
let watchdog = null;
let reconnectTimer = null;
let finished = false;
let locked = root.dataset.locked === "true";
let rateLimitedUntil = 0;
let rateTimer = null;
const isPrivate = root.dataset.private === "true";
let readUpTo = 0;
let readTimer = null;

// ---- the connection -----------------------------------------------------------------------

function setState(name, text) {
  state.dataset.state = name;
  state.textContent = text;
  reconnectButton.hidden = name !== "waiting";
}

function connect() {
  clearTimeout(reconnectTimer);
  if (finished) return;
  setState("connecting", attempt ? "Reconnecting…" : "Connecting…");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/rooms/${slug}/${lastId ? `?last_id=${lastId}` : ""}`);
  socket = ws;
  ws.onmessage = (event) => {
    if (ws !== socket) return;
    armWatchdog();
    let frame;
    try { frame = JSON.parse(event.data); } catch { return; }
    handle(frame);
  };
  ws.onclose = (event) => {
    if (ws === socket) dropped(event.code);
  };
}

/** Forget the current socket (it may be dead without knowing it) and plan the next one. */
function dropped(code) {
  const ws = socket;
  socket = null;
  clearTimeout(watchdog);
  if (ws) { ws.onmessage = ws.onclose = null; if (ws.readyState <= WebSocket.OPEN) ws.close(); }
  typers.forEach((timer) => clearTimeout(timer));
  typers.clear();
  renderTyping();
  presenceList.classList.add("stale");
  if (FINAL_CLOSES[code]) {
    finished = true;
    setState("closed", FINAL_CLOSES[code]);
    setComposerEnabled(false);
    return;
  }
  const delay = code === 4029 ? Math.max(5000, backoff(attempt)) : backoff(attempt);
  attempt += 1;
  const seconds = Math.ceil(delay / 1000);
  setState("waiting", navigator.onLine === false
    ? "Offline: waiting for the network…"
    : `Disconnected${code === 4029 ? " (too many open tabs)" : ""}. Reconnecting in ${seconds} s…`);
  reconnectTimer = setTimeout(connect, delay);
}

/** The server pings every `heartbeat` seconds: silence for three means the link is dead. */
function armWatchdog() {
  clearTimeout(watchdog);
  watchdog = setTimeout(() => dropped(4000), (3 * heartbeat + 2) * 1000);
}

function send(frame) {
  if (socket?.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

window.addEventListener("offline", () => { if (socket) dropped(1006); });
window.addEventListener("online", () => {
  if (finished || socket) return;
  attempt = 0;
  connect();
});
reconnectButton.addEventListener("click", () => { attempt = 0; connect(); });

// ---- frames from the server ---------------------------------------------------------------

function handle(frame) {
  switch (frame.type) {
    case "hello":
      heartbeat = Number(frame.heartbeat) || heartbeat;
      armWatchdog();
      break;
    case "message":
      showMessage(frame);
      break;
    case "gap":
      showNotice(`${frame.missed} earlier messages were missed while you were away; the newest ones follow.`);
      break;
    case "synced":
      lastId = Math.max(lastId, Number(frame.last_id) || 0);
      markRead();
      attempt = 0;
      setState("live", "Connected");
      setComposerEnabled(!locked);
      for (const [nonce, entry] of pending) watchPending(nonce, entry);
      break;
    case "presence":
      showPresence(frame.users || []);
      break;
    case "typing":
      if (frame.user !== me) setTyping(frame.user, frame.is_typing);
      break;
    case "message_deleted":
      removeMessage(Number(frame.id));
      break;
    case "notice":
      showNotice(frame.content, "Notice");
      break;
    case "room_locked":
      setLocked(Boolean(frame.locked));
      break;
    case "ping":
      send({ type: "pong" });
      break;
    case "error":
      showError(frame);
      break;
    default:
      break;
  }
}

// ---- messages ------------------------------------------------------------------------------

function nearBottom() {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

function messageItem(frame) {
  const when = new Date(frame.ts);
  const item = el("li", { className: "message", attrs: { "data-id": String(frame.id) } },
    el("div", { className: "meta" },
      el("span", { className: "author", text: frame.user }), " ",
      el("time", { text: shortTime(frame.ts), attrs: { datetime: frame.ts, title: when.toLocaleString() } })),
    el("div", { className: "content", text: frame.content }));
  if (frame.user === me) item.classList.add("mine");
  if (me && new RegExp(`(^|\\W)@${me.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(?!\\w)`).test(frame.content)) item.classList.add("mentions-me");
  return item;
}

/** Insert by id: after the last message with a smaller id (or the last notice), before pending ones. */
function insertInOrder(item, id) {
  let after = list.lastElementChild;
  while (after) {
    if (after.classList.contains("pending")) { after = after.previousElementSibling; continue; }
    const otherId = Number(after.dataset.id);
    if (!after.dataset.id || otherId < id) break;
    after = after.previousElementSibling;
  }
  if (after) after.after(item);
  else list.prepend(item);
}

function showMessage(frame) {
  const id = Number(frame.id);
  const mine = frame.nonce ? pending.get(frame.nonce) : undefined;
  if (mine) {
    clearTimeout(mine.timer);
    mine.item.remove();
    pending.delete(frame.nonce);
  }
  lastId = Math.max(lastId, id);
  if (shown.has(id) || removed.has(id)) return;
  const stick = nearBottom() || Boolean(mine);
  const item = messageItem(frame);
  shown.set(id, item);
  insertInOrder(item, id);
  if (stick) list.scrollTop = list.scrollHeight;
  markRead();
}

/** Private rooms and direct messages keep an unread count: say how far this person has read. */
function markRead() {
  if (!isPrivate || lastId <= readUpTo || document.visibilityState !== "visible") return;
  clearTimeout(readTimer);
  readTimer = setTimeout(async () => {
    const upTo = lastId;
    try {
      await api(`/api/rooms/${slug}/read`, { method: "POST", body: { last_id: upTo } });
      readUpTo = Math.max(readUpTo, upTo);
    } catch {
      // Not important enough to retry: the next message or visit says it again.
    }
  }, 1000);
}
document.addEventListener("visibilitychange", markRead);

function removeMessage(id) {
  removed.add(id);
  shown.get(id)?.remove();
  shown.delete(id);
}

function showNotice(text, label) {
  const stick = nearBottom();
  const item = el("li", { className: "notice" });
  if (label) item.append(el("strong", { text: `${label}: ` }));
  item.append(document.createTextNode(text));
  const firstPending = list.querySelector(":scope > .pending"); // ours, not yet acknowledged: they stay last
  if (firstPending) firstPending.before(item);
  else list.append(item);
  if (stick) list.scrollTop = list.scrollHeight;
}

// ---- presence and typing ----------------------------------------------------------------------

function showPresence(users) {
  presenceList.classList.remove("stale");
  presenceList.replaceChildren(...users.map((name) =>
    el("li", { text: name === me ? `${name} (you)` : name, className: name === me ? "me" : "" })));
  onlineCount.textContent = `(${users.length})`;
}

function setTyping(user, isTyping) {
  clearTimeout(typers.get(user));
  typers.delete(user);
  // A typist who vanishes without "stopped" (a closed tab) is forgotten after a few seconds.
  if (isTyping) typers.set(user, setTimeout(() => { typers.delete(user); renderTyping(); }, 6000));
  renderTyping();
}

function renderTyping() {
  const names = [...typers.keys()].sort();
  if (!names.length) typingLine.textContent = "";
  else if (names.length === 1) typingLine.textContent = `${names[0]} is typing…`;
  else if (names.length <= 3) typingLine.textContent = `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are typing…`;
  else typingLine.textContent = "Several people are typing…";
}

let typingSentAt = 0;
let typingStop = null;

function typingActivity() {
  const now = Date.now();
  if (now - typingSentAt > 3000 && send({ type: "typing", is_typing: true })) typingSentAt = now;
  clearTimeout(typingStop);
  typingStop = setTimeout(typingStopped, 4000);
}

function typingStopped() {
  clearTimeout(typingStop);
  if (typingSentAt) send({ type: "typing", is_typing: false });
  typingSentAt = 0;
}

// ---- sending ------------------------------------------------------------------------------------

function newNonce() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}

function setComposerEnabled(enabled) {
  box.disabled = !enabled;
  sendButton.disabled = !enabled || Date.now() < rateLimitedUntil;
}

function setLocked(isLocked) {
  locked = isLocked;
  lockedBanner.hidden = !isLocked;
  setComposerEnabled(!isLocked && !finished);
  if (!isLocked && errorBox.dataset.code === "room_locked") clearError();
}

function clearError() {
  errorBox.textContent = "";
  delete errorBox.dataset.code;
}

function sendMessage(content, retrying) {
  const nonce = newNonce();
  if (!send({ type: "message", content, nonce })) return false;
  const item = el("li", { className: "message mine pending" },
    el("div", { className: "meta" }, el("span", { className: "author", text: me }), " ",
      el("span", { className: "sending", text: "sending…" })),
    el("div", { className: "content", text: content }));
  retrying?.remove();
  list.append(item);
  list.scrollTop = list.scrollHeight;
  const entry = { item, content, timer: null };
  pending.set(nonce, entry);
  watchPending(nonce, entry);
  return true;
}

/** A message not echoed a few seconds after a sync is marked, with a way to send it again. */
function watchPending(nonce, entry) {
  clearTimeout(entry.timer);
  entry.timer = setTimeout(() => {
    if (pending.get(nonce) !== entry || !socket || entry.item.classList.contains("failed")) return;
    entry.item.classList.replace("pending", "failed");
    const retry = el("button", { className: "link", text: "Send again", attrs: { type: "button" } });
    retry.addEventListener("click", () => {
      if (!socket) { showLocalError("Not connected yet."); return; }
      pending.delete(nonce); // if the first copy still arrives it is shown too: the person chose to resend
      sendMessage(entry.content, entry.item);
    });
    entry.item.querySelector(".sending").replaceChildren("not delivered · ", retry);
  }, UNACKED_MS);
}

function restorePending(nonce) {
  const entry = nonce ? pending.get(nonce) : undefined;
  if (!entry) return;
  clearTimeout(entry.timer);
  entry.item.remove();
  pending.delete(nonce);
  if (!box.value.trim()) box.value = entry.content; // give the text back rather than lose it
}

function showLocalError(text, code = "local") {
  errorBox.dataset.code = code;
  errorBox.textContent = text;
}

function showError(frame) {
  restorePending(frame.nonce);
  if (frame.code === "rate_limited") {
    rateLimitedUntil = Date.now() + (Number(frame.retry_after) || 1) * 1000;
    sendButton.disabled = true;
    tickRateLimit();
    return;
  }
  if (frame.code === "room_locked") setLocked(true);
  const texts = {
    muted: "You are muted here for now: your messages are not posted.",
    room_locked: "This room is locked: nobody can post for now.",
    too_long: "That message is too long (at most 4000 characters).",
    empty: "That message is empty.",
  };
  showLocalError(texts[frame.code] || frame.detail || frame.code, frame.code);
}

/** "You can send again in 3 s", counting down, from the error's retry_after. */
function tickRateLimit() {
  clearTimeout(rateTimer);
  const left = rateLimitedUntil - Date.now();
  if (left <= 0) {
    rateLimitedUntil = 0;
    sendButton.disabled = locked || finished || !socket;
    if (errorBox.dataset.code === "rate_limited") showLocalError("You can send again now.", "rate_limited_over");
    return;
  }
  const at = new Date(rateLimitedUntil).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  showLocalError(`Slow down: too many messages. You can send again in ${Math.ceil(left / 1000)} s (at ${at}).`, "rate_limited");
  rateTimer = setTimeout(tickRateLimit, Math.min(1000, left));
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const content = box.value.trim();
  if (!content) return;
  if (locked) { showLocalError("This room is locked: nobody can post for now.", "room_locked"); return; }
  if (Date.now() < rateLimitedUntil) { tickRateLimit(); return; }
  if (!sendMessage(content)) {
    showLocalError("Not connected: your message is still in the box; send it when the room is back.");
    return;
  }
  if (errorBox.dataset.code !== "room_locked") clearError();
  box.value = "";
  typingStopped();
});

box.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
box.addEventListener("input", () => { if (box.value.trim()) typingActivity(); else typingStopped(); });

// ---- a summary of the room, as a task ------------------------------------------------------------

document.getElementById("summarize").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    const task = await api("/api/tasks/", { method: "POST", body: { kind: "summarize_room", room: slug } });
    location.href = `/tasks/${task.id}/`;
  } catch (error) {
    showLocalError(`Could not start a summary: ${error.message}`);
    button.disabled = false;
  }
});

connect();

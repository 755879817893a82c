// A live room (docs/protocol.md, "The room protocol" and "Room changes"). Reconnects with
// exponential back-off and jitter, resumes with last_seq (and last_id), and applies every change
// by message id: new messages once, in id order; edits in place; a removed message becomes a
// placeholder (its author's too) until a moderator restores it; reactions as whole sets.
// Messages go through an outbox: one written while the room is not connected waits, shown with
// its nonce, and is sent once when the room is back (the echo's nonce acknowledges it); one the
// room refuses, or never acknowledges, stays in the list with its reason and Retry.
// Message text is rendered as sanitised Markdown (markdown.js); everything else user-written is
// inserted as text (textContent), never as markup.
import { api, backoff, el, shortTime } from "./common.js";
import { renderMarkdown } from "./markdown.js";
import { MentionBox } from "./mentions.js";

const root = document.getElementById("room");
const slug = root.dataset.slug;
const me = root.dataset.user;
const direct = root.dataset.direct === "true";
const config = JSON.parse(document.getElementById("room-config").textContent);
const REACTIONS = Array.isArray(config.reactions) ? config.reactions.map(String) : [];
const EDIT_WINDOW_MS = (Number(config.edit_window) || 0) * 1000;
const isStaff = config.staff === true;
const isOwner = config.owner === true; // the room's creator: may stop the assistant's replies and set it
const list = document.getElementById("messages");
const historyItem = document.getElementById("history");
const loadOlderButton = document.getElementById("load-older");
const historyStart = document.getElementById("history-start");
const state = document.getElementById("state");
const reconnectButton = document.getElementById("reconnect");
const lockedBanner = document.getElementById("locked");
const typingLine = document.getElementById("typing");
const errorBox = document.getElementById("error");
const form = document.getElementById("composer");
const box = document.getElementById("message");
const sendButton = form.querySelector("button[type=submit]");
const replyingBar = document.getElementById("replying");
const replyingText = document.getElementById("replying-text");
const presenceList = document.getElementById("presence");
const onlineCount = document.getElementById("online-count");

const FINAL_CLOSES = {
  4001: "You are signed out. Log in again to chat.",
  4003: root.dataset.private === "true" && !direct
    ? "You are no longer a member of this room (removed, or banned)." : "You are banned from this room.",
  4004: "This room does not exist (any more).",
};
const UNACKED_MS = 5000; // a sent message not echoed this long after a (re)sync is reported
const PAGE = 50; // messages per page of older history (and the backlog of a fresh connection)
const NEWEST = Number.MAX_SAFE_INTEGER; // before= this: the newest page

const messages = new Map(); // message id -> {id, user, content, ts, reply_to, edited_at, reactions, removed}
const shown = new Map(); // message id -> <li>
const quoted = new Map(); // id -> a message known only because a reply quotes it (or null: removed)
const pending = new Map(); // nonce -> the outbox: {nonce, item, content, replyTo, timer, state, queued}
const changes = new Map(); // nonce -> {undo}: an edit, removal or reaction sent and not yet seen back
const typers = new Map(); // username -> expiry timer
let lastId = 0;
let lastSeq = 0; // the room's change counter as far as this page has applied it (0: unknown)
let resumingBySeq = false; // this connection replays changes after last_seq (else: a backlog)
let freshConnection = true; // this connection asked for the newest page (no last_id, no last_seq)
let syncing = true; // between a connection's hello and its synced
let reloadAfterSync = false; // a gap in the changes: reload the newest page once synced
let backlogCount = 0;
let firstSync = true;
let socket = null;
let attempt = 0;
let heartbeat = 20;
let watchdog = null;
let reconnectTimer = null;
let finished = false;
let locked = root.dataset.locked === "true";
let rateLimitedUntil = 0;
let rateTimer = null;
let readUpTo = Number(config.read_id) || 0; // this user's read marker in the room (forward only)
let dividerAfter = readUpTo || null; // "new messages" begin after this id (null: no divider)
let readTimer = null;
let replyTo = null; // the id the composer answers
let historyDone = false;
let loadingOlder = false;
let replayDuringReload = null; // change frames that came while the newest page was being fetched
const CHANGE_FRAMES = new Set(["message", "message_edited", "message_deleted", "message_restored", "reactions", "message_done"]);

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
  // Resume with the change counter when this page has one (every change missed, once), and
  // last_id beside it (what a server without change counters understands).
  const query = new URLSearchParams();
  if (lastSeq) query.set("last_seq", String(lastSeq));
  if (lastId) query.set("last_id", String(lastId));
  resumingBySeq = lastSeq > 0;
  freshConnection = !lastSeq && !lastId;
  backlogCount = 0;
  syncing = true;
  const ws = new WebSocket(`${scheme}://${location.host}/ws/rooms/${slug}/${query.size ? `?${query}` : ""}`);
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
    if (code === 4003) explainBan();
    setComposerEnabled(false);
    for (const entry of pending.values()) if (entry.state !== "failed") setOutgoing(entry, "failed", "the room closed");
    return;
  }
  if (code === 1012) {
    // The worker is restarting and spread its goodbyes: another worker takes us at once,
    // not an error to show (docs/protocol.md, "Authentication and the handshake").
    setState("connecting", "Reconnecting…");
    reconnectTimer = setTimeout(connect, Math.random() * 250);
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

/** Closed with 4003: the room's page, read again, says whether a ban is in force, why and until
 * when (a removed member gets a 404 and keeps the first text). Inserted as text. */
async function explainBan() {
  let ban = null;
  try {
    const response = await fetch(location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("room-config");
    ban = fresh ? JSON.parse(fresh.textContent).ban : null;
  } catch {
    return;
  }
  if (!ban) return;
  const until = ban.ends_at ? `until ${shortTime(ban.ends_at)}` : "until a moderator lifts it";
  const where = ban.site_wide ? "You are banned from every room" : "You are banned from this room";
  setState("closed", `${where} ${until}${ban.reason ? `. Reason: ${ban.reason}` : "."}`);
  if (ban.site_wide) document.getElementById("summarize").disabled = true; // summaries are refused too
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

/** Note how far the room's changes have been applied: live, and in a last_seq replay (frames in
 * seq order, so a drop in the middle resumes from the last one), but not from a backlog, whose
 * frames carry the seq of each message's creation; its `synced` says where it stands. */
function advanceSeq(frame) {
  if (!inBacklog() && Number.isInteger(frame.seq)) lastSeq = Math.max(lastSeq, frame.seq);
}
function inBacklog() {
  return syncing && !resumingBySeq;
}

function handle(frame) {
  if (replayDuringReload && CHANGE_FRAMES.has(frame.type)) replayDuringReload.push(frame);
  switch (frame.type) {
    case "hello":
      heartbeat = Number(frame.heartbeat) || heartbeat;
      syncing = true;
      armWatchdog();
      break;
    case "message":
      if (syncing) backlogCount += 1;
      if (syncing) quietly(() => showMessage(frame)); // what was missed is not read out, new ones are
      else showMessage(frame);
      advanceSeq(frame);
      break;
    case "message_edited":
      applyEdit(frame);
      advanceSeq(frame);
      break;
    case "message_deleted":
      removeMessage(Number(frame.id));
      advanceSeq(frame);
      break;
    case "message_restored":
      restoreMessage(frame);
      advanceSeq(frame);
      break;
    case "reactions":
      applyReactions(frame);
      advanceSeq(frame);
      break;
    case "message_delta":
      applyDelta(frame);
      break;
    case "message_reasoning":
      applyReasoning(frame);
      break;
    case "message_tool_call":
      applyToolCall(frame);
      break;
    case "message_done":
      applyDone(frame);
      advanceSeq(frame);
      break;
    case "read":
      if (frame.user === me) readElsewhere(Number(frame.id));
      break;
    case "gap":
      if (resumingBySeq) reloadAfterSync = true;
      else showNotice(`${frame.missed} earlier messages were missed while you were away; the newest ones follow.`);
      break;
    case "synced":
      syncing = false;
      lastId = Math.max(lastId, Number(frame.last_id) || 0);
      if (Number.isInteger(frame.seq)) lastSeq = Math.max(lastSeq, frame.seq);
      if (freshConnection && backlogCount < PAGE) setHistoryDone(); // the newest page was all there is
      attempt = 0;
      setState("live", "Connected");
      setComposerEnabled(!locked);
      if (errorBox.dataset.code === "offline") clearError(); // "Not connected" is over
      for (const entry of pending.values()) if (entry.state === "sent") watchPending(entry);
      flushOutbox();
      if (reloadAfterSync) reloadNewest();
      if (firstSync) {
        firstSync = false;
        placeDivider();
        scrollToDividerOrEnd();
      }
      markRead(0);
      break;
    case "presence":
      showPresence(frame.users || []);
      break;
    case "typing":
      if (frame.user !== me) setTyping(frame.user, frame.is_typing);
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

/** The page's active when the person can be reading it: visible and focused. */
function pageActive() {
  return document.visibilityState === "visible" && document.hasFocus();
}

function reactionSet(value) {
  const out = {};
  if (value && typeof value === "object") {
    for (const [emoji, users] of Object.entries(value)) if (Array.isArray(users) && users.length) out[emoji] = users.map(String);
  }
  return out;
}

/** A message as this page keeps it, from a message (or message_restored) frame. */
function messageData(frame) {
  return {
    id: Number(frame.id),
    user: String(frame.user),
    content: String(frame.content ?? ""),
    ts: String(frame.ts),
    reply_to: Number.isInteger(frame.reply_to) ? frame.reply_to : null,
    edited_at: frame.edited_at || null,
    reactions: reactionSet(frame.reactions),
    removed: false,
    // The assistant's replies (docs/protocol.md, "The assistant in a room") grow while streaming.
    streaming: frame.streaming === true,
    finish_reason: frame.finish_reason ? String(frame.finish_reason) : null,
    reasoning: typeof frame.reasoning === "string" ? frame.reasoning : "", // while it streams only
    tool_calls: Array.isArray(frame.tool_calls) ? frame.tool_calls.map(String) : [],
  };
}

const MENTIONS_ME = me ? new RegExp(`(^|\\W)@${me.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(?!\\w)`) : null;

function canEdit(data) {
  return data.user === me && !data.removed && (isStaff || Date.now() - Date.parse(data.ts) < EDIT_WINDOW_MS);
}

function canRemove(data) {
  return !data.removed && (data.user === me || isStaff);
}

function messageItem(data) {
  const item = el("li", { className: "message", attrs: { "data-id": String(data.id), "data-user": data.user } });
  renderItem(item, data);
  return item;
}

/** Draw a message from what the page knows of it (all of it: a change redraws the item). */
function renderItem(item, data) {
  const when = new Date(data.ts);
  item.classList.toggle("mine", data.user === me);
  item.classList.toggle("removed", data.removed);
  item.classList.toggle("mentions-me", !data.removed && Boolean(MENTIONS_ME?.test(data.content)));
  item.classList.remove("editing", "saving");
  item.classList.toggle("streaming", data.streaming && !data.removed);
  // Screen readers wait for the whole reply rather than read out every token.
  if (data.streaming && !data.removed) item.setAttribute("aria-busy", "true");
  else item.removeAttribute("aria-busy");
  const meta = el("div", { className: "meta" },
    el("span", { className: "author", text: data.user }), " ",
    el("time", { text: shortTime(data.ts), attrs: { datetime: data.ts, title: when.toLocaleString() } }));
  if (data.edited_at && !data.removed) {
    meta.append(el("span", { className: "edited", text: "(edited)", attrs: { title: `Edited ${new Date(data.edited_at).toLocaleString()}` } }));
  }
  meta.append(actionsFor(data));
  const parts = [meta];
  if (data.removed) {
    parts.push(el("div", { className: "content placeholder", text: "Message removed" }));
  } else {
    if (data.reply_to) parts.push(quoteFor(data.reply_to));
    if (data.reasoning) parts.push(thinkingFor(data));
    for (const name of data.tool_calls || []) parts.push(el("div", { className: "tool-line", text: `Called the tool ${name}` }));
    const content = contentFor(data);
    parts.push(content);
    if (data.streaming) parts.push(el("div", { className: "reply-state", text: "Writing…" }));
    else if (ENDINGS[data.finish_reason]) parts.push(el("div", { className: "reply-state", text: ENDINGS[data.finish_reason] }));
    if (isLong(data.content) && !data.streaming) parts.push(collapseToggle(data.id, content));
    parts.push(reactionsFor(data));
  }
  item.replaceChildren(...parts);
}

// A long message (a pasted log, a wall of text) shows its first lines and "Show more", so it does
// not fill the view; the person's choice holds while the message is redrawn.
const LONG_CHARS = 1200;
const LONG_LINES = 15;
const expanded = new Set(); // ids of long messages the person opened

function isLong(text) {
  return text.length > LONG_CHARS || text.split("\n").length > LONG_LINES;
}

function collapseToggle(id, content) {
  content.id = `content-${id}`;
  const toggle = el("button", { className: "link more", attrs: { type: "button", "aria-controls": content.id } });
  const show = (open) => {
    content.classList.toggle("collapsed", !open);
    toggle.textContent = open ? "Show less" : "Show more";
    toggle.setAttribute("aria-expanded", String(open));
  };
  toggle.addEventListener("click", () => {
    const open = !expanded.has(id);
    if (open) expanded.add(id); else expanded.delete(id);
    show(open);
  });
  show(expanded.has(id));
  return toggle;
}

function contentFor(data) {
  const content = el("div", { className: "content" });
  content.append(renderMarkdown(data.content, me));
  return content;
}

function button(text, onClick, attrs = {}) {
  const node = el("button", { className: "link", text, attrs: { type: "button", ...attrs } });
  node.addEventListener("click", onClick);
  return node;
}

// How an assistant's reply that did not simply finish says so.
const ENDINGS = {
  cancelled: "Stopped.",
  interrupted: "Interrupted: the server writing it stopped. Ask again.",
  error: "The model failed; this is what it wrote before.",
  length: "Cut short: the reply reached its length limit.",
};

function canStop(data) {
  if (!data.streaming || data.removed) return false;
  const asked = data.reply_to ? messages.get(data.reply_to) || quoted.get(data.reply_to) : null;
  return isStaff || isOwner || asked?.user === me;
}

function actionsFor(data) {
  const group = el("span", { className: "actions", attrs: { role: "group", "aria-label": `Message from ${data.user}` } });
  if (data.removed) {
    if (isStaff) group.append(button("Restore", () => restoreRemoved(data.id)));
    return group;
  }
  if (canStop(data)) group.append(button("Stop", () => send({ type: "stop", id: data.id }), { "aria-label": "Stop the reply" }));
  group.append(button("Reply", () => startReply(data.id)));
  if (REACTIONS.length) {
    group.append(button("React", (event) => togglePicker(data.id, event.currentTarget),
      { "aria-label": "Add reaction", "aria-expanded": "false", "aria-controls": `picker-${data.id}` }));
  }
  if (canEdit(data)) group.append(button("Edit", () => startEdit(data.id)));
  if (canRemove(data)) group.append(button("Delete", () => confirmRemove(data.id)));
  return group;
}

function itemOf(id) {
  return shown.get(id);
}

/** Redraw what changed in place (content and reactions), unless the person is editing it. */
function redraw(id) {
  const data = messages.get(id);
  const item = itemOf(id);
  if (!data || !item) return;
  renderItem(item, data);
}

/** Insert by id, before the first message with a larger one; a newest message goes last, before
 * our own messages still waiting for their echo. Notices and the divider stay where they are. */
function insertInOrder(item, id) {
  const messagesShown = list.querySelectorAll(":scope > li.message[data-id]");
  const last = messagesShown[messagesShown.length - 1];
  if (!last || Number(last.dataset.id) < id) {
    const firstPending = list.querySelector(":scope > li.outgoing");
    if (firstPending) firstPending.before(item);
    else list.append(item);
    return;
  }
  for (const other of messagesShown) {
    if (Number(other.dataset.id) > id) { other.before(item); return; }
  }
}

/** A new message, or one the page knows already (a replay carries its state now). */
function showMessage(frame) {
  const id = Number(frame.id);
  const mine = frame.nonce ? pending.get(frame.nonce) : undefined;
  if (mine) {
    clearTimeout(mine.timer);
    mine.item.remove();
    pending.delete(frame.nonce);
  }
  lastId = Math.max(lastId, id);
  const known = messages.get(id);
  if (known) {
    Object.assign(known, messageData(frame)); // only visible messages come as `message` frames
    redraw(id);
    return;
  }
  const data = messageData(frame);
  const stick = nearBottom() || Boolean(mine);
  addItem(data);
  // Something new from someone else while the person is away: "new messages" starts here.
  if (!syncing && !firstSync && data.user !== me && dividerAfter === null && !pageActive()) {
    dividerAfter = readUpTo;
  }
  if (dividerAfter !== null) placeDivider();
  if (stick) list.scrollTop = list.scrollHeight;
  markRead();
}

function addItem(data) {
  messages.set(data.id, data);
  const item = messageItem(data);
  shown.set(data.id, item);
  insertInOrder(item, data.id);
  if (quoted.has(data.id)) quoted.delete(data.id);
  refreshQuotes(data.id);
  return item;
}

function applyEdit(frame) {
  const id = Number(frame.id);
  settleChanges(id, "edit");
  const data = messages.get(id) || quoted.get(id);
  if (!data || data.removed) return;
  data.content = String(frame.content ?? "");
  data.edited_at = frame.edited_at || data.edited_at;
  if (messages.has(id) && editing?.id !== id) redraw(id);
  refreshQuotes(id);
}

/** Removed (by its author or a moderator): a placeholder, for everyone, its author included. */
function removeMessage(id) {
  settleChanges(id, "remove");
  if (editing?.id === id) stopEdit({ keepFocus: true });
  if (replyTo === id) cancelReply();
  const data = messages.get(id);
  if (data) {
    data.removed = true;
    data.reactions = {};
    redraw(id);
    if (dividerAfter !== null) placeDivider();
  } else if (quoted.has(id)) {
    quoted.set(id, null);
  }
  refreshQuotes(id);
}

/** A moderator brought a removed message back: the frame has all of it. */
function restoreMessage(frame) {
  const data = messageData(frame);
  const known = messages.get(data.id);
  if (known) {
    Object.assign(known, data);
    redraw(data.id);
  } else if (quoted.has(data.id)) {
    quoted.set(data.id, data);
  }
  if (!known && (historyDone || data.id > oldestId())) addItem(data); // older than what is loaded: paging shows it
  refreshQuotes(data.id);
  if (dividerAfter !== null) placeDivider();
}

/** More of a streaming reply: appended where it belongs (a part the page has already is skipped). */
function applyDelta(frame) {
  const data = messages.get(Number(frame.id));
  const offset = Number(frame.offset);
  if (!data || data.removed || !data.streaming || !Number.isInteger(offset) || offset > data.content.length) return;
  data.content = data.content.slice(0, offset) + String(frame.delta ?? "");
  const stick = nearBottom();
  // Only the text is drawn again: the item's buttons (Stop) stay the same elements, so a click
  // or the keyboard focus on them survives the tokens arriving every few milliseconds.
  const content = itemOf(data.id)?.querySelector(":scope > .content");
  if (content) content.replaceChildren(renderMarkdown(data.content, me));
  else redraw(data.id);
  if (stick) list.scrollTop = list.scrollHeight;
}

// A reply's reasoning, collapsed ("Thinking"); opened, it stays open while the reply grows.
const thinkingOpen = new Set();

function thinkingFor(data) {
  const details = el("details", { className: "thinking" },
    el("summary", { text: "Thinking" }), el("div", { className: "thinking-text", text: data.reasoning }));
  details.open = thinkingOpen.has(data.id);
  details.addEventListener("toggle", () => {
    if (details.open) thinkingOpen.add(data.id); else thinkingOpen.delete(data.id);
  });
  return details;
}

function applyReasoning(frame) {
  const data = messages.get(Number(frame.id));
  const offset = Number(frame.offset);
  if (!data || data.removed || !data.streaming || !Number.isInteger(offset) || offset > data.reasoning.length) return;
  data.reasoning = data.reasoning.slice(0, offset) + String(frame.delta ?? "");
  const text = itemOf(data.id)?.querySelector(":scope > .thinking > .thinking-text");
  if (text) text.textContent = data.reasoning;
  else redraw(data.id);
}

function applyToolCall(frame) {
  const data = messages.get(Number(frame.id));
  if (!data || data.removed || !data.streaming) return;
  data.tool_calls = [...(data.tool_calls || []), String(frame.name)];
  redraw(data.id);
}

/** A reply ended: its whole content, and how it ended. */
function applyDone(frame) {
  const data = messages.get(Number(frame.id));
  if (!data || data.removed) return;
  data.content = String(frame.content ?? "");
  data.streaming = false;
  data.finish_reason = String(frame.finish_reason || "stop");
  const stick = nearBottom();
  redraw(data.id);
  if (stick) list.scrollTop = list.scrollHeight;
}

function applyReactions(frame) {
  const id = Number(frame.id);
  settleChanges(id, "react");
  const data = messages.get(id);
  if (!data || data.removed) return;
  data.reactions = reactionSet(frame.reactions);
  const row = itemOf(id)?.querySelector(":scope > .reactions");
  if (row) row.replaceWith(reactionsFor(data));
}

function showNotice(text, label) {
  const stick = nearBottom();
  const item = el("li", { className: "notice" });
  if (label) item.append(el("strong", { text: `${label}: ` }));
  item.append(document.createTextNode(text));
  const firstPending = list.querySelector(":scope > .outgoing"); // ours, not yet acknowledged: they stay last
  if (firstPending) firstPending.before(item);
  else list.append(item);
  if (stick) list.scrollTop = list.scrollHeight;
}

// ---- replies ---------------------------------------------------------------------------------

/** A message's text as a line of plain text: its Markdown rendered, then flattened. */
function excerpt(text, length = 140) {
  const flat = renderMarkdown(text).textContent.replace(/\s+/g, " ").trim();
  return flat.length > length ? `${flat.slice(0, length - 1)}…` : flat;
}

function quoteFor(id) {
  const quote = el("div", { className: "quote", attrs: { "data-reply-to": String(id) } });
  fillQuote(quote, id);
  return quote;
}

/** The quoted message as the page knows it; one it has not loaded is asked for once. */
function fillQuote(quote, id) {
  const data = messages.has(id) ? messages.get(id) : quoted.get(id);
  const label = el("span", { className: "visually-hidden", text: "In reply to " });
  if (data === undefined) {
    quote.replaceChildren(label, el("span", { className: "quote-text", text: "…" }));
    fetchQuoted(id);
    return;
  }
  const removed = data === null || data.removed;
  quote.classList.toggle("removed", removed);
  if (removed) {
    quote.replaceChildren(label, el("span", { className: "quote-text", text: "a removed message" }));
    return;
  }
  quote.replaceChildren(label, el("span", { className: "quote-author", text: data.user }), " ",
    el("span", { className: "quote-text", text: excerpt(data.content) }));
}

function refreshQuotes(id) {
  for (const quote of list.querySelectorAll(`.quote[data-reply-to="${id}"]`)) fillQuote(quote, id);
  if (replyTo === id) showReplying();
}

const fetching = new Set();

/** A message older than those loaded: the first visible one from its id on is it, or it is gone. */
async function fetchQuoted(id) {
  if (fetching.has(id)) return;
  fetching.add(id);
  try {
    const { messages: found } = await api(`/api/rooms/${slug}/messages?after=${id - 1}&limit=1`);
    if (messages.has(id)) return;
    quoted.set(id, found.length && Number(found[0].id) === id ? messageData(found[0]) : null);
    refreshQuotes(id);
  } catch {
    // Offline: the next change to a quote tries again.
  } finally {
    fetching.delete(id);
  }
}

function startReply(id) {
  replyTo = id;
  showReplying();
  box.focus();
}

function showReplying() {
  const data = messages.get(replyTo) || quoted.get(replyTo);
  replyingBar.hidden = replyTo === null;
  replyingText.textContent = !data || data.removed ? "Replying to a removed message" : `Replying to ${data.user}: ${excerpt(data.content, 80)}`;
}

function cancelReply() {
  replyTo = null;
  replyingBar.hidden = true;
}
document.getElementById("cancel-reply").addEventListener("click", () => { cancelReply(); box.focus(); });

// ---- reactions -----------------------------------------------------------------------------

let openPicker = null; // the id whose reaction picker is open

function reactionsFor(data) {
  const row = el("div", { className: "reactions" });
  const known = [...REACTIONS, ...Object.keys(data.reactions).filter((emoji) => !REACTIONS.includes(emoji))];
  for (const emoji of known) {
    const users = data.reactions[emoji];
    if (!users?.length) continue;
    const mineToo = users.includes(me);
    const chip = button(`${emoji} ${users.length}`, () => react(data.id, emoji, !mineToo), {
      "aria-pressed": String(mineToo),
      "aria-label": `${emoji} ${users.length}: ${users.join(", ")}`,
      title: users.join(", "),
      "data-emoji": emoji,
    });
    chip.className = "reaction";
    row.append(chip);
  }
  if (openPicker === data.id) row.append(pickerFor(data));
  return row;
}

function pickerFor(data) {
  const picker = el("span", { className: "picker", attrs: { id: `picker-${data.id}`, role: "group", "aria-label": "Reactions" } });
  for (const emoji of REACTIONS) {
    const mineToo = Boolean(data.reactions[emoji]?.includes(me));
    picker.append(button(emoji, () => { closePicker(); react(data.id, emoji, !mineToo); }, {
      "aria-label": `React with ${emoji}`, "aria-pressed": String(mineToo), "data-emoji": emoji,
    }));
  }
  picker.addEventListener("keydown", (event) => { if (event.key === "Escape") { event.stopPropagation(); closePicker(true); } });
  return picker;
}

function togglePicker(id, opener) {
  const wasOpen = openPicker === id;
  closePicker();
  if (wasOpen) return;
  openPicker = id;
  const data = messages.get(id);
  const row = itemOf(id)?.querySelector(":scope > .reactions");
  if (!data || !row) return;
  row.append(pickerFor(data));
  opener.setAttribute("aria-expanded", "true");
  row.querySelector(".picker button")?.focus();
}

function closePicker(refocus = false) {
  const id = openPicker;
  openPicker = null;
  if (id === null) return;
  const item = itemOf(id);
  item?.querySelector(".picker")?.remove();
  const opener = item?.querySelector('.actions button[aria-controls]');
  opener?.setAttribute("aria-expanded", "false");
  if (refocus) opener?.focus();
}

function react(id, emoji, on) {
  const data = messages.get(id);
  if (!data || data.removed) return;
  const nonce = newNonce();
  if (!send({ type: "react", id, emoji, on, nonce })) { showLocalError("Not connected: try again when the room is back.", "offline"); return; }
  // Shown at once; the room's `reactions` frame (the whole set) settles it either way.
  const before = data.reactions;
  const users = (before[emoji] || []).filter((user) => user !== me);
  data.reactions = { ...before, [emoji]: on ? [...users, me] : users };
  applyReactions({ id, reactions: data.reactions });
  changes.set(nonce, { id, kind: "react", undo: () => { data.reactions = before; applyReactions({ id, reactions: before }); } });
}

/** A change came back from the room: what this page sent for that message is settled. */
function settleChanges(id, kind) {
  for (const [nonce, change] of changes) if (change.id === id && change.kind === kind) changes.delete(nonce);
}

// ---- editing and removing your own messages ---------------------------------------------------

let editing = null; // {id, form}

function startEdit(id) {
  const data = messages.get(id);
  const item = itemOf(id);
  if (!data || !item || !canEdit(data)) return;
  stopEdit({ keepFocus: true });
  const area = el("textarea", { attrs: { rows: "2", maxlength: "4000", "aria-label": "Edit message" } });
  area.value = data.content;
  const editor = el("form", { className: "editor" }, area,
    el("span", { className: "editor-actions" },
      el("button", { className: "primary", text: "Save", attrs: { type: "submit" } }),
      button("Cancel", () => stopEdit()),
      el("small", { className: "help", text: "Enter saves · Escape cancels" })));
  editor.addEventListener("submit", (event) => { event.preventDefault(); saveEdit(); });
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); saveEdit(); }
    else if (event.key === "Escape") { event.preventDefault(); event.stopPropagation(); stopEdit(); }
  });
  item.classList.add("editing");
  item.querySelector(":scope > .content")?.replaceWith(editor);
  editing = { id, form: editor, area };
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
}

function stopEdit({ keepFocus = false } = {}) {
  if (!editing) return;
  const { id } = editing;
  editing = null;
  redraw(id);
  if (!keepFocus) box.focus();
}

function saveEdit() {
  if (!editing) return;
  const { id, area } = editing;
  const data = messages.get(id);
  const content = area.value.trim();
  if (!data || content === data.content) { stopEdit(); return; }
  if (!content) { showLocalError("A message cannot be empty: use Delete to remove it.", "empty"); return; }
  const nonce = newNonce();
  if (!send({ type: "edit", id, content, nonce })) { showLocalError("Not connected: your edit is still open; save it when the room is back.", "offline"); return; }
  const before = { content: data.content, edited_at: data.edited_at };
  data.content = content; // shown at once; the room's message_edited confirms it
  changes.set(nonce, { id, kind: "edit", undo: () => { Object.assign(data, before); redraw(id); } });
  stopEdit();
  itemOf(id)?.classList.add("saving");
}

function confirmRemove(id) {
  const item = itemOf(id);
  const actions = item?.querySelector(":scope > .meta > .actions");
  if (!actions) return;
  const keep = button("Keep it", () => { redraw(id); itemOf(id)?.querySelector('.actions button:last-child')?.focus(); });
  const confirm = el("span", { className: "actions confirm", attrs: { role: "group", "aria-label": "Delete this message?" } },
    el("span", { text: "Delete this message?" }), " ",
    button("Yes, delete", () => removeOwn(id)), " ", keep);
  actions.replaceWith(confirm);
  keep.focus();
}

function removeOwn(id) {
  const nonce = newNonce();
  if (!send({ type: "delete", id, nonce })) { showLocalError("Not connected: try again when the room is back.", "offline"); redraw(id); return; }
  changes.set(nonce, { id, kind: "remove", undo: () => redraw(id) });
  box.focus();
}

async function restoreRemoved(id) {
  try {
    await api(`/api/rooms/${slug}/messages/${id}/restore`, { method: "POST" });
  } catch (error) {
    showLocalError(`Could not restore that message: ${error.message}`);
  }
}

// ---- the read marker and the "new messages" divider ------------------------------------------

const divider = el("li", { className: "divider", attrs: { role: "separator", "aria-label": "New messages" } },
  el("span", { text: "New messages" }));

/** The divider goes before the first message from someone else after `dividerAfter`. */
function placeDivider() {
  let first = Infinity;
  if (dividerAfter !== null) {
    for (const [id, data] of messages) if (id > dividerAfter && id < first && data.user !== me && !data.removed) first = id;
  }
  if (first === Infinity) { divider.remove(); return; }
  const item = itemOf(first);
  if (item && item.previousElementSibling !== divider) item.before(divider);
}

/** The first view: at the divider when the unread part is taller than the list, else the end. */
function scrollToDividerOrEnd() {
  list.scrollTop = list.scrollHeight;
  if (!divider.isConnected) return;
  const offset = divider.getBoundingClientRect().top - list.getBoundingClientRect().top;
  if (offset < 0) list.scrollTop += offset - 8;
}

/** The newest message the person can see: the last whose top is above the list's bottom edge. */
function newestVisibleId() {
  const bottom = list.getBoundingClientRect().bottom;
  const items = list.querySelectorAll(":scope > li.message[data-id]");
  for (let i = items.length - 1; i >= 0; i -= 1) {
    if (items[i].getBoundingClientRect().top < bottom - 4) return Number(items[i].dataset.id);
  }
  return 0;
}

/** The messages mentioning this person that are on screen now. */
function visibleMentionIds() {
  const { top, bottom } = list.getBoundingClientRect();
  const ids = [];
  for (const item of list.querySelectorAll(":scope > li.message.mentions-me[data-id]")) {
    const box = item.getBoundingClientRect();
    if (box.bottom > top + 4 && box.top < bottom - 4) ids.push(Number(item.dataset.id));
  }
  return ids;
}

/** Move the read marker forward to what the person has seen, while the page is in front of them
 * (at once after a sync; while messages arrive or the list scrolls, at most every 400 ms), and
 * have the header mark read the notifications about what they see (notifications.js): a mention
 * once its message is on screen; in a direct conversation every message (opening it is reading
 * it). */
function markRead(delay = 400) {
  if (syncing || firstSync || !socket || !pageActive()) return;
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    if (!pageActive()) return;
    const upTo = newestVisibleId();
    if (upTo > readUpTo && send({ type: "read", id: upTo })) readUpTo = upTo;
    const mentions = visibleMentionIds();
    const seenUpTo = direct ? Math.max(upTo, lastId) : 0;
    if (seenUpTo || mentions.length) {
      document.dispatchEvent(new CustomEvent("room-seen", { detail: { room: slug, upTo: seenUpTo, mentions } }));
    }
  }, delay);
}

/** The person read on another device (or tab): the marker and the divider follow. */
function readElsewhere(id) {
  readUpTo = Math.max(readUpTo, id);
  if (dividerAfter !== null && id > dividerAfter) {
    dividerAfter = id;
    placeDivider();
  }
}

/** Leaving with everything read: the next message from someone else starts a new divider. */
function leaving() {
  if (dividerAfter !== null && readUpTo >= lastId) {
    dividerAfter = null;
    divider.remove();
  }
}
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") markRead(0); else leaving(); });
window.addEventListener("focus", () => markRead(0));
window.addEventListener("blur", leaving);

/** The message list is a polite live region for new messages; a page of them at once (a backlog,
 * a replay, older history) goes in with the region off, so a screen reader does not read out fifty
 * messages (the region is back on once the browser has taken the change in). */
let quietTimer = null;
function quietly(change) {
  list.setAttribute("aria-live", "off");
  try {
    change();
  } finally {
    clearTimeout(quietTimer);
    quietTimer = setTimeout(() => list.setAttribute("aria-live", "polite"), 500);
  }
}

// ---- older history ----------------------------------------------------------------------------

function oldestId() {
  let oldest = Infinity;
  for (const id of messages.keys()) oldest = Math.min(oldest, id);
  return oldest;
}

function setHistoryDone() {
  historyDone = true;
  loadOlderButton.hidden = true;
  historyStart.hidden = false;
}

/** The page before the oldest message shown, inserted above it without moving what is on screen. */
async function loadOlder() {
  if (historyDone || loadingOlder || firstSync) return;
  const oldest = oldestId();
  if (oldest === Infinity) { setHistoryDone(); return; }
  loadingOlder = true;
  loadOlderButton.disabled = true;
  loadOlderButton.textContent = "Loading older messages…";
  try {
    const { messages: page } = await api(`/api/rooms/${slug}/messages?before=${oldest}&limit=${PAGE}`);
    const fromBottom = list.scrollHeight - list.scrollTop;
    const items = [];
    for (const frame of page) {
      const data = messageData(frame);
      if (messages.has(data.id)) continue;
      messages.set(data.id, data);
      const item = messageItem(data);
      shown.set(data.id, item);
      items.push(item);
    }
    quietly(() => historyItem.after(...items)); // older history is there to scroll to, not to read out
    list.scrollTop = list.scrollHeight - fromBottom;
    for (const frame of page) { quoted.delete(Number(frame.id)); refreshQuotes(Number(frame.id)); }
    if (page.length < PAGE) setHistoryDone();
    if (dividerAfter !== null) placeDivider();
  } catch (error) {
    showLocalError(`Could not load older messages: ${error.message}`);
  } finally {
    loadingOlder = false;
    loadOlderButton.disabled = false;
    loadOlderButton.textContent = "Load older messages";
  }
}
loadOlderButton.addEventListener("click", loadOlder);

let scrollTimer = null;
list.addEventListener("scroll", () => {
  if (list.scrollTop < 200) loadOlder();
  clearTimeout(scrollTimer);
  scrollTimer = setTimeout(markRead, 150);
}, { passive: true });

/** More than 1000 changes were missed: start again from the newest page (live frames that arrive
 * meanwhile are applied as they come, and again over the page once it is in). */
async function reloadNewest() {
  reloadAfterSync = false;
  for (const item of shown.values()) item.remove();
  messages.clear();
  shown.clear();
  quoted.clear();
  closePicker();
  editing = null;
  historyDone = false;
  loadOlderButton.hidden = false;
  historyStart.hidden = true;
  replayDuringReload = [];
  try {
    const { messages: page } = await api(`/api/rooms/${slug}/messages?before=${NEWEST}&limit=${PAGE}`);
    quietly(() => { for (const frame of page) showMessage(frame); });
    const again = replayDuringReload;
    replayDuringReload = null;
    for (const frame of again) handle(frame);
    if (page.length < PAGE) setHistoryDone();
    placeDivider();
    list.scrollTop = list.scrollHeight;
  } catch {
    showLocalError("Many changes were missed while you were away: reload the page to see the room as it is now.");
  } finally {
    replayDuringReload = null;
  }
}

// ---- presence and typing ----------------------------------------------------------------------

function showPresence(users) {
  for (const name of users) people.add(String(name));
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

/** The room takes messages now: connected, and past the replay of what this page missed (so a
 * message sent before a drop and stored is recognised by its nonce before anything is resent). */
function canTransmit() {
  return !syncing && socket?.readyState === WebSocket.OPEN;
}

/** A new message into the outbox, shown at once with its nonce; sent now if the room is there. */
function sendMessage(content, answering = null) {
  const nonce = newNonce();
  const item = el("li", { className: "message mine outgoing pending", attrs: { "data-nonce": nonce } },
    el("div", { className: "meta" }, el("span", { className: "author", text: me }), " ",
      el("span", { className: "sending" })));
  if (answering !== null) item.append(quoteFor(answering));
  item.append(el("div", { className: "content", text: content }));
  list.append(item);
  list.scrollTop = list.scrollHeight;
  const entry = { nonce, item, content, replyTo: answering, timer: null, state: "queued", queued: !canTransmit() };
  pending.set(nonce, entry);
  if (entry.queued) setOutgoing(entry, "queued");
  else transmit(entry);
}

/** Send an outbox entry once; it stays pending until its echo (or an error naming its nonce). */
function transmit(entry) {
  const frame = { type: "message", content: entry.content, nonce: entry.nonce };
  if (entry.replyTo !== null) frame.reply_to = entry.replyTo;
  if (!send(frame)) { setOutgoing(entry, "queued"); return false; }
  setOutgoing(entry, "sent");
  watchPending(entry);
  return true;
}

/** Back in the room: what waited in the outbox goes out, once each, in the order written. */
function flushOutbox() {
  for (const entry of pending.values()) if (entry.state === "queued" && !transmit(entry)) return;
}

/** An outbox entry's state on the page: waiting for the room, sent, or failed with a way out. */
function setOutgoing(entry, state, reason = "") {
  entry.state = state;
  const { item } = entry;
  item.classList.toggle("pending", state !== "failed");
  item.classList.toggle("queued", state === "queued");
  item.classList.toggle("failed", state === "failed");
  const status = item.querySelector(".sending");
  if (state === "queued") status.replaceChildren("waiting for the connection…");
  else if (state === "sent") status.replaceChildren("sending…");
  else {
    const retry = el("button", { className: "link", text: "Retry", attrs: { type: "button" } });
    retry.addEventListener("click", () => {
      if (pending.get(entry.nonce) !== entry) return;
      entry.queued = true; // a refusal now fails in place again, the box is the person's
      // The same nonce: the room stored nothing under it (refused), or its late echo settles it.
      if (canTransmit()) transmit(entry);
      else setOutgoing(entry, "queued");
    });
    const discard = el("button", { className: "link", text: "Discard", attrs: { type: "button" } });
    discard.addEventListener("click", () => { dropOutgoing(entry); box.focus(); });
    status.replaceChildren(`not sent${reason ? `: ${reason}` : ""} · `, retry, " · ", discard);
  }
}

function dropOutgoing(entry) {
  clearTimeout(entry.timer);
  entry.item.remove();
  pending.delete(entry.nonce);
}

/** A message not echoed a few seconds after a sync is marked failed, with Retry. */
function watchPending(entry) {
  clearTimeout(entry.timer);
  entry.timer = setTimeout(() => {
    if (pending.get(entry.nonce) !== entry || !socket || entry.state !== "sent") return;
    setOutgoing(entry, "failed", "no answer from the room");
  }, UNACKED_MS);
}

/** The room refused a message: one just typed goes back into an empty box (to change and send
 * again); one that waited in the outbox, or any when the box holds something, fails in place. */
function refusePending(nonce, reason) {
  const entry = nonce ? pending.get(nonce) : undefined;
  if (!entry) return;
  clearTimeout(entry.timer);
  if (entry.queued || box.value.trim()) {
    setOutgoing(entry, "failed", reason);
    return;
  }
  dropOutgoing(entry);
  box.value = entry.content;
  if (entry.replyTo !== null) startReply(entry.replyTo);
}

function showLocalError(text, code = "local") {
  errorBox.dataset.code = code;
  errorBox.textContent = text;
}

function showError(frame) {
  const change = frame.nonce ? changes.get(frame.nonce) : undefined;
  if (change) { // an edit, removal or reaction the room refused: show it as it was
    changes.delete(frame.nonce);
    change.undo();
  }
  if (frame.code === "rate_limited") {
    refusePending(frame.nonce, "too many messages at once");
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
    not_found: "That message is not there any more.",
    forbidden: "You may not change that message.",
    edit_window_passed: "It is too late to edit that message.",
    bad_emoji: "That reaction is not available here.",
  };
  const text = texts[frame.code] || frame.detail || frame.code;
  refusePending(frame.nonce, text);
  showLocalError(text, frame.code);
}

/** "You can send again in 3 s", counting down, from the error's retry_after. */
function tickRateLimit() {
  clearTimeout(rateTimer);
  const left = rateLimitedUntil - Date.now();
  if (left <= 0) {
    rateLimitedUntil = 0;
    sendButton.disabled = locked || finished; // offline too: the outbox keeps it
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
  sendMessage(content, replyTo); // now, or from the outbox once the room is back
  if (errorBox.dataset.code !== "room_locked") clearError();
  box.value = "";
  cancelReply();
  mentions.close();
  typingStopped();
  box.focus(); // the composer keeps the focus, whether Enter or the button sent it
});

/** The people one may @mention: who is online, who wrote here, and a private room's members. */
const people = new Set();
const mentions = new MentionBox(box, document.getElementById("mention-list"), () => {
  const names = new Set(people);
  for (const data of messages.values()) names.add(data.user);
  names.delete(me);
  return [...names];
});
if (root.dataset.private === "true") {
  api(`/api/rooms/${slug}/members`).then(({ members }) => {
    for (const member of members) people.add(String(member.username));
  }).catch(() => {});
}

/** The newest of the person's own messages they may still edit. */
function lastEditable() {
  let found = null;
  for (const data of messages.values()) if (canEdit(data) && (!found || data.id > found.id)) found = data;
  return found;
}

box.addEventListener("keydown", (event) => {
  if (mentions.handleKey(event)) return;
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  } else if (event.key === "ArrowUp" && !box.value && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey) {
    const last = lastEditable(); // as in Slack: up-arrow in an empty box edits your last message
    if (last) { event.preventDefault(); startEdit(last.id); }
  } else if (event.key === "Escape" && replyTo !== null) {
    event.preventDefault();
    cancelReply();
  }
});
box.addEventListener("input", () => { if (box.value.trim()) typingActivity(); else typingStopped(); });

// ---- a summary of the room, as a task ------------------------------------------------------------

// The room's assistant, for its owner and staff (docs/protocol.md, "The assistant in a room"):
// turned on with the room's model, or the first the server serves when it has none yet.
const assistantToggle = document.getElementById("assistant-toggle");
assistantToggle?.addEventListener("change", async () => {
  const on = assistantToggle.checked;
  assistantToggle.disabled = true;
  try {
    const body = { assistant: on };
    if (on) {
      const models = await api("/v1/models");
      const current = config.assistant_model;
      body.assistant_model = current || models?.data?.[0]?.id;
    }
    const room = await api(`/api/rooms/${encodeURIComponent(slug)}`, { method: "PATCH", body });
    config.assistant_model = room.assistant_model;
    assistantToggle.checked = room.assistant === true;
  } catch (error) {
    assistantToggle.checked = !on;
    showError({ code: error.code || "error", detail: error.detail || "The assistant could not be changed." });
  } finally {
    assistantToggle.disabled = false;
  }
});

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

// The message box is where a room is used: opening the room puts the focus there (not on a
// phone, where focusing would raise the keyboard over the room).
if (!box.disabled && !matchMedia("(pointer: coarse)").matches) box.focus();
connect();

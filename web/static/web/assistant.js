// The assistant (docs/protocol.md, "Token streams"): the reply renders token by token from
// POST /api/assistant/stream, read with fetch() (EventSource cannot POST). A dropped stream
// resumes from GET /api/streams/<id>/events with Last-Event-ID, so the text continues where
// it stopped; Stop cancels the generation wherever it runs, also after a reload (the reply
// being generated is remembered in sessionStorage and followed from its start).
//
// A reply is Markdown (markdown.js: marked, then DOMPurify; raw HTML stays text). The typed
// events of the stream show as they come: `status` as a line while the reply streams,
// `reasoning` in a collapsed "Thinking" section, each `tool_call` and each `tool_result` as one
// line (name and arguments, name and output), `sources` as a list of links (http(s) URLs only)
// under the reply; /api/assistant/stream offers the model no tools today, so calls and
// results come from an upstream's own (or a resumed /v1 stream). The
// model is picked from GET /v1/models and sent as `model` with the request, which answers with
// that model's backend (docs/protocol.md, "Models"). Copy puts a reply's Markdown text on the
// clipboard; Regenerate
// asks the last question again. Everything else (the user's own text, tool arguments,
// reasoning) is inserted as text only.
import { api, ApiError, backoff, csrfToken, el, readEventStream, sleepOrOnline } from "./common.js";
import { renderMarkdown } from "./markdown.js";

const transcript = document.getElementById("transcript");
const state = document.getElementById("state");
const errorBox = document.getElementById("error");
const form = document.getElementById("composer");
const box = document.getElementById("message");
const sendButton = form.querySelector("button[type=submit]");
const stopButton = document.getElementById("stop");
const maxTokensInput = document.getElementById("max-tokens");
const sidebar = document.getElementById("conversations");
const newButton = document.getElementById("new-conversation");
const modelPicker = document.getElementById("model");

const SILENCE_MS = 20000; // the server sends a keep-alive after 15 idle seconds
const ACTIVE_KEY = "assistant.active"; // the reply being generated, to pick it up after a reload
const MODEL_KEY = "assistant.model"; // the model last picked
const RENDER_MS = 50; // a streaming reply is re-rendered as Markdown at most this often

let conversationId = new URLSearchParams(location.search).get("c");
let reply = null; // the reply being streamed: {streamId, lastSeq, nextIndex, item, text, raw, abort, ...}
const replyText = new WeakMap(); // an assistant turn -> its Markdown source (what Copy copies)

function setState(name, text) {
  state.dataset.state = name;
  state.textContent = text;
}

function showError(text) {
  errorBox.textContent = text;
}

function setBusy(busy) {
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
  newButton.disabled = busy;
  for (const button of transcript.querySelectorAll("button.regenerate")) button.disabled = busy;
  transcript.setAttribute("aria-busy", String(busy));
}

// ---- the transcript ------------------------------------------------------------------------------

function turnItem(role, content) {
  const text = el("div", { className: "content" });
  const meta = el("div", { className: "meta" }, el("span", { className: "author", text: role === "user" ? "You" : "Assistant" }));
  const item = el("li", { className: `turn ${role}` }, meta);
  if (role === "assistant") {
    // Filled by `reasoning` and `tool_call` events; hidden until the first one comes.
    const thinking = el("details", { className: "thinking", attrs: { hidden: "" } },
      el("summary", { text: "Thinking" }), el("div", { className: "thinking-text" }));
    const tools = el("ul", { className: "tool-calls", attrs: { hidden: "", "aria-label": "Tool calls" } });
    const results = el("ul", { className: "tool-results", attrs: { hidden: "", "aria-label": "Tool results" } });
    const status = el("p", { className: "reply-status", attrs: { hidden: "" } });
    const sources = el("nav", { className: "sources", attrs: { hidden: "", "aria-label": "Sources" } },
      el("span", { className: "sources-label", text: "Sources" }), el("ol"));
    item.append(status, thinking, tools, results, text, sources);
    setReplyText(item, text, content);
  } else {
    text.textContent = content;
    item.append(text);
  }
  transcript.append(item);
  transcript.scrollTop = transcript.scrollHeight;
  return { item, text };
}

/** A reply's Markdown source, rendered (marked + DOMPurify) into its content. */
function setReplyText(item, text, markdown) {
  replyText.set(item, markdown);
  text.replaceChildren(renderMarkdown(markdown));
}

/** Copy (every finished reply) and Regenerate (the last one only) in the reply's header. */
function addReplyActions(item) {
  const meta = item.querySelector(".meta");
  if (meta.querySelector(".reply-actions")) return;
  const copy = el("button", { className: "link copy", text: "Copy", attrs: { type: "button", title: "Copy the reply's text (Markdown)" } });
  const regenerate = el("button", { className: "link regenerate", text: "Regenerate", attrs: { type: "button", title: "Ask the last question again" } });
  meta.append(el("span", { className: "reply-actions" }, copy, regenerate));
  showRegenerateOnLast();
}

function showRegenerateOnLast() {
  const buttons = [...transcript.querySelectorAll("li.assistant button.regenerate")];
  buttons.forEach((button, i) => { button.hidden = i !== buttons.length - 1; button.disabled = Boolean(reply); });
}

transcript.addEventListener("click", async (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  const item = button.closest("li.assistant");
  if (button.classList.contains("copy")) {
    try {
      await navigator.clipboard.writeText(replyText.get(item) ?? item.querySelector(".content").innerText);
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    } catch (error) {
      showError(`Could not copy: ${error.message}`);
    }
  } else if (button.classList.contains("regenerate")) {
    const question = [...transcript.querySelectorAll("li.user .content")].at(-1)?.textContent;
    if (question && !reply) ask(question);
  }
});

const ENDINGS = {
  cancelled: "Stopped.",
  abandoned: "Stopped.",
  length: "Cut off at the token limit.",
  error: "The reply failed.",
};

function noteOn(item, text, kind = "note") {
  item.querySelector(".meta").append(el("span", { className: kind, text }));
}

/** Screen readers hear a reply once, when it is finished (the transcript itself is not a live
 * region: a streaming reply would be read out token by token). */
const announcer = document.getElementById("announcer");
function announce(item) {
  const text = item.querySelector(".content").innerText.replace(/\s+/g, " ").trim();
  const notes = [...item.querySelectorAll(".meta .note")].map((note) => note.textContent).join(" ");
  announcer.textContent = "";
  if (text || notes) setTimeout(() => { announcer.textContent = `Assistant: ${text}${notes ? ` ${notes}` : ""}`; }, 50);
}

// ---- streaming a reply ------------------------------------------------------------------------------

/** Re-render the streaming reply's Markdown soon (at most every RENDER_MS). */
function scheduleRender(current) {
  if (current.renderTimer) return;
  current.renderTimer = setTimeout(() => {
    current.renderTimer = null;
    const stick = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 80;
    setReplyText(current.item, current.text, current.raw);
    if (stick) transcript.scrollTop = transcript.scrollHeight;
  }, RENDER_MS);
}

function showReasoning(current, text) {
  const thinking = current.item.querySelector(".thinking");
  thinking.hidden = false;
  thinking.querySelector(".thinking-text").append(text); // a text node
}

/** One line per tool call, `name(arguments)`, growing with the call's argument pieces. */
function showToolCall(current, data) {
  const list = current.item.querySelector(".tool-calls");
  list.hidden = false;
  let call = current.calls.get(data.index);
  if (!call) {
    const name = el("code", { className: "tool-name" });
    const args = el("code", { className: "tool-arguments" });
    list.append(el("li", {}, el("span", { className: "tool-label", text: "Tool call " }), name, " ", args));
    call = { name, args };
    current.calls.set(data.index, call);
  }
  if (data.name) call.name.textContent = data.name;
  if (data.arguments) call.args.textContent += data.arguments;
}

/** One line per tool result, `name output`, the output on one line (the full text in its title). */
function showToolResult(current, data) {
  const list = current.item.querySelector(".tool-results");
  list.hidden = false;
  const output = String(data.content ?? "").replace(/\s+/g, " ").trim();
  const line = el("li", {}, el("span", { className: "tool-label", text: data.name ? "Result of " : "Result " }));
  if (data.name) line.append(el("code", { className: "tool-name", text: data.name }), " ");
  line.append(el("code", { className: "tool-output", text: output, attrs: { title: output } }));
  list.append(line);
}

/** What the model is doing ("thinking"), shown until the reply ends. */
function showStatus(current, data) {
  const status = current.item.querySelector(".reply-status");
  const text = String(data.status || "");
  status.textContent = text ? `${text[0].toUpperCase()}${text.slice(1)}…` : "";
  status.hidden = !text;
}

/** The sources as links; a URL that is not http(s) (javascript:, data:) is shown as text only. */
function showSources(current, data) {
  const nav = current.item.querySelector(".sources");
  const list = nav.querySelector("ol");
  for (const source of data.sources || []) {
    let url = null;
    try { url = new URL(source.url); } catch { /* not a URL: text only */ }
    const title = String(source.title || source.url || "");
    const link = url && (url.protocol === "https:" || url.protocol === "http:")
      ? el("a", { text: title, attrs: { href: url.href, rel: "noopener noreferrer", target: "_blank" } })
      : el("span", { text: title });
    list.append(el("li", {}, link));
  }
  nav.hidden = !list.children.length;
}

/** Handle one SSE event of the reply; true once it is the last one. */
function onEvent(current, event) {
  const seq = Number(String(event.id || "").split(":")[1]);
  if (Number.isInteger(seq)) current.lastSeq = Math.max(current.lastSeq, seq);
  let data;
  try { data = JSON.parse(event.data); } catch { return false; }
  if (event.event === "start") {
    current.streamId = data.stream_id;
    setConversation(data.conversation_id);
    sessionStorage.setItem(ACTIVE_KEY, JSON.stringify({ stream: data.stream_id, conversation: data.conversation_id }));
  } else if (event.event === "token") {
    if (data.index < current.nextIndex) return false; // already shown (a resume overlaps nothing, but be sure)
    current.nextIndex = data.index + 1;
    current.raw += data.token;
    scheduleRender(current);
  } else if (event.event === "reasoning") {
    showReasoning(current, data.text || "");
  } else if (event.event === "tool_call") {
    showToolCall(current, data);
  } else if (event.event === "tool_result") {
    showToolResult(current, data);
  } else if (event.event === "status") {
    showStatus(current, data);
  } else if (event.event === "sources") {
    showSources(current, data);
  } else if (event.event === "done") {
    clearTimeout(current.renderTimer);
    current.renderTimer = null;
    current.raw = data.content || "";
    setReplyText(current.item, current.text, current.raw); // the whole reply, as stored
    if (data.reasoning && !current.item.querySelector(".thinking-text").textContent) showReasoning(current, data.reasoning);
    for (const [index, call] of (data.tool_calls || []).entries()) {
      if (!current.calls.has(index)) showToolCall(current, { index, name: call.function?.name, arguments: call.function?.arguments });
    }
    if (ENDINGS[data.finish_reason]) noteOn(current.item, ENDINGS[data.finish_reason]);
    current.finished = true;
    return true;
  } else if (event.event === "error") {
    noteOn(current.item, "The reply failed.");
    showError(`The reply failed: ${data.detail || data.code}`);
    return true;
  }
  return false;
}

/** Read a response's events into the reply; true when the final event came. */
async function consume(current, response) {
  let silence = null;
  const watch = () => { clearTimeout(silence); silence = setTimeout(() => current.abort?.abort(), SILENCE_MS); };
  watch();
  try {
    for await (const event of readEventStream(response, watch)) {
      if (onEvent(current, event)) return true;
    }
    return false;
  } finally {
    clearTimeout(silence);
  }
}

function newReply(streamId, item, text) {
  return { streamId, lastSeq: -1, nextIndex: 0, item, text, raw: "", calls: new Map(), renderTimer: null, finished: false, abort: null };
}

function startRequest(current, url, init) {
  current.abort = new AbortController();
  return fetch(url, { ...init, signal: current.abort.signal, credentials: "same-origin" });
}

/** Follow the reply to its end, resuming with Last-Event-ID after every drop. */
async function follow(current, firstResponse) {
  let response = firstResponse;
  let attempt = 0;
  for (;;) {
    if (response) {
      try {
        if (await consume(current, response)) return;
      } catch {
        // The network dropped (or went silent): resume below.
      }
    }
    if (!current.streamId) { showError("The connection dropped before the reply started."); return; }
    setState("reconnecting", navigator.onLine === false ? "Offline: the reply continues when you are back" : "Reconnecting…");
    await sleepOrOnline(attempt ? backoff(attempt - 1) : 0);
    attempt += 1;
    if (navigator.onLine === false) { response = null; continue; }
    const headers = { Accept: "text/event-stream" };
    if (current.lastSeq >= 0) headers["Last-Event-ID"] = `${current.streamId}:${current.lastSeq}`;
    try {
      response = await startRequest(current, `/api/streams/${current.streamId}/events`, { headers });
    } catch {
      response = null;
      continue;
    }
    if (response.status === 404) { showError("This reply is no longer available."); return; }
    if (!response.ok) { response = null; continue; }
    attempt = 0;
    setState("streaming", "Replying…");
  }
}

async function ask(content) {
  showError("");
  const maxTokens = maxTokensInput.value ? Number(maxTokensInput.value) : null;
  turnItem("user", content);
  const { item, text } = turnItem("assistant", "");
  item.classList.add("streaming");
  const current = newReply(null, item, text);
  reply = current;
  setBusy(true);
  setState("streaming", "Replying…");
  try {
    let response;
    try {
      response = await startRequest(current, "/api/assistant/stream", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({ message: content, conversation_id: conversationId, max_tokens: maxTokens, ...chosenModel() }),
      });
    } catch {
      throw new ApiError(0, "network", "Could not reach the server; your message is back in the box.");
    }
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new ApiError(response.status, body?.error?.code, body?.error?.detail || `HTTP ${response.status}`);
    }
    current.streamId = response.headers.get("X-Stream-Id");
    await follow(current, response);
  } catch (error) {
    item.previousElementSibling?.remove();
    item.remove();
    if (!box.value.trim()) box.value = content;
    showError(error.code === "busy" ? "The assistant is busy; try again in a moment." : error.message);
  } finally {
    finishReply(current);
  }
}

function finishReply(current) {
  clearTimeout(current.renderTimer);
  current.item.querySelector(".reply-status").hidden = true; // a status describes a reply in progress
  current.item.classList.remove("streaming");
  if (reply === current) reply = null;
  if (current.item.isConnected) {
    if (!current.finished) setReplyText(current.item, current.text, current.raw); // what came before a failure
    addReplyActions(current.item);
    announce(current.item);
  }
  sessionStorage.removeItem(ACTIVE_KEY);
  setBusy(false);
  setState("idle", "Ready");
  loadSidebar();
}

stopButton.addEventListener("click", async () => {
  const current = reply;
  if (!current?.streamId) return;
  setState("stopping", "Stopping…");
  try {
    await api(`/api/streams/${current.streamId}/cancel`, { method: "POST" });
  } catch (error) {
    showError(`Could not stop the reply: ${error.message}`);
    if (reply === current) setState("streaming", "Replying…");
  }
});

// The browser knows the network is gone: drop the request now and resume when it is back.
window.addEventListener("offline", () => reply?.abort?.abort());

// ---- conversations ------------------------------------------------------------------------------------

function setConversation(id) {
  conversationId = id;
  const url = new URL(location.href);
  if (id) url.searchParams.set("c", id);
  else url.searchParams.delete("c");
  history.replaceState(null, "", url);
  for (const link of sidebar.querySelectorAll("a")) {
    if (link.dataset.id === id) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function loadSidebar() {
  try {
    const { conversations } = await api("/api/conversations/");
    sidebar.replaceChildren(...conversations.map((conversation) => {
      const link = el("a", { text: conversation.title || "(untitled)", attrs: { href: `/assistant/?c=${conversation.id}`, "data-id": conversation.id } });
      if (conversation.id === conversationId) link.setAttribute("aria-current", "page");
      return el("li", {}, link);
    }));
    if (!conversations.length) sidebar.replaceChildren(el("li", { className: "empty", text: "None yet." }));
  } catch {
    // Offline: the list comes back with the next reply.
  }
}

async function openConversation(id) {
  showError("");
  transcript.replaceChildren();
  setConversation(id);
  if (!id) { box.focus(); return; }
  let conversation;
  try {
    conversation = await api(`/api/conversations/${id}`);
  } catch (error) {
    showError(error.status === 404 ? "No such conversation." : `Could not load the conversation: ${error.message}`);
    setConversation(null);
    return;
  }
  for (const message of conversation.messages) {
    if (message.role === "system") continue;
    const { item } = turnItem(message.role, message.content);
    if (message.role === "assistant" && ENDINGS[message.finish_reason]) noteOn(item, ENDINGS[message.finish_reason]);
    if (message.role === "assistant") addReplyActions(item);
  }
  // A reply that was still being generated when the page was left: follow it from its start.
  const active = JSON.parse(sessionStorage.getItem(ACTIVE_KEY) || "null");
  const last = conversation.messages.at(-1);
  if (active?.stream && active.conversation === id && last?.role === "user") resumeAfterReload(active.stream);
}

async function resumeAfterReload(streamId) {
  const { item, text } = turnItem("assistant", "");
  item.classList.add("streaming");
  const current = newReply(streamId, item, text);
  reply = current;
  setBusy(true);
  setState("streaming", "Replying…");
  try {
    await follow(current, null);
  } finally {
    finishReply(current);
  }
}

sidebar.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-id]");
  if (!link) return;
  event.preventDefault();
  if (reply) { showError("A reply is still coming: stop it first, or wait."); return; }
  openConversation(link.dataset.id);
});

newButton.addEventListener("click", () => { if (!reply) openConversation(null); });

// ---- the composer ----------------------------------------------------------------------------------

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const content = box.value.trim();
  if (!content || reply) return;
  box.value = "";
  ask(content);
});

box.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  } else if (event.key === "Escape" && reply) {
    stopButton.click();
  }
});

// ---- the model picker ----------------------------------------------------------------------------

/** {model} for the request body: the picked one, or nothing (the server's default). */
function chosenModel() {
  return modelPicker.value ? { model: modelPicker.value } : {};
}

async function loadModels() {
  let models = [];
  try {
    ({ data: models } = await api("/v1/models"));
  } catch {
    // Unreachable now: the server's default model answers ("Default" stays the only choice).
  }
  if (!models?.length) return;
  const saved = localStorage.getItem(MODEL_KEY);
  modelPicker.replaceChildren(...models.map((model) => el("option", { text: model.id, attrs: { value: model.id } })));
  if (models.some((model) => model.id === saved)) modelPicker.value = saved;
}

modelPicker.addEventListener("change", () => localStorage.setItem(MODEL_KEY, modelPicker.value));

loadModels();
loadSidebar();
openConversation(conversationId);

// A task's progress (docs/protocol.md, "Other endpoints"), fed by GET /api/tasks/<id>/events. EventSource resumes by
// itself with Last-Event-ID; when it gives up (the server answered with an error), a new one
// starts after a back-off with ?last_event_id= so nothing is shown twice.
import { api, backoff, el } from "./common.js";

const root = document.getElementById("task");
const taskId = root.dataset.id;
const bar = document.getElementById("progress");
const fill = bar.querySelector(".bar");
const percent = document.getElementById("percent");
const statusText = document.getElementById("status");
const step = document.getElementById("step");
const connection = document.getElementById("connection");
const resultSection = document.getElementById("result-section");
const resultBox = document.getElementById("result");
const errorBox = document.getElementById("error");
const cancelButton = document.getElementById("cancel");

const FINISHED = ["succeeded", "failed", "cancelled"];
const STATUS_TEXT = { queued: "Queued", running: "Running", succeeded: "Done", failed: "Failed", cancelled: "Cancelled" };
let lastEventId = "";
let source = null;
let attempt = 0;

function setProgress(value) {
  const clamped = Math.max(0, Math.min(100, Math.round(Number(value) || 0)));
  bar.setAttribute("aria-valuenow", String(clamped));
  bar.setAttribute("aria-valuetext", `${clamped}%`);
  fill.style.width = `${clamped}%`;
  percent.textContent = `${clamped} %`;
}

function setStatus(status) {
  statusText.dataset.status = status;
  statusText.textContent = STATUS_TEXT[status] || status;
  bar.dataset.status = status;
  cancelButton.hidden = FINISHED.includes(status);
}

function showResult(result) {
  resultSection.hidden = false;
  if (result && typeof result === "object" && typeof result.summary === "string") {
    resultBox.replaceChildren(
      el("p", { className: "summary", text: result.summary || "(empty summary)" }),
      el("p", { className: "muted", text: `From ${result.messages ?? "?"} messages.` }));
    return;
  }
  const list = el("dl");
  if (result && typeof result === "object" && !Array.isArray(result)) {
    for (const [key, value] of Object.entries(result)) {
      list.append(el("dt", { text: key }), el("dd", { text: typeof value === "string" ? value : JSON.stringify(value) }));
    }
    resultBox.replaceChildren(list);
  } else {
    resultBox.replaceChildren(el("pre", { text: JSON.stringify(result, null, 2) }));
  }
}

function finish(status, { result, error } = {}) {
  source?.close();
  source = null;
  connection.textContent = "";
  setStatus(status);
  if (status === "succeeded") {
    setProgress(100);
    step.textContent = "";
    showResult(result);
  } else {
    errorBox.textContent = status === "cancelled" ? "The task was cancelled." : `The task failed: ${error || "unknown error"}`;
  }
}

function listen() {
  const query = lastEventId ? `?last_event_id=${encodeURIComponent(lastEventId)}` : "";
  const es = new EventSource(`/api/tasks/${taskId}/events${query}`);
  source = es;
  const remember = (event) => { if (event.lastEventId) lastEventId = event.lastEventId; };
  es.onopen = () => { attempt = 0; connection.textContent = ""; };
  es.addEventListener("progress", (event) => {
    remember(event);
    const data = JSON.parse(event.data);
    setProgress(data.progress);
    setStatus(data.status);
    step.textContent = data.message ? `· ${data.message}` : "";
  });
  es.addEventListener("complete", (event) => { remember(event); finish("succeeded", JSON.parse(event.data)); });
  es.addEventListener("failed", (event) => {
    remember(event);
    const data = JSON.parse(event.data);
    finish(data.status || "failed", data);
  });
  es.onerror = () => {
    if (es !== source) return;
    if (es.readyState === EventSource.CONNECTING) {
      connection.textContent = "Connection lost: reconnecting…";
      return;
    }
    // EventSource gave up (an HTTP error): try again ourselves, with back-off.
    es.close();
    source = null;
    const delay = backoff(attempt++);
    connection.textContent = `Connection lost: retrying in ${Math.ceil(delay / 1000)} s…`;
    setTimeout(start, delay);
  };
}

async function start() {
  try {
    const task = await api(`/api/tasks/${taskId}`);
    setProgress(task.progress);
    if (FINISHED.includes(task.status)) { finish(task.status, task); return; }
    setStatus(task.status);
  } catch (error) {
    if (error.status === 404) { errorBox.textContent = "No such task."; return; }
    // Offline or a hiccup: the event stream below says the rest.
  }
  listen();
}

cancelButton.addEventListener("click", async () => {
  cancelButton.disabled = true;
  try {
    await api(`/api/tasks/${taskId}`, { method: "DELETE" });
  } catch (error) {
    errorBox.textContent = `Could not cancel: ${error.message}`;
    cancelButton.disabled = false;
  }
});

// The server-rendered progress, drawn here: the Content-Security-Policy allows no style attribute.
setProgress(bar.getAttribute("aria-valuenow"));
setStatus(statusText.dataset.status);
start();

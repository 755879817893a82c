// A live room: reconnects with back-off and jitter, resumes with last_id, never shows a
// message twice. Everything user-written is inserted as text, never as markup.
const slug = document.getElementById("room-script").dataset.slug;
const list = document.getElementById("messages");
const state = document.getElementById("state");
const errorBox = document.getElementById("error");
const box = document.getElementById("message");
const seen = new Set();
let lastId = 0, socket = null, attempt = 0;

function show(frame) {
  if (seen.has(frame.id)) return;
  seen.add(frame.id);
  lastId = Math.max(lastId, frame.id);
  const item = document.createElement("li");
  item.dataset.id = frame.id;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${frame.user} ${new Date(frame.ts).toLocaleTimeString()}`;
  item.append(meta, document.createTextNode(frame.content));
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws/rooms/${slug}/` + (lastId ? `?last_id=${lastId}` : ""));
  state.textContent = "connecting";
  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "message") show(frame);
    else if (frame.type === "synced") { state.textContent = "live"; attempt = 0; }
    else if (frame.type === "presence") document.getElementById("presence").textContent = frame.users.join(", ");
    else if (frame.type === "typing") document.getElementById("typing").textContent = frame.is_typing ? `${frame.user} is typing…` : "";
    else if (frame.type === "message_deleted") list.querySelector(`li[data-id="${frame.id}"]`)?.remove();
    else if (frame.type === "notice") { const li = document.createElement("li"); li.textContent = `Notice: ${frame.content}`; list.append(li); }
    else if (frame.type === "ping") socket.send('{"type":"pong"}');
    else if (frame.type === "error") errorBox.textContent = frame.detail + (frame.retry_after ? ` (try again in ${frame.retry_after}s)` : "");
  };
  socket.onclose = (event) => {
    state.textContent = `disconnected (${event.code})`;
    if ([4001, 4003, 4004].includes(event.code)) return;
    const delay = Math.min(30000, 500 * 2 ** attempt++) * (0.5 + Math.random() / 2);
    setTimeout(connect, delay);
  };
}

document.getElementById("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = box.value.trim();
  if (!content || socket?.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({type: "message", content, nonce: crypto.randomUUID()}));
  box.value = "";
  errorBox.textContent = "";
});
box.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); document.getElementById("composer").requestSubmit(); }
});
connect();

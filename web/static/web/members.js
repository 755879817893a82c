// A private room's members (docs/protocol.md, "Other endpoints"): the list (GET
// /api/rooms/<slug>/members), inviting someone (POST, open to members and staff), removing a
// member (DELETE /api/rooms/<slug>/members/<username>: the owner and staff may remove anyone) and
// leaving (the same DELETE, on oneself). A removed member's sockets close with 4003 (room.js says
// so); the list refreshes after each change here, every few seconds while the page is in view
// (someone else invited or removed), and whenever the page comes back into view.
import { api, el } from "./common.js";

const root = document.getElementById("room");
const slug = root.dataset.slug;
const me = root.dataset.user;
const config = JSON.parse(document.getElementById("room-config").textContent);
const isStaff = config.staff === true;
const list = document.getElementById("members");
const count = document.getElementById("member-count");
const inviteForm = document.getElementById("invite");
const inviteInput = document.getElementById("invite-user");
const status = document.getElementById("members-status");
const errorBox = document.getElementById("members-error");
const leaveButton = document.getElementById("leave");

let members = [];

function say(text) {
  errorBox.textContent = "";
  status.textContent = text;
}

function fail(text) {
  status.textContent = "";
  errorBox.textContent = text;
}

function render() {
  const owner = members.some((member) => member.username === me && member.role === "owner");
  list.replaceChildren(...members.map((member) => {
    const item = el("li", { attrs: { "data-user": member.username } },
      el("span", { text: member.username === me ? `${member.username} (you)` : member.username }));
    if (member.role === "owner") item.append(el("span", { className: "role", text: "owner" }));
    if (member.username !== me && (owner || isStaff)) {
      const remove = el("button", { className: "link", text: "Remove", attrs: { type: "button", "aria-label": `Remove ${member.username}` } });
      remove.addEventListener("click", () => removeMember(member.username));
      item.append(remove);
    }
    return item;
  }));
  count.textContent = `(${members.length})`;
}

async function load() {
  try {
    ({ members } = await api(`/api/rooms/${slug}/members`));
    render();
  } catch (error) {
    if (error.status !== 404) fail(`Could not load the members: ${error.message}`);
  }
}

async function removeMember(username) {
  try {
    await api(`/api/rooms/${slug}/members/${encodeURIComponent(username)}`, { method: "DELETE" });
    say(`${username} was removed from the room.`);
  } catch (error) {
    fail(`Could not remove ${username}: ${error.message}`);
  }
  await load();
  inviteInput.focus();
}

inviteForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = inviteInput.value.trim();
  if (!user) return;
  try {
    await api(`/api/rooms/${slug}/members`, { method: "POST", body: { user } });
    inviteInput.value = "";
    say(`${user} is a member now.`);
  } catch (error) {
    fail(error.code === "no_such_user" ? `There is nobody called ${user}.` : `Could not invite ${user}: ${error.message}`);
  }
  await load();
});

leaveButton.addEventListener("click", async () => {
  const sole = members.length === 1;
  if (!leaveButton.dataset.confirming) { // a second press confirms: leaving cannot be undone from here
    leaveButton.dataset.confirming = "true";
    leaveButton.textContent = sole ? "Leave? Nobody will be left to invite you back" : "Leave? Only a member can invite you back";
    return;
  }
  try {
    await api(`/api/rooms/${slug}/members/${encodeURIComponent(me)}`, { method: "DELETE" });
    location.href = "/";
  } catch (error) {
    fail(`Could not leave: ${error.message}`);
  }
});
leaveButton.addEventListener("blur", () => {
  delete leaveButton.dataset.confirming;
  leaveButton.textContent = "Leave this room";
});

const POLL_MS = 10000;
let pollTimer = null;
async function poll() {
  clearTimeout(pollTimer);
  if (document.visibilityState === "visible") await load();
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, POLL_MS);
}
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") poll(); });
poll();

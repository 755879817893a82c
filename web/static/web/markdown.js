// Message text as safe Markdown (docs/security.md, "XSS in pages"): marked parses it, DOMPurify
// sanitises the result into a DOM fragment. No raw HTML passes (it is shown as the text it is),
// no images are loaded (an image becomes a link to it), links open in a new tab with
// rel="noopener noreferrer nofollow", and only http(s), mailto and same-site links keep
// their target. The fragment is built by DOMPurify, never through innerHTML here.
import { Marked } from "./vendor/marked.esm.js";
import "./vendor/purify.min.js"; // a UMD build: it sets globalThis.DOMPurify

const DOMPurify = globalThis.DOMPurify;

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const marked = new Marked({
  gfm: true,
  breaks: true, // one line break is a line break, as people type in a chat
  async: false,
  renderer: {
    // Raw HTML is text: `<b>` shows as "<b>", as it always did in this room.
    html({ text, block }) {
      const shown = escapeHtml(text);
      return block ? `<p>${shown.replace(/\n+$/, "").replace(/\n/g, "<br>")}</p>\n` : shown;
    },
    // The policy allows no image from elsewhere (img-src 'self'), and a chat should not load
    // what others point it at: an image is a link to it, named by its alt text.
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
  },
});

const SANITIZE = {
  ALLOWED_TAGS: [
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol", "p", "pre",
    "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
  ],
  ALLOWED_ATTR: ["href", "title", "start"],
  // http(s), mailto, and relative links; javascript:, data:, vbscript: and the rest lose their href.
  ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

// Django's username characters; as chat/mentions.py reads them (a trailing dot is the sentence's).
const MENTION = /(?<![\w@])@([\w.+-]*[\w+-])/g;

/** Wrap each @name in the fragment's text (not in code or links) in <span class="mention">. */
function markMentions(fragment, me) {
  const walker = document.createTreeWalker(fragment, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) => (node.parentElement?.closest("code, pre, a") ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
  });
  const texts = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) if (node.data.includes("@")) texts.push(node);
  for (const node of texts) {
    const parts = [];
    let last = 0;
    for (const match of node.data.matchAll(MENTION)) {
      if (match.index > last) parts.push(document.createTextNode(node.data.slice(last, match.index)));
      const span = document.createElement("span");
      span.className = match[1] === me ? "mention me" : "mention";
      span.textContent = match[0];
      parts.push(span);
      last = match.index + match[0].length;
    }
    if (!parts.length) continue;
    if (last < node.data.length) parts.push(document.createTextNode(node.data.slice(last)));
    node.replaceWith(...parts);
  }
}

/** A message's text as a sanitised DocumentFragment of Markdown; `me` is highlighted when mentioned. */
export function renderMarkdown(text, me = "") {
  let fragment;
  try {
    fragment = DOMPurify.sanitize(marked.parse(String(text)), SANITIZE);
  } catch {
    fragment = document.createDocumentFragment(); // never reached in practice; text beats nothing
    fragment.append(document.createTextNode(String(text)));
  }
  // A line break is a "\n" in the text too (copying a message keeps its lines); rendered, it
  // is white space at the end of a line, which takes no room.
  for (const br of fragment.querySelectorAll("br")) if (br.nextSibling?.nodeValue?.[0] !== "\n") br.after("\n");
  markMentions(fragment, me);
  return fragment;
}

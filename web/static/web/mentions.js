// @mention autocomplete for a textarea: typing "@al" lists the people whose names start with "al"
// (then those containing it). Keyboard first: ArrowDown/ArrowUp choose, Enter or Tab insert,
// Escape closes; a click inserts too. The list is an ARIA listbox the textarea points at with
// aria-activedescendant, so the focus never leaves the textarea.
import { el } from "./common.js";

const MAX_SHOWN = 8;
// "@" at the start or after a character that cannot be in a name, then the name typed so far.
const TYPED = /(?:^|[^\w@.+-])@([\w.+-]*)$/;

export class MentionBox {
  /**
   * @param {HTMLTextAreaElement} input
   * @param {HTMLElement} listbox an empty element with role="listbox"
   * @param {() => string[]} candidates the names one may mention now
   */
  constructor(input, listbox, candidates) {
    this.input = input;
    this.listbox = listbox;
    this.candidates = candidates;
    this.options = [];
    this.active = 0;
    this.start = -1; // where the "@" being completed is
    input.addEventListener("input", () => this.update());
    input.addEventListener("click", () => this.update());
    input.addEventListener("blur", () => this.close());
    // mousedown, not click: the textarea keeps the focus and the caret.
    listbox.addEventListener("mousedown", (event) => {
      const option = event.target.closest("[role=option]");
      if (!option) return;
      event.preventDefault();
      this.choose(Number(option.dataset.index));
    });
  }

  get isOpen() {
    return !this.listbox.hidden;
  }

  update() {
    const caret = this.input.selectionStart;
    if (caret !== this.input.selectionEnd) { this.close(); return; }
    const match = TYPED.exec(this.input.value.slice(0, caret));
    if (!match) { this.close(); return; }
    const typed = match[1].toLowerCase();
    const names = [...new Set(this.candidates())].sort((a, b) => a.localeCompare(b, undefined, { sensitivity: "base" }));
    const starting = names.filter((name) => name.toLowerCase().startsWith(typed));
    const containing = names.filter((name) => !name.toLowerCase().startsWith(typed) && name.toLowerCase().includes(typed));
    const found = [...starting, ...containing].slice(0, MAX_SHOWN);
    if (!found.length) { this.close(); return; }
    this.start = caret - match[1].length - 1;
    const previous = this.options[this.active];
    this.options = found;
    this.active = Math.max(0, found.indexOf(previous));
    this.render();
  }

  render() {
    this.listbox.replaceChildren(...this.options.map((name, index) => el("li", {
      text: `@${name}`,
      attrs: {
        id: `${this.listbox.id}-${index}`,
        role: "option",
        "aria-selected": String(index === this.active),
        "data-index": String(index),
      },
    })));
    this.listbox.hidden = false;
    this.input.setAttribute("aria-activedescendant", `${this.listbox.id}-${this.active}`);
  }

  close() {
    if (!this.isOpen) return;
    this.listbox.hidden = true;
    this.listbox.replaceChildren();
    this.options = [];
    this.input.removeAttribute("aria-activedescendant");
  }

  /** Insert the chosen name (and a space) in place of what was typed after the "@". */
  choose(index) {
    const name = this.options[index];
    if (name === undefined) return;
    const { value } = this.input;
    const caret = this.input.selectionStart;
    const inserted = `@${name} `;
    this.input.value = value.slice(0, this.start) + inserted + value.slice(caret).replace(/^ /, "");
    const at = this.start + inserted.length;
    this.input.setSelectionRange(at, at);
    this.close();
    this.input.dispatchEvent(new Event("input", { bubbles: true }));
  }

  /** The textarea's keydown, first: true when the list took the key. */
  handleKey(event) {
    if (!this.isOpen || event.isComposing) return false;
    switch (event.key) {
      case "ArrowDown":
      case "ArrowUp":
        this.active = (this.active + (event.key === "ArrowDown" ? 1 : -1) + this.options.length) % this.options.length;
        this.render();
        break;
      case "Enter":
      case "Tab":
        if (event.shiftKey) return false;
        this.choose(this.active);
        break;
      case "Escape":
        this.close();
        break;
      default:
        return false;
    }
    event.preventDefault();
    event.stopPropagation();
    return true;
  }
}

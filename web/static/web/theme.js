// The page's theme (site.css): the system's (prefers-color-scheme) until the person picks one with
// the header's toggle; the choice is remembered (localStorage) and followed by every open tab.
// A classic script in <head>, run before the page is drawn, so a remembered theme never flashes
// the other one first.
(() => {
  const KEY = "theme";
  const root = document.documentElement;
  const system = window.matchMedia("(prefers-color-scheme: dark)");

  function chosen() {
    try {
      const value = localStorage.getItem(KEY);
      return value === "light" || value === "dark" ? value : null;
    } catch {
      return null; // storage refused (a privacy setting): the system's theme
    }
  }

  function isDark() {
    return (root.dataset.theme || (system.matches ? "dark" : "light")) === "dark";
  }

  /** The toggle says which theme is on: pressed is dark. */
  function sync() {
    document.getElementById("theme-toggle")?.setAttribute("aria-pressed", String(isDark()));
  }

  function apply() {
    const theme = chosen();
    if (theme) root.dataset.theme = theme;
    else delete root.dataset.theme;
    sync();
  }

  apply();
  system.addEventListener("change", sync);
  window.addEventListener("storage", (event) => { if (event.key === KEY || event.key === null) apply(); });
  document.addEventListener("DOMContentLoaded", () => {
    sync();
    document.getElementById("theme-toggle")?.addEventListener("click", () => {
      const next = isDark() ? "light" : "dark";
      try { localStorage.setItem(KEY, next); } catch { /* this page only */ }
      root.dataset.theme = next;
      sync();
    });
  });
})();

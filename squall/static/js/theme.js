// Runs in <head>, before the first paint (a classic, blocking script): the theme
// pinned in Settings, if any, so that a dark page never flashes light on load.
// main.js applies later changes.
(() => {
  try {
    const theme = localStorage.getItem("squall.theme");
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  } catch {
    // Storage blocked: follow the system.
  }
})();

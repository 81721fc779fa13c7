// The Inbox: actions through the API without a reload (the forms also post without
// JavaScript, to homemonitor.web.actions), and its rows refreshed live.
"use strict";
(function () {
  const box = document.getElementById("inbox");
  if (!box) return;
  const fill = (template, value) => template.replace("%s", value);
  const ids = () => new Set([...box.querySelectorAll("[data-alert-id]")].map((el) => el.dataset.alertId));
  let refreshing = null;
  let again = false;

  // One refresh at a time; a change announced while one is under way (its rows may have
  // been read before that change committed) runs one more after it, never none.
  async function refresh() {
    if (refreshing) { again = true; return refreshing; }
    refreshing = (async () => {
      do {
        again = false;
        await refreshOnce();
      } while (again);
    })().finally(() => { refreshing = null; });
    return refreshing;
  }

  async function refreshOnce() {
    const before = ids();
    const html = await hm.background(box.dataset.rows);
    // Where the person is, and what they were typing or choosing, survives the refresh
    // (elements by their id). Read now, after the fetch, not before it: they may have
    // moved on while the rows were on their way.
    const focused = document.activeElement && box.contains(document.activeElement) ? document.activeElement.id : null;
    const open = [...box.querySelectorAll("details[open] form")].map((f) => f.dataset.action + ":" + f.dataset.alert);
    const typed = [...box.querySelectorAll("input[id], textarea[id], select[id]")].map((el) => [el.id, el.value]);
    const checked = [...box.querySelectorAll("input[type=radio]:checked")].map((el) => [el.name, el.value, el.closest("form").dataset.alert]);
    const caret = focused && document.getElementById(focused) && "selectionStart" in document.getElementById(focused)
      ? document.getElementById(focused).selectionStart : null;
    box.innerHTML = html;
    for (const [id, value] of typed) {
      const el = document.getElementById(id);
      if (el && el.type !== "radio") el.value = value;
    }
    for (const [name, value, alert] of checked) {
      const el = box.querySelector(`form[data-alert="${alert}"] input[name="${name}"][value="${value}"]`);
      if (el) el.checked = true;
    }
    for (const key of open) {
      const [action, alert] = key.split(":");
      const form = box.querySelector(`form[data-action="${action}"][data-alert="${alert}"]`);
      if (form && form.closest("details")) form.closest("details").open = true;
    }
    if (focused && document.getElementById(focused)) {
      const el = document.getElementById(focused);
      el.focus();
      if (caret !== null && typeof el.setSelectionRange === "function") {
        try { el.setSelectionRange(caret, caret); } catch (e) { /* not a text field */ }
      }
    }
    const fresh = [...ids()].filter((id) => !before.has(id));
    for (const id of fresh) {
      const row = document.getElementById("alert-" + id);
      row.classList.add("fresh");
      const title = row.querySelector("h3").textContent.trim();
      hm.announce(fill(box.dataset.textNew, title));
    }
  }

  box.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-action]");
    if (!form) return;
    event.preventDefault();
    const action = form.dataset.action;
    const body = {};
    for (const [key, value] of new FormData(form)) {
      const field = form.querySelector(`[name="${key}"]`);
      if (field.type === "hidden") continue; // csrf (sent as a header) and back: the form's own
      if (field.type === "number") body[key] = Number(value);
      else if (field.dataset.type === "bool") body[key] = value === "yes";
      else body[key] = value;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await hm.post(`/api/v1/alerts/${form.dataset.alert}/${action}`, body);
      hm.announce(fill(box.dataset.textDone, button.textContent.trim()));
      await refresh();
      // The button may be gone (an acknowledged alert has none): keep the keyboard user
      // at the alert, or at the list if the alert left it.
      if (!box.contains(document.activeElement)) {
        const title = document.getElementById(`alert-${form.dataset.alert}-link`);
        (title || document.getElementById("main")).focus();
      }
    } catch (err) {
      button.disabled = false;
      hm.announce(fill(box.dataset.textFailed, err.message));
    }
  });

  const mode = document.getElementById("live-mode");
  hm.live(box.dataset.stream, () => { refresh().catch(() => {}); }, {
    pollSeconds: Number(box.dataset.pollSeconds) || 15,
    onMode: (m) => { mode.textContent = m === "live" ? mode.dataset.live : mode.dataset.poll; },
  });
})();

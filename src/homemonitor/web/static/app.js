// homemonitor web app: the few helpers the pages share. Plain JavaScript, no build step.
"use strict";
(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  class HttpError extends Error {
    constructor(status, detail) { super(detail || ("HTTP " + status)); this.status = status; }
  }

  // POST JSON to the API with the session cookie and its CSRF token; the parsed answer.
  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), "Accept": "application/json" },
      body: JSON.stringify(body || {}),
    });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!response.ok) {
      let detail = data && data.detail;
      if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
      if (response.status === 401) window.location.assign("/login?next=" + encodeURIComponent(location.pathname));
      throw new HttpError(response.status, detail);
    }
    return data;
  }

  // GET something as a background refresh: it does not count as the person's activity,
  // so an open tab still reaches the idle timeout.
  // Once the page is being left (a link, the logout form), a refresh that finds the
  // session gone must not send the browser to /login instead of where it was going.
  let leaving = false;
  window.addEventListener("beforeunload", () => { leaving = true; });
  window.addEventListener("pageshow", () => { leaving = false; });

  async function background(url) {
    if (leaving) throw new HttpError(0, "leaving");
    const response = await fetch(url, { credentials: "same-origin", headers: { "X-HM-Background": "1" } });
    if (response.redirected && new URL(response.url).pathname === "/login") {
      if (!leaving) window.location.assign(response.url);
      throw new HttpError(401, "signed out");
    }
    if (!response.ok) throw new HttpError(response.status);
    return response.text();
  }

  // Live updates: onEvent(data) for each event of the Server-Sent Events stream at url
  // (unnamed ones and those named in options.events; the alert stream's are "alert");
  // when there is no stream (or it keeps failing), onEvent(null) every pollSeconds.
  // Returns {mode} ("live" or "poll"), updated as it changes; onMode(mode) is told too.
  function live(url, onEvent, options) {
    const opts = Object.assign({ pollSeconds: 15, events: ["alert"], onMode: () => {} }, options || {});
    const state = { mode: "poll" };
    let timer = null;
    const setMode = (mode) => { if (state.mode !== mode) { state.mode = mode; opts.onMode(mode); } };
    const poll = () => {
      if (timer) return;
      setMode("poll");
      timer = setInterval(() => onEvent(null), opts.pollSeconds * 1000);
    };
    opts.onMode("poll");
    if (!("EventSource" in window)) { poll(); return state; }
    const source = new EventSource(url, { withCredentials: true });
    let opened = false;
    source.onopen = () => {
      opened = true;
      if (timer) { clearInterval(timer); timer = null; }
      setMode("live");
      onEvent(null); // whatever changed while we were not listening
    };
    const deliver = (e) => {
      let data = null;
      try { data = JSON.parse(e.data); } catch (err) { data = { raw: e.data }; }
      onEvent(data);
    };
    source.onmessage = deliver;
    for (const name of opts.events) source.addEventListener(name, deliver);
    source.onerror = () => {
      // A stream that never opened (404, 401) will not: poll instead. One that was open
      // reconnects by itself (with Last-Event-ID); poll meanwhile.
      if (!opened || source.readyState === EventSource.CLOSED) source.close();
      poll();
    };
    return state;
  }

  // Say something to screen readers through an aria-live region.
  function announce(text) {
    const region = document.getElementById("announce");
    if (!region) return;
    region.textContent = "";
    setTimeout(() => { region.textContent = text; }, 50);
  }

  window.hm = { post, background, live, announce, HttpError };
})();

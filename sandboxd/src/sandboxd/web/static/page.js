// sandboxd's page: copy buttons, the expiry countdown, and live updates (server-sent events,
// else polling). The page works without it; this only adds to it.
"use strict";
(function () {
  const body = document.body;
  let lastId = body.dataset.eventId || "";
  let polling = null;

  function say(text) {
    const status = document.getElementById("live-status");
    if (status) status.textContent = text;
  }

  function wire(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (b) { b.hidden = false; });
    tick();
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    const area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    const done = document.execCommand("copy");
    area.remove();
    return done ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-copy]");
    if (!button) return;
    copy(button.dataset.copy).then(
      function () { button.textContent = "Copied"; },
      function () { button.textContent = "Copy failed: select the text"; });
    setTimeout(function () { button.textContent = "Copy"; }, 2000);
  });

  function left(seconds) {
    if (seconds <= 0) return "expired";
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    const m = Math.floor(seconds % 3600 / 60), s = Math.floor(seconds % 60);
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + s + "s left";
  }

  function tick() {
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      const at = Date.parse(el.dataset.countdown);
      if (!isNaN(at)) el.textContent = "(" + left((at - Date.now()) / 1000) + ")";
    });
  }

  function apply(update) {
    const sections = update.sections || {};
    Object.keys(sections).forEach(function (name) {
      const el = document.querySelector('section[data-section="' + name + '"]');
      if (el) { el.innerHTML = sections[name]; wire(el); }
    });
    if (update.id) lastId = update.id;
  }

  function gone(update) {
    apply(update);
    say("This sandbox was deleted.");
    body.dataset.gone = "true";
  }

  function poll() {
    if (polling) return;
    say("Updating every 2 s.");
    polling = setInterval(function () {
      fetch(body.dataset.poll + "?since=" + encodeURIComponent(lastId),
            { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (!r.ok) { clearInterval(polling); say("Not updating (" + r.status + "): refresh."); return null; }
          return r.json().then(function (update) {
            if (update.gone) { clearInterval(polling); gone(update); } else apply(update);
          });
        })
        .catch(function () { say("Not updating: refresh."); });
    }, 2000);
  }

  function listen() {
    if (!body.dataset.live) return;
    if (!window.EventSource) { poll(); return; }
    const source = new EventSource(body.dataset.live + "?since=" + encodeURIComponent(lastId));
    let heard = false;
    const watchdog = setTimeout(function () { if (!heard) { source.close(); poll(); } }, 5000);
    source.addEventListener("sections", function (event) {
      heard = true;
      say("Live.");
      apply(JSON.parse(event.data));
      lastId = event.lastEventId || lastId;
    });
    source.addEventListener("gone", function (event) {
      heard = true;
      source.close();
      clearTimeout(watchdog);
      gone(JSON.parse(event.data));
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) { clearTimeout(watchdog); poll(); }
      else say("Reconnecting…");
    };
  }

  wire(document);
  setInterval(tick, 1000);
  listen();
})();

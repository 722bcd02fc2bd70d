// The task page refreshes itself while one of its stages is PENDING or RUNNING: every
// second it fetches the page again and swaps in the new <main> (expanded details stay
// expanded), and it stops once the page says nothing is live. A static file, so the
// Content-Security-Policy needs no 'unsafe-inline'.
"use strict";
(function () {
  var INTERVAL_MS = 1000;
  if (document.body.dataset.live !== "1") return;

  function openDetails(root) {
    var ids = [];
    root.querySelectorAll("details[open][id]").forEach(function (d) { ids.push(d.id); });
    return ids;
  }

  function refresh() {
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store", redirect: "error" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var main = fresh.getElementById("main");
        if (!main) return;
        var keep = openDetails(document);
        document.getElementById("main").replaceWith(main);
        keep.forEach(function (id) {
          var d = document.getElementById(id);
          if (d) d.open = true;
        });
        document.body.dataset.live = fresh.body.dataset.live;
        document.title = fresh.title;
      })
      .catch(function () { /* the next tick tries again */ })
      .finally(function () {
        if (document.body.dataset.live === "1") window.setTimeout(refresh, INTERVAL_MS);
      });
  }
  window.setTimeout(refresh, INTERVAL_MS);
})();

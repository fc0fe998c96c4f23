// Hephaestus dashboard: refresh the live parts of a page by polling a JSON endpoint.
// No framework, no build step. An element with `data-live="URL"` is refreshed every
// `data-poll-ms` milliseconds (from <body>); the server answers with rendered HTML.
(function () {
  "use strict";
  var every = parseInt(document.body.getAttribute("data-poll-ms"), 10) || 2000;

  function get(url, done) {
    var request = new XMLHttpRequest();
    request.open("GET", url);
    request.setRequestHeader("Accept", "application/json");
    request.onload = function () {
      if (request.status === 200) {
        try { done(JSON.parse(request.responseText)); } catch (e) { /* keep the page */ }
      }
    };
    request.send();
  }

  function poll(element, apply) {
    var url = element.getAttribute("data-live");
    function tick() {
      if (!document.hidden) { get(url, apply); }
      window.setTimeout(tick, every);
    }
    window.setTimeout(tick, every);
  }

  var table = document.querySelector("table.instances[data-live]");
  if (table) {
    poll(table, function (data) {
      document.getElementById("rows").innerHTML = data.rows;
      document.getElementById("counts").innerHTML = data.counts;
    });
  }

  var live = document.querySelector("#live[data-live]");
  if (live && live.hasAttribute("data-revision")) {
    poll(live, function (data) {
      if (String(data.revision) !== live.getAttribute("data-revision")) {
        var open = live.querySelectorAll("details[open]").length > 0;
        if (open) { return; } // do not close what the reader opened
        live.innerHTML = data.html;
        live.setAttribute("data-revision", String(data.revision));
        live.setAttribute("data-status", data.status);
        var changed = live.getAttribute("data-was") !== data.status;
        live.setAttribute("data-was", data.status);
        if (changed) {
          // Buttons depend on the status: reload once so they match it.
          var finished = ["completed", "failed", "cancelled"].indexOf(data.status) >= 0;
          var actions = document.getElementById("actions");
          if (actions && finished) { window.location.reload(); }
        }
      }
    });
  } else if (live) {
    poll(live, function (data) { live.innerHTML = data.html; });
  }
}());

// Keeps the tenant change page's status panel current while the tenant provisions.
// Polls the admin's JSON status endpoint (same origin, session cookie) until the status settles.
(function () {
  "use strict";

  var MAX_FAILURES = 10;

  function text(id, value) {
    var element = document.getElementById(id);
    if (element) {
      element.textContent = value === null || value === undefined || value === "" ? "-" : String(value);
    }
  }

  function render(panel, state) {
    var badge = document.getElementById("tenant-status");
    panel.dataset.status = state.status;
    if (badge) {
      badge.textContent = state.status;
      badge.className = "tenant-status tenant-status--" + state.status;
    }
    text("tenant-status-reason", state.status_reason);
    text("tenant-attempts", state.attempts);
    text("tenant-provisioning-ms", state.provisioning_ms);
    text("tenant-waiting", state.waiting);
    text("tenant-domains", state.domains);
  }

  function poll(panel, interval, failures) {
    fetch(panel.dataset.statusUrl, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store",
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("status endpoint answered " + response.status);
        }
        return response.json();
      })
      .then(function (state) {
        render(panel, state);
        if (state.status === "provisioning") {
          window.setTimeout(poll, interval, panel, interval, 0);
        }
      })
      .catch(function () {
        if (failures + 1 < MAX_FAILURES) {
          window.setTimeout(poll, interval, panel, interval, failures + 1);
        } else {
          text("tenant-status-reason", "status unavailable; reload the page");
        }
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var panel = document.getElementById("tenant-status-panel");
    if (panel && panel.dataset.status === "provisioning") {
      var interval = parseInt(panel.dataset.pollMs, 10) || 1000;
      window.setTimeout(poll, interval, panel, interval, 0);
    }
  });
})();

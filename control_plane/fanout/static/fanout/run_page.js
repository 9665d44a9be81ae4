// Keeps the migration run page current: polls the admin's JSON state endpoint (same origin,
// session cookie) while the run is unfinished, and again whenever the filters change.
(function () {
  "use strict";

  var MAX_FAILURES = 10;
  var COLUMNS = ["schema", "tenant", "canary", "batch", "status", "attempts", "duration_ms", "before", "after", "error"];

  function setText(id, value) {
    var element = document.getElementById(id);
    if (element) {
      element.textContent = value === null || value === undefined ? "" : String(value);
    }
  }

  function cell(step, column) {
    var td = document.createElement("td");
    var value;
    if (column === "tenant") value = step.tenant || "(platform)";
    else if (column === "canary") value = step.canary ? "yes" : "";
    else if (column === "before") value = (step.revisions_before || {}).alembic || "";
    else if (column === "after") value = (step.revisions_after || {}).alembic || "";
    else value = step[column];
    if (column === "status") td.className = "step-status";
    if (column === "error") td.className = "step-error";
    td.textContent = value === null || value === undefined ? "" : String(value);
    return td;
  }

  function renderSteps(steps) {
    var body = document.querySelector("#run-steps tbody");
    var rows = document.createDocumentFragment();
    steps.forEach(function (step) {
      var tr = document.createElement("tr");
      tr.className = "run-step run-step--" + step.status;
      tr.dataset.schema = step.schema;
      COLUMNS.forEach(function (column) { tr.appendChild(cell(step, column)); });
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
  }

  function render(page, state) {
    var percent = (Math.round(state.progress * 1000) / 10).toFixed(1);
    var badge = document.getElementById("run-status");
    badge.textContent = state.status;
    badge.className = "run-status run-status--" + state.status;
    setText("run-stage", state.stage);
    setText("run-target", (state.target && state.target.alembic) || state.requested_revision);
    document.getElementById("run-progress-bar").style.width = percent + "%";
    document.getElementById("run-progress").setAttribute("aria-valuenow", String(percent));
    setText("run-progress-text", percent + "%");
    setText("run-done", state.counts.done);
    setText("run-total", state.counts.total);
    ["pending", "running", "succeeded", "failed", "skipped"].forEach(function (status) {
      setText("run-count-" + status, state.counts[status]);
    });
    var error = document.getElementById("run-error");
    error.textContent = state.error || "";
    error.hidden = !state.error;
    renderSteps(state.steps);
    // Controls follow the run: Cancel while it can still stop, Resume once it failed or was cancelled.
    var cancel = document.getElementById("run-cancel-form");
    var resume = document.getElementById("run-resume-form");
    if (cancel) cancel.hidden = ["pending", "running", "paused"].indexOf(state.status) < 0;
    if (resume) resume.hidden = ["failed", "cancelled"].indexOf(state.status) < 0;
    page.dataset.finished = state.finished ? "true" : "false";
  }

  function stateUrl(page) {
    var params = new URLSearchParams();
    var status = document.getElementById("step-status-filter").value;
    var search = document.getElementById("step-search").value.trim();
    if (status) params.set("status", status);
    if (search) params.set("q", search);
    var query = params.toString();
    return page.dataset.stateUrl + (query ? "?" + query : "");
  }

  function start(page) {
    var interval = parseInt(page.dataset.pollMs, 10) || 1000;
    var timer = null;
    var failures = 0;

    function schedule() {
      window.clearTimeout(timer);
      if (page.dataset.finished !== "true") timer = window.setTimeout(poll, interval);
    }

    function poll() {
      fetch(stateUrl(page), { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("state endpoint answered " + response.status);
          return response.json();
        })
        .then(function (state) { failures = 0; render(page, state); schedule(); })
        .catch(function () {
          failures += 1;
          if (failures < MAX_FAILURES) schedule();
          else setText("run-steps-note", "state unavailable; reload the page");
        });
    }

    document.getElementById("step-status-filter").addEventListener("change", poll);
    document.getElementById("step-search").addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(poll, 250);
    });
    schedule();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.getElementById("run-page");
    if (page) start(page);
  });
})();

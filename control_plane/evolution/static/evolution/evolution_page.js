// Keeps the evolution page current: polls its JSON state (the operator API's shape) and
// updates status, phases, the running phase's progress, the gate and the runs table.
(function () {
  "use strict";
  const page = document.getElementById("evolution-page");
  if (!page) return;
  const url = page.dataset.stateUrl;
  const every = Number(page.dataset.pollMs) || 1000;
  const text = (id, value) => { const el = document.getElementById(id); if (el) el.textContent = value; };

  function render(state) {
    const status = document.getElementById("evolution-status");
    status.textContent = state.status;
    status.className = "run-status run-status--" + state.status;
    text("evolution-completed", state.completed || "-");
    text("evolution-switch", state.switch.name + "=" + state.switch.value);
    for (const p of state.phases) {
      const item = document.getElementById("phase-" + p.phase);
      if (!item) continue;
      item.dataset.done = String(p.done);
      item.dataset.active = String(p.active);
      item.querySelector(".phase-label").textContent = p.done ? "done" : p.active ? "running" : "-";
    }
    const current = state.current;
    const percent = current ? Math.round(current.progress * 1000) / 10 : 0;
    document.getElementById("evolution-progress-bar").style.width = percent + "%";
    document.getElementById("evolution-progress").setAttribute("aria-valuenow", String(percent));
    text("evolution-progress-text", current
      ? `${current.action} ${current.phase}.${current.step} (run ${current.run}): ${percent}% — ` +
        `${current.counts.done} of ${current.counts.total} tenants, ${current.rows_written} rows`
      : "no phase run yet");
    const error = document.getElementById("evolution-error");
    error.hidden = !(current && current.error);
    error.textContent = current ? current.error : "";
    text("gate-state", state.contract_gate.open ? "open" : "closed");
    const reasons = document.getElementById("gate-reasons");
    reasons.replaceChildren(...state.contract_gate.reasons.map((r) => {
      const li = document.createElement("li"); li.textContent = r; return li;
    }));
    const body = document.querySelector("#evolution-runs tbody");
    body.replaceChildren(...state.runs.map((r) => {
      const tr = document.createElement("tr");
      for (const v of [r.phase, r.action, r.step, r.run, r.status, r.override ? "yes" : "no"]) {
        const td = document.createElement("td"); td.textContent = String(v); tr.appendChild(td);
      }
      return tr;
    }));
  }

  async function poll() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) render(await response.json());
    } catch (e) { /* the next poll tries again */ }
    setTimeout(poll, state_interval());
  }
  function state_interval() { return document.hidden ? every * 5 : every; }
  setTimeout(poll, every);
})();

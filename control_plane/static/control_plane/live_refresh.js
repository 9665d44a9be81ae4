// Reloads an admin page while it shows a background job that is still running.
// A page opts in by rendering an element with data-live-refresh="<ms>" (a queued or running
// move, import or onboarding); once every job on the page has ended, the marker is gone and
// the reloads stop. Reloads pause while the operator is typing in a form field.
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    var marker = document.querySelector("[data-live-refresh]");
    if (!marker) {
      return;
    }
    var interval = parseInt(marker.getAttribute("data-live-refresh"), 10) || 2000;
    window.setInterval(function () {
      var active = document.activeElement;
      if (active && (active.tagName === "INPUT" || active.tagName === "SELECT" || active.tagName === "TEXTAREA")) {
        if (active.type !== "checkbox" && active.type !== "submit") {
          return;
        }
      }
      if (document.querySelector("input.action-select:checked")) {
        return; // rows ticked for an action: keep the selection
      }
      window.location.reload();
    }, interval);
  });
})();

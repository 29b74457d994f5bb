// The tidings admin's enhancements. Every page works without this file;
// it adds what needs a script: live preview, live progress and drag to
// reorder. Each part starts only on a page that has its elements.
"use strict";

// The session's CSRF proof, for requests made from here.
function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// Issues: an issue's progress, live while it sends. The page shows the
// counts as of its loading; this asks /admin/issues/{id}/progress every
// 2 s while any delivery is pending, and once the issue is done fetches
// the page again for its finish time and the deliveries that failed.
(function liveIssueProgress() {
  const region = document.getElementById("issue-progress");
  if (!region || region.dataset.live !== "true") {
    return;
  }
  const url = region.dataset.progressUrl;
  const status = region.querySelector("[data-status]");
  const number = (count) => count.toLocaleString("en-US");
  const DONE = "Done: every recipient's delivery has ended.";

  function show(progress) {
    for (const part of ["sent", "failed", "skipped", "pending"]) {
      const count = region.querySelector('[data-count="' + part + '"]');
      if (count) {
        count.textContent = number(progress[part]);
      }
      const bar = region.querySelector('[data-bar="' + part + '"]');
      if (bar) {
        const share = progress.recipients ? (progress[part] * 100) / progress.recipients : 0;
        bar.style.width = share.toFixed(3) + "%";
      }
    }
    status.textContent = progress.done ? DONE : "Sending. This updates by itself.";
  }

  // The parts of the page that only change when sending ends.
  async function refreshTheRest() {
    const response = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      return;
    }
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const selector of ["[data-finished]", "#issue-unsent"]) {
      const now = document.querySelector(selector);
      const then = fresh.querySelector(selector);
      if (now && then) {
        now.replaceWith(document.importNode(then, true));
      }
    }
  }

  async function poll() {
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      // Sent to the login page: the session ended, and asking on is no use.
      if (response.redirected) {
        status.textContent = "Your session has ended. Log in again to see the progress.";
        return;
      }
      if (response.ok) {
        const progress = await response.json();
        show(progress);
        if (progress.done) {
          region.dataset.live = "false";
          await refreshTheRest();
          return;
        }
      }
    } catch (error) {
      // A moment without the server: ask again at the next turn.
    }
    setTimeout(poll, 2000);
  }

  status.textContent = "Sending. This updates by itself.";
  setTimeout(poll, 2000);
})();

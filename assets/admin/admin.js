// The tidings admin's enhancements. Every page works without this file;
// it adds what needs a script: live preview, live progress and drag to
// reorder. Each part starts only on a page that has its elements.
"use strict";

// The session's CSRF proof, for requests made from here.
function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// ---- Posts: the editor's live preview, and dragging the queue ----

// The editor's preview follows what is typed: the form is posted to the
// preview route (as its Email and Plain text buttons do without a script)
// about 400 ms after the last keystroke, and the answer is shown in the
// sandboxed frame through `srcdoc`, which adds nothing to the history.
(function livePreview() {
  const form = document.getElementById("post-form");
  const frame = document.querySelector('iframe[name="preview"]');
  const buttons = Array.from(document.querySelectorAll("button[data-preview]"));
  if (!form || !frame || buttons.length === 0) return;
  const status = document.getElementById("preview-status");
  const hint = document.getElementById("preview-hint");
  let route = buttons[0].getAttribute("formaction");
  let timer = null;
  let latest = 0;

  function press(chosen) {
    for (const button of buttons) {
      button.setAttribute("aria-pressed", button === chosen ? "true" : "false");
    }
  }

  async function refresh() {
    const asked = ++latest;
    try {
      const response = await fetch(route, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "X-CSRF-Token": csrfToken() },
        credentials: "same-origin",
      });
      if (asked !== latest) return;
      if (!response.ok) {
        status.textContent = "The preview could not be updated (error " + response.status + ").";
        return;
      }
      const html = await response.text();
      if (asked !== latest) return;
      frame.srcdoc = html;
      status.textContent = "";
    } catch (error) {
      if (asked === latest) status.textContent = "The preview could not be updated: the server did not answer.";
    }
  }

  press(buttons[0]);
  if (hint) hint.textContent = "Exactly what a subscriber gets; it follows what you type.";
  for (const button of buttons) {
    button.addEventListener("click", (event) => {
      event.preventDefault();
      route = button.getAttribute("formaction");
      press(button);
      refresh();
    });
  }
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  });
})();

// Dragging a post in the queue to a new place, on top of the Move up and
// Move down buttons: the drop posts the post's new place, then the page
// reloads to show the stored order.
(function dragQueue() {
  const list = document.querySelector("ol.queue-list[data-reorder]");
  if (!list) return;
  const status = document.getElementById("queue-status");
  const items = () => Array.from(list.querySelectorAll("li[data-id]"));
  let dragged = null;
  let before = [];
  let dropped = false;

  for (const item of items()) {
    item.draggable = true;
    item.addEventListener("dragstart", (event) => {
      dragged = item;
      before = items();
      dropped = false;
      item.classList.add("dragging");
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", item.dataset.id);
    });
    item.addEventListener("dragend", () => {
      item.classList.remove("dragging");
      // Let go outside the list: put everything back.
      if (!dropped) for (const each of before) list.appendChild(each);
      dragged = null;
    });
  }

  list.addEventListener("dragover", (event) => {
    if (!dragged) return;
    event.preventDefault();
    const target = event.target.closest("li[data-id]");
    if (!target || target === dragged) return;
    const box = target.getBoundingClientRect();
    const after = event.clientY > box.top + box.height / 2;
    list.insertBefore(dragged, after ? target.nextSibling : target);
  });

  list.addEventListener("drop", async (event) => {
    if (!dragged) return;
    event.preventDefault();
    dropped = true;
    const item = dragged;
    const place = items().indexOf(item) + 1;
    if (before.indexOf(item) + 1 === place) return;
    status.textContent = "Saving the new order…";
    try {
      const response = await fetch("/admin/posts/" + item.dataset.id + "/place", {
        method: "POST",
        body: new URLSearchParams({ place: String(place) }),
        headers: { "X-CSRF-Token": csrfToken() },
        credentials: "same-origin",
        redirect: "manual",
      });
      // Success is a redirect back to the queue. (No fragment: a URL that
      // differed from this one only by its fragment would not reload.)
      if (response.type === "opaqueredirect" || response.ok) {
        location.assign("/admin/posts?done=moved&post=" + item.dataset.id);
        return;
      }
      status.textContent = "The new order was not saved (error " + response.status + "). Reload the page to see the queue as it is.";
    } catch (error) {
      status.textContent = "The new order was not saved: the server did not answer. Reload the page to see the queue as it is.";
    }
  });
})();

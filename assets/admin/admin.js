// The tidings admin's enhancements. Every page works without this file;
// it adds what needs a script: live preview, live progress and drag to
// reorder. Each part starts only on a page that has its elements.
"use strict";

// The session's CSRF proof, for requests made from here.
function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

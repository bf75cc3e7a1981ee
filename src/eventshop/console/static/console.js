// Live parts of a console page: each element with data-live="/live/<part>" is replaced by what
// the server pushes on that server-sent event stream. The browser reconnects by itself.
"use strict";
document.querySelectorAll("[data-live]").forEach((element) => {
  const source = new EventSource(element.dataset.live);
  source.addEventListener("update", (event) => {
    element.innerHTML = event.data;
    element.dataset.updates = String(Number(element.dataset.updates || "0") + 1);
  });
});

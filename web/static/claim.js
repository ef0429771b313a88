// A claim's page follows the claim live (GET /v1/claims/stream?claim=<id>): on a change the
// page is fetched again and its content swapped in, announced to screen readers. A page
// looking at a past moment (time travel) stays as it is.
"use strict";
(() => {
  const article = document.getElementById("claim");
  if (!article || article.dataset.travelling === "yes" || !("EventSource" in window)) return;
  const id = article.dataset.id;
  const source = new EventSource(`/v1/claims/stream?claim=${encodeURIComponent(id)}&after=${encodeURIComponent(article.dataset.after)}`);
  let pending = Promise.resolve();

  const refresh = async (version) => {
    const current = document.getElementById("claim");
    if (Number(current.dataset.version) >= version) return;
    const response = await fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
    if (!response.ok) throw new Error(`the page answered ${response.status}`);
    // DOMParser runs no script of what it parses; the server escaped everything anyway.
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("claim");
    if (fresh === null) throw new Error("the page came back without the claim");
    current.replaceWith(fresh);
    const status = fresh.querySelector("#status");
    fresh.querySelector("#live").textContent =
      `Updated live: version ${fresh.dataset.version}, ${status ? status.textContent : ""}.`;
    document.dispatchEvent(new CustomEvent("claim:replaced", { detail: fresh }));
  };

  source.addEventListener("claim", (event) => {
    const view = JSON.parse(event.data);
    pending = pending.then(() => refresh(view.version)).catch((error) => {
      const live = document.getElementById("live");
      if (live) live.textContent = `This claim changed; reload the page to see it (${error.message}).`;
    });
  });
  window.addEventListener("pagehide", () => source.close());
})();

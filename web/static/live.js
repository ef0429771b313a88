// The list of claims follows the ledger live: GET /v1/claims/stream (Server-Sent Events,
// each `claim` event the claim's view) updates the rows on the page and adds new claims.
"use strict";
(() => {
  const live = document.getElementById("live");
  const list = document.getElementById("claims");
  if (!live || !list || !("EventSource" in window)) return;
  const words = { unattested: "Unattested", asserted: "Asserted", denied: "Denied", disputed: "Disputed", retracted: "Retracted" };
  const searching = live.dataset.search === "1"; // full text cannot be matched here: only rows shown are updated
  const known = new Map(); // claim id -> its status, as this page last knew it
  for (const row of list.querySelectorAll("li[data-id]")) known.set(row.dataset.id, row.dataset.status);

  const count = (status, delta) => {
    for (const name of [status, "all"]) {
      const cell = document.querySelector(`[data-count="${name}"]`);
      if (cell) cell.textContent = String(Number(cell.textContent) + delta);
    }
  };

  const acts = (view) => {
    const c = view.counts || {};
    return `${c.assertions || 0} asserting, ${c.denials || 0} denying` + (c.reviews ? `, ${c.reviews} reviews` : "");
  };

  const row = (view) => {
    const li = document.createElement("li");
    li.className = "claim fresh";
    li.dataset.id = view.id;
    const badge = document.createElement("span");
    badge.dataset.field = "status";
    const link = document.createElement("a");
    link.href = `/claims/${encodeURIComponent(view.key)}`;
    link.lang = view.language || "en";
    link.dataset.field = "statement";
    link.textContent = view.statement;
    const meta = document.createElement("span");
    meta.className = "meta";
    const a = document.createElement("span");
    a.dataset.field = "acts";
    const v = document.createElement("span");
    v.dataset.field = "version";
    meta.append(a, " · version ", v);
    li.append(badge, " ", link, " ", meta);
    return li;
  };

  const fill = (li, view) => {
    li.dataset.status = view.status;
    const badge = li.querySelector('[data-field="status"]');
    badge.className = `badge ${view.status}`;
    badge.textContent = words[view.status] || view.status;
    li.querySelector('[data-field="acts"]').textContent = acts(view);
    li.querySelector('[data-field="version"]').textContent = String(view.version);
    li.classList.add("fresh");
  };

  const source = new EventSource(live.dataset.stream);
  source.addEventListener("open", () => { live.textContent = "Following changes live."; });
  source.addEventListener("error", () => { live.textContent = "Live updates interrupted; reconnecting…"; });
  source.addEventListener("claim", (event) => {
    const view = JSON.parse(event.data);
    const before = known.get(view.id);
    if (before !== undefined && before !== view.status) { count(before, -1); count(view.status, 1); }
    if (before === undefined && view.version === 1) count(view.status, 1);
    known.set(view.id, view.status);
    let li = list.querySelector(`li[data-id="${CSS.escape(view.id)}"]`);
    if (li === null) {
      if (searching) return;
      li = row(view);
      list.prepend(li);
      document.getElementById("empty")?.remove();
      live.textContent = `New: “${view.statement.slice(0, 80)}” (${words[view.status] || view.status}).`;
    } else {
      live.textContent = `Changed: “${view.statement.slice(0, 80)}” is now ${words[view.status] || view.status}.`;
    }
    fill(li, view);
  });
  window.addEventListener("pagehide", () => source.close());
})();

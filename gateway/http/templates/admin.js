// Follows what the page shows while it can change: a subject's provider rows after a push, the
// read-back runs while one is queued or running. Same-origin JSON only (the page's CSP allows
// nothing else); without this script the page is whole, it just does not update by itself.
"use strict";

const MOVING = new Set(["pending", "queued", "running"]);
const EVERY_MS = 1000;
const GIVE_UP_MS = 120000;

async function fetchJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

function setStatus(element, value) {
  element.textContent = value;
  element.className = element.className.replace(/status-\S+/g, "").trim() + ` status-${value}`;
}

function followSubject(table) {
  return async () => {
    const rows = await fetchJSON(table.dataset.follow);
    let moving = false;
    for (const [provider, row] of Object.entries(rows)) {
      const status = document.querySelector(`[data-status="${CSS.escape(provider)}"]`);
      if (status) setStatus(status, row.status);
      const delivery = document.querySelector(`[data-delivery="${CSS.escape(provider)}"]`);
      if (delivery && row.delivery) delivery.textContent = row.delivery;
      moving = moving || MOVING.has(row.status);
    }
    return moving;
  };
}

function followRuns(table) {
  return async () => {
    const runs = await fetchJSON(table.dataset.follow);
    let moving = false;
    for (const run of runs) {
      const row = table.querySelector(`tr[data-run="${CSS.escape(run.id)}"]`);
      if (!row) continue;
      setStatus(row.querySelector(".run-status"), run.status);
      row.querySelector(".run-subjects").textContent = run.counts.subjects || 0;
      row.querySelector(".run-providers").textContent = run.providers
        .map((name) => {
          const c = run.counts[name] || {};
          return `${name} ${c.read || 0} · ${c.unreadable || 0} · ${c.diverged || 0}`;
        })
        .join("; ");
      row.querySelector(".run-finished").textContent = run.finished_at ? run.finished_at.slice(0, 19).replace("T", " ") : "";
      moving = moving || MOVING.has(run.status);
    }
    return moving;
  };
}

function poll(step) {
  const started = Date.now();
  const tick = async () => {
    let moving = true;
    try {
      moving = await step();
    } catch (error) {
      console.warn(error);
    }
    // keep following while something moves, and for a few seconds after a page load in any case
    if ((moving || Date.now() - started < 3000) && Date.now() - started < GIVE_UP_MS) setTimeout(tick, EVERY_MS);
  };
  setTimeout(tick, EVERY_MS);
}

for (const table of document.querySelectorAll("table.grid[data-follow]")) poll(followSubject(table));
for (const table of document.querySelectorAll("table.runs[data-follow]")) poll(followRuns(table));

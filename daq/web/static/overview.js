// Overview of the benches on this PC: polls /api/v1/benches every 2 s (journals update every 2 s).
"use strict";

const $ = (id) => document.getElementById(id);

function cell(tr, text, cls = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.append(td);
  return td;
}

function render(data) {
  const body = $("benches");
  body.replaceChildren();
  for (const b of data.benches) {
    const tr = document.createElement("tr");
    tr.dataset.bench = b.bench;
    tr.dataset.state = b.state;
    cell(tr, b.bench);
    const state = b.tripped ? `${b.state} · TRIPPED` : b.state;
    cell(tr, state, b.tripped || b.state === "not responding" || b.state === "unreadable" ? "bad" : "").dataset.role = "state";
    cell(tr, b.error || b.run_id || "");
    const t = b.test;
    cell(tr, t ? `${t.phase} · cycle ${t.cycle}${t.total_cycles ? "/" + t.total_cycles : ""} · step ${t.step} ${t.number || ""} ${t.label || ""}` : "—");
    cell(tr, b.alarms ? `${b.alarms} active` : "none", b.alarms ? "bad" : "");
    cell(tr, Object.entries(b.devices || {}).map(([n, q]) => `${n}: ${q}`).join(", "));
    cell(tr, b.updated_age_s === null || b.updated_age_s === undefined ? "—" : `${b.updated_age_s.toFixed(0)} s ago`);
    const link = cell(tr, "");
    if (b.url) {
      const a = document.createElement("a");
      a.href = b.url;
      a.textContent = "open";
      link.append(a);
    } else {
      link.textContent = b.state === "running" ? "no --http" : "—";
    }
    body.append(tr);
  }
}

async function poll() {
  const conn = $("conn");
  try {
    const r = await fetch("/api/v1/benches");
    render(await r.json());
    conn.textContent = "live";
    conn.className = "conn conn-live";
  } catch (e) {
    conn.textContent = "connection lost — retrying…";
    conn.className = "conn conn-lost";
  }
  setTimeout(poll, 2000);
}
poll();

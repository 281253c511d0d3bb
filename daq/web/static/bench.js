// Live bench page: one EventSource on /api/v1/stream, redrawn on every snapshot (about 4 per second).
// EventSource reconnects by itself (the server asks for 1 s); on reconnect the trend history is reloaded.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_POINTS = 2400;
// Channels a technician looks at first, in this order; the rest follow in the device's order.
const HEADLINE = ["voltage_v", "current_a", "power_w", "soc_pct", "charge_ah", "energy_wh", "temperature_c", "mode",
  "output_on", "alarm_level"];
const trend = { t: [], voltage_v: [], current_a: [], temperature_c: [] };
let plots = null;
let cellPlot = null;
let lastSnapshot = null;

function fmt(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(1) : v.toFixed(digits);
}

function hms(s) {
  if (s === null || s === undefined) return "—";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return `${String(h).padStart(2, "0")}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
}

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function width(node) { return Math.max(300, node.clientWidth || 600); }

function makeTrendPlot(node, label, unit, color) {
  const opts = {
    width: width(node.parentElement) - 20, height: 160,
    scales: { x: { time: true } },
    series: [{}, { label: `${label} (${unit})`, stroke: color, width: 1.5, spanGaps: false }],
    axes: [{}, { label: unit, size: 60 }],
    legend: { live: false },
  };
  return new uPlot(opts, [[], []], node);
}

function ensurePlots() {
  if (plots) return;
  plots = {
    voltage_v: makeTrendPlot($("trend-v"), "pack voltage", "V", "#1f5fbf"),
    current_a: makeTrendPlot($("trend-i"), "current, + = charge", "A", "#c2410c"),
    temperature_c: makeTrendPlot($("trend-t"), "hottest temperature", "degC", "#b91c1c"),
  };
}

function drawTrends() {
  ensurePlots();
  for (const key of Object.keys(plots)) plots[key].setData([trend.t, trend[key]]);
}

function pushTrend(point) {
  if (!point) return;
  for (const key of Object.keys(trend)) {
    trend[key].push(point[key] ?? null);
    if (trend[key].length > MAX_POINTS) trend[key].shift();
  }
}

async function loadTrend() {
  try {
    const r = await fetch("/api/v1/trend");
    if (!r.ok) return;
    const data = await r.json();
    for (const key of Object.keys(trend)) trend[key] = (data[key] || []).slice(-MAX_POINTS);
  } catch (e) { /* the stream shows the connection state */ }
}

function renderHeader(s) {
  const b = s.bench;
  document.title = `${b.id} · battery-daq`;
  $("bench-id").textContent = `bench ${b.id}`;
  $("bench-desc").textContent = b.description || "";
  const elapsed = b.started_ns ? (b.bench_time_ns - b.started_ns) / 1e9 : 0;
  const scale = b.time_scale !== 1 ? ` · time ×${b.time_scale}` : "";
  $("run-line").textContent = `run ${b.run_id} · ${hms(elapsed)} bench time${scale} · ${b.records} records`;
  const note = $("note");
  note.hidden = !b.journal_error;
  if (b.journal_error) note.textContent = `JOURNAL ERROR: ${b.journal_error}`;
}

function renderSafety(s) {
  const safety = s.safety;
  const banner = $("trip-banner");
  const list = $("alarms");
  list.replaceChildren();
  const latched = safety ? safety.latched : [];
  banner.hidden = !(safety && safety.tripped);
  if (safety && safety.tripped) {
    const reasons = latched.map((a) => a.message).join("; ") || safety.abort_reason || "safety trip";
    banner.textContent = `TRIPPED — outputs held off until acknowledged: ${reasons}`;
  }
  const active = safety ? safety.active : [];
  for (const a of active) {
    const when = new Date(a.t_ns / 1e6).toLocaleTimeString();
    const li = el("li", { class: a.level, "data-limit": a.limit }, `${when} ${a.level.toUpperCase()}: ${a.message}`);
    list.append(li);
  }
  $("alarms-none").hidden = active.length > 0;
  $("alarms-none").textContent = safety ? "No active alarms." : "This bench has no safety monitor.";
}

const END_TEXT = {
  voltage_above_v: (v) => `V ≥ ${fmt(v)} V`, voltage_below_v: (v) => `V ≤ ${fmt(v)} V`,
  current_below_a: (v) => `|I| ≤ ${fmt(v)} A`, time_s: (v) => `step time ${hms(v)}`,
  step_capacity_ah: (v) => `${fmt(v)} Ah`, step_energy_wh: (v) => `${fmt(v)} Wh`,
  temperature_above_c: (v) => `T ≥ ${fmt(v, 1)} degC`,
};

function renderTest(s) {
  const t = s.test;
  $("test-none").hidden = !!t;
  $("test-state").hidden = !t;
  if (t) {
    $("t-profile").textContent = t.profile || "";
    $("t-phase").textContent = t.phase;
    $("t-phase").className = `phase-${t.phase}`;
    $("t-cycle").textContent = t.total_cycles ? `${t.cycle} of ${t.total_cycles}` : `${t.cycle}`;
    $("t-step").textContent = `${t.step}${t.total_steps ? " of " + t.total_steps : ""} · ${t.number} ${t.label} ${t.kind ? "(" + t.kind + ")" : ""}`;
    $("t-step-time").textContent = hms(t.step_elapsed_s);
    $("t-test-time").textContent = hms(t.test_time_s);
    $("t-ahwh").textContent = `${fmt(t.step_ah)} Ah · ${fmt(t.step_wh, 2)} Wh`;
    $("t-eta").textContent = t.eta_s === null ? "—" : hms(t.eta_s);
    const ends = Object.entries(t.ends || {}).map(([k, v]) => (END_TEXT[k] ? END_TEXT[k](v) : `${k} ${v}`));
    $("t-ends").textContent = ends.join(" or ") || "—";
    $("t-reason").textContent = t.reason || "";
  }
  const c = s.controls;
  $("controls").hidden = !c.enabled;
  if (c.enabled) {
    const phase = t ? t.phase : "";
    $("btn-pause").disabled = !t || phase !== "running";
    $("btn-resume").disabled = !t || phase !== "paused";
    $("btn-abort").disabled = !t || !["running", "paused"].includes(phase);
    $("btn-ack").disabled = !(s.safety && s.safety.tripped);
  }
}

function cellColor(v, lo, hi) {
  if (v === null) return "#ddd";
  const x = hi > lo ? (v - lo) / (hi - lo) : 0.5;
  return `hsl(${Math.round(200 - 200 * x)}, 70%, 78%)`;
}

function renderPack(s) {
  const p = s.pack;
  $("pack-none").hidden = !!p;
  $("cell-chart").hidden = !p;
  if (!p) return;
  $("pack-device").textContent = `from ${p.device}`;
  const sum = $("cell-summary");
  if (p.min_v === null) {
    sum.textContent = "no valid cell voltages";
  } else {
    sum.textContent = `${p.cells.length} cells · min ${fmt(p.min_v)} V (cell ${p.min_v_at}) · max ${fmt(p.max_v)} V (cell ${p.max_v_at}) · spread ${(1000 * p.spread_v).toFixed(0)} mV`
      + (p.min_c !== null ? ` · temperatures ${fmt(p.min_c, 1)}–${fmt(p.max_c, 1)} degC` : "");
  }
  const xs = p.cells.map((c) => c.n);
  const ys = p.cells.map((c) => c.value);
  if (!cellPlot) {
    const node = $("cell-chart");
    cellPlot = new uPlot({
      width: width(node.parentElement) - 20, height: 180,
      scales: { x: { time: false }, y: { range: (u, lo, hi) => [lo - Math.max(0.02, hi - lo), hi + 0.01] } },  // the lowest cell keeps a visible bar
      series: [{ label: "cell" }, { label: "cell voltage (V)", fill: "#7aa7e680", stroke: "#1f5fbf",
        paths: uPlot.paths.bars({ size: [0.7, 60] }), points: { show: false } }],
      axes: [{ label: "cell", values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? v : "")) },
        { label: "V", size: 60 }],
      legend: { live: false },
    }, [xs, ys], node);
  } else {
    cellPlot.setData([xs, ys]);
  }
  const tiles = $("temp-tiles");
  tiles.replaceChildren();
  for (const t of p.temperatures) {
    const tile = el("div", { class: "tile" + (t.value === null ? " bad" : ""), "data-sensor": t.n, "data-quality": t.quality },
      t.value === null ? `T${t.n}: ${t.quality}` : `T${t.n} ${fmt(t.value, 1)} degC`);
    tile.style.background = cellColor(t.value, 15, 60);
    tiles.append(tile);
  }
}

function renderDevices(s) {
  const box = $("devices");
  const seen = new Set();
  for (const d of s.devices) {
    seen.add(d.name);
    let card = box.querySelector(`[data-device="${d.name}"]`);
    if (!card) {
      card = el("div", { class: "device", id: `dev-${d.name}`, "data-device": d.name });
      card.append(el("h3"), el("div", { class: "health" }), el("table"));
      box.append(card);
    }
    const h = card.querySelector("h3");
    h.replaceChildren(el("span", {}, d.name), el("small", {}, d.kind),
      el("span", { class: `badge q-${d.quality}`, "data-role": "device-quality" }, d.quality));
    card.dataset.quality = d.quality;
    card.querySelector(".health").textContent =
      `${d.polls} polls · ${d.timeouts} timeouts · ${d.errors} errors` + (d.age_s !== null ? ` · last ${fmt(d.age_s, 1)} s ago` : "")
      + (d.last_error ? ` · ${d.last_error}` : "");
    const table = card.querySelector("table");
    const rows = [];
    const rank = (c) => { const i = HEADLINE.indexOf(c.name); return i < 0 ? HEADLINE.length : i; };
    const ordered = d.channels.map((c, i) => [rank(c), i, c]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map((x) => x[2]);
    for (const c of ordered) {
      const q = d.stale && c.quality === "good" ? "stale" : c.quality;
      const tr = el("tr", { class: `q-${q}`, "data-channel": c.name, "data-quality": q });
      const shown = c.text ?? (c.value === null ? "—" : fmt(c.value));
      tr.append(el("td", {}, c.name), el("td", { class: "value" }, shown), el("td", {}, c.unit),
        el("td", { class: "q" }, q === "good" ? "" : q));
      rows.push(tr);
    }
    table.replaceChildren(...rows);
  }
  for (const card of [...box.children]) if (!seen.has(card.dataset.device)) card.remove();
}

function render(s) {
  lastSnapshot = s;
  renderHeader(s);
  renderSafety(s);
  renderTest(s);
  renderPack(s);
  renderDevices(s);
  pushTrend(s.trend_point);
  drawTrends();
  document.body.dataset.version = s.version;
}

async function control(action) {
  const who = $("op-who").value.trim();
  const token = $("op-token").value;
  const out = $("control-result");
  if (!who) { out.textContent = "Enter your name first: it is recorded with the command."; return; }
  const text = action === "ack" ? "acknowledge the latched trip (outputs may switch on again)" : `${action} the test`;
  const reason = window.prompt(`Really ${text}? Give a reason or note (recorded):`, "");
  if (reason === null) { out.textContent = `${action} cancelled`; return; }
  out.textContent = `${action}: waiting for the bench…`;
  try {
    const r = await fetch(`/api/v1/commands/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify(action === "ack" ? { who, note: reason } : { who, reason }),
    });
    const body = await r.json();
    out.textContent = r.ok ? `${action}: ${body.message}` : `${action} refused (${r.status}): ${body.error}`;
    out.dataset.status = String(r.status);
  } catch (e) {
    out.textContent = `${action} failed: the bench did not answer (${e})`;
    out.dataset.status = "0";
  }
}

function connect() {
  const conn = $("conn");
  const source = new EventSource("/api/v1/stream");
  let lost = true;
  source.addEventListener("open", async () => {
    if (lost) { await loadTrend(); lost = false; }
    conn.textContent = "live";
    conn.className = "conn conn-live";
  });
  source.addEventListener("snapshot", (ev) => render(JSON.parse(ev.data)));
  source.addEventListener("error", () => {
    lost = true;
    conn.textContent = "connection lost — reconnecting…";
    conn.className = "conn conn-lost";
  });
}

for (const b of document.querySelectorAll("button[data-action]")) {
  b.addEventListener("click", () => control(b.dataset.action));
}
window.addEventListener("resize", () => {
  if (!plots) return;
  for (const p of Object.values(plots)) p.setSize({ width: width($("trend-panel")) - 20, height: 160 });
});
connect();

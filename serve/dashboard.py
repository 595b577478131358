# ruff: noqa: E501  (the page is HTML and JavaScript, kept as written)
"""``GET /dashboard``: one self-contained page (inline CSS and script, no CDN, no
network beyond this service) that reads ``/v1/monitor`` every few seconds and draws
its charts as SVG."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>regimes - live monitoring</title><link rel="icon" href="data:,">
<style>
body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:18px 0 6px}
.tf{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px;margin:10px 0}
.row{display:flex;flex-wrap:wrap;gap:12px} .muted{color:#777;font-size:12px}
table{border-collapse:collapse;font-size:12px} td,th{border-bottom:1px solid #eee;padding:2px 6px;text-align:left}
.pass{color:#2a7} .fail{color:#c33}
</style></head><body>
<h1>regimes - live monitoring</h1>
<div class="muted" id="stamp">loading /v1/monitor ...</div>
<div id="timeframes"></div>
<h2>recent promotions and rollbacks</h2>
<table id="events"></table>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg", COLORS = ["#1f77b4","#d62728","#2ca02c","#ff7f0e","#9467bd","#8c564b","#e377c2","#7f7f7f"];
function el(tag, attrs, text) { const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; return e; }
function chart(title, series, labels) {
  const W = 420, H = 180, L = 44, B = 22, T = 22, svg = el("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`});
  svg.appendChild(el("title", {}, title)); svg.appendChild(el("text", {x: L, y: 14, "font-size": 12}, title));
  const values = series.flatMap(s => s.values).filter(v => v !== null && isFinite(v));
  const hi = values.length ? Math.max(...values, 1e-9) : 1, n = Math.max(...series.map(s => s.values.length), 2);
  svg.appendChild(el("line", {x1: L, y1: H - B, x2: W - 8, y2: H - B, stroke: "#999"}));
  svg.appendChild(el("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#999"}));
  svg.appendChild(el("text", {x: 4, y: T + 8, "font-size": 10}, hi.toPrecision(2)));
  svg.appendChild(el("text", {x: 4, y: H - B, "font-size": 10}, "0"));
  series.forEach((s, i) => { const pts = s.values.map((v, j) => v === null ? null :
      `${L + j * (W - L - 8) / (n - 1)},${H - B - v / hi * (H - B - T)}`).filter(p => p);
    if (pts.length) svg.appendChild(el("polyline", {points: pts.join(" "), fill: "none", stroke: COLORS[i % 8], "stroke-width": 1.5}));
    svg.appendChild(el("text", {x: L + 4 + i * 90, y: H - 6, "font-size": 10, fill: COLORS[i % 8]}, s.name)); });
  if (labels && labels.length) svg.appendChild(el("text", {x: W - 8, y: T - 8, "font-size": 9, "text-anchor": "end"}, labels[labels.length - 1]));
  return svg;
}
function bars(title, groups) {
  const W = 420, H = 180, L = 44, B = 22, T = 22, svg = el("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`});
  svg.appendChild(el("title", {}, title)); svg.appendChild(el("text", {x: L, y: 14, "font-size": 12}, title));
  const keys = [...new Set(groups.flatMap(g => Object.keys(g.values)))].sort((a, b) => a - b);
  const hi = Math.max(1e-9, ...groups.flatMap(g => Object.values(g.values)));
  const slot = (W - L - 8) / Math.max(keys.length, 1), w = slot / (groups.length + 1);
  svg.appendChild(el("line", {x1: L, y1: H - B, x2: W - 8, y2: H - B, stroke: "#999"}));
  keys.forEach((k, i) => { svg.appendChild(el("text", {x: L + i * slot + slot / 2, y: H - 8, "font-size": 10}, k));
    groups.forEach((g, j) => { const v = g.values[k] || 0, h = v / hi * (H - B - T);
      svg.appendChild(el("rect", {x: L + i * slot + j * w + 2, y: H - B - h, width: w - 2, height: h, fill: COLORS[j]})); }); });
  groups.forEach((g, j) => svg.appendChild(el("text", {x: W - 150 + j * 70, y: 14, "font-size": 10, fill: COLORS[j]}, g.name)));
  return svg;
}
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
function render(data) {
  document.getElementById("stamp").textContent = `updated ${data.generated_at} - refreshes every 5 s`;
  const root = document.getElementById("timeframes"); root.replaceChildren();
  for (const [tf, m] of Object.entries(data.timeframes)) {
    const box = document.createElement("div"); box.className = "tf";
    const head = document.createElement("h2"); head.textContent = `${tf}: champion ${m.champion || "none"}`; box.appendChild(head);
    const info = document.createElement("div"); info.className = "muted";
    const agree = Object.entries(m.shadow_agreement || {}).map(([k, v]) => `${k}: ${v === null ? "n/a" : v.toFixed(2)}`).join(", ");
    info.textContent = `answers ${m.series.answers}; switch rate ${m.switch_rate === null ? "n/a" : m.switch_rate.toFixed(3)} per bar; shadows ${agree || "none"}`;
    box.appendChild(info);
    const row = document.createElement("div"); row.className = "row";
    row.appendChild(chart("posterior entropy (nats)", [{name: "mean", values: m.series.entropy_mean}, {name: "p95", values: m.series.entropy_p95}], m.series.times));
    const ood = Object.entries(m.series.ood_rate).map(([k, v]) => ({name: k, values: v}));
    row.appendChild(chart("UNKNOWN share by reason", ood.length ? ood : [{name: "none", values: m.series.times.map(() => 0)}], m.series.times));
    row.appendChild(bars("state occupancy", [{name: "now", values: m.series.occupancy_now}, {name: "training", values: m.occupancy_training || {}}]));
    box.appendChild(row);
    const drift = document.createElement("table");
    for (const d of m.drift) { const tr = document.createElement("tr");
      tr.append(cell(d.model_id), cell(d.created_at), cell(d.passed ? "gate passed" : "gate FAILED", d.passed ? "pass" : "fail"), cell(d.failed.join("; ")));
      drift.appendChild(tr); }
    if (!m.drift.length) { const tr = document.createElement("tr"); tr.append(cell("no drift report yet (regimes drift)")); drift.appendChild(tr); }
    box.appendChild(drift); root.appendChild(box);
  }
  const events = document.getElementById("events"); events.replaceChildren();
  for (const e of data.events) { const tr = document.createElement("tr");
    tr.append(cell(e.event_ts), cell(e.timeframe), cell(e.model_id), cell(`${e.from_role || "-"} -> ${e.to_role}`), cell(e.actor), cell(e.reason)); events.appendChild(tr); }
}
async function refresh() {
  try { const reply = await fetch("/v1/monitor"); if (reply.ok) render(await reply.json());
        else document.getElementById("stamp").textContent = `GET /v1/monitor: ${reply.status}`; }
  catch (err) { document.getElementById("stamp").textContent = `service unreachable: ${err}`; }
}
refresh(); setInterval(refresh, 5000);
</script></body></html>
"""

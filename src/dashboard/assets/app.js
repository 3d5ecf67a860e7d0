// The p2pu fleet dashboard. Every string a member sent (names, reasons, tags, logs) is put on
// the page as text (textContent, setAttribute on class/title/data-*), never parsed as HTML:
// a compromised member's status answer can say anything. No HTML-parsing sink anywhere here.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let view = null;
let selected = null;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

function age(secs) {
  if (secs < 120) return secs + "s";
  if (secs < 7200) return Math.floor(secs / 60) + "m";
  if (secs < 172800) return Math.floor(secs / 3600) + "h";
  return Math.floor(secs / 86400) + "d";
}

async function poll() {
  try {
    const response = await fetch("/api/fleet", { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) throw new Error("the dashboard answered " + response.status);
    view = await response.json();
    render();
  } catch (e) {
    $("error").hidden = false;
    $("error").textContent = String(e);
  }
}

function render() {
  $("asked").textContent = view.asked_at ? "asked " + new Date(view.asked_at * 1000).toLocaleTimeString() : "waiting for the first answers";
  $("error").hidden = !view.error;
  $("error").textContent = view.error || "";
  renderRollout();
  renderFilters();
  renderMatrix();
  renderProgress();
  renderTransfer();
  renderDetail();
}

function renderRollout() {
  const r = view.rollout;
  $("rollout").textContent = r ? r.name + " seq " + r.seq : "none yet";
  $("settled").textContent = r ? (view.settled ? "(settled)" : "(in progress)") : "";
  const halt = $("halt");
  halt.hidden = !view.halt;
  halt.textContent = view.halt ? "HALTED on " + view.halt.members + " member(s): " + view.halt.reason : "";
  const counts = $("counts");
  clear(counts);
  for (const [status, n] of Object.entries(view.counts)) {
    counts.appendChild(el("li", { class: "st-" + status, "data-status": status }, status + ": " + n));
  }
  const waves = $("waves");
  clear(waves);
  for (const w of view.waves) {
    waves.appendChild(el("li", {}, "wave " + w.wave + " of " + w.of + ": " + w.waiting + " waiting"));
  }
  // The buttons exist only where this dashboard sends actions (--allow-actions).
  const actions = $("actions");
  if (view.actions && r && !actions.firstChild) {
    for (const [action, label] of [["abort", "Abort"], ["resume", "Resume"], ["retry", "Retry failed"], ["revert", "Revert to last good"]]) {
      const b = el("button", { id: "action-" + action, type: "button" }, label);
      b.addEventListener("click", () => act(action));
      actions.appendChild(b);
    }
  }
}

function tagsOf(m) { return Object.entries(m.tags || {}).map(([k, v]) => k + "=" + v); }

function renderFilters() {
  const select = $("filter-tag");
  const want = new Set();
  for (const m of view.members) for (const t of tagsOf(m)) want.add(t);
  const have = new Set(Array.from(select.options).map(o => o.value).filter(v => v));
  if (want.size === have.size && [...want].every(t => have.has(t))) return;
  const current = select.value;
  while (select.options.length > 1) select.remove(1);
  for (const t of [...want].sort()) select.appendChild(el("option", { value: t }, t));
  select.value = want.has(current) ? current : "";
}

function visible(m) {
  const name = $("filter-name").value.trim();
  const tag = $("filter-tag").value;
  if (name && !m.node.includes(name)) return false;
  if (tag && !tagsOf(m).includes(tag)) return false;
  return true;
}

// Update names, the newest seq first; at most eight columns.
function columns() {
  const newest = new Map();
  for (const m of view.members) for (const u of m.updates || []) {
    newest.set(u.name, Math.max(newest.get(u.name) || 0, u.seq));
  }
  return [...newest.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 8).map(e => e[0]);
}

function heartbeat(m) {
  if (!m.heartbeat) return { text: "-", stale: false };
  const hb = m.heartbeat;
  if (hb.state === "fresh" && hb.signed_at) return { text: "fresh (" + age(Math.max(0, view.asked_at - hb.signed_at)) + ")", stale: false };
  return { text: hb.state, stale: hb.state !== "fresh" };
}

function renderMatrix() {
  const names = columns();
  const head = $("matrix").tHead;
  clear(head);
  const hr = el("tr");
  for (const h of ["node", "alive", "version", "tags", "heartbeat", "newest"]) hr.appendChild(el("th", {}, h));
  for (const n of names) hr.appendChild(el("th", {}, n));
  head.appendChild(hr);
  const body = $("matrix").tBodies[0];
  clear(body);
  for (const m of view.members) {
    if (!visible(m)) continue;
    const tr = el("tr", { "data-node": m.node });
    if (m.node === selected) tr.setAttribute("class", "selected");
    tr.appendChild(el("td", { class: "node" }, m.node));
    tr.appendChild(el("td", {}, m.alive ? "yes" : "no"));
    tr.appendChild(el("td", { title: m.version || "" }, (m.version || "-").split(" ")[0]));
    tr.appendChild(el("td", {}, tagsOf(m).join(" ")));
    const hb = heartbeat(m);
    tr.appendChild(el("td", hb.stale ? { class: "stale" } : {}, hb.text));
    tr.appendChild(el("td", {}, m.newest_age_secs === null || m.newest_age_secs === undefined ? "-" : age(m.newest_age_secs)));
    if (!m.updates) {
      tr.appendChild(el("td", { colspan: Math.max(1, names.length), class: "st-none" }, m.alive ? "(no answer)" : "(not alive)"));
    } else {
      for (const n of names) {
        const u = m.updates.find(u => u.name === n);
        if (!u) { tr.appendChild(el("td", { class: "cell" }, "-")); continue; }
        const attrs = { class: "cell st-" + u.status, "data-update": u.name, "data-status": u.status, title: u.reason || u.status };
        const label = u.status + (u.attempts > 1 ? " (" + u.attempts + ")" : "") + (u.bad_sources && u.bad_sources.length ? " !" : "");
        const td = el("td", attrs, label);
        td.addEventListener("click", () => { selected = m.node; renderMatrix(); renderDetail(); });
        tr.appendChild(td);
      }
    }
    tr.firstChild.addEventListener("click", () => { selected = m.node; renderMatrix(); renderDetail(); });
    body.appendChild(tr);
  }
}

function renderProgress() {
  const box = $("progress");
  clear(box);
  const W = 360, H = 160, P = 28;
  const svg = svgEl("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, id: "progress-plot" });
  box.appendChild(svg);
  const p = view.progress;
  svg.appendChild(svgEl("line", { class: "axis", x1: P, y1: H - P, x2: W - 8, y2: H - P }));
  svg.appendChild(svgEl("line", { class: "axis", x1: P, y1: 8, x2: P, y2: H - P }));
  if (!p) { svg.appendChild(svgEl("text", { x: P + 10, y: H / 2 }, "no rollout yet")); return; }
  const end = Math.max(1, p.applied_after.length ? p.applied_after[p.applied_after.length - 1] : 1, view.asked_at - p.start);
  const total = Math.max(1, p.targeted);
  const x = s => P + (W - 8 - P) * s / end;
  const y = n => H - P - (H - P - 8) * n / total;
  svg.appendChild(svgEl("line", { class: "target", x1: P, y1: y(total), x2: W - 8, y2: y(total) }));
  let points = x(0) + "," + y(0);
  p.applied_after.forEach((s, i) => { points += " " + x(s) + "," + y(i) + " " + x(s) + "," + y(i + 1); });
  points += " " + x(Math.max(end, 0)) + "," + y(p.applied_after.length);
  svg.appendChild(svgEl("polyline", { class: "line", points }));
  svg.appendChild(svgEl("text", { x: 2, y: y(total) + 4 }, total));
  svg.appendChild(svgEl("text", { x: 2, y: H - P + 4 }, "0"));
  svg.appendChild(svgEl("text", { x: W - 40, y: H - 10 }, end + " s"));
  svg.appendChild(svgEl("text", { x: P + 6, y: 18 }, p.applied_after.length + " of " + total + " applied"));
}

function ipOf(addr) {
  const i = addr.lastIndexOf(":");
  return (i < 0 ? addr : addr.slice(0, i)).replace(/^\[|\]$/g, "");
}

function renderTransfer() {
  const box = $("transfer");
  clear(box);
  const W = 360, H = 260, R = 100;
  const svg = svgEl("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, id: "transfer-plot" });
  box.appendChild(svg);
  const r = view.rollout;
  const members = view.members.filter(visible).slice(0, 60);
  const byIp = new Map();
  const pos = new Map();
  members.forEach((m, i) => {
    const a = 2 * Math.PI * i / Math.max(1, members.length) - Math.PI / 2;
    pos.set(m.node, [W / 2 + R * Math.cos(a), H / 2 + R * Math.sin(a)]);
    byIp.set(ipOf(m.addr), m.node);
  });
  const lying = new Set();
  const edges = [];
  for (const m of members) {
    const u = r && (m.updates || []).find(u => u.name === r.name && u.seq === r.seq);
    if (!u) continue;
    for (const b of u.bad_sources || []) { const from = byIp.get(ipOf(b)); if (from) lying.add(from); }
    for (const s of u.sources || []) {
      const from = byIp.get(ipOf(s.addr));
      if (!from || !pos.has(from)) continue;
      let kind = "";
      if (s.bad_pieces > 0) { kind = "lying"; lying.add(from); }
      else if (s.left && s.left.startsWith("slow")) kind = "slow";
      else if (s.left) kind = "failed";
      edges.push({ from, to: m.node, kind, title: from + " -> " + m.node + ": " + s.bytes + " bytes" + (s.left ? " (left: " + s.left + ")" : "") });
    }
  }
  const defs = svgEl("defs");
  for (const kind of ["", "slow", "failed", "lying"]) {
    const marker = svgEl("marker", { id: "arrow" + kind, viewBox: "0 0 6 6", refX: 6, refY: 3, markerWidth: 6, markerHeight: 6, orient: "auto" });
    marker.appendChild(svgEl("path", { d: "M0,0 L6,3 L0,6 z", class: "arrow " + kind }));
    defs.appendChild(marker);
  }
  svg.appendChild(defs);
  for (const e of edges) {
    const [xa, ya] = pos.get(e.from), [xb, yb] = pos.get(e.to);
    // From the source's circle to the receiver's, arrow at the receiver.
    const d = Math.max(1, Math.hypot(xb - xa, yb - ya));
    const [x1, y1] = [xa + (xb - xa) * 9 / d, ya + (yb - ya) * 9 / d];
    const [x2, y2] = [xb - (xb - xa) * 9 / d, yb - (yb - ya) * 9 / d];
    const line = svgEl("line", { class: "edge " + e.kind, x1, y1, x2, y2, "marker-end": "url(#arrow" + e.kind + ")", "data-from": e.from, "data-to": e.to });
    line.appendChild(svgEl("title", {}, e.title));
    svg.appendChild(line);
  }
  for (const m of members) {
    const [cx, cy] = pos.get(m.node);
    const g = svgEl("g", { "data-node": m.node });
    const c = svgEl("circle", { class: "node" + (lying.has(m.node) ? " lying" : ""), cx, cy, r: 7 });
    c.appendChild(svgEl("title", {}, m.node + (lying.has(m.node) ? ": sent bad pieces (a lying or compromised member)" : "")));
    g.appendChild(c);
    g.appendChild(svgEl("text", { x: cx + 9, y: cy + 3 }, m.node));
    svg.appendChild(g);
  }
  if (!edges.length) svg.appendChild(svgEl("text", { x: 8, y: 14 }, r ? "no sources recorded yet" : "no rollout yet"));
}

function renderDetail() {
  const m = view && view.members.find(m => m.node === selected);
  $("detail").hidden = !m;
  if (!m) return;
  $("detail-node").textContent = m.node + " (" + m.addr + ", " + (m.version || "version unknown") + ")";
  const body = $("history").tBodies[0];
  clear(body);
  for (const u of m.updates || []) {
    const tr = el("tr");
    tr.appendChild(el("td", {}, u.name));
    tr.appendChild(el("td", {}, u.seq));
    tr.appendChild(el("td", { class: "st-" + u.status }, u.status));
    tr.appendChild(el("td", {}, new Date(u.at * 1000).toLocaleString()));
    tr.appendChild(el("td", { class: "reason" }, u.reason || ""));
    const td = el("td");
    const button = el("button", { type: "button", class: "logs", "data-update": u.name }, "logs");
    button.addEventListener("click", () => showLogs(m.node, u.name));
    td.appendChild(button);
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

async function showLogs(node, name) {
  const out = $("logs");
  out.textContent = "asking " + node + " for its logs of " + name + "...";
  const q = new URLSearchParams({ node, name });
  const response = await fetch("/api/logs?" + q, { credentials: "same-origin" });
  if (!response.ok) { out.textContent = await response.text(); return; }
  const logs = await response.json();
  out.textContent = logs.name + " seq " + logs.seq + ": " + logs.status + (logs.reason ? "\n" + logs.reason : "") + "\n\n" + (logs.cut ? "(cut)\n" : "") + logs.output;
}

async function act(action) {
  const r = view && view.rollout;
  if (!r) return;
  const what = action === "revert" ? " (every node that applied it goes back to its last good version)" : "";
  if (!window.confirm("Send a signed " + action + " of " + r.name + " seq " + r.seq + " to every node?" + what)) return;
  const q = new URLSearchParams({ action, name: r.name, seq: String(r.seq) });
  const response = await fetch("/api/action?" + q, { method: "POST", credentials: "same-origin" });
  $("action-result").textContent = (response.ok ? "" : "refused: ") + (await response.text());
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter-name").addEventListener("input", () => view && render());
  $("filter-tag").addEventListener("change", () => view && render());
  poll();
  setInterval(poll, 2000);
});

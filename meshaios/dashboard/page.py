"""The dashboard: one static HTML page whose inline script polls ``/api/status`` once a second.

The page builds every element with ``textContent`` (a member's name is data from the network, never markup) and
its Content-Security-Policy admits exactly this script and this style sheet, by hash.
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
:root { --bg:#0f1419; --panel:#171e26; --line:#263241; --text:#d8e0e8; --dim:#7d8b99; --accent:#4fb3ff;
        --ok:#3fcf8e; --warn:#f5c04a; --bad:#ff6b6b; --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--text); font:14px/1.45 system-ui, -apple-system, "Segoe UI",
       Roboto, sans-serif; }
header { display:flex; align-items:baseline; gap:16px; padding:14px 24px; border-bottom:1px solid var(--line);
         flex-wrap:wrap; }
header h1 { margin:0; font-size:20px; letter-spacing:.5px; }
header h1 span { color:var(--accent); }
header .meta { color:var(--dim); font-family:var(--mono); font-size:12px; }
header .links { margin-left:auto; font-size:12px; }
header .links a { color:var(--accent); margin-left:12px; text-decoration:none; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:11px; font-weight:600; }
.badge.secure { background:#123524; color:var(--ok); } .badge.insecure { background:#3a1616; color:var(--bad); }
main { padding:16px 24px 32px; display:grid; gap:16px; grid-template-columns: repeat(12, 1fr); }
section { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:12px 16px; }
section h2 { margin:0 0 10px; font-size:13px; text-transform:uppercase; letter-spacing:1px; color:var(--dim);
             font-weight:600; }
section h2 { display:flex; justify-content:space-between; gap:12px; }
section h2 span.dim { text-transform:none; letter-spacing:0; font-weight:400; }
.cards { grid-column: span 12; display:grid; grid-template-columns: repeat(7, 1fr); gap:12px; background:none;
         border:none; padding:0; }
.card { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:10px 14px; }
.card .v { font-size:24px; font-weight:600; font-variant-numeric: tabular-nums; }
.card .k { color:var(--dim); font-size:12px; }
#sec-throughput { grid-column: span 7; } #sec-work { grid-column: span 5; }
#sec-nodes { grid-column: span 12; } #sec-failures { grid-column: span 6; } #sec-io { grid-column: span 6; }
svg#throughput { width:100%; height:120px; display:block; }
svg#throughput .area { fill: rgba(79,179,255,.15); } svg#throughput .line { fill:none; stroke:var(--accent);
  stroke-width:1.5; } svg#throughput .grid { stroke:var(--line); stroke-width:1; }
table { width:100%; border-collapse:collapse; font-variant-numeric: tabular-nums; }
th { text-align:left; color:var(--dim); font-weight:500; font-size:12px; border-bottom:1px solid var(--line);
     padding:4px 8px; }
td { padding:5px 8px; border-bottom:1px solid #1d2630; white-space:nowrap; }
td.mono { font-family:var(--mono); font-size:12px; }
td.num, th.num { text-align:right; }
.state { font-weight:600; } .state.alive { color:var(--ok); } .state.suspect { color:var(--warn); }
.state.dead { color:var(--bad); } .state.left { color:var(--dim); }
.bar { position:relative; height:8px; background:#0b1016; border-radius:4px; overflow:hidden; min-width:80px; }
.bar > div { position:absolute; left:0; top:0; bottom:0; background:var(--accent); border-radius:4px; }
.bar.load > div { background:var(--ok); } .bar.load.hot > div { background:var(--warn); }
.bar.big { height:14px; margin:6px 0; }
.dim { color:var(--dim); }
ul#failures { list-style:none; padding:0; margin:0; max-height:220px; overflow:auto; font-size:13px; }
ul#failures li { padding:4px 0; border-bottom:1px solid #1d2630; }
ul#failures li .t { color:var(--dim); font-family:var(--mono); font-size:12px; margin-right:8px; }
ul#failures li.bad .n { color:var(--bad); font-weight:600; } ul#failures li.warn .n { color:var(--warn);
  font-weight:600; }
dl.kv { display:grid; grid-template-columns: auto 1fr auto 1fr; gap:4px 16px; margin:0; font-size:13px; }
dl.kv dt { color:var(--dim); } dl.kv dd { margin:0; font-variant-numeric: tabular-nums; }
#sec-stream { grid-column: span 12; }
svg#stream { width:100%; height:160px; display:block; background:#0b1016; border-radius:4px; }
svg#stream .tw { fill:#2a3644; } svg#stream .tf { fill:var(--warn); } svg#stream .tr { fill:var(--accent); }
svg#stream .te { fill:var(--bad); } svg#stream .tm { fill:var(--dim); }
.legend span { margin-left:12px; } .legend i { display:inline-block; width:10px; height:10px; margin-right:4px;
  vertical-align:middle; border-radius:2px; }
.legend .w { background:#2a3644; } .legend .f { background:var(--warn); } .legend .r { background:var(--accent); }
.legend .e { background:var(--bad); }
#error { display:none; grid-column: span 12; background:#3a1616; color:var(--bad); border-color:#5a2020; }
body.stale #error { display:block; }
"""

SCRIPT = r"""
(() => {
  "use strict";
  const qs = new URLSearchParams(location.search);
  const token = qs.get("token");
  const headers = token ? { "Authorization": "Bearer " + token } : {};
  const $ = (id) => document.getElementById(id);
  const HISTORY = 120;
  const samples = [];        // {t, finished, submitted, pending}: this page's own history
  let batch = null;          // the owner's current work when the server reports no jobs
  let prev = null;           // previous status, to diff failure counters
  const failures = [];
  for (const a of document.querySelectorAll("a[data-path]")) {
    a.href = a.dataset.path + (token ? "?token=" + encodeURIComponent(token) : "");
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function num(x) { return typeof x === "number" && isFinite(x) ? x : 0; }
  function fmtInt(x) { return num(x).toLocaleString("en-US"); }
  function fmtBytes(b) {
    b = num(b);
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(1) : b.toFixed(0)) + " " + u[i];
  }
  function fmtDur(s) {
    s = Math.max(0, num(s));
    if (s < 120) return s.toFixed(0) + "s";
    if (s < 7200) return (s / 60).toFixed(0) + "m";
    if (s < 172800) return (s / 3600).toFixed(1) + "h";
    return (s / 86400).toFixed(1) + "d";
  }
  function bar(frac, cls) {
    const b = el("div", null, "bar" + (cls ? " " + cls : ""));
    const f = el("div");
    f.style.width = (Math.max(0, Math.min(1, frac)) * 100).toFixed(1) + "%";
    b.appendChild(f);
    return b;
  }
  function setText(id, text) { const e = $(id); if (e) e.textContent = String(text); }
  function clock() { return new Date().toTimeString().slice(0, 8); }

  function renderHeader(me) {
    setText("mesh", me.mesh || "?");
    setText("self", (me.name || "?") + " (" + String(me.id || "").slice(0, 8) + ")");
    setText("addr", me.addr || "");
    setText("uptime", "up " + fmtDur(me.uptime));
    const b = $("security");
    b.textContent = me.secure ? "CURVE" : "INSECURE";
    b.className = "badge " + (me.secure ? "secure" : "insecure");
  }

  function renderNodes(st) {
    const me = st.node || {};
    const store = me.store || {};
    const rows = [{
      id: me.id, name: me.name, addr: me.addr, state: "alive", devices: me.devices, workers: me.workers,
      queued: me.queued, running: me.running, since: me.uptime, self: true,
      mem: num(store.bytes_in_memory), memLimit: num(me.memory_limit), spilled: num(store.bytes_spilled),
    }];
    const order = { alive: 0, suspect: 1, dead: 2, left: 3 };
    const members = (st.members || []).slice().sort((a, b) =>
      (order[a.state] ?? 9) - (order[b.state] ?? 9) || String(a.name).localeCompare(String(b.name)));
    for (const m of members) rows.push(Object.assign({ self: false, since: m.since }, m));
    const tbody = $("nodes").tBodies[0];
    tbody.replaceChildren();
    let alive = 0;
    for (const r of rows) {
      if (r.state === "alive") alive++;
      const tr = el("tr", null, "node");
      tr.dataset.state = r.state;
      tr.dataset.name = r.name || "";
      tr.dataset.id = r.id || "";
      tr.appendChild(el("td", String(r.id || "").slice(0, 8) + (r.self ? " *" : ""), "mono"));
      tr.appendChild(el("td", r.name || ""));
      tr.appendChild(el("td", String(r.addr || "").replace(/^[a-z]+:\/\//, ""), "mono"));
      tr.appendChild(el("td", r.state, "state " + r.state));
      tr.appendChild(el("td", r.devices || "cpu", "mono"));
      tr.appendChild(el("td", fmtInt(r.workers), "num"));
      tr.appendChild(el("td", r.self ? fmtInt(r.running) : "\u2013", "num"));
      tr.appendChild(el("td", fmtInt(r.queued), "num"));
      const load = num(r.queued) / Math.max(1, num(r.workers));
      const tdLoad = el("td");
      tdLoad.title = load.toFixed(2) + " tasks per worker";
      tdLoad.appendChild(bar(load / 2, "load" + (load > 1.5 ? " hot" : "")));
      tr.appendChild(tdLoad);
      if (r.self) {
        const tdMem = el("td");
        tdMem.title = fmtBytes(r.mem) + " of " + fmtBytes(r.memLimit)
          + (r.spilled ? ", " + fmtBytes(r.spilled) + " spilled" : "");
        tdMem.appendChild(bar(r.memLimit ? r.mem / r.memLimit : 0));
        const cap = el("span", fmtBytes(r.mem) + (r.spilled ? " +" + fmtBytes(r.spilled) + " disk" : ""), "dim");
        tdMem.appendChild(cap);
        tr.appendChild(tdMem);
      } else {
        tr.appendChild(el("td", "\u2013", "dim"));
      }
      tr.appendChild(el("td", fmtDur(r.since), "num"));
      tbody.appendChild(tr);
    }
    setText("alive-count", alive);
    setText("member-count", rows.length);
  }

  function renderCards(me, rate) {
    const o = me.owner || {};
    setText("c-running", fmtInt(me.running));
    setText("c-queued", fmtInt(me.queued));
    setText("c-pending", fmtInt(me.pending));
    setText("c-submitted", fmtInt(o.submitted));
    setText("c-done", fmtInt(o.done));
    setText("c-failed", fmtInt(o.failed));
    setText("rate", rate.toFixed(rate < 10 ? 1 : 0));
  }

  // the owner's counters over time: the server's history (seconds ago, finished, submitted, pending) when it
  // keeps one, else what this page has seen since it opened
  function series(st) {
    const h = st.history && Array.isArray(st.history.samples) ? st.history.samples : null;
    if (h && h.length) {
      return h.map((x) => ({ ago: num(x[0]), finished: num(x[1]), submitted: num(x[2]), pending: num(x[3]) }));
    }
    const now = performance.now() / 1000;
    return samples.map((x) => ({ ago: x.t - now, finished: x.finished, submitted: x.submitted, pending: x.pending }));
  }

  function renderThroughput(pts0) {
    const svg = $("throughput");
    const W = 600, H = 120;
    // the last two minutes, or less while there is less history: the chart always spans its width
    const WINDOW = Math.max(10, Math.min(120, pts0.length ? -pts0[0].ago : 0));
    const pts = [];
    let last = 0, max = 1;
    for (let i = 1; i < pts0.length; i++) {
      const dt = pts0[i].ago - pts0[i - 1].ago;
      if (dt <= 0) continue;
      const r = Math.max(0, pts0[i].finished - pts0[i - 1].finished) / dt;
      if (pts0[i].ago < -WINDOW) continue;
      pts.push([pts0[i].ago, r]);
      last = r;
      max = Math.max(max, r);
    }
    const xy = pts.map(([ago, r]) => [W * (1 + ago / WINDOW), H - 4 - (r / max) * (H - 12)]);
    const fmt = (ps) => ps.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ");
    svg.querySelector(".line").setAttribute("points", fmt(xy));
    const area = xy.length ? [[xy[0][0], H], ...xy, [xy[xy.length - 1][0], H]] : [];
    svg.querySelector(".area").setAttribute("points", fmt(area));
    setText("rate-max", "peak " + max.toFixed(max < 10 ? 1 : 0) + "/s over the last " + fmtDur(WINDOW));
    return last;
  }

  function renderWork(me, pts0) {
    const o = me.owner || {};
    const finished = num(o.done) + num(o.failed);
    const submitted = num(o.submitted);
    const pending = num(me.pending);
    const jobs = Array.isArray(me.jobs) ? me.jobs : null;
    const work = $("work");
    let done = 0, total = 0;
    if (pending === 0) {
      batch = null;
    } else {
      // the work began after the last moment this node owned nothing unfinished
      let base = null;
      for (const x of pts0) if (x.pending === 0) base = x;
      if (base !== null) batch = { fin0: base.finished, sub0: base.submitted };
      else if (batch === null) batch = { fin0: finished, sub0: submitted - pending };
      done = Math.max(0, finished - batch.fin0);
      total = Math.max(done + pending, submitted - batch.sub0);
    }
    work.dataset.finished = done;
    work.dataset.total = total;
    work.dataset.pending = pending;
    work.replaceChildren();
    if (total === 0) {
      work.appendChild(el("div", "idle: no unfinished tasks owned by this node", "dim"));
    } else {
      work.appendChild(el("div", fmtInt(done) + " of " + fmtInt(total) + " tasks finished since this work began \u00b7 "
        + fmtInt(pending) + " to go"));
      work.appendChild(bar(done / total, "big"));
    }
    const tbody = $("jobs").tBodies[0];
    tbody.replaceChildren();
    $("jobs").style.display = jobs && jobs.length ? "" : "none";
    for (const j of jobs || []) {
      const tr = el("tr", null, "job");
      const fin = num(j.done) + num(j.failed);
      tr.dataset.done = fin;
      tr.dataset.total = num(j.total);
      tr.appendChild(el("td", String(j.client || "").slice(0, 14), "mono"));
      const td = el("td");
      td.appendChild(bar(num(j.total) ? fin / num(j.total) : 0));
      tr.appendChild(td);
      tr.appendChild(el("td", fmtInt(fin) + " / " + fmtInt(j.total), "num"));
      tr.appendChild(el("td", fmtInt(j.dispatched), "num"));
      tr.appendChild(el("td", fmtInt(j.failed), "num"));
      tr.appendChild(el("td", fmtDur(j.age), "num"));
      tbody.appendChild(tr);
    }
  }

  const FAILURE_COUNTERS = [
    ["owner", "failed", "tasks failed", "bad"],
    ["node", "failed", "task attempts raised on this node", "bad"],
    ["owner", "retried", "tasks retried", "warn"],
    ["owner", "replaced", "tasks re-placed after their node died", "warn"],
    ["owner", "lost_inputs", "tasks lost their inputs", "warn"],
    ["owner", "recomputed", "results recomputed from lineage", "warn"],
    ["counters", "member_suspect", "members suspected", "warn"],
    ["counters", "member_dead", "members declared dead", "bad"],
    ["transport", "auth_rejected", "handshakes rejected (wrong token?)", "bad"],
    ["transport", "dropped", "messages dropped (peer queue full)", "warn"],
    ["counters", "bad_frames", "malformed messages rejected", "warn"],
    ["counters", "handler_errors", "message handler errors", "bad"],
    ["counters", "tick_errors", "timer errors", "bad"],
    ["counters", "orphan_results", "results whose owner was gone", "warn"],
  ];
  function pick(me, where, key) { return num(where === "node" ? me[key] : (me[where] || {})[key]); }

  function renderFailures(me) {
    if (prev === null) {
      for (const [where, key, label, cls] of FAILURE_COUNTERS) {
        const n = pick(me, where, key);
        if (n > 0) failures.push({ t: "total", n: n, label: label, cls: cls });
      }
    } else {
      for (const [where, key, label, cls] of FAILURE_COUNTERS) {
        const d = pick(me, where, key) - pick(prev, where, key);
        if (d > 0) failures.unshift({ t: clock(), n: "+" + d, label: label, cls: cls });
      }
    }
    failures.splice(50);
    const ul = $("failures");
    ul.replaceChildren();
    const recent = Array.isArray(me.recent_failures) ? me.recent_failures : [];
    for (const f of recent.slice(-20).reverse()) {
      const li = el("li", null, "bad");
      li.appendChild(el("span", f.task ? String(f.task).slice(0, 12) : "task", "t"));
      li.appendChild(el("span", (f.type || "Error") + ": " + (f.msg || ""), "n"));
      ul.appendChild(li);
    }
    for (const f of failures) {
      const li = el("li", null, f.cls);
      li.appendChild(el("span", f.t, "t"));
      li.appendChild(el("span", f.n, "n"));
      li.appendChild(el("span", " " + f.label));
      ul.appendChild(li);
    }
    if (!ul.children.length) ul.appendChild(el("li", "none: every counter of trouble is zero", "dim"));
  }

  function renderIO(me) {
    const t = me.transport || {}, c = me.counters || {}, s = me.store || {}, f = me.fetch || {};
    const items = [
      ["messages sent", fmtInt(t.sent)], ["messages received", fmtInt(t.received)],
      ["bytes served to peers", fmtBytes(c.served_bytes)], ["bytes fetched from peers", fmtBytes(c.fetched_bytes)],
      ["fetches in flight", fmtInt(f.pending)], ["handshakes ok", fmtInt(t.auth_ok)],
      ["store objects", fmtInt(s.objects)],
      ["store memory", fmtBytes(s.bytes_in_memory) + " / " + fmtBytes(me.memory_limit)],
      ["spilled to disk", fmtBytes(s.bytes_spilled)], ["store peak", fmtBytes(s.peak_memory)],
      ["steals", fmtInt((me.steal || {}).stolen)], ["remote dispatches", fmtInt(c.dispatched_remote)],
    ];
    const dl = $("io");
    dl.replaceChildren();
    for (const [k, v] of items) { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v)); }
  }

  // The task stream: this node's most recent task attempts (status ``node.timeline``), one lane per worker
  // slot: queued (dark), fetching inputs (amber), running (blue; red if it failed or lost its inputs).
  function renderStream(me) {
    const svg = $("stream");
    const recs = Array.isArray(me.timeline) ? me.timeline.filter((r) => r && typeof r.queued === "number") : [];
    const sum = me.timeline_summary || {};
    const share = sum.share || {};
    setText("stream-sum", fmtInt(sum.tasks) + " tasks here: " + Math.round(100 * num(share.wait_s)) + "% queued, "
      + Math.round(100 * num(share.fetch_s)) + "% fetching inputs, " + Math.round(100 * num(share.run_s))
      + "% running; " + fmtBytes(num(sum.bytes_in)) + " fetched");
    const NS = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    if (!recs.length) return;
    const fin = (r) => (typeof r.finished === "number" ? r.finished : r.queued);
    const start = (r) => (typeof r.started === "number" ? r.started : fin(r));
    let t0 = Infinity, t1 = -Infinity;
    for (const r of recs) { t0 = Math.min(t0, r.queued); t1 = Math.max(t1, fin(r)); }
    const span = Math.max(1e-3, t1 - t0);
    // lanes: a run occupies its lane from start to finish (greedy interval partitioning)
    const sorted = recs.slice().sort((a, b) => start(a) - start(b));
    const laneEnd = [];
    const lane = new Map();
    for (const r of sorted) {
      let i = laneEnd.findIndex((e) => e <= start(r) + 1e-9);
      if (i < 0) { i = laneEnd.length; laneEnd.push(0); }
      laneEnd[i] = fin(r);
      lane.set(r, i);
    }
    const W = 600, H = 160, lanes = Math.max(1, laneEnd.length), lh = H / lanes;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    const x = (t) => ((t - t0) / span) * W;
    const rect = (a, b, y, h, cls, tip) => {
      const e = document.createElementNS(NS, "rect");
      e.setAttribute("x", x(a).toFixed(2));
      e.setAttribute("y", y.toFixed(2));
      e.setAttribute("width", Math.max(0.5, x(b) - x(a)).toFixed(2));
      e.setAttribute("height", Math.max(1, h).toFixed(2));
      e.setAttribute("class", cls);
      const t = document.createElementNS(NS, "title");
      t.textContent = tip;
      e.appendChild(t);
      svg.appendChild(e);
    };
    for (const r of recs) {
      const y = lane.get(r) * lh;
      const tip = String(r.task).slice(0, 24) + " #" + r.attempt + " on " + r.device + ": queued "
        + num(r.wait_s).toFixed(3) + " s, inputs " + num(r.fetch_s).toFixed(3) + " s (" + fmtBytes(num(r.bytes_in))
        + "), ran " + num(r.run_s).toFixed(3) + " s, " + r.outcome;
      rect(r.queued, start(r), y + lh * 0.35, lh * 0.3, "tw", tip);
      if (typeof r.inputs_requested === "number" && typeof r.inputs_arrived === "number") {
        rect(r.inputs_requested, r.inputs_arrived, y + lh * 0.2, lh * 0.6, "tf", tip);
      }
      const bad = r.outcome === "error" || r.outcome === "lost";
      rect(start(r), fin(r), y + lh * 0.1, lh * 0.8, bad ? "te" : (r.outcome === "moved" ? "tm" : "tr"), tip);
    }
  }

  async function poll() {
    try {
      const r = await fetch("api/status", { headers: headers, cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status + " " + (await r.text()).slice(0, 200));
      const st = await r.json();
      const me = st.node || {};
      const o = me.owner || {};
      samples.push({ t: performance.now() / 1000, finished: num(o.done) + num(o.failed), submitted: num(o.submitted),
        pending: num(me.pending) });
      if (samples.length > HISTORY) samples.shift();
      const pts = series(st);
      renderHeader(me);
      renderNodes(st);
      const rate = renderThroughput(pts);
      renderCards(me, rate);
      renderWork(me, pts);
      renderFailures(me);
      renderIO(me);
      renderStream(me);
      prev = me;
      setText("updated", "updated " + clock());
      document.body.classList.remove("stale");
      document.body.dataset.ready = "1";
      document.body.dataset.polls = String(num(Number(document.body.dataset.polls)) + 1);
    } catch (e) {
      setText("error", "cannot reach this node: " + e.message);
      document.body.classList.add("stale");
    }
  }
  poll();
  setInterval(poll, 1000);
})();
"""

_BODY = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshaios dashboard</title>
<style>{style}</style>
</head>
<body>
<header>
  <h1>mesh<span>ai</span>os</h1>
  <span class="meta">mesh <b id="mesh">?</b></span>
  <span class="meta">node <b id="self">?</b> <span id="addr"></span></span>
  <span id="security" class="badge">?</span>
  <span class="meta" id="uptime"></span>
  <span class="meta" id="updated">connecting&#8230;</span>
  <span class="links"><a data-path="api/status" href="api/status">/api/status</a>
    <a data-path="metrics" href="metrics">/metrics</a></span>
</header>
<main>
  <section id="error"></section>
  <div class="cards">
    <div class="card"><div class="v"><span id="alive-count">0</span><span class="dim"> / <span
      id="member-count">0</span></span></div><div class="k">nodes alive</div></div>
    <div class="card"><div class="v" id="rate">0</div><div class="k">tasks / s</div></div>
    <div class="card"><div class="v" id="c-running">0</div><div class="k">running here</div></div>
    <div class="card"><div class="v" id="c-queued">0</div><div class="k">queued here</div></div>
    <div class="card"><div class="v" id="c-pending">0</div><div class="k">owned, unfinished</div></div>
    <div class="card"><div class="v" id="c-done">0</div><div class="k">done (of <span
      id="c-submitted">0</span> submitted)</div></div>
    <div class="card"><div class="v" id="c-failed">0</div><div class="k">failed</div></div>
  </div>
  <section id="sec-throughput">
    <h2>Throughput: owned tasks finished / s <span class="dim" id="rate-max"></span></h2>
    <svg id="throughput" viewBox="0 0 600 120" preserveAspectRatio="none">
      <line class="grid" x1="0" y1="60" x2="600" y2="60"></line>
      <polygon class="area" points=""></polygon><polyline class="line" points=""></polyline>
    </svg>
  </section>
  <section id="sec-work">
    <h2>Running jobs</h2>
    <div id="work" data-finished="0" data-total="0" data-pending="0"></div>
    <table id="jobs"><thead><tr><th>client</th><th>progress</th><th class="num">finished</th>
      <th class="num">dispatched</th><th class="num">failed</th><th class="num">age</th></tr></thead>
      <tbody></tbody></table>
  </section>
  <section id="sec-nodes">
    <h2>Nodes (this node's view of the mesh; * is this node)</h2>
    <table id="nodes"><thead><tr><th>node</th><th>name</th><th>address</th><th>state</th><th>devices</th>
      <th class="num">workers</th><th class="num">running</th><th class="num">queued</th><th>load</th>
      <th>memory</th><th class="num">since/uptime</th></tr></thead><tbody></tbody></table>
  </section>
  <section id="sec-stream">
    <h2>Task stream: this node's recent tasks, one lane per slot <span class="dim legend"><span id="stream-sum">
      </span><span><i class="w"></i>queued</span><span><i class="f"></i>inputs</span><span><i
      class="r"></i>running</span><span><i class="e"></i>failed</span></span></h2>
    <svg id="stream" viewBox="0 0 600 160" preserveAspectRatio="none"></svg>
  </section>
  <section id="sec-failures">
    <h2>Recent failures</h2>
    <ul id="failures"></ul>
  </section>
  <section id="sec-io">
    <h2>Data, transport and store</h2>
    <dl class="kv" id="io"></dl>
  </section>
</main>
<script>{script}</script>
</body>
</html>
"""

PAGE: bytes = _BODY.replace("{style}", STYLE).replace("{script}", SCRIPT).encode()


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


_CSP = (
    "default-src 'none'; "
    f"script-src '{_sha256(SCRIPT)}'; "
    f"style-src '{_sha256(STYLE)}'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def csp_header() -> str:
    return _CSP

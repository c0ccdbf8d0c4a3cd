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
.cards { grid-column: span 12; display:grid; grid-template-columns: repeat(8, 1fr); gap:12px; background:none;
         border:none; padding:0; }
.card { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:10px 14px; }
.card .v { font-size:24px; font-weight:600; font-variant-numeric: tabular-nums; }
.card .k { color:var(--dim); font-size:12px; }
#sec-throughput { grid-column: span 7; } #sec-work { grid-column: span 5; }
#sec-nodes { grid-column: span 12; } #sec-failures { grid-column: span 6; } #sec-io { grid-column: span 12; }
#sec-gpus { grid-column: span 12; }
#sec-functions { grid-column: span 6; } #sec-hist { grid-column: span 6; } #sec-errors { grid-column: span 6; }
.chart { position:relative; } .chart .axl { position:absolute; font-size:10px; color:var(--dim);
  font-family:var(--mono); } .axl.top { left:2px; top:0; } .axl.mid { left:2px; top:52px; }
.axl.left { left:0; bottom:-14px; } .axl.half { left:50%; bottom:-14px; } .axl.now { right:0; bottom:-14px; }
svg#hist { width:100%; height:150px; display:block; } svg#hist .ax { fill:var(--dim); font-size:10px;
  font-family:var(--mono); }
i.sw { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; vertical-align:middle; }
#hist-legend { font-size:12px; color:var(--dim); display:flex; flex-wrap:wrap; gap:4px 14px; margin-top:6px; }
.bar.stack > div { position:static; float:left; height:100%; border-radius:0; }
.bar.stack > .d { background:var(--ok); } .bar.stack > .x { background:var(--bad); }
.bar.stack > .r { background:var(--accent); }
td.badnum { color:var(--bad); font-weight:600; }
td.name { max-width:220px; overflow:hidden; text-overflow:ellipsis; }
td.mem { min-width:150px; } td.mem .bar { display:inline-block; width:60px; min-width:60px; margin-right:8px;
  vertical-align:middle; } #sec-nodes { overflow-x:auto; }
ul#errors { list-style:none; padding:0; margin:0; max-height:260px; overflow:auto; font-size:13px; }
ul#errors li { padding:4px 0; border-bottom:1px solid #1d2630; }
ul#errors summary { cursor:pointer; } ul#errors .n { color:var(--bad); } ul#errors .fnname { font-family:var(--mono);
  font-size:12px; } ul#errors .t { color:var(--dim); font-family:var(--mono); font-size:11px; }
ul#errors pre { white-space:pre-wrap; font-size:11px; background:#0b1016; padding:8px; border-radius:4px;
  max-height:200px; overflow:auto; margin:6px 0 2px; }
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
#stream-wrap { display:flex; gap:6px; }
#stream-labels { position:relative; width:96px; flex:none; font-family:var(--mono); font-size:11px; }
#stream-labels div { position:absolute; left:0; right:0; overflow:hidden; white-space:nowrap;
  text-overflow:ellipsis; border-top:1px solid #1d2630; color:var(--dim); }
svg#stream { flex:1; min-width:0; height:160px; display:block; background:#0b1016; border-radius:4px; }
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

  // every node of the mesh: this node's own figures and its members' gossiped ones (``mesh.nodes``)
  function renderNodes(st) {
    const mesh = st.mesh || {};
    const order = { alive: 0, suspect: 1, dead: 2, left: 3 };
    const all = Array.isArray(mesh.nodes) ? mesh.nodes : [];
    const rows = all.filter((r) => r.self).concat(all.filter((r) => !r.self).sort((a, b) =>
      (order[a.state] ?? 9) - (order[b.state] ?? 9) || String(a.name).localeCompare(String(b.name))));
    const tbody = $("nodes").tBodies[0];
    tbody.replaceChildren();
    let alive = 0, maxMem = 1;
    for (const r of rows) maxMem = Math.max(maxMem, num(r.memory));
    for (const r of rows) {
      if (r.state === "alive") alive++;
      const tr = el("tr", null, "node");
      tr.dataset.state = r.state;
      tr.dataset.name = r.name || "";
      tr.dataset.id = r.id || "";
      tr.dataset.memory = num(r.memory);
      tr.dataset.finished = num(r.finished);
      tr.appendChild(el("td", String(r.id || "").slice(0, 8) + (r.self ? " *" : ""), "mono"));
      const tdName = el("td", r.name || "", "name");
      tdName.title = r.name || "";
      tr.appendChild(tdName);
      tr.appendChild(el("td", String(r.addr || "").replace(/^[a-z]+:\/\//, ""), "mono"));
      tr.appendChild(el("td", r.state, "state " + r.state));
      tr.appendChild(el("td", String(r.devices || "cpu").replace(/,/g, " "), "mono"));
      const busy = num(r.running) / Math.max(1, num(r.workers));
      const tdBusy = el("td");
      tdBusy.title = fmtInt(r.running) + " of " + fmtInt(r.workers) + " workers busy, " + fmtInt(r.queued) + " queued";
      tdBusy.appendChild(bar(busy, "load" + (num(r.queued) > num(r.workers) ? " hot" : "")));
      tr.appendChild(tdBusy);
      tr.appendChild(el("td", fmtInt(r.running) + "/" + fmtInt(r.workers), "num"));
      tr.appendChild(el("td", fmtInt(r.queued), "num"));
      tr.appendChild(el("td", fmtInt(r.finished), "num"));
      tr.appendChild(el("td", fmtInt(r.failed), "num" + (num(r.failed) ? " badnum" : "")));
      tr.appendChild(el("td", num(r.tasks_per_s).toFixed(1), "num"));
      const tdMem = el("td", null, "mem");
      const lim = num(r.memory_limit);
      tdMem.title = fmtBytes(r.memory) + " of results in memory" + (lim ? " of " + fmtBytes(lim) : "")
        + (num(r.spilled) ? ", " + fmtBytes(r.spilled) + " spilled" : "");
      tdMem.appendChild(bar(num(r.memory) / maxMem));  // relative to the fullest node: comparable across rows
      tdMem.appendChild(el("span", fmtBytes(r.memory) + (num(r.spilled) ? " +" + fmtBytes(r.spilled) + " disk" : ""),
        "dim"));
      tr.appendChild(tdMem);
      tr.appendChild(el("td", fmtDur(r.since), "num"));
      tbody.appendChild(tr);
    }
    setText("alive-count", alive);
    setText("member-count", rows.length);
  }

  // the mesh's totals (``mesh.totals``: every node alive or suspect), the same whichever node serves the page
  function renderCards(t, rate) {
    setText("c-running", fmtInt(t.running));
    setText("c-workers", fmtInt(t.workers));
    setText("c-queued", fmtInt(t.queued));
    setText("c-pending", fmtInt(t.pending));
    setText("c-done", fmtInt(num(t.finished) - num(t.failed)));
    setText("c-failed", fmtInt(t.failed));
    setText("c-memory", fmtBytes(t.memory));
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
    setText("ax-top", max.toFixed(max < 10 ? 1 : 0) + "/s");
    setText("ax-mid", (max / 2).toFixed(max < 20 ? 1 : 0) + "/s");
    setText("ax-left", "\u2212" + fmtDur(WINDOW));
    setText("ax-half", "\u2212" + fmtDur(WINDOW / 2));
    return last;
  }

  function renderWork(me, t, pts0) {
    const finished = num(t.finished);
    const pending = num(t.pending);
    const submitted = finished + pending;
    const jobs = Array.isArray(me.jobs) ? me.jobs : null;
    const work = $("work");
    let done = 0, total = 0;
    if (pending === 0) {
      batch = null;
    } else {
      // the work began after the last moment the mesh owned nothing unfinished
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
      work.appendChild(el("div", "idle: no unfinished tasks in the mesh", "dim"));
    } else {
      work.appendChild(el("div", fmtInt(done) + " of " + fmtInt(total) + " tasks finished in the mesh since this work "
        + "began \u00b7 " + fmtInt(pending) + " to go"));
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

  // a stable colour per function name (the same in the progress table, the histogram and the task stream)
  const PALETTE = ["#4fb3ff", "#3fcf8e", "#c792ea", "#f5c04a", "#ff9e64", "#7dcfff", "#e0af68", "#9ece6a",
    "#bb9af7", "#2ac3de"];
  function colour(name) {
    if (!name) return "#5c6b7a";
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return PALETTE[h % PALETTE.length];
  }
  function swatch(name) {
    const i = el("i", null, "sw");
    i.style.background = colour(name);
    return i;
  }
  function shortFn(name) {
    const s = String(name || "");
    const i = s.lastIndexOf(":");
    return i >= 0 ? s.slice(i + 1) + " (" + s.slice(0, i) + ")" : s;
  }

  // GPUs of the mesh (``work.gpus``, from every node's view): what the device tier keeps on each, against its
  // share of the device, the copies each way and the evictions; hidden where the mesh has no GPU
  function renderGpus(work) {
    const rows = work && Array.isArray(work.gpus) ? work.gpus : [];
    $("sec-gpus").style.display = rows.length ? "" : "none";
    const tbody = $("gpus").tBodies[0];
    tbody.replaceChildren();
    for (const g of rows) {
      const tr = el("tr", null, "gpu");
      tr.dataset.node = g.node || "";
      tr.dataset.device = g.device || "";
      tr.dataset.resident = num(g.resident_bytes);
      tr.dataset.h2d = num(g.h2d);
      tr.dataset.d2h = num(g.d2h);
      tr.appendChild(el("td", g.node || ""));
      tr.appendChild(el("td", g.device || "", "mono"));
      tr.appendChild(el("td", num(g.busy) ? "busy" : "idle", num(g.busy) ? null : "dim"));
      const td = el("td");
      td.appendChild(bar(num(g.limit) ? num(g.resident_bytes) / num(g.limit) : 0));
      td.appendChild(el("span", " " + fmtBytes(num(g.resident_bytes)) + " / " + fmtBytes(num(g.limit))
        + " \u00b7 " + fmtInt(g.resident_objects) + " objects", "dim"));
      tr.appendChild(td);
      tr.appendChild(el("td", fmtInt(g.h2d) + " (" + fmtBytes(num(g.h2d_bytes)) + ")", "num"));
      tr.appendChild(el("td", fmtInt(g.d2h) + " (" + fmtBytes(num(g.d2h_bytes)) + ")", "num"));
      tr.appendChild(el("td", fmtInt(g.evictions), "num"));
      tr.appendChild(el("td", fmtInt(g.oom_failures), num(g.oom_failures) ? "num badnum" : "num"));
      tbody.appendChild(tr);
    }
  }

  function renderFunctions(me) {
    const fns = Array.isArray(me.functions) ? me.functions : [];
    const tbody = $("functions").tBodies[0];
    tbody.replaceChildren();
    $("functions").style.display = fns.length ? "" : "none";
    setText("functions-none", fns.length ? "" : "no tasks in the mesh");
    for (const f of fns) {
      const tr = el("tr", null, "fn");
      const fin = num(f.done) + num(f.failed);
      tr.dataset.name = f.function || "";
      tr.dataset.done = num(f.done);
      tr.dataset.failed = num(f.failed);
      tr.dataset.pending = num(f.pending);
      tr.dataset.total = num(f.total);
      const td0 = el("td", null, "mono");
      td0.appendChild(swatch(f.function));
      td0.appendChild(document.createTextNode(shortFn(f.function)));
      td0.title = f.function || "";
      tr.appendChild(td0);
      const td = el("td");
      const b = el("div", null, "bar stack");
      const tot = Math.max(1, num(f.total));
      for (const [k, cls] of [["done", "d"], ["failed", "x"], ["dispatched", "r"]]) {
        const seg = el("div", null, cls);
        seg.style.width = (100 * num(f[k]) / tot).toFixed(1) + "%";
        b.appendChild(seg);
      }
      td.appendChild(b);
      tr.appendChild(td);
      tr.appendChild(el("td", fmtInt(fin) + " / " + fmtInt(f.total), "num"));
      tr.appendChild(el("td", fmtInt(f.dispatched), "num"));
      tr.appendChild(el("td", fmtInt(num(f.waiting) + num(f.ready)), "num"));
      tr.appendChild(el("td", fmtInt(f.failed), "num" + (num(f.failed) ? " badnum" : "")));
      tbody.appendChild(tr);
    }
  }

  // run times of the tasks run on this node, log-spaced buckets, stacked by function (``durations``)
  function renderHistogram(h) {
    const svg = $("hist");
    const NS = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    const bounds = Array.isArray(h && h.buckets) ? h.buckets : [];
    const series = Array.isArray(h && h.series) ? h.series : [];
    const nb = bounds.length + 1;
    const tot = new Array(nb).fill(0);
    let n = 0;
    for (const s of series) {
      for (let i = 0; i < nb; i++) { const c = num((s.counts || [])[i]); tot[i] += c; n += c; }
    }
    const max = Math.max(1, ...tot);
    const W = 600, H = 150, B = 18, bw = W / nb;
    const label = (b) => (b < 1 ? (b * 1000).toFixed(0) + "ms" : b.toFixed(0) + "s");
    const txt = (x, y, t, anchor) => {
      const e = document.createElementNS(NS, "text");
      e.setAttribute("x", x.toFixed(1)); e.setAttribute("y", y.toFixed(1));
      e.setAttribute("text-anchor", anchor || "middle"); e.setAttribute("class", "ax");
      e.textContent = t; svg.appendChild(e);
    };
    for (let i = 0; i < nb; i++) {
      txt(i * bw + bw / 2, H - 4, i < bounds.length ? "\u2264" + label(bounds[i]) : ">" + label(bounds[nb - 2] || 0));
      let y = H - B;
      for (const s of series) {
        const c = num((s.counts || [])[i]);
        if (!c) continue;
        const hgt = (c / max) * (H - B - 14);
        const r = document.createElementNS(NS, "rect");
        r.setAttribute("x", (i * bw + 3).toFixed(1)); r.setAttribute("width", (bw - 6).toFixed(1));
        r.setAttribute("y", (y - hgt).toFixed(1)); r.setAttribute("height", Math.max(0.5, hgt).toFixed(1));
        r.setAttribute("fill", s.name && s.name.startsWith("other@") ? "#5c6b7a" : colour(s.name));
        const t = document.createElementNS(NS, "title");
        t.textContent = c + " \u00d7 " + s.name;
        r.appendChild(t); svg.appendChild(r);
        y -= hgt;
      }
      if (tot[i]) txt(i * bw + bw / 2, y - 3, fmtInt(tot[i]));
    }
    svg.dataset.tasks = n;
    const leg = $("hist-legend");
    leg.replaceChildren();
    for (const s of series) {
      const sp = el("span");
      sp.appendChild(swatch(s.name && s.name.startsWith("other@") ? "" : s.name));
      sp.appendChild(document.createTextNode(shortFn(s.name) + " " + fmtInt(s.n) + " \u00b7 mean "
        + (num(s.sum) / Math.max(1, num(s.n))).toFixed(3) + " s"));
      leg.appendChild(sp);
    }
    setText("hist-sum", n ? fmtInt(n) + " recent tasks" : "no task run yet");
  }

  // the owner's failed tasks, most recent first, each with its traceback (``node.errors``)
  function renderErrors(me) {
    const errs = Array.isArray(me.errors) ? me.errors : [];
    const ul = $("errors");
    ul.replaceChildren();
    for (const e of errs) {
      const li = el("li", null, "err");
      const d = el("details");
      const sm = el("summary");
      sm.appendChild(swatch(e.function));
      sm.appendChild(el("span", shortFn(e.function), "fnname"));
      sm.appendChild(el("span", " " + (e.type || "Error") + ": " + (e.msg || ""), "n"));
      sm.appendChild(el("span", " " + String(e.task || "").slice(0, 12) + (e.owner ? " \u00b7 owner " + e.owner : "")
        + " \u00b7 " + fmtDur(e.age) + " ago", "t"));
      d.appendChild(sm);
      d.appendChild(el("pre", e.tb || "(no traceback)"));
      li.appendChild(d);
      ul.appendChild(li);
    }
    setText("errors-count", errs.length ? fmtInt(errs.length) + " most recent" : "");
    if (!errs.length) ul.appendChild(el("li", "no failed task", "dim"));
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

  // The task stream: the most recent task attempts of every node (``work.stream``; this node's own ``node.timeline``
  // when its members could not be asked), one group of lanes per node, one lane per busy slot: queued (dark),
  // fetching inputs (amber), running (coloured by function; red if it failed or lost its inputs).
  function renderStream(me, work) {
    const svg = $("stream");
    const labels = $("stream-labels");
    const raw = work && Array.isArray(work.stream) ? work.stream : (Array.isArray(me.timeline) ? me.timeline : []);
    const recs = raw.filter((r) => r && typeof r.queued === "number");
    const sum = me.timeline_summary || {};
    const share = sum.share || {};
    setText("stream-sum", fmtInt(sum.tasks) + " tasks here: " + Math.round(100 * num(share.wait_s)) + "% queued, "
      + Math.round(100 * num(share.fetch_s)) + "% fetching inputs, " + Math.round(100 * num(share.run_s))
      + "% running; " + fmtBytes(num(sum.bytes_in)) + " fetched");
    const NS = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    labels.replaceChildren();
    if (!recs.length) return;
    const fin = (r) => (typeof r.finished === "number" ? r.finished : r.queued);
    const start = (r) => (typeof r.started === "number" ? r.started : fin(r));
    let t0 = Infinity, t1 = -Infinity;
    for (const r of recs) { t0 = Math.min(t0, r.queued); t1 = Math.max(t1, fin(r)); }
    const span = Math.max(1e-3, t1 - t0);
    // per node (in the order the nodes answered), lanes: a run occupies its lane from start to finish (greedy
    // interval partitioning)
    const order = (work && Array.isArray(work.nodes) ? work.nodes.map((n) => n.id) : []);
    const groups = new Map(order.map((id) => [id, []]));
    for (const r of recs) {
      const id = r.node || "";
      if (!groups.has(id)) groups.set(id, []);
      groups.get(id).push(r);
    }
    const lane = new Map();
    const bands = [];
    let lanes = 0;
    for (const [id, rs] of groups) {
      if (!rs.length) continue;
      const laneEnd = [];
      for (const r of rs.slice().sort((a, b) => start(a) - start(b))) {
        let i = laneEnd.findIndex((e) => e <= start(r) + 1e-9);
        if (i < 0) { i = laneEnd.length; laneEnd.push(0); }
        laneEnd[i] = fin(r);
        lane.set(r, lanes + i);
      }
      bands.push({ id: id, name: rs[0].node_name || String(id).slice(0, 8), first: lanes, n: laneEnd.length });
      lanes += laneEnd.length;
    }
    const W = 600, H = Math.max(160, 14 * lanes), lh = H / Math.max(1, lanes);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.style.height = H + "px";
    labels.style.height = H + "px";
    for (const b of bands) {
      const d = el("div", b.name);
      d.title = b.name + " (" + b.id + "): " + b.n + " lane" + (b.n === 1 ? "" : "s");
      d.style.top = (b.first * lh) + "px";
      d.style.height = (b.n * lh) + "px";
      d.dataset.node = b.id;
      labels.appendChild(d);
    }
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
      return e;
    };
    for (const r of recs) {
      const y = lane.get(r) * lh;
      const tip = String(r.task).slice(0, 24) + " #" + r.attempt + " on " + (r.node_name || "this node") + " ("
        + r.device + "): queued " + num(r.wait_s).toFixed(3) + " s, inputs " + num(r.fetch_s).toFixed(3) + " s ("
        + fmtBytes(num(r.bytes_in)) + "), ran " + num(r.run_s).toFixed(3) + " s, " + r.outcome;
      rect(r.queued, start(r), y + lh * 0.35, lh * 0.3, "tw", tip);
      if (typeof r.inputs_requested === "number" && typeof r.inputs_arrived === "number") {
        rect(r.inputs_requested, r.inputs_arrived, y + lh * 0.2, lh * 0.6, "tf", tip);
      }
      const bad = r.outcome === "error" || r.outcome === "lost";
      const run = rect(start(r), fin(r), y + lh * 0.1, lh * 0.8, bad ? "te" : (r.outcome === "moved" ? "tm" : "tr"),
        (r.function ? r.function + " \u00b7 " : "") + tip);
      run.dataset.node = r.node || "";
      if (!bad && r.outcome !== "moved" && r.function) run.style.fill = colour(r.function);
    }
  }

  async function poll() {
    try {
      const r = await fetch("api/status", { headers: headers, cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status + " " + (await r.text()).slice(0, 200));
      const st = await r.json();
      const me = st.node || {};
      const tot = (st.mesh || {}).totals || {};
      samples.push({ t: performance.now() / 1000, finished: num(tot.finished),
        submitted: num(tot.finished) + num(tot.pending), pending: num(tot.pending) });
      if (samples.length > HISTORY) samples.shift();
      const pts = series(st);
      renderHeader(me);
      renderNodes(st);
      const rate = renderThroughput(pts);
      renderCards(tot, rate);
      // the whole mesh's work (every node's stream, every owner's progress and kept errors: ``work``), or this
      // node's alone when the members could not be asked
      const w = st.work || null;
      const mesh = w ? { ...me, jobs: w.jobs, functions: w.functions, errors: w.errors } : me;
      renderWork(mesh, tot, pts);
      renderFunctions(mesh);
      renderGpus(w);
      renderHistogram(st.durations);
      renderErrors(mesh);
      renderFailures(me);
      renderIO(me);
      renderStream(me, w);
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
    <div class="card"><div class="v"><span id="c-running">0</span><span class="dim"> / <span
      id="c-workers">0</span></span></div><div class="k">workers busy</div></div>
    <div class="card"><div class="v" id="c-queued">0</div><div class="k">queued</div></div>
    <div class="card"><div class="v" id="c-pending">0</div><div class="k">unfinished</div></div>
    <div class="card"><div class="v" id="c-done">0</div><div class="k">tasks done</div></div>
    <div class="card"><div class="v" id="c-failed">0</div><div class="k">tasks failed</div></div>
    <div class="card"><div class="v" id="c-memory">0</div><div class="k">results in memory</div></div>
  </div>
  <section id="sec-throughput">
    <h2>Throughput: tasks finished / s, whole mesh <span class="dim" id="rate-max"></span></h2>
    <div class="chart"><svg id="throughput" viewBox="0 0 600 120" preserveAspectRatio="none">
      <line class="grid" x1="0" y1="8" x2="600" y2="8"></line>
      <line class="grid" x1="0" y1="62" x2="600" y2="62"></line>
      <line class="grid" x1="300" y1="0" x2="300" y2="120"></line>
      <polygon class="area" points=""></polygon><polyline class="line" points=""></polyline>
    </svg><span class="axl top" id="ax-top"></span><span class="axl mid" id="ax-mid"></span><span
      class="axl left" id="ax-left"></span><span class="axl half" id="ax-half"></span><span
      class="axl now">now</span></div>
  </section>
  <section id="sec-work">
    <h2>Work in the mesh, and this node's jobs</h2>
    <div id="work" data-finished="0" data-total="0" data-pending="0"></div>
    <table id="jobs"><thead><tr><th>client</th><th>progress</th><th class="num">finished</th>
      <th class="num">dispatched</th><th class="num">failed</th><th class="num">age</th></tr></thead>
      <tbody></tbody></table>
  </section>
  <section id="sec-nodes">
    <h2>Nodes of the mesh (* serves this page; the others' figures are gossiped, a second or two old)</h2>
    <table id="nodes"><thead><tr><th>node</th><th>name</th><th>address</th><th>state</th><th>devices</th>
      <th>busy</th><th class="num">running</th><th class="num">queued</th><th class="num">finished</th>
      <th class="num">failed</th><th class="num">tasks/s</th><th>memory</th><th class="num">since/uptime</th>
      </tr></thead><tbody></tbody></table>
  </section>
  <section id="sec-gpus" style="display:none">
    <h2>GPUs of the mesh (objects kept on the device between tasks, against the device tier's share)</h2>
    <table id="gpus"><thead><tr><th>node</th><th>device</th><th>task</th><th>kept on the device</th>
      <th class="num">host to device</th><th class="num">device to host</th><th class="num">evicted</th>
      <th class="num">out of memory</th></tr></thead><tbody></tbody></table>
  </section>
  <section id="sec-functions">
    <h2>Progress per function (every owner's tasks) <span class="dim" id="functions-none"></span></h2>
    <table id="functions"><thead><tr><th>function</th><th>done / failed / running</th>
      <th class="num">finished</th><th class="num">running</th><th class="num">waiting</th>
      <th class="num">failed</th></tr></thead><tbody></tbody></table>
  </section>
  <section id="sec-hist">
    <h2>Task run times (every node's recent tasks) <span class="dim" id="hist-sum"></span></h2>
    <svg id="hist" viewBox="0 0 600 150" preserveAspectRatio="none"></svg>
    <div id="hist-legend"></div>
  </section>
  <section id="sec-stream">
    <h2>Task stream: every node's recent tasks, one lane per slot, coloured by function <span
      class="dim legend"><span id="stream-sum"></span><span><i class="w"></i>queued</span><span><i
      class="f"></i>inputs</span><span><i class="r"></i>running</span><span><i class="e"></i>failed</span></span></h2>
    <div id="stream-wrap"><div id="stream-labels"></div>
      <svg id="stream" viewBox="0 0 600 160" preserveAspectRatio="none"></svg></div>
  </section>
  <section id="sec-errors">
    <h2>Task errors in the mesh, kept after their futures are gone (click for the traceback) <span class="dim"
      id="errors-count"></span></h2>
    <ul id="errors"></ul>
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

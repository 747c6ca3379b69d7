"""The built-in dashboard page, for teams without Grafana: one HTML page, no build step.

Served by the admin listener at ``/dashboard`` (and ``/-/dashboard``). The page polls
``/-/stats`` every few seconds and shows, for a chosen window (1, 5 or 15 minutes, or since
start): requests, replies inspected, rewritten and blocked, crisis resources added, enforce vs
shadow hits, hits by category and by policy, guardrail's own time per request (p50, p90, p99),
upstream errors, reload failures, and the policies now loaded with their modes.

No external resource is loaded (no CDN, no font, no image); the inline script and style are
allowed by their hashes in the Content-Security-Policy (:data:`PAGE_CSP`), nothing else runs.
Figures are written with ``textContent`` only, so a policy id can never inject markup. When the
admin token is required, the page asks for it and keeps it in the tab's ``sessionStorage``; a
``#token=...`` fragment in the URL is taken too (browsers never send fragments to the server).
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["PAGE", "PAGE_CSP"]

_STYLE = """
:root { --fg:#1c2430; --muted:#5b6675; --line:#d9dee5; --bg:#f6f7f9; --card:#fff;
        --accent:#2f6fb2; --warn:#b4531a; --bad:#b3261e; --ok:#2e7d32; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color:var(--fg); background:var(--bg); }
header { display:flex; flex-wrap:wrap; gap:12px; align-items:center; justify-content:space-between;
         padding:12px 20px; background:var(--card); border-bottom:1px solid var(--line); }
h1 { font-size:18px; margin:0; }
h2 { font-size:15px; margin:0 0 8px; }
main { padding:16px 20px; display:grid; gap:16px; }
.meta { color:var(--muted); font-size:12px; }
.windows button { border:1px solid var(--line); background:var(--card); padding:4px 10px;
                  cursor:pointer; border-radius:4px; font:inherit; }
.windows button.on { background:var(--accent); color:#fff; border-color:var(--accent); }
.tiles { display:grid; grid-template-columns:repeat(auto-fill, minmax(150px, 1fr)); gap:10px; }
.tile { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:10px 12px; }
.tile .label { color:var(--muted); font-size:12px; }
.tile .value { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums;
               white-space:nowrap; }
.tile.warn .value { color:var(--warn); } .tile.bad .value { color:var(--bad); }
.cols { display:grid; grid-template-columns:repeat(auto-fit, minmax(360px, 1fr)); gap:16px; }
section { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:12px; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:4px 6px; border-bottom:1px solid var(--line); }
th { color:var(--muted); font-weight:500; font-size:12px; }
td.n, th.n { text-align:right; }
td.barcell { width:35%; }
.bar { height:8px; background:var(--accent); border-radius:2px; min-width:1px; }
.bar.shadow { background:#9aa7b8; }
.mode-shadow { color:var(--muted); }
#banner { display:none; padding:8px 20px; background:#fdecea; color:var(--bad); }
#auth { display:none; gap:8px; align-items:center; }
.empty { color:var(--muted); font-style:italic; }
"""

_BODY = """
<header>
  <div><h1>guardrail &mdash; policy hits</h1>
    <div class="meta">policy set <span id="digest">&hellip;</span> &middot;
      <span id="reload-state">&hellip;</span> &middot; updated <span id="updated">never</span></div>
  </div>
  <div class="windows" id="windows">
    <button data-w="1m">1 min</button><button data-w="5m" class="on">5 min</button>
    <button data-w="15m">15 min</button><button data-w="totals">since start</button>
  </div>
  <form id="auth"><label for="token">Admin token</label>
    <input id="token" type="password" autocomplete="off"><button type="submit">Use</button></form>
</header>
<div id="banner" role="alert"></div>
<main>
  <div class="meta" id="coverage"></div>
  <div class="tiles">
    <div class="tile"><div class="label">Requests</div><div class="value" id="t-requests">&ndash;</div></div>
    <div class="tile"><div class="label">Replies inspected</div><div class="value" id="t-inspected">&ndash;</div></div>
    <div class="tile"><div class="label">Rewritten</div><div class="value" id="t-rewritten">&ndash;</div></div>
    <div class="tile warn"><div class="label">Blocked</div><div class="value" id="t-blocked">&ndash;</div></div>
    <div class="tile"><div class="label">Crisis resources added</div><div class="value" id="t-crisis">&ndash;</div></div>
    <div class="tile"><div class="label">Enforce hits</div><div class="value" id="t-enforce">&ndash;</div></div>
    <div class="tile"><div class="label">Shadow hits</div><div class="value" id="t-shadow">&ndash;</div></div>
    <div class="tile"><div class="label">Overhead p99</div><div class="value" id="t-overhead">&ndash;</div></div>
    <div class="tile bad"><div class="label">Upstream errors</div><div class="value" id="t-upstream-errors">&ndash;</div></div>
    <div class="tile bad"><div class="label">Reload failures</div><div class="value" id="t-reload-failures">&ndash;</div></div>
  </div>
  <div class="cols">
    <section><h2>Hits by category</h2><table id="categories"><thead><tr><th>category</th>
      <th class="n">enforce</th><th class="n">shadow</th><th></th></tr></thead><tbody></tbody></table></section>
    <section><h2>Hits by policy</h2><table id="policies-hit"><thead><tr><th>policy</th><th>mode</th>
      <th>action</th><th class="n">hits</th><th></th></tr></thead><tbody></tbody></table></section>
  </div>
  <section><h2>Guardrail overhead per request</h2><table id="overhead"><thead><tr><th>p50</th>
    <th>p90</th><th>p99</th></tr></thead><tbody><tr><td id="o-p50">&ndash;</td><td id="o-p90">&ndash;</td>
    <td id="o-p99">&ndash;</td></tr></tbody></table></section>
  <section><h2>Loaded policies (<span id="loaded-count">0</span>)</h2><table id="loaded"><thead><tr>
    <th>policy</th><th>category</th><th>severity</th><th>mode</th><th>action</th></tr></thead>
    <tbody></tbody></table></section>
</main>
"""

_SCRIPT = """
"use strict";
(function () {
  var state = { window: "5m", token: "", last: null, timer: null };
  var el = function (id) { return document.getElementById(id); };
  var fragment = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (fragment) {
    state.token = decodeURIComponent(fragment[1]);
    history.replaceState(null, "", window.location.pathname);
  } else {
    state.token = sessionStorage.getItem("guardrail-admin-token") || "";
  }
  function fmt(n) {
    if (n === null || n === undefined) { return "\\u2013"; }
    return Math.round(n).toLocaleString("en-US");
  }
  function ms(seconds) {
    if (seconds === null || seconds === undefined) { return "\\u2013"; }
    var v = seconds * 1000;
    return (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ms";
  }
  function setText(id, text) { el(id).textContent = text; }
  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    row.appendChild(td);
    return td;
  }
  function bar(row, value, max, cls) {
    var td = cell(row, "", "barcell");
    var div = document.createElement("div");
    div.className = "bar" + (cls ? " " + cls : "");
    div.style.width = (max > 0 ? Math.max(1, Math.round(100 * value / max)) : 0) + "%";
    td.appendChild(div);
  }
  function fill(tableId, rows, build) {
    var body = el(tableId).tBodies[0];
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (rows.length === 0) {
      var tr = document.createElement("tr");
      var td = cell(tr, "no hits yet", "empty");
      td.colSpan = 5;
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (r) { var tr = document.createElement("tr"); build(tr, r); body.appendChild(tr); });
  }
  function banner(text) {
    var b = el("banner");
    b.textContent = text || "";
    b.style.display = text ? "block" : "none";
  }
  function render(doc) {
    var view = state.window === "totals" ? doc.totals : doc.windows[state.window];
    var note = "";
    if (!view) {
      view = doc.totals;
      note = "The " + state.window + " window fills in after a few samples; showing totals since start.";
    } else if (state.window !== "totals") {
      note = "Window covers the last " + Math.round(view.seconds) + " s.";
    } else {
      note = "Totals since the process started.";
    }
    setText("coverage", note);
    var c = view.counts;
    setText("t-requests", fmt(c.requests));
    setText("t-inspected", fmt(c.inspected));
    setText("t-rewritten", fmt(c.rewritten));
    setText("t-blocked", fmt(c.blocked));
    setText("t-crisis", fmt(c.crisis_resources));
    setText("t-enforce", fmt(view.hits.enforce));
    setText("t-shadow", fmt(view.hits.shadow));
    setText("t-upstream-errors", fmt(c.upstream_errors));
    setText("t-reload-failures", fmt(view.reloads.failure));
    var o = view.overhead_seconds;
    setText("t-overhead", ms(o.p99));
    setText("o-p50", ms(o.p50)); setText("o-p90", ms(o.p90)); setText("o-p99", ms(o.p99));
    var cats = Object.keys(view.hits_by_category).sort().map(function (k) {
      var v = view.hits_by_category[k];
      return { category: k, enforce: v.enforce || 0, shadow: v.shadow || 0 };
    }).filter(function (r) { return r.enforce + r.shadow > 0; });
    var cmax = cats.reduce(function (m, r) { return Math.max(m, r.enforce + r.shadow); }, 0);
    fill("categories", cats, function (tr, r) {
      cell(tr, r.category); cell(tr, fmt(r.enforce), "n"); cell(tr, fmt(r.shadow), "n");
      bar(tr, r.enforce + r.shadow, cmax, r.enforce ? "" : "shadow");
    });
    var hits = view.hits_by_policy.filter(function (r) { return r.hits > 0; })
      .sort(function (a, b) { return b.hits - a.hits || (a.policy < b.policy ? -1 : 1); });
    var pmax = hits.length ? hits[0].hits : 0;
    fill("policies-hit", hits, function (tr, r) {
      cell(tr, r.policy); cell(tr, r.mode, "mode-" + r.mode); cell(tr, r.action);
      cell(tr, fmt(r.hits), "n"); bar(tr, r.hits, pmax, r.mode === "shadow" ? "shadow" : "");
    });
    setText("loaded-count", String(doc.policies.length));
    fill("loaded", doc.policies, function (tr, p) {
      cell(tr, p.id); cell(tr, p.category); cell(tr, p.severity);
      cell(tr, p.mode, "mode-" + p.mode); cell(tr, p.action);
    });
    setText("digest", doc.policy_digest || "?");
    setText("reload-state", doc.last_reload_successful === 0 ? "last reload REFUSED" : "last reload ok");
    setText("updated", new Date(doc.time * 1000).toLocaleTimeString("en-GB"));
  }
  function poll() {
    var headers = { "Accept": "application/json" };
    if (state.token) { headers["Authorization"] = "Bearer " + state.token; }
    fetch("/-/stats", { headers: headers, cache: "no-store" }).then(function (res) {
      if (res.status === 401) {
        el("auth").style.display = "flex";
        banner("This admin listener needs its token.");
        return null;
      }
      if (!res.ok) { throw new Error("HTTP " + res.status); }
      return res.json();
    }).then(function (doc) {
      if (!doc) { return; }
      banner("");
      el("auth").style.display = "none";
      state.last = doc;
      render(doc);
      document.body.setAttribute("data-loaded", "true");
    }).catch(function (err) {
      banner("Cannot read /-/stats: " + err.message);
    });
  }
  el("windows").addEventListener("click", function (ev) {
    var w = ev.target && ev.target.getAttribute("data-w");
    if (!w) { return; }
    state.window = w;
    Array.prototype.forEach.call(el("windows").children, function (b) {
      b.className = b.getAttribute("data-w") === w ? "on" : "";
    });
    if (state.last) { render(state.last); }
  });
  el("auth").addEventListener("submit", function (ev) {
    ev.preventDefault();
    state.token = el("token").value;
    sessionStorage.setItem("guardrail-admin-token", state.token);
    poll();
  });
  poll();
  state.timer = setInterval(poll, 5000);
})();
"""


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>guardrail dashboard</title>
<style>{_STYLE}</style></head>
<body>{_BODY}<script>{_SCRIPT}</script></body></html>
"""

PAGE_CSP = (
    "default-src 'none'; connect-src 'self'; "
    f"script-src '{_sha256(_SCRIPT)}'; style-src '{_sha256(_STYLE)}'; "
    "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Allows the page's own inline script and style (by hash) and calls to its own origin only."""

"""The built-in dashboard page, for teams without Grafana: one HTML page, no build step.

Served by the admin listener at ``/dashboard`` (and ``/-/dashboard``). The page polls
``/-/stats`` every few seconds and shows, for a chosen window (1, 5 or 15 minutes, or since
start): requests, replies inspected, rewritten and blocked, crisis resources added, enforce vs
shadow hits, hits by category and by policy, guardrail's own time per request (p50, p90, p99),
upstream errors apart from client errors (4xx), replies not inspected, engine errors, reload and
audit failures, and the policies now loaded with their modes. Hits over time (the last hour) are
drawn as inline SVG by the page's own few lines of script: one line per category, and a
sparkline per policy.

Colours carry meaning only: a zero is neutral grey whatever the figure; amber and red come from
the states ``/-/stats`` computes with the alert rules' selections and thresholds
(:mod:`guardrail.observe.thresholds`). The layout has no fixed width: it stays readable, without
horizontal scrolling, at 800 px.

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
:root { --fg:#1c2430; --muted:#5b6675; --zero:#8a939f; --line:#d9dee5; --bg:#f6f7f9; --card:#fff;
        --accent:#2f6fb2; --warn:#a15c00; --bad:#b3261e; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color:var(--fg); background:var(--bg); }
header { display:flex; flex-wrap:wrap; gap:12px; align-items:center; justify-content:space-between;
         padding:12px 20px; background:var(--card); border-bottom:1px solid var(--line); }
h1 { font-size:18px; margin:0; }
h2 { font-size:15px; margin:0 0 8px; }
main { padding:16px 20px; display:grid; gap:16px; min-width:0; }
main > * { min-width:0; }
.meta { color:var(--muted); font-size:12px; }
.windows button { border:1px solid var(--line); background:var(--card); padding:4px 10px;
                  cursor:pointer; border-radius:4px; font:inherit; }
.windows button.on { background:var(--accent); color:#fff; border-color:var(--accent); }
.tiles { display:grid; grid-template-columns:repeat(auto-fill, minmax(165px, 1fr)); gap:10px; }
.tile { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:10px 12px;
        min-width:0; }
.tile .label { color:var(--muted); font-size:12px; }
.tile .value { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums;
               white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.tile .note { color:var(--muted); font-size:11px; min-height:1em; }
.tile.zero .value, td.zero, .legend .zero { color:var(--zero); }
.tile.warn .value { color:var(--warn); } .tile.warn { border-color:var(--warn); }
.tile.bad .value { color:var(--bad); } .tile.bad { border-color:var(--bad); border-width:2px; }
.cols { display:grid; grid-template-columns:repeat(auto-fit, minmax(min(100%, 440px), 1fr));
        gap:16px; }
section { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:12px;
          min-width:0; }
.scroll { overflow-x:auto; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:4px 6px; border-bottom:1px solid var(--line);
         white-space:nowrap; }
td.name { white-space:normal; overflow-wrap:anywhere; }
th { color:var(--muted); font-weight:500; font-size:12px; }
td.n, th.n { text-align:right; white-space:nowrap; }
td.barcell { width:30%; }
td.sparkcell { width:110px; }
.bar { height:8px; background:var(--accent); border-radius:2px; min-width:1px; }
.bar.shadow { background:#9aa7b8; }
.mode-shadow { color:var(--muted); }
svg.chart { display:block; width:100%; height:auto; }
svg.spark { display:block; width:100px; height:20px; }
.axisline { stroke:var(--line); stroke-width:1; }
.axis { display:flex; justify-content:space-between; color:var(--muted); font-size:11px; }
.legend { list-style:none; margin:6px 0 0; padding:0; display:flex; flex-wrap:wrap; gap:4px 14px;
          font-size:12px; overflow-wrap:anywhere; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:4px; }
#banner { display:none; padding:8px 20px; background:#fdecea; color:var(--bad); }
#auth { display:none; gap:8px; align-items:center; }
.empty { color:var(--muted); font-style:italic; }
"""

_TILES = (
    ("requests", "Requests"),
    ("inspected", "Replies inspected"),
    ("rewritten", "Rewritten"),
    ("blocked", "Blocked"),
    ("crisis_resources", "Crisis resources added"),
    ("enforce_hits", "Enforce hits"),
    ("shadow_hits", "Shadow hits"),
    ("overhead_p99", "Overhead p99"),
    ("upstream_errors", "Upstream errors"),
    ("client_errors", "Client errors (4xx)"),
    ("not_inspected", "Not inspected"),
    ("engine_errors", "Engine errors"),
    ("reload_failures", "Reload failures"),
    ("audit_failures", "Audit write failures"),
    ("crisis_referrals", "Crisis referrals"),
    ("disclosures", "AI disclosures"),
    ("break_reminders", "Break reminders"),
    ("wind_downs", "Session wind-downs"),
    ("referrals_paced", "Referrals paced"),
    ("referrals_repointed", "Referrals re-pointed"),
    ("state_skipped", "State policies skipped"),
    ("state_errors", "State store errors"),
)
"""The tiles, by figure name (``guardrail.observe.thresholds.figures``) and label."""

_TILES_HTML = "\n".join(
    f'    <div class="tile" id="tile-{name}"><div class="label">{label}</div>'
    f'<div class="value" id="t-{name}">&ndash;</div><div class="note" id="n-{name}"></div></div>'
    for name, label in _TILES
)

_BODY = f"""
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
{_TILES_HTML}
  </div>
  <section><h2>Hits over time, by category</h2>
    <svg id="trend" class="chart" viewBox="0 0 600 140" role="img"
      aria-label="policy hits per step, one line per category"></svg>
    <div class="axis"><span id="trend-from">&ndash;</span><span id="trend-peak"></span>
      <span>now</span></div>
    <ul class="legend" id="trend-legend"></ul></section>
  <div class="cols">
    <section><h2>Hits by category</h2><div class="scroll"><table id="categories"><thead><tr>
      <th>category</th><th class="n">enforce</th><th class="n">shadow</th><th></th></tr></thead>
      <tbody></tbody></table></div></section>
    <section><h2>Hits by policy</h2><div class="scroll"><table id="policies-hit"><thead><tr>
      <th>policy</th><th>mode</th><th>action</th><th class="n">hits</th>
      <th>over time</th></tr></thead><tbody></tbody></table></div></section>
  </div>
  <section><h2>Guardrail overhead per request</h2><table id="overhead"><thead><tr><th>p50</th>
    <th>p90</th><th>p99</th></tr></thead><tbody><tr><td id="o-p50">&ndash;</td><td id="o-p90">&ndash;</td>
    <td id="o-p99">&ndash;</td></tr></tbody></table></section>
  <section><h2>Loaded policies (<span id="loaded-count">0</span>)</h2><div class="scroll">
    <table id="loaded"><thead><tr><th>policy</th><th>category</th><th>severity</th><th>mode</th>
    <th>action</th></tr></thead><tbody></tbody></table></div></section>
</main>
"""

_SCRIPT = """
"use strict";
(function () {
  var SVG = document.getElementById("trend").namespaceURI;  // the page's own inline svg
  var PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#6b4c9a",
                 "#5b6675"];
  var MIN_STEPS = 10;  // a young process's few points sit at the right of a 10-step axis
  var OF = { upstream_errors: " of upstream requests", not_inspected: " of inspectable requests" };
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
  function pct(r) {
    var v = r * 100;
    return (v < 10 && Math.round(v) !== v ? v.toFixed(1) : v.toFixed(0)) + " %";
  }
  function setText(id, text) { el(id).textContent = text; }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function svgEl(name, attrs) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }
  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    row.appendChild(td);
    return td;
  }
  function count(row, value) { cell(row, fmt(value), value ? "n" : "n zero"); }
  function bar(row, value, max, cls) {
    var td = cell(row, "", "barcell");
    var div = document.createElement("div");
    div.className = "bar" + (cls ? " " + cls : "");
    div.style.width = (max > 0 ? Math.max(1, Math.round(100 * value / max)) : 0) + "%";
    td.appendChild(div);
  }
  function fill(tableId, rows, build) {
    var body = el(tableId).tBodies[0];
    clear(body);
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
  function note(name, f) {
    if (name === "client_errors") { return "the upstream answered 4xx; never alerts"; }
    if (!f.alert) { return ""; }
    if (name === "reload_failures") {
      return f.state === "bad" ? "the last reload was refused" : "alerts while the last is refused";
    }
    var limit = name === "overhead_p99" ? ms(f.threshold)
      : OF[name] ? pct(f.threshold) : fmt(f.threshold);
    var share = OF[name] && f.ratio !== undefined ? pct(f.ratio) + OF[name] + " \\u00b7 " : "";
    return share + "alert above " + limit;
  }
  function tiles(figures) {
    Object.keys(figures).forEach(function (name) {
      var f = figures[name], tile = el("tile-" + name);
      if (!tile) { return; }
      tile.className = "tile " + f.state;
      setText("t-" + name, name === "overhead_p99" ? ms(f.value) : fmt(f.value));
      setText("n-" + name, note(name, f));
    });
  }
  function coords(values, max, w, h, pad, span) {
    var n = values.length, steps = Math.max(span || n, n) - 1;
    return values.map(function (v, i) {
      var x = steps === 0 ? w - pad : w - pad - (n - 1 - i) * (w - 2 * pad) / steps;
      var y = pad + (h - 2 * pad) * (1 - (max > 0 ? v / max : 0));
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
  }
  function peak(values) { return values.reduce(function (m, v) { return Math.max(m, v); }, 0); }
  function total(values) { return values.reduce(function (s, v) { return s + v; }, 0); }
  function plot(svg, values, max, colour, w, h, pad, span) {
    svg.appendChild(svgEl("polyline", { points: coords(values, max, w, h, pad, span), fill: "none",
      stroke: colour, "stroke-width": 2, "stroke-linejoin": "round" }));
    if (values.length === 1) {
      var xy = coords(values, max, w, h, pad, span).split(",");
      svg.appendChild(svgEl("circle", { cx: xy[0], cy: xy[1], r: 3, fill: colour }));
    }
  }
  function colours(trend) {
    var map = {};
    Object.keys(trend.categories).forEach(function (c, i) {
      map[c] = PALETTE[i % PALETTE.length];
    });
    return map;
  }
  function chart(trend, colour) {
    var svg = el("trend"), legend = el("trend-legend"), W = 600, H = 140, P = 6;
    clear(svg); clear(legend);
    var cats = Object.keys(trend.categories);
    var max = cats.reduce(function (m, c) { return Math.max(m, peak(trend.categories[c])); }, 0);
    var steps = Math.max(trend.points, MIN_STEPS);
    var span = Math.round(steps * trend.step_seconds / 60);
    setText("trend-from", span >= 1 ? span + " min ago" : steps * trend.step_seconds + " s ago");
    setText("trend-peak", max > 0 ? "peak " + fmt(max) + " hits per " + trend.step_seconds + " s"
      : "no hits in this span");
    svg.appendChild(svgEl("line", { x1: 0, y1: H - P, x2: W, y2: H - P, "class": "axisline" }));
    cats.forEach(function (c) {
      var values = trend.categories[c], sum = total(values);
      var li = document.createElement("li"), swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = sum ? colour[c] : "var(--zero)";
      li.appendChild(swatch);
      li.appendChild(document.createTextNode(c + " " + fmt(sum)));
      if (!sum) { li.className = "zero"; }
      legend.appendChild(li);
      if (sum) { plot(svg, values, max, colour[c], W, H, P, steps); }
    });
  }
  function spark(row, values, colour) {
    var td = cell(row, "", "sparkcell");
    var svg = svgEl("svg", { "class": "spark", viewBox: "0 0 100 20", role: "img" });
    var sum = values ? total(values) : 0;
    if (sum) {
      plot(svg, values, peak(values), colour, 100, 20, 2, MIN_STEPS);
    } else {
      svg.appendChild(svgEl("line", { x1: 0, y1: 18, x2: 100, y2: 18, "class": "axisline" }));
    }
    td.appendChild(svg);
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
    tiles(view.figures);
    var o = view.overhead_seconds;
    setText("o-p50", ms(o.p50)); setText("o-p90", ms(o.p90)); setText("o-p99", ms(o.p99));
    var colour = colours(doc.trend);
    chart(doc.trend, colour);
    var cats = Object.keys(view.hits_by_category).sort().map(function (k) {
      var v = view.hits_by_category[k];
      return { category: k, enforce: v.enforce || 0, shadow: v.shadow || 0 };
    }).filter(function (r) { return r.enforce + r.shadow > 0; });
    var cmax = cats.reduce(function (m, r) { return Math.max(m, r.enforce + r.shadow); }, 0);
    fill("categories", cats, function (tr, r) {
      cell(tr, r.category, "name"); count(tr, r.enforce); count(tr, r.shadow);
      bar(tr, r.enforce + r.shadow, cmax, r.enforce ? "" : "shadow");
    });
    var hits = view.hits_by_policy.filter(function (r) { return r.hits > 0; })
      .sort(function (a, b) { return b.hits - a.hits || (a.policy < b.policy ? -1 : 1); });
    fill("policies-hit", hits, function (tr, r) {
      cell(tr, r.policy, "name"); cell(tr, r.mode, "mode-" + r.mode); cell(tr, r.action);
      count(tr, r.hits);
      spark(tr, doc.trend.policies[r.policy], colour[r.category] || PALETTE[0]);
    });
    setText("loaded-count", String(doc.policies.length));
    fill("loaded", doc.policies, function (tr, p) {
      cell(tr, p.id, "name"); cell(tr, p.category, "name"); cell(tr, p.severity);
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

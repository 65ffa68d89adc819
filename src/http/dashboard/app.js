// agentlab dashboard: fetches the summary and the history series every few
// seconds and draws them; charts are inline SVG, no library, no network beyond
// this server.
"use strict";

const REFRESH_MS = 5000;
const RANGES = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
const COLORS = ["var(--c1)", "var(--c2)", "var(--c3)", "var(--c4)", "var(--c5)"];
const token = new URLSearchParams(location.search).get("token");
let range = "1h";
let refreshing = false;
// Periods of the shown range when the service was not running (from the
// history route): no line is drawn across them.
let downPeriods = [];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

async function getJson(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " m " + Math.round(s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " m";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function usd(x) {
  return "$" + (x || 0).toFixed(2);
}

function stateClass(state) {
  if (["pass", "closed", "polling", "succeeded", "resolved"].includes(state)) return "state-ok";
  if (["fail", "open", "failed", "firing", "conflict", "disconnected", "critical"].includes(state)) return "state-bad";
  return "state-warn";
}

function pill(text, state, attrs) {
  return el("span", Object.assign({ class: "pill " + stateClass(state) }, attrs || {}), text);
}

// ---- summary -------------------------------------------------------------

function renderSummary(d) {
  const status = document.getElementById("status");
  status.textContent = d.status;
  status.dataset.status = d.status;
  document.getElementById("uptime").textContent =
    "up " + duration(d.uptime_s * 1000) + " · v" + d.version + (d.ready ? "" : " · not ready");
  document.getElementById("updated").textContent =
    "updated " + new Date(d.now_ms).toLocaleTimeString();

  const alerts = document.getElementById("alerts");
  alerts.replaceChildren();
  if (d.alerts.length === 0) alerts.append(el("li", { class: "muted" }, "No alerts"));
  for (const a of d.alerts) {
    const when = a.resolved_ms || a.fired_ms || a.started_ms;
    alerts.append(el("li", { "data-alert-state": a.state, "data-rule": a.rule },
      pill(a.state, a.state), pill(a.severity, a.severity), " ",
      el("strong", {}, a.rule), a.subject ? " · " + a.subject : "", " — " + a.message,
      el("span", { class: "muted" }, " (" + new Date(when).toLocaleString() + ")")));
  }

  const bots = document.getElementById("bots");
  bots.replaceChildren();
  for (const b of d.bots) {
    const breakers = b.breakers.map((x) =>
      pill(x.dependency + ": " + x.state + (x.failures ? " (" + x.failures + ")" : ""), x.state,
        { "data-breaker": x.dependency, "data-state": x.state }));
    const poll = b.last_poll_age_s === null ? "never polled" : "polled " + b.last_poll_age_s + " s ago";
    bots.append(el("div", { class: "bot", "data-bot": b.id },
      el("strong", {}, b.id), b.username ? " @" + b.username : "", " ",
      pill(b.state, b.state, { "data-state": b.state }),
      el("div", { class: "muted" }, "Telegram: " + poll + (b.last_error ? " · " + b.last_error : "") +
        " · queue " + b.queue_depth + " · today " + usd(b.cost_today_usd) + " / " + b.tasks_today + " tasks"),
      el("div", {}, ...breakers)));
  }

  const ap = d.approvals || { pending: 0, pending_tools: [], recent: [] };
  document.getElementById("approvals-pending").textContent = ap.pending === 0
    ? "Nothing waits for approval"
    : ap.pending + " waiting: " + ap.pending_tools.join(", ");
  const approvals = document.getElementById("approvals");
  approvals.replaceChildren();
  for (const a of ap.recent) {
    approvals.append(el("li", { "data-decision": a.decision },
      pill(a.decision, a.decision === "allow" || a.decision === "always_allow" ? "closed" : "open"), " ",
      el("strong", {}, a.tool), " by " + a.by + " after " + a.waited_s + " s",
      el("span", { class: "muted" }, " (" + new Date(a.at_ms).toLocaleString() + ", task #" + a.task_id + ")")));
  }

  document.getElementById("queue-depth").textContent = d.queue.depth;
  document.getElementById("busy-workers").textContent = d.queue.busy_workers + " / " + d.queue.workers;

  const c = d.cost;
  document.getElementById("cost-today").textContent = usd(c.today_usd) + " of " + usd(c.daily_limit_usd);
  document.getElementById("cost-month").textContent = usd(c.month_usd) + " of " + usd(c.monthly_limit_usd);
  setBar("cost-today-bar", c.today_usd, c.daily_limit_usd);
  setBar("cost-month-bar", c.month_usd, c.monthly_limit_usd);

  const backup = document.getElementById("backup");
  if (d.backup) {
    backup.className = d.backup.verified ? "" : "state-warn";
    backup.textContent = new Date(d.backup.taken_ms).toLocaleString() + " (" +
      duration(d.backup.age_s * 1000) + " ago, " + (d.backup.size_bytes / 1048576).toFixed(1) + " MB" +
      (d.backup.verified ? ", verified)" : ", NOT verified)");
  } else {
    backup.className = "muted";
    backup.textContent = "No backup yet";
  }
  const offsite = document.getElementById("offsite");
  if (d.offsite) {
    const o = d.offsite;
    const bad = o.stale || o.circuit !== "closed" || o.last_error;
    offsite.className = bad ? "state-warn" : "";
    offsite.textContent = "Offsite: " + (o.newest
      ? "newest copy " + duration((o.age_s || 0) * 1000) + " old (" + o.newest.object + ")"
      : "no copy yet") +
      (o.encrypted ? ", encrypted" : "") +
      (o.circuit !== "closed" ? ", circuit " + o.circuit : "") +
      (o.last_error ? ", last upload failed: " + o.last_error : "");
  } else {
    offsite.className = "muted";
    offsite.textContent = "Offsite: not configured";
  }

  const tasks = document.getElementById("tasks");
  tasks.replaceChildren();
  for (const t of d.tasks) {
    tasks.append(el("tr", { "data-task-id": t.id, "data-status": t.status },
      el("td", {}, String(t.id)), el("td", {}, t.bot_id),
      el("td", {}, pill(t.status + (t.error_class ? " · " + t.error_class : ""), t.status)),
      el("td", {}, duration(t.duration_ms)), el("td", { class: "prompt" }, t.prompt)));
  }
  if (d.tasks.length === 0) tasks.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No tasks yet")));
}

function setBar(id, value, limit) {
  const bar = document.getElementById(id);
  bar.max = limit > 0 ? limit : 1;
  bar.value = Math.min(value, bar.max);
}

// ---- charts --------------------------------------------------------------

const W = 400, H = 150, PAD_L = 44, PAD_R = 8, PAD_T = 8, PAD_B = 18;

function shortNumber(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

function timeLabel(ms, span) {
  const d = new Date(ms);
  return span > 2 * 86400e3 ? d.toLocaleDateString() : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function frame(from, to, lo, hi) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  root.append(svg("line", { class: "axis", x1: PAD_L, y1: H - PAD_B, x2: W - PAD_R, y2: H - PAD_B }));
  root.append(svg("line", { class: "axis", x1: PAD_L, y1: PAD_T, x2: PAD_L, y2: H - PAD_B }));
  const label = (x, y, text, anchor) => {
    const t = svg("text", { x, y, "text-anchor": anchor });
    t.textContent = text;
    root.append(t);
  };
  label(PAD_L - 4, PAD_T + 8, shortNumber(hi), "end");
  label(PAD_L - 4, H - PAD_B, shortNumber(lo), "end");
  if (from !== null) {
    label(PAD_L, H - 4, timeLabel(from, to - from), "start");
    label(W - PAD_R, H - 4, timeLabel(to, to - from), "end");
  }
  return root;
}

function legend(items) {
  return el("div", { class: "legend" }, ...items.map((it) =>
    el("span", {}, el("i", { style: "background:" + it.color }), it.label)));
}

// series: [{label, points: [[t, v]...]}]; trend: optional [[t, v], [t, v]].
function drawLines(figure, series, from, to, trend) {
  const all = series.flatMap((s) => s.points.map((p) => p[1])).concat(trend ? trend.map((p) => p[1]) : []);
  let lo = all.length ? Math.min(...all) : 0;
  let hi = all.length ? Math.max(...all) : 1;
  if (lo >= 0 && lo < hi * 0.5) lo = 0;
  if (hi === lo) hi = lo + 1;
  const x = (t) => PAD_L + ((t - from) / (to - from)) * (W - PAD_L - PAD_R);
  const y = (v) => H - PAD_B - ((v - lo) / (hi - lo)) * (H - PAD_T - PAD_B);
  const root = frame(from, to, lo, hi);
  let total = 0;
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    s.color = color;
    total += s.points.length;
    const segments = splitAtDownPeriods(s.points);
    segments.forEach((segment) => {
      const line = svg("polyline", {
        points: segment.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" "),
        stroke: color, "data-series": s.label, "data-points": segment.length,
        "data-segments": segments.length,
      });
      root.append(line);
      if (segment.length === 1) {
        const p = segment[0];
        root.append(svg("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.5, fill: color }));
      }
    });
  });
  const items = series.map((s) => ({ label: s.label, color: s.color }));
  if (trend) {
    root.append(svg("polyline", {
      class: "trend", stroke: "var(--c5)", "data-trend": "leak",
      points: trend.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" "),
    }));
    items.push({ label: "leak trend", color: "var(--c5)" });
  }
  place(figure, root, total, items, series.length === 0 ? "no data in this range" : null);
}

// Splits [[t, v]...] where a down period lies between two points.
function splitAtDownPeriods(points) {
  const segments = [];
  let current = [];
  for (const p of points) {
    const previous = current[current.length - 1];
    if (previous && downPeriods.some((d) => d.from_ms < p[0] && d.to_ms > previous[0])) {
      segments.push(current);
      current = [];
    }
    current.push(p);
  }
  if (current.length) segments.push(current);
  return segments;
}

// bars: [{label, value}]
function drawBars(figure, bars, emptyText) {
  const hi = Math.max(1e-9, ...bars.map((b) => b.value));
  const root = frame(null, null, 0, hi);
  const width = (W - PAD_L - PAD_R) / Math.max(bars.length, 1);
  bars.forEach((b, i) => {
    const h = (b.value / hi) * (H - PAD_T - PAD_B);
    const rect = svg("rect", {
      x: PAD_L + i * width + width * 0.15, y: H - PAD_B - h, width: width * 0.7, height: h,
      fill: COLORS[i % COLORS.length], "data-label": b.label, "data-value": b.value,
    });
    const title = svg("title", {});
    title.textContent = b.label + ": " + b.value;
    rect.append(title);
    root.append(rect);
    const t = svg("text", { x: PAD_L + i * width + width / 2, y: H - 4, "text-anchor": "middle" });
    t.textContent = b.label;
    root.append(t);
  });
  const g = svg("g", { "data-points": bars.length });
  root.append(g);
  place(figure, root, bars.length, [], bars.length === 0 ? emptyText : null);
}

function place(figure, root, total, items, emptyText) {
  figure.dataset.points = total;
  const plot = figure.querySelector(".plot");
  plot.replaceChildren(root);
  if (items.length) plot.append(legend(items));
  if (emptyText && total === 0) plot.append(el("div", { class: "muted" }, emptyText));
}

function labelOf(name) {
  const m = /\{(.*)\}/.exec(name);
  if (!m) return name;
  return m[1].split(",").map((kv) => kv.split("=")[1].replace(/"/g, "")).join(" ");
}

async function history(metric, from, to) {
  const step = Math.max(1000, Math.floor((to - from) / 240));
  const doc = await getJson(`/api/observability/history/${metric}?from=${from}&to=${to}&step=${step}`);
  if (doc && doc.down) downPeriods = doc.down;
  return doc ? doc.series : [];
}

function toPoints(series, scale) {
  return series.points.map((p) => [p.at_ms, p.value * scale]);
}

async function renderCharts(summary) {
  const to = Date.now();
  const from = to - RANGES[range];
  const fig = (name) => document.querySelector(`[data-chart="${name}"]`);

  const [rss, depth, busy, wait, run, failures, latency, cost] = await Promise.all([
    history("process_rss_bytes", from, to), history("queue_depth", from, to),
    history("workers_busy", from, to), history("task_wait_p95_ms", from, to),
    history("task_run_p95_ms", from, to), history("failures_per_min", from, to),
    history("api_p95_ms", from, to),
    history("cost_today_usd", Math.min(from, to - RANGES["7d"]), to),
  ]);

  // Memory, with the leak detector's fitted slope drawn through the mean of
  // the samples it looked at (the detector gives slope, not intercept).
  const service = rss.find((s) => s.name.includes('proc="service"')) || rss[0];
  const mem = service ? [{ label: "service", points: toPoints(service, 1 / 1048576) }] : [];
  let trend = null;
  const leak = summary && summary.leak;
  const note = fig("memory").querySelector(".note");
  note.textContent = "";
  if (leak && !leak.judged) {
    // A line fitted to the first minutes measures start-up, not a leak.
    note.textContent = `trend after ${leak.needs_minutes} min of samples (${Math.floor(leak.span_minutes)} so far)`;
  } else if (leak && mem.length && leak.span_minutes > 0) {
    const since = to - leak.span_minutes * 60e3;
    const window = mem[0].points.filter((p) => p[0] >= since);
    if (window.length >= 2) {
      const mt = window.reduce((a, p) => a + p[0], 0) / window.length;
      const mv = window.reduce((a, p) => a + p[1], 0) / window.length;
      const at = (t) => [t, mv + (leak.mb_per_hour * (t - mt)) / 3600e3];
      trend = [at(window[0][0]), at(window[window.length - 1][0])];
    }
    note.textContent = `trend ${leak.mb_per_hour >= 0 ? "+" : ""}${leak.mb_per_hour.toFixed(2)} MB/h, r² ${leak.r2.toFixed(2)}` +
      (leak.suspected ? " · LEAK SUSPECTED" : "");
  }
  drawLines(fig("memory"), mem, from, to, trend);

  const total = depth.filter((s) => s.name === "queue_depth");
  drawLines(fig("queue"), [
    ...total.map((s) => ({ label: "waiting", points: toPoints(s, 1) })),
    ...busy.map((s) => ({ label: "busy workers", points: toPoints(s, 1) })),
  ], from, to);

  drawLines(fig("task-times"), [
    ...wait.map((s) => ({ label: "wait " + labelOf(s.name), points: toPoints(s, 1 / 1000) })),
    ...run.map((s) => ({ label: "run " + labelOf(s.name), points: toPoints(s, 1 / 1000) })),
  ], from, to);

  drawLines(fig("failures"), failures.map((s) => ({ label: "all classes", points: toPoints(s, 1) })), from, to);

  const byClass = Object.entries((summary && summary.failures_by_class) || {})
    .map(([label, value]) => ({ label, value }));
  drawBars(fig("failures-by-class"), byClass, "no failures in the last 24 h");

  drawLines(fig("latency"), latency
    .filter((s) => /dep="(telegram|agent)"/.test(s.name))
    .map((s) => ({ label: labelOf(s.name), points: toPoints(s, 1) })), from, to);

  // Cost per UTC day: each bot's running total peaks at the day's cost.
  const days = new Map();
  for (const s of cost) {
    const perDay = new Map();
    for (const p of s.points) {
      const day = Math.floor(p.at_ms / 86400e3);
      perDay.set(day, Math.max(perDay.get(day) || 0, p.max));
    }
    for (const [day, v] of perDay) days.set(day, (days.get(day) || 0) + v);
  }
  const bars = [...days.entries()].sort((a, b) => a[0] - b[0]).map(([day, value]) => ({
    label: new Date(day * 86400e3).toISOString().slice(5, 10), value,
  }));
  drawBars(fig("cost"), bars, "no cost recorded");
}

// ---- refresh loop --------------------------------------------------------

let lastSummary = null;

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    lastSummary = await getJson("/api/dashboard");
    if (lastSummary) renderSummary(lastSummary);
    await renderCharts(lastSummary);
    document.body.dataset.loaded = "true";
  } catch (e) {
    document.getElementById("updated").textContent = "refresh failed: " + e.message;
  } finally {
    refreshing = false;
  }
}

for (const button of document.querySelectorAll("#ranges button")) {
  button.addEventListener("click", () => {
    range = button.dataset.range;
    for (const b of document.querySelectorAll("#ranges button")) {
      b.setAttribute("aria-pressed", String(b === button));
    }
    refresh();
  });
}

refresh();
setInterval(refresh, REFRESH_MS);

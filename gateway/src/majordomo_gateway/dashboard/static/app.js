// Majordomo dashboard: three views over the JSON API (docs/dashboard.md), no framework.
// Every number on the page comes from /api/v1/..., the code behind `majordomo report`; every
// table links to the same request with format=csv.  The state lives in the URL's hash, so a view
// can be bookmarked and reloading keeps it.
"use strict";

const $ = (id) => document.getElementById(id);
const DIMENSIONS = ["feature", "step", "user", "session", "model", "provider", "route", "key", "status"];
const TOP_TITLES = {feature: "Top features", user: "Top users", model: "Top models", key: "Top keys"};
const COLORS = ["#2f6fec", "#f79009", "#12b76a", "#9e77ed", "#f04438", "#0ba5ec", "#ee46bc", "#667085", "#b2b9c5"];

const state = {
  tab: "overview", range: "30d", since: "", until: "", tz: "UTC", stackBy: "feature",
  groupBy: ["feature"], every: "", where: [], limit: "",
  req: {model: "", provider: "", key: "", status: "", where: ""},
};
let cursors = [];    // the request log's pages: cursors[i] opens page i (cursors[0] = "")
let nextCursor = null;
let metadataKeys = [];
let chart = null;

// ---- the API ---------------------------------------------------------------------------------
function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== "" && item !== null && item !== undefined) search.append(name, item);
    }
  }
  return search.toString();
}

function rangeParams() {
  if (state.range !== "custom") return {since: state.range, tz: state.tz};
  return {since: state.since, until: state.until, tz: state.tz};
}

async function api(path, params) {
  const response = await fetch(`${path}?${query(params)}`, {credentials: "same-origin"});
  if (response.status === 401) {   // the session ended: the server answers /dashboard with the login form
    location.reload();
    throw new Error("logged out");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

function csvLink(element, path, params) {
  element.href = `${path}?${query({...params, format: "csv"})}`;
}

// ---- formatting ------------------------------------------------------------------------------
const money = (v) => v === null || v === undefined ? "–" : "$" + Number(v).toLocaleString("en-US",
  {minimumFractionDigits: Math.abs(v) < 1 ? 4 : 2, maximumFractionDigits: Math.abs(v) < 1 ? 6 : 2});
const count = (v) => Number(v).toLocaleString("en-US");
const NUMERIC = new Set(["requests", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
  "reasoning_tokens", "cost_usd", "unpriced", "errors", "aborted", "response_time_ms"]);

function cell(name, value) {
  const td = document.createElement("td");
  if (value === null || value === undefined || value === "") {
    td.textContent = name === "cost_usd" ? "–" : "(none)";
    td.className = "none";
  } else if (name === "cost_usd") {
    td.textContent = money(value);
  } else if (name === "metadata") {
    td.textContent = Object.entries(value).map(([k, v]) => `${k}=${v}`).join(" ");
  } else if (NUMERIC.has(name)) {
    td.textContent = name === "response_time_ms" ? `${Math.round(value)} ms` : count(value);
  } else if (name === "requested_at") {
    td.textContent = formatTime(value);
  } else {
    td.textContent = typeof value === "boolean" ? (value ? "yes" : "") : String(value);
  }
  if (NUMERIC.has(name)) td.classList.add("num");
  return td;
}

// "2026-11-01 09:00:00" in the chosen zone (Sweden's locale writes dates the ISO way).
function formatTime(iso) {
  return new Date(iso).toLocaleString("sv-SE", {timeZone: state.tz});
}

// A table of report rows: columns as given, a totals line when there is more than one row.
function table(columns, rows, {totals = null, onRow = null} = {}) {
  if (!rows.length) {
    const empty = document.createElement("p");
    empty.className = "none";
    empty.textContent = "no requests in this range";
    return empty;
  }
  const element = document.createElement("table");
  const head = element.createTHead().insertRow();
  for (const name of columns) {
    const th = document.createElement("th");
    th.textContent = name;
    if (NUMERIC.has(name)) th.className = "num";
    head.appendChild(th);
  }
  const body = element.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const name of columns) tr.appendChild(cell(name, row[name]));
    if (onRow) {
      tr.className = "clickable";
      tr.addEventListener("click", () => onRow(row));
    }
  }
  if (totals && rows.length > 1) {
    const tr = element.createTFoot().insertRow();
    columns.forEach((name, index) => {
      if (name in totals) tr.appendChild(cell(name, totals[name]));
      else {
        const td = document.createElement("td");
        td.textContent = index === 0 ? "total" : "";
        tr.appendChild(td);
      }
    });
  }
  return element;
}

function fill(id, ...children) { $(id).replaceChildren(...children); }

function showError(error) {
  $("message").textContent = error && error.message !== "logged out" ? String(error.message || error) : "";
}

// ---- overview --------------------------------------------------------------------------------
function card(label, value, kind = "") {
  const element = document.createElement("div");
  element.className = `card ${kind}`;
  const l = document.createElement("div"); l.className = "label"; l.textContent = label;
  const v = document.createElement("div"); v.className = "value"; v.textContent = value;
  element.append(l, v);
  return element;
}

async function loadOverview() {
  const params = {...rangeParams(), stack_by: state.stackBy};
  const body = await api("/api/v1/overview", params);
  const t = body.totals;
  const rate = body.error_rate === null ? "–" : `${(body.error_rate * 100).toFixed(1)} %`;
  fill("cards",
    card("Spend", money(t.cost_usd)), card("Requests", count(t.requests)),
    card("Tokens in / out", `${count(t.input_tokens)} / ${count(t.output_tokens)}`),
    card("Error rate", rate, body.error_rate > 0.05 ? "bad" : ""),
    card("Unpriced requests", count(t.unpriced), t.unpriced ? "warn" : ""));
  drawChart(body.spend_over_time);
  csvLink($("chart-csv"), "/api/v1/usage", {...rangeParams(), group_by: state.stackBy, every: body.every});
  const tops = [];
  for (const [name, rows] of Object.entries(body.top)) {
    const panel = document.createElement("div");
    panel.className = "panel";
    panel.dataset.top = name;
    const h2 = document.createElement("h2");
    h2.textContent = TOP_TITLES[name] || name;
    const tools = document.createElement("span"); tools.className = "tools";
    const link = document.createElement("a"); link.className = "button secondary"; link.textContent = "CSV";
    link.download = `top-${name}.csv`;
    csvLink(link, "/api/v1/usage", {...rangeParams(), group_by: name, limit: 10});
    tools.appendChild(link); h2.appendChild(tools);
    const scroll = document.createElement("div"); scroll.className = "scroll";
    scroll.appendChild(table([name, "requests", "cost_usd", "errors"], rows));
    panel.append(h2, scroll);
    tops.push(panel);
  }
  fill("tops", ...tops);
  const unpriced = body.unpriced_models;
  $("unpriced-panel").classList.toggle("warn", unpriced.length > 0);
  fill("unpriced", unpriced.length ? table(["provider", "model", "unpriced"], unpriced) : (() => {
    const p = document.createElement("p"); p.className = "none"; p.textContent = "every model with usage has a price";
    return p;
  })());
  csvLink($("unpriced-csv"), "/api/v1/usage", {...rangeParams(), group_by: ["provider", "model"]});
  $("who").textContent = `${body.user.email} (${body.user.role})`;
}

// A stacked area chart: series i is drawn as the running sum of series 0..i, the last (tallest)
// first, so each colour fills the band between its sum and the one below it.
function drawChart(over) {
  const xs = over.buckets.map((b) => Date.parse(b) / 1000);
  const raw = over.series.map((s) => s.cost_usd.map(Number));
  const sums = [];
  raw.forEach((values, i) => sums.push(values.map((v, j) => v + (i ? sums[i - 1][j] : 0))));
  const series = [{}];
  const data = [xs];
  for (let i = over.series.length - 1; i >= 0; i--) {
    const color = COLORS[i % COLORS.length];
    const values = raw[i];
    series.push({
      label: over.series[i].label, stroke: color, fill: color + "cc", width: 1, points: {show: false},
      value: (u, v, si, index) => index === null ? "–" : money(values[index]),
    });
    data.push(sums[i]);
  }
  const element = $("chart");
  const width = Math.max(320, element.clientWidth || 900);
  const options = {
    width, height: 280, series, legend: {live: true},
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), state.tz),
    axes: [{}, {values: (u, ticks) => ticks.map((v) => money(v)), size: 70}],
    scales: {y: {range: (u, min, max) => [0, max > 0 ? max * 1.05 : 1]}},
    cursor: {points: {show: false}},
  };
  if (chart) chart.destroy();
  element.replaceChildren();
  chart = new uPlot(options, data, element);
  element.dataset.series = String(over.series.length);
  element.dataset.points = String(xs.length);
}

// ---- breakdown -------------------------------------------------------------------------------
function chips(id, items, onRemove) {
  fill(id, ...items.map((item, index) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = item;
    const remove = document.createElement("button");
    remove.type = "button"; remove.textContent = "×"; remove.title = `remove ${item}`;
    remove.addEventListener("click", () => onRemove(index));
    chip.appendChild(remove);
    return chip;
  }));
}

async function loadBreakdown() {
  chips("group-chips", state.groupBy, (i) => { state.groupBy.splice(i, 1); refresh(); });
  chips("where-chips", state.where, (i) => { state.where.splice(i, 1); refresh(); });
  $("every").value = state.every;
  $("breakdown-limit").value = state.limit;
  const params = {...rangeParams(), group_by: state.groupBy, every: state.every, where: state.where,
    limit: state.limit};
  const body = await api("/api/v1/usage", params);
  fill("breakdown-table", table(body.columns, body.rows, {
    totals: body.totals,
    // A click on a row narrows the view to that group (the first dimension's value becomes a filter).
    onRow: state.groupBy.length ? (row) => {
      const name = state.groupBy[0];
      if (row[name] === null) return;
      state.where.push(`${name}=${row[name]}`);
      state.groupBy = state.groupBy.slice(1).length ? state.groupBy.slice(1) : ["model"];
      refresh();
    } : null,
  }));
  csvLink($("breakdown-csv"), "/api/v1/usage", params);
}

// ---- request log -----------------------------------------------------------------------------
function requestParams() {
  const r = state.req;
  return {...rangeParams(), model: r.model, provider: r.provider, key: r.key, status: r.status,
    where: r.where ? r.where.split(/\s*,\s*/) : [], limit: 50};
}

async function loadRequests() {
  for (const name of Object.keys(state.req)) $(`req-${name}`).value = state.req[name];
  const page = cursors.length - 1;
  const params = {...requestParams(), cursor: cursors[page]};
  const body = await api("/api/v1/requests", params);
  const columns = ["requested_at", "model", "key", "status", "input_tokens", "output_tokens", "cost_usd",
    "response_time_ms", "metadata"];
  fill("requests-table", table(columns, body.rows, {onRow: (row) => showDetail(row.id)}));
  nextCursor = body.next;
  $("req-older").disabled = !nextCursor;
  $("req-newest").disabled = page === 0;
  $("req-page").textContent = `page ${page + 1}${body.next ? "" : " (oldest)"}`;
  csvLink($("requests-csv"), "/api/v1/requests", params);
}

async function showDetail(id) {
  const row = await api(`/api/v1/requests/${encodeURIComponent(id)}`, {});
  const list = document.createElement("dl");
  for (const [name, value] of Object.entries(row)) {
    if (name === "metadata") continue;
    const dt = document.createElement("dt"); dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value === null ? "–" : name.endsWith("cost_usd") ? money(value) : String(value);
    list.append(dt, dd);
  }
  const metadata = document.createElement("pre");
  metadata.textContent = JSON.stringify(row.metadata, null, 2);
  const title = document.createElement("h3"); title.textContent = "metadata";
  fill("detail-body", list, title, metadata);
  $("detail").hidden = false;
}

// ---- state, URL and controls -----------------------------------------------------------------
function saveHash() {
  const r = state.req;
  history.replaceState(null, "", "#" + query({tab: state.tab, range: state.range, since: state.since,
    until: state.until, tz: state.tz, stack_by: state.stackBy, group_by: state.groupBy, every: state.every,
    where: state.where, limit: state.limit, model: r.model, provider: r.provider, key: r.key, status: r.status,
    meta: r.where}));
}

function loadHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const get = (name, fallback) => p.has(name) ? p.get(name) : fallback;
  state.tab = get("tab", state.tab); state.range = get("range", state.range);
  state.since = get("since", ""); state.until = get("until", ""); state.tz = get("tz", state.tz);
  state.stackBy = get("stack_by", state.stackBy);
  if (p.has("group_by")) state.groupBy = p.getAll("group_by");
  state.every = get("every", ""); state.where = p.getAll("where"); state.limit = get("limit", "");
  state.req = {model: get("model", ""), provider: get("provider", ""), key: get("key", ""),
    status: get("status", ""), where: get("meta", "")};
}

function options(select, values, selected) {
  select.replaceChildren(...values.map((value) => new Option(value, value, false, value === selected)));
}

function dimensionChoices() {
  const extra = metadataKeys.filter((k) => !["Feature", "Step", "User-Id", "Session-Id"].includes(k));
  return [...DIMENSIONS, ...extra];
}

async function refresh() {
  saveHash();
  showError(null);
  for (const button of document.querySelectorAll("nav button")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === state.tab));
  }
  for (const panel of document.querySelectorAll("section[data-panel]")) panel.hidden = panel.id !== state.tab;
  $("range-preset").value = state.range;
  $("range-custom").hidden = state.range !== "custom";
  options($("stack-by"), dimensionChoices(), state.stackBy);
  options($("group-add"), ["+ add…", ...dimensionChoices().filter((d) => !state.groupBy.includes(d))], "+ add…");
  try {
    if (state.tab === "overview") await loadOverview();
    else if (state.tab === "breakdown") await loadBreakdown();
    else await loadRequests();
  } catch (error) {
    showError(error);
  }
  document.body.dataset.ready = String(Date.now());
}

function restartRequests() { cursors = [""]; nextCursor = null; }

async function start() {
  loadHash();
  restartRequests();
  const zones = ["UTC", Intl.DateTimeFormat().resolvedOptions().timeZone].filter((z, i, all) => z && all.indexOf(z) === i);
  if (!zones.includes(state.tz)) zones.push(state.tz);
  options($("range-tz"), zones, state.tz);
  try {
    metadataKeys = (await api("/api/v1/metadata-keys", {since: "365d"})).keys.map((k) => k.key);
  } catch (error) { showError(error); }

  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => { state.tab = button.dataset.tab; refresh(); });
  }
  $("range-preset").addEventListener("change", (e) => { state.range = e.target.value; restartRequests(); refresh(); });
  for (const id of ["range-since", "range-until"]) {
    $(id).addEventListener("change", () => {
      state.since = $("range-since").value; state.until = $("range-until").value;
      if (state.since) { restartRequests(); refresh(); }
    });
  }
  $("range-tz").addEventListener("change", (e) => { state.tz = e.target.value; refresh(); });
  $("stack-by").addEventListener("change", (e) => { state.stackBy = e.target.value; refresh(); });
  $("group-add").addEventListener("change", (e) => {
    if (e.target.selectedIndex > 0) { state.groupBy.push(e.target.value); refresh(); }
  });
  $("every").addEventListener("change", (e) => { state.every = e.target.value; refresh(); });
  $("breakdown-limit").addEventListener("change", (e) => { state.limit = e.target.value; refresh(); });
  const addWhere = () => {
    const text = $("where-input").value.trim();
    if (!text.includes("=")) { showError(new Error("write a filter as DIM=VALUE, e.g. feature=summarize")); return; }
    state.where.push(text); $("where-input").value = ""; refresh();
  };
  $("where-add").addEventListener("click", addWhere);
  $("where-input").addEventListener("keydown", (e) => { if (e.key === "Enter") addWhere(); });
  $("req-apply").addEventListener("click", () => {
    for (const name of Object.keys(state.req)) state.req[name] = $(`req-${name}`).value.trim();
    restartRequests(); refresh();
  });
  $("req-older").addEventListener("click", () => { if (nextCursor) { cursors.push(nextCursor); refresh(); } });
  $("req-newest").addEventListener("click", () => { restartRequests(); refresh(); });
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
  $("logout").addEventListener("click", logout);
  window.addEventListener("resize", () => { if (chart) chart.setSize({width: $("chart").clientWidth, height: 280}); });
  await refresh();
}

// Logging out is the one request that changes something: it carries the CSRF token the login set
// in a readable cookie (double submit), which another site cannot read.
async function logout() {
  const csrf = (document.cookie.split("; ").find((c) => c.startsWith("majordomo_csrf=")) || "").split("=")[1] || "";
  await fetch("/api/v1/admin/logout", {method: "POST", credentials: "same-origin",
    headers: {"x-csrf-token": decodeURIComponent(csrf)}});
  location.reload();
}

document.addEventListener("DOMContentLoaded", start);

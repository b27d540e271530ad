// accessd console: one small, dependency-free script. Read-only: it reads
// /v1/status, /v1/readers, /v1/live, /v1/explain, /v1/holders and /v1/cards.
// Every value from the server is put on the page as text, never as markup.
"use strict";

const state = {
  token: sessionStorage.getItem("accessd-token"),
  readers: [],
  live: null,        // AbortController of the live stream
  statusTimer: null,
  alarms: 0,         // alarms seen since the page opened
  history: [],       // [{t, rate, p99}] for the chart
  last: null,        // the previous status reading
};

// ---- small helpers -------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function $(sel) { return document.querySelector(sel); }

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

class NeedToken extends Error {}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const r = await fetch(path, opts);
  if (r.status === 401) { askToken(); throw new NeedToken("token needed"); }
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const msg = body && body.error ? body.error : r.status + " " + r.statusText;
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  return body;
}

function askToken() {
  $("#login").hidden = false;
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function fmtDateTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString([], { hour12: false });
}

function fmtAge(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return ms + " ms";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 7200000) return Math.round(ms / 60000) + " min";
  return (ms / 3600000).toFixed(1) + " h";
}

function fmtCount(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString();
}

function showError(container, err) {
  container.replaceChildren(el("p", { class: "error" }, err.message || String(err)));
}

// ---- pages ---------------------------------------------------------------

const pages = ["live", "status", "explain", "lookup"];

function route() {
  const page = pages.includes(location.hash.slice(1)) ? location.hash.slice(1) : "live";
  for (const p of pages) $("#page-" + p).hidden = p !== page;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  document.body.dataset.page = page;
  if (page === "live") startLive(); else stopLive();
}

// ---- readers (filters and the explain form) ------------------------------

async function loadReaders() {
  const body = await api("/v1/readers");
  state.readers = body.readers;
  const sites = [...new Set(body.readers.map(r => r.site))].sort();
  const doors = [...new Set(body.readers.map(r => r.door))].sort();
  fillSelect($("#live-filter [name=site]"), sites);
  fillSelect($("#live-filter [name=door]"), doors);
  fillSelect($("#live-filter [name=reason]"), body.reasons);
  const sel = $("#explain-form [name=reader]");
  sel.replaceChildren(...body.readers.map(r =>
    el("option", { value: r.id }, `${r.id} — ${r.door} (${r.site})`)));
  updateZone();
}

function fillSelect(select, values) {
  const keep = select.value;
  select.replaceChildren(el("option", { value: "" }, "all"), ...values.map(v => el("option", { value: v }, v)));
  select.value = keep;
}

// ---- live ----------------------------------------------------------------

const MAX_ROWS = 200;

function liveQuery() {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData($("#live-filter"))) if (v) q.set(k, v);
  return q.toString();
}

function stopLive() {
  if (state.live) { state.live.abort(); state.live = null; }
}

// Server-sent events read with fetch, not EventSource, so that the bearer
// token can travel in a header rather than in the URL.
async function startLive() {
  stopLive();
  const ctl = new AbortController();
  state.live = ctl;
  const status = $("#live-state");
  status.textContent = "Connecting…";
  $("#live-table tbody").replaceChildren();
  try {
    const r = await fetch("/v1/live?" + liveQuery(), { headers: headers(), signal: ctl.signal });
    if (r.status === 401) { askToken(); status.textContent = "Needs the server's token."; return; }
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try { msg = (await r.json()).error || msg; } catch (_) { /* keep */ }
      status.textContent = msg;
      status.className = "error";
      return;
    }
    status.className = "muted";
    status.textContent = "Live: waiting for decisions…";
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trimStart();
        }
        if (data) onLive(name, data);
      }
    }
    if (state.live === ctl) status.textContent = "The server closed the live view.";
  } catch (e) {
    if (e.name !== "AbortError") { status.textContent = "Live view lost: " + e.message; status.className = "error"; }
  }
}

function onLive(name, data) {
  if (name === "decisions") {
    const batch = JSON.parse(data);
    const tbody = $("#live-table tbody");
    for (const e of batch.events) tbody.prepend(liveRow(e));
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
    const status = $("#live-state");
    status.className = "muted";
    status.textContent = `Live: ${fmtCount(batch.seen)} decisions in the last moment, ${fmtCount(batch.matched)} match` +
      (batch.matched > batch.events.length ? `, newest ${batch.events.length} shown` : "") +
      (batch.skipped ? " (fell behind: jumped to the newest)" : "");
  } else if (name === "alarm") {
    const a = JSON.parse(data);
    const box = $("#alarms");
    const e = a.event;
    const what = a.kind.replace(/_/g, " ");
    const extra = a.kind === "deny_burst" ? ` — ${a.denies} denies in ${a.window_s} s` : "";
    box.prepend(el("div", { class: "alarm", "data-kind": a.kind },
      el("strong", {}, what), " ", fmtTime(e.time), " at ", e.door || e.reader,
      " (reader ", e.reader, "), card ", e.credential, e.holder ? `, holder ${e.holder}` : "", extra));
    while (box.children.length > 10) box.lastChild.remove();
    state.alarms += 1;
    const count = $("#alarm-count");
    count.hidden = false;
    count.textContent = `${fmtCount(state.alarms)} alarm${state.alarms === 1 ? "" : "s"} since this page opened; the newest:`;
  } else if (name === "problem") {
    $("#live-state").textContent = "The live view stopped: " + data;
  }
}

function liveRow(e) {
  const verdict = e.verdict;
  return el("tr", { class: verdict },
    el("td", {}, fmtTime(e.time)),
    el("td", { class: "verdict" }, verdict),
    el("td", {}, e.reason),
    el("td", {}, e.door || "—"),
    el("td", {}, e.reader),
    el("td", {}, e.credential),
    el("td", {}, e.holder || "—"));
}

// ---- status --------------------------------------------------------------

function quantile(buckets, bounds, q) {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  let need = Math.ceil(total * q), seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    seen += buckets[i];
    if (seen >= need) return bounds[i];
  }
  return bounds[bounds.length - 1];
}

async function pollStatus() {
  let s;
  try {
    s = await api("/v1/status");
  } catch (e) {
    if (!(e instanceof NeedToken)) showError($("#status-cards"), e);
    $("#health").textContent = "unreachable";
    $("#health").classList.add("bad");
    return;
  }
  const now = performance.now();
  const d = s.decisions.stats;
  let rate = null, p50 = null, p99 = null;
  if (state.last) {
    const dt = (now - state.last.t) / 1000;
    const prev = state.last.d;
    rate = Math.max(0, (d.grants + d.denies - prev.grants - prev.denies) / dt);
    const delta = d.service_time_buckets.map((v, i) => v - prev.service_time_buckets[i]);
    p50 = quantile(delta, s.decisions.service_time_bounds_us, 0.5);
    p99 = quantile(delta, s.decisions.service_time_bounds_us, 0.99);
    state.history.push({ rate, p99 });
    if (state.history.length > 90) state.history.shift();
  }
  state.last = { t: now, d };

  const health = $("#health");
  health.textContent = `v${s.snapshot.version} · ${fmtAge(s.snapshot.age_ms)}` + (s.ready ? "" : ` · ${s.refusal}`);
  health.classList.toggle("bad", !s.ready);

  const src = s.source;
  const srcText = src.kind === "dynamodb" ? `DynamoDB ${src.table} (${src.state})` : `site file ${src.path}`;
  const ev = s.events;
  const cards = [
    ["Ready", s.ready ? "yes" : "no: " + s.refusal, "ready"],
    ["Snapshot version", s.snapshot.version, "version"],
    ["Snapshot age", fmtAge(s.snapshot.age_ms), "age"],
    ["Decisions/s", rate === null ? "…" : fmtCount(Math.round(rate)), "rate"],
    ["Service time p50", p50 === null ? "—" : "≤ " + fmtCount(p50) + " µs", "p50"],
    ["Service time p99", p99 === null ? "—" : "≤ " + fmtCount(p99) + " µs", "p99"],
    ["Connected readers", fmtCount(s.quic.connections), "connections"],
    ["Grants / denies", `${fmtCount(d.grants)} / ${fmtCount(d.denies)}`, "totals"],
    ["Credentials", fmtCount(s.snapshot.stats.credentials), "credentials"],
    ["Readers · doors", `${fmtCount(s.snapshot.stats.readers)} · ${fmtCount(s.snapshot.stats.doors)}`, "topology"],
    ["Source", srcText, "source", true],
    ["Stream lag", src.kind === "dynamodb" && src.stream_lag_s !== null ? src.stream_lag_s + " s" : "—", "lag"],
    ["Checkpoint", s.checkpoint ? (s.checkpoint.exists ? fmtDateTime(s.checkpoint.written_at) : "not written yet") : "off", "checkpoint", true],
    ["Event spool", ev ? (ev.spool_bytes / 1048576).toFixed(1) + " MiB" : "off", "spool"],
    ["Unshipped", ev && ev.events_table ? fmtAge(ev.oldest_unshipped_ms) : "—", "unshipped"],
    ["Uptime", fmtAge(Math.round(s.uptime_s * 1000)), "uptime"],
  ];
  $("#status-cards").replaceChildren(...cards.map(([label, value, id, small]) =>
    el("div", { "data-figure": id },
      el("div", { class: "label" }, label),
      el("div", { class: "value" + (small ? " small" : "") }, String(value)))));
  const shards = src.kind === "dynamodb" && Array.isArray(src.shards) ? src.shards : [];
  $("#shards tbody").replaceChildren(...(shards.length
    ? shards.map(sh => {
        const lag = (src.shard_lag_s || {})[sh.id];
        return el("tr", {}, el("td", {}, sh.id), el("td", {}, sh.parent || "—"),
          el("td", {}, sh.last_sequence || "nothing read yet"), el("td", {}, sh.finished ? "closed, read to its end" : "open"),
          el("td", {}, lag === undefined ? "not read in the last round" : lag.toFixed(1) + " s"));
      })
    : [el("tr", {}, el("td", { colSpan: 5, class: "muted" }, src.kind === "dynamodb" ? "no shard read yet" : "a site file has no stream"))]));
  drawChart();
}

function drawChart() {
  const c = $("#chart");
  const g = c.getContext("2d");
  const w = c.width, h = c.height, pad = 28;
  g.clearRect(0, 0, w, h);
  const pts = state.history;
  const maxRate = Math.max(10, ...pts.map(p => p.rate || 0));
  const maxP99 = Math.max(10, ...pts.map(p => p.p99 || 0));
  g.strokeStyle = "#d8dde5";
  g.beginPath(); g.moveTo(pad, h - pad); g.lineTo(w - pad, h - pad); g.stroke();
  g.fillStyle = "#5d6778";
  g.font = "11px system-ui, sans-serif";
  g.fillText(fmtCount(Math.round(maxRate)) + "/s", 2, 12);
  g.fillText(fmtCount(maxP99) + " µs", w - 70, 12);
  const x = i => pad + (w - 2 * pad) * (pts.length < 2 ? 1 : i / (pts.length - 1));
  const line = (key, max, colour) => {
    g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
    pts.forEach((p, i) => {
      const y = h - pad - (h - 2 * pad) * ((p[key] || 0) / max);
      if (i === 0) g.moveTo(x(i), y); else g.lineTo(x(i), y);
    });
    g.stroke();
  };
  line("rate", maxRate, "#2457c5");
  line("p99", maxP99, "#9a6700");
}

// ---- explain -------------------------------------------------------------

function updateZone() {
  const id = $("#explain-form [name=reader]").value;
  const r = state.readers.find(x => x.id === id);
  $("#explain-zone").textContent = r
    ? `A time is read in ${r.site}'s time zone, ${r.time_zone}. Empty: now.`
    : "Empty: now.";
}

async function explain(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = { reader: f.get("reader"), card: f.get("card").trim() };
  if (f.get("pin")) body.pin = f.get("pin").trim();
  if (f.get("at")) body.at = f.get("at").length === 16 ? f.get("at") + ":00" : f.get("at");
  const out = $("#explain-result");
  try {
    const x = await api("/v1/explain", {
      method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
    });
    out.replaceChildren(renderExplanation(x));
  } catch (e) {
    if (!(e instanceof NeedToken)) showError(out, e);
  }
}

function renderExplanation(x) {
  const frag = document.createDocumentFragment();
  frag.append(el("div", { class: "verdict-banner " + x.verdict, id: "explain-verdict" },
    `${x.verdict.toUpperCase()} — ${x.reason} (${x.code})`, x.unlock_ms ? ` · unlock ${x.unlock_ms} ms` : ""));
  frag.append(el("p", { class: "muted" },
    `At ${x.local_time || x.at}` + (x.site ? ` at ${x.site}` : "") + (x.door ? `, door ${x.door}` : "") +
    (x.holder ? `, holder ${x.holder}` : "") + ` · snapshot v${x.snapshot_version}, ${fmtAge(x.snapshot_age_ms)} old`));
  frag.append(el("h2", {}, "Rules, in order"));
  frag.append(el("div", { class: "scroll" }, el("table", { id: "explain-steps" },
    el("thead", {}, el("tr", {}, el("th", {}, "Rule"), el("th", {}, "Outcome"), el("th", {}, "Reason"), el("th", {}, "Detail"))),
    el("tbody", {}, x.steps.map(s => el("tr", {},
      el("td", {}, s.rule), el("td", { class: "outcome-" + s.outcome }, s.outcome),
      el("td", {}, s.reason || ""), el("td", { class: "detail" }, s.detail)))))));
  if (x.levels && x.levels.length) {
    frag.append(el("h2", {}, "Access levels"));
    frag.append(el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Level", "Exists", "Covers door", "Assignment", "Schedule", "Active now"].map(t => el("th", {}, t)))),
      el("tbody", {}, x.levels.map(l => el("tr", {},
        el("td", {}, l.level), el("td", {}, l.resolved ? "yes" : "no"), el("td", {}, l.covers_door ? "yes" : "no"),
        el("td", {}, l.assignment.replace(/_/g, " ")), el("td", {}, l.schedule || "—"),
        el("td", {}, l.schedule_active === undefined ? "—" : (l.schedule_active ? "yes" : "no"))))))));
  }
  return frag;
}

// ---- lookup --------------------------------------------------------------

async function lookup(ev) {
  ev.preventDefault();
  const q = new FormData(ev.target).get("q").trim();
  const out = $("#lookup-result");
  // A card has a colon (h10301:12:1001, uid:04a1b2); a holder id may not.
  const path = /^[a-z0-9]+:[^/]+$/i.test(q) ? "/v1/cards/" : "/v1/holders/";
  try {
    const x = await api(path + encodeURIComponent(q));
    out.replaceChildren(renderLookup(x, q));
  } catch (e) {
    if (!(e instanceof NeedToken)) showError(out, e);
  }
}

function validity(o) {
  if (!o.valid_from && !o.valid_until) return "always";
  return `${o.valid_from ? fmtDateTime(o.valid_from) : "…"} → ${o.valid_until ? fmtDateTime(o.valid_until) : "…"}`;
}

function table(id, heads, rows, empty) {
  return el("div", { class: "scroll" }, el("table", { id },
    el("thead", {}, el("tr", {}, heads.map(t => el("th", {}, t)))),
    el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", { colSpan: heads.length, class: "muted" }, empty))])));
}

function renderLookup(x, q) {
  const frag = document.createDocumentFragment();
  const h = x.holder;
  if (h) {
    frag.append(el("h2", { id: "holder-name" }, `Cardholder ${h.id}`));
    frag.append(el("div", { class: "cards" },
      el("div", {}, el("div", { class: "label" }, "Status"), el("div", { class: "value small" }, h.status || "no cardholder record (every card denies)")),
      el("div", {}, el("div", { class: "label" }, "Valid"), el("div", { class: "value small" }, validity(h))),
      el("div", {}, el("div", { class: "label" }, "Lockdown override"), el("div", { class: "value small" }, h.lockdown_override ? "yes" : "no"))));
    frag.append(el("h2", {}, "Credentials"));
    frag.append(table("holder-cards", ["Card", "Status", "Valid", "PIN", ""], h.credentials.map(c => {
      const btn = el("button", { type: "button" }, "Explain");
      btn.addEventListener("click", () => {
        $("#explain-form [name=card]").value = c.card;
        location.hash = "#explain";
      });
      return el("tr", {}, el("td", {}, c.card), el("td", {}, c.status), el("td", {}, validity(c)),
        el("td", {}, c.pin ? "yes" : "no"), el("td", {}, btn));
    }), "no credentials"));
    frag.append(el("h2", {}, "Access levels"));
    frag.append(table("holder-levels", ["Level", "Schedule", "Valid"], h.levels.map(l =>
      el("tr", {}, el("td", {}, l.level), el("td", {}, l.schedule || "does not exist: grants nothing"), el("td", {}, validity(l)))),
      "no access levels"));
  } else {
    frag.append(el("h2", { id: "holder-name" }, `${q}: not in snapshot v${x.snapshot_version}`));
  }
  frag.append(el("h2", {}, "Last event at each door"));
  frag.append(table("holder-doors", ["Door", "Time", "Verdict", "Reason"], Object.entries(x.doors).map(([door, e]) =>
    el("tr", { class: e.verdict }, el("td", {}, door), el("td", {}, fmtDateTime(e.time)), el("td", { class: "verdict" }, e.verdict), el("td", {}, e.reason))),
    "none in the recent events"));
  frag.append(el("h2", {}, "Recent events"));
  frag.append(table("holder-events", ["Time", "Verdict", "Reason", "Door", "Reader", "Card"], x.recent.map(e =>
    el("tr", { class: e.verdict }, el("td", {}, fmtDateTime(e.time)), el("td", { class: "verdict" }, e.verdict), el("td", {}, e.reason),
      el("td", {}, e.door || "—"), el("td", {}, e.reader), el("td", {}, e.credential))),
    "none"));
  const t = x.events_table;
  frag.append(el("p", { class: "muted" }, x.scanned_bytes === null
    ? "Access events are not recorded by this server (serve --events-dir)."
    : `Searched the newest ${(x.scanned_bytes / 1048576).toFixed(1)} MiB of the event spool` + (!t
      ? "; older events are in the events table (accessd events query)."
      : t.error === null
        ? ` and the cardholder's newest ${t.read} events in the events table ${t.table}.`
        : `; the events table ${t.table} could not be read (${t.error}).`)));
  return frag;
}

// ---- start ---------------------------------------------------------------

function init() {
  $("#login").addEventListener("submit", ev => {
    ev.preventDefault();
    state.token = $("#token").value.trim();
    sessionStorage.setItem("accessd-token", state.token);
    $("#login").hidden = true;
    start();
  });
  $("#live-filter").addEventListener("change", startLive);
  $("#explain-form").addEventListener("submit", explain);
  $("#explain-form [name=reader]").addEventListener("change", updateZone);
  $("#lookup-form").addEventListener("submit", lookup);
  window.addEventListener("hashchange", route);
  start();
}

function start() {
  loadReaders().catch(e => { if (!(e instanceof NeedToken)) $("#live-state").textContent = e.message; });
  route();
  clearInterval(state.statusTimer);
  pollStatus();
  state.statusTimer = setInterval(pollStatus, 1000);
}

init();

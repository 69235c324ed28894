// ringcast dashboard: plain JavaScript, no build step. It polls the public API
// (GET /requests, /requests/{id}, /requests/{id}/calls, /requests/{id}/timeline;
// DELETE /voice/call/{id}; POST /voice/call/{id}/pause, /resume, /replay) with the key saved in localStorage as a Bearer token.
"use strict";

const POLL_MS = 1500;
const KEY_STORAGE = "ringcast.apiKey";
const STATES = ["answered", "busy", "no-answer", "declined", "rejected", "failed",
                "canceled", "suppressed", "in-progress", "queued"];
const LABELS = {
  "answered": "answered", "busy": "busy", "no-answer": "no answer", "declined": "declined",
  "rejected": "rejected", "failed": "failed", "canceled": "canceled",
  "suppressed": "do-not-call", "in-progress": "in progress", "queued": "queued",
};
const FINAL_STATUS = new Set(["done", "canceled"]);

const view = {
  selected: null,      // request id shown in the detail panel
  filter: null,        // state filter of the calls table (null: all)
  listLimit: 20,
  callsLimit: 100,
  lastList: [],
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function color(state) {
  return getComputedStyle(document.documentElement).getPropertyValue("--" + state).trim() || "#999";
}

// --- API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { "Accept": "application/json" };
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) headers["Authorization"] = "Bearer " + key;
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const message = body && body.error && body.error.message
      ? body.error.message : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return body;
}

function showBanner(message) {
  const banner = $("#banner");
  if (message) {
    banner.textContent = message;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

function errorText(err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    return `The server refused the API key (${err.message}). Enter a valid key above.`;
  }
  return `Cannot load data: ${err.message}`;
}

// --- formatting ----------------------------------------------------------------------

function shortId(id) { return id.slice(0, 8); }

function fmtTime(iso) {
  if (!iso) return "";
  return iso.replace("T", " ").replace("Z", "");
}

function fmtEta(seconds, status) {
  if (FINAL_STATUS.has(status)) return "—";
  if (seconds === null || seconds === undefined) return "…";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

function fmtClock(epochSeconds) {
  return new Date(epochSeconds * 1000).toISOString().slice(11, 19);
}

// --- request list ----------------------------------------------------------------------

function progressBar(req) {
  const bar = el("div", { class: "bar", title: summaryText(req) });
  const total = Math.max(req.total, 1);
  for (const state of STATES) {
    const n = req.counts[state] || 0;
    if (!n) continue;
    bar.append(el("span", {
      "data-state": state, style: `width:${(100 * n / total).toFixed(2)}%;background:${color(state)}`,
    }));
  }
  return bar;
}

function summaryText(req) {
  const parts = STATES.filter((s) => req.counts[s]).map((s) => `${LABELS[s]} ${req.counts[s]}`);
  return `${req.done} of ${req.total} done` + (parts.length ? ": " + parts.join(", ") : "");
}

// Machine detection's verdicts ("humans 3 · machines 2"), empty when none was asked for.
function answeredByText(req) {
  const names = { human: "humans", machine: "machines", fax: "fax", unknown: "unknown" };
  const counts = req.answered_by || {};
  return Object.keys(names).filter((k) => counts[k]).map((k) => `${names[k]} ${counts[k]}`).join(" · ");
}

function countCell(req, ...states) {
  const n = states.reduce((sum, s) => sum + (req.counts[s] || 0), 0);
  return el("td", { class: "num", "data-count": states[0], text: n });
}

function cancelButton(req) {
  const finished = FINAL_STATUS.has(req.status) || req.status === "canceling";
  return el("button", {
    class: "cancel", type: "button", "data-request-id": req.request_id,
    disabled: finished, title: finished ? "nothing left to cancel" : "cancel the calls not yet finished",
    onclick: (event) => { event.stopPropagation(); cancelRequest(req.request_id); },
  }, "Cancel");
}

function renderList(requests) {
  const tbody = $("#requests tbody");
  const rows = requests.map((req) => el("tr", {
    "data-request-id": req.request_id,
    "data-status": req.status,
    class: req.request_id === view.selected ? "selected" : null,
    onclick: () => select(req.request_id),
  },
  el("td", { title: req.request_id }, el("code", { text: shortId(req.request_id) })),
  el("td", { text: fmtTime(req.created_at) }),
  el("td", { "data-field": "status" }, el("span", { class: "status " + req.status, text: req.status })),
  el("td", { "data-field": "progress" }, progressBar(req),
     el("div", { class: "muted", "data-field": "done", text: `${req.done} / ${req.total}` })),
  countCell(req, "answered"),
  countCell(req, "busy"),
  countCell(req, "no-answer"),
  countCell(req, "declined", "rejected"),
  countCell(req, "failed"),
  countCell(req, "canceled"),
  countCell(req, "in-progress"),
  countCell(req, "queued"),
  el("td", { class: "num", "data-field": "cpm", text: req.calls_per_minute.toFixed(1) }),
  el("td", { class: "num", "data-field": "eta", text: fmtEta(req.eta_seconds, req.status) }),
  el("td", null, cancelButton(req))));
  tbody.replaceChildren(...rows);
  $("#requests-empty").hidden = requests.length > 0;
  $("#requests-hint").hidden = requests.length === 0 || view.selected !== null;
}

async function refreshList() {
  const body = await api(`/requests?limit=${view.listLimit}`);
  view.lastList = body.requests;
  renderList(body.requests);
  const more = $("#requests-more");
  more.hidden = !body.next_cursor || view.listLimit >= 100;
}

// --- one request ---------------------------------------------------------------------------

function select(requestId) {
  if (view.selected !== requestId) {
    view.selected = requestId;
    view.filter = null;
    view.callsLimit = 100;
    history.replaceState(null, "", "#" + encodeURIComponent(requestId));
  }
  for (const tr of document.querySelectorAll("#requests tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.requestId === requestId);
  }
  $("#detail").hidden = false;
  $("#requests-hint").hidden = true;
  refreshDetail().catch((err) => showBanner(errorText(err)));
}

function renderFilters(req) {
  const box = $("#filters");
  const chip = (state, label, n) => el("button", {
    type: "button", "data-state": state || "all", "aria-pressed": String(view.filter === state),
    onclick: () => { view.filter = state; view.callsLimit = 100; refreshDetail().catch(() => {}); },
  }, state ? el("span", { class: "dot", style: `background:${color(state)}` }) : null, `${label} (${n})`);
  const chips = [chip(null, "all", req.total)];
  for (const state of STATES) {
    const n = req.counts[state] || 0;
    if (n || view.filter === state) chips.push(chip(state, LABELS[state], n));
  }
  box.replaceChildren(...chips);
}

// A call's transfer (gather actions): to, mode, result, connect time, duration, the agent's cause.
function transferTitle(t) {
  const parts = [`${t.mode === "refer" ? "blind REFER" : "bridged"} transfer to ${t.to}: ${t.result}`];
  if (t.connect_time) parts.push(`connected ${t.connect_time}`);
  if (t.duration) parts.push(`${t.duration}s`);
  if (t.cause) parts.push(`cause ${t.cause}`);
  if (t.error) parts.push(t.error);
  return parts.join(", ");
}

function renderCalls(records) {
  const rows = records.map((r, i) => el("tr", { "data-call-id": r.id, "data-state": r.state },
    el("td", { class: "num", text: i + 1 }),
    el("td", null, el("code", { text: r.to }),
      r.srtp ? el("span", { class: "srtp", "data-srtp": r.srtp, title: `SRTP ${r.srtp}`, text: " SRTP" }) : null),
    el("td", { text: r.result }),
    el("td", null, el("span", { class: "dot", style: `background:${color(r.state)}` }), LABELS[r.state] || r.state,
      r.answered_by ? el("span", { class: "answered-by", "data-answered-by": r.answered_by, text: ` (${r.answered_by})` }) : null,
      r.transfer ? el("span", { class: "transfer", "data-transfer": r.transfer.result, title: transferTitle(r.transfer),
        text: ` \u2192 ${r.transfer.to} (${r.transfer.mode === "refer" ? "REFER " : ""}${r.transfer.result})` }) : null),
    el("td", { text: r.disconnect_cause_code ? `${r.disconnect_cause_code} ${r.disconnect_cause_text || ""}` : "" }),
    el("td", { class: "num", text: r.answered ? `${r.duration}s` : "" }),
    el("td", { text: r.setup_time || "" }),
    el("td", { text: r.disconnect_time || "" }),
    el("td", { class: "num", text: r.attempt || 1 }),
    el("td", { text: r.dtmf || r.error || "" }),
    el("td", { class: "media" }, ...(r.recordings || []).map(recordingButton))));
  $("#calls tbody").replaceChildren(...rows);
}

// A recording plays in the page's one <audio>: fetched with the saved key (an
// <audio src> cannot send the Authorization header), kept as a blob URL.
const blobs = new Map();  // recording url -> blob: URL

function recordingButton(rec) {
  return el("button", { type: "button", class: "play", "data-recording": rec.url,
    title: "play this recording", text: `▶ ${Number(rec.duration).toFixed(1)}s`,
    onclick: () => playRecording(rec).catch((err) => showBanner(errorText(err))) });
}

async function playRecording(rec) {
  let src = blobs.get(rec.url);
  if (!src) {
    const headers = {};
    const key = localStorage.getItem(KEY_STORAGE);
    if (key) headers["Authorization"] = "Bearer " + key;
    const response = await fetch(rec.url, { headers, cache: "no-store" });
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
      throw new ApiError(response.status, message);
    }
    src = URL.createObjectURL(await response.blob());
    blobs.set(rec.url, src);
  }
  const player = $("#player");
  $("#player-box").hidden = false;
  $("#player-name").textContent = `${rec.url.split("/").pop().slice(0, 8)} · ${Number(rec.duration).toFixed(1)} s`;
  player.dataset.recording = rec.url;
  player.src = src;
  await player.play().catch(() => {});  // autoplay may be refused: the controls are there
}

function renderChart(timeline) {
  const svg = $("#chart");
  const width = Math.max(svg.clientWidth || 720, 200);
  const height = 180;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  const pad = { left: 34, right: 10, top: 10, bottom: 22 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const nodes = [];
  const buckets = timeline.buckets || [];
  if (!buckets.length) {
    nodes.push(Object.assign(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle",
      fill: "#6b7482", "font-size": 13 }), { textContent: "no finished calls yet" }));
    svg.replaceChildren(...nodes);
    $("#chart-legend").replaceChildren();
    return;
  }
  const totals = buckets.map((b) => Object.values(b.counts).reduce((a, n) => a + n, 0));
  const top = Math.max(...totals, 1);
  for (const frac of top % 2 === 0 ? [0, 0.5, 1] : [0, 1]) {
    const y = pad.top + plotH * (1 - frac);
    nodes.push(svgEl("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, stroke: "#e3e6eb" }));
    nodes.push(Object.assign(svgEl("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end",
      fill: "#6b7482", "font-size": 11 }), { textContent: String(Math.round(top * frac)) }));
  }
  const slot = plotW / buckets.length;
  const barW = Math.max(1, Math.min(slot * 0.8, 40));
  const seen = new Set();
  buckets.forEach((b, i) => {
    let y = pad.top + plotH;
    const x = pad.left + i * slot + (slot - barW) / 2;
    for (const state of STATES) {
      const n = b.counts[state] || 0;
      if (!n) continue;
      seen.add(state);
      const h = plotH * n / top;
      y -= h;
      const rect = svgEl("rect", { x, y, width: barW, height: h, fill: color(state), "data-state": state });
      rect.append(Object.assign(svgEl("title"), { textContent: `${fmtClock(b.t)} ${LABELS[state]}: ${n}` }));
      nodes.push(rect);
    }
  });
  const first = buckets[0].t;
  const last = buckets[buckets.length - 1].t + timeline.width;
  for (const [x, t, anchor] of [[pad.left, first, "start"], [width - pad.right, last, "end"]]) {
    nodes.push(Object.assign(svgEl("text", { x, y: height - 6, "text-anchor": anchor, fill: "#6b7482",
      "font-size": 11 }), { textContent: fmtClock(t) + " UTC" }));
  }
  nodes.push(Object.assign(svgEl("text", { x: width / 2, y: height - 6, "text-anchor": "middle",
    fill: "#6b7482", "font-size": 11 }), { textContent: `${timeline.width}s per bar` }));
  svg.replaceChildren(...nodes);
  $("#chart-legend").replaceChildren(...STATES.filter((s) => seen.has(s)).map((s) =>
    el("span", null, el("i", { style: `background:${color(s)}` }), LABELS[s])));
}

// The chart and the calls table are fetched again only when the request's counts
// or the view changed, or every FULL_REFRESH_MS (durations and causes fill in).
const FULL_REFRESH_MS = 10000;
let shown = { key: null, at: 0 };

async function refreshDetail() {
  const id = view.selected;
  if (!id) return;
  const enc = encodeURIComponent(id);
  const state = view.filter ? `&state=${encodeURIComponent(view.filter)}` : "";
  const detail = await api(`/requests/${enc}`);
  if (id !== view.selected) return;
  const req = detail.request;
  const key = JSON.stringify([id, view.filter, view.callsLimit, req.counts, req.status]);
  const stale = key !== shown.key || Date.now() - shown.at > FULL_REFRESH_MS;
  let timeline = null;
  let calls = null;
  if (stale) {
    [timeline, calls] = await Promise.all([
      api(`/requests/${enc}/timeline`),
      api(`/requests/${enc}/calls?limit=${view.callsLimit}${state}`),
    ]);
    if (id !== view.selected) return;
    shown = { key, at: Date.now() };
  }
  $("#detail-id").textContent = req.request_id;
  $("#detail-id").title = `report ${req.report_id}`;
  const status = $("#detail-status");
  status.textContent = req.status;
  status.className = "status " + req.status;
  $("#detail-summary").textContent =
    `${summaryText(req)} · ${req.calls_per_minute.toFixed(1)} calls/min · ETA ${fmtEta(req.eta_seconds, req.status)}` +
    (req.from ? ` · from ${req.from}` : "");
  const amd = answeredByText(req);
  $("#detail-amd").textContent = amd ? `Answered by: ${amd}` : "";
  const cancel = $("#detail-cancel");
  cancel.dataset.requestId = req.request_id;
  cancel.disabled = FINAL_STATUS.has(req.status) || req.status === "canceling";
  const pause = $("#detail-pause");
  pause.dataset.requestId = req.request_id;
  pause.dataset.paused = req.paused_at ? "true" : "false";
  pause.textContent = req.paused_at ? "Resume" : "Pause";
  pause.title = req.paused_at ? "dial the queued calls again" : "stop dialing the queued calls (live calls finish)";
  pause.disabled = FINAL_STATUS.has(req.status) || req.status === "canceling";
  $("#detail-replay").dataset.requestId = req.request_id;
  renderFilters(req);
  if (timeline) renderChart(timeline);
  if (calls) {
    renderCalls(calls.records);
    $("#calls-more").hidden = !calls.next_cursor || view.callsLimit >= 1000;
  }
}

async function cancelRequest(requestId) {
  if (!window.confirm(`Cancel request ${shortId(requestId)}? Calls not yet finished are canceled.`)) return;
  try {
    await api(`/voice/call/${encodeURIComponent(requestId)}`, { method: "DELETE" });
    showBanner(null);
  } catch (err) {
    showBanner(`Cancel failed: ${err.message}`);
  }
  await refreshAll();
}

async function pauseRequest(requestId, resume) {
  const action = resume ? "resume" : "pause";
  try {
    await api(`/voice/call/${encodeURIComponent(requestId)}/${action}`, { method: "POST" });
    showBanner(null);
  } catch (err) {
    showBanner(`${resume ? "Resume" : "Pause"} failed: ${err.message}`);
  }
  await refreshAll();
}

async function replayRequest(requestId) {
  const say = window.prompt(`Replay ${shortId(requestId)} to its recipients: text to say`);
  if (!say) return;
  const only = window.prompt("Only recipients whose outcome was (comma-separated, e.g. busy,no-answer; empty: everyone)", "");
  if (only === null) return;
  const body = { playlist: [{ say }] };
  const outcomes = only.split(",").map((s) => s.trim()).filter(Boolean);
  if (outcomes.length) body.only = outcomes;
  try {
    const answer = await api(`/voice/call/${encodeURIComponent(requestId)}/replay`, {
      method: "POST", body: JSON.stringify(body),
    });
    showBanner(null);
    select(answer.request_id);
  } catch (err) {
    showBanner(`Replay failed: ${err.message}`);
  }
  await refreshAll();
}

// --- trunk registrations (GET /health, issue 15) ----------------------------------------

function trunkText(name, info) {
  // one binding per dialer: "2/3 dialers" once the fleet has more than one
  const total = info.nodes_total || 1;
  const fleet = total > 1 ? ` on ${info.nodes_registered}/${total} dialers` : "";
  if (info.registered) {
    const left = info.expires_at ? Math.max(0, Math.round(info.expires_at - Date.now() / 1000)) : null;
    return `${name}: registered${fleet}` + (left === null ? "" : ` (${left} s left)`);
  }
  return `${name}: ${info.state}${fleet}` + (info.error ? ` \u2014 ${info.error}` : "");
}

async function refreshTrunks() {
  const response = await fetch("/health", { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  const trunks = body.trunks || {};
  const box = $("#trunks");
  const names = Object.keys(trunks).sort();
  box.hidden = names.length === 0;
  box.querySelectorAll(".trunk").forEach((node) => node.remove());
  for (const name of names) {
    const info = trunks[name];
    box.append(el("span", {
      class: `trunk ${info.registered ? "up" : "down"}`,
      "data-trunk": name,
      "data-state": info.state,
      title: info.aor ? `${info.aor} at ${info.registrar}` : "",
    }, trunkText(name, info)));
  }
}

// --- loop ------------------------------------------------------------------------------

async function refreshAll() {
  try {
    await refreshList();
    if (view.selected) await refreshDetail();
    await refreshTrunks();
    showBanner(null);
    $("#live").classList.remove("stale");
  } catch (err) {
    showBanner(errorText(err));
    $("#live").classList.add("stale");
  }
}

async function loop() {
  await refreshAll();
  setTimeout(loop, POLL_MS);
}

function init() {
  const input = $("#api-key");
  input.value = localStorage.getItem(KEY_STORAGE) || "";
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    refreshAll();
  });
  $("#requests-more").addEventListener("click", () => {
    view.listLimit = Math.min(view.listLimit + 20, 100);
    refreshAll();
  });
  $("#calls-more").addEventListener("click", () => {
    view.callsLimit = Math.min(view.callsLimit + 100, 1000);
    refreshAll();
  });
  $("#detail-pause").addEventListener("click", () => {
    const button = $("#detail-pause");
    if (button.dataset.requestId) pauseRequest(button.dataset.requestId, button.dataset.paused === "true");
  });
  $("#detail-replay").addEventListener("click", () => {
    const id = $("#detail-replay").dataset.requestId;
    if (id) replayRequest(id);
  });
  $("#detail-cancel").addEventListener("click", () => {
    const id = $("#detail-cancel").dataset.requestId;
    if (id) cancelRequest(id);
  });
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash) select(hash);
  loop();
}

document.addEventListener("DOMContentLoaded", init);

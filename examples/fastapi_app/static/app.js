// Live odds page for the wshub FastAPI example.
//
// wshub.js (the browser client shipped in the wshub package; this app
// serves it at /wshub.js, the hub at /api/ws/client.js) keeps the
// connection: it reconnects with backoff, subscribes again to the checked
// topics, and recovers what was missed while away. This page renders
// odds_updates into a table and scrape_progress into a progress bar, and
// shows the connection's state. Client: docs/client.md.
import { connect } from "/wshub.js";

const $ = (selector) => document.querySelector(selector);

const state = {
  hub: null,
  opens: 0,             // "open" statuses: the first connect, then reconnects
  lastSeq: {},          // topic -> {epoch, seq} of the last message (gap detection)
  counts: {},           // topic -> messages rendered
  missed: 0,
  ignored: 0,           // messages for unchecked topics (the client drops them)
  odds: new Map(),      // "match|market" -> <tr>
};

const toggles = Array.from(document.querySelectorAll("input.topic-toggle"));
for (const box of toggles) state.counts[box.dataset.topic] = 0;

// ------------------------------------------------------------------ view

function setStatus(text) {
  const el = $("#status");
  el.textContent = text;
  el.dataset.state = text;
}

function setCounter(el, value) {
  el.textContent = String(value);
  el.dataset.count = String(value);
}

function renderSubscriptions(topics) {
  const el = $("#subscriptions");
  el.dataset.topics = topics.join(",");
  el.textContent = topics.length ? topics.join(", ") : "(none)";
}

function formatTime(ts) {
  const ms = typeof ts === "number" ? ts * 1000 : Date.parse(ts);
  return Number.isFinite(ms) ? new Date(ms).toLocaleTimeString() : String(ts ?? "");
}

function renderOdds(data, seq) {
  const match = String(data.match ?? "?");
  const market = String(data.market ?? "");
  const key = match + "|" + market;
  let row = state.odds.get(key);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.match = match;
    row.dataset.market = market;
    for (const field of ["match", "market", "prices", "timestamp", "seq"]) {
      const cell = document.createElement("td");
      cell.dataset.field = field;
      row.appendChild(cell);
    }
    row.cells[0].textContent = match;
    row.cells[1].textContent = market;
    $("#odds-table tbody").appendChild(row);
    state.odds.set(key, row);
    $("#odds-empty").hidden = true;
  }
  const prices = data.prices && typeof data.prices === "object" ? data.prices : {};
  const pricesCell = row.cells[2];
  pricesCell.replaceChildren();
  for (const [outcome, price] of Object.entries(prices)) {
    const span = document.createElement("span");
    span.className = "price";
    span.dataset.outcome = outcome;
    const label = document.createElement("span");
    label.className = "outcome";
    label.textContent = outcome;
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = typeof price === "number" ? price.toFixed(2) : String(price);
    span.append(label, value);
    pricesCell.appendChild(span);
  }
  row.dataset.prices = JSON.stringify(prices);
  row.dataset.seq = String(seq);
  row.dataset.timestamp = String(data.timestamp ?? "");
  row.cells[3].textContent = formatTime(data.timestamp);
  row.cells[4].textContent = String(seq);
  row.classList.remove("flash");
  void row.offsetWidth; // restart the highlight animation
  row.classList.add("flash");
}

function renderProgress(data) {
  const done = Number(data.pages_done) || 0;
  const total = Number(data.pages_total) || 0;
  const pct = total > 0 ? Math.min(100, Math.round((100 * done) / total)) : 0;
  const box = $("#progress");
  box.dataset.job = String(data.job_id ?? "");
  box.dataset.status = String(data.status ?? "");
  box.dataset.done = String(done);
  box.dataset.total = String(total);
  const bar = $("#progress-bar");
  bar.style.width = pct + "%";
  bar.setAttribute("aria-valuenow", String(pct));
  $("#progress-text").textContent =
    `${data.job_id ?? "job"}: ${done}/${total} pages (${pct}%) - ${data.status ?? ""}`;
}

// ---------------------------------------------------------------- wshub

function onStatus(status) {
  const el = $("#status");
  switch (status.state) {
    case "connecting":
      setStatus(state.opens ? "reconnecting" : "connecting");
      break;
    case "open":
      state.opens += 1;
      setCounter($("#reconnects"), state.opens - 1);
      setStatus("connected");
      break;
    case "reconnecting":
      el.dataset.retryMs = String(status.delay);
      setStatus("disconnected");
      el.title = `${status.reason}; retrying in ${status.delay} ms`;
      break;
    case "closed":
      setStatus("disconnected");
      el.title = `closed: ${status.code} ${status.reason}`;
      break;
  }
}

// Per topic after a reconnect: replayed (nothing lost), or not (the hub
// restarted, or we were away longer than its history): then what is on
// the page may be stale until each market changes again.
function onRecovery(recovery) {
  const el = $("#recovery");
  el.dataset.topic = recovery.topic;
  el.dataset.recovered = String(recovery.recovered);
  el.textContent = recovery.recovered
    ? `${recovery.topic}: ${recovery.missed} missed update(s) replayed`
    : `${recovery.topic}: could not replay what was missed (${recovery.epochChanged ? "hub restarted" : "history exceeded"})`;
}

function onMessage(data, meta) {
  const topic = meta.topic;
  const box = document.getElementById("topic-" + topic);
  if (box && !box.checked) {
    state.ignored += 1;
    setCounter($("#ignored"), state.ignored);
    return;
  }
  const last = state.lastSeq[topic];
  if (last && last.epoch === meta.epoch && meta.seq > last.seq + 1 && !meta.retained) {
    state.missed += meta.seq - last.seq - 1;
    setCounter($("#missed"), state.missed);
  }
  state.lastSeq[topic] = { epoch: meta.epoch, seq: meta.seq };
  state.counts[topic] = (state.counts[topic] || 0) + 1;
  const counter = document.getElementById("count-" + topic);
  if (counter) setCounter(counter, state.counts[topic]);
  data = data ?? {};
  if (topic === "odds_updates") renderOdds(data, meta.seq);
  else if (topic === "scrape_progress") renderProgress(data);
}

async function loadConfig() {
  for (let delay = 250; ; delay = Math.min(5000, delay * 2)) {
    try {
      const response = await fetch("/config", { cache: "no-store" });
      if (response.ok) return await response.json();
    } catch (err) {
      // the app is restarting: try again
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

async function main() {
  const config = await loadConfig();
  $("#ws-url").textContent = config.ws_url;
  const checked = toggles.filter((box) => box.checked).map((box) => box.dataset.topic);
  const hub = connect(config.ws_url, {
    topics: checked,
    reconnectBaseMs: config.reconnect.initial_ms,
    reconnectMaxMs: config.reconnect.max_ms,
    onStatus,
    onRecovery,
    onSubscribed: renderSubscriptions,
    onError: (error) => console.warn("wshub", error.error, error.message),
  });
  state.hub = hub;
  hub.on("*", onMessage);
  for (const box of toggles) {
    box.addEventListener("change", () => {
      const topic = box.dataset.topic;
      // Seq gaps across an unsubscribed stretch are expected, not misses.
      delete state.lastSeq[topic];
      if (box.checked) hub.subscribe([topic]);
      else hub.unsubscribe([topic]);
    });
  }
}

window.wshubPage = state; // for debugging in the console
main();

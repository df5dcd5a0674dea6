// Live odds page for the wshub FastAPI example.
//
// Connects to the hub whose URL GET /config returns, keeps the hub's
// subscription set equal to the checked topics (also after reconnects),
// reconnects with exponential backoff, and renders odds_updates into a
// table and scrape_progress into a progress bar. Protocol: docs/protocol.md.
(() => {
  "use strict";

  const $ = (selector) => document.querySelector(selector);

  const state = {
    config: null,
    ws: null,
    attempt: 0,          // failed attempts since the last good connection
    reconnectTimer: null,
    everConnected: false,
    reconnects: 0,
    enabled: new Set(),   // topics the user has checked
    subscribed: new Set(),// topics the hub says this connection has
    lastSeq: {},          // topic -> last seq seen (gap detection)
    counts: {},           // topic -> messages rendered
    missed: 0,
    ignored: 0,           // messages for unchecked topics (in flight)
    odds: new Map(),      // "match|market" -> <tr>
  };

  const toggles = Array.from(document.querySelectorAll("input.topic-toggle"));
  for (const box of toggles) {
    if (box.checked) state.enabled.add(box.dataset.topic);
    state.counts[box.dataset.topic] = 0;
    box.addEventListener("change", () => onToggle(box.dataset.topic, box.checked));
  }

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

  function renderSubscriptions() {
    const topics = Array.from(state.subscribed).sort();
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

  // -------------------------------------------------------------- protocol

  function send(message) {
    const ws = state.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  function onToggle(topic, checked) {
    if (checked) {
      state.enabled.add(topic);
      send({ type: "subscribe", topics: [topic] });
    } else {
      state.enabled.delete(topic);
      send({ type: "unsubscribe", topics: [topic] });
    }
    // Seq gaps across an unsubscribed stretch are expected, not misses.
    delete state.lastSeq[topic];
  }

  // Make the hub's subscription set equal to the checked topics. Needed
  // after every (re)connect: with an allow-list, a handshake that asks for
  // no allowed topic is subscribed to all of them.
  function reconcile(serverTopics) {
    const current = new Set(serverTopics);
    const add = Array.from(state.enabled).filter((t) => !current.has(t));
    const remove = Array.from(current).filter((t) => !state.enabled.has(t));
    if (add.length) send({ type: "subscribe", topics: add });
    if (remove.length) send({ type: "unsubscribe", topics: remove });
  }

  function onMessage(frame) {
    const topic = frame.topic;
    if (!state.enabled.has(topic)) {
      // In flight before our unsubscribe took effect: don't show it.
      state.ignored += 1;
      setCounter($("#ignored"), state.ignored);
      return;
    }
    const last = state.lastSeq[topic];
    if (typeof last === "number" && frame.seq > last + 1) {
      state.missed += frame.seq - last - 1;
      setCounter($("#missed"), state.missed);
    }
    state.lastSeq[topic] = frame.seq;
    state.counts[topic] = (state.counts[topic] || 0) + 1;
    const counter = document.getElementById("count-" + topic);
    if (counter) setCounter(counter, state.counts[topic]);
    const data = frame.data ?? {};
    if (topic === "odds_updates") renderOdds(data, frame.seq);
    else if (topic === "scrape_progress") renderProgress(data);
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "connected":
        state.attempt = 0;
        if (state.everConnected) {
          state.reconnects += 1;
          setCounter($("#reconnects"), state.reconnects);
        }
        state.everConnected = true;
        state.subscribed = new Set(frame.topics || []);
        renderSubscriptions();
        setStatus("connected");
        reconcile(frame.topics || []);
        break;
      case "subscribed":
      case "unsubscribed":
        state.subscribed = new Set(frame.topics || []);
        renderSubscriptions();
        break;
      case "message":
        onMessage(frame);
        break;
      case "error":
        console.warn("wshub error", frame.error, frame.message);
        break;
      default:
        break; // pong and future frame types
    }
  }

  // ------------------------------------------------------------ connection

  async function loadConfig() {
    const response = await fetch("/config", { cache: "no-store" });
    if (!response.ok) throw new Error("GET /config: HTTP " + response.status);
    return response.json();
  }

  function scheduleReconnect() {
    if (state.reconnectTimer !== null) return;
    const rc = (state.config && state.config.reconnect) || {};
    const initial = rc.initial_ms || 250;
    const max = rc.max_ms || 5000;
    const base = Math.min(max, initial * 2 ** state.attempt);
    const delay = Math.round(base / 2 + Math.random() * (base / 2)); // jitter
    state.attempt += 1;
    $("#status").dataset.retryMs = String(delay);
    state.reconnectTimer = setTimeout(() => {
      state.reconnectTimer = null;
      connect();
    }, delay);
  }

  async function connect() {
    setStatus(state.everConnected ? "reconnecting" : "connecting");
    try {
      // Re-read every time: the hub may have moved while we were away.
      state.config = await loadConfig();
    } catch (err) {
      if (!state.config) {
        setStatus("disconnected");
        scheduleReconnect();
        return;
      }
    }
    const topics = Array.from(state.enabled);
    const url = state.config.ws_url +
      (topics.length ? "?topics=" + topics.map(encodeURIComponent).join(",") : "");
    $("#ws-url").textContent = state.config.ws_url;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      setStatus("disconnected");
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    state.lastSeq = {}; // seq restarts with every hub
    ws.addEventListener("message", (event) => {
      if (ws !== state.ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        console.warn("not JSON", event.data);
        return;
      }
      onFrame(frame);
    });
    ws.addEventListener("close", () => {
      if (ws !== state.ws) return;
      state.ws = null;
      state.subscribed = new Set();
      renderSubscriptions();
      setStatus("disconnected");
      scheduleReconnect();
    });
    // "error" is always followed by "close"; nothing to do here.
  }

  // Back online after a network change: try now instead of waiting.
  window.addEventListener("online", () => {
    if (state.ws === null && state.reconnectTimer !== null) {
      clearTimeout(state.reconnectTimer);
      state.reconnectTimer = null;
      state.attempt = 0;
      connect();
    }
  });

  window.wshubPage = { state, connect }; // for debugging in the console
  connect();
})();

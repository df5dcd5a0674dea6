// wshub.js: the browser client of a wshub hub (docs/client.md).
//
// One object per hub connection that keeps its place: it reconnects with
// capped exponential backoff and full jitter, subscribes again to the
// topics the app wants with `since` (the last seq seen and its epoch, per
// topic), tells the app per topic whether what it missed was recovered,
// and notices a dead connection with the protocol's ping. The wire format
// is docs/protocol.md; this file has no dependencies and no build step
// (the hub serves it at `<path>/client.js`).

/** Defaults of every option of `connect`, in milliseconds where timed. */
export const DEFAULTS = Object.freeze({
  topics: [],
  reconnectBaseMs: 500, // ceiling of the first retry's random delay
  reconnectMaxMs: 30000, // the ceiling stops doubling here
  pingIntervalMs: 20000, // ping when nothing was heard for this long
  pongTimeoutMs: 10000, // no frame this long after a ping: the link is dead
  connectTimeoutMs: 15000, // from `new WebSocket` to the `connected` answer
  retryRefused: false, // reconnect even after a close that refuses the client
  maxQueryChars: 4000, // topics beyond this go in a `subscribe` message
});

// How often the keepalive and connect deadlines are looked at. Browsers
// run a hidden tab's timers at most once a second (and Chrome, after five
// minutes hidden, once a minute), so deadlines are compared with the clock
// on every tick rather than counted in ticks: a late tick sees the time
// that really passed.
const TICK_MS = 1000;

// A connection that lasted this long was a good one: the next failure
// starts the backoff again from its first step. Shorter ones (a hub that
// accepts then drops the client) keep climbing, so they cannot loop fast.
const STABLE_MS = 5000;

// WebSocket.readyState of an open socket (the constant is not on every
// WebSocket implementation's class).
const OPEN = 1;

/**
 * The delay before reconnect attempt `attempt` (0 for the first): a random
 * number of milliseconds in [0, min(maxMs, baseMs * 2^attempt)), the "full
 * jitter" of exponential backoff, so that clients dropped together do not
 * come back together.
 */
export function backoffDelay(attempt, baseMs, maxMs, random = Math.random) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 52));
  return Math.floor(random() * ceiling);
}

/**
 * Whether a close means "this client is not wanted" rather than "try
 * again": 1008 (policy, e.g. the hub's "rate limit exceeded"), except the
 * hub's "slow consumer", which is a client that fell behind and recovers
 * by reconnecting; and 4400-4499, the HTTP 4xx statuses as application
 * close codes (4000 + status), which a proxy or an app may send.
 */
export function isRefusal(code, reason) {
  if (code === 1008) return reason !== "slow consumer";
  return code >= 4400 && code <= 4499;
}

/** The handshake URL: `base` with `topics` and `since` in its query, as
 * many topics as fit in `maxQueryChars` (the caller subscribes the rest by
 * message), and which topics it holds. */
export function handshakeUrl(base, topics, positions, maxQueryChars) {
  const url = new URL(base, globalThis.location?.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  url.hash = ""; // a WebSocket URL may not have one
  url.searchParams.delete("topics"); // this client says which topics
  url.searchParams.delete("since");
  const inQuery = [];
  const since = [];
  let length = url.search.length + "?topics=&since=".length;
  for (const topic of topics) {
    const pos = positions.get(topic);
    const item = pos && typeof pos.epoch === "string"
      ? encodeURIComponent(`${topic}:${pos.seq}:${pos.epoch}`) : "";
    const cost = encodeURIComponent(topic).length + 1 + (item ? item.length + 1 : 0);
    if (inQuery.length > 0 && length + cost > maxQueryChars) break;
    length += cost;
    inQuery.push(topic);
    if (item) since.push(item);
  }
  const query = url.search ? [url.search.slice(1)] : [];
  if (inQuery.length) query.push("topics=" + inQuery.map(encodeURIComponent).join(","));
  if (since.length) query.push("since=" + since.join(","));
  url.search = query.join("&");
  return { url: url.href, topics: inQuery };
}

/** Opens a connection to the hub at `url` (ws:, wss:, http:, https: or a
 * path of this page's origin) and keeps it open until `close()`. */
export function connect(url, options = {}) {
  return new Hub(url, options);
}

class Hub {
  #url;
  #opts;
  #WebSocket;
  #handlers = new Map(); // topic (or "*") -> Set of handlers
  #wanted = new Set(); // topics the app asked for
  #positions = new Map(); // topic -> {epoch, seq}: where the app is
  #asked = new Map(); // topic -> the position sent as `since`, until answered
  #replayUntil = new Map(); // topic -> last seq of a recovery being replayed
  #lastLive = new Map(); // topic -> seq of the last non-retained frame of this subscription
  #requested = new Map(); // topic -> "subscribe" | "unsubscribe" sent, not yet answered
  #subscribed = []; // the hub's subscription set, from its last answer
  #ws = null;
  #state = "connecting";
  #attempt = 0; // reconnect attempts since the last stable connection
  #retryTimer = null;
  #reconcileTimer = null;
  #tick = null;
  #openedAt = 0; // when the current connection's `connected` arrived (0: not yet)
  #startedAt = 0; // when the current attempt began (token, then socket)
  #lastHeard = 0; // when a frame last arrived
  #probeSentAt = null; // when the unanswered keepalive ping was sent
  #pings = new Map(); // ping id -> {resolve, reject, sentAt, timer}
  #refreshes = []; // refresh requests in the order sent: {resolve, reject}
  #generation = 0; // counts connection attempts; a late token is for an old one
  #nextPingId = 1;
  #listeners = [];

  constructor(url, options) {
    this.#url = String(url);
    this.#opts = { ...DEFAULTS, ...options };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("wshub.connect: no WebSocket here (pass options.WebSocket)");
    }
    handshakeUrl(this.#url, [], new Map(), 0); // a bad URL throws here, before any timer
    for (const topic of topicList(this.#opts.topics)) this.#wanted.add(topic);
    for (const [topic, pos] of Object.entries(options.since ?? {})) {
      if (isPosition(pos)) this.#positions.set(topic, { epoch: pos.epoch, seq: pos.seq });
    }
    this.#listen(globalThis, "online", () => this.#wake(true));
    this.#listen(globalThis, "offline", () => this.#wake(false));
    this.#listen(globalThis.document, "visibilitychange", () => {
      if (globalThis.document.visibilityState === "visible") this.#wake(true);
    });
    this.#listen(globalThis.document, "resume", () => this.#wake(true));
    this.#tick = setInterval(() => this.#onTick(), TICK_MS);
    this.#open();
  }

  /** "connecting", "open", "reconnecting" or "closed". */
  get state() { return this.#state; }
  /** The topics the app wants, sorted. */
  get topics() { return [...this.#wanted].sort(); }
  /** The hub's subscription set for this connection, from its last answer. */
  get subscribed() { return [...this.#subscribed]; }
  /** Where the app is on `topic`: the epoch and the last seq delivered. */
  position(topic) {
    const pos = this.#positions.get(topic);
    return pos ? { ...pos } : undefined;
  }

  /** Calls `handler(data, meta)` for each publication on `topic` ("*": on
   * every topic). Returns a function that removes it. */
  on(topic, handler) {
    if (typeof handler !== "function") throw new TypeError("wshub: handler must be a function");
    let set = this.#handlers.get(topic);
    if (!set) this.#handlers.set(topic, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  /** Adds topics to those the app wants; subscribes at once when open. */
  subscribe(topics) {
    for (const topic of topicList(topics)) this.#wanted.add(topic);
    this.#reconcile();
  }

  /** Removes topics: nothing more is delivered for them, and their
   * positions are forgotten (subscribing again starts afresh). */
  unsubscribe(topics) {
    for (const topic of topicList(topics)) {
      this.#wanted.delete(topic);
      this.#positions.delete(topic);
      this.#replayUntil.delete(topic);
      this.#lastLive.delete(topic);
    }
    this.#reconcile();
  }

  /** Sends a protocol ping; resolves with the round trip in milliseconds,
   * rejects when the connection is not open or no pong comes in time. */
  ping() {
    const id = this.#nextPingId++;
    return new Promise((resolve, reject) => {
      if (!this.#send({ type: "ping", id })) {
        reject(new Error("wshub: not connected"));
        return;
      }
      const timer = setTimeout(() => {
        this.#pings.delete(id);
        reject(new Error("wshub: no pong in time"));
      }, this.#opts.pongTimeoutMs);
      this.#pings.set(id, { resolve, reject, sentAt: Date.now(), timer });
    });
  }

  /** Sends a newer token for this connection (`{"type":"refresh"}`), so
   * that the hub does not close it at the current token's expiry; resolves
   * with the hub's `{exp, topics}`, rejects when it refuses the token. */
  refresh(token) {
    return new Promise((resolve, reject) => {
      if (!this.#send({ type: "refresh", token: String(token) })) {
        reject(new Error("wshub: not connected"));
        return;
      }
      this.#refreshes.push({ resolve, reject });
    });
  }

  /** Closes the connection for good (no reconnect). */
  close(code = 1000, reason = "closed by the app") {
    if (this.#state === "closed") return;
    this.#stop();
    this.#drop(code, reason);
    this.#setState({ state: "closed", code, reason });
  }

  // ---------------------------------------------------------- connection

  #open() {
    const { url, topics } = handshakeUrl(
      this.#url, this.topics, this.#positions, this.#opts.maxQueryChars);
    this.#asked.clear();
    for (const topic of topics) {
      const pos = this.#positions.get(topic);
      if (pos && typeof pos.epoch === "string") this.#asked.set(topic, { ...pos });
    }
    const generation = ++this.#generation;
    this.#startedAt = Date.now();
    this.#openedAt = 0;
    this.#setState({ state: "connecting", attempt: this.#attempt, url });
    if (this.#state === "closed") return; // closed by the status callback
    const { token } = this.#opts;
    if (typeof token !== "function") {
      this.#dial(url, token);
      return;
    }
    // A fresh token for every attempt: the last one may have expired.
    const current = () => generation === this.#generation && this.#state === "connecting";
    Promise.resolve().then(token).then(
      (value) => current() && this.#dial(url, value),
      (error) => current() && this.#retry(`token: ${error?.message ?? error}`, 1006));
  }

  #dial(url, token) {
    let ws;
    try {
      // Browsers cannot set headers: the token goes as a subprotocol,
      // beside "wshub", which the hub selects.
      ws = token ? new this.#WebSocket(url, ["wshub", `bearer.${token}`]) : new this.#WebSocket(url);
    } catch (error) {
      this.#retry(String(error?.message ?? error), 1006);
      return;
    }
    this.#ws = ws;
    ws.onmessage = (event) => this.#onMessage(event.data);
    ws.onclose = (event) => this.#onClose(event.code, event.reason);
  }

  #onClose(code, reason) {
    const opened = this.#openedAt !== 0;
    this.#drop();
    if (!opened && !reason) reason = "handshake failed";
    if (isRefusal(code, reason) && !this.#opts.retryRefused) {
      this.#stop();
      this.#setState({ state: "closed", code, reason });
      return;
    }
    this.#retry(reason || "connection lost", code);
  }

  // Forgets the current socket (closing it if asked) and what was pending
  // on it; the app's wanted topics and positions stay.
  #drop(code, reason) {
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = null;
      if (code !== undefined) {
        try { ws.close(code, reason); } catch { ws.close(); }
      }
    }
    for (const { reject, timer } of this.#pings.values()) {
      clearTimeout(timer);
      reject(new Error("wshub: connection closed"));
    }
    this.#pings.clear();
    for (const { reject } of this.#refreshes.splice(0)) reject(new Error("wshub: connection closed"));
    this.#asked.clear();
    this.#replayUntil.clear();
    this.#lastLive.clear();
    this.#requested.clear();
    this.#probeSentAt = null;
    clearTimeout(this.#reconcileTimer);
    this.#reconcileTimer = null;
    if (this.#subscribed.length) this.#setSubscribed([]);
  }

  // Gives up on a socket that has gone quiet (a dead link closes no
  // socket, so its close event may come minutes later, or never).
  #abandon(reason) {
    this.#drop(4000, reason);
    this.#retry(reason, 1006);
  }

  #retry(reason, code) {
    if (this.#openedAt && Date.now() - this.#openedAt >= STABLE_MS) this.#attempt = 0;
    this.#openedAt = 0;
    const delay = backoffDelay(
      this.#attempt, this.#opts.reconnectBaseMs, this.#opts.reconnectMaxMs);
    this.#attempt += 1;
    // Armed before the status goes out, so that a callback's close() stops it.
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#open();
    }, delay);
    this.#setState({ state: "reconnecting", delay, reason, code, attempt: this.#attempt });
  }

  // Stops every timer and browser listener (the end of this object).
  #stop() {
    clearInterval(this.#tick);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    for (const [target, type, fn] of this.#listeners) target.removeEventListener(type, fn);
    this.#listeners = [];
  }

  // The network came back (or went), the tab became visible, or a frozen
  // page resumed: the link may have died meanwhile, so check it now
  // instead of at the next keepalive; and a retry that is waiting is
  // made now, unless the browser has just said it is offline.
  #wake(retryNow) {
    if (this.#retryTimer !== null) {
      if (!retryNow) return;
      clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
      this.#open();
    } else if (this.#state === "open" && this.#probeSentAt === null) {
      this.#probe();
    }
  }

  #probe() {
    if (this.#send({ type: "ping" })) this.#probeSentAt = Date.now();
  }

  #onTick() {
    const now = Date.now();
    if (this.#state === "connecting") {
      if (now - this.#startedAt >= this.#opts.connectTimeoutMs) this.#abandon("connect timeout");
      return;
    }
    if (this.#state !== "open") return;
    if (this.#probeSentAt !== null) {
      if (now - this.#probeSentAt >= this.#opts.pongTimeoutMs) this.#abandon("ping timeout");
    } else if (now - this.#lastHeard >= this.#opts.pingIntervalMs) {
      this.#probe();
    }
  }

  // ------------------------------------------------------------- frames

  #onMessage(text) {
    this.#lastHeard = Date.now();
    this.#probeSentAt = null;
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return this.#error({ error: "invalid_frame", message: "a frame that is not JSON" });
    }
    switch (frame?.type) {
      case "message": return this.#onPublication(frame);
      case "connected": return this.#onConnected(frame);
      case "subscribed": return this.#onAnswer(frame);
      case "unsubscribed": return this.#setSubscribed(frame.topics ?? []);
      case "pong": return this.#onPong(frame);
      case "refreshed": return this.#onRefreshed(frame);
      case "error": return this.#onError(frame);
      default: return undefined; // a frame type of a later protocol version
    }
  }

  #onConnected(frame) {
    this.#openedAt = Date.now();
    const recovered = this.#onAnswer(frame);
    this.#setState({
      state: "open",
      topics: frame.topics ?? [],
      rejected: frame.rejected ?? [],
      recovered,
    });
    this.#reconcile();
  }

  // A `connected` or `subscribed` answer: the new subscription set, a
  // stream (epoch, seq) per newly subscribed topic, and for those asked
  // `since`, whether it was recovered. Returns {topic: recovered}.
  #onAnswer(frame) {
    const report = {};
    for (const [topic, stream] of Object.entries(frame.streams ?? {})) {
      if (!this.#wanted.has(topic) || !isPosition(stream)) continue; // unwanted: unsubscribed below
      const asked = this.#asked.get(topic);
      this.#asked.delete(topic);
      const ok = asked !== undefined && frame.recovered?.[topic] === true;
      if (ok) {
        // What was missed follows, up to the stream's newest seq.
        this.#positions.set(topic, asked);
        this.#lastLive.set(topic, asked.seq);
        if (stream.seq > asked.seq) this.#replayUntil.set(topic, stream.seq);
      } else {
        // Retained values come first, then live publications, of which
        // some may be numbered before the stream's seq (racing the
        // subscribe): nothing is below what this subscription saw yet.
        this.#positions.set(topic, { epoch: stream.epoch, seq: stream.seq });
        this.#lastLive.delete(topic);
      }
      if (asked === undefined) continue;
      report[topic] = ok;
      this.#callback("onRecovery", {
        topic,
        recovered: ok,
        epoch: stream.epoch,
        seq: stream.seq,
        missed: ok ? Math.max(0, stream.seq - asked.seq) : null,
        epochChanged: asked.epoch !== stream.epoch,
      });
    }
    const reasons = frame.reasons ?? {};
    for (const topic of frame.rejected ?? []) {
      this.#wanted.delete(topic);
      this.#error({ error: "rejected", topic, reason: reasons[topic] ?? "rejected",
        message: `the hub refused topic ${JSON.stringify(topic)}` });
    }
    this.#setSubscribed(frame.topics ?? []);
    return report;
  }

  #onPublication(frame) {
    const { topic, seq } = frame;
    if (!this.#wanted.has(topic)) return; // in flight before our unsubscribe
    const retained = frame.retained === true;
    if (!retained) {
      // The hub numbers one subscription's live frames in increasing order.
      const last = this.#lastLive.get(topic);
      if (last !== undefined && seq <= last) return; // seen already
      this.#lastLive.set(topic, seq);
    }
    const pos = this.#positions.get(topic);
    const until = this.#replayUntil.get(topic);
    const recovered = until !== undefined && seq <= until;
    if (recovered && seq >= until) this.#replayUntil.delete(topic);
    if (pos && seq > pos.seq) pos.seq = seq;
    else if (!pos) this.#positions.set(topic, { epoch: undefined, seq });
    const meta = { topic, seq, epoch: pos?.epoch, retained, recovered };
    this.#dispatch(topic, frame.data, meta);
    this.#dispatch("*", frame.data, meta);
  }

  #dispatch(key, data, meta) {
    for (const handler of this.#handlers.get(key) ?? []) {
      try {
        handler(data, meta);
      } catch (error) {
        // One failing handler must not stop the others or lose the place.
        if (this.#opts.onError) this.#error({ error: "handler", message: String(error), cause: error });
        else setTimeout(() => { throw error; });
      }
    }
  }

  #onPong(frame) {
    const waiting = this.#pings.get(frame.id);
    if (!waiting) return;
    this.#pings.delete(frame.id);
    clearTimeout(waiting.timer);
    waiting.resolve(Date.now() - waiting.sentAt);
  }

  // A newer token took: its `topics` claim applies at once, and the
  // subscriptions it no longer allows have ended (without `unsubscribed`).
  #onRefreshed(frame) {
    const topics = frame.topics ?? this.#subscribed;
    for (const topic of this.#subscribed) {
      if (topics.includes(topic) || !this.#wanted.has(topic)) continue;
      this.#wanted.delete(topic);
      this.#error({ error: "rejected", topic, reason: "not_allowed",
        message: `the refreshed token does not allow topic ${JSON.stringify(topic)}` });
    }
    this.#setSubscribed(topics);
    this.#refreshes.shift()?.resolve({ exp: frame.exp, topics: [...topics].sort() });
  }

  #onError(frame) {
    if (frame.error === "invalid_token") {
      this.#refreshes.shift()?.reject(new Error(`wshub: ${frame.message ?? "token refused"}`));
    }
    this.#error({ error: String(frame.error), message: String(frame.message ?? "") });
    if (frame.error === "rate_limited") {
      // The dropped message may have been a subscribe: compare again later.
      this.#requested.clear();
      clearTimeout(this.#reconcileTimer);
      this.#reconcileTimer = setTimeout(() => {
        this.#reconcileTimer = null;
        this.#reconcile();
      }, TICK_MS);
    }
  }

  // ------------------------------------------------------ subscriptions

  // Makes the hub's set equal to the wanted one: needed after every
  // connect (topics that did not fit in the URL; with an allow-list, a
  // handshake without allowed topics is given all of them).
  #reconcile() {
    if (this.#state !== "open") return;
    const current = new Set(this.#subscribed);
    const sent = (topic, kind) => this.#requested.get(topic) === kind;
    const add = this.topics.filter((t) => !current.has(t) && !sent(t, "subscribe"));
    const remove = this.#subscribed.filter((t) => !this.#wanted.has(t) && !sent(t, "unsubscribe"));
    if (add.length) {
      const since = {};
      for (const topic of add) {
        const pos = this.#positions.get(topic);
        if (pos && typeof pos.epoch === "string") {
          since[topic] = { seq: pos.seq, epoch: pos.epoch };
          this.#asked.set(topic, { ...pos });
        }
      }
      const message = { type: "subscribe", topics: add };
      if (Object.keys(since).length) message.since = since;
      if (this.#send(message)) add.forEach((t) => this.#requested.set(t, "subscribe"));
    }
    if (remove.length && this.#send({ type: "unsubscribe", topics: remove })) {
      remove.forEach((t) => this.#requested.set(t, "unsubscribe"));
    }
  }

  #setSubscribed(topics) {
    this.#subscribed = [...topics].sort();
    for (const [topic, kind] of [...this.#requested]) {
      // Answered: a subscribe once the topic is in the set (a refusal has
      // removed it from the wanted ones already), an unsubscribe once not.
      const done = this.#subscribed.includes(topic) === (kind === "subscribe");
      if (done || (kind === "subscribe" && !this.#wanted.has(topic))) this.#requested.delete(topic);
    }
    this.#callback("onSubscribed", this.subscribed);
    this.#reconcile();
  }

  // ------------------------------------------------------------ helpers

  #send(message) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify(message));
    return true;
  }

  #setState(status) {
    this.#state = status.state;
    this.#callback("onStatus", status);
  }

  #error(error) {
    this.#callback("onError", error);
  }

  #callback(name, value) {
    const fn = this.#opts[name];
    if (typeof fn !== "function") return;
    try {
      fn(value);
    } catch (error) {
      setTimeout(() => { throw error; });
    }
  }

  #listen(target, type, fn) {
    if (!target?.addEventListener) return;
    target.addEventListener(type, fn);
    this.#listeners.push([target, type, fn]);
  }
}

function isPosition(pos) {
  return typeof pos?.epoch === "string" && Number.isSafeInteger(pos.seq) && pos.seq >= 0;
}

function topicList(topics) {
  if (typeof topics === "string") topics = [topics];
  if (!Array.isArray(topics) || !topics.every((t) => typeof t === "string")) {
    throw new TypeError("wshub: topics must be an array of strings");
  }
  return topics.filter((t) => t.length > 0);
}

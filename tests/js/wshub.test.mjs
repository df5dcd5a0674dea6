// Unit tests of wshub.js (python/wshub/client/) in Node's built-in test
// runner: backoff, dispatch, recovery bookkeeping, keepalive and reconnect
// decisions, with the browser's WebSocket replaced by a scripted socket and
// the clock and timers by a manual one. The same file end to end, in
// Chromium against a real hub: tests/test_browser_client.py.
//
//     node --test tests/js/*.test.mjs      (Node 18 or later)

import { test, mock, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import * as wshub from "../../python/wshub/client/wshub.js";

const { connect, backoffDelay, isRefusal, handshakeUrl, DEFAULTS } = wshub;

/** The browser's side of one connection, driven by the test. */
class ScriptedSocket {
  static opened = [];

  constructor(url, protocols) {
    this.url = new URL(url);
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    ScriptedSocket.opened.push(this);
  }

  send(text) {
    assert.equal(this.readyState, 1, "send on a socket that is not open");
    this.sent.push(JSON.parse(text));
  }

  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  /** The hub accepts: the socket opens and `connected` arrives. */
  accept(connected) {
    this.readyState = 1;
    this.frame({ type: "connected", rejected: [], ...connected });
  }

  frame(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  sentOf(type) {
    return this.sent.filter((m) => m.type === type);
  }
}

const last = () => ScriptedSocket.opened.at(-1);

/** The page's clock and timers, moved by the test: `elapse(ms)` runs,
 * in time order, every timer due meanwhile; `holdBack(ms)` moves the clock
 * without running any, as a browser does to a hidden tab's timers, which
 * then fire once each (not once per missed period). */
const clock = {
  now: 0,
  timers: new Map(), // id -> {fn, at, every}
  nextId: 1,
  saved: null,

  install() {
    this.now = 1_000_000;
    this.timers.clear();
    this.saved = { setTimeout, clearTimeout, setInterval, clearInterval };
    globalThis.setTimeout = (fn, ms = 0) => this.add(fn, ms, 0);
    globalThis.setInterval = (fn, ms = 0) => this.add(fn, ms, Math.max(1, ms));
    globalThis.clearTimeout = globalThis.clearInterval = (id) => this.timers.delete(id);
    mock.method(Date, "now", () => this.now);
  },

  uninstall() {
    Object.assign(globalThis, this.saved);
  },

  add(fn, ms, every) {
    const id = this.nextId++;
    this.timers.set(id, { fn, at: this.now + Math.max(0, ms), every });
    return id;
  },

  elapse(ms) {
    const end = this.now + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
      }
      if (next === null) break;
      const [id, timer] = next;
      this.now = Math.max(this.now, timer.at);
      if (timer.every) timer.at = this.now + timer.every;
      else this.timers.delete(id);
      timer.fn();
    }
    this.now = end;
  },

  holdBack(ms) {
    this.now += ms;
    for (const timer of this.timers.values()) timer.at = Math.min(timer.at, this.now);
  },
};

const elapse = (ms) => clock.elapse(ms);
// Lets every pending promise callback run (setImmediate is not the page's timers).
const settle = () => new Promise((resolve) => setImmediate(resolve));

// The page's window, for the online/offline events.
const win = new EventTarget();

beforeEach(() => {
  ScriptedSocket.opened = [];
  clock.install();
  globalThis.addEventListener = win.addEventListener.bind(win);
  globalThis.removeEventListener = win.removeEventListener.bind(win);
});

afterEach(() => {
  clock.uninstall();
  mock.restoreAll();
  delete globalThis.addEventListener;
  delete globalThis.removeEventListener;
});

function open(options = {}) {
  const record = { status: [], recovery: [], errors: [], subscribed: [], messages: [] };
  const hub = connect("ws://127.0.0.1:9/api/ws", {
    WebSocket: ScriptedSocket,
    onStatus: (s) => record.status.push(s),
    onRecovery: (r) => record.recovery.push(r),
    onError: (e) => record.errors.push(e),
    onSubscribed: (t) => record.subscribed.push(t),
    ...options,
  });
  hub.on("*", (data, meta) => record.messages.push({ data, ...meta }));
  return { hub, record };
}

const stream = (epoch, seq) => ({ epoch, seq });
const message = (topic, seq, data = seq, extra = {}) => ({ type: "message", topic, seq, data, ...extra });

// ------------------------------------------------------------- backoff

test("backoff: full jitter under a ceiling that doubles up to the cap", () => {
  const top = () => 0.999999;
  const ceilings = [...Array(10).keys()].map((n) => backoffDelay(n, 500, 30000, top));
  assert.deepEqual(ceilings, [499, 999, 1999, 3999, 7999, 15999, 29999, 29999, 29999, 29999]);
  assert.equal(backoffDelay(3, 500, 30000, () => 0), 0);
  assert.equal(backoffDelay(3, 500, 30000, () => 0.5), 2000);
  // No overflow to Infinity or NaN, however many attempts.
  assert.equal(backoffDelay(5000, 500, 30000, top), 29999);
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(i % 12, 100, 5000);
    assert.ok(Number.isInteger(d) && d >= 0 && d < Math.min(5000, 100 * 2 ** (i % 12)), d);
  }
});

test("refusals: 1008 but slow consumer, and 4400-4499", () => {
  assert.equal(isRefusal(1008, "rate limit exceeded"), true);
  assert.equal(isRefusal(1008, "slow consumer"), false);
  assert.equal(isRefusal(4403, "forbidden"), true);
  for (const code of [1000, 1001, 1006, 1009, 1011, 4000, 4399, 4500]) {
    assert.equal(isRefusal(code, ""), false, code);
  }
});

test("handshake URL: topics and since in the query, within the budget", () => {
  const positions = new Map([["odds", stream("E 1", 41)], ["news", { epoch: undefined, seq: 3 }]]);
  const { url, topics } = handshakeUrl("http://h:1/api/ws?token=x#frag", ["news", "odds"], positions, 4000);
  const parsed = new URL(url);
  assert.equal(parsed.protocol, "ws:");
  assert.equal(parsed.hash, "");
  assert.equal(parsed.searchParams.get("token"), "x");
  assert.equal(parsed.searchParams.get("topics"), "news,odds");
  // An epoch is needed for a since; the hub decodes the query.
  assert.equal(parsed.searchParams.get("since"), "odds:41:E 1");
  assert.deepEqual(topics, ["news", "odds"]);

  const many = [...Array(100).keys()].map((i) => `topic-${String(i).padStart(3, "0")}`);
  const cut = handshakeUrl("wss://h/ws", many, new Map(), 200);
  assert.ok(cut.topics.length > 5 && cut.topics.length < 100, cut.topics.length);
  assert.ok(new URL(cut.url).search.length <= 200);
  assert.equal(handshakeUrl("wss://h/ws", [], new Map(), 200).url, "wss://h/ws");
});

// ------------------------------------------------------------ dispatch

test("dispatch: by topic, with seq, epoch, retained and recovered in meta", () => {
  const { hub, record } = open({ topics: ["odds", "news"] });
  const odds = [];
  const off = hub.on("odds", (data, meta) => odds.push([data, meta.seq]));
  assert.equal(last().url.searchParams.get("topics"), "news,odds");
  last().accept({ topics: ["news", "odds"], streams: { odds: stream("E", 4), news: stream("N", 0) } });
  assert.equal(hub.state, "open");
  assert.deepEqual(record.status.map((s) => s.state), ["connecting", "open"]);

  last().frame(message("odds", 3, { v: 3 }, { retained: true })); // the current value
  last().frame(message("odds", 5, { v: 5 }));
  last().frame(message("news", 1, "n1"));
  last().frame(message("odds", 5, { v: 5 })); // a repeat is not delivered twice
  assert.deepEqual(odds, [[{ v: 3 }, 3], [{ v: 5 }, 5]]);
  assert.deepEqual(record.messages.map((m) => [m.topic, m.seq, m.epoch, m.retained, m.recovered]), [
    ["odds", 3, "E", true, false],
    ["odds", 5, "E", false, false],
    ["news", 1, "N", false, false],
  ]);
  assert.deepEqual(hub.position("odds"), { epoch: "E", seq: 5 });

  off();
  last().frame(message("odds", 6));
  assert.equal(odds.length, 2);
  assert.equal(record.messages.length, 4);
  hub.close();
});

test("retained values, then live ones racing the subscribe, are all delivered", () => {
  // After the answer (stream seq 10), the values kept per key, oldest seq
  // first, then live publications, some numbered before 10 whose value
  // was not kept yet (docs/protocol.md, Retained values).
  const { hub, record } = open({ topics: ["odds"] });
  last().accept({ topics: ["odds"], streams: { odds: stream("E", 10) } });
  last().frame(message("odds", 8, "A@8", { retained: true }));
  last().frame(message("odds", 10, "B@10", { retained: true }));
  last().frame(message("odds", 9, "A@9"));
  last().frame(message("odds", 11, "B@11"));
  last().frame(message("odds", 11, "B@11")); // a repeat
  assert.deepEqual(record.messages.map((m) => [m.data, m.retained]),
    [["A@8", true], ["B@10", true], ["A@9", false], ["B@11", false]]);
  assert.deepEqual(hub.position("odds"), { epoch: "E", seq: 11 });
  hub.close();
});

test("a handler that throws does not stop the others nor lose the place", () => {
  const { hub, record } = open({ topics: ["a"] });
  const seen = [];
  hub.on("a", () => { throw new Error("boom"); });
  hub.on("a", (data) => seen.push(data));
  last().accept({ topics: ["a"], streams: { a: stream("E", 0) } });
  last().frame(message("a", 1));
  last().frame(message("a", 2));
  assert.deepEqual(seen, [1, 2]);
  assert.deepEqual(record.errors.map((e) => e.error), ["handler", "handler"]);
  assert.equal(hub.position("a").seq, 2);
  hub.close();
});

test("the hub's extra topics are unsubscribed and not delivered", () => {
  // With an allow-list, a handshake that asks for no allowed topic is
  // given all of them.
  const { hub, record } = open({ topics: [] });
  last().accept({ topics: ["a", "b"], streams: { a: stream("E", 0), b: stream("E", 0) } });
  assert.deepEqual(last().sentOf("unsubscribe"), [{ type: "unsubscribe", topics: ["a", "b"] }]);
  last().frame(message("a", 1)); // in flight before the unsubscribe
  assert.equal(record.messages.length, 0);
  last().frame({ type: "unsubscribed", topics: [] });
  assert.deepEqual(record.subscribed.at(-1), []);
  assert.deepEqual(hub.subscribed, []);
  hub.close();
});

test("subscribe and unsubscribe while open; refused topics are reported", () => {
  const { hub, record } = open({ topics: ["a"] });
  last().accept({ topics: ["a"], streams: { a: stream("E", 7) } });
  hub.subscribe(["b", "bad name"]);
  assert.deepEqual(last().sentOf("subscribe"), [{ type: "subscribe", topics: ["b", "bad name"] }]);
  last().frame({ type: "subscribed", topics: ["a", "b"], rejected: ["bad name"],
    reasons: { "bad name": "invalid_name" }, streams: { b: stream("F", 2) } });
  assert.deepEqual(hub.topics, ["a", "b"]);
  assert.deepEqual(record.errors, [{ error: "rejected", topic: "bad name", reason: "invalid_name",
    message: 'the hub refused topic "bad name"' }]);
  assert.deepEqual(hub.position("b"), { epoch: "F", seq: 2 });

  hub.unsubscribe("a");
  assert.deepEqual(last().sentOf("unsubscribe"), [{ type: "unsubscribe", topics: ["a"] }]);
  last().frame(message("a", 8)); // before the answer: dropped all the same
  last().frame({ type: "unsubscribed", topics: ["b"] });
  assert.equal(record.messages.length, 0);
  assert.equal(hub.position("a"), undefined);
  // Subscribing again starts afresh: no since for a topic left.
  hub.subscribe("a");
  assert.deepEqual(last().sentOf("subscribe").at(-1), { type: "subscribe", topics: ["a"] });
  hub.close();
});

test("unsubscribing while the subscribe is unanswered still ends unsubscribed", () => {
  const { hub } = open({ topics: [] });
  last().accept({ topics: [] });
  hub.subscribe("x");
  hub.unsubscribe("x");
  last().frame({ type: "subscribed", topics: ["x"], rejected: [], streams: { x: stream("E", 0) } });
  assert.deepEqual(last().sentOf("unsubscribe"), [{ type: "unsubscribe", topics: ["x"] }]);
  hub.close();
});

test("a rate-limited subscribe is sent again", () => {
  const { hub } = open({ topics: [] });
  last().accept({ topics: [] });
  hub.subscribe("x");
  last().frame({ type: "error", error: "rate_limited", message: "slow down" });
  elapse(1500);
  assert.equal(last().sentOf("subscribe").length, 2);
  hub.close();
});

test("ping() resolves with the round trip", async () => {
  const { hub } = open();
  await assert.rejects(hub.ping(), /not connected/);
  last().accept({ topics: [] });
  const rtt = hub.ping();
  const { id } = last().sentOf("ping").at(-1);
  clock.now += 42;
  last().frame({ type: "pong", id });
  assert.equal(await rtt, 42);
  const lost = hub.ping();
  last().drop();
  await assert.rejects(lost, /connection closed/);
  hub.close();
});

// ----------------------------------------------------------- reconnect

test("reconnects with since and reports the recovery; replays are marked", () => {
  mock.method(Math, "random", () => 0.5);
  const { hub, record } = open({ topics: ["odds", "news"], reconnectBaseMs: 1000 });
  last().accept({ topics: ["news", "odds"], streams: { odds: stream("E", 40), news: stream("N", 7) } });
  last().frame(message("odds", 41));
  last().drop(1001, "server shutting down");
  assert.deepEqual(record.status.at(-1),
    { state: "reconnecting", delay: 500, reason: "server shutting down", code: 1001, attempt: 1 });
  assert.deepEqual(record.subscribed.at(-1), []);
  elapse(499);
  assert.equal(ScriptedSocket.opened.length, 1);
  elapse(1);
  assert.equal(ScriptedSocket.opened.length, 2);
  assert.equal(last().url.searchParams.get("since"), "news:7:N,odds:41:E");

  last().accept({ topics: ["news", "odds"], streams: { odds: stream("E", 43), news: stream("N2", 1) },
    recovered: { odds: true, news: false } });
  assert.deepEqual(record.status.at(-1).recovered, { odds: true, news: false });
  assert.deepEqual(record.recovery, [
    { topic: "odds", recovered: true, epoch: "E", seq: 43, missed: 2, epochChanged: false },
    { topic: "news", recovered: false, epoch: "N2", seq: 1, missed: null, epochChanged: true },
  ]);
  last().frame(message("odds", 42));
  last().frame(message("odds", 43));
  last().frame(message("odds", 44));
  last().frame(message("news", 2));
  assert.deepEqual(record.messages.slice(1).map((m) => [m.topic, m.seq, m.recovered]),
    [["odds", 42, true], ["odds", 43, true], ["odds", 44, false], ["news", 2, false]]);
  assert.deepEqual(hub.position("news"), { epoch: "N2", seq: 2 });
  hub.close();
});

test("a recovery asked through subscribe (topics past the query budget)", () => {
  const topics = [...Array(40).keys()].map((i) => `t${String(i).padStart(2, "0")}`);
  const since = Object.fromEntries(topics.map((t) => [t, stream("E", 5)]));
  const { hub, record } = open({ topics, since, maxQueryChars: 100 });
  const inQuery = last().url.searchParams.get("topics").split(",");
  assert.ok(inQuery.length < topics.length);
  last().accept({ topics: inQuery, streams: Object.fromEntries(inQuery.map((t) => [t, stream("E", 5)])),
    recovered: Object.fromEntries(inQuery.map((t) => [t, true])) });
  const [sub] = last().sentOf("subscribe");
  const rest = topics.filter((t) => !inQuery.includes(t));
  assert.deepEqual(sub.topics, rest);
  assert.deepEqual(sub.since, Object.fromEntries(rest.map((t) => [t, { seq: 5, epoch: "E" }])));
  last().frame({ type: "subscribed", topics, rejected: [],
    streams: Object.fromEntries(rest.map((t) => [t, stream("E", 5)])),
    recovered: Object.fromEntries(rest.map((t) => [t, true])) });
  assert.equal(record.recovery.length, 40);
  assert.ok(record.recovery.every((r) => r.recovered && r.missed === 0));
  hub.close();
});

test("backoff grows while the hub stays away, and restarts after a stable connection", () => {
  mock.method(Math, "random", () => 0.999);
  const { hub, record } = open({ reconnectBaseMs: 100, reconnectMaxMs: 1000 });
  for (let i = 0; i < 6; i++) {
    last().drop(); // refused before any `connected`
    const status = record.status.at(-1);
    assert.equal(status.reason, "handshake failed");
    elapse(status.delay);
  }
  const delays = record.status.filter((s) => s.state === "reconnecting").map((s) => s.delay);
  assert.deepEqual(delays, [99, 199, 399, 799, 999, 999]);
  last().accept({ topics: [] });
  elapse(6000);
  last().drop();
  assert.equal(record.status.at(-1).delay, 99);
  hub.close();
});

test("no reconnect after a refusal unless asked; slow consumers come back", () => {
  const refused = open({ topics: ["a"] });
  last().accept({ topics: ["a"] });
  last().drop(1008, "rate limit exceeded");
  assert.deepEqual(refused.record.status.at(-1), { state: "closed", code: 1008, reason: "rate limit exceeded" });
  elapse(60_000);
  assert.equal(ScriptedSocket.opened.length, 1);

  const retried = open({ topics: ["a"], retryRefused: true });
  last().accept({ topics: ["a"] });
  last().drop(1008, "rate limit exceeded");
  assert.equal(retried.record.status.at(-1).state, "reconnecting");

  const slow = open({ topics: ["a"] });
  last().accept({ topics: ["a"] });
  last().drop(1008, "slow consumer");
  assert.equal(slow.record.status.at(-1).state, "reconnecting");
  retried.hub.close();
  slow.hub.close();
});

test("the browser's online event retries at once", () => {
  const { hub, record } = open({ reconnectBaseMs: 60_000, reconnectMaxMs: 60_000 });
  mock.method(Math, "random", () => 0.9);
  last().drop();
  assert.equal(record.status.at(-1).delay, 54_000);
  win.dispatchEvent(new Event("offline"));
  assert.equal(ScriptedSocket.opened.length, 1);
  win.dispatchEvent(new Event("online"));
  assert.equal(ScriptedSocket.opened.length, 2);
  hub.close();
  // Closed: the listeners are gone.
  win.dispatchEvent(new Event("online"));
  assert.equal(ScriptedSocket.opened.length, 2);
});

test("close() ends everything: no timer, no reconnect", () => {
  const { hub, record } = open({ topics: ["a"] });
  last().accept({ topics: ["a"] });
  hub.close();
  assert.deepEqual(last().closedWith, { code: 1000, reason: "closed by the app" });
  assert.deepEqual(record.status.at(-1), { state: "closed", code: 1000, reason: "closed by the app" });
  last().drop(1000); // the socket's own close event, after ours
  elapse(120_000);
  assert.equal(ScriptedSocket.opened.length, 1);
  assert.equal(hub.state, "closed");
});

test("close() from a status callback stops the reconnect it reports", () => {
  const hub = connect("ws://127.0.0.1:9/api/ws", {
    WebSocket: ScriptedSocket,
    onStatus: (s) => { if (s.state === "reconnecting") hub.close(); },
  });
  last().drop();
  elapse(120_000);
  assert.equal(ScriptedSocket.opened.length, 1);
  assert.equal(hub.state, "closed");
  assert.equal(clock.timers.size, 0);
});

test("a bad URL or bad topics throw at once and leave nothing running", () => {
  assert.throws(() => connect("not a url", { WebSocket: ScriptedSocket }), TypeError);
  assert.throws(() => connect("ws://h/ws", { WebSocket: ScriptedSocket, topics: [1] }), TypeError);
  assert.equal(clock.timers.size, 0);
  assert.equal(ScriptedSocket.opened.length, 0);
});

// -------------------------------------------------------------- tokens

test("a token goes as a subprotocol; a function gives a fresh one per attempt", async () => {
  const fixed = open({ token: "t0" });
  assert.deepEqual(last().protocols, ["wshub", "bearer.t0"]);
  fixed.hub.close();

  const tokens = ["t1", "t2"];
  const { hub, record } = open({ topics: ["a"], token: async () => tokens.shift() });
  await settle(); // the token function's promise
  assert.deepEqual(last().protocols, ["wshub", "bearer.t1"]);
  last().accept({ topics: ["a"], streams: { a: stream("E", 3) } });
  last().frame(message("a", 4));
  // At the token's exp the hub closes with 4001: not a refusal.
  last().drop(4001, "token expired");
  assert.equal(record.status.at(-1).state, "reconnecting");
  elapse(record.status.at(-1).delay);
  await settle();
  assert.equal(ScriptedSocket.opened.length, 3);
  assert.deepEqual(last().protocols, ["wshub", "bearer.t2"]);
  assert.equal(last().url.searchParams.get("since"), "a:4:E");
  hub.close();
});

test("a token function that fails is a failed attempt", async () => {
  const { hub, record } = open({ token: () => { throw new Error("logged out"); } });
  await settle();
  assert.equal(ScriptedSocket.opened.length, 0);
  assert.equal(record.status.at(-1).reason, "token: logged out");
  hub.close();
});

test("refresh(): the answer, a refusal, and the topics a newer token no longer allows", async () => {
  const { hub, record } = open({ topics: ["a", "b"], token: "t0" });
  last().accept({ topics: ["a", "b"], streams: { a: stream("E", 0), b: stream("E", 0) } });
  const refused = hub.refresh("bad");
  assert.deepEqual(last().sentOf("refresh"), [{ type: "refresh", token: "bad" }]);
  last().frame({ type: "error", error: "invalid_token", message: "token_signature" });
  await assert.rejects(refused, /token_signature/);
  const taken = hub.refresh("t1");
  last().frame({ type: "refreshed", exp: 1767225600, topics: ["b"] });
  assert.deepEqual(await taken, { exp: 1767225600, topics: ["b"] });
  assert.deepEqual(hub.topics, ["b"]);
  assert.deepEqual(hub.subscribed, ["b"]);
  assert.equal(record.errors.at(-1).topic, "a");
  assert.equal(last().sentOf("subscribe").length, 0); // not asked for again
  hub.close();
});

// ----------------------------------------------------------- keepalive

test("keepalive: a quiet link is pinged, a dead one abandoned", () => {
  const { hub, record } = open({ pingIntervalMs: 20_000, pongTimeoutMs: 10_000 });
  last().accept({ topics: [] });
  elapse(19_000);
  assert.equal(last().sentOf("ping").length, 0);
  elapse(1_000);
  assert.equal(last().sentOf("ping").length, 1);
  last().frame({ type: "pong" }); // alive
  elapse(19_000);
  assert.equal(last().sentOf("ping").length, 1);
  elapse(1_000);
  assert.equal(last().sentOf("ping").length, 2);
  elapse(9_000);
  assert.equal(hub.state, "open");
  elapse(1_000);
  assert.equal(record.status.at(-1).reason, "ping timeout");
  assert.deepEqual(ScriptedSocket.opened[0].closedWith, { code: 4000, reason: "ping timeout" });
  hub.close();
});

test("keepalive: publications count as life, so a busy link is never pinged", () => {
  const { hub } = open({ topics: ["a"], pingIntervalMs: 5_000 });
  last().accept({ topics: ["a"], streams: { a: stream("E", 0) } });
  for (let seq = 1; seq <= 30; seq++) {
    elapse(1_000);
    last().frame(message("a", seq));
  }
  assert.equal(last().sentOf("ping").length, 0);
  hub.close();
});

test("keepalive in a throttled background tab: one late tick a minute still finds a dead link", () => {
  // Chrome runs a tab's timers once a minute after five minutes hidden:
  // no tick for 60 s, then one. Deadlines are read from the clock.
  const { hub, record } = open({ pingIntervalMs: 20_000, pongTimeoutMs: 10_000 });
  last().accept({ topics: [] });
  const lateTick = () => { clock.holdBack(60_000); elapse(0); };
  lateTick();
  assert.equal(last().sentOf("ping").length, 1);
  lateTick();
  assert.equal(record.status.at(-1).reason, "ping timeout");
  assert.equal(ScriptedSocket.opened[0].closedWith.code, 4000);
  hub.close();
});

test("coming back to the tab checks the link at once", () => {
  const doc = new EventTarget();
  doc.visibilityState = "hidden";
  globalThis.document = doc;
  try {
    const { hub } = open({ pingIntervalMs: 20_000 });
    last().accept({ topics: [] });
    doc.visibilityState = "visible";
    doc.dispatchEvent(new Event("visibilitychange"));
    assert.equal(last().sentOf("ping").length, 1);
    hub.close();
  } finally {
    delete globalThis.document;
  }
});

test("a handshake that hangs is given up after connectTimeoutMs", () => {
  const { hub, record } = open({ connectTimeoutMs: 15_000 });
  elapse(14_000);
  assert.equal(hub.state, "connecting");
  elapse(1_000);
  assert.deepEqual(record.status.at(-1).reason, "connect timeout");
  assert.ok(ScriptedSocket.opened[0].closedWith);
  hub.close();
});

// ---------------------------------------------------------------- types

test("wshub.d.ts declares every export and every option", () => {
  const dts = readFileSync(new URL("../../python/wshub/client/wshub.d.ts", import.meta.url), "utf8");
  for (const name of Object.keys(wshub)) {
    assert.match(dts, new RegExp(`export (const|function) ${name}\\b`), name);
  }
  const options = dts.match(/export interface Options \{([\s\S]*?)\n\}/)[1];
  const declared = [...options.matchAll(/^\s+(\w+)\?:/gm)].map((m) => m[1]).sort();
  const known = [...Object.keys(DEFAULTS), "since", "token", "onStatus", "onRecovery", "onSubscribed",
    "onError", "WebSocket"].sort();
  assert.deepEqual(declared, known);
});

// Node.js peer: npm `ws` WebSocketServer with perMessageDeflate off; a publication
// is sent to every subscriber of the topic with client.send(text) (ws has no
// built-in broadcast). Same CLI / stdin control / feedback as the Python servers
// (see _common.py). `--deflate 1` turns ws's perMessageDeflate on (level 6,
// threshold 256 B as wshub's defaults, ws's other defaults: context takeover
// both ways, so each delivery is compressed on its own connection's stream).
'use strict';
const path = require('path');
const dgram = require('dgram');
const readline = require('readline');
let WebSocket;
try {
  WebSocket = require('ws');
} catch (e) {
  WebSocket = require(path.join(__dirname, '..', 'node_modules', 'ws'));
}

function parseArgs(argv) {
  const a = { port: 0, topic: 'bench', payload: 100, 'payload-kind': 'pad', deflate: 0, mode: 'closed',
    window: 64, rate: 1000, count: 0, calls: 500, runs: 11, settle: 0.3 };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '');
    const v = argv[++i];
    if (!(k in a)) throw new Error('unknown option --' + k);
    a[k] = typeof a[k] === 'number' ? Number(v) : v;
  }
  if (a.mode === 'burst' && !(a.count > 0)) throw new Error('--mode burst needs --count');
  if (a['payload-kind'] !== 'pad' && a['payload-kind'] !== 'json') throw new Error('--payload-kind pad|json');
  return a;
}

const args = parseArgs(process.argv);
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');

// ns since the epoch with sub-microsecond resolution
const originNs = BigInt(Math.round(performance.timeOrigin * 1e6));
const nowNs = () => originNs + BigInt(Math.round(performance.now() * 1e6));

// _common.py's markets_json(), the same bytes: "markets":[...] of about `size` bytes
function marketsJson(size) {
  let x = 12345;
  const rnd = (n) => { x = (x * 48271) % 2147483647; return x % n; };
  const statuses = ['open', 'open', 'open', 'suspended', 'closed'];
  const items = [];
  let used = '"markets":[]'.length;
  for (let i = 0; ; i++) {
    const odds = [];
    for (let k = 0; k < 3; k++) {
      const whole = 1 + rnd(9);
      odds.push(whole + '.' + String(rnd(100)).padStart(2, '0'));
    }
    const id = 100000 + i * 7 + rnd(7);
    const home = rnd(60);
    const away = rnd(60);
    const status = statuses[rnd(5)];
    const volume = rnd(1000000);
    const item = '{"id":' + id + ',"event":"Team ' + home + ' v Team ' + away + '","market":"match-odds","status":"' +
      status + '","odds":[' + odds.join(',') + '],"volume":' + volume + '}';
    if (items.length && used + item.length + 1 > size) break;
    items.push(item);
    used += item.length + (items.length > 1 ? 1 : 0);
  }
  return '"markets":[' + items.join(',') + ']';
}

const skeleton = '{"t":1700000000000000000,"seq":100000,"pad":""}'.length;
const pad = 'x'.repeat(Math.max(0, args.payload - skeleton));
const body = args['payload-kind'] === 'json'
  ? marketsJson(args.payload - skeleton + '"pad":""'.length)
  : '"pad":"' + pad + '"';
const build = (seq, t) => '{"t":' + t + ',"seq":' + seq + ',' + body + '}';

const subs = new Map(); // topic -> Set<WebSocket>
const perMessageDeflate = Number(args.deflate)
  ? { threshold: 256, zlibDeflateOptions: { level: 6 } }
  : false;
const wss = new WebSocket.Server({ host: '127.0.0.1', port: args.port, path: '/api/ws', perMessageDeflate });

wss.on('connection', (ws, req) => {
  const q = new URL(req.url, 'http://x').searchParams.get('topics');
  let topics = (q || '').split(',').filter(Boolean);
  if (topics.length === 0) topics = [args.topic];
  for (const t of topics) {
    if (!subs.has(t)) subs.set(t, new Set());
    subs.get(t).add(ws);
  }
  ws.on('close', () => { for (const t of topics) subs.get(t).delete(ws); });
  ws.on('error', () => {});
  ws.send('{"type":"connected","topics":' + JSON.stringify(topics.slice().sort()) + ',"rejected":[]}');
});

let published = 0;
let tGo = null;
let delivered = 0n;
let wake = null;

function publishOne(t) {
  published += 1;
  const text = build(published, t);
  const s = subs.get(args.topic);
  if (s) for (const ws of s) if (ws.readyState === 1) ws.send(text);
}

// cost mode (see _common.py): time --calls publish calls, --runs times
async function measureCost() {
  const text = build(1, nowNs());
  const s = subs.get(args.topic) || new Set();
  const publish = () => { for (const ws of s) if (ws.readyState === 1) ws.send(text); };
  const perCall = [];
  for (let r = 0; r < args.runs; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < args.calls; i++) publish();
    perCall.push(Number(process.hrtime.bigint() - t0) / args.calls);
    await new Promise((res) => setTimeout(res, args.settle * 1000));
  }
  emit({ event: 'cost', ns_per_call: perCall, calls: args.calls });
}

function startPublishing() {
  if (args.mode === 'cost') { measureCost(); return; }
  const limit = args.count > 0 ? args.count : Infinity;
  const t0 = nowNs();
  if (args.mode === 'rate') {
    const periodNs = 1e9 / args.rate;
    const tick = () => {
      const now = nowNs();
      while (published < limit) {
        const due = t0 + BigInt(Math.round(published * periodNs));
        if (due > now) break;
        publishOne(due);
      }
      if (published < limit) {
        const due = t0 + BigInt(Math.round(published * periodNs));
        const waitMs = Number(due - nowNs()) / 1e6;
        if (waitMs > 1) setTimeout(tick, waitMs - 0.5); else setImmediate(tick);
      }
    };
    tick();
    return;
  }
  // closed / burst: publish, yielding to the event loop between publications
  const step = () => {
    if (published >= limit) return;
    if (args.mode === 'closed' && BigInt(published) - delivered >= BigInt(args.window)) {
      wake = step;
      return;
    }
    publishOne(nowNs());
    setImmediate(step);
  };
  step();
}

wss.on('listening', () => {
  const port = wss.address().port;
  const go = () => {
    const finish = () => {
      const el = tGo ? (Date.now() - tGo) / 1000 : 0;
      emit({ event: 'stopped', published, elapsed_s: el, publications_per_s: el ? published / el : 0 });
      process.exit(0);
    };
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (line) => {
      const cmd = line.trim();
      if (cmd === 'go' && tGo === null) { tGo = Date.now(); startPublishing(); }
      else if (cmd === 'stats') emit({ event: 'stats', published });
      else if (cmd === 'stop') finish();
    });
    rl.on('close', finish);
    emit({ event: 'listening', port, server: 'node-ws', deflate: Boolean(perMessageDeflate), version: require(path.join(path.dirname(require.resolve('ws')), 'package.json')).version, node: process.version });
  };
  if (args.mode === 'closed') {
    const fb = dgram.createSocket('udp4');
    fb.on('message', (m) => {
      if (m.length >= 8) {
        const v = m.readBigUInt64LE(0);
        if (v > delivered) {
          delivered = v;
          if (wake) { const w = wake; wake = null; setImmediate(w); }
        }
      }
    });
    fb.bind(port, '127.0.0.1', go);
  } else go();
});

#!/usr/bin/env node
// Load generator for the relay benchmark: the same client load against
// mikoto-rtc and against bench/reference/server.js.
//
//   node loadgen.js --url http://127.0.0.1:8780 --token TOKEN --mode MODE [options]
//
// Modes:
//   throughput  P pairs; in each pair one sender sends `signal` to its peer as
//               fast as the ack window allows, for D seconds (after a warm-up).
//               Reports messages received by targets per second.
//   latency     a fixed offered rate R msgs/s in total, spread over P pairs,
//               open loop; each message carries its send time (hrtime), and
//               the receiver (same process) computes the relay latency.
//   idle        N connections, each joins a room (rooms of --room-size), then
//               they hold until a line arrives on stdin or --hold seconds pass.
//
// The final result is ONE JSON object on stdout. Progress markers go to stderr
// as lines `MARK {"event": ...}` so a runner can sample the server's
// /proc/PID/stat at the edges of the measured window:
//   throughput/latency: measure_start, measure_end
//   idle:               holding (all N joined; runner reads RSS, then writes a
//                       line to stdin to release)
//
// Everything is bounded: connect/join have timeouts, modes have fixed
// durations, and a global watchdog (--max-seconds) exits the process.

"use strict";

const { io } = require("socket.io-client");

// ---------------------------------------------------------------- arguments
const DEFAULTS = {
  url: "http://127.0.0.1:8781",
  token: process.env.LOADGEN_TOKEN || "bench",
  mode: "throughput",
  pairs: 10,
  window: 8, // outstanding acks per sender (throughput)
  duration: 10, // measured seconds (throughput, latency)
  warmup: 2, // seconds before the measured window
  rate: 500, // total offered msgs/s (latency)
  conns: 1000, // idle connections
  roomSize: 2, // idle: participants per room
  hold: 60, // idle: max seconds to hold
  payload: 1024, // approximate bytes of the signal payload
  kind: "description", // description | candidate
  connectConcurrency: 50,
  connectTimeout: 10, // seconds per connect/join
  deflate: true, // offer permessage-deflate like browsers and the default client do
  maxSeconds: 300, // watchdog
  prefix: null, // room name prefix
  peerUrl: null, // throughput/latency: receivers connect here (another node); default --url
  rooms: 4, // broadcast: rooms of --room-size, one sender each
};

function usage(msg) {
  if (msg) console.error(msg);
  console.error(
    "usage: node loadgen.js --url URL --token T --mode throughput|latency|idle|broadcast\n" +
      "  [--pairs P] [--window W] [--duration D] [--warmup S] [--rate R]\n" +
      "  [--conns N] [--room-size K] [--hold S] [--payload BYTES] [--kind description|candidate]\n" +
      "  [--connect-concurrency C] [--connect-timeout S] [--no-deflate] [--max-seconds S] [--prefix P]\n" +
      "  [--peer-url URL]  (receivers connect there: relay between two nodes)\n" +
      "  [--rooms R]  (broadcast: R rooms of --room-size, one member of each sends updates)",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const o = { ...DEFAULTS };
  const num = (name, v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) usage(`bad value for ${name}: ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) usage(`missing value for ${a}`);
      return argv[++i];
    };
    switch (a) {
      case "--url": o.url = v(); break;
      case "--token": o.token = v(); break;
      case "--mode": o.mode = v(); break;
      case "--pairs": o.pairs = num(a, v()); break;
      case "--window": o.window = num(a, v()); break;
      case "--duration": o.duration = num(a, v()); break;
      case "--warmup": o.warmup = num(a, v()); break;
      case "--rate": o.rate = num(a, v()); break;
      case "--conns": o.conns = num(a, v()); break;
      case "--room-size": o.roomSize = num(a, v()); break;
      case "--hold": o.hold = num(a, v()); break;
      case "--payload": o.payload = num(a, v()); break;
      case "--kind": o.kind = v(); break;
      case "--connect-concurrency": o.connectConcurrency = num(a, v()); break;
      case "--connect-timeout": o.connectTimeout = num(a, v()); break;
      case "--no-deflate": o.deflate = false; break;
      case "--max-seconds": o.maxSeconds = num(a, v()); break;
      case "--prefix": o.prefix = v(); break;
      case "--peer-url": o.peerUrl = v(); break;
      case "--rooms": o.rooms = num(a, v()); break;
      case "-h": case "--help": usage(); break;
      default: usage(`unknown argument: ${a}`);
    }
  }
  if (!["throughput", "latency", "idle", "broadcast"].includes(o.mode)) usage(`bad mode: ${o.mode}`);
  if (!["description", "candidate"].includes(o.kind)) usage(`bad kind: ${o.kind}`);
  if (!o.token) usage("empty token");
  o.pairs = Math.max(1, Math.floor(o.pairs));
  o.rooms = Math.max(1, Math.floor(o.rooms));
  o.window = Math.max(1, Math.floor(o.window));
  o.conns = Math.max(1, Math.floor(o.conns));
  o.roomSize = Math.max(1, Math.floor(o.roomSize));
  o.connectConcurrency = Math.max(1, Math.floor(o.connectConcurrency));
  if (!o.prefix) o.prefix = "bench-" + process.pid.toString(36) + "-" + Date.now().toString(36);
  return o;
}

const opt = parseArgs(process.argv.slice(2));

// ---------------------------------------------------------------- helpers
const t0 = process.hrtime.bigint();
const nowNs = () => process.hrtime.bigint();
const sinceStartS = () => Number(nowNs() - t0) / 1e9;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function mark(event, extra) {
  process.stderr.write("MARK " + JSON.stringify({ event, t: sinceStartS(), ...extra }) + "\n");
}
function log(msg) {
  process.stderr.write(`[loadgen ${sinceStartS().toFixed(2)}s] ${msg}\n`);
}

const clients = [];
let finished = false;

function closeAll() {
  for (const c of clients) {
    try {
      c.disconnect();
    } catch (_) {
      /* ignore */
    }
  }
}

function finish(result, code = 0) {
  if (finished) return;
  finished = true;
  const cpu = process.cpuUsage();
  result.loadgen = {
    cpu_s: (cpu.user + cpu.system) / 1e6,
    wall_s: sinceStartS(),
    rss_kb: Math.round(process.memoryUsage().rss / 1024),
  };
  process.stdout.write(JSON.stringify(result) + "\n");
  closeAll();
  // Give the disconnect packets a moment to leave, then exit no matter what.
  setTimeout(() => process.exit(code), 300).unref();
}

function fail(message) {
  log("error: " + message);
  finish({ mode: opt.mode, ok: false, error: message }, 1);
}

const watchdog = setTimeout(() => fail(`watchdog: exceeded --max-seconds ${opt.maxSeconds}`), opt.maxSeconds * 1000);
watchdog.unref();
process.on("SIGTERM", () => fail("terminated"));
process.on("SIGINT", () => fail("interrupted"));
process.on("unhandledRejection", (e) => fail("unhandled rejection: " + (e && e.stack ? e.stack : e)));

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function connectClient(url = opt.url) {
  const sock = io(url, {
    path: "/socket.io/",
    transports: ["websocket"],
    auth: { token: opt.token },
    reconnection: false,
    forceNew: true,
    timeout: opt.connectTimeout * 1000,
    perMessageDeflate: opt.deflate ? { threshold: 1024 } : false,
  });
  clients.push(sock);
  return withTimeout(
    new Promise((resolve, reject) => {
      sock.once("connect", () => resolve(sock));
      sock.once("connect_error", (e) =>
        reject(new Error(`connect_error: ${e.message} ${e.data ? JSON.stringify(e.data) : ""}`)),
      );
    }),
    opt.connectTimeout * 1000,
    "connect",
  );
}

function call(sock, event, payload, ms) {
  return withTimeout(
    new Promise((resolve) => sock.emit(event, payload, resolve)),
    ms,
    event,
  );
}

async function join(sock, room) {
  const ack = await call(sock, "room:join", { room }, opt.connectTimeout * 1000);
  if (!ack || ack.ok !== true) throw new Error(`room:join ${room} failed: ${JSON.stringify(ack)}`);
  return ack;
}

// Run fn(i) for i in [0, n) with at most `limit` in flight.
async function pool(n, limit, fn) {
  const out = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(n, limit) }, worker));
  return out;
}

function deflateNegotiated(sock) {
  try {
    const ws = sock.io.engine.transport.ws;
    return typeof ws.extensions === "string" ? ws.extensions.includes("permessage-deflate") : null;
  } catch (_) {
    return null;
  }
}

// ---------------------------------------------------------------- payloads
// A realistic-looking ~1 KB SDP (or ICE candidate) whose o= line (or
// usernameFragment) carries the send time in ns, so the receiver can compute
// latency. Only schema-valid fields are used: mikoto-rtc rejects unknown ones.
const FILLER_LINES = [
  "a=group:BUNDLE 0 1",
  "a=extmap-allow-mixed",
  "a=msid-semantic: WMS bench",
  "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
  "c=IN IP4 0.0.0.0",
  "a=rtcp:9 IN IP4 0.0.0.0",
  "a=ice-ufrag:Bnch",
  "a=ice-pwd:benchbenchbenchbenchbench",
  "a=ice-options:trickle",
  "a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC",
  "a=setup:actpass",
  "a=mid:0",
  "a=sendrecv",
  "a=rtcp-mux",
  "a=rtpmap:111 opus/48000/2",
  "a=rtcp-fb:111 transport-cc",
  "a=fmtp:111 minptime=10;useinbandfec=1",
];
function makeSdpTemplate(bytes) {
  const head = "v=0\r\no=- __TS__ 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
  let body = "";
  let i = 0;
  while (head.length + body.length < bytes - 40) {
    body += FILLER_LINES[i % FILLER_LINES.length] + "\r\n";
    i++;
  }
  return head + body;
}
const SDP_TEMPLATE = makeSdpTemplate(opt.payload);
const CAND_PAD = "x".repeat(Math.max(0, opt.payload - 160));

function makeSignal(room, to, tsNs) {
  const ts = tsNs.toString();
  if (opt.kind === "description") {
    return { room, to, description: { type: "offer", sdp: SDP_TEMPLATE.replace("__TS__", ts) } };
  }
  return {
    room,
    to,
    candidate: {
      candidate: `candidate:842163049 1 udp 1677729535 127.0.0.1 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag Bnch network-cost 999 ${CAND_PAD}`,
      sdpMid: "0",
      sdpMLineIndex: 0,
      usernameFragment: ts,
    },
  };
}

function extractTs(msg) {
  if (msg.description && typeof msg.description.sdp === "string") {
    const m = /o=- (\d+) /.exec(msg.description.sdp);
    return m ? BigInt(m[1]) : null;
  }
  if (msg.candidate && typeof msg.candidate.usernameFragment === "string") {
    try {
      return BigInt(msg.candidate.usernameFragment);
    } catch (_) {
      return null;
    }
  }
  return null;
}

// ---------------------------------------------------------------- pairs
async function setupPairs(n, tag) {
  return pool(n, Math.max(1, Math.floor(opt.connectConcurrency / 2)), async (i) => {
    const room = `${opt.prefix}-${tag}-${i}`;
    const [a, b] = await Promise.all([connectClient(), connectClient(opt.peerUrl || opt.url)]);
    await join(b, room);
    const ackA = await join(a, room);
    const peer = ackA.participants.find((p) => p.id !== ackA.self.id);
    if (!peer) throw new Error(`room ${room}: peer not listed in join ack`);
    return { room, sender: a, receiver: b, to: peer.id };
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

// ---------------------------------------------------------------- modes
// Warm up, count `run.received` over --duration between MARK lines, then let the
// senders' outstanding acks come back (bounded) so the server is quiet when we go.
async function measureWindow(run, senders) {
  await sleep(opt.warmup * 1000);
  run.phase = "measure";
  const startNs = nowNs();
  const cpuStart = process.cpuUsage();
  mark("measure_start");
  await sleep(opt.duration * 1000);
  mark("measure_end");
  const elapsed = Number(nowNs() - startNs) / 1e9;
  const cpu = process.cpuUsage(cpuStart);
  run.phase = "drain";
  const measured = run.received;
  const drainDeadline = Date.now() + 5000;
  while (senders.some((s) => s.outstanding > 0) && Date.now() < drainDeadline) await sleep(20);
  return { elapsed, measured, loadgenCpu: (cpu.user + cpu.system) / 1e6 / elapsed };
}

async function runThroughput() {
  const pairs = await setupPairs(opt.pairs, "t");
  const deflate = deflateNegotiated(pairs[0].sender);
  log(`${pairs.length} pairs joined; warm-up ${opt.warmup}s, measure ${opt.duration}s, window ${opt.window}`);

  const run = { phase: "warmup", received: 0 }; // phase: warmup -> measure -> drain
  let receivedTotal = 0;
  let acked = 0;
  let ackErrors = 0;
  let sent = 0;
  let firstError = null;

  for (const p of pairs) {
    p.receiver.on("signal", () => {
      receivedTotal++;
      if (run.phase === "measure") run.received++;
    });
  }

  const msgTs = 0n; // throughput payloads carry no meaningful timestamp
  function pump(p) {
    while (run.phase !== "drain" && p.outstanding < opt.window) {
      p.outstanding++;
      sent++;
      p.sender.emit("signal", makeSignal(p.room, p.to, msgTs), (ack) => {
        p.outstanding--;
        if (ack && ack.ok === true) acked++;
        else {
          ackErrors++;
          if (!firstError) firstError = ack;
        }
        if (run.phase !== "drain") pump(p);
      });
    }
  }
  for (const p of pairs) {
    p.outstanding = 0;
    pump(p);
  }

  const { elapsed, measured, loadgenCpu } = await measureWindow(run, pairs);

  return {
    mode: "throughput",
    ok: ackErrors === 0,
    pairs: opt.pairs,
    window: opt.window,
    payload_kind: opt.kind,
    payload_bytes: Buffer.byteLength(JSON.stringify(makeSignal(pairs[0].room, pairs[0].to, 0n))),
    deflate_negotiated: deflate,
    measure_s: elapsed,
    received: measured,
    msgs_per_s: measured / elapsed,
    sent_total: sent,
    acked_total: acked,
    received_total: receivedTotal,
    ack_errors: ackErrors,
    first_error: firstError,
    loadgen_cpu_in_window: loadgenCpu,
  };
}

async function runLatency() {
  const pairs = await setupPairs(opt.pairs, "l");
  const deflate = deflateNegotiated(pairs[0].sender);
  log(`${pairs.length} pairs joined; rate ${opt.rate}/s, warm-up ${opt.warmup}s, measure ${opt.duration}s`);

  const samplesNs = [];
  let sentMeasured = 0;
  let ackErrors = 0;
  let firstError = null;
  let skipped = 0; // sends skipped because too many were outstanding on one sender
  const maxOutstanding = 1000;

  for (const p of pairs) {
    p.outstanding = 0;
    p.receiver.on("signal", (msg) => {
      const ts = extractTs(msg);
      if (ts === null || ts === 0n) return;
      if (ts >= p.measureFromNs && ts <= p.measureUntilNs) samplesNs.push(Number(nowNs() - ts));
    });
  }

  // Open-loop schedule: message k is due at start + k/R; a 1 ms timer sends
  // whatever is due, round-robin over the senders.
  const startNs = nowNs();
  const intervalNs = 1e9 / opt.rate;
  let k = 0;
  let rr = 0;
  let measureFromNs = null;
  let measureUntilNs = null;
  for (const p of pairs) {
    p.measureFromNs = 1n << 62n; // set at measure start
    p.measureUntilNs = 1n << 62n;
  }
  const timer = setInterval(() => {
    const elapsedNs = Number(nowNs() - startNs);
    const due = Math.floor(elapsedNs / intervalNs) + 1;
    while (k < due) {
      k++;
      const p = pairs[rr];
      rr = (rr + 1) % pairs.length;
      if (p.outstanding >= maxOutstanding) {
        skipped++;
        continue;
      }
      const ts = nowNs();
      if (measureFromNs !== null && ts >= measureFromNs && (measureUntilNs === null || ts <= measureUntilNs))
        sentMeasured++;
      p.outstanding++;
      p.sender.emit("signal", makeSignal(p.room, p.to, ts), (ack) => {
        p.outstanding--;
        if (!ack || ack.ok !== true) {
          ackErrors++;
          if (!firstError) firstError = ack;
        }
      });
    }
  }, 1);

  await sleep(opt.warmup * 1000);
  measureFromNs = nowNs();
  for (const p of pairs) p.measureFromNs = measureFromNs;
  mark("measure_start");
  await sleep(opt.duration * 1000);
  measureUntilNs = nowNs();
  for (const p of pairs) p.measureUntilNs = measureUntilNs;
  mark("measure_end");
  clearInterval(timer);
  const elapsed = Number(measureUntilNs - measureFromNs) / 1e9;
  // Wait (bounded) for messages still in flight.
  const drainDeadline = Date.now() + 5000;
  while (pairs.some((p) => p.outstanding > 0) && Date.now() < drainDeadline) await sleep(20);
  await sleep(50);

  const ms = samplesNs.map((x) => x / 1e6).sort((a, b) => a - b);
  const mean = ms.length ? ms.reduce((s, x) => s + x, 0) / ms.length : null;
  return {
    mode: "latency",
    ok: ackErrors === 0 && skipped === 0 && ms.length > 0,
    pairs: opt.pairs,
    offered_rate: opt.rate,
    payload_kind: opt.kind,
    deflate_negotiated: deflate,
    measure_s: elapsed,
    sent: sentMeasured,
    received: samplesNs.length,
    achieved_rate: samplesNs.length / elapsed,
    lost_or_late: sentMeasured - samplesNs.length,
    skipped_sends: skipped,
    ack_errors: ackErrors,
    first_error: firstError,
    latency_ms: {
      p50: percentile(ms, 50),
      p90: percentile(ms, 90),
      p99: percentile(ms, 99),
      p999: percentile(ms, 99.9),
      max: ms.length ? ms[ms.length - 1] : null,
      mean,
    },
  };
}

// One member of each room sends participant:update (a window of --window
// unacknowledged), the server broadcasts participant:updated to the others.
// Counted: updates received by all members during the measured window.
async function runBroadcast() {
  const size = Math.max(2, opt.roomSize);
  const rooms = await pool(opt.rooms, 1, async (r) => {
    const room = `${opt.prefix}-b-${r}`;
    const members = await pool(size, size, async (i) => {
      // With --peer-url, every other member is on the other node.
      const s = await connectClient(opt.peerUrl && i % 2 ? opt.peerUrl : opt.url);
      await join(s, room);
      return s;
    });
    return { room, members, sender: members[0], outstanding: 0, on: false };
  });
  const deflate = deflateNegotiated(rooms[0].sender);
  log(`${rooms.length} rooms of ${size}; warm-up ${opt.warmup}s, measure ${opt.duration}s, window ${opt.window}`);

  const run = { phase: "warmup", received: 0 };
  let sent = 0;
  let ackErrors = 0;
  let firstError = null;
  for (const r of rooms) {
    for (const m of r.members) {
      m.on("participant:updated", () => {
        if (run.phase === "measure") run.received++;
      });
    }
  }
  function pump(r) {
    while (run.phase !== "drain" && r.outstanding < opt.window) {
      r.outstanding++;
      sent++;
      r.on = !r.on;
      r.sender.emit("participant:update", { room: r.room, state: { audio: r.on } }, (ack) => {
        r.outstanding--;
        if (!ack || ack.ok !== true) {
          ackErrors++;
          if (!firstError) firstError = ack;
        }
        if (run.phase !== "drain") pump(r);
      });
    }
  }
  for (const r of rooms) pump(r);

  const { elapsed, measured, loadgenCpu } = await measureWindow(run, rooms);
  return {
    mode: "broadcast",
    ok: ackErrors === 0,
    rooms: rooms.length,
    room_size: size,
    window: opt.window,
    deflate_negotiated: deflate,
    measure_s: elapsed,
    received: measured,
    msgs_per_s: measured / elapsed,
    sent_total: sent,
    ack_errors: ackErrors,
    first_error: firstError,
    loadgen_cpu_in_window: loadgenCpu,
  };
}

async function runIdle() {
  const n = opt.conns;
  log(`opening ${n} connections (concurrency ${opt.connectConcurrency}), rooms of ${opt.roomSize}`);
  const started = nowNs();
  const socks = await pool(n, opt.connectConcurrency, async (i) => {
    const s = await connectClient();
    await join(s, `${opt.prefix}-i-${Math.floor(i / opt.roomSize)}`);
    return s;
  });
  const setupS = Number(nowNs() - started) / 1e9;
  const deflate = deflateNegotiated(socks[0]);
  log(`${n} connections joined in ${setupS.toFixed(2)}s; holding (max ${opt.hold}s or until a line on stdin)`);
  // Count anything the server sends while we hold (should be nothing).
  let eventsWhileHolding = 0;
  for (const s of socks) s.onAny(() => eventsWhileHolding++);
  mark("holding", { conns: n });

  const released = await new Promise((resolve) => {
    const t = setTimeout(() => resolve("timeout"), opt.hold * 1000);
    process.stdin.on("data", () => {
      clearTimeout(t);
      resolve("stdin");
    });
    process.stdin.on("end", () => {
      clearTimeout(t);
      resolve("stdin-closed");
    });
  });
  process.stdin.pause();
  const alive = socks.filter((s) => s.connected).length;
  return {
    mode: "idle",
    ok: alive === n,
    conns: n,
    room_size: opt.roomSize,
    deflate_negotiated: deflate,
    setup_s: setupS,
    connected_at_release: alive,
    released_by: released,
    events_while_holding: eventsWhileHolding,
  };
}

// ---------------------------------------------------------------- main
(async () => {
  try {
    const fn = { throughput: runThroughput, latency: runLatency, idle: runIdle, broadcast: runBroadcast }[opt.mode];
    const result = await fn();
    result.url = opt.url;
    finish(result, 0);
  } catch (e) {
    fail(e && e.message ? e.message : String(e));
  }
})();

#!/usr/bin/env node
'use strict';
// Recovery storm: N clients resubscribe at once with last_event_id after missing M events each
// (docs/protocol.md#history). Measures the time until every client has its replay and relay:recovery,
// the per-client subscribe -> relay:recovery time, and the server's CPU and RSS for that phase, next to a
// plain resubscribe (no last_event_id) of the same N clients as the baseline. See loadtest/README.md.
//
// Node 20, no dependencies beyond `ws` and `pusher` from tests/js/node_modules.

const path = require('node:path');
const fs = require('node:fs');
const { spawn, execFileSync } = require('node:child_process');
const { performance } = require('node:perf_hooks');

const MODULES = path.join(__dirname, '../tests/js/node_modules');
const WebSocket = require(path.join(MODULES, 'ws'));
const Pusher = require(path.join(MODULES, 'pusher'));

const REPO = path.join(__dirname, '..');
const EVENT = 'storm';

// ---------------------------------------------------------------------------------------------------------------
// Options

const DEFAULTS = {
  relay: 'target/release/relay',
  clients: 1000,
  channels: 10,
  missed: 100,
  batch: 10,
  payload: 100,
  rounds: 1,
  workers: 2,
  historyMax: 200,
  port: 0,
  timeoutMs: 30000,
  maxSeconds: 300,
  relayLog: '',
  jsonOut: '',
};

const HELP = `usage: node loadtest/recovery-storm.js [options]

  --relay PATH        relay binary, relative to the repository (default ${DEFAULTS.relay})
  --clients N         WebSocket clients (default ${DEFAULTS.clients})
  --channels C        channels storm-0 .. storm-(C-1); client i is on storm-(i % C) (default ${DEFAULTS.channels})
  --missed M          events published per channel while the clients are away (default ${DEFAULTS.missed})
  --batch B           events per REST batch request, at most 10 for relay (default ${DEFAULTS.batch})
  --payload BYTES     padding in each event's data (default ${DEFAULTS.payload})
  --rounds R          plain + recovery reconnect phases, R times in a row (default ${DEFAULTS.rounds})
  --workers W         relay --workers (default ${DEFAULTS.workers})
  --history-max H     relay --history-max (default ${DEFAULTS.historyMax}); must be > M
  --port P            relay --port (default 0: any free port)
  --timeout-ms MS     limit of every single wait (default ${DEFAULTS.timeoutMs})
  --max-seconds S     limit of the whole run; past it relay is killed and the run fails (default ${DEFAULTS.maxSeconds})
  --relay-log FILE    write relay's stderr there
  --json-out FILE     write the results as JSON there

Raise the open-file limit first when N is large: ulimit -n 4096 (each client is one socket here and one in relay).
Exit status: 0 when every check held, 1 when one failed or the run could not finish, 2 on bad usage.`;

function parseArgs(argv) {
  const o = { ...DEFAULTS };
  const names = {
    '--relay': ['relay', 's'],
    '--clients': ['clients', 'n'],
    '--channels': ['channels', 'n'],
    '--missed': ['missed', 'n'],
    '--batch': ['batch', 'n'],
    '--payload': ['payload', 'n0'],
    '--rounds': ['rounds', 'n'],
    '--workers': ['workers', 'n'],
    '--history-max': ['historyMax', 'n'],
    '--port': ['port', 'n0'],
    '--timeout-ms': ['timeoutMs', 'n'],
    '--max-seconds': ['maxSeconds', 'n'],
    '--relay-log': ['relayLog', 's'],
    '--json-out': ['jsonOut', 's'],
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (a === '-h' || a === '--help') {
      console.log(HELP);
      process.exit(0);
    }
    let v;
    const eq = a.indexOf('=');
    if (eq > 0) {
      v = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const spec = names[a];
    if (!spec) usage(`unknown option ${a}`);
    if (v === undefined) {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      v = argv[++i];
    }
    const [key, kind] = spec;
    if (kind === 's') {
      o[key] = v;
    } else {
      const n = Number(v);
      if (!Number.isInteger(n) || n < (kind === 'n0' ? 0 : 1)) usage(`${a}: bad value ${v}`);
      o[key] = n;
    }
  }
  if (o.batch > 10) usage('--batch: relay takes at most 10 events per batch');
  if (o.missed + 1 > o.historyMax) usage('--missed must be below --history-max (the id each client keeps must stay in history)');
  if (o.channels > o.clients) usage('--channels must not exceed --clients');
  return o;
}

function usage(msg) {
  console.error(`recovery-storm: ${msg}\n\n${HELP}`);
  process.exit(2);
}

const opt = parseArgs(process.argv.slice(2));

// ---------------------------------------------------------------------------------------------------------------
// Small helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(`[${((performance.now() - T_START) / 1000).toFixed(1)}s]`, ...a);
const T_START = performance.now();

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function eventually(check, ms, what) {
  const end = performance.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (performance.now() > end) throw new Error(`timeout after ${ms} ms: ${what}`);
    await sleep(50);
  }
}

function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

function summary(values) {
  const s = values.slice().sort((a, b) => a - b);
  return { n: s.length, p50: pct(s, 50), p99: pct(s, 99), max: s.length ? s[s.length - 1] : NaN };
}

const median = (xs) => {
  const s = xs.slice().sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};

// ---------------------------------------------------------------------------------------------------------------
// The server: start, /proc readings, stop

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
} catch (_) {
  /* keep 100 */
}

const server = { proc: null, port: 0, logLines: [], warnCount: 0, errorCount: 0, exited: null, logStream: null };

function startRelay() {
  const bin = path.resolve(REPO, opt.relay);
  if (!fs.existsSync(bin)) {
    console.error(`recovery-storm: no relay binary at ${bin} (cargo build --release -p relay)`);
    process.exit(2);
  }
  const args = [
    '--host', '127.0.0.1',
    '--port', String(opt.port),
    '--workers', String(opt.workers),
    '--history-enabled', 'true',
    '--history-max', String(opt.historyMax),
  ];
  log(`starting ${bin} ${args.join(' ')}`);
  // Only the default app's credentials are pinned; other RELAY_* variables of the caller's shell are dropped so
  // that they cannot change the setup (rate limits, quotas...).
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RELAY_')));
  Object.assign(env, { RELAY_APP_ID: 'app-id', RELAY_APP_KEY: 'app-key', RELAY_APP_SECRET: 'app-secret' });
  const proc = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  server.proc = proc;
  if (opt.relayLog) server.logStream = fs.createWriteStream(opt.relayLog);
  proc.on('exit', (code, signal) => {
    server.exited = { code, signal };
  });
  return withTimeout(
    new Promise((resolve, reject) => {
      let buf = '';
      proc.stderr.setEncoding('utf8');
      proc.stderr.on('data', (chunk) => {
        if (server.logStream) server.logStream.write(chunk);
        buf += chunk;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (/\bWARN/.test(line)) server.warnCount++;
          if (/\bERROR/.test(line)) server.errorCount++;
          if (server.logLines.length < 200) server.logLines.push(line);
          const m = /listening on 127\.0\.0\.1:(\d+)/.exec(line);
          if (m && !server.port) {
            server.port = Number(m[1]);
            resolve();
          }
        }
      });
      proc.on('exit', (code, signal) => reject(new Error(`relay exited at start (code ${code}, signal ${signal})`)));
      proc.on('error', reject);
    }),
    10000,
    'relay prints "listening on"',
  );
}

function procStat(pid) {
  // Fields after "(comm)": state is field 3, utime 14, stime 15 (1-based, man 5 proc).
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return { cpuMs: ((utime + stime) * 1000) / CLK_TCK, userMs: (utime * 1000) / CLK_TCK, sysMs: (stime * 1000) / CLK_TCK };
}

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

async function stopRelay() {
  const p = server.proc;
  if (!p || server.exited) return server.exited;
  p.kill('SIGTERM');
  try {
    await withTimeout(new Promise((r) => p.once('exit', r)), 10000, 'relay exits after SIGTERM');
  } catch (_) {
    p.kill('SIGKILL');
    await withTimeout(new Promise((r) => p.once('exit', r)), 5000, 'relay exits after SIGKILL').catch(() => {});
  }
  if (server.logStream) server.logStream.end();
  return server.exited;
}

// Never leave relay behind, whatever happens.
process.on('exit', () => {
  if (server.proc && !server.exited) server.proc.kill('SIGKILL');
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (server.proc && !server.exited) server.proc.kill('SIGKILL');
    process.exit(1);
  });
}

/** Soft RLIMIT_NOFILE of this process (relay inherits it). */
function openFileLimit() {
  const m = /Max open files\s+(\d+|unlimited)/.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  return !m ? Infinity : m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

async function serverStats() {
  const res = await withTimeout(fetch(`http://127.0.0.1:${server.port}/stats`), 5000, 'GET /stats');
  return res.json();
}

async function waitConnections(n, what) {
  let last;
  await eventually(
    async () => {
      last = await serverStats();
      return last.connections === n;
    },
    opt.timeoutMs,
    `${what}: server reports ${n} connections (last: ${JSON.stringify(last)})`,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Clients

const channelOf = (i) => `storm-${i % opt.channels}`;
const wsUrl = () => `ws://127.0.0.1:${server.port}/app/app-key?protocol=7&client=js&version=8.6.0`;

const problems = []; // every failed check, printed at the end
function problem(msg) {
  problems.push(msg);
  if (problems.length <= 20) log(`PROBLEM: ${msg}`);
}

const EVENT_PREFIX = `{"event":${JSON.stringify(EVENT)},`;

/** An app event, as received: before relay:recovery (recovery) or before subscription_succeeded it is a replayed
 * one, after it a live one (or a duplicate). Decoded later with `decode`. */
function keepEvent(c, raw, recover) {
  if (c.report || (!recover && c.done)) c.after.push(raw);
  else c.events.push(raw);
}

/** { id, data, channel } of a kept event frame. */
function decode(raw) {
  try {
    const m = JSON.parse(raw);
    return { id: m.id, data: m.data, channel: m.channel, event: m.event };
  } catch (_) {
    return { id: undefined, data: `invalid JSON: ${raw.slice(0, 100)}`, channel: undefined, event: undefined };
  }
}

/**
 * Connect every client at once and subscribe it (with its last id when `lastIds` is given).
 * Resolves when every client is done: subscribed (no lastIds) or got its relay:recovery (lastIds).
 * Returns the clients (sockets still open) and the phase's timings.
 */
function storm(kind, lastIds) {
  const recover = !!lastIds;
  const clients = [];
  let pending = opt.clients;
  let resolveAll;
  const allDone = new Promise((r) => (resolveAll = r));
  const finish = (c) => {
    if (c.done) return;
    c.done = true;
    c.tDone = performance.now();
    if (--pending === 0) resolveAll();
  };
  const fail = (c, msg) => {
    if (!c.failed) problem(`${kind} client ${c.i} (${c.channel}): ${msg}`);
    c.failed = true;
    finish(c);
  };

  const t0 = performance.now();
  for (let i = 0; i < opt.clients; i++) {
    const c = {
      i,
      channel: channelOf(i),
      lastId: recover ? lastIds[i] : undefined,
      tOpen: performance.now(),
      tEst: 0,
      tSub: 0,
      tSucc: 0,
      tDone: 0,
      events: [], // [{ id, data }] before relay:recovery (or, without recovery, after subscription_succeeded)
      report: null,
      after: [], // app events after relay:recovery
      other: [],
      done: false,
      failed: false,
      closed: false,
    };
    clients.push(c);
    const ws = new WebSocket(wsUrl(), { perMessageDeflate: false, handshakeTimeout: opt.timeoutMs });
    c.ws = ws;
    ws.on('message', (buf, isBinary) => {
      if (isBinary) return fail(c, 'binary frame');
      const raw = buf.toString();
      // Hot path: the replayed events are kept as text and decoded after the phase, outside the timed window.
      if (raw.startsWith(EVENT_PREFIX)) return keepEvent(c, raw, recover);
      let m;
      try {
        m = JSON.parse(raw);
      } catch (_) {
        return fail(c, `invalid JSON frame: ${raw.slice(0, 200)}`);
      }
      switch (m.event) {
        case 'pusher:connection_established': {
          c.tEst = performance.now();
          const data = { channel: c.channel };
          if (recover) data.last_event_id = c.lastId;
          c.tSub = performance.now();
          ws.send(JSON.stringify({ event: 'pusher:subscribe', data }));
          return;
        }
        case 'pusher_internal:subscription_succeeded':
          if (c.tSucc) return fail(c, 'second subscription_succeeded');
          c.tSucc = performance.now();
          if (c.events.length) fail(c, `${c.events.length} events before subscription_succeeded`);
          if (!recover) finish(c);
          return;
        case 'relay:recovery': {
          if (!recover) return fail(c, `relay:recovery without last_event_id: ${raw}`);
          if (c.report) return fail(c, `second relay:recovery: ${raw}`);
          if (!c.tSucc) fail(c, 'relay:recovery before subscription_succeeded');
          try {
            c.report = typeof m.data === 'string' ? JSON.parse(m.data) : m.data;
          } catch (_) {
            c.report = { unparsable: m.data };
          }
          if (m.channel !== c.channel) fail(c, `relay:recovery for channel ${m.channel}`);
          finish(c);
          return;
        }
        case 'pusher:ping':
          ws.send('{"event":"pusher:pong","data":{}}');
          return;
        case 'pusher:error':
        case 'pusher_internal:subscription_error':
        case 'pusher:subscription_error':
          return fail(c, `server error: ${raw}`);
        case EVENT:
          return keepEvent(c, raw, recover);
        default:
          c.other.push(String(raw).slice(0, 200));
      }
    });
    ws.on('error', (e) => {
      if (!c.done) fail(c, `socket error: ${e.message}`);
      else c.other.push(`socket error after done: ${e.message}`);
    });
    ws.on('close', (code, reason) => {
      c.closed = true;
      if (!c.done) fail(c, `closed by the server before done: ${code} ${reason}`);
    });
  }
  const tLoop = performance.now();
  return { clients, t0, tLoop, allDone };
}

async function closeAll(clients, what) {
  await withTimeout(
    Promise.all(
      clients.map(
        (c) =>
          new Promise((r) => {
            if (c.ws.readyState === WebSocket.CLOSED) return r();
            c.ws.once('close', r);
            c.ws.close(1000);
          }),
      ),
    ),
    opt.timeoutMs,
    `${what}: every client closed`,
  ).catch((e) => {
    problem(e.message);
    for (const c of clients) c.ws.terminate();
  });
  await waitConnections(0, what);
}

// ---------------------------------------------------------------------------------------------------------------
// Phases

async function publishMissed(sdk) {
  const pad = 'x'.repeat(opt.payload);
  const t0 = performance.now();
  let requests = 0;
  await withTimeout(
    Promise.all(
      Array.from({ length: opt.channels }, async (_, ch) => {
        // One channel's batches go one after another, so its events keep their order; channels run side by side.
        for (let s = 1; s <= opt.missed; s += opt.batch) {
          const batch = [];
          for (let k = s; k < Math.min(s + opt.batch, opt.missed + 1); k++) {
            batch.push({ channel: `storm-${ch}`, name: EVENT, data: `seq=${k};${pad}` });
          }
          try {
            const res = await sdk.triggerBatch(batch);
            if (res.status !== 200) throw new Error(`status ${res.status}`);
          } catch (e) {
            throw new Error(`batch publish to storm-${ch} failed: ${e.status || ''} ${e.body || e.message}`);
          }
          requests++;
        }
      }),
    ),
    opt.timeoutMs * 4,
    'publishing the missed events',
  );
  return { requests, ms: performance.now() - t0 };
}

async function channelHistory(sdk, channel) {
  const res = await withTimeout(
    sdk.get({ path: `/channels/${channel}/events`, params: { limit: opt.historyMax } }),
    opt.timeoutMs,
    `GET history of ${channel}`,
  );
  const body = await res.json();
  if (body.next_cursor) throw new Error(`history of ${channel} has more than one page`);
  return body.events;
}

/** Check one recovery phase's clients against the channels' history; returns the number of bad clients. */
function checkRecovery(clients, expected) {
  let bad = 0;
  for (const c of clients) {
    const exp = expected[c.channel];
    const errs = [];
    if (!c.report) errs.push('no relay:recovery');
    else {
      if (c.report.recovered !== true) errs.push(`recovered=${c.report.recovered}`);
      if (c.report.replayed !== opt.missed) errs.push(`replayed=${c.report.replayed}, expected ${opt.missed}`);
    }
    if (c.events.length !== opt.missed) errs.push(`${c.events.length} replayed frames, expected ${opt.missed}`);
    const events = c.events.map(decode);
    const wrongChannel = events.filter((e) => e.channel !== c.channel || e.event !== EVENT).length;
    if (wrongChannel) errs.push(`${wrongChannel} replayed frames of another channel or event`);
    const n = Math.min(events.length, exp.length);
    for (let k = 0; k < n; k++) {
      const got = events[k];
      if (got.id !== exp[k].id || got.data !== exp[k].data) {
        errs.push(`replayed frame ${k}: id ${got.id} data ${String(got.data).slice(0, 12)}, expected id ${exp[k].id} data ${exp[k].data.slice(0, 12)}`);
        break;
      }
    }
    const seqs = events.map((e) => Number(/^seq=(\d+);/.exec(e.data)?.[1]));
    const dup = seqs.length - new Set(seqs).size;
    if (dup) errs.push(`${dup} duplicate events`);
    if (c.after.length) errs.push(`${c.after.length} events after relay:recovery (nothing was published)`);
    if (c.other.length) errs.push(`unexpected frames: ${c.other.slice(0, 3).join(' | ')}`);
    if (errs.length) {
      bad++;
      if (!c.failed) problem(`recovery client ${c.i} (${c.channel}, last id ${c.lastId}): ${errs.join('; ')}`);
    }
  }
  return bad;
}

function checkPlain(clients) {
  let bad = 0;
  for (const c of clients) {
    const errs = [];
    if (!c.tSucc) errs.push('no subscription_succeeded');
    if (c.events.length || c.after.length) errs.push(`${c.events.length + c.after.length} events (nothing was published)`);
    if (c.other.length) errs.push(`unexpected frames: ${c.other.slice(0, 3).join(' | ')}`);
    if (errs.length) {
      bad++;
      if (!c.failed) problem(`plain client ${c.i} (${c.channel}): ${errs.join('; ')}`);
    }
  }
  return bad;
}

async function reconnectPhase(kind, lastIds, expected) {
  const pid = server.proc.pid;
  const cpu0 = procStat(pid);
  const rss0 = rssKiB(pid);
  const me0 = process.cpuUsage();
  const st = storm(kind, lastIds);
  let timedOut = false;
  await withTimeout(st.allDone, opt.timeoutMs, `${kind}: every client done`).catch((e) => {
    timedOut = true;
    problem(e.message);
  });
  const tEnd = performance.now();
  const cpu1 = procStat(pid);
  const rss1 = rssKiB(pid);
  const me1 = process.cpuUsage(me0);
  // Hold the sockets a little longer: anything arriving now would be a duplicate or a stray frame.
  await sleep(300);
  const clients = st.clients;
  const bad = lastIds ? checkRecovery(clients, expected) : checkPlain(clients);
  const done = clients.filter((c) => c.done && !c.failed);
  const r = {
    kind,
    clients: clients.length,
    ok: clients.length - bad,
    timedOut,
    // From the first `new WebSocket` to the last client's relay:recovery (or subscription_succeeded).
    allMs: Math.max(...clients.map((c) => c.tDone || tEnd)) - st.t0,
    openLoopMs: st.tLoop - st.t0,
    connect: summary(done.map((c) => c.tEst - c.tOpen)),
    // subscribe sent -> relay:recovery (recovery) or -> subscription_succeeded (plain)
    perClient: summary(done.map((c) => c.tDone - c.tSub)),
    subscribed: summary(done.map((c) => c.tSucc - c.tSub)),
    serverCpuMs: cpu1.cpuMs - cpu0.cpuMs,
    serverUserMs: cpu1.userMs - cpu0.userMs,
    serverSysMs: cpu1.sysMs - cpu0.sysMs,
    rssBeforeKiB: rss0,
    rssAfterKiB: rss1,
    clientCpuMs: (me1.user + me1.system) / 1000,
  };
  log(
    `${kind}: ${r.ok}/${r.clients} ok, all done in ${r.allMs.toFixed(0)} ms, per client p50 ${r.perClient.p50.toFixed(1)} / p99 ${r.perClient.p99.toFixed(1)} / max ${r.perClient.max.toFixed(1)} ms, server CPU ${r.serverCpuMs.toFixed(0)} ms, RSS ${rss0} -> ${rss1} KiB`,
  );
  await closeAll(clients, kind);
  return r;
}

// ---------------------------------------------------------------------------------------------------------------
// Main

async function main() {
  await startRelay();
  const nofile = openFileLimit();
  log(`relay pid ${server.proc.pid} on port ${server.port}; CLK_TCK ${CLK_TCK}; open-file limit ${nofile}`);
  if (nofile < opt.clients + 100) {
    throw new Error(`the open-file limit (${nofile}) is too low for ${opt.clients} clients: run ulimit -n ${Math.max(4096, opt.clients + 1024)} first`);
  }
  const sdk = new Pusher({ appId: 'app-id', key: 'app-key', secret: 'app-secret', host: '127.0.0.1', port: server.port, useTLS: false });
  const rssStart = rssKiB(server.proc.pid);

  // 1. Everyone connects and subscribes; one event per channel gives each client its last id.
  log(`connecting ${opt.clients} clients to ${opt.channels} channel(s)`);
  const first = storm('initial', null);
  await withTimeout(first.allDone, opt.timeoutMs, 'initial: every client subscribed');
  if (problems.length) throw new Error('initial subscribe failed');
  await waitConnections(opt.clients, 'initial');
  const marks = await withTimeout(
    Promise.all(Array.from({ length: opt.channels }, (_, ch) => sdk.trigger(`storm-${ch}`, EVENT, 'seq=0;mark'))),
    opt.timeoutMs,
    'publishing one event per channel',
  );
  for (const res of marks) if (res.status !== 200) throw new Error(`mark publish: status ${res.status}`);
  await eventually(() => first.clients.every((c) => c.after.length >= 1), opt.timeoutMs, 'every client got its channel\'s event');
  const lastIds = first.clients.map((c) => decode(c.after[0]).id);
  const idOf = {};
  for (const c of first.clients) {
    const id = lastIds[c.i];
    if (typeof id !== 'string' || !id) throw new Error(`client ${c.i}: live frame without an id: ${c.after[0]}`);
    if (c.after.length !== 1) problem(`initial client ${c.i}: ${c.after.length} events, expected 1`);
    if (idOf[c.channel] === undefined) idOf[c.channel] = id;
    else if (idOf[c.channel] !== id) problem(`initial client ${c.i}: id ${id}, others on ${c.channel} got ${idOf[c.channel]}`);
  }
  log(`last ids: ${Object.entries(idOf).slice(0, 3).map(([ch, id]) => `${ch}=${id}`).join(', ')}${opt.channels > 3 ? ', ...' : ''}`);

  // 2. Everyone leaves; M events per channel are published while they are away.
  await closeAll(first.clients, 'initial');
  const pub = await publishMissed(sdk);
  log(`published ${opt.missed} events to each of ${opt.channels} channel(s) in ${pub.requests} batch requests, ${pub.ms.toFixed(0)} ms`);
  const expected = {};
  for (let ch = 0; ch < opt.channels; ch++) {
    const name = `storm-${ch}`;
    const events = await channelHistory(sdk, name);
    const at = events.findIndex((e) => e.id === idOf[name]);
    if (at < 0) throw new Error(`history of ${name} lost the last id ${idOf[name]}`);
    expected[name] = events.slice(at + 1);
    const seqs = expected[name].map((e) => e.data.slice(0, e.data.indexOf(';')));
    const want = Array.from({ length: opt.missed }, (_, k) => `seq=${k + 1}`);
    if (seqs.join() !== want.join()) problem(`history of ${name} after ${idOf[name]}: ${seqs.length} events, not seq=1..${opt.missed} in order`);
  }
  await sleep(200);

  // 3. The storms: plain resubscribe (baseline), then resubscribe with last_event_id, `rounds` times.
  const rounds = [];
  for (let r = 1; r <= opt.rounds; r++) {
    const plain = await reconnectPhase('plain', null, null);
    await sleep(200);
    const recovery = await reconnectPhase('recovery', lastIds, expected);
    await sleep(200);
    rounds.push({ plain, recovery });
  }
  const rssEnd = rssKiB(server.proc.pid);
  const stats = await serverStats();
  return { rounds, pub, rssStart, rssEnd, stats };
}

function fmt(n, d = 0) {
  return Number.isFinite(n) ? n.toFixed(d) : '–';
}

function ratio(a, b) {
  return b > 0 && Number.isFinite(a) ? `${(a / b).toFixed(1)}×` : '–';
}

function table(rounds) {
  const lines = [];
  lines.push(`relay --workers ${opt.workers} --history-max ${opt.historyMax}; ${opt.clients} clients on ${opt.channels} channel(s), ${opt.missed} missed events each (${opt.payload} B padding)`);
  lines.push('');
  lines.push('| round | phase | ok | all done (ms) | per client p50 / p99 / max (ms) | server CPU (ms) | server RSS before → after (MiB) | client CPU (ms) |');
  lines.push('|---|---|---|---|---|---|---|---|');
  const row = (r, name, x) =>
    `| ${r} | ${name} | ${x.ok}/${x.clients} | ${fmt(x.allMs)} | ${fmt(x.perClient.p50, 1)} / ${fmt(x.perClient.p99, 1)} / ${fmt(x.perClient.max, 1)} | ${fmt(x.serverCpuMs)} | ${fmt(x.rssBeforeKiB / 1024, 1)} → ${fmt(x.rssAfterKiB / 1024, 1)} | ${fmt(x.clientCpuMs)} |`;
  rounds.forEach(({ plain, recovery }, k) => {
    lines.push(row(k + 1, 'plain resubscribe', plain));
    lines.push(row(k + 1, `last_event_id, ${opt.missed} missed`, recovery));
    lines.push(
      `| ${k + 1} | ratio recovery / plain | | ${ratio(recovery.allMs, plain.allMs)} | ${ratio(recovery.perClient.p50, plain.perClient.p50)} / ${ratio(recovery.perClient.p99, plain.perClient.p99)} / ${ratio(recovery.perClient.max, plain.perClient.max)} | ${ratio(recovery.serverCpuMs, plain.serverCpuMs)} | | ${ratio(recovery.clientCpuMs, plain.clientCpuMs)} |`,
    );
  });
  if (rounds.length > 1) {
    const m = (f) => median(rounds.map(f));
    const p = {
      all: m((r) => r.plain.allMs), p50: m((r) => r.plain.perClient.p50), p99: m((r) => r.plain.perClient.p99),
      max: m((r) => r.plain.perClient.max), cpu: m((r) => r.plain.serverCpuMs), me: m((r) => r.plain.clientCpuMs),
    };
    const q = {
      all: m((r) => r.recovery.allMs), p50: m((r) => r.recovery.perClient.p50), p99: m((r) => r.recovery.perClient.p99),
      max: m((r) => r.recovery.perClient.max), cpu: m((r) => r.recovery.serverCpuMs), me: m((r) => r.recovery.clientCpuMs),
    };
    lines.push(`| median | plain resubscribe | | ${fmt(p.all)} | ${fmt(p.p50, 1)} / ${fmt(p.p99, 1)} / ${fmt(p.max, 1)} | ${fmt(p.cpu)} | | ${fmt(p.me)} |`);
    lines.push(`| median | last_event_id | | ${fmt(q.all)} | ${fmt(q.p50, 1)} / ${fmt(q.p99, 1)} / ${fmt(q.max, 1)} | ${fmt(q.cpu)} | | ${fmt(q.me)} |`);
    lines.push(`| median | ratio | | ${ratio(q.all, p.all)} | ${ratio(q.p50, p.p50)} / ${ratio(q.p99, p.p99)} / ${ratio(q.max, p.max)} | ${ratio(q.cpu, p.cpu)} | | ${ratio(q.me, p.me)} |`);
  }
  return lines.join('\n');
}

const watchdog = setTimeout(() => {
  console.error(`recovery-storm: the run took longer than --max-seconds ${opt.maxSeconds}; killing relay`);
  if (server.proc && !server.exited) server.proc.kill('SIGKILL');
  process.exit(1);
}, opt.maxSeconds * 1000);

main()
  .then(async (res) => {
    const exit = await stopRelay();
    clearTimeout(watchdog);
    console.log(table(res.rounds));
    console.log('');
    console.log(
      `server CPU: utime+stime of /proc/${server.proc.pid}/stat between the first reconnect and the last client done (CLK_TCK ${CLK_TCK}, so ±${1000 / CLK_TCK} ms). ` +
        `Per client: subscribe sent -> relay:recovery (plain: -> subscription_succeeded). ` +
        `Publishing ${opt.channels}×${opt.missed} events took ${res.pub.requests} requests, ${res.pub.ms.toFixed(0)} ms. ` +
        `Server RSS at start ${(res.rssStart / 1024).toFixed(1)} MiB, at end ${(res.rssEnd / 1024).toFixed(1)} MiB. ` +
        `relay log: ${server.warnCount} WARN, ${server.errorCount} ERROR lines; exit ${exit ? (exit.signal || exit.code) : '?'} after SIGTERM.`,
    );
    if (opt.jsonOut) fs.writeFileSync(opt.jsonOut, JSON.stringify({ options: opt, clkTck: CLK_TCK, ...res, problems, relayExit: exit }, null, 2));
    if (exit && exit.code !== 0 && exit.signal !== 'SIGTERM') problem(`relay exited with ${exit.code ?? exit.signal} after SIGTERM`);
    if (server.warnCount || server.errorCount) {
      console.log('\nrelay log (WARN/ERROR lines, first 10):');
      for (const l of server.logLines.filter((l) => /\b(WARN|ERROR)/.test(l)).slice(0, 10)) console.log(`  ${l}`);
    }
    if (problems.length) {
      console.log(`\nFAILED: ${problems.length} problem(s); the first ones:`);
      for (const p of problems.slice(0, 20)) console.log(`  - ${p}`);
      process.exit(1);
    }
    console.log('\nall checks passed: every recovering client got exactly the missed events, in order, with their ids, and recovered=true');
    process.exit(0);
  })
  .catch(async (e) => {
    console.error(`recovery-storm: ${e.stack || e.message}`);
    if (problems.length) console.error(`problems:\n  - ${problems.slice(0, 20).join('\n  - ')}`);
    await stopRelay().catch(() => {});
    const tail = server.logLines.slice(-10);
    if (tail.length) console.error(`relay log (last lines):\n  ${tail.join('\n  ')}`);
    process.exit(1);
  });

// Fanout latency: subscribers on public channels + an open-loop REST publisher, in one k6 process
// (one clock), measuring publish -> delivery time.
//
//   k6 run loadtest/k6/fanout.js
//   SUB_VUS=5 SPV=20 CHANNELS=10 RATE=50 DURATION=10s k6 run loadtest/k6/fanout.js
//
// Scenarios:
//   subscribers  per-vu-iterations, SUB_VUS VUs x 1 iteration. Each VU opens SPV sockets; socket n
//                (n = iteration * SPV + j) subscribes to "k6-<n % CHANNELS>", answers pusher:ping and is
//                held for HOLD_MS, then closed.
//   publisher    constant-arrival-rate, RATE publishes/s for DURATION, starting SETTLE after the test
//                start so that every subscriber is in place. Publish s goes to channel "k6-<s % CHANNELS>"
//                with data "t=<Date.now()>;s=<s>;xxxx" (PAYLOAD bytes of padding).
//
// Knobs (env): HOST, PORT, APP_ID, APP_KEY, APP_SECRET, SUB_VUS, SPV, CHANNELS, RATE, DURATION, SETTLE,
// DRAIN, HOLD_MS, SAMPLE, PAYLOAD, PUB_VUS, PUB_MAX_VUS, P99_MS, SUB_TIMEOUT_MS, SUMMARY_JSON.
// See loadtest/README.md.

import http from 'k6/http';
import exec from 'k6/execution';
import { WebSocket } from 'k6/experimental/websockets';
import { setTimeout, setInterval, clearInterval } from 'k6/timers';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  durationMs,
  fmtMs,
  envInt,
  envNum,
  envStr,
  msToDuration,
  renderSummary,
  signedEventsUrl,
  summaryOutputs,
  target,
  wsUrl,
} from './lib/common.js';

const T = target();
const WS_URL = wsUrl(T);

const SUB_VUS = envInt('SUB_VUS', 10);
const SPV = envInt('SPV', 10);
const CHANNELS = Math.max(1, envInt('CHANNELS', 10));
const RATE = envNum('RATE', 50);
const DURATION = envStr('DURATION', '20s');
const DURATION_MS = durationMs(DURATION);
const SETTLE_MS = durationMs(envStr('SETTLE', '3s')); // subscribers' head start before publishing
const DRAIN_MS = durationMs(envStr('DRAIN', '2s')); // time after the last publish for deliveries to land
const HOLD_MS = envInt('HOLD_MS', SETTLE_MS + DURATION_MS + DRAIN_MS);
const SAMPLE = Math.min(1, Math.max(0, envNum('SAMPLE', 1.0)));
const PAYLOAD = Math.max(0, envInt('PAYLOAD', 100));
const PUB_VUS = envInt('PUB_VUS', Math.max(2, Math.ceil(RATE / 100)));
const PUB_MAX_VUS = envInt('PUB_MAX_VUS', Math.max(PUB_VUS * 4, 10));
const P99_MS = envNum('P99_MS', 250);
const SUB_TIMEOUT_MS = envInt('SUB_TIMEOUT_MS', 10000);
const EVENT = 'k6-event';
const PADDING = 'x'.repeat(PAYLOAD);

const TOTAL_SOCKETS = SUB_VUS * SPV;
// Static subscriber count per channel (socket n -> channel n % CHANNELS), for deliveries_expected.
const SUBS_PER_CHANNEL = [];
for (let c = 0; c < CHANNELS; c++) {
  SUBS_PER_CHANNEL.push(Math.floor(TOTAL_SOCKETS / CHANNELS) + (c < TOTAL_SOCKETS % CHANNELS ? 1 : 0));
}

const latency = new Trend('publish_to_delivery', true);
const deliveries = new Counter('deliveries');
const deliveriesExpected = new Counter('deliveries_expected');
const publishes = new Counter('publishes');
const publishFailed = new Rate('publish_failed');
const publishTime = new Trend('publish_duration', true);
const subscribeTime = new Trend('subscribe_duration', true);
const subscribeFailed = new Rate('subscribe_failed');
const unexpectedClose = new Counter('ws_unexpected_close');
const pongs = new Counter('pongs_sent');

export const options = {
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      exec: 'subscriber',
      vus: SUB_VUS,
      iterations: 1,
      maxDuration: msToDuration(HOLD_MS + SUB_TIMEOUT_MS + 30000),
      gracefulStop: '10s',
    },
    publisher: {
      executor: 'constant-arrival-rate',
      exec: 'publisher',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      startTime: msToDuration(SETTLE_MS),
      preAllocatedVUs: PUB_VUS,
      maxVUs: PUB_MAX_VUS,
      gracefulStop: '5s',
    },
  },
  thresholds: {
    publish_to_delivery: [`p(99)<${P99_MS}`],
    publish_failed: ['rate<0.01'],
    subscribe_failed: ['rate<0.01'],
    deliveries: ['count>0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

// Socket n records latency when its Weyl-sequence hash falls under SAMPLE. The hash spreads the
// sampled sockets over all channels (a plain "every k-th socket" would hit one channel only).
function sampled(n) {
  if (SAMPLE >= 1) return true;
  return (Math.imul(n, 0x9e3779b1) >>> 0) / 4294967296 < SAMPLE;
}

export function subscriber() {
  const base = exec.scenario.iterationInTest * SPV;
  let received = 0; // deliveries since the last flush, all sockets of this VU
  let holding = true;
  let warnings = 0;

  const flush = () => {
    if (received > 0) {
      deliveries.add(received); // batched: one sample per second per VU instead of one per message
      received = 0;
    }
  };
  const flusher = setInterval(flush, 1000);

  const sockets = [];
  const failers = [];
  for (let j = 0; j < SPV; j++) {
    const n = base + j;
    const channel = `k6-${n % CHANNELS}`;
    const sample = sampled(n);
    const started = Date.now();
    let state = 0; // 0 connecting, 1 subscribing, 2 subscribed, 3 failed
    const ws = new WebSocket(WS_URL);
    sockets.push(ws);

    const fail = (why) => {
      if (state >= 2) return;
      state = 3;
      subscribeFailed.add(true);
      if (warnings++ < 3) console.warn(`socket ${n} (${channel}): ${why}`);
    };

    ws.onmessage = (e) => {
      const m = e.data;
      // Hot path: an app event carries "t=<ms>; no JSON.parse, a substring scan only.
      const i = m.indexOf('"t=');
      if (i >= 0) {
        received++;
        if (sample) latency.add(Date.now() - parseInt(m.substring(i + 3, i + 20), 10));
        return;
      }
      if (m.indexOf('pusher:ping') >= 0) {
        ws.send('{"event":"pusher:pong","data":{}}');
        pongs.add(1);
      } else if (state === 0 && m.indexOf('pusher:connection_established') >= 0) {
        state = 1;
        ws.send(`{"event":"pusher:subscribe","data":{"auth":"","channel":"${channel}"}}`);
      } else if (state === 1 && m.indexOf('subscription_succeeded') >= 0) {
        state = 2;
        subscribeTime.add(Date.now() - started);
        subscribeFailed.add(false);
      } else if (m.indexOf('pusher:error') >= 0 || m.indexOf('subscription_error') >= 0) {
        fail(`server error ${m}`);
      }
    };
    ws.onerror = (e) => fail(`error ${e.error}`);
    ws.onclose = () => {
      if (holding) {
        unexpectedClose.add(1);
        fail('closed before subscribing');
      }
    };
    failers.push(fail);
  }

  // Sockets still not subscribed after SUB_TIMEOUT_MS count as failed.
  setTimeout(() => {
    for (const f of failers) f(`not subscribed after ${SUB_TIMEOUT_MS} ms`);
  }, Math.min(SUB_TIMEOUT_MS, HOLD_MS));

  setTimeout(() => {
    holding = false;
    clearInterval(flusher);
    flush();
    for (const ws of sockets) ws.close();
  }, HOLD_MS);
}

let seqWarned = 0;

export function publisher() {
  const seq = exec.scenario.iterationInTest;
  const c = seq % CHANNELS;
  const t0 = Date.now();
  const body = `{"name":"${EVENT}","channel":"k6-${c}","data":"t=${t0};s=${seq};${PADDING}"}`;
  const res = http.post(signedEventsUrl(T, body), body, {
    headers: { 'Content-Type': 'application/json' },
    tags: { name: 'publish' },
    timeout: '10s',
  });
  const ok = res.status >= 200 && res.status < 300;
  publishFailed.add(!ok);
  publishTime.add(res.timings.duration);
  if (ok) {
    publishes.add(1);
    deliveriesExpected.add(SUBS_PER_CHANNEL[c]);
  } else if (seqWarned++ < 5) {
    console.warn(`publish ${seq} -> HTTP ${res.status} ${res.error || ''} ${String(res.body).slice(0, 200)}`);
  }
}

export function handleSummary(data) {
  const val = (name, key) => (data.metrics[name] ? data.metrics[name].values[key] : 0);
  const got = val('deliveries', 'count');
  const want = val('deliveries_expected', 'count');
  const pct = want > 0 ? ((100 * got) / want).toFixed(2) : 'n/a';
  const lines = [
    `target          ${WS_URL}`,
    `setup           ${SUB_VUS} VUs x ${SPV} sockets = ${TOTAL_SOCKETS} subscribers on ${CHANNELS} channels; ` +
      `${RATE} publishes/s for ${DURATION}; payload ${PAYLOAD} B; latency sampled on ${(SAMPLE * 100).toFixed(0)}% of sockets`,
    `publishes ok    ${val('publishes', 'count')}  (failed ${val('publish_failed', 'passes')}, ` +
      `dropped by k6 ${val('dropped_iterations', 'count')})`,
    `deliveries      ${got} of ${want} expected (${pct}%)  ~${(got / (DURATION_MS / 1000)).toFixed(0)}/s over DURATION`,
    `latency (ms)    p50=${fmtMs(val('publish_to_delivery', 'med'))} p95=${fmtMs(val('publish_to_delivery', 'p(95)'))} ` +
      `p99=${fmtMs(val('publish_to_delivery', 'p(99)'))} max=${fmtMs(val('publish_to_delivery', 'max'))}`,
  ];
  if (want > 0 && got < want * 0.99) lines.push('WARNING: more than 1% of the expected deliveries are missing');
  if (got > want) lines.push('NOTE: more deliveries than expected (extra subscribers on k6-* channels?)');
  return summaryOutputs(data, renderSummary(data, 'relay k6 fanout', lines));
}

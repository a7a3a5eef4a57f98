// Connect + subscribe ramp: how long a WebSocket handshake plus a public-channel subscribe takes while
// the number of connecting clients ramps up.
//
//   k6 run loadtest/k6/connect.js
//   VUS=100 SPV=20 RAMP=20s STEADY=20s HOLD_MS=2000 k6 run loadtest/k6/connect.js
//
// Scenario "connect" (ramping-vus): 0 -> VUS VUs over RAMP, VUS for STEADY, then down to 0 over RAMP_DOWN.
// Every iteration of a VU opens SPV sockets at once; each waits for pusher:connection_established,
// subscribes to "k6-connect-<n % CHANNELS>", waits for pusher_internal:subscription_succeeded, and once
// all SPV sockets are through, the VU holds them for HOLD_MS, closes them and starts over. So about
// VUS x SPV connections are open at the peak, with constant connect/disconnect churn.
//
// Knobs (env): HOST, PORT, APP_KEY, VUS, SPV, CHANNELS, RAMP, STEADY, RAMP_DOWN, HOLD_MS, P95_MS,
// SUB_TIMEOUT_MS, SUMMARY_JSON. See loadtest/README.md.

import exec from 'k6/execution';
import { WebSocket } from 'k6/experimental/websockets';
import { setTimeout, clearTimeout } from 'k6/timers';
import { Counter, Rate, Trend } from 'k6/metrics';
import { durationMs, fmtMs, envInt, envNum, envStr, msToDuration, renderSummary, summaryOutputs, target, wsUrl } from './lib/common.js';

const T = target();
const WS_URL = wsUrl(T);

const VUS = envInt('VUS', 50);
const SPV = envInt('SPV', 10);
const CHANNELS = Math.max(1, envInt('CHANNELS', 10));
const RAMP = envStr('RAMP', '10s');
const STEADY = envStr('STEADY', '10s');
const RAMP_DOWN = envStr('RAMP_DOWN', '2s');
const HOLD_MS = envInt('HOLD_MS', 1000);
const P95_MS = envNum('P95_MS', 500);
const SUB_TIMEOUT_MS = envInt('SUB_TIMEOUT_MS', 10000);

const handshakeTime = new Trend('handshake_time', true); // new WebSocket() -> pusher:connection_established
const subscribeTime = new Trend('subscribe_time', true); // subscribe sent -> subscription_succeeded
const connectSubscribeTime = new Trend('connect_subscribe_time', true); // new WebSocket() -> subscription_succeeded
const connections = new Counter('connections_ok');
const connectFailed = new Rate('connect_failed');
const unexpectedClose = new Counter('ws_unexpected_close');

export const options = {
  scenarios: {
    connect: {
      executor: 'ramping-vus',
      exec: 'connect',
      startVUs: 0,
      stages: [
        { duration: RAMP, target: VUS },
        { duration: STEADY, target: VUS },
        { duration: RAMP_DOWN, target: 0 },
      ],
      gracefulRampDown: msToDuration(HOLD_MS + SUB_TIMEOUT_MS + 2000),
      gracefulStop: msToDuration(HOLD_MS + SUB_TIMEOUT_MS + 2000),
    },
  },
  thresholds: {
    connect_subscribe_time: [`p(95)<${P95_MS}`],
    handshake_time: [`p(95)<${P95_MS}`],
    connect_failed: ['rate<0.01'],
    connections_ok: ['count>0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export function connect() {
  const base = exec.scenario.iterationInTest * SPV;
  const sockets = [];
  const failers = [];
  let deadline = null;
  let outstanding = SPV; // sockets not yet subscribed or failed
  let holding = true;
  let warnings = 0;
  let holdTimer = null;

  const closeAll = () => {
    holding = false;
    if (deadline !== null) clearTimeout(deadline);
    if (holdTimer !== null) clearTimeout(holdTimer);
    for (const ws of sockets) ws.close();
  };
  // Once every socket is subscribed (or has failed), hold them for HOLD_MS, then close.
  const settled = () => {
    if (--outstanding === 0) holdTimer = setTimeout(closeAll, HOLD_MS);
  };

  for (let j = 0; j < SPV; j++) {
    const n = base + j;
    const channel = `k6-connect-${n % CHANNELS}`;
    let state = 0; // 0 connecting, 1 subscribing, 2 subscribed, 3 failed
    let established = 0;
    const started = Date.now();
    const ws = new WebSocket(WS_URL);
    sockets.push(ws);

    const fail = (why) => {
      if (state >= 2) return;
      state = 3;
      connectFailed.add(true);
      if (warnings++ < 3) console.warn(`socket ${n} (${channel}): ${why}`);
      settled();
    };
    failers.push(fail);

    ws.onmessage = (e) => {
      const m = e.data;
      if (m.indexOf('pusher:ping') >= 0) {
        ws.send('{"event":"pusher:pong","data":{}}');
      } else if (state === 0 && m.indexOf('pusher:connection_established') >= 0) {
        state = 1;
        established = Date.now();
        handshakeTime.add(established - started);
        ws.send(`{"event":"pusher:subscribe","data":{"auth":"","channel":"${channel}"}}`);
      } else if (state === 1 && m.indexOf('subscription_succeeded') >= 0) {
        state = 2;
        const now = Date.now();
        subscribeTime.add(now - established);
        connectSubscribeTime.add(now - started);
        connections.add(1);
        connectFailed.add(false);
        settled();
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
  }

  deadline = setTimeout(() => {
    for (const f of failers) f(`not subscribed after ${SUB_TIMEOUT_MS} ms`);
  }, SUB_TIMEOUT_MS);
}

export function handleSummary(data) {
  const v = (name, key) => (data.metrics[name] ? data.metrics[name].values[key] : 0);
  const lines = [
    `target          ${WS_URL}`,
    `setup           ramp 0 -> ${VUS} VUs over ${RAMP}, steady ${STEADY}; ${SPV} sockets per VU iteration, ` +
      `held ${HOLD_MS} ms; ~${VUS * SPV} connections open at the peak`,
    `connections     ${v('connections_ok', 'count')} subscribed, ${v('connect_failed', 'passes')} failed, ` +
      `${v('ws_unexpected_close', 'count')} closed early`,
    `connect+sub ms  p50=${fmtMs(v('connect_subscribe_time', 'med'))} p95=${fmtMs(v('connect_subscribe_time', 'p(95)'))} ` +
      `p99=${fmtMs(v('connect_subscribe_time', 'p(99)'))} max=${fmtMs(v('connect_subscribe_time', 'max'))}`,
    `handshake ms    p50=${fmtMs(v('handshake_time', 'med'))} p95=${fmtMs(v('handshake_time', 'p(95)'))} ` +
      `p99=${fmtMs(v('handshake_time', 'p(99)'))}`,
  ];
  return summaryOutputs(data, renderSummary(data, 'relay k6 connect ramp', lines));
}

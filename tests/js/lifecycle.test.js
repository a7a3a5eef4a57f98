'use strict';
// Liveness checks (4201) and graceful shutdown (4200). docs/protocol.md#heartbeats, #close-codes, items 12, 13, 16.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

describe('heartbeats (RELAY_ACTIVITY_TIMEOUT=1, RELAY_PONG_TIMEOUT=1)', () => {
  let relay;
  before(async () => {
    relay = await h.startRelay({ env: { RELAY_ACTIVITY_TIMEOUT: '1', RELAY_PONG_TIMEOUT: '1' } });
  });
  after(async () => {
    await relay.stop();
  });

  it('connection_established advertises the configured activity_timeout', async () => {
    const { raw, data } = await h.rawConnect(relay);
    assert.equal(data.activity_timeout, 1);
    raw.close(1000);
  });

  it('a silent client that answers no ping is closed with 4201 (item 12)', async () => {
    const t0 = Date.now();
    const { raw } = await h.rawConnect(relay, { wsOptions: { autoPong: false } });
    const close = await raw.waitClose(10000);
    assert.equal(close.code, 4201);
    assert.ok(Date.now() - t0 >= 1000, 'closed before activity_timeout elapsed');
  });

  it('a client that answers WebSocket pings but sends no text stays connected (item 13)', async () => {
    const { raw } = await h.rawConnect(relay); // `ws` answers control pings automatically
    let controlPings = 0;
    raw.ws.on('ping', () => controlPings++);
    // also answer a pusher:ping event if the server sends one — still no text of our own otherwise
    raw.ws.on('message', (d) => {
      const m = h.parseJson(d.toString());
      if (m && m.event === 'pusher:ping') raw.send({ event: 'pusher:pong', data: {} });
    });
    await h.sleep(6000);
    assert.equal(raw.closeInfo, null, `closed: ${JSON.stringify(raw.closeInfo)}`);
    assert.ok(raw.isOpen);
    assert.ok(controlPings + raw.all.filter((f) => f.json && f.json.event === 'pusher:ping').length > 0,
      'server never checked liveness');
    await raw.ping();
    raw.close(1000);
  });

  it('a pusher-js client stays connected across several activity timeouts', async () => {
    const { client, socketId } = await h.connectedClient(relay);
    const states = [];
    client.connection.bind('state_change', ({ current }) => states.push(current));
    await h.sleep(4000);
    assert.deepEqual(states, []);
    assert.equal(client.connection.socket_id, socketId);
    h.disconnect(relay, client);
  });
});

describe('graceful shutdown', () => {
  let relay;
  before(async () => {
    // The drain spreads its closes over 70% of the grace period: a short one keeps the test short.
    relay = await h.startRelay({ env: { RELAY_SHUTDOWN_GRACE: '2' } });
  });
  after(async () => {
    await relay.stop();
  });

  it('SIGTERM closes every connected client with 4200 and the process exits (item 16)', async () => {
    const raws = await Promise.all(Array.from({ length: 6 }, () => h.rawConnect(relay)));
    await Promise.all(raws.map((r, i) => r.raw.subscribe(`shutdown-${i % 2}`)));
    const { client } = await h.connectedClient(relay);
    const pusherJsClose = h.withTimeout(
      new Promise((resolve) =>
        client.connection.bind('error', (e) => {
          const inner = e && e.error && e.error.data ? e.error : e;
          if (inner && inner.data && inner.data.code) resolve(inner.data.code);
        }),
      ),
      6000,
      'pusher-js close error',
    ).catch(() => null);

    relay.proc.kill('SIGTERM');
    const closes = await Promise.all(raws.map((r) => r.raw.waitClose(6000)));
    for (const c of closes) assert.equal(c.code, 4200);
    assert.equal(await pusherJsClose, 4200);
    h.disconnect(relay, client); // pusher-js would retry at once (4200 = reconnect now)
    const exit = await h.withTimeout(relay.exited, 6000, 'relay exit after SIGTERM');
    assert.equal(exit.signal, null, `relay was killed by ${exit.signal}`);
    assert.equal(exit.code, 0);
  });
});

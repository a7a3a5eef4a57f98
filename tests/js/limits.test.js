'use strict';
// Connection quotas: per-app max_connections (4004) and whole-server capacity (4100). docs/protocol.md#connection-limits, item 6.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

describe('per-app connection quota (RELAY_MAX_CONNECTIONS=1)', () => {
  let relay;
  before(async () => {
    relay = await h.startRelay({ env: { RELAY_MAX_CONNECTIONS: '1' } });
  });
  after(async () => {
    await relay.stop();
  });

  it('second connection is closed with 4004, the first keeps working (item 6)', async () => {
    const first = await h.connectedClient(relay);
    const channel = await h.subscribe(first.client, 'quota-channel');
    const got = new h.Collector(channel, 'ev');

    const { raw, httpStatus } = await h.rawOpen(relay);
    assert.equal(httpStatus, undefined);
    const close = await raw.waitClose();
    assert.equal(close.code, 4004);
    assert.ok(!raw.all.some((f) => f.json && f.json.event === 'pusher:connection_established'));
    const err = raw.all.find((f) => f.json && f.json.event === 'pusher:error');
    if (err) assert.equal(err.json.data.code, 4004);

    // pusher-js treats 4004 as refused (no reconnect) and reports the code
    const second = h.pusherClient(relay);
    const refusal = await h.withTimeout(
      new Promise((resolve) =>
        second.connection.bind('error', (e) => {
          const inner = e && e.error && e.error.data ? e.error : e;
          if (inner && inner.data && inner.data.code) resolve(inner.data.code);
        }),
      ),
      5000,
      'pusher-js quota error',
    );
    assert.equal(refusal, 4004);
    h.disconnect(relay, second);

    // first connection unaffected
    assert.equal(first.client.connection.state, 'connected');
    const sdk = h.serverSdk(relay);
    await sdk.trigger('quota-channel', 'ev', { n: 1 });
    const events = await got.waitFor(1);
    assert.deepEqual(events[0].data, { n: 1 });
  });

  it('a slot freed by a disconnect can be used again', async () => {
    for (const c of [...relay.clients]) h.disconnect(relay, c);
    await h.eventually(
      async () => {
        const { raw } = await h.rawOpen(relay);
        const f = await raw.next(() => true, 2000, 'first frame');
        if (f.event !== 'pusher:connection_established') {
          raw.terminate();
          throw new Error(`got ${JSON.stringify(f)}`);
        }
        raw.close(1000);
      },
      { timeout: 5000, interval: 100, what: 'connection accepted after the first one left' },
    );
  });
});

describe('server capacity (RELAY_SERVER_MAX_CONNECTIONS=1)', () => {
  let relay;
  before(async () => {
    relay = await h.startRelay({ env: { RELAY_SERVER_MAX_CONNECTIONS: '1' } });
  });
  after(async () => {
    await relay.stop();
  });

  it('connection over server capacity is closed with 4100, the first keeps working', async () => {
    const first = await h.rawConnect(relay);
    const { raw, httpStatus } = await h.rawOpen(relay);
    assert.equal(httpStatus, undefined);
    const close = await raw.waitClose();
    assert.equal(close.code, 4100);
    assert.ok(!raw.all.some((f) => f.json && f.json.event === 'pusher:connection_established'));
    await first.raw.ping();
    first.raw.close(1000);
  });
});

'use strict';
// Recovery with stock pusher-js and clients/js/relay-recovery.js (docs/protocol.md#history): while events are
// published, the connection is cut; pusher-js reconnects by itself, resubscribes with the last event id, and the
// app sees every event exactly once, in order.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const { enableRecovery } = require('../../clients/js/relay-recovery');

describe('recovery after a dropped connection (RELAY_HISTORY_ENABLED=true)', () => {
  let relay;
  let recovery;
  const reports = [];
  before(async () => {
    relay = await h.startRelay({ env: { RELAY_HISTORY_ENABLED: 'true', RELAY_HISTORY_MAX: '1000' } });
    recovery = enableRecovery(h.PusherClient, {
      onRecovery: (channel, report) => reports.push({ channel, ...report }),
    });
  });
  after(async () => {
    recovery.disable();
    await relay.stop();
  });

  it('every event arrives exactly once, in order, across a reconnect', async () => {
    const { client, socketId } = await h.connectedClient(relay);
    const channel = await h.subscribe(client, 'orders');
    const seen = [];
    channel.bind('order', (data) => seen.push(data.n));
    const sdk = h.serverSdk(relay);
    const TOTAL = 300;
    let cut = false;
    for (let n = 0; n < TOTAL; n++) {
      const res = await h.sdkResult(sdk.trigger('orders', 'order', { n }));
      assert.equal(res.status, 200);
      if (!cut && seen.length >= 80) {
        // The network drops: pusher-js sees its socket close and reconnects on its own.
        const socket = client.connection.connection.transport.socket;
        socket._stream.destroy();
        cut = true;
      }
      await h.sleep(3);
    }
    assert.ok(cut, 'the connection was never cut');
    await h.eventually(() => assert.ok(seen.length >= TOTAL), { timeout: 15000, what: `${TOTAL} events` });
    await h.sleep(200);
    assert.deepEqual(seen, Array.from({ length: TOTAL }, (_, i) => i), 'every event once, in order');
    assert.notEqual(client.connection.socket_id, socketId, 'pusher-js did not reconnect');
    const report = reports.find((r) => r.channel === 'orders');
    assert.ok(report, 'no relay:recovery report');
    assert.equal(report.recovered, true);
    assert.ok(report.replayed > 0, `nothing was replayed: ${JSON.stringify(report)}`);
    assert.match(recovery.lastEventId('orders', relay.app.key), /^\d+-\d+$/);
    h.disconnect(relay, client);
  });

  it('Laravel Echo (on pusher-js) gets the same: every event once, in order, across a reconnect', async () => {
    // The ES module build: the CommonJS one of laravel-echo 2.5 is broken.
    const { default: Echo } = await import('laravel-echo');
    const client = h.pusherClient(relay);
    const echo = new Echo({ broadcaster: 'pusher', key: relay.app.key, client });
    await h.awaitConnected(client);
    const socketId = echo.socketId();
    const seen = [];
    let subscribed = false;
    echo
      .channel('shipments')
      .subscribed(() => (subscribed = true))
      .listen('.shipped', (data) => seen.push(data.n));
    await h.eventually(() => assert.ok(subscribed), { what: 'Echo subscribed' });
    const sdk = h.serverSdk(relay);
    const TOTAL = 200;
    let cut = false;
    for (let n = 0; n < TOTAL; n++) {
      assert.equal((await h.sdkResult(sdk.trigger('shipments', 'shipped', { n }))).status, 200);
      if (!cut && seen.length >= 50) {
        echo.connector.pusher.connection.connection.transport.socket._stream.destroy();
        cut = true;
      }
      await h.sleep(3);
    }
    await h.eventually(() => assert.ok(seen.length >= TOTAL), { timeout: 15000, what: `${TOTAL} events` });
    await h.sleep(200);
    assert.deepEqual(seen, Array.from({ length: TOTAL }, (_, i) => i));
    assert.notEqual(echo.socketId(), socketId, 'Echo did not reconnect');
    assert.ok(reports.some((r) => r.channel === 'shipments' && r.recovered && r.replayed > 0));
    echo.disconnect();
    h.disconnect(relay, client);
  });

  it('a channel the client left and joins again starts fresh, without a replay', async () => {
    const { client } = await h.connectedClient(relay);
    await h.subscribe(client, 'fresh');
    const sdk = h.serverSdk(relay);
    await h.sdkResult(sdk.trigger('fresh', 'e', { n: 1 }));
    await h.eventually(() => assert.ok(recovery.lastEventId('fresh', relay.app.key)), { what: 'an id' });
    client.unsubscribe('fresh');
    await h.eventually(() => assert.equal(recovery.lastEventId('fresh', relay.app.key), undefined), {
      what: 'the id forgotten',
    });
    const before = reports.length;
    await h.subscribe(client, 'fresh');
    await h.sleep(200);
    assert.equal(reports.length, before, 'a fresh subscribe got a recovery report');
    h.disconnect(relay, client);
  });
});

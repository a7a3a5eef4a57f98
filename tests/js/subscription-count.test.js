'use strict';
// subscription_count events (RELAY_SUBSCRIPTION_COUNT=true) through pusher-js's `pusher:subscription_count` and at
// the frame level; none for presence channels, none when the feature is off. docs/protocol.md#subscription-count, item 95.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

/** Subscribe with pusher-js, recording pusher:subscription_count payloads from the start. */
async function counted(client, name) {
  const channel = client.subscribe(name);
  const counts = [];
  channel.bind('pusher:subscription_count', (d) => counts.push(d.subscription_count));
  await h.subscribe(client, name);
  return { channel, counts };
}

describe('subscription_count enabled', () => {
  let relay;
  let sdk;
  before(async () => {
    relay = await h.startRelay({ env: { RELAY_SUBSCRIPTION_COUNT: 'true' } });
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  it('pusher-js gets pusher:subscription_count on subscribe, unsubscribe and disconnect (public and private)', async () => {
    for (const ch of ['sc-public', 'private-sc']) {
      const opts = { channelAuthorization: h.sdkChannelAuth(sdk) };
      const a = await h.connectedClient(relay, opts);
      const b = await h.connectedClient(relay, opts);
      const c = await h.connectedClient(relay, opts);
      const ca = await counted(a.client, ch);
      await h.eventually(() => assert.deepEqual(ca.counts, [1]), { what: `${ch}: count 1` });
      assert.equal(ca.channel.subscriptionCount, 1);
      const cb = await counted(b.client, ch);
      await h.eventually(() => {
        assert.deepEqual(ca.counts, [1, 2]);
        assert.equal(cb.counts.at(-1), 2);
      }, { what: `${ch}: count 2 to both` });
      await counted(c.client, ch);
      await h.eventually(() => assert.equal(ca.counts.at(-1), 3), { what: `${ch}: count 3` });
      b.client.unsubscribe(ch);
      await h.eventually(() => assert.equal(ca.counts.at(-1), 2), { what: `${ch}: count 2 after unsubscribe` });
      h.disconnect(relay, c.client);
      await h.eventually(() => assert.equal(ca.counts.at(-1), 1), { what: `${ch}: count 1 after disconnect` });
      assert.equal(ca.channel.subscriptionCount, 1);
      h.disconnect(relay, a.client);
      h.disconnect(relay, b.client);
    }
  });

  it('wire frame: pusher_internal:subscription_count with string data; none on presence channels', async () => {
    const a = await h.rawConnect(relay);
    await a.raw.subscribe('sc-wire');
    const f = await a.raw.nextEvent('pusher_internal:subscription_count', 'sc-wire');
    assert.deepEqual(f, {
      event: 'pusher_internal:subscription_count',
      channel: 'sc-wire',
      data: '{"subscription_count":1}',
    });
    const cd = '{"user_id":"1"}';
    await a.raw.subscribe('presence-sc', { auth: h.presenceAuth(relay, a.socketId, 'presence-sc', cd), channel_data: cd });
    const b = await h.rawConnect(relay);
    const cd2 = '{"user_id":"2"}';
    await b.raw.subscribe('presence-sc', { auth: h.presenceAuth(relay, b.socketId, 'presence-sc', cd2), channel_data: cd2 });
    await a.raw.nextEvent('pusher_internal:member_added', 'presence-sc');
    await a.raw.expectNone(
      (m) => m && m.event === 'pusher_internal:subscription_count' && m.channel === 'presence-sc',
      300,
      'subscription_count on a presence channel',
    );
    assert.ok(!b.raw.all.some((x) => x.json && x.json.event === 'pusher_internal:subscription_count'));
    a.raw.close(1000);
    b.raw.close(1000);
  });
});

describe('subscription_count disabled (default)', () => {
  let relay;
  before(async () => {
    relay = await h.startRelay();
  });
  after(async () => {
    await relay.stop();
  });

  it('no pusher:subscription_count events', async () => {
    const a = await h.connectedClient(relay);
    const b = await h.connectedClient(relay);
    const ca = await counted(a.client, 'sc-off');
    await counted(b.client, 'sc-off');
    await h.sleep(300);
    assert.deepEqual(ca.counts, []);
    h.disconnect(relay, a.client);
    h.disconnect(relay, b.client);
  });
});

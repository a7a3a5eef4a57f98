'use strict';
// Cache channels with pusher-js: the last REST event is replayed to a late subscriber right after
// subscription_succeeded, an empty cache gives pusher:cache_miss, REST info=cache, TTL expiry, and client events
// are never cached. docs/protocol.md#cache-channels, items 50, 61–64.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

const MASTER_KEY_B64 = crypto.randomBytes(32).toString('base64');

/** Subscribe with pusher-js recording every channel event (incl. pusher:*) in order from the start. */
async function subscribeLogged(client, name) {
  const channel = client.subscribe(name);
  const log = [];
  channel.bind_global((event, data) => log.push({ event, data }));
  await h.subscribe(client, name);
  return { channel, log };
}

describe('cache channels with pusher-js', () => {
  let relay;
  let sdk;
  let auth;
  before(async () => {
    relay = await h.startRelay();
    sdk = h.serverSdk(relay, { encryptionMasterKeyBase64: MASTER_KEY_B64 });
    auth = { channelAuthorization: h.sdkChannelAuth(sdk, (sid) => ({ user_id: `u-${sid}` })) };
  });
  after(async () => {
    await relay.stop();
  });

  const cacheInfo = async (name) => {
    const r = await h.sdkResult(sdk.get({ path: `/channels/${name}`, params: { info: 'cache' } }));
    assert.equal(r.status, 200, r.body);
    return r.json.cache;
  };

  it('empty cache-x -> pusher:cache_miss after subscription_succeeded; info=cache is null (items 62, 64)', async () => {
    const { client } = await h.connectedClient(relay);
    const { log } = await subscribeLogged(client, 'cache-empty');
    await h.eventually(() => assert.ok(log.some((e) => e.event === 'pusher:cache_miss')), { what: 'pusher:cache_miss' });
    assert.deepEqual(
      log.map((e) => e.event),
      ['pusher:subscription_succeeded', 'pusher:cache_miss'],
    );
    assert.equal(await cacheInfo('cache-empty'), null);
    // wire frame: channel key present, data absent or "{}"
    const probe = await h.rawConnect(relay);
    await probe.raw.subscribe('cache-empty');
    const miss = await probe.raw.nextEvent('pusher:cache_miss', 'cache-empty');
    assert.ok(miss.data === undefined || miss.data === '{}', JSON.stringify(miss));
    probe.raw.close(1000);
    h.disconnect(relay, client);
  });

  it('trigger, then a late subscriber gets the last event right after subscription_succeeded, only it (item 61)', async () => {
    const ch = 'cache-x';
    const early = await h.connectedClient(relay);
    const earlyCh = await subscribeLogged(early.client, ch);
    await h.eventually(() => assert.equal(earlyCh.log.at(-1).event, 'pusher:cache_miss'), { what: 'first cache_miss' });
    assert.equal((await sdk.trigger(ch, 'ev1', { v: 1 })).status, 200);
    assert.equal((await sdk.trigger(ch, 'ev2', { v: 2 })).status, 200);
    await h.eventually(() => assert.equal(earlyCh.log.length, 4), { what: 'live ev1, ev2 at the early subscriber' });

    const late = await h.connectedClient(relay);
    const lateCh = await subscribeLogged(late.client, ch);
    await h.eventually(() => assert.equal(lateCh.log.length, 2), { what: 'cached event at the late subscriber' });
    assert.deepEqual(lateCh.log, [
      { event: 'pusher:subscription_succeeded', data: {} },
      { event: 'ev2', data: { v: 2 } },
    ]);
    await h.sleep(200);
    assert.equal(earlyCh.log.length, 4, `replay leaked to the existing subscriber: ${JSON.stringify(earlyCh.log)}`);
    assert.equal(lateCh.log.length, 2);

    // exact wire frame, after subscription_succeeded
    const probe = await h.rawConnect(relay);
    probe.raw.send({ event: 'pusher:subscribe', data: { auth: '', channel: ch } });
    const first = await probe.raw.next((m) => m && m.channel === ch);
    assert.equal(first.event, 'pusher_internal:subscription_succeeded');
    assert.deepEqual(await probe.raw.next((m) => m && m.channel === ch), { event: 'ev2', channel: ch, data: '{"v":2}' });

    const cache = await cacheInfo(ch);
    assert.equal(cache.data, '{"v":2}');
    assert.ok(Number.isInteger(cache.ttl) && cache.ttl > 0 && cache.ttl <= 1800, JSON.stringify(cache));
    probe.raw.close(1000);
    h.disconnect(relay, early.client);
    h.disconnect(relay, late.client);
  });

  it('the cache outlives its subscribers; triggerBatch also fills it (item 61)', async () => {
    await sdk.triggerBatch([
      { channel: 'cache-batch-a', name: 'b1', data: { a: 1 } },
      { channel: 'cache-batch-b', name: 'b2', data: 'plain' },
    ]);
    const { client } = await h.connectedClient(relay);
    const a = await subscribeLogged(client, 'cache-batch-a');
    const b = await subscribeLogged(client, 'cache-batch-b');
    await h.eventually(() => {
      assert.deepEqual(a.log.at(-1), { event: 'b1', data: { a: 1 } });
      assert.deepEqual(b.log.at(-1), { event: 'b2', data: 'plain' });
    }, { what: 'cached batch events' });
    h.disconnect(relay, client);
  });

  it('private-cache-, presence-cache- and private-encrypted-cache- replay too; the encrypted one decrypts (item 61)', async () => {
    const chans = ['private-cache-p', 'presence-cache-p', 'private-encrypted-cache-p'];
    for (const ch of chans) assert.equal((await sdk.trigger(ch, 'stored', { ch, secret: 42 })).status, 200);
    const { client } = await h.connectedClient(relay, auth);
    for (const ch of chans) {
      const { log } = await subscribeLogged(client, ch);
      await h.eventually(() => assert.ok(log.some((e) => e.event === 'stored')), { what: `cached event on ${ch}` });
      assert.equal(log[0].event, 'pusher:subscription_succeeded', ch);
      assert.deepEqual(log.find((e) => e.event === 'stored').data, { ch, secret: 42 });
    }
    const encrypted = await cacheInfo('private-encrypted-cache-p');
    assert.deepEqual(Object.keys(JSON.parse(encrypted.data)).sort(), ['ciphertext', 'nonce'], 'stored as ciphertext');
    // an empty private-cache channel misses
    const { log } = await subscribeLogged(client, 'private-cache-empty');
    await h.eventually(() => assert.equal(log.at(-1).event, 'pusher:cache_miss'), { what: 'private-cache miss' });
    h.disconnect(relay, client);
  });

  it('client events are not cached: a later subscriber still gets pusher:cache_miss (item 50)', async () => {
    const ch = 'private-cache-client';
    const a = await h.connectedClient(relay, auth);
    const b = await h.connectedClient(relay, auth);
    const chA = await subscribeLogged(a.client, ch);
    const chB = await subscribeLogged(b.client, ch);
    chA.channel.trigger('client-note', { n: 1 });
    await h.eventually(() => assert.ok(chB.log.some((e) => e.event === 'client-note')), { what: 'client event relayed' });
    const c = await h.connectedClient(relay, auth);
    const chC = await subscribeLogged(c.client, ch);
    await h.eventually(() => assert.equal(chC.log.at(-1).event, 'pusher:cache_miss'), { what: 'cache_miss' });
    assert.ok(!chC.log.some((e) => e.event === 'client-note'));
    assert.equal(await cacheInfo(ch), null);
    for (const x of [a, b, c]) h.disconnect(relay, x.client);
  });

  it('non-cache channels get neither replay nor cache_miss', async () => {
    await sdk.trigger('plain-x', 'ev', {});
    const { client } = await h.connectedClient(relay);
    const { log } = await subscribeLogged(client, 'plain-x');
    await h.sleep(200);
    assert.deepEqual(log.map((e) => e.event), ['pusher:subscription_succeeded']);
    h.disconnect(relay, client);
  });
});

describe('cache TTL (apps file cache_ttl_secs = 1)', () => {
  let relay;
  let sdk;
  before(async () => {
    const file = h.appsFile([{ id: 'app-id', key: 'app-key', secret: 'app-secret', cache_ttl_secs: 1 }]);
    relay = await h.startRelay({ env: { RELAY_APPS_FILE: file } });
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  it('hit before expiry, pusher:cache_miss and cache:null after (items 63, 64)', async () => {
    const ch = 'cache-ttl';
    await sdk.trigger(ch, 'soon-gone', { v: 1 });
    const r = await h.sdkResult(sdk.get({ path: `/channels/${ch}`, params: { info: 'cache' } }));
    assert.equal(r.json.cache.data, '{"v":1}');
    assert.ok(r.json.cache.ttl >= 0 && r.json.cache.ttl <= 1, JSON.stringify(r.json));
    const { client } = await h.connectedClient(relay);
    const hit = await subscribeLogged(client, ch);
    await h.eventually(() => assert.equal(hit.log.at(-1).event, 'soon-gone'), { what: 'cache hit' });
    h.disconnect(relay, client);

    await h.sleep(2100);
    const after = await h.sdkResult(sdk.get({ path: `/channels/${ch}`, params: { info: 'cache' } }));
    assert.equal(after.json.cache, null, after.body);
    const { client: c2 } = await h.connectedClient(relay);
    const miss = await subscribeLogged(c2, ch);
    await h.eventually(() => assert.equal(miss.log.at(-1).event, 'pusher:cache_miss'), { what: 'cache_miss after TTL' });
    assert.ok(!miss.log.some((e) => e.event === 'soon-gone'));
    h.disconnect(relay, c2);
  });
});

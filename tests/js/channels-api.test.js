'use strict';
// Channel queries through the official SDK: GET /channels, /channels/{name}, /channels/{name}/stats, /stats,
// and how counts follow subscribe / unsubscribe / disconnect across both workers. docs/protocol.md#list-channels, #channel-info, items 70, 74, 88.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

describe('channel queries', () => {
  let relay;
  let sdk;
  before(async () => {
    relay = await h.startRelay();
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  const getChannels = (params) => h.sdkResult(sdk.get({ path: '/channels', params }));
  const getChannel = (name, params) => h.sdkResult(sdk.get({ path: `/channels/${name}`, params }));

  it('GET /channels with nothing occupied -> {"channels":{}}', async () => {
    const r = await getChannels();
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(r.json, { channels: {} });
  });

  it('GET /channels lists exactly the occupied channels; filter_by_prefix filters', async () => {
    const { client, socketId } = await h.connectedClient(relay, {
      channelAuthorization: {
        customHandler: ({ socketId: sid, channelName }, cb) => cb(null, sdk.authorizeChannel(sid, channelName)),
      },
    });
    assert.ok(socketId);
    await h.subscribe(client, 'list-a');
    await h.subscribe(client, 'list-b');
    await h.subscribe(client, 'private-list-c');
    const all = await getChannels();
    assert.equal(all.status, 200);
    assert.deepEqual(all.json, { channels: { 'list-a': {}, 'list-b': {}, 'private-list-c': {} } });
    const filtered = await getChannels({ filter_by_prefix: 'private-' });
    assert.equal(filtered.status, 200);
    assert.deepEqual(filtered.json, { channels: { 'private-list-c': {} } });
    const none = await getChannels({ filter_by_prefix: 'presence-' });
    assert.deepEqual(none.json, { channels: {} });
    h.disconnect(relay, client);
    await h.eventually(async () => assert.deepEqual((await getChannels()).json, { channels: {} }), {
      what: 'channels gone after disconnect',
    });
  });

  it('subscription_count follows subscribe, unsubscribe and disconnect across 8 clients', async () => {
    const clients = await Promise.all(Array.from({ length: 8 }, () => h.connectedClient(relay)));
    for (const { client } of clients) await h.subscribe(client, 'counted');
    const count = async () => {
      const r = await getChannel('counted', { info: 'subscription_count' });
      assert.equal(r.status, 200, r.body);
      return r.json;
    };
    assert.deepEqual(await count(), { occupied: true, subscription_count: 8 });

    clients[0].client.unsubscribe('counted');
    clients[1].client.unsubscribe('counted');
    await h.eventually(async () => assert.deepEqual(await count(), { occupied: true, subscription_count: 6 }), {
      what: 'count 6 after two unsubscribes',
    });

    h.disconnect(relay, clients[2].client);
    h.disconnect(relay, clients[3].client);
    h.disconnect(relay, clients[4].client);
    await h.eventually(async () => assert.deepEqual(await count(), { occupied: true, subscription_count: 3 }), {
      what: 'count 3 after three disconnects',
    });

    const plain = await getChannel('counted');
    assert.equal(plain.status, 200);
    assert.equal(plain.json.occupied, true);

    for (const { client } of clients.slice(5)) h.disconnect(relay, client);
    await h.eventually(async () => assert.deepEqual(await count(), { occupied: false, subscription_count: 0 }), {
      what: 'unoccupied with count 0 after everyone left',
    });
    for (const { client } of clients.slice(0, 2)) h.disconnect(relay, client);
  });

  it('GET /channels/{name} of a never-used channel -> 200 {"occupied":false} (item 74)', async () => {
    const r = await getChannel('never-used');
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(r.json, { occupied: false });
  });

  it('deprecated GET /channels/{name}/stats -> occupied and connection_count (item 88)', async () => {
    const subs = await Promise.all(Array.from({ length: 3 }, () => h.rawConnect(relay)));
    await Promise.all(subs.map((s) => s.raw.subscribe('stats-ch')));
    const r = await h.sdkResult(sdk.get({ path: '/channels/stats-ch/stats' }));
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.occupied, true);
    assert.equal(r.json.connection_count, 3);
    assert.equal(r.json.user_count, undefined, 'user_count only for presence channels');
    for (const s of subs) s.raw.close(1000);
    await h.eventually(async () => {
      const e = await h.sdkResult(sdk.get({ path: '/channels/stats-ch/stats' }));
      assert.equal(e.status, 200);
      assert.equal(e.json.occupied, false);
    }, { what: 'stats unoccupied after close' });
  });

  it('GET /stats and /health answer, and /stats counts connections and channels', async () => {
    const health = await h.getJson(relay, '/health');
    assert.equal(health.status, 200);
    await h.eventually(async () => assert.deepEqual((await h.getJson(relay, '/stats')).json, { connections: 0, channels: 0 }), {
      what: 'empty /stats',
    });
    const subs = await Promise.all(Array.from({ length: 5 }, () => h.rawConnect(relay)));
    await subs[0].raw.subscribe('s-1');
    await subs[1].raw.subscribe('s-1');
    await subs[2].raw.subscribe('s-2');
    await h.eventually(async () => assert.deepEqual((await h.getJson(relay, '/stats')).json, { connections: 5, channels: 2 }), {
      what: '/stats 5 connections, 2 channels',
    });
    for (const s of subs) s.raw.close(1000);
    await h.eventually(async () => assert.deepEqual((await h.getJson(relay, '/stats')).json, { connections: 0, channels: 0 }), {
      what: '/stats back to zero',
    });
  });
});

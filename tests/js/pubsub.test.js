'use strict';
// Publishing with the official server SDK, receiving with pusher-js: fan-out across workers, multi-channel,
// batches (both paths), socket_id exclusion, unsubscribe, the deprecated publish route. docs/protocol.md#channels, #publish, #batch-publish,
// docs/protocol.md#deprecated-endpoints; items 17, 23, 65, 77, 83.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

describe('publish / subscribe with the official clients', () => {
  let relay;
  let sdk;
  before(async () => {
    relay = await h.startRelay();
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  it('pusher-js subscribes to a public channel (subscription_succeeded)', async () => {
    const { client } = await h.connectedClient(relay);
    const channel = await h.subscribe(client, 'my-channel');
    assert.equal(channel.subscribed, true);
    h.disconnect(relay, client);
  });

  it('trigger reaches every one of 8 clients (spread over both workers), in order', async () => {
    const clients = await Promise.all(Array.from({ length: 8 }, () => h.connectedClient(relay)));
    const collectors = [];
    for (const { client } of clients) {
      const ch = await h.subscribe(client, 'fanout');
      collectors.push(new h.Collector(ch, 'tick'));
    }
    const N = 5;
    for (let i = 0; i < N; i++) {
      const res = await sdk.trigger('fanout', 'tick', { i, text: 'héllo ✓' });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), {});
    }
    for (const [idx, c] of collectors.entries()) {
      const events = await c.waitFor(N).catch((e) => {
        throw new Error(`client ${idx} (${clients[idx].socketId}): ${e.message}`);
      });
      assert.deepEqual(events.map((e) => e.data.i), [0, 1, 2, 3, 4], `client ${idx}`);
      assert.equal(events[0].data.text, 'héllo ✓');
    }
    for (const { client } of clients) h.disconnect(relay, client);
  });

  it('the data string reaches subscribers byte-for-byte and as a JSON string (docs/protocol.md#data-typing, item 65)', async () => {
    const subs = await Promise.all(Array.from({ length: 4 }, () => h.rawConnect(relay)));
    await Promise.all(subs.map((s) => s.raw.subscribe('exact-data')));
    const data = '{"message": "hello world" , "n":1.50}';
    const res = await sdk.trigger('exact-data', 'my-event', data);
    assert.equal(res.status, 200);
    for (const { raw } of subs) {
      const m = await raw.nextEvent('my-event', 'exact-data');
      assert.deepEqual(m, { event: 'my-event', channel: 'exact-data', data });
    }
    const plain = await sdk.trigger('exact-data', 'plain', 'just text');
    assert.equal(plain.status, 200);
    for (const { raw } of subs) {
      const m = await raw.nextEvent('plain', 'exact-data');
      assert.equal(m.data, 'just text');
      raw.close(1000);
    }
  });

  it('multi-channel trigger delivers once per channel to each subscriber', async () => {
    const a = await h.connectedClient(relay);
    const b = await h.connectedClient(relay);
    const c = await h.connectedClient(relay);
    const gotA = new h.Collector(await h.subscribe(a.client, 'multi-a'), 'news');
    const gotB = new h.Collector(await h.subscribe(b.client, 'multi-b'), 'news');
    const gotCa = new h.Collector(await h.subscribe(c.client, 'multi-a'), 'news');
    const gotCb = new h.Collector(await h.subscribe(c.client, 'multi-b'), 'news');
    const res = await sdk.trigger(['multi-a', 'multi-b', 'multi-unused'], 'news', { v: 7 });
    assert.equal(res.status, 200);
    for (const col of [gotA, gotB, gotCa, gotCb]) {
      const [e] = await col.waitFor(1);
      assert.deepEqual(e.data, { v: 7 });
    }
    await h.sleep(300);
    for (const col of [gotA, gotB, gotCa, gotCb]) assert.equal(col.events.length, 1);
    for (const x of [a, b, c]) h.disconnect(relay, x.client);
  });

  it('triggerBatch (POST /batch_events) delivers every item to its channel', async () => {
    const { client } = await h.connectedClient(relay);
    const one = new h.Collector(await h.subscribe(client, 'batch-1'), 'b');
    const two = new h.Collector(await h.subscribe(client, 'batch-2'), 'b');
    const res = await sdk.triggerBatch([
      { channel: 'batch-1', name: 'b', data: { k: 1 } },
      { channel: 'batch-2', name: 'b', data: { k: 2 } },
      { channel: 'batch-1', name: 'b', data: 'raw-string' },
    ]);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {});
    const e1 = await one.waitFor(2);
    const e2 = await two.waitFor(1);
    assert.deepEqual(e1.map((e) => e.data), [{ k: 1 }, 'raw-string']);
    assert.deepEqual(e2[0].data, { k: 2 });
    h.disconnect(relay, client);
  });

  it('POST /events/batch (seed alias) via pusher.post delivers every item', async () => {
    const { client } = await h.connectedClient(relay);
    const col = new h.Collector(await h.subscribe(client, 'alias-batch'), 'ab');
    const res = await sdk.post({
      path: '/events/batch',
      body: {
        batch: [
          { channel: 'alias-batch', name: 'ab', data: JSON.stringify({ n: 1 }) },
          { channel: 'alias-batch', name: 'ab', data: JSON.stringify({ n: 2 }) },
        ],
      },
    });
    assert.equal(res.status, 200);
    const events = await col.waitFor(2);
    assert.deepEqual(events.map((e) => e.data.n), [1, 2]);
    h.disconnect(relay, client);
  });

  it('trigger with socket_id excludes that connection only', async () => {
    const a = await h.connectedClient(relay);
    const b = await h.connectedClient(relay);
    const gotA = new h.Collector(await h.subscribe(a.client, 'excl'), 'x');
    const gotB = new h.Collector(await h.subscribe(b.client, 'excl'), 'x');
    const res = await sdk.trigger('excl', 'x', { from: 'a' }, { socket_id: a.socketId });
    assert.equal(res.status, 200);
    await gotB.waitFor(1);
    // a follow-up event without exclusion proves A was listening all along and orders the check
    await sdk.trigger('excl', 'x', { from: 'all' });
    const aEvents = await gotA.waitFor(1);
    await gotB.waitFor(2);
    assert.deepEqual(aEvents.map((e) => e.data.from), ['all']);
    await h.sleep(200);
    assert.equal(gotA.events.length, 1);

    // per-item socket_id in a batch
    const batch = await sdk.triggerBatch([{ channel: 'excl', name: 'x', data: { from: 'batch' }, socket_id: b.socketId }]);
    assert.equal(batch.status, 200);
    await gotA.waitFor(2);
    await h.sleep(200);
    assert.deepEqual(gotB.events.map((e) => e.data.from), ['a', 'all']);
    h.disconnect(relay, a.client);
    h.disconnect(relay, b.client);
  });

  it('trigger with a single "channel" field is accepted and delivered (item 77)', async () => {
    const { raw } = await h.rawConnect(relay);
    await raw.subscribe('single-field');
    const res = await sdk.post({ path: '/events', body: { name: 'one', channel: 'single-field', data: 'x' } });
    assert.equal(res.status, 200);
    const m = await raw.nextEvent('one', 'single-field');
    assert.equal(m.data, 'x');
    raw.close(1000);
  });

  it('after pusher:unsubscribe no reply frame comes and events are no longer delivered (item 23)', async () => {
    const stays = await h.rawConnect(relay);
    const leaves = await h.rawConnect(relay);
    await stays.raw.subscribe('unsub-ch');
    await leaves.raw.subscribe('unsub-ch');
    leaves.raw.send({ event: 'pusher:unsubscribe', data: { channel: 'unsub-ch' } });
    await leaves.raw.ping(); // orders the unsubscribe before the publish
    await sdk.trigger('unsub-ch', 'after', 'x');
    await stays.raw.nextEvent('after', 'unsub-ch');
    await h.sleep(200);
    const extra = leaves.raw.frames.filter((f) => f.json && f.json.event !== 'pusher:pong');
    assert.deepEqual(extra.map((f) => f.text), [], 'unsubscribed socket got frames');
    stays.raw.close(1000);
    leaves.raw.close(1000);
  });

  it('pusher-js unsubscribe stops delivery; resubscribe resumes it', async () => {
    const { client } = await h.connectedClient(relay);
    const seen = [];
    client.bind_global((event, data) => {
      if (event === 'again') seen.push(data);
    });
    await h.subscribe(client, 'resub');
    client.unsubscribe('resub');
    const probe = await h.rawConnect(relay);
    await probe.raw.subscribe('resub');
    await h.eventually(async () => {
      const r = await h.sdkResult(sdk.get({ path: '/channels/resub', params: { info: 'subscription_count' } }));
      assert.equal(r.json.subscription_count, 1);
    }, { what: 'subscription_count 1 after pusher-js unsubscribe' });
    await sdk.trigger('resub', 'again', { n: 1 });
    await probe.raw.nextEvent('again', 'resub');
    await h.sleep(200);
    assert.deepEqual(seen, []);
    await h.subscribe(client, 'resub');
    await sdk.trigger('resub', 'again', { n: 2 });
    await h.eventually(() => assert.deepEqual(seen, [{ n: 2 }]), { what: 'event after resubscribe' });
    probe.raw.close(1000);
    h.disconnect(relay, client);
  });

  it('deprecated POST /channels/{name}/events -> 202 and raw body delivered as data (docs/protocol.md#deprecated-endpoints)', async () => {
    const { raw } = await h.rawConnect(relay);
    await raw.subscribe('legacy');
    const body = '{"legacy":true}';
    const res = await h.signedFetch(relay, {
      method: 'POST',
      path: `/apps/${relay.app.id}/channels/legacy/events`,
      params: { name: 'old-style' },
      body,
    });
    assert.equal(res.status, 202, res.body);
    const m = await raw.nextEvent('old-style', 'legacy');
    assert.equal(m.data, body);
    raw.close(1000);
  });
});

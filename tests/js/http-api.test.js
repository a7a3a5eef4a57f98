'use strict';
// REST API conformance: request signing (docs/protocol.md#rest-signing) and every error status of checklist items 65–88.
// Runs the relay with the spec's test credentials (app 424242) so the docs/protocol.md#test-vectors vectors apply byte for byte.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const APP = { id: '424242', key: 'a1b2c3d4e5f6a7b8c9d0', secret: '0f9e8d7c6b5a4f3e2d1c' };
const V1_BODY =
  '{"name":"my-event","data":"{\\"message\\":\\"hello world\\"}","channels":["my-channel","presence-room"],"socket_id":"1234.5678"}';
const V5_BODY =
  '{"name": "my-event", "channels": ["my-channel", "presence-room"], "data": "{\\"message\\": \\"hello world\\"}", "socket_id": "1234.5678"}';

describe('REST API', () => {
  let relay;
  let sdk;
  before(async () => {
    relay = await h.startRelay({
      env: { RELAY_APP_ID: APP.id, RELAY_APP_KEY: APP.key, RELAY_APP_SECRET: APP.secret },
    });
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  const post = (p, body, opts = {}) => h.signedFetch(relay, { method: 'POST', path: `/apps/${APP.id}${p}`, body, ...opts });
  const get = (p, params = {}, opts = {}) => h.signedFetch(relay, { method: 'GET', path: `/apps/${APP.id}${p}`, params, ...opts });
  const sdkPost = (p, body) => h.sdkResult(sdk.post({ path: p, body }));

  /** Error responses: the status, and a JSON {"error": string} body. */
  function assertError(res, status, what) {
    assert.equal(res.status, status, `${what}: expected ${status}, got ${res.status} ${res.body}`);
    assert.ok(res.json && typeof res.json.error === 'string' && res.json.error.length > 0, `${what}: body ${res.body}`);
  }

  /** A raw subscriber on `channel`, and a check that it received exactly `names` (in order) before a marker. */
  async function subscriber(channel) {
    const c = await h.rawConnect(relay);
    await c.raw.subscribe(channel);
    return {
      ...c,
      async received() {
        const marker = `marker-${Math.random().toString(36).slice(2)}`;
        const r = await sdk.trigger(channel, marker, '');
        assert.equal(r.status, 200);
        await c.raw.nextEvent(marker, channel);
        const got = c.raw.all
          .map((f) => f.json)
          .filter((m) => m && m.channel === channel && !m.event.startsWith('pusher') && !m.event.startsWith('marker-'));
        c.raw.all.length = 0;
        return got;
      },
    };
  }

  describe('signing', () => {
    it('the test signer reproduces the docs/protocol.md#test-vectors vectors V1, V2 and V3', () => {
      assert.equal(h.md5Hex(V1_BODY), 'f848cacb117dadecedef966b423c274f');
      const base = { auth_key: APP.key, auth_timestamp: '1700000000', auth_version: '1.0' };
      assert.equal(
        h.signRequest(APP.secret, 'POST', '/apps/424242/events', { ...base, body_md5: h.md5Hex(V1_BODY) }),
        'd76c552db1e0690662bc451c0a7ccadeebbe68a72254fd8e3e651d3a9665aec6',
      );
      assert.equal(
        h.signRequest(APP.secret, 'GET', '/apps/424242/channels', { ...base, filter_by_prefix: 'presence-', info: 'user_count' }),
        '9806dc3e47c80af7d96974b6e98362bb542294dfeb625e4e2382b3d12fbac04b',
      );
      assert.equal(
        h.signRequest(APP.secret, 'GET', '/apps/424242/channels/presence-room', { ...base, info: 'user_count,subscription_count' }),
        '90a1c53ed36a9ab66c4f531a7b6f8d3b27ca4264bcb70769e8e3bc96cfd14416',
      );
    });

    it('V1 body re-signed now -> 200 {} and delivered to my-channel (item 65)', async () => {
      const sub = await subscriber('my-channel');
      const res = await post('/events', V1_BODY);
      assert.equal(res.status, 200, res.body);
      assert.deepEqual(res.json, {});
      const got = await sub.received();
      assert.deepEqual(got, [{ event: 'my-event', channel: 'my-channel', data: '{"message":"hello world"}' }]);
      sub.raw.close(1000);
    });

    it('V5 (python-serialized body) -> 200 (item 69)', async () => {
      const res = await post('/events', V5_BODY);
      assert.equal(res.status, 200, res.body);
    });

    it('body changed after signing (stale body_md5) -> 401 (item 66)', async () => {
      const tampered = V1_BODY.replace('hello', 'hellO');
      assertError(await post('/events', tampered, { signedBody: V1_BODY }), 401, 'stale body_md5');
    });

    it('body without body_md5 -> 401', async () => {
      // sign as if there were no body, then send one
      assertError(await post('/events', V1_BODY, { signedBody: '' }), 401, 'missing body_md5');
    });

    it('auth_timestamp 601 s off -> 401; 599 s off -> 200 (item 67)', async () => {
      // The server's clock reads later than `now` by the request's travel: a future stamp shrinks and a past one
      // grows with it, so those two sides keep 3 s of margin against a slow machine (the exact 600 s boundary is
      // unit-tested in src/protocol/auth.rs, timestamp_window_both_directions).
      const now = Math.floor(Date.now() / 1000);
      assertError(await post('/events', V1_BODY, { timestamp: now - 601 }), 401, '601 s in the past');
      assertError(await post('/events', V1_BODY, { timestamp: now + 603 }), 401, '603 s in the future');
      assert.equal((await post('/events', V1_BODY, { timestamp: now - 597 })).status, 200, '597 s in the past');
      assert.equal((await post('/events', V1_BODY, { timestamp: now + 599 })).status, 200, '599 s in the future');
      assertError(await post('/events', V1_BODY, { timestamp: 'yesterday' }), 401, 'non-numeric timestamp');
    });

    it('missing auth_signature / wrong auth_key / auth_version=2.0 / bad signature -> 401 (item 68)', async () => {
      assertError(await post('/events', V1_BODY, { omit: ['auth_signature'] }), 401, 'no auth_signature');
      assertError(await post('/events', V1_BODY, { omit: ['auth_key'] }), 401, 'no auth_key');
      assertError(await post('/events', V1_BODY, { omit: ['auth_timestamp'] }), 401, 'no auth_timestamp');
      assertError(await post('/events', V1_BODY, { omit: ['auth_version'] }), 401, 'no auth_version');
      assertError(await post('/events', V1_BODY, { key: 'not-the-key' }), 401, 'wrong auth_key');
      assertError(await post('/events', V1_BODY, { version: '2.0' }), 401, 'auth_version 2.0');
      assertError(await post('/events', V1_BODY, { secret: 'wrong-secret' }), 401, 'signed with a wrong secret');
      assertError(await get('/channels', {}, { secret: 'wrong-secret' }), 401, 'GET signed with a wrong secret');
      // the SDK with a wrong secret gets 401 too
      const bad = h.serverSdk(relay, { secret: 'nope' });
      const r = await h.sdkResult(bad.trigger('my-channel', 'e', {}));
      assert.equal(r.status, 401);
    });

    it('python-style GET carrying body_md5 of the empty body -> 200 (item 71)', async () => {
      const res = await get('/channels', { body_md5: h.md5Hex(''), filter_by_prefix: 'my-' });
      assert.equal(res.status, 200, res.body);
      assert.ok(res.json && typeof res.json.channels === 'object');
    });

    it('percent-encoded query values verify against the decoded value (item 72)', async () => {
      const sub = await subscriber('enc-chan');
      const res = await get('/channels', { filter_by_prefix: 'enc-' }, {
        rawQuery: (q) =>
          Object.entries(q)
            .map(([k, v]) => `${k}=${k === 'filter_by_prefix' ? 'enc%2D' : v}`)
            .join('&'),
      });
      assert.equal(res.status, 200, res.body);
      assert.deepEqual(res.json, { channels: { 'enc-chan': {} } });
      const res2 = await get('/channels/enc-chan', { info: 'subscription_count' }, {
        rawQuery: (q) =>
          Object.entries(q)
            .map(([k, v]) => `${k}=${k === 'info' ? 'subscription%5Fcount' : v}`)
            .join('&'),
      });
      assert.equal(res2.status, 200, res2.body);
      assert.deepEqual(res2.json, { occupied: true, subscription_count: 1 });
      sub.raw.close(1000);
    });
  });

  describe('queries', () => {
    it('info=user_count without a presence- prefix -> 400 (item 73)', async () => {
      assertError(
        await h.sdkResult(sdk.get({ path: '/channels', params: { filter_by_prefix: 'private-', info: 'user_count' } })),
        400,
        'filter private- with user_count',
      );
      assertError(await h.sdkResult(sdk.get({ path: '/channels', params: { info: 'user_count' } })), 400, 'user_count, no prefix');
    });

    it('GET /channels/my-channel?info=user_count -> 400; unoccupied -> 200 {"occupied":false} (item 74)', async () => {
      assertError(
        await h.sdkResult(sdk.get({ path: '/channels/my-channel', params: { info: 'user_count' } })),
        400,
        'user_count on public channel',
      );
      const r = await h.sdkResult(sdk.get({ path: '/channels/my-channel' }));
      assert.equal(r.status, 200, r.body);
      assert.deepEqual(r.json, { occupied: false });
    });

    it('GET of an invalid channel name -> 400', async () => {
      const r = await get('/channels/bad%20name');
      assert.ok([400, 404].includes(r.status), `got ${r.status} ${r.body}`);
    });
  });

  describe('publishing errors', () => {
    it('trigger with neither channel nor channels -> 400; with "channel" -> 200 (item 77)', async () => {
      assertError(await sdkPost('/events', { name: 'e', data: 'x' }), 400, 'no channel(s)');
      assert.equal((await sdkPost('/events', { name: 'e', data: 'x', channel: 'x' })).status, 200);
      assertError(await sdkPost('/events', { name: 'e', data: 'x', channels: [] }), 400, 'channels []');
    });

    it('missing name / missing data / malformed JSON / invalid channel name -> 400', async () => {
      assertError(await sdkPost('/events', { data: 'x', channels: ['a'] }), 400, 'no name');
      assertError(await sdkPost('/events', { name: 'e', channels: ['a'] }), 400, 'no data');
      assertError(await post('/events', '{"name":"e",'), 400, 'malformed JSON');
      assertError(await post('/events', '[]'), 400, 'JSON array body');
      assertError(await sdkPost('/events', { name: 'e', data: 'x', channels: ['bad name'] }), 400, 'space in channel');
      assertError(await sdkPost('/events', { name: 'e', data: 'x', channels: ['a:b'] }), 400, 'colon in channel');
      assertError(await sdkPost('/events', { name: 'e', data: 'x', channels: ['z'.repeat(201)] }), 400, '201-char channel');
    });

    it('101 channels -> 400; 100 channels -> 200 (item 78)', async () => {
      const names = (n) => Array.from({ length: n }, (_, i) => `many-${i}`);
      assertError(await sdkPost('/events', { name: 'e', data: 'x', channels: names(101) }), 400, '101 channels');
      const ok = await h.sdkResult(sdk.trigger(names(100), 'e', 'x'));
      assert.equal(ok.status, 200, ok.body);
    });

    it('data of 10 240 bytes -> 200; 10 241 bytes -> 413; counted in UTF-8 bytes (item 79)', async () => {
      const sub = await subscriber('big-data');
      const ok = await h.sdkResult(sdk.trigger('big-data', 'max', 'x'.repeat(10240)));
      assert.equal(ok.status, 200, ok.body);
      assertError(await h.sdkResult(sdk.trigger('big-data', 'over', 'x'.repeat(10241))), 413, '10 241 bytes');
      const okUtf8 = await h.sdkResult(sdk.trigger('big-data', 'max2', 'é'.repeat(5120)));
      assert.equal(okUtf8.status, 200, okUtf8.body);
      assertError(await h.sdkResult(sdk.trigger('big-data', 'over2', 'é'.repeat(5120) + 'x')), 413, '10 241 UTF-8 bytes');
      const got = await sub.received();
      assert.deepEqual(got.map((m) => [m.event, Buffer.byteLength(m.data)]), [['max', 10240], ['max2', 10240]]);
      sub.raw.close(1000);
    });

    it('empty data "" is valid (docs/protocol.md#publish)', async () => {
      const r = await sdkPost('/events', { name: 'e', data: '', channels: ['empty-data'] });
      assert.equal(r.status, 200, r.body);
    });

    it('event name of 201 chars -> 400 (200 -> 200); pusher:foo and pusher_internal:foo -> 400 (item 80)', async () => {
      assertError(await sdkPost('/events', { name: 'n'.repeat(201), data: 'x', channels: ['a'] }), 400, '201-char name');
      assert.equal((await h.sdkResult(sdk.trigger('a', 'n'.repeat(200), 'x'))).status, 200);
      assertError(await h.sdkResult(sdk.trigger('a', 'pusher:foo', 'x')), 400, 'pusher:foo');
      assertError(await h.sdkResult(sdk.trigger('a', 'pusher_internal:foo', 'x')), 400, 'pusher_internal:foo');
    });

    it('invalid socket_id -> 400 (item 81)', async () => {
      for (const socketId of ['abc', '1.2.3', '12', '-1.5', '1.', '']) {
        assertError(
          await sdkPost('/events', { name: 'e', data: 'x', channels: ['a'], socket_id: socketId }),
          400,
          `socket_id ${JSON.stringify(socketId)}`,
        );
      }
    });

    it('trigger with info=subscription_count returns per-channel counts (item 82)', async () => {
      const subs = await Promise.all([subscriber('info-ch'), subscriber('info-ch')]);
      const r = await h.sdkResult(sdk.trigger(['info-ch', 'info-empty'], 'e', 'x', { info: 'subscription_count' }));
      assert.equal(r.status, 200, r.body);
      assert.deepEqual(r.json, {
        channels: { 'info-ch': { subscription_count: 2 }, 'info-empty': { subscription_count: 0 } },
      });
      for (const s of subs) s.raw.close(1000);
    });

    it('multi-channel trigger including private-encrypted-x -> 400 (item 86)', async () => {
      assertError(
        await sdkPost('/events', { name: 'e', data: 'x', channels: ['plain', 'private-encrypted-x'] }),
        400,
        'encrypted in multi-channel',
      );
      // a single encrypted channel is fine
      assert.equal((await sdkPost('/events', { name: 'e', data: '{"nonce":"a","ciphertext":"b"}', channels: ['private-encrypted-x'] })).status, 200);
    });

    it('request body over the server cap -> 413, reliably (30 tries)', async () => {
      // The client must see the 413 every time, not a connection reset while it is still sending the body
      // (a server that closes with unread input makes the kernel send RST, which can destroy the response).
      const huge = JSON.stringify({ name: 'e', data: 'x'.repeat(1100 * 1024), channels: ['a'] });
      const outcomes = {};
      let last;
      for (let i = 0; i < 30; i++) {
        let key;
        try {
          last = await post('/events', huge);
          key = String(last.status);
        } catch (e) {
          key = (e.cause && e.cause.code) || e.message;
        }
        outcomes[key] = (outcomes[key] || 0) + 1;
      }
      assert.deepEqual(outcomes, { 413: 30 }, `outcomes of 30 oversized requests: ${JSON.stringify(outcomes)}`);
      assertError(last, 413, 'body over 1 MiB');
    });
  });

  describe('batches', () => {
    const item = (i, extra = {}) => ({ channel: 'batch-ch', name: `b${i}`, data: `d${i}`, ...extra });

    for (const path of ['/batch_events', '/events/batch']) {
      it(`${path}: 10 items -> 200 {}; 11 -> 400; item with "channels" -> 400 (item 83)`, async () => {
        const sub = await subscriber('batch-ch');
        const ten = Array.from({ length: 10 }, (_, i) => item(i));
        const ok = await sdkPost(path, { batch: ten });
        assert.equal(ok.status, 200, ok.body);
        assert.deepEqual(ok.json, {});
        assert.deepEqual((await sub.received()).map((m) => m.event), ten.map((x) => x.name));

        assertError(await sdkPost(path, { batch: Array.from({ length: 11 }, (_, i) => item(i)) }), 400, '11 items');
        assertError(
          await sdkPost(path, { batch: [item(0), { name: 'b1', data: 'd1', channels: ['batch-ch'] }] }),
          400,
          'item with channels',
        );
        assertError(await sdkPost(path, { batch: [item(0), { name: 'b1', data: 'd1' }] }), 400, 'item without channel');
        assertError(await sdkPost(path, { batch: [] }), 400, 'empty batch');
        assertError(await sdkPost(path, {}), 400, 'no batch');
        assertError(await sdkPost(path, { batch: [item(0, { socket_id: 'abc' })] }), 400, 'item socket_id abc');
        assertError(await sdkPost(path, { batch: [item(0, { name: 'pusher:x' })] }), 400, 'item reserved name');
        assert.deepEqual(await sub.received(), [], 'rejected batches delivered something');
        sub.raw.close(1000);
      });

      it(`${path}: one item over 10 KB -> 413 and no item delivered (item 83)`, async () => {
        const sub = await subscriber('batch-ch');
        const res = await sdkPost(path, { batch: [item(0), item(1, { data: 'y'.repeat(11 * 1024) }), item(2)] });
        assertError(res, 413, 'item over 10 KB');
        assert.deepEqual(await sub.received(), [], 'a rejected batch was partly delivered');
        sub.raw.close(1000);
      });
    }

    it('batch with info on items 0 and 2 -> index-aligned batch array (item 84)', async () => {
      const sub = await subscriber('batch-info');
      const res = await sdkPost('/batch_events', {
        batch: [
          { channel: 'batch-info', name: 'a', data: '1', info: 'subscription_count' },
          { channel: 'batch-info', name: 'b', data: '2' },
          { channel: 'batch-none', name: 'c', data: '3', info: 'subscription_count' },
        ],
      });
      assert.equal(res.status, 200, res.body);
      assert.deepEqual(res.json, { batch: [{ subscription_count: 1 }, {}, { subscription_count: 0 }] });
      sub.raw.close(1000);
    });
  });

  describe('routing', () => {
    it('POST /apps/999999/events (unknown app) -> 404 (item 85)', async () => {
      const r = await h.signedFetch(relay, { method: 'POST', path: '/apps/999999/events', body: V1_BODY });
      assertError(r, 404, 'unknown app');
      const viaSdk = await h.sdkResult(h.serverSdk(relay, { appId: '999999' }).trigger('my-channel', 'e', 'x'));
      assert.equal(viaSdk.status, 404);
    });

    it('unknown route under /apps/{id}/ -> 404 (item 87)', async () => {
      assertError(await get('/nope'), 404, 'GET /nope');
      assertError(await post('/nope', '{}'), 404, 'POST /nope');
      assertError(await get('/channels/a/b/c'), 404, 'GET /channels/a/b/c');
      const root = await h.getJson(relay, '/definitely-not-a-route');
      assert.equal(root.status, 404);
    });

    it('wrong method on a known route -> 405 (or 404)', async () => {
      const r = await get('/events');
      assert.ok([404, 405].includes(r.status), `GET /events -> ${r.status} ${r.body}`);
      const r2 = await post('/channels', '{}');
      assert.ok([404, 405].includes(r2.status), `POST /channels -> ${r2.status} ${r2.body}`);
    });
  });
});

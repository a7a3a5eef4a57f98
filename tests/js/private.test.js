'use strict';
// Private and private-encrypted channels: pusher-js with a customHandler backed by the server SDK's
// authorizeChannel, and frame-level auth checks. docs/protocol.md#channel-types, #subscribe, #channel-authorization, items 25–30.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

const MASTER_KEY_B64 = crypto.randomBytes(32).toString('base64');

describe('private channels with the official clients', () => {
  let relay;
  let sdk;
  before(async () => {
    relay = await h.startRelay();
    sdk = h.serverSdk(relay, { encryptionMasterKeyBase64: MASTER_KEY_B64 });
  });
  after(async () => {
    await relay.stop();
  });

  const goodAuth = {
    customHandler: ({ socketId, channelName }, callback) => {
      try {
        callback(null, sdk.authorizeChannel(socketId, channelName));
      } catch (e) {
        callback(e, null);
      }
    },
  };

  it('customHandler with SDK authorizeChannel -> subscription_succeeded, events delivered', async () => {
    const { client } = await h.connectedClient(relay, { channelAuthorization: goodAuth });
    const channel = await h.subscribe(client, 'private-orders');
    const got = new h.Collector(channel, 'order');
    const res = await sdk.trigger('private-orders', 'order', { id: 17 });
    assert.equal(res.status, 200);
    const [e] = await got.waitFor(1);
    assert.deepEqual(e.data, { id: 17 });
    h.disconnect(relay, client);
  });

  it('wrong signature -> pusher:error, no subscription_succeeded, connection still usable', async () => {
    const badAuth = {
      customHandler: ({ socketId, channelName }, callback) => {
        const { auth } = sdk.authorizeChannel(socketId, channelName);
        const sig = auth.split(':')[1];
        const flipped = (sig[0] === '0' ? '1' : '0') + sig.slice(1);
        callback(null, { auth: `${relay.app.key}:${flipped}` });
      },
    };
    const { client, socketId } = await h.connectedClient(relay, { channelAuthorization: badAuth });
    const errors = [];
    client.connection.bind('error', (e) => errors.push(e));
    const channel = client.subscribe('private-denied');
    let succeeded = false;
    let subscriptionError = null;
    channel.bind('pusher:subscription_succeeded', () => {
      succeeded = true;
    });
    channel.bind('pusher:subscription_error', (e) => {
      subscriptionError = e;
    });
    await h.eventually(() => assert.ok(errors.length > 0), { timeout: 3000, what: 'pusher:error reported by pusher-js' });
    assert.equal(errors[0].type, 'PusherError');
    assert.equal(typeof errors[0].data, 'object');
    assert.equal(errors[0].data.code, null, 'per-message auth errors carry code null (docs/protocol.md#pusher-error)');
    await h.sleep(500);
    assert.equal(succeeded, false, 'subscription_succeeded arrived despite a bad signature');
    assert.equal(channel.subscribed, false);
    assert.equal(subscriptionError, null, 'no auth endpoint failure here');
    // same connection keeps working
    assert.equal(client.connection.state, 'connected');
    assert.equal(client.connection.socket_id, socketId);
    const pub = await h.subscribe(client, 'after-denied');
    const got = new h.Collector(pub, 'ok');
    await sdk.trigger('after-denied', 'ok', { fine: true });
    await got.waitFor(1);
    // and nothing leaks onto the denied channel
    const leaked = new h.Collector(channel, 'leak');
    await sdk.trigger('private-denied', 'leak', {});
    await h.sleep(300);
    assert.equal(leaked.events.length, 0);
    const count = await h.sdkResult(sdk.get({ path: '/channels/private-denied', params: { info: 'subscription_count' } }));
    assert.deepEqual(count.json, { occupied: false, subscription_count: 0 });
    h.disconnect(relay, client);
  });

  it('private-encrypted channel: pusher-js decrypts what the SDK encrypted; the server relays ciphertext untouched', async () => {
    const { client } = await h.connectedClient(relay, { channelAuthorization: goodAuth });
    const channel = await h.subscribe(client, 'private-encrypted-orders');
    const got = new h.Collector(channel, 'secret');
    // a raw subscriber sees the opaque payload
    const probe = await h.rawConnect(relay);
    await probe.raw.subscribe('private-encrypted-orders', {
      auth: h.channelAuth(relay, probe.socketId, 'private-encrypted-orders'),
    });
    const res = await sdk.trigger('private-encrypted-orders', 'secret', { pin: 1234, note: 'ünïcode' });
    assert.equal(res.status, 200);
    const [e] = await got.waitFor(1);
    assert.deepEqual(e.data, { pin: 1234, note: 'ünïcode' });
    const rawMsg = await probe.raw.nextEvent('secret', 'private-encrypted-orders');
    assert.equal(typeof rawMsg.data, 'string');
    const payload = JSON.parse(rawMsg.data);
    assert.deepEqual(Object.keys(payload).sort(), ['ciphertext', 'nonce']);
    assert.ok(!rawMsg.data.includes('1234'));
    probe.raw.close(1000);
    h.disconnect(relay, client);
  });
});

describe('private channel auth at the frame level', () => {
  let relay;
  before(async () => {
    relay = await h.startRelay();
  });
  after(async () => {
    await relay.stop();
  });

  /** Send a subscribe, expect pusher:error (object data) and no subscription_succeeded; socket stays usable. */
  async function expectRejected(raw, data, what) {
    raw.send({ event: 'pusher:subscribe', data });
    const err = await raw.nextEvent('pusher:error', undefined, 3000).catch((e) => {
      throw new Error(`${what}: ${e.message}`);
    });
    assert.equal(typeof err.data, 'object', `${what}: pusher:error data must be an object`);
    assert.equal(typeof err.data.message, 'string', `${what}: message`);
    await raw.ping(); // orders any late success before the check below, and proves the socket is open
    const ok = raw.frames.find((f) => f.json && f.json.event === 'pusher_internal:subscription_succeeded');
    assert.equal(ok, undefined, `${what}: got ${ok && ok.text}`);
    assert.ok(raw.isOpen, `${what}: socket closed`);
    return err;
  }

  it('valid auth -> exact subscription_succeeded frame; one hex digit changed -> pusher:error code null (item 25)', async () => {
    const { raw, socketId } = await h.rawConnect(relay);
    const auth = h.channelAuth(relay, socketId, 'private-orders');
    const flipped = auth.slice(0, -1) + (auth.endsWith('0') ? '1' : '0');
    const err = await expectRejected(raw, { channel: 'private-orders', auth: flipped }, 'flipped digit');
    assert.equal(err.data.code, null);
    raw.send({ event: 'pusher:subscribe', data: { channel: 'private-orders', auth } });
    const ok = await raw.nextEvent('pusher_internal:subscription_succeeded', 'private-orders');
    assert.deepEqual(ok, { event: 'pusher_internal:subscription_succeeded', channel: 'private-orders', data: '{}' });
    raw.close(1000);
  });

  it('no auth / empty auth on a private channel -> pusher:error (item 26)', async () => {
    const { raw } = await h.rawConnect(relay);
    await expectRejected(raw, { channel: 'private-orders' }, 'auth absent');
    await expectRejected(raw, { channel: 'private-orders', auth: '' }, 'auth ""');
    raw.close(1000);
  });

  it('auth without ":" or with a wrong key prefix -> pusher:error (item 27)', async () => {
    const { raw, socketId } = await h.rawConnect(relay);
    const sig = h.channelAuth(relay, socketId, 'private-orders').split(':')[1];
    await expectRejected(raw, { channel: 'private-orders', auth: sig }, 'no colon');
    await expectRejected(raw, { channel: 'private-orders', auth: `other-key:${sig}` }, 'wrong key');
    raw.close(1000);
  });

  it('auth signed for another socket or another channel -> pusher:error', async () => {
    const a = await h.rawConnect(relay);
    const b = await h.rawConnect(relay);
    await expectRejected(a.raw, { channel: 'private-x', auth: h.channelAuth(relay, b.socketId, 'private-x') }, 'other socket');
    await expectRejected(a.raw, { channel: 'private-x', auth: h.channelAuth(relay, a.socketId, 'private-y') }, 'other channel');
    await expectRejected(
      a.raw,
      { channel: 'private-x', auth: h.channelAuth(relay, a.socketId, 'private-x', { secret: 'wrong-secret' }) },
      'wrong secret',
    );
    a.raw.close(1000);
    b.raw.close(1000);
  });

  it('private-encrypted-orders with a private auth -> success; server asks for no shared_secret (item 28)', async () => {
    const { raw, socketId } = await h.rawConnect(relay);
    const ok = await raw.subscribe('private-encrypted-orders', {
      auth: h.channelAuth(relay, socketId, 'private-encrypted-orders'),
    });
    assert.equal(ok.data, '{}');
    await expectRejected(raw, { channel: 'private-encrypted-other' }, 'encrypted without auth');
    raw.close(1000);
  });

  it('private-cache-x and private-encrypted-cache-x require private auth; cache-x needs none (item 29)', async () => {
    const { raw, socketId } = await h.rawConnect(relay);
    for (const ch of ['private-cache-x', 'private-encrypted-cache-x']) {
      await expectRejected(raw, { channel: ch, auth: '' }, `${ch} without auth`);
      await raw.subscribe(ch, { auth: h.channelAuth(relay, socketId, ch) });
    }
    await raw.subscribe('cache-x');
    raw.close(1000);
  });

  it('prefix matching is anchored: notprivate-x and my-private-x are public (item 30)', async () => {
    const { raw } = await h.rawConnect(relay);
    await raw.subscribe('notprivate-x');
    await raw.subscribe('my-private-x');
    raw.send({ event: 'pusher:subscribe', data: { channel: 'my-cache-x' } });
    await raw.nextEvent('pusher_internal:subscription_succeeded', 'my-cache-x');
    await raw.expectNone((m) => m && m.event === 'pusher:cache_miss', 300, 'cache_miss on my-cache-x');
    raw.close(1000);
  });
});

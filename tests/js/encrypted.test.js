'use strict';
// End-to-end encrypted channels with the encryption-capable pusher-js and the SDK's encryptionMasterKeyBase64, and
// the seed's signed `POST /apps/{id}/auth` (via the SDK's pusher.post) as the auth endpoint pusher-js uses.
// docs/protocol.md#channel-authorization, #encrypted-channels, items 25, 28, 31.
//
// pusher-js build: `require('pusher-js/with-encryption')` resolves to the *web* bundle and throws
// "self is not defined" under Node; the Node build (`require('pusher-js')`, dist/node/pusher.js, which the harness
// uses) already bundles tweetnacl and is the encryption-capable build for Node.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

const MASTER_KEY_B64 = crypto.randomBytes(32).toString('base64');
const APP2 = { id: 'app2', key: 'key2', secret: 'secret2' }; // same server, no master key

/** customHandler that asks relay's POST /apps/{id}/auth (signed by the SDK) instead of signing locally. */
function relayAuthEndpoint(sdk, channelData, seen = []) {
  return {
    customHandler: ({ socketId, channelName }, callback) => {
      const body = { socket_id: socketId, channel_name: channelName };
      if (channelName.startsWith('presence-')) body.channel_data = JSON.stringify(channelData(socketId));
      h.sdkResult(sdk.post({ path: '/auth', body }))
        .then((r) => {
          seen.push({ channelName, ...r, json: { ...r.json } }); // pusher-js deletes shared_secret from its copy
          if (r.status !== 200) throw new Error(`POST /auth answered ${r.status}: ${r.body}`);
          callback(null, r.json);
        })
        .catch((e) => callback(e, null));
    },
  };
}

describe('encrypted channels and the seed POST /auth', () => {
  let relay;
  let sdk;
  let sdk2;
  before(async () => {
    const file = h.appsFile([
      { id: 'app-id', key: 'app-key', secret: 'app-secret', encryption_master_key_base64: MASTER_KEY_B64 },
      APP2,
    ]);
    relay = await h.startRelay({ env: { RELAY_APPS_FILE: file } });
    sdk = h.serverSdk(relay, { encryptionMasterKeyBase64: MASTER_KEY_B64 });
    sdk2 = h.serverSdk(relay, { appId: APP2.id, key: APP2.key, secret: APP2.secret });
  });
  after(async () => {
    await relay.stop();
  });

  it('SDK authorizeChannel + trigger to private-encrypted-: pusher-js decrypts every payload (item 28)', async () => {
    const ch = 'private-encrypted-sdk';
    const { client } = await h.connectedClient(relay, { channelAuthorization: h.sdkChannelAuth(sdk) });
    const channel = await h.subscribe(client, ch);
    const got = new h.Collector(channel, 'secret');
    const failures = [];
    channel.bind('pusher:decryption_error', (e) => failures.push(e));
    const payloads = [{ pin: 1 }, 'just a string', { nested: { list: [1, 2, 3], s: 'ünïcode ✓' } }];
    for (const p of payloads) assert.equal((await sdk.trigger(ch, 'secret', p)).status, 200);
    await got.waitFor(3);
    assert.deepEqual(got.events.map((e) => e.data), payloads);
    assert.deepEqual(failures, []);
    h.disconnect(relay, client);
  });

  it('POST /auth answers {auth, shared_secret} for private-encrypted-; pusher-js uses it and decrypts (items 25, 28)', async () => {
    const ch = 'private-encrypted-seed';
    const seen = [];
    const { client, socketId } = await h.connectedClient(relay, { channelAuthorization: relayAuthEndpoint(sdk, null, seen) });
    const channel = await h.subscribe(client, ch);
    assert.equal(seen.length, 1);
    const local = sdk.authorizeChannel(socketId, ch);
    assert.deepEqual(seen[0].json, { auth: local.auth, shared_secret: local.shared_secret });
    const got = new h.Collector(channel, 'secret');
    await sdk.trigger(ch, 'secret', { via: 'seed auth' });
    const [e] = await got.waitFor(1);
    assert.deepEqual(e.data, { via: 'seed auth' });
    h.disconnect(relay, client);
  });

  it('POST /auth for private- and presence- channels: pusher-js accepts the tokens (items 25, 31)', async () => {
    const seen = [];
    const mk = () =>
      h.connectedClient(relay, {
        channelAuthorization: relayAuthEndpoint(sdk, (sid) => ({ user_id: `user-${sid}`, user_info: { sid } }), seen),
      });
    const a = await mk();
    const b = await mk();
    const priv = await h.subscribe(a.client, 'private-seed');
    const got = new h.Collector(priv, 'ev');
    await sdk.trigger('private-seed', 'ev', { ok: true });
    await got.waitFor(1);
    assert.deepEqual(seen[0].json, { auth: sdk.authorizeChannel(a.socketId, 'private-seed').auth });

    const pa = await h.subscribe(a.client, 'presence-seed');
    assert.deepEqual(pa.members.me, { id: `user-${a.socketId}`, info: { sid: a.socketId } });
    const pb = await h.subscribe(b.client, 'presence-seed');
    assert.equal(pb.members.count, 2);
    const presenceAnswer = seen.find((s) => s.channelName === 'presence-seed').json;
    assert.deepEqual(Object.keys(presenceAnswer).sort(), ['auth', 'channel_data']);
    assert.equal(typeof presenceAnswer.channel_data, 'string');
    h.disconnect(relay, a.client);
    h.disconnect(relay, b.client);
  });

  it('POST /auth refusals: public channel, presence without channel_data, bad socket_id -> 400; bad signature -> 401', async () => {
    const post = (body, s = sdk) => h.sdkResult(s.post({ path: '/auth', body }));
    assert.equal((await post({ socket_id: '1.2', channel_name: 'public-x' })).status, 400);
    assert.equal((await post({ socket_id: '1.2', channel_name: 'presence-x' })).status, 400);
    assert.equal((await post({ socket_id: 'abc', channel_name: 'private-x' })).status, 400);
    assert.equal((await post({ channel_name: 'private-x' })).status, 400);
    const bad = await h.signedFetch(relay, {
      path: '/apps/app-id/auth',
      body: { socket_id: '1.2', channel_name: 'private-x' },
      secret: 'not-the-secret',
    });
    assert.equal(bad.status, 401);
  });

  it('an app without encryption_master_key_base64: encrypted /auth -> 400, private /auth still 200', async () => {
    const enc = await h.sdkResult(sdk2.post({ path: '/auth', body: { socket_id: '1.2', channel_name: 'private-encrypted-x' } }));
    assert.equal(enc.status, 400, enc.body);
    const priv = await h.sdkResult(sdk2.post({ path: '/auth', body: { socket_id: '1.2', channel_name: 'private-x' } }));
    assert.equal(priv.status, 200, priv.body);
    assert.deepEqual(priv.json, { auth: `${APP2.key}:${h.hmacHex(APP2.secret, '1.2:private-x')}` });
  });

  it('a subscriber keyed with the wrong shared_secret cannot decrypt (the server relays ciphertext only)', async () => {
    const ch = 'private-encrypted-wrongkey';
    const wrong = h.serverSdk(relay, { encryptionMasterKeyBase64: crypto.randomBytes(32).toString('base64') });
    let authCalls = 0;
    const inner = h.sdkChannelAuth(wrong);
    const { client } = await h.connectedClient(relay, {
      channelAuthorization: { customHandler: (p, cb) => (authCalls++, inner.customHandler(p, cb)) },
    });
    const channel = await h.subscribe(client, ch);
    const got = new h.Collector(channel, 'secret');
    assert.equal(authCalls, 1);
    await sdk.trigger(ch, 'secret', { pin: 9 });
    // pusher-js fails to decrypt, fetches a new key once, fails again and drops the event
    await h.eventually(() => assert.equal(authCalls, 2), { what: 'pusher-js re-authorizing after a failed decrypt' });
    await h.sleep(200);
    assert.equal(got.events.length, 0, 'decrypted with a wrong key?');
    h.disconnect(relay, client);
  });
});

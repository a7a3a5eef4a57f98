'use strict';
// Webhooks checked by the official `pusher` Node SDK: every kind relay sends (Pusher's seven plus relay's
// user_online/user_offline) arrives at a real HTTP receiver in requests that `pusher.webhook({headers, rawBody})`
// calls valid, with the app's own extra header; a second webhook with a channel filter and one kind gets only
// those; a validator with the wrong secret refuses them. docs/protocol.md#webhooks.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const h = require('./harness');

const APP = { id: 'hooks-app', key: 'hooks-key', secret: 'hooks-secret' };
const ALL_KINDS = [
  'channel_occupied',
  'channel_vacated',
  'member_added',
  'member_removed',
  'client_event',
  'cache_miss',
  'subscription_count',
  'user_online',
  'user_offline',
];

/** An HTTP receiver recording { path, headers, rawBody } of every request; answers 200. */
function startReceiver() {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      requests.push({ path: req.url, headers: req.headers, rawBody: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, requests, port: server.address().port }));
  });
}

describe('webhooks validated by the pusher SDK', () => {
  let relay;
  let receiver;
  let sdk;
  before(async () => {
    receiver = await startReceiver();
    const url = (path) => `http://127.0.0.1:${receiver.port}${path}`;
    const file = h.appsFile([
      {
        ...APP,
        webhooks: [
          { url: url('/all'), event_types: ALL_KINDS, headers: { 'X-Relay-Test': 'token-1' } },
          {
            url: url('/presence-joins'),
            event_types: ['member_added'],
            filter: { channel_name_starts_with: 'presence-' },
          },
        ],
      },
    ]);
    relay = await h.startRelay({
      env: { RELAY_APPS_FILE: file, RELAY_WEBHOOK_DEBOUNCE_MS: '200', RELAY_WEBHOOK_BATCH_MS: '20' },
      app: APP,
    });
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
    receiver.server.close();
  });

  const eventsAt = (path) =>
    receiver.requests.filter((r) => r.path === path).flatMap((r) => sdk.webhook(r).getEvents());

  it('sends every kind, each request valid for pusher.webhook(), with the extra header', async () => {
    const userAuth = h.sdkUserAuth(sdk, { id: 'u-1', user_info: { name: 'Ada' } });
    const channelAuthorization = h.sdkChannelAuth(sdk, (socketId) => ({ user_id: `m-${socketId}` }));
    const a = h.pusherClient(relay, { userAuthentication: userAuth, channelAuthorization });
    a.signin();
    await h.awaitConnected(a);
    await h.awaitSignedIn(a);
    const b = h.pusherClient(relay, { channelAuthorization });
    const bSocket = await h.awaitConnected(b);
    await h.subscribe(a, 'presence-room');
    const room = await h.subscribe(b, 'presence-room');
    await h.subscribe(a, 'cache-news');
    await h.subscribe(b, 'private-chat');
    room.trigger('client-typing', { typing: true });

    await h.eventually(
      () => {
        const names = eventsAt('/all').map((e) => e.name);
        for (const kind of ['user_online', 'channel_occupied', 'member_added', 'client_event', 'cache_miss', 'subscription_count']) {
          assert.ok(names.includes(kind), `${kind} in ${names}`);
        }
      },
      { what: 'the joins' },
    );
    h.disconnect(relay, a);
    h.disconnect(relay, b);
    await h.eventually(
      () => {
        const names = eventsAt('/all').map((e) => e.name);
        for (const kind of ['user_offline', 'channel_vacated', 'member_removed']) {
          assert.ok(names.includes(kind), `${kind} in ${names}`);
        }
      },
      { what: 'the leaves' },
    );

    assert.ok(receiver.requests.length >= 2);
    const wrong = h.serverSdk(relay, { secret: 'not-the-secret' });
    for (const r of receiver.requests) {
      assert.equal(r.headers['content-type'], 'application/json');
      const hook = sdk.webhook(r);
      assert.ok(hook.isValid(), `valid: ${JSON.stringify(r.headers)} ${r.rawBody}`);
      assert.ok(Number.isInteger(hook.getTime().getTime()));
      assert.equal(wrong.webhook(r).isValid(), false, 'a wrong secret refuses it');
      if (r.path === '/all') assert.equal(r.headers['x-relay-test'], 'token-1');
      else assert.equal(r.headers['x-relay-test'], undefined);
    }

    const all = eventsAt('/all');
    const client = all.find((e) => e.name === 'client_event');
    assert.deepEqual(client, {
      name: 'client_event',
      channel: 'presence-room',
      event: 'client-typing',
      data: JSON.stringify({ typing: true }),
      socket_id: bSocket,
      user_id: `m-${bSocket}`,
    });
    assert.deepEqual(all.find((e) => e.name === 'cache_miss'), { name: 'cache_miss', channel: 'cache-news' });
    assert.deepEqual(all.find((e) => e.name === 'user_online'), { name: 'user_online', user_id: 'u-1' });
    assert.deepEqual(
      all.filter((e) => e.name === 'channel_occupied').map((e) => e.channel).sort(),
      ['cache-news', 'presence-room', 'private-chat'],
    );
    assert.deepEqual(
      all.filter((e) => e.name === 'subscription_count' && e.channel === 'private-chat').map((e) => e.subscription_count),
      [1],
    );

    const joins = eventsAt('/presence-joins');
    assert.equal(joins.length, 2, JSON.stringify(joins));
    assert.ok(joins.every((e) => e.name === 'member_added' && e.channel === 'presence-room'));
  });
});

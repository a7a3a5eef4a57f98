'use strict';
// Presence channels with pusher-js (channel.members) and the SDK's authorizeChannel as the auth endpoint, the REST
// views of a presence channel (/users, user_count), and the member limit. docs/protocol.md#presence, #channel-info, #presence-users, items 31–41, 75, 76.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

/** A pusher-js client joining `channelName` as `userId` (user_info omitted when `info` is undefined). */
async function join(relay, sdk, channelName, userId, info, { expectOk = true } = {}) {
  const presenceData = info === undefined ? { user_id: userId } : { user_id: userId, user_info: info };
  const { client, socketId } = await h.connectedClient(relay, {
    channelAuthorization: h.sdkChannelAuth(sdk, () => presenceData),
  });
  const errors = new h.ErrorLog(client);
  const channel = client.subscribe(channelName);
  const added = [];
  const removed = [];
  let succeeded = 0;
  channel.bind('pusher:member_added', (m) => added.push(m));
  channel.bind('pusher:member_removed', (m) => removed.push(m));
  channel.bind('pusher:subscription_succeeded', () => succeeded++);
  if (expectOk) await h.subscribe(client, channelName);
  return { client, socketId, channel, added, removed, errors, succeeded: () => succeeded };
}

function memberIds(channel) {
  const ids = [];
  channel.members.each((m) => ids.push(m.id));
  return ids.sort();
}

describe('presence channels with pusher-js', () => {
  let relay;
  let sdk;
  before(async () => {
    relay = await h.startRelay();
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  const channelInfo = (name, info) => h.sdkResult(sdk.get({ path: `/channels/${name}`, params: { info } }));
  const users = async (name) => {
    const r = await h.sdkResult(sdk.get({ path: `/channels/${name}/users` }));
    assert.equal(r.status, 200, r.body);
    return r.json.users.map((u) => u.id).sort();
  };

  it('two users: members.count/me/each; member_added reaches the first user only (items 31, 33)', async () => {
    const a = await join(relay, sdk, 'presence-room', '1', { name: 'Ada' });
    assert.equal(a.channel.members.count, 1);
    assert.deepEqual(a.channel.members.me, { id: '1', info: { name: 'Ada' } });
    assert.deepEqual(memberIds(a.channel), ['1']);

    const b = await join(relay, sdk, 'presence-room', '2', { name: 'Bob' });
    assert.equal(b.channel.members.count, 2);
    assert.deepEqual(memberIds(b.channel), ['1', '2']);
    assert.deepEqual(b.channel.members.get('1'), { id: '1', info: { name: 'Ada' } });
    assert.deepEqual(b.channel.members.me, { id: '2', info: { name: 'Bob' } });

    await h.eventually(() => assert.equal(a.added.length, 1), { what: 'member_added on the first client' });
    assert.deepEqual(a.added[0], { id: '2', info: { name: 'Bob' } });
    assert.equal(a.channel.members.count, 2);
    await h.sleep(300);
    assert.equal(b.added.length, 0, `the joiner got member_added: ${JSON.stringify(b.added)}`);
    assert.equal(a.added.length, 1);

    h.disconnect(relay, b.client);
    await h.eventually(() => assert.equal(a.removed.length, 1), { what: 'member_removed of 2' });
    const gone = a.removed[0];
    assert.deepEqual(gone, { id: '2', info: { name: 'Bob' } });
    assert.equal(a.channel.members.count, 1);
    h.disconnect(relay, a.client);
  });

  it('one user on two connections counts once; REST user_count/subscription_count and /users (items 34–36, 75, 76)', async () => {
    const ch = 'presence-multi';
    const a1 = await join(relay, sdk, ch, '42', { name: 'Ada' });
    const b = await join(relay, sdk, ch, '7', { name: 'Bob' });
    const a2 = await join(relay, sdk, ch, '42', { name: 'Ada' });
    assert.equal(a2.channel.members.count, 2);
    assert.deepEqual(memberIds(a2.channel), ['42', '7']);
    await h.eventually(() => assert.equal(a1.added.length, 1), { what: 'member_added of 7 on a1' });
    await h.sleep(300);
    assert.equal(b.added.length, 0, `second connection of 42 produced member_added: ${JSON.stringify(b.added)}`);
    assert.equal(a1.added.length, 1, 'a1 must only see user 7 join');
    assert.equal(b.channel.members.count, 2);
    assert.equal(a1.channel.members.count, 2);

    let r = await channelInfo(ch, 'user_count,subscription_count');
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(r.json, { occupied: true, user_count: 2, subscription_count: 3 });
    assert.deepEqual(await users(ch), ['42', '7']);
    const list = await h.sdkResult(sdk.get({ path: '/channels', params: { filter_by_prefix: 'presence-multi', info: 'user_count' } }));
    assert.equal(list.status, 200, list.body);
    assert.deepEqual(list.json, { channels: { [ch]: { user_count: 2 } } });

    // one of 42's two connections leaves (unsubscribe): no member_removed
    a2.client.unsubscribe(ch);
    await h.eventually(async () => assert.equal((await channelInfo(ch, 'subscription_count')).json.subscription_count, 2), {
      what: 'subscription_count 2 after unsubscribe',
    });
    await h.sleep(200);
    assert.equal(b.removed.length, 0, `member_removed while 42 still had a connection: ${JSON.stringify(b.removed)}`);
    assert.equal(b.channel.members.count, 2);
    assert.equal((await channelInfo(ch, 'user_count')).json.user_count, 2);

    // its last connection disconnects (no unsubscribe): member_removed to the rest
    h.disconnect(relay, a1.client);
    await h.eventually(() => assert.equal(b.removed.length, 1), { what: 'member_removed of 42 after disconnect' });
    assert.equal(b.removed[0].id, '42');
    assert.equal(b.channel.members.count, 1);
    assert.deepEqual(memberIds(b.channel), ['7']);
    assert.deepEqual(await users(ch), ['7']);
    r = await channelInfo(ch, 'user_count,subscription_count');
    assert.deepEqual(r.json, { occupied: true, user_count: 1, subscription_count: 1 });
    h.disconnect(relay, a2.client);
    h.disconnect(relay, b.client);
    await h.eventually(async () => assert.deepEqual(await users(ch), []), { what: '/users empty after everyone left' });
  });

  it('exact subscription_succeeded / member_added / member_removed frames; numeric user_id and no user_info (items 31, 37, 38)', async () => {
    const ch = 'presence-frames';
    const probe = await h.rawConnect(relay);
    const cd = '{"user_id":"42","user_info":{"name":"Ada"}}';
    const ok = await probe.raw.subscribe(ch, { auth: h.presenceAuth(relay, probe.socketId, ch, cd), channel_data: cd });
    assert.equal(typeof ok.data, 'string');
    assert.deepEqual(JSON.parse(ok.data), { presence: { ids: ['42'], hash: { 42: { name: 'Ada' } }, count: 1 } });

    // pusher-js member with a numeric user_id (the SDK serializes it as a number)
    const num = await join(relay, sdk, ch, 10, { n: 1 });
    const added10 = await probe.raw.nextEvent('pusher_internal:member_added', ch);
    assert.equal(typeof added10.data, 'string');
    assert.deepEqual(JSON.parse(added10.data), { user_id: '10', user_info: { n: 1 } });
    assert.ok(num.channel.members.get('10'), 'pusher-js finds the numeric member as "10"');

    // member without user_info: hash value null, key present
    const bare = await join(relay, sdk, ch, 'bare');
    const addedBare = JSON.parse((await probe.raw.nextEvent('pusher_internal:member_added', ch)).data);
    assert.equal(addedBare.user_id, 'bare');
    assert.ok(addedBare.user_info === undefined || addedBare.user_info === null, JSON.stringify(addedBare));
    assert.equal(bare.channel.members.count, 3);

    const late = await h.rawConnect(relay);
    const cd2 = '{"user_id":"late"}';
    const ok2 = await late.raw.subscribe(ch, { auth: h.presenceAuth(relay, late.socketId, ch, cd2), channel_data: cd2 });
    const presence = JSON.parse(ok2.data).presence;
    assert.deepEqual([...presence.ids].sort(), ['10', '42', 'bare', 'late']);
    for (const id of presence.ids) assert.equal(typeof id, 'string');
    assert.equal(presence.count, 4);
    assert.ok(Object.prototype.hasOwnProperty.call(presence.hash, 'bare'), 'hash has a key for the member without info');
    assert.equal(presence.hash.bare, null);
    assert.deepEqual(presence.hash['10'], { n: 1 });

    h.disconnect(relay, num.client);
    const removed = await probe.raw.nextEvent('pusher_internal:member_removed', ch);
    assert.equal(typeof removed.data, 'string');
    assert.deepEqual(JSON.parse(removed.data), { user_id: '10' });
    h.disconnect(relay, bare.client);
    probe.raw.close(1000);
    late.raw.close(1000);
  });

  it('bad presence auth (channel_data changed after signing) and no channel_data while not signed in -> pusher:error (item 41)', async () => {
    const ch = 'presence-denied';
    const { raw, socketId } = await h.rawConnect(relay);
    const signed = '{"user_id":"1"}';
    raw.send({
      event: 'pusher:subscribe',
      data: { channel: ch, auth: h.presenceAuth(relay, socketId, ch, signed), channel_data: '{"user_id":"2"}' },
    });
    const e1 = await raw.nextEvent('pusher:error');
    assert.equal(typeof e1.data, 'object');
    raw.send({ event: 'pusher:subscribe', data: { channel: ch, auth: h.channelAuth(relay, socketId, ch) } });
    const e2 = await raw.nextEvent('pusher:error');
    assert.equal(typeof e2.data, 'object');
    await raw.ping();
    assert.ok(!raw.all.some((f) => f.json && f.json.event === 'pusher_internal:subscription_succeeded'));
    const r = await channelInfo(ch, 'user_count');
    assert.deepEqual(r.json, { occupied: false, user_count: 0 });
    raw.close(1000);
  });

  it('signed-in pusher-js user joins presence without channel_data; identity from user_data (item 40)', async () => {
    const ch = 'presence-signed';
    const { client } = await h.connectedClient(relay, {
      userAuthentication: h.sdkUserAuth(sdk, { id: 'si-1', user_info: { name: 'Sig' } }),
      channelAuthorization: h.sdkChannelAuth(sdk, () => undefined), // token over socket_id:channel only
    });
    client.signin();
    await h.awaitSignedIn(client);
    const channel = await h.subscribe(client, ch);
    assert.equal(channel.members.count, 1);
    assert.deepEqual(channel.members.me, { id: 'si-1', info: { name: 'Sig' } });
    const other = await join(relay, sdk, ch, 'o-1', { name: 'Other' });
    assert.deepEqual(other.channel.members.get('si-1'), { id: 'si-1', info: { name: 'Sig' } });
    assert.deepEqual(await users(ch), ['o-1', 'si-1']);
    h.disconnect(relay, client);
    h.disconnect(relay, other.client);
  });

  it('duplicate presence subscribe on one socket: pusher:error, no second member_added; pusher:unsubscribe of the last connection -> member_removed (items 19, 35)', async () => {
    const ch = 'presence-dup';
    const watcher = await join(relay, sdk, ch, 'w', {});
    const c = await h.rawConnect(relay);
    const cd = '{"user_id":"d"}';
    const data = { channel: ch, auth: h.presenceAuth(relay, c.socketId, ch, cd), channel_data: cd };
    await c.raw.subscribe(ch, data);
    await h.eventually(() => assert.equal(watcher.added.length, 1), { what: 'member_added of d' });
    c.raw.send({ event: 'pusher:subscribe', data });
    const err = await c.raw.nextEvent('pusher:error');
    assert.equal(err.data.code, null);
    await c.raw.ping();
    await h.sleep(200);
    assert.equal(watcher.added.length, 1, 'duplicate subscribe re-announced the member');
    assert.ok(!c.raw.frames.some((f) => f.json && f.json.event === 'pusher_internal:subscription_succeeded'));
    assert.equal((await channelInfo(ch, 'subscription_count')).json.subscription_count, 2);
    c.raw.send({ event: 'pusher:unsubscribe', data: { channel: ch } });
    await h.eventually(() => assert.deepEqual(watcher.removed.map((m) => m.id), ['d']), { what: 'member_removed of d' });
    assert.equal(watcher.channel.members.count, 1);
    c.raw.close(1000);
    h.disconnect(relay, watcher.client);
  });

  it('user_id over 128 chars or user_info over 1 KB -> pusher:error, not subscribed (docs/protocol.md#presence limits)', async () => {
    const ch = 'presence-big';
    const c = await h.rawConnect(relay);
    for (const cd of [
      JSON.stringify({ user_id: 'u'.repeat(129) }),
      JSON.stringify({ user_id: 'ok', user_info: { blob: 'x'.repeat(1100) } }),
    ]) {
      c.raw.send({ event: 'pusher:subscribe', data: { channel: ch, auth: h.presenceAuth(relay, c.socketId, ch, cd), channel_data: cd } });
      const err = await c.raw.nextEvent('pusher:error');
      assert.equal(typeof err.data, 'object');
    }
    const okCd = JSON.stringify({ user_id: 'u'.repeat(128), user_info: { blob: 'x'.repeat(900) } });
    await c.raw.subscribe(ch, { auth: h.presenceAuth(relay, c.socketId, ch, okCd), channel_data: okCd });
    c.raw.close(1000);
  });

  it('user_count is refused for non-presence channels, /users too (items 74, 76)', async () => {
    const { client } = await h.connectedClient(relay);
    await h.subscribe(client, 'not-presence');
    assert.equal((await channelInfo('not-presence', 'user_count')).status, 400);
    assert.equal((await h.sdkResult(sdk.get({ path: '/channels/not-presence/users' }))).status, 400);
    assert.deepEqual(await users('presence-never-used'), []);
    h.disconnect(relay, client);
  });
});

describe('presence member limit (apps file max_presence_members = 2)', () => {
  let relay;
  let sdk;
  before(async () => {
    const file = h.appsFile([{ id: 'app-id', key: 'app-key', secret: 'app-secret', max_presence_members: 2 }]);
    relay = await h.startRelay({ env: { RELAY_APPS_FILE: file } });
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  it('third distinct user refused with pusher:error, no subscription_succeeded; extra connection of a member still joins (item 39)', async () => {
    const ch = 'presence-full';
    const u1 = await join(relay, sdk, ch, 'u1', {});
    const u2 = await join(relay, sdk, ch, 'u2', {});
    const u3 = await join(relay, sdk, ch, 'u3', {}, { expectOk: false });
    const err = await u3.errors.waitFor(undefined, 3000);
    assert.equal(err.type, 'PusherError');
    await h.sleep(300);
    assert.equal(u3.succeeded(), 0, 'the over-limit user got subscription_succeeded');
    assert.equal(u3.channel.subscribed, false);
    assert.equal(u3.client.connection.state, 'connected', 'refusal must not close the connection');
    assert.equal(u1.added.length, 1, `member_added leaked for the refused user: ${JSON.stringify(u1.added)}`);

    const again = await join(relay, sdk, ch, 'u1', {});
    assert.equal(again.channel.members.count, 2);
    const r = await h.sdkResult(sdk.get({ path: `/channels/${ch}`, params: { info: 'user_count,subscription_count' } }));
    assert.deepEqual(r.json, { occupied: true, user_count: 2, subscription_count: 3 });

    // a slot freed by a leaving user can be taken
    h.disconnect(relay, u2.client);
    await h.eventually(() => assert.equal(u1.removed.length, 1), { what: 'member_removed of u2' });
    const u4 = await join(relay, sdk, ch, 'u4', {});
    assert.equal(u4.channel.members.count, 2);
    for (const c of [u1, u3, again, u4]) h.disconnect(relay, c.client);
  });
});

describe('presence member limit at the default (100)', () => {
  let relay;
  before(async () => {
    relay = await h.startRelay();
  });
  after(async () => {
    await relay.stop();
  });

  it('101st distinct user -> pusher:error, not subscribed; user 0 on another connection still joins (item 39)', async () => {
    const ch = 'presence-hundred';
    const join1 = async (userId) => {
      const c = await h.rawConnect(relay);
      const cd = JSON.stringify({ user_id: userId });
      c.raw.send({
        event: 'pusher:subscribe',
        data: { channel: ch, auth: h.presenceAuth(relay, c.socketId, ch, cd), channel_data: cd },
      });
      return c;
    };
    const conns = [];
    for (let i = 0; i < 100; i += 20) {
      const batch = await Promise.all(Array.from({ length: 20 }, (_, j) => join1(`user-${i + j}`)));
      await Promise.all(batch.map((c) => c.raw.nextEvent('pusher_internal:subscription_succeeded', ch)));
      conns.push(...batch);
    }
    const extra = await join1('user-100');
    const err = await extra.raw.nextEvent('pusher:error', undefined, 3000);
    assert.equal(typeof err.data, 'object');
    await extra.raw.ping();
    assert.ok(!extra.raw.all.some((f) => f.json && f.json.event === 'pusher_internal:subscription_succeeded'));
    const same = await join1('user-0');
    const ok = await same.raw.nextEvent('pusher_internal:subscription_succeeded', ch);
    assert.equal(JSON.parse(ok.data).presence.count, 100);
    for (const c of [...conns, extra, same]) c.raw.terminate();
  });
});

'use strict';
// User authentication with pusher-js (`pusher.signin()`, userAuthentication.customHandler backed by the SDK's
// authenticateUser): server-to-user events (SDK sendToUser), watchlist online/offline, terminateUserConnections,
// and authorized-connections mode. docs/protocol.md#users, items 40, 52–60.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

/** A pusher-js client signed in as `userData.id` (signin requested before connecting; resolved once signed in). */
async function signedInClient(relay, sdk, userData, extra = {}) {
  const client = h.pusherClient(relay, { userAuthentication: h.sdkUserAuth(sdk, userData), ...extra });
  const errors = new h.ErrorLog(client);
  const online = [];
  const offline = [];
  client.user.watchlist.bind('online', (e) => online.push(e));
  client.user.watchlist.bind('offline', (e) => offline.push(e));
  client.signin();
  const socketId = await h.awaitConnected(client);
  await h.awaitSignedIn(client);
  return { client, socketId, errors, online, offline };
}

/** Raw pusher:signin; resolves the next signin_success or pusher:error frame. */
async function rawSignin(relay, c, userData, { auth } = {}) {
  const ud = typeof userData === 'string' ? userData : JSON.stringify(userData);
  c.raw.send({ event: 'pusher:signin', data: { auth: auth || h.signinAuth(relay, c.socketId, ud), user_data: ud } });
  return c.raw.next(
    (m) => m && (m.event === 'pusher:signin_success' || m.event === 'pusher:error'),
    5000,
    'signin_success or pusher:error',
  );
}

describe('pusher-js signin, server-to-user, watchlist, terminate', () => {
  let relay;
  let sdk;
  before(async () => {
    relay = await h.startRelay();
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  it('signin() then user.bind receives the SDK sendToUser on every connection of that user only (items 52, 56)', async () => {
    const a1 = await signedInClient(relay, sdk, { id: 'u-42', user_info: { name: 'Ada' } });
    const a2 = await signedInClient(relay, sdk, { id: 'u-42', user_info: { name: 'Ada' } });
    const other = await signedInClient(relay, sdk, { id: 'u-43' });
    assert.deepEqual(a1.client.user.user_data, { id: 'u-42', user_info: { name: 'Ada' } });
    assert.equal(a1.client.user.serverToUserChannel.name, '#server-to-user-u-42');
    const got1 = [];
    const got2 = [];
    const gotOther = [];
    a1.client.user.bind('notify', (d) => got1.push(d));
    a2.client.user.bind('notify', (d) => got2.push(d));
    other.client.user.bind('notify', (d) => gotOther.push(d));
    const res = await sdk.sendToUser('u-42', 'notify', { n: 1, text: 'ü' });
    assert.equal(res.status, 200);
    await h.eventually(() => {
      assert.deepEqual(got1, [{ n: 1, text: 'ü' }]);
      assert.deepEqual(got2, [{ n: 1, text: 'ü' }]);
    }, { what: 'sendToUser delivered to both connections of u-42' });
    await h.sleep(200);
    assert.deepEqual(gotOther, []);
    assert.deepEqual(a1.errors.errors, []);
    // #server-to-user channels are not listed (docs/protocol.md#list-channels REC)
    const list = await h.sdkResult(sdk.get({ path: '/channels' }));
    assert.equal(list.status, 200);
    assert.ok(!Object.keys(list.json.channels).some((c) => c.startsWith('#')), list.body);
    for (const c of [a1, a2, other]) h.disconnect(relay, c.client);
  });

  it('frame level: signin_success echoes user_data exactly; bad signature, second identity, foreign #server-to-user refused (items 52–55)', async () => {
    const c = await h.rawConnect(relay);
    const ud = '{"id":"42", "user_info":{"name":"Ädä"},"watchlist":[]}'; // odd spacing must survive
    const bad = await rawSignin(relay, c, ud, { auth: h.signinAuth(relay, c.socketId, ud, { secret: 'nope' }) });
    assert.equal(bad.event, 'pusher:error', 'wrong signature');
    assert.equal(typeof bad.data, 'object');
    c.raw.send({ event: 'pusher:subscribe', data: { auth: '', channel: '#server-to-user-42' } });
    assert.equal((await c.raw.nextEvent('pusher:error')).event, 'pusher:error', 'not signed in yet');

    const ok = await rawSignin(relay, c, ud);
    assert.deepEqual(ok, { event: 'pusher:signin_success', data: { user_data: ud } });
    const again = await rawSignin(relay, c, { id: '43' });
    assert.equal(again.event, 'pusher:error', 'signin as a different id on the same socket');
    const succ = await c.raw.subscribe('#server-to-user-42');
    assert.deepEqual(succ, { event: 'pusher_internal:subscription_succeeded', channel: '#server-to-user-42', data: '{}' });
    c.raw.send({ event: 'pusher:subscribe', data: { auth: '', channel: '#server-to-user-43' } });
    assert.equal((await c.raw.nextEvent('pusher:error')).event, 'pusher:error', 'still 42, so 43 is foreign');

    await sdk.sendToUser('42', 'hi', { x: 1 });
    const ev = await c.raw.nextEvent('hi', '#server-to-user-42');
    assert.deepEqual(ev, { event: 'hi', channel: '#server-to-user-42', data: '{"x":1}' });
    c.raw.close(1000);
  });

  it('watchlist: initial online/offline, then online and offline as watched users come and go (item 58)', async () => {
    const w9 = await signedInClient(relay, sdk, { id: 'w9' });
    const w42 = await signedInClient(relay, sdk, { id: 'w42', watchlist: ['w7', 'w9'] });
    await h.eventually(() => {
      assert.deepEqual(w42.online.map((e) => e.user_ids), [['w9']]);
      assert.deepEqual(w42.offline.map((e) => e.user_ids), [['w7']]);
    }, { what: 'initial watchlist status' });
    assert.equal(w42.online[0].name, 'online');
    assert.equal(w42.offline[0].name, 'offline');

    const w7 = await signedInClient(relay, sdk, { id: 'w7' });
    await h.eventually(() => assert.deepEqual(w42.online.map((e) => e.user_ids), [['w9'], ['w7']]), {
      what: 'online w7',
    });
    // a second connection of w7: no new online; closing one of the two: no offline
    const w7b = await signedInClient(relay, sdk, { id: 'w7' });
    h.disconnect(relay, w7.client);
    await h.sleep(300);
    assert.equal(w42.online.length, 2, JSON.stringify(w42.online));
    assert.equal(w42.offline.length, 1, JSON.stringify(w42.offline));
    h.disconnect(relay, w7b.client);
    await h.eventually(() => assert.deepEqual(w42.offline.map((e) => e.user_ids), [['w7'], ['w7']]), {
      what: 'offline w7 after its last connection',
    });
    // the watched user does not get watchlist events about the watcher
    assert.deepEqual([...w9.online, ...w9.offline], []);
    assert.deepEqual(w42.errors.errors, []);
    h.disconnect(relay, w9.client);
    await h.eventually(() => assert.deepEqual(w42.offline.at(-1).user_ids, ['w9']), { what: 'offline w9' });
    h.disconnect(relay, w42.client);
  });

  it('watchlist of 101 ids -> signed in anyway plus pusher:error 4302 (item 59)', async () => {
    const watchlist = Array.from({ length: 101 }, (_, i) => `wl-${i}`);
    const c = await signedInClient(relay, sdk, { id: 'wl-owner', watchlist });
    const err = await c.errors.waitFor(4302, 3000);
    assert.equal(err.type, 'PusherError');
    assert.equal(c.client.connection.state, 'connected');
    // the first 100 are watched: the 100th coming online is reported, the 101st is not
    const w99 = await signedInClient(relay, sdk, { id: 'wl-99' });
    const w100 = await signedInClient(relay, sdk, { id: 'wl-100' });
    await h.eventually(() => assert.ok(c.online.some((e) => e.user_ids.includes('wl-99'))), { what: 'online wl-99' });
    await h.sleep(200);
    assert.ok(!c.online.some((e) => e.user_ids.includes('wl-100')), JSON.stringify(c.online));
    for (const x of [c, w99, w100]) h.disconnect(relay, x.client);
  });

  it('terminateUserConnections closes signed-in connections with 4009, not presence-only members or failed signins (item 57)', async () => {
    const id = 'term-1';
    const s1 = await signedInClient(relay, sdk, { id });
    const s2 = await signedInClient(relay, sdk, { id });
    const bystander = await signedInClient(relay, sdk, { id: 'term-2' });
    // presence member with the same user_id, not signed in
    const pm = await h.connectedClient(relay, { channelAuthorization: h.sdkChannelAuth(sdk, () => ({ user_id: id })) });
    const pmErrors = new h.ErrorLog(pm.client);
    const pch = await h.subscribe(pm.client, 'presence-term');
    // a raw socket signed in as the user (to see the close code) and one whose signin failed
    const raw = await h.rawConnect(relay);
    assert.equal((await rawSignin(relay, raw, { id })).event, 'pusher:signin_success');
    const failed = await h.rawConnect(relay);
    const ud = JSON.stringify({ id });
    assert.equal((await rawSignin(relay, failed, ud, { auth: h.signinAuth(relay, failed.socketId, ud, { secret: 'x' }) })).event, 'pusher:error');

    const res = await h.sdkResult(sdk.terminateUserConnections(id));
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(res.json, {});

    const close = await raw.raw.waitClose(3000);
    assert.equal(close.code, 4009);
    const err = raw.raw.all.find((f) => f.json && f.json.event === 'pusher:error');
    if (err) assert.equal(err.json.data.code, 4009);
    for (const s of [s1, s2]) {
      await s.errors.waitFor(4009, 3000);
      await h.awaitState(s.client, 'disconnected', 3000); // 4009 = refused: pusher-js does not reconnect
    }
    await h.sleep(300);
    assert.equal(bystander.client.connection.state, 'connected');
    assert.equal(pm.client.connection.state, 'connected');
    assert.deepEqual(pmErrors.errors, []);
    assert.ok(failed.raw.isOpen, 'a socket whose signin failed was closed');
    await failed.raw.ping();
    const got = new h.Collector(pch, 'still-here');
    await sdk.trigger('presence-term', 'still-here', {});
    await got.waitFor(1);
    // unknown user: 200 {} too
    const none = await h.sdkResult(sdk.terminateUserConnections('nobody-at-all'));
    assert.equal(none.status, 200);
    for (const c of [s1, s2, bystander, pm]) h.disconnect(relay, c.client);
    failed.raw.close(1000);
  });

  it('terminate also ends a signed-in presence membership and the watchers\' online status; the user can come back', async () => {
    const id = 'term-back';
    const watcher = await signedInClient(relay, sdk, { id: 'term-watcher', watchlist: [id] });
    const member = await h.connectedClient(relay, { channelAuthorization: h.sdkChannelAuth(sdk, () => ({ user_id: 'm' })) });
    const mch = member.client.subscribe('presence-term-back');
    const removed = [];
    mch.bind('pusher:member_removed', (m) => removed.push(m.id));
    await h.subscribe(member.client, 'presence-term-back');
    const s = await signedInClient(relay, sdk, { id }, { channelAuthorization: h.sdkChannelAuth(sdk, () => undefined) });
    const sch = await h.subscribe(s.client, 'presence-term-back'); // member via sign-in, no channel_data
    assert.deepEqual(sch.members.me.id, id);
    await h.eventually(() => assert.ok(watcher.online.some((e) => e.user_ids.includes(id))), { what: 'watcher sees online' });

    assert.equal((await h.sdkResult(sdk.terminateUserConnections(id))).status, 200);
    await s.errors.waitFor(4009, 3000);
    await h.eventually(() => assert.deepEqual(removed, [id]), { what: 'member_removed after terminate' });
    await h.eventually(() => assert.ok(watcher.offline.some((e) => e.user_ids.includes(id))), { what: 'watcher sees offline' });
    assert.deepEqual(await h.sdkResult(sdk.get({ path: '/channels/presence-term-back/users' })).then((r) => r.json), {
      users: [{ id: 'm' }],
    });

    // the user may reconnect and sign in again (banning is the app's business)
    await h.awaitState(s.client, 'disconnected', 3000);
    s.client.connect();
    await h.awaitConnected(s.client);
    await h.awaitSignedIn(s.client);
    const got = [];
    s.client.user.bind('welcome-back', (d) => got.push(d));
    await sdk.sendToUser(id, 'welcome-back', { ok: 1 });
    await h.eventually(() => assert.deepEqual(got, [{ ok: 1 }]), { what: 'sendToUser after reconnect' });
    await h.eventually(() => assert.equal(watcher.online.filter((e) => e.user_ids.includes(id)).length, 2), {
      what: 'watcher sees online again',
    });
    for (const c of [watcher, member, s]) h.disconnect(relay, c.client);
  });

  it('signing in again with the same id on the same socket succeeds again (docs/protocol.md#sign-in REC)', async () => {
    const c = await h.rawConnect(relay);
    const first = await rawSignin(relay, c, { id: 'twice' });
    assert.equal(first.event, 'pusher:signin_success');
    const second = await rawSignin(relay, c, { id: 'twice', user_info: { v: 2 } });
    assert.equal(second.event, 'pusher:signin_success', JSON.stringify(second));
    await c.raw.subscribe('#server-to-user-twice');
    c.raw.close(1000);
  });
});

describe('authorized connections (apps file authorized_connections, timeout 1 s)', () => {
  let relay;
  let sdk;
  before(async () => {
    const file = h.appsFile([{ id: 'app-id', key: 'app-key', secret: 'app-secret', authorized_connections: true }]);
    relay = await h.startRelay({ env: { RELAY_APPS_FILE: file, RELAY_AUTHORIZED_CONNECTION_TIMEOUT: '1' } });
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  it('a client that never signs in is closed with 4009; signed-in and private-subscribed ones stay (item 60)', async () => {
    const started = Date.now();
    const idle = await h.connectedClient(relay);
    const idleErrors = new h.ErrorLog(idle.client);
    await h.subscribe(idle.client, 'public-only'); // a public subscription does not authorize
    const rawIdle = await h.rawConnect(relay);
    const signed = await signedInClient(relay, sdk, { id: 'auth-ok' });
    const priv = await h.connectedClient(relay, { channelAuthorization: h.sdkChannelAuth(sdk) });
    await h.subscribe(priv.client, 'private-authz');
    const pres = await h.connectedClient(relay, { channelAuthorization: h.sdkChannelAuth(sdk, () => ({ user_id: 'p' })) });
    await h.subscribe(pres.client, 'presence-authz');
    // a failed signin does not authorize
    const failed = await h.rawConnect(relay);
    const ud = '{"id":"f"}';
    const r = await rawSignin(relay, failed, ud, { auth: h.signinAuth(relay, failed.socketId, ud, { secret: 'x' }) });
    assert.equal(r.event, 'pusher:error');

    const close = await rawIdle.raw.waitClose(4000);
    assert.equal(close.code, 4009);
    const err = rawIdle.raw.all.find((f) => f.json && f.json.event === 'pusher:error');
    if (err) assert.equal(err.json.data.code, 4009);
    await idleErrors.waitFor(4009, 4000);
    await h.awaitState(idle.client, 'disconnected', 3000);
    assert.ok(Date.now() - started >= 900, 'closed before the timeout');
    assert.equal((await failed.raw.waitClose(3000)).code, 4009, 'failed signin kept the connection');

    await h.sleep(1200); // well past the timeout for the others
    assert.equal(signed.client.connection.state, 'connected');
    assert.equal(priv.client.connection.state, 'connected');
    assert.equal(pres.client.connection.state, 'connected');
    assert.deepEqual(signed.errors.errors, []);
    const got = [];
    signed.client.user.bind('still', (d) => got.push(d));
    await sdk.sendToUser('auth-ok', 'still', { here: true });
    await h.eventually(() => assert.deepEqual(got, [{ here: true }]), { what: 'signed-in client still served' });
    for (const c of [idle, signed, priv, pres]) h.disconnect(relay, c.client);
  });
});

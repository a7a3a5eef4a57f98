'use strict';
// Client events with pusher-js (`channel.trigger('client-…')`): fan-out without echo, metadata.user_id on presence,
// the 10/s rate limit (4301), refusals at the frame level, and an app with client events disabled.
// docs/protocol.md#client-events, items 42–49, 51.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

function authOpts(sdk, presenceData) {
  return { channelAuthorization: h.sdkChannelAuth(sdk, presenceData) };
}

describe('client events with pusher-js', () => {
  let relay;
  let sdk;
  before(async () => {
    relay = await h.startRelay();
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  it('private channel: reaches the other subscriber, not the sender; no user_id (item 42)', async () => {
    const ch = 'private-chat';
    const a = await h.connectedClient(relay, authOpts(sdk));
    const b = await h.connectedClient(relay, authOpts(sdk));
    const chA = await h.subscribe(a.client, ch);
    const chB = await h.subscribe(b.client, ch);
    const atA = new h.Collector(chA, 'client-typing');
    const atB = new h.Collector(chB, 'client-typing');
    // a raw subscriber sees the wire frame
    const probe = await h.rawConnect(relay);
    await probe.raw.subscribe(ch, { auth: h.channelAuth(relay, probe.socketId, ch) });

    assert.equal(chA.trigger('client-typing', { x: 1 }), true);
    const [e] = await atB.waitFor(1);
    assert.deepEqual(e.data, { x: 1 });
    assert.equal(e.metadata && e.metadata.user_id, undefined);
    const frame = await probe.raw.nextEvent('client-typing', ch);
    assert.deepEqual(frame, { event: 'client-typing', channel: ch, data: '{"x":1}' });
    await h.sleep(300);
    assert.equal(atA.events.length, 0, 'the sender got its own client event back');
    assert.equal(atB.events.length, 1);
    probe.raw.close(1000);
    h.disconnect(relay, a.client);
    h.disconnect(relay, b.client);
  });

  it('presence channel: metadata.user_id is the sender; the same user on another connection receives it (item 43)', async () => {
    const ch = 'presence-chat';
    const mk = async (id) => {
      const c = await h.connectedClient(relay, authOpts(sdk, () => ({ user_id: id, user_info: { id } })));
      const channel = await h.subscribe(c.client, ch);
      return { ...c, channel, got: new h.Collector(channel, 'client-msg') };
    };
    const a1 = await mk('42');
    const a2 = await mk('42');
    const b = await mk('7');
    a1.channel.trigger('client-msg', { text: 'hi' });
    const [atB] = await b.got.waitFor(1);
    assert.deepEqual(atB.data, { text: 'hi' });
    assert.equal(atB.metadata.user_id, '42');
    const [atA2] = await a2.got.waitFor(1);
    assert.equal(atA2.metadata.user_id, '42');
    b.channel.trigger('client-msg', { text: 'yo' });
    const [fromB] = await a1.got.waitFor(1);
    assert.equal(fromB.metadata.user_id, '7');
    assert.equal((await a2.got.waitFor(2))[1].metadata.user_id, '7');
    await h.sleep(300);
    assert.equal(a1.got.events.length, 1, 'a1 must only have b\'s event');
    assert.equal(b.got.events.length, 1, 'b must only have a1\'s event');
    for (const c of [a1, a2, b]) h.disconnect(relay, c.client);
  });

  it('rate limit: 15 events at once -> first 10 delivered, pusher:error 4301 to the sender, still connected; next second works (item 48)', async () => {
    const ch = 'private-burst';
    const a = await h.connectedClient(relay, authOpts(sdk));
    const b = await h.connectedClient(relay, authOpts(sdk));
    const errors = new h.ErrorLog(a.client);
    const chA = await h.subscribe(a.client, ch);
    const chB = await h.subscribe(b.client, ch);
    const got = new h.Collector(chB, 'client-n');
    for (let i = 0; i < 15; i++) chA.trigger('client-n', { i });
    const err = await errors.waitFor(4301, 3000);
    assert.equal(err.type, 'PusherError');
    assert.equal(typeof err.data.message, 'string');
    await got.waitFor(10);
    await h.sleep(300);
    assert.deepEqual(
      got.events.map((e) => e.data.i),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      'exactly the first 10 client events are relayed',
    );
    assert.equal(a.client.connection.state, 'connected');
    assert.equal(a.client.connection.socket_id, a.socketId);
    await h.sleep(1000);
    chA.trigger('client-n', { i: 'later' });
    await got.waitFor(11);
    assert.deepEqual(got.events[10].data, { i: 'later' });
    h.disconnect(relay, a.client);
    h.disconnect(relay, b.client);
  });

  it('frame level: public channel, unsubscribed channel, non-client- name, >10 KB data -> refused, nobody receives (items 44–46, 49)', async () => {
    const a = await h.rawConnect(relay);
    const b = await h.rawConnect(relay);
    await a.raw.subscribe('public-chat');
    await b.raw.subscribe('public-chat');
    await b.raw.subscribe('private-other', { auth: h.channelAuth(relay, b.socketId, 'private-other') });
    await a.raw.subscribe('private-big', { auth: h.channelAuth(relay, a.socketId, 'private-big') });
    await b.raw.subscribe('private-big', { auth: h.channelAuth(relay, b.socketId, 'private-big') });

    a.raw.send({ event: 'client-x', channel: 'public-chat', data: { n: 1 } });
    const e1 = await a.raw.nextEvent('pusher:error');
    assert.equal(typeof e1.data, 'object', 'public channel');
    a.raw.send({ event: 'client-x', channel: 'private-other', data: { n: 2 } });
    const e2 = await a.raw.nextEvent('pusher:error');
    assert.equal(typeof e2.data, 'object', 'not subscribed');
    a.raw.send({ event: 'notclient-x', channel: 'private-big', data: { n: 3 } });
    a.raw.send({ event: 'client-big', channel: 'private-big', data: 'x'.repeat(11 * 1024) });
    const e4 = await a.raw.nextEvent('pusher:error');
    assert.equal(typeof e4.data, 'object', '11 KB data');
    await a.raw.ping();
    await b.raw.ping();
    await h.sleep(200);
    const leaked = b.raw.all.filter((f) => f.json && /client|notclient/.test(f.json.event));
    assert.deepEqual(leaked.map((f) => f.text), [], 'nothing may be broadcast');
    assert.ok(a.raw.isOpen && b.raw.isOpen);
    a.raw.close(1000);
    b.raw.close(1000);
  });

  it('string data is relayed byte-for-byte; object data re-encoded as a string (items 42, 51)', async () => {
    const ch = 'private-strings';
    const a = await h.rawConnect(relay);
    const b = await h.rawConnect(relay);
    await a.raw.subscribe(ch, { auth: h.channelAuth(relay, a.socketId, ch) });
    await b.raw.subscribe(ch, { auth: h.channelAuth(relay, b.socketId, ch) });
    a.raw.send({ event: 'client-s', channel: ch, data: 'hello' });
    assert.deepEqual(await b.raw.nextEvent('client-s', ch), { event: 'client-s', channel: ch, data: 'hello' });
    a.raw.send({ event: 'client-o', channel: ch, data: { a: [1, 'ü'] } });
    const o = await b.raw.nextEvent('client-o', ch);
    assert.equal(typeof o.data, 'string');
    assert.deepEqual(JSON.parse(o.data), { a: [1, 'ü'] });
    a.raw.close(1000);
    b.raw.close(1000);
  });

  it('the rate limit is per connection: another connection of the same channel keeps sending (item 48)', async () => {
    const ch = 'private-per-conn';
    const mk = async () => {
      const c = await h.connectedClient(relay, authOpts(sdk));
      return { ...c, channel: await h.subscribe(c.client, ch), errors: new h.ErrorLog(c.client) };
    };
    const a = await mk();
    const b = await mk();
    const sink = await mk();
    const got = new h.Collector(sink.channel, 'client-p');
    for (let i = 0; i < 12; i++) a.channel.trigger('client-p', { from: 'a', i });
    await a.errors.waitFor(4301, 3000);
    for (let i = 0; i < 10; i++) b.channel.trigger('client-p', { from: 'b', i });
    await got.waitFor(20);
    await h.sleep(200);
    assert.equal(got.events.filter((e) => e.data.from === 'a').length, 10);
    assert.equal(got.events.filter((e) => e.data.from === 'b').length, 10);
    assert.deepEqual(b.errors.errors, []);
    for (const c of [a, b, sink]) h.disconnect(relay, c.client);
  });

  it('signed-in member without channel_data: client events carry the signed-in id as user_id (items 40, 43)', async () => {
    const ch = 'presence-signed-chat';
    const a = h.pusherClient(relay, {
      userAuthentication: h.sdkUserAuth(sdk, { id: 'signed-7' }),
      channelAuthorization: h.sdkChannelAuth(sdk, () => undefined),
    });
    a.signin();
    await h.awaitConnected(a);
    await h.awaitSignedIn(a);
    const chA = await h.subscribe(a, ch);
    const probe = await h.rawConnect(relay);
    const cd = '{"user_id":"probe"}';
    await probe.raw.subscribe(ch, { auth: h.presenceAuth(relay, probe.socketId, ch, cd), channel_data: cd });
    chA.trigger('client-hey', { n: 1 });
    const f = await probe.raw.nextEvent('client-hey', ch);
    assert.deepEqual(f, { event: 'client-hey', channel: ch, data: '{"n":1}', user_id: 'signed-7' });
    probe.raw.close(1000);
    h.disconnect(relay, a);
  });

  it('client events on private-encrypted- channels are relayed as-is (docs/protocol.md#encrypted-channels REC; pusher-js refuses to send them, raw frames here)', async () => {
    const ch = 'private-encrypted-client';
    const a = await h.rawConnect(relay);
    const b = await h.rawConnect(relay);
    await a.raw.subscribe(ch, { auth: h.channelAuth(relay, a.socketId, ch) });
    await b.raw.subscribe(ch, { auth: h.channelAuth(relay, b.socketId, ch) });
    const opaque = '{"nonce":"AAAA","ciphertext":"BBBB"}';
    a.raw.send({ event: 'client-enc', channel: ch, data: opaque });
    assert.deepEqual(await b.raw.nextEvent('client-enc', ch), { event: 'client-enc', channel: ch, data: opaque });
    a.raw.close(1000);
    b.raw.close(1000);
  });
});

describe('client events disabled (RELAY_CLIENT_EVENTS=false)', () => {
  let relay;
  let sdk;
  before(async () => {
    relay = await h.startRelay({ env: { RELAY_CLIENT_EVENTS: 'false' } });
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  it('pusher-js trigger -> pusher:error to the sender, not relayed, connection stays (item 47)', async () => {
    const ch = 'private-quiet';
    const a = await h.connectedClient(relay, authOpts(sdk));
    const b = await h.connectedClient(relay, authOpts(sdk));
    const errors = new h.ErrorLog(a.client);
    const chA = await h.subscribe(a.client, ch);
    const chB = await h.subscribe(b.client, ch);
    const got = new h.Collector(chB, 'client-x');
    chA.trigger('client-x', { no: true });
    const err = await errors.waitFor(undefined, 3000);
    assert.equal(err.type, 'PusherError');
    await h.sleep(300);
    assert.equal(got.events.length, 0);
    assert.equal(a.client.connection.state, 'connected');
    // server events still flow
    const ev = new h.Collector(chB, 'server-ev');
    await sdk.trigger(ch, 'server-ev', { ok: 1 });
    await ev.waitFor(1);
    h.disconnect(relay, a.client);
    h.disconnect(relay, b.client);
  });
});

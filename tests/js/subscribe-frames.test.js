'use strict';
// pusher:subscribe / pusher:unsubscribe at the frame level. docs/protocol.md#channel-names, #subscribe, #unsubscribe, items 17–24.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

describe('subscribe frames', () => {
  let relay;
  let sdk;
  before(async () => {
    relay = await h.startRelay();
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  async function expectRejected(raw, data, what) {
    raw.send({ event: 'pusher:subscribe', data });
    const err = await raw.nextEvent('pusher:error', undefined, 3000).catch((e) => {
      throw new Error(`${what}: ${e.message}`);
    });
    assert.equal(typeof err.data, 'object', `${what}: data must be an object`);
    assert.ok('code' in err.data, `${what}: data.code present`);
    await raw.ping();
    const ok = raw.frames.find((f) => f.json && f.json.event === 'pusher_internal:subscription_succeeded');
    assert.equal(ok, undefined, `${what}: got ${ok && ok.text}`);
    assert.ok(raw.isOpen, `${what}: socket closed`);
    return err;
  }

  it('public subscribe -> exact subscription_succeeded frame (item 17); auth may be absent', async () => {
    const { raw } = await h.rawConnect(relay);
    raw.send({ event: 'pusher:subscribe', data: { auth: '', channel: 'my-channel' } });
    const m = await raw.nextEvent('pusher_internal:subscription_succeeded');
    assert.deepEqual(m, { event: 'pusher_internal:subscription_succeeded', channel: 'my-channel', data: '{}' });
    raw.send({ event: 'pusher:subscribe', data: { channel: 'no-auth-field' } });
    await raw.nextEvent('pusher_internal:subscription_succeeded', 'no-auth-field');
    raw.close(1000);
  });

  it('subscribe with data as a JSON string -> success (item 18)', async () => {
    const { raw } = await h.rawConnect(relay);
    raw.send({ event: 'pusher:subscribe', data: JSON.stringify({ auth: '', channel: 'string-data' }) });
    const m = await raw.nextEvent('pusher_internal:subscription_succeeded');
    assert.equal(m.channel, 'string-data');
    raw.close(1000);
  });

  it('duplicate subscribe -> pusher:error code null, one success total, still delivers once (item 19)', async () => {
    const { raw } = await h.rawConnect(relay);
    await raw.subscribe('dup-ch');
    raw.send({ event: 'pusher:subscribe', data: { auth: '', channel: 'dup-ch' } });
    const err = await raw.nextEvent('pusher:error');
    assert.equal(err.data.code, null);
    await raw.ping();
    assert.equal(
      raw.all.filter((f) => f.json && f.json.event === 'pusher_internal:subscription_succeeded').length,
      1,
      'exactly one subscription_succeeded',
    );
    await sdk.trigger('dup-ch', 'ev', 'once');
    await raw.nextEvent('ev', 'dup-ch');
    await raw.ping();
    assert.equal(raw.all.filter((f) => f.json && f.json.event === 'ev').length, 1, 'delivered twice');
    raw.close(1000);
  });

  it('invalid channel names -> pusher:error, no subscription (item 20, 22)', async () => {
    const { raw } = await h.rawConnect(relay);
    for (const channel of ['with space', 'a:b', '#foo', '', 'ünicode', 'a/b', 'a*b']) {
      await expectRejected(raw, { auth: '', channel }, `channel ${JSON.stringify(channel)}`);
    }
    await expectRejected(raw, { auth: '' }, 'channel missing');
    await expectRejected(raw, { auth: '', channel: 42 }, 'channel not a string');
    raw.close(1000);
  });

  it('a 200-char name subscribes, 201 chars -> pusher:error (item 21)', async () => {
    const { raw } = await h.rawConnect(relay);
    // every allowed punctuation character appears in it
    const name200 = ('Ch_9=@,.;-' + 'x'.repeat(200)).slice(0, 200);
    assert.equal(name200.length, 200);
    await raw.subscribe(name200);
    await expectRejected(raw, { auth: '', channel: 'y'.repeat(201) }, '201 chars');
    raw.close(1000);
  });

  it('unsubscribe from a channel never subscribed: connection stays open (item 24)', async () => {
    const { raw } = await h.rawConnect(relay);
    raw.send({ event: 'pusher:unsubscribe', data: { channel: 'never-subscribed' } });
    raw.send({ event: 'pusher:unsubscribe', data: {} });
    raw.send({ event: 'pusher:unsubscribe' });
    await raw.ping();
    assert.ok(raw.isOpen);
    const errs = raw.frames.filter((f) => f.json && f.json.event === 'pusher:error');
    for (const e of errs) assert.equal(typeof e.json.data, 'object');
    raw.close(1000);
  });

  it('unsubscribe then subscribe again on the same socket works', async () => {
    const { raw } = await h.rawConnect(relay);
    await raw.subscribe('again-ch');
    raw.send({ event: 'pusher:unsubscribe', data: { channel: 'again-ch' } });
    await raw.subscribe('again-ch');
    await sdk.trigger('again-ch', 'ev', 'x');
    await raw.nextEvent('ev', 'again-ch');
    raw.close(1000);
  });
});

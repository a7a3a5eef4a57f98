'use strict';
// permessage-deflate (docs/protocol.md#framing) with real clients. Node's `ws` offers the extension by default
// ("permessage-deflate; client_max_window_bits") and compresses what it sends from 1 KiB up; pusher-js's Node
// build talks through its bundled faye-websocket, which offers no extension, so it stays plain. Every client gets
// the same events, compressed or not.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

/** What `ws` agreed with the server: the extension, with no context takeover either way. */
function negotiated(raw) {
  const ext = raw.ws._extensions['permessage-deflate'];
  return ext ? { name: raw.ws.extensions, ...ext.params } : null;
}

/** A typical 2 KB event. */
function orders(n) {
  return {
    orders: Array.from({ length: n }, (_, i) => ({
      id: 10000 + i * 37,
      symbol: `SYM${i % 17}`,
      side: i % 3 ? 'sell' : 'buy',
      price: 90 + ((i * 7) % 23) + ((i * 13) % 100) / 100,
      qty: 1 + ((i * 11) % 50),
      status: 'open',
    })),
  };
}

describe('permessage-deflate with real clients', () => {
  let relay;
  let sdk;
  before(async () => {
    relay = await h.startRelay();
    sdk = h.serverSdk(relay);
  });
  after(async () => {
    await relay.stop();
  });

  it('ws negotiates it, pusher-js does not, and all receive identical events; compressed ones take fewer bytes', async () => {
    const compressed = await h.rawConnect(relay);
    const plain = await h.rawConnect(relay, { wsOptions: { perMessageDeflate: false } });
    assert.deepEqual(negotiated(compressed.raw), {
      name: 'permessage-deflate',
      server_no_context_takeover: true,
      client_no_context_takeover: true,
    });
    assert.equal(negotiated(plain.raw), null);
    const { client } = await h.connectedClient(relay);
    const ch = await h.subscribe(client, 'market');
    const collector = new h.Collector(ch, 'orders');
    await compressed.raw.subscribe('market');
    await plain.raw.subscribe('market');

    const before = [compressed, plain].map((c) => c.raw.ws._socket.bytesRead);
    const data = orders(20);
    assert.ok(JSON.stringify(data).length > 1500);
    for (let i = 0; i < 3; i++) {
      assert.equal((await sdk.trigger('market', 'orders', { ...data, i })).status, 200);
    }
    for (let i = 0; i < 3; i++) {
      const a = await compressed.raw.nextEvent('orders', 'market');
      const b = await plain.raw.nextEvent('orders', 'market');
      assert.deepEqual(a, b);
      assert.deepEqual(JSON.parse(a.data), { ...data, i });
    }
    const [events] = [await collector.waitFor(3)];
    assert.deepEqual(events.map((e) => e.data), [0, 1, 2].map((i) => ({ ...data, i })));
    const [zBytes, pBytes] = [compressed, plain].map((c, k) => c.raw.ws._socket.bytesRead - before[k]);
    assert.ok(zBytes < pBytes * 0.35, `compressed ${zBytes} bytes vs plain ${pBytes}`);
    h.disconnect(relay, client);
  });

  it('a client event ws sends compressed reaches compressed and plain clients alike', async () => {
    const ch = 'private-desk';
    const sender = await h.rawConnect(relay);
    const zReceiver = await h.rawConnect(relay);
    const pReceiver = await h.rawConnect(relay, { wsOptions: { perMessageDeflate: false } });
    for (const c of [sender, zReceiver, pReceiver]) {
      await c.raw.subscribe(ch, { auth: h.channelAuth(relay, c.socketId, ch) });
    }
    const sentBefore = sender.raw.ws._socket.bytesWritten;
    const data = orders(30);
    const text = JSON.stringify({ event: 'client-orders', channel: ch, data });
    assert.ok(text.length > 2048, 'over ws\'s 1 KiB threshold: sent compressed');
    sender.raw.send(text);
    const a = await zReceiver.raw.nextEvent('client-orders', ch);
    const b = await pReceiver.raw.nextEvent('client-orders', ch);
    assert.deepEqual(a, b);
    assert.deepEqual(JSON.parse(a.data), data);
    const sent = sender.raw.ws._socket.bytesWritten - sentBefore;
    assert.ok(sent < text.length / 2, `the client sent ${sent} bytes for ${text.length}`);
  });

  it('a compressed message that inflates past the limit is refused with 1009', async () => {
    const c = await h.rawConnect(relay);
    // 8 MiB of spaces: ws sends about 8 KB.
    c.raw.send(JSON.stringify({ event: 'pusher:ping', data: { pad: ' '.repeat(8 << 20) } }));
    const closed = await c.raw.waitClose();
    assert.equal(closed.code, 1009);
  });
});

describe('permessage-deflate turned off', () => {
  let relay;
  before(async () => {
    relay = await h.startRelay({ env: { RELAY_COMPRESSION: 'off' } });
  });
  after(async () => {
    await relay.stop();
  });

  it('the offer is declined and the connection goes on uncompressed', async () => {
    const c = await h.rawConnect(relay);
    assert.equal(negotiated(c.raw), null);
    await c.raw.subscribe('market');
    await c.raw.ping();
  });
});

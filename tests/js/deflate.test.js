'use strict';
// permessage-deflate (docs/protocol.md#framing) with real clients. Node's `ws` offers the extension by default
// ("permessage-deflate; client_max_window_bits") and compresses what it sends from 1 KiB up; pusher-js's Node
// build talks through its bundled faye-websocket, which offers no extension, so it stays plain there. In a
// browser pusher-js uses the browser's WebSocket, which offers the extension: the last suite runs pusher-js's web
// build in headless Chromium (browser.js). Every client gets the same events, compressed or not.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const { skip, launch } = require('./browser');

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

describe('pusher-js in headless Chromium', () => {
  let relay;
  let sdk;
  let browser;
  let unusable; // why the browser could not be started: each test fails with it
  let metricsPort;
  before(async () => {
    if (skip) return;
    metricsPort = await h.freePort();
    relay = await h.startRelay({ env: { RELAY_METRICS_PORT: String(metricsPort) } });
    sdk = h.serverSdk(relay);
    ({ browser, unusable } = await launch());
  });
  after(async () => {
    if (browser) await browser.close();
    if (relay) await relay.stop();
  });

  it('negotiates permessage-deflate as browsers do; its events and client events match a plain client', { skip }, async () => {
    if (unusable) throw unusable;
    const page = await browser.newPage();
    try {
      const errors = [];
      page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
      // Private-channel auth is signed here, in Node, and handed to the page's pusher-js.
      await page.exposeFunction('relayAuth', (socketId, channel) => h.channelAuth(relay, socketId, channel));
      await page.addScriptTag({ path: require.resolve('pusher-js/dist/web/pusher.min.js') });
      const subscribed = page.evaluate(
        ({ key, port }) =>
          new Promise((resolve, reject) => {
            const pusher = new Pusher(key, {
              cluster: 'mt1',
              wsHost: '127.0.0.1',
              wsPort: port,
              forceTLS: false,
              enabledTransports: ['ws'],
              channelAuthorization: {
                customHandler: (params, callback) =>
                  window.relayAuth(params.socketId, params.channelName).then((auth) => callback(null, { auth })),
              },
            });
            window.pusherClient = pusher;
            window.received = [];
            pusher.connection.bind('error', (e) => reject(new Error(JSON.stringify(e))));
            pusher.connection.bind('connected', () => {
              const market = pusher.subscribe('market');
              market.bind('orders', (data) => window.received.push(data));
              const desk = pusher.subscribe('private-desk');
              let waiting = 2;
              const done = () => --waiting === 0 && resolve();
              market.bind('pusher:subscription_succeeded', done);
              desk.bind('pusher:subscription_succeeded', done);
              const refused = (e) => reject(new Error(`subscription_error: ${JSON.stringify(e)}`));
              market.bind('pusher:subscription_error', refused);
              desk.bind('pusher:subscription_error', refused);
            });
          }),
        { key: relay.app.key, port: relay.port },
      );
      await h.withTimeout(subscribed, 10000, 'pusher-js in the page connected and subscribed');
      // The browser's own record of what it agreed with relay (WebSocket.extensions).
      const agreed = await page.evaluate(() => window.pusherClient.connection.connection.transport.socket.extensions);
      assert.equal(agreed, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover');

      const plain = await h.rawConnect(relay, { wsOptions: { perMessageDeflate: false } });
      await plain.raw.subscribe('market');
      await plain.raw.subscribe('private-desk', { auth: h.channelAuth(relay, plain.socketId, 'private-desk') });
      const data = orders(20);
      for (let i = 0; i < 3; i++) {
        assert.equal((await sdk.trigger('market', 'orders', { ...data, i })).status, 200);
      }
      const expected = [0, 1, 2].map((i) => ({ ...data, i }));
      for (const e of expected) {
        assert.deepEqual(JSON.parse((await plain.raw.nextEvent('orders', 'market')).data), e);
      }
      await h.eventually(
        async () => {
          const got = await page.evaluate(() => window.received);
          if (got.length < 3) throw new Error(`${got.length} of 3 events in the page`);
          assert.deepEqual(got, expected);
        },
        { timeout: 5000, interval: 50, what: 'three events in the page' },
      );

      // A client event from the page: Chromium sends it compressed (relay reads fewer bytes than its text), and
      // relay inflates it for the plain client.
      const bytesRead = async () => {
        const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
        const m = text.match(/^relay_ws_bytes_received_total (\d+)$/m);
        assert.ok(m, 'relay_ws_bytes_received_total in /metrics');
        return Number(m[1]);
      };
      const clientData = { ...orders(15), from: 'browser' };
      const text = JSON.stringify({ event: 'client-order', channel: 'private-desk', data: clientData });
      const before = await bytesRead();
      await page.evaluate((d) => window.pusherClient.channel('private-desk').trigger('client-order', d), clientData);
      const ev = await plain.raw.nextEvent('client-order', 'private-desk');
      assert.deepEqual(JSON.parse(ev.data), clientData);
      const read = (await bytesRead()) - before;
      assert.ok(read < text.length / 2, `relay read ${read} bytes for a ${text.length}-byte client event`);
      assert.deepEqual(errors, []);
    } finally {
      await page.close();
    }
  });
});

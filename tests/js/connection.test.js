'use strict';
// Connection lifecycle: handshake, socket ids, handshake refusals (4001/4003/4007), pings, odd frames.
// docs/protocol.md#connection, checklist items 1–4, 5, 7–11, 14, 15.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const SOCKET_ID = /^\d+\.\d+$/;

describe('connection', () => {
  let relay;
  before(async () => {
    relay = await h.startRelay();
  });
  after(async () => {
    await relay.stop();
  });

  it('pusher-js connects and gets a socket_id matching ^\\d+\\.\\d+$ (item 1)', async () => {
    const { client, socketId } = await h.connectedClient(relay);
    assert.match(socketId, SOCKET_ID);
    assert.equal(client.connection.state, 'connected');
    h.disconnect(relay, client);
  });

  it('two pusher-js clients get different socket_ids (item 2)', async () => {
    const a = await h.connectedClient(relay);
    const b = await h.connectedClient(relay);
    assert.match(a.socketId, SOCKET_ID);
    assert.match(b.socketId, SOCKET_ID);
    assert.notEqual(a.socketId, b.socketId);
    h.disconnect(relay, a.client);
    h.disconnect(relay, b.client);
  });

  it('connection_established is the first frame, data a JSON string with socket_id and activity_timeout (item 1)', async () => {
    const { raw } = await h.rawOpen(relay);
    const first = await raw.next(() => true, 5000, 'first frame');
    assert.equal(first.event, 'pusher:connection_established');
    assert.equal(typeof first.data, 'string', 'data must be a JSON-encoded string');
    const data = JSON.parse(first.data);
    assert.match(data.socket_id, SOCKET_ID);
    assert.ok(Number.isInteger(data.activity_timeout) && data.activity_timeout > 0, `activity_timeout ${data.activity_timeout}`);
    raw.close(1000);
  });

  it('many raw connections all get distinct socket_ids', async () => {
    const conns = await Promise.all(Array.from({ length: 20 }, () => h.rawConnect(relay)));
    const ids = new Set(conns.map((c) => c.socketId));
    assert.equal(ids.size, conns.length);
    for (const c of conns) c.raw.close(1000);
  });

  it('unknown app key: pusher:error with object data code 4001 first, then close 4001 (item 3)', async () => {
    const { raw, httpStatus } = await h.rawOpen(relay, { key: 'no-such-key' });
    assert.equal(httpStatus, undefined, 'expected the upgrade to succeed and the refusal to come as frames');
    const close = await raw.waitClose();
    assert.equal(close.code, 4001);
    assert.ok(raw.all.length >= 1, 'no pusher:error frame before the close');
    const err = raw.all[0].json;
    assert.equal(err.event, 'pusher:error');
    assert.equal(typeof err.data, 'object', 'pusher:error data must be an object');
    assert.equal(err.data.code, 4001);
    assert.equal(typeof err.data.message, 'string');
    assert.ok(!raw.all.some((f) => f.json && f.json.event === 'pusher:connection_established'));
  });

  it('unknown app key through pusher-js: error 4001 reported, never connected', async () => {
    const client = h.pusherClient(relay, { key: 'no-such-key' });
    const states = [];
    client.connection.bind('state_change', ({ current }) => states.push(current));
    const error = await h.withTimeout(
      new Promise((resolve) => {
        // pusher-js wraps a handshake refusal as {type:'WebSocketError', error:{type:'PusherError', data}}
        client.connection.bind('error', (e) => {
          const inner = e && e.error && e.error.data ? e.error : e;
          if (inner && inner.data && inner.data.code) resolve(inner);
        });
      }),
      5000,
      'pusher-js error event',
    );
    assert.equal(error.type, 'PusherError');
    assert.equal(error.data.code, 4001);
    await h.sleep(300);
    assert.ok(!states.includes('connected'), `states: ${states}`);
    assert.notEqual(client.connection.state, 'connected');
    h.disconnect(relay, client);
  });

  for (const protocol of ['3', 'abc']) {
    it(`protocol=${protocol} -> close 4007 (item 4)`, async () => {
      const { raw, httpStatus } = await h.rawOpen(relay, { query: `?protocol=${protocol}&client=js&version=8.6.0` });
      assert.equal(httpStatus, undefined);
      const close = await raw.waitClose();
      assert.equal(close.code, 4007);
      assert.ok(!raw.all.some((f) => f.json && f.json.event === 'pusher:connection_established'));
      const err = raw.all.find((f) => f.json && f.json.event === 'pusher:error');
      if (err) assert.equal(err.json.data.code, 4007);
    });
  }

  it('WS path /foo/bar -> HTTP 404 or close 4005 (item 7)', async () => {
    const res = await h.rawOpen(relay, { path: '/foo/bar' }).catch((e) => ({ error: e }));
    if (res.httpStatus !== undefined) {
      assert.equal(res.httpStatus, 404);
    } else {
      assert.ok(res.raw, `unexpected: ${res.error}`);
      const close = await res.raw.waitClose();
      assert.equal(close.code, 4005);
    }
  });

  it('pusher:ping with object, absent and string data -> pusher:pong with data "{}" (items 8–10)', async () => {
    const { raw } = await h.rawConnect(relay);
    for (const frame of [
      { event: 'pusher:ping', data: {} },
      { event: 'pusher:ping' },
      { event: 'pusher:ping', data: '{}' },
    ]) {
      raw.send(frame);
      const t0 = Date.now();
      const pong = await raw.nextEvent('pusher:pong', undefined, 1000);
      assert.ok(Date.now() - t0 < 1000);
      assert.equal(pong.data, '{}', `pong to ${JSON.stringify(frame)}`);
    }
    raw.close(1000);
  });

  it('WebSocket Ping control frame -> Pong with the same payload (item 11)', async () => {
    const { raw } = await h.rawConnect(relay);
    const payload = Buffer.from('relay-ping-123');
    const pong = h.withTimeout(new Promise((resolve) => raw.ws.once('pong', resolve)), 2000, 'control pong');
    raw.ws.ping(payload);
    assert.deepEqual(await pong, payload);
    raw.close(1000);
  });

  it('binary frame: no crash, connection still usable (item 14)', async () => {
    const { raw } = await h.rawConnect(relay);
    raw.ws.send(Buffer.from([0, 1, 2, 3, 255]), { binary: true });
    await h.sleep(200);
    if (raw.isOpen) {
      await raw.ping();
    } else {
      // docs/protocol.md#framing allows closing with 1003; anything else is a failure.
      const close = await raw.waitClose();
      assert.equal(close.code, 1003);
    }
    // the server itself is alive
    const again = await h.rawConnect(relay);
    await again.raw.ping();
    again.raw.close(1000);
    raw.terminate();
  });

  it('malformed JSON text frames: connection stays open, ping still answered (item 15)', async () => {
    const { raw } = await h.rawConnect(relay);
    for (const junk of ['{not json', '', '[]', '42', '"str"', '{"event":', '{"data":{}}', '{"event":123}', 'null']) {
      raw.send(junk);
    }
    await raw.ping();
    assert.ok(raw.isOpen);
    assert.equal(raw.closeInfo, null);
    raw.close(1000);
  });

  it('unknown pusher:* events and non-client custom events are ignored, connection stays open (docs/protocol.md#client-input)', async () => {
    const { raw } = await h.rawConnect(relay);
    raw.send({ event: 'pusher:nonsense', data: {} });
    raw.send({ event: 'my-event', channel: 'x', data: {} });
    await raw.ping();
    assert.ok(raw.isOpen);
    raw.close(1000);
  });
});

describe('disabled app', () => {
  let relay;
  before(async () => {
    const file = h.tempFile('apps.json', {
      apps: [
        { id: 'app-id', key: 'app-key', secret: 'app-secret' },
        { id: 'off-id', key: 'off-key', secret: 'off-secret', enabled: false },
      ],
    });
    relay = await h.startRelay({ env: { RELAY_APPS_FILE: file } });
  });
  after(async () => {
    await relay.stop();
  });

  it('connecting to a disabled app -> close 4003 (item 5)', async () => {
    const { raw } = await h.rawOpen(relay, { key: 'off-key' });
    const close = await raw.waitClose();
    assert.equal(close.code, 4003);
    assert.ok(!raw.all.some((f) => f.json && f.json.event === 'pusher:connection_established'));
    const err = raw.all.find((f) => f.json && f.json.event === 'pusher:error');
    if (err) assert.equal(err.json.data.code, 4003);
  });

  it('the enabled app in the same file still works', async () => {
    const { client, socketId } = await h.connectedClient(relay);
    assert.match(socketId, SOCKET_ID);
    h.disconnect(relay, client);
  });
});

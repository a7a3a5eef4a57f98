'use strict';
// A subscriber that stops reading must not hold up anyone else: with RELAY_MAX_OUTBOUND_QUEUE_BYTES=65536 and
// ~2 MB published to its channel, the other subscribers get every event in order and the server keeps answering.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const net = require('node:net');
const h = require('./harness');

/** A masked client text frame. */
function clientFrame(text) {
  const payload = Buffer.from(text, 'utf8');
  const mask = crypto.randomBytes(4);
  let header;
  if (payload.length < 126) {
    header = Buffer.from([0x81, 0x80 | payload.length]);
  } else {
    header = Buffer.alloc(4);
    header[0] = 0x81;
    header[1] = 0x80 | 126;
    header.writeUInt16BE(payload.length, 2);
  }
  const masked = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) masked[i] = payload[i] ^ mask[i % 4];
  return Buffer.concat([header, mask, masked]);
}

/** Raw TCP WebSocket client: upgrade, subscribe to `channel`, then never read again. */
async function slowReader(relay, channel) {
  const sock = net.connect(relay.port, h.HOST);
  relay.sockets.add(sock);
  let seen = '';
  let closed = false;
  sock.on('close', () => {
    closed = true;
  });
  sock.on('error', () => {});
  const until = (re, what) =>
    h.withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          if (re.test(seen)) {
            sock.off('data', onData);
            resolve();
          } else if (closed) reject(new Error(`socket closed waiting for ${what}`));
        };
        const onData = (d) => {
          seen += d.toString('latin1');
          check();
        };
        sock.on('data', onData);
        check();
      }),
      5000,
      what,
    );
  await h.withTimeout(new Promise((resolve) => sock.once('connect', resolve)), 5000, 'TCP connect');
  sock.write(
    `GET /app/${relay.app.key}?protocol=7&client=js&version=8.6.0&flash=false HTTP/1.1\r\n` +
      `Host: ${h.HOST}:${relay.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await until(/pusher:connection_established/, 'connection_established on the slow socket');
  sock.write(clientFrame(JSON.stringify({ event: 'pusher:subscribe', data: { auth: '', channel } })));
  await until(/subscription_succeeded/, 'subscription_succeeded on the slow socket');
  sock.pause(); // from here on nothing is read: the kernel buffers fill and the server's queue grows
  return {
    sock,
    get closed() {
      return closed;
    },
  };
}

/**
 * Two slow readers and five fast subscribers (4 pusher-js, 1 raw) on one channel; publish 200 events of ~10 KB
 * (~2 MB) in requests of `perRequest` events; every fast subscriber must get all of them in order.
 *
 * The publisher is paced by the fast subscribers (they live in this same process): before each request it waits
 * until every fast subscriber has everything but the last `window` events, so a fast subscriber is never more than
 * one request (plus `window` events) behind. Only the slow readers build up a backlog.
 */
async function firehose(t, relay, channel, perRequest, window = 2) {
  const slow = [await slowReader(relay, channel), await slowReader(relay, channel)];
  const fast = await Promise.all(Array.from({ length: 4 }, () => h.connectedClient(relay)));
  const drops = [];
  const collectors = [];
  for (const [idx, { client }] of fast.entries()) {
    client.connection.bind('state_change', ({ current }) => {
      if (current !== 'connected') drops.push(`pusher-js client ${idx} went ${current}`);
    });
    collectors.push(new h.Collector(await h.subscribe(client, channel), 'chunk'));
  }
  const rawFast = await h.rawConnect(relay);
  await rawFast.raw.subscribe(channel);
  let rawCount = 0;
  rawFast.raw.ws.on('message', () => rawCount++);

  const state = () =>
    `pusher-js received ${collectors.map((c) => c.events.length).join('/')}, raw ${rawCount}; ` +
    `${drops.join(', ') || 'no pusher-js reconnects'}; raw fast close ${JSON.stringify(rawFast.raw.closeInfo)}; ` +
    `server: ${relay.stderr.split('\n').filter((l) => /WARN|ERROR/.test(l)).join(' | ')}`;
  /** Every fast subscriber has at least n events. */
  const fastHave = async (n, timeout = 5000) => {
    if (n <= 0) return;
    await h
      .eventually(
        () => {
          if (drops.length || rawFast.raw.closeInfo) throw new Error('a fast subscriber was disconnected');
          assert.ok(collectors.every((c) => c.events.length >= n) && rawCount >= n);
        },
        { timeout, interval: 5, what: `all fast subscribers at ${n} events` },
      )
      .catch((e) => {
        throw new Error(`${e.message}: ${state()}`);
      });
  };

  const sdk = h.serverSdk(relay);
  const TOTAL = 200;
  const filler = 'z'.repeat(10000);
  let slowestMs = 0;
  const publish = async (from, count) => {
    const t0 = Date.now();
    let res;
    if (count === 1) {
      res = await h.withTimeout(sdk.trigger(channel, 'chunk', JSON.stringify({ seq: from, filler })), 10000, `trigger ${from}`);
    } else {
      const batch = [];
      for (let i = from; i < from + count; i++) batch.push({ channel, name: 'chunk', data: JSON.stringify({ seq: i, filler }) });
      res = await h.withTimeout(sdk.triggerBatch(batch), 10000, `batch at ${from}`);
    }
    slowestMs = Math.max(slowestMs, Date.now() - t0);
    assert.equal(res.status, 200);
  };

  for (let seq = 0; seq < TOTAL; seq += perRequest) {
    await fastHave(seq - window);
    await publish(seq, Math.min(perRequest, TOTAL - seq));
    if (seq % 50 === 0) {
      const stats = await h.getJson(relay, '/stats');
      assert.equal(stats.status, 200);
      assert.equal(typeof stats.json.connections, 'number');
    }
  }
  await fastHave(TOTAL, 10000);
  for (const [idx, c] of collectors.entries()) {
    const seqs = c.events.map((e) => e.data.seq);
    assert.deepEqual(seqs, Array.from({ length: TOTAL }, (_, i) => i), `fast client ${idx} order/completeness`);
  }
  assert.deepEqual(drops, [], 'a fast pusher-js client lost its connection');
  assert.equal(rawFast.raw.closeInfo, null);

  const stats = await h.getJson(relay, '/stats');
  assert.equal(stats.status, 200);
  assert.equal((await h.getJson(relay, '/health')).status, 200);
  // a fresh client still works end to end
  const late = await h.connectedClient(relay);
  const lateCol = new h.Collector(await h.subscribe(late.client, `${channel}-after`), 'ok');
  await sdk.trigger(`${channel}-after`, 'ok', {});
  await lateCol.waitFor(1);

  // The slow readers must not be buffered forever: keep publishing (paced the same way, at most ~6 MB more) until
  // the server has cut both off (/stats connections drops by 2), while every fast subscriber stays connected.
  const before = (await h.getJson(relay, '/stats')).json.connections;
  let extra = 0;
  let now = before;
  for (; extra < 600; extra += perRequest) {
    await fastHave(TOTAL + extra - window);
    await publish(TOTAL + extra, perRequest);
    if (extra % 10 === 0) {
      now = (await h.getJson(relay, '/stats')).json.connections;
      if (now <= before - slow.length) break;
    }
  }
  if (now > before - slow.length) {
    // give a cut-off connection a moment to be torn down
    await h
      .eventually(async () => {
        now = (await h.getJson(relay, '/stats')).json.connections;
        assert.ok(now <= before - slow.length);
      }, { timeout: 3000, interval: 100 })
      .catch(() => {});
  }
  const subCount = await h.sdkResult(sdk.get({ path: `/channels/${channel}`, params: { info: 'subscription_count' } }));
  t.diagnostic(
    `${perRequest} event(s)/request: ${TOTAL} events (~${Math.round((TOTAL * 10030) / 1024)} KiB), slowest publish ` +
      `${slowestMs} ms, /stats ${stats.body}; then ${extra} more: connections ${before} -> ${now}, channel ${subCount.body}`,
  );
  assert.equal(now, before - slow.length, `slow readers not cut off after ${extra} more events (~${extra * 10} KB): ${state()}`);
  assert.equal(subCount.json.subscription_count, fast.length + 1, 'subscription_count after the slow readers were cut');
  assert.deepEqual(drops, [], 'a fast pusher-js client lost its connection');
  assert.equal(rawFast.raw.closeInfo, null);

  for (const s of slow) s.sock.destroy();
  rawFast.raw.close(1000);
  for (const { client } of [...fast, late]) h.disconnect(relay, client);
}

describe('slow reader (RELAY_MAX_OUTBOUND_QUEUE_BYTES=65536)', () => {
  let relay;
  before(async () => {
    relay = await h.startRelay({ env: { RELAY_MAX_OUTBOUND_QUEUE_BYTES: '65536' } });
  });
  after(async () => {
    await relay.stop();
  });

  it('~2 MB as single-event triggers: fast subscribers get every event in order, /stats keeps answering', async (t) => {
    await firehose(t, relay, 'firehose-single', 1);
  });

  it('~2 MB as full batches (10 x 10 KB per request): fast subscribers get every event in order', async (t) => {
    // A legal batch (docs/protocol.md#batch-publish: 10 events of up to 10 KB) is ~100 KB: a client that reads promptly must not be cut
    // off as a "slow reader" just because one publish is larger than the per-connection queue cap.
    await firehose(t, relay, 'firehose-batch', 10, 0);
  });
});

'use strict';
// TLS on the main port (README "TLS") with the official clients: pusher-js subscribes over wss:// (forceTLS) and
// receives an event the pusher Node SDK publishes over https:// (useTLS).
//
// The certificate is made here with the openssl CLI. pusher-js opens its socket without TLS options, and Node reads
// NODE_EXTRA_CA_CERTS only when it starts, so the two clients run in a child node process (this same file, with
// RELAY_TLS_CHILD set) started with the test's certificate as an extra CA: verification stays on, as for a real
// client. A child without that CA must fail to connect, which shows the check is real.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const h = require('./harness');

const CHILD_TIMEOUT_MS = 15000;

if (process.env.RELAY_TLS_CHILD) {
  child().catch((e) => {
    process.stdout.write(JSON.stringify({ error: String(e && e.stack) }) + '\n');
    process.exit(1);
  });
} else {
  tests();
}

/** The child: connect with pusher-js over wss, subscribe, publish with the SDK over https, report what arrived. */
async function child() {
  const port = Number(process.env.RELAY_TLS_PORT);
  const { key, id, secret } = h.DEFAULT_APP;
  const client = new h.PusherClient(key, {
    wsHost: h.HOST,
    wsPort: port,
    wssPort: port,
    forceTLS: true,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
  });
  const result = {};
  try {
    result.socketId = await h.awaitConnected(client, 5000);
    const channel = await h.subscribe(client, 'tls-channel');
    const arrived = new h.Collector(channel, 'tls-event');
    const sdk = new h.PusherServer({ appId: id, key, secret, host: h.HOST, port, useTLS: true, timeout: 5000 });
    const res = await sdk.trigger('tls-channel', 'tls-event', { hello: 'wss', n: 42 });
    result.status = res.status;
    result.events = (await arrived.waitFor(1)).map((e) => e.data);
  } catch (e) {
    result.error = String(e && e.message);
  }
  client.disconnect();
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

function tests() {
  const { describe, it, before, after } = require('node:test');
  const assert = require('node:assert/strict');

  describe('TLS with the official clients', () => {
    let dir;
    let cert;
    let key;
    let relay;

    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-js-tls-'));
      cert = path.join(dir, 'cert.pem');
      key = path.join(dir, 'key.pem');
      execFileSync('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=relay-test',
        '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ], { stdio: 'ignore' });
      relay = await startTlsRelay(cert, key);
    });

    after(async () => {
      if (relay) await relay.stop();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it('GET /health answers over https with the certificate, and plain http to the port is refused', async () => {
      const res = await httpsGet(relay.port, '/health', fs.readFileSync(cert));
      assert.equal(res.status, 200);
      assert.match(res.body, /ok/);
      const plain = await fetch(`http://${h.HOST}:${relay.port}/health`);
      assert.equal(plain.status, 400);
      assert.match(await plain.text(), /TLS port/);
      // Untrusted: the handshake fails on the client's side.
      await assert.rejects(httpsGet(relay.port, '/health', undefined), /self[- ]signed|unable to verify|certificate/i);
    });

    it('pusher-js over wss (forceTLS) receives an event the SDK publishes over https (useTLS)', async () => {
      const out = await runChild(relay.port, { NODE_EXTRA_CA_CERTS: cert });
      assert.equal(out.error, undefined, `child failed: ${out.error}\nrelay: ${relay.stderr}`);
      assert.match(out.socketId, /^\d+\.\d+$/);
      assert.equal(out.status, 200);
      assert.deepEqual(out.events, [{ hello: 'wss', n: 42 }]);
    });

    it('pusher-js without the certificate as a CA does not connect', async () => {
      const out = await runChild(relay.port, {});
      assert.match(String(out.error), /timed out .*connected/);
      assert.equal(out.events, undefined);
    });
  });
}

/** Runs this file as the child with `env` added; resolves with the JSON line it printed. */
function runChild(port, env) {
  const base = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('RELAY_') && k !== 'NODE_EXTRA_CA_CERTS' && !k.startsWith('NODE_TEST')) base[k] = v;
  }
  const proc = spawn(process.execPath, [__filename], {
    env: { ...base, ...env, RELAY_TLS_CHILD: '1', RELAY_TLS_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d) => (stdout += d));
  proc.stderr.on('data', (d) => (stderr += d));
  const done = new Promise((resolve, reject) => {
    proc.on('exit', () => {
      const line = stdout.trim().split('\n').pop();
      try {
        resolve(JSON.parse(line));
      } catch (_) {
        reject(new Error(`child printed no result: ${stdout} ${stderr}`));
      }
    });
  });
  return h.withTimeout(done, CHILD_TIMEOUT_MS, 'the TLS client process').finally(() => proc.kill('SIGKILL'));
}

function httpsGet(port, target, ca) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: h.HOST, port, path: target, ca, servername: 'localhost', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(5000, () => req.destroy(new Error('https request timed out')));
    req.on('error', reject);
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, h.HOST, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** relay with the certificate, ready when GET /health answers 200 over https (the harness checks plain http). */
async function startTlsRelay(cert, key) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RELAY_')) env[k] = v;
  Object.assign(env, { RELAY_METRICS_PORT: '0', RELAY_TLS_CERT: cert, RELAY_TLS_KEY: key });
  const port = await freePort();
  const proc = spawn(h.relayBin(), ['--host', h.HOST, '--port', String(port), '--workers', '2'], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const relay = {
    port,
    stderr: '',
    exited: new Promise((resolve) => proc.on('exit', resolve)),
    async stop() {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(t);
    },
  };
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => (relay.stderr += d));
  const ca = fs.readFileSync(cert);
  try {
    await h.eventually(
      async () => {
        const res = await httpsGet(port, '/health', ca);
        if (res.status !== 200) throw new Error(`/health answered ${res.status}`);
      },
      { timeout: 15000, what: 'GET /health 200 over https' },
    );
  } catch (e) {
    await relay.stop();
    throw new Error(`${e.message}; relay stderr: ${relay.stderr}`);
  }
  return relay;
}

'use strict';
// Test harness for the relay end-to-end suite.
//
// - startRelay(): spawn the server on a free loopback port with a hermetic environment, wait until it is ready,
//   stop() it with SIGTERM (SIGKILL after 5 s).
// - pusher-js clients (the official browser/Node client) and the official `pusher` server SDK pointed at it.
// - A raw WebSocket helper (package `ws`) for frame-level checks, and a raw signed-HTTP helper for requests the
//   SDK refuses to send.
// Every wait has a timeout, so a broken server fails a test instead of hanging the run.

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const PusherClient = require('pusher-js');
const PusherServer = require('pusher');
const WebSocket = require('ws');

const REPO = path.resolve(__dirname, '..', '..');
const HOST = '127.0.0.1';
const DEFAULT_APP = { id: 'app-id', key: 'app-key', secret: 'app-secret' };

function relayBin() {
  if (process.env.RELAY_BIN) return path.resolve(process.env.RELAY_BIN);
  const release = path.join(REPO, 'target', 'release', 'relay');
  if (fs.existsSync(release)) return release;
  return path.join(REPO, 'target', 'debug', 'relay');
}

// ---------------------------------------------------------------------------------------------------------------
// Timeouts and polling

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolve/reject with `promise`, or reject after `ms` with a message naming `what`. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Call `fn` until it returns without throwing (its value is returned), or rethrow its last error after `timeout`. */
async function eventually(fn, { timeout = 5000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let lastErr;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      const err = new Error(`${what} not reached within ${timeout} ms: ${lastErr && lastErr.message}`);
      err.cause = lastErr;
      throw err;
    }
    await sleep(interval);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Server process

const live = new Set(); // every spawned relay still running, killed on exit whatever happens

process.on('exit', () => {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch (_) {
      /* already gone */
    }
  }
});

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Write `content` (object → JSON) to a temp file; returns its path (removed at process exit). */
function tempFile(name, content) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-js-'));
  const file = path.join(dir, name);
  fs.writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return file;
}

class Relay {
  constructor(proc, port, app) {
    this.proc = proc;
    this.port = port;
    this.host = HOST;
    this.app = app; // { id, key, secret } of the default app
    this.stderr = '';
    this.exitInfo = null;
    this.clients = new Set(); // pusher-js clients made against this server, not yet disconnected
    this.allClients = new Set(); // every pusher-js client made against this server
    this.raws = new Set(); // raw sockets made against this server
    this.sockets = new Set(); // plain net.Sockets made against this server
    this.exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        live.delete(proc);
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (d) => {
      this.stderr += d;
      if (this.stderr.length > 1 << 20) this.stderr = this.stderr.slice(-(1 << 19));
    });
    proc.stdout.resume();
  }

  get httpBase() {
    return `http://${HOST}:${this.port}`;
  }

  wsUrl(key = this.app.key, query = '?protocol=7&client=js&version=8.6.0&flash=false') {
    return `ws://${HOST}:${this.port}/app/${key}${query}`;
  }

  /** Disconnect every client, then SIGTERM; SIGKILL if still running after 5 s. Returns the exit info. */
  async stop() {
    const disconnectAll = () => {
      for (const c of this.allClients) {
        c.__stopped = true;
        try {
          c.disconnect();
        } catch (_) {
          /* ignore */
        }
      }
    };
    disconnectAll();
    this.clients.clear();
    for (const r of this.raws) r.terminate();
    this.raws.clear();
    for (const sock of this.sockets) sock.destroy();
    this.sockets.clear();
    setImmediate(disconnectAll); // catch reconnect attempts already in flight
    if (this.exitInfo) return this.exitInfo;
    this.proc.kill('SIGTERM');
    let timer;
    const killed = new Promise((resolve) => {
      timer = setTimeout(() => {
        if (!this.exitInfo) this.proc.kill('SIGKILL');
        resolve();
      }, 5000);
    });
    await Promise.race([this.exited, killed]);
    clearTimeout(timer);
    return this.exited;
  }
}

/**
 * Start a relay. `env` is added to a hermetic environment (every RELAY_* of the caller's environment is dropped).
 * `app` tells the harness which default app credentials the env configures.
 */
async function startRelay({ env = {}, workers = 2, args = [], app, readyTimeout = 15000 } = {}) {
  const bin = relayBin();
  if (!fs.existsSync(bin)) {
    throw new Error(`relay binary not found at ${bin}: run 'cargo build' or set RELAY_BIN`);
  }
  const resolvedApp = app || {
    id: env.RELAY_APP_ID || DEFAULT_APP.id,
    key: env.RELAY_APP_KEY || DEFAULT_APP.key,
    secret: env.RELAY_APP_SECRET || DEFAULT_APP.secret,
  };
  const baseEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('RELAY_')) baseEnv[k] = v;
  }
  // Tests run servers side by side: none serves metrics on the default port unless the test asks.
  baseEnv.RELAY_METRICS_PORT = '0';
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const proc = spawn(bin, ['--host', HOST, '--port', String(port), '--workers', String(workers), ...args], {
      env: { ...baseEnv, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(proc);
    const relay = new Relay(proc, port, resolvedApp);
    try {
      await withTimeout(
        (async () => {
          await Promise.race([
            (async () => {
              while (!/listening on/.test(relay.stderr)) await sleep(20);
            })(),
            relay.exited.then((e) => {
              throw new Error(`relay exited during startup (${JSON.stringify(e)}): ${relay.stderr}`);
            }),
          ]);
          await eventually(
            async () => {
              const res = await fetch(`${relay.httpBase}/health`);
              await res.arrayBuffer();
              if (res.status !== 200) throw new Error(`/health answered ${res.status}`);
            },
            { timeout: readyTimeout, what: 'GET /health 200' },
          );
        })(),
        readyTimeout,
        `relay to be ready (stderr so far: ${relay.stderr})`,
      );
      return relay;
    } catch (e) {
      lastErr = e;
      await relay.stop();
      if (!/address|in use/i.test(relay.stderr)) break; // only a port race is worth a retry
    }
  }
  throw lastErr;
}

// ---------------------------------------------------------------------------------------------------------------
// Official clients

/** A pusher-js client (not yet awaited). Tracked so relay.stop() disconnects it. */
function pusherClient(relay, options = {}) {
  const { key = relay.app.key, ...rest } = options;
  const client = new PusherClient(key, {
    wsHost: HOST,
    wsPort: relay.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    ...rest,
  });
  relay.clients.add(client);
  relay.allClients.add(client);
  // pusher-js can start a new connection attempt after disconnect() when a reconnect (e.g. after close 4200) was
  // already in flight; such a straggler would keep the test process alive. Once a client is told to disconnect,
  // any later move away from 'disconnected' is disconnected again.
  client.connection.bind('state_change', ({ current }) => {
    if (client.__stopped && current !== 'disconnected') setImmediate(() => client.disconnect());
    if (current === 'connected') guardLateClose(client);
  });
  return client;
}

/**
 * When the server closes a connection with a "refused" code (4000–4099, e.g. 4009), pusher-js calls close() on its
 * (bundled faye-websocket) socket after that socket is already CLOSED; faye then arms a 30 s close timer that nothing
 * clears, keeping the test process alive. Make close() on an already closed socket a no-op (teardown only).
 */
function guardLateClose(client) {
  const conn = client.connection.connection;
  const socket = conn && conn.transport && conn.transport.socket;
  if (!socket || socket.__relayGuarded || typeof socket.close !== 'function') return;
  const close = socket.close;
  socket.close = function (...args) {
    if (this.readyState === 3) return undefined; // CLOSED
    return close.apply(this, args);
  };
  socket.__relayGuarded = true;
}

/** Wait until a pusher-js client is connected; resolves with its socket_id. */
function awaitConnected(client, timeout = 5000) {
  if (client.connection.state === 'connected') return Promise.resolve(client.connection.socket_id);
  return withTimeout(
    new Promise((resolve, reject) => {
      const onChange = ({ current }) => {
        if (current === 'connected') {
          client.connection.unbind('state_change', onChange);
          resolve(client.connection.socket_id);
        } else if (current === 'failed') {
          client.connection.unbind('state_change', onChange);
          reject(new Error('pusher-js connection failed'));
        }
      };
      client.connection.bind('state_change', onChange);
    }),
    timeout,
    'pusher-js connected state',
  );
}

/** Make a pusher-js client and wait until it is connected. */
async function connectedClient(relay, options = {}) {
  const client = pusherClient(relay, options);
  const socketId = await awaitConnected(client);
  return { client, socketId };
}

/** Subscribe and wait for pusher:subscription_succeeded (rejects on pusher:subscription_error or timeout). */
function subscribe(client, channelName, timeout = 5000) {
  const channel = client.subscribe(channelName);
  if (channel.subscribed) return Promise.resolve(channel);
  return withTimeout(
    new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', () => resolve(channel));
      channel.bind('pusher:subscription_error', (err) =>
        reject(new Error(`subscription_error on ${channelName}: ${JSON.stringify(err)}`)),
      );
    }),
    timeout,
    `subscription_succeeded on ${channelName}`,
  );
}

/** Disconnect a pusher-js client and forget it. */
function disconnect(relay, client) {
  client.__stopped = true;
  client.disconnect();
  relay.clients.delete(client);
}

/** Records every `eventName` on a pusher-js channel; waitFor(n) waits for n of them. */
class Collector {
  constructor(channel, eventName) {
    this.events = [];
    this.waiters = [];
    channel.bind(eventName, (data, metadata) => {
      this.events.push({ data, metadata });
      this.waiters = this.waiters.filter((w) => {
        if (this.events.length >= w.n) {
          w.resolve(this.events);
          return false;
        }
        return true;
      });
    });
  }

  waitFor(n = 1, timeout = 5000) {
    if (this.events.length >= n) return Promise.resolve(this.events);
    return withTimeout(
      new Promise((resolve) => this.waiters.push({ n, resolve })),
      timeout,
      `${n} events (got ${this.events.length})`,
    ).catch((e) => {
      e.message += ` (received ${this.events.length})`;
      throw e;
    });
  }
}

/** The official server SDK pointed at the relay. */
function serverSdk(relay, overrides = {}) {
  return new PusherServer({
    appId: relay.app.id,
    key: relay.app.key,
    secret: relay.app.secret,
    host: HOST,
    port: relay.port,
    useTLS: false,
    timeout: 10000,
    ...overrides,
  });
}

/** Run an SDK request promise; resolve { status, body, json } for successes and RequestErrors alike. */
async function sdkResult(promise) {
  try {
    const res = await promise;
    const body = await res.text();
    return { status: res.status, body, json: parseJson(body) };
  } catch (e) {
    if (e && e.status) return { status: e.status, body: e.body, json: parseJson(e.body) };
    throw e;
  }
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (_) {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Raw signed HTTP (docs/protocol.md#rest-signing), for requests the SDK refuses to make or deliberately broken signatures

function hmacHex(secret, message) {
  return crypto.createHmac('sha256', secret).update(message, 'utf8').digest('hex');
}

function md5Hex(body) {
  return crypto.createHash('md5').update(body).digest('hex');
}

/** `METHOD\npath\nsorted k=v&…` signed with `secret` (values unescaped, keys lower-cased). */
function signRequest(secret, method, reqPath, params) {
  const query = Object.keys(params)
    .filter((k) => k !== 'auth_signature')
    .map((k) => [k.toLowerCase(), params[k]])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  return hmacHex(secret, `${method.toUpperCase()}\n${reqPath}\n${query}`);
}

/**
 * Send a signed request with full control over every piece.
 *   path        full path, e.g. /apps/app-id/events
 *   body        string or object (JSON-encoded) or undefined
 *   params      extra query params (signed)
 *   key/secret  credentials used to sign (default: the relay's app)
 *   timestamp   auth_timestamp (default now)
 *   version     auth_version (default 1.0)
 *   signedBody  body used for body_md5 (default: body) — to make a stale MD5
 *   omit        query params to leave out of the URL after signing (e.g. ['auth_signature'])
 *   rawQuery    function(queryPairs) → query string, to control wire encoding
 */
async function signedFetch(relay, opts) {
  const {
    method = 'POST',
    path: reqPath,
    params = {},
    key = relay.app.key,
    secret = relay.app.secret,
    timestamp = Math.floor(Date.now() / 1000),
    version = '1.0',
    omit = [],
    rawQuery,
    headers = {},
  } = opts;
  let body = opts.body;
  if (body !== undefined && typeof body !== 'string' && !Buffer.isBuffer(body)) body = JSON.stringify(body);
  const signedBody = opts.signedBody !== undefined ? opts.signedBody : body;
  const q = { auth_key: key, auth_timestamp: String(timestamp), auth_version: version, ...params };
  if (signedBody !== undefined && signedBody.length > 0) q.body_md5 = md5Hex(signedBody);
  q.auth_signature = signRequest(secret, method, reqPath, q);
  for (const k of omit) delete q[k];
  const query = rawQuery ? rawQuery(q) : Object.entries(q).map(([k, v]) => `${k}=${v}`).join('&');
  const h = { ...headers };
  if (body !== undefined) h['content-type'] = 'application/json';
  const res = await withTimeout(
    fetch(`${relay.httpBase}${reqPath}?${query}`, { method, body, headers: h }),
    10000,
    `${method} ${reqPath}`,
  );
  const text = await res.text();
  return { status: res.status, body: text, json: parseJson(text), headers: res.headers };
}

/** Unsigned GET (for /health, /stats). */
async function getJson(relay, p) {
  const res = await withTimeout(fetch(`${relay.httpBase}${p}`), 5000, `GET ${p}`);
  const text = await res.text();
  return { status: res.status, body: text, json: parseJson(text) };
}

// ---------------------------------------------------------------------------------------------------------------
// Raw WebSocket

/** A `ws` socket with a queue of received frames and timed waits on them. */
class RawSocket {
  constructor(ws) {
    this.ws = ws;
    this.frames = []; // unconsumed { text, json, binary }
    this.all = []; // every frame received, in order
    this.waiters = [];
    this.closeInfo = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this._pump();
      });
    });
    ws.on('error', (err) => {
      this.error = err;
    });
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? null : data.toString('utf8');
      const frame = { text, binary: isBinary ? data : null, json: text !== null ? parseJson(text) : undefined };
      this.frames.push(frame);
      this.all.push(frame);
      this._pump();
    });
  }

  _pump() {
    this.waiters = this.waiters.filter((w) => {
      const i = this.frames.findIndex((f) => w.pred(f.json, f));
      if (i >= 0) {
        const [f] = this.frames.splice(i, 1);
        w.resolve(f.json);
        return false;
      }
      if (this.closeInfo && !w.allowClosed) {
        w.reject(new Error(`socket closed (${JSON.stringify(this.closeInfo)}) while waiting for ${w.what}`));
        return false;
      }
      return true;
    });
  }

  /** Wait for (and consume) the first frame whose parsed JSON satisfies pred; resolves the parsed JSON. */
  next(pred = () => true, timeout = 5000, what = 'a frame') {
    return withTimeout(
      new Promise((resolve, reject) => {
        this.waiters.push({ pred, resolve, reject, what });
        this._pump();
      }),
      timeout,
      what,
    ).catch((e) => {
      this.waiters = this.waiters.filter((w) => w.pred !== pred);
      throw e;
    });
  }

  /** Wait for the next frame with this event name (and channel, if given). */
  nextEvent(event, channel, timeout = 5000) {
    return this.next(
      (m) => m && m.event === event && (channel === undefined || m.channel === channel),
      timeout,
      `event ${event}${channel ? ' on ' + channel : ''}`,
    );
  }

  /** Assert that no frame matching pred arrives within ms (already-queued frames count). */
  async expectNone(pred, ms, what = 'frame') {
    await sleep(ms);
    const f = this.frames.find((fr) => pred(fr.json, fr));
    if (f) throw new Error(`unexpected ${what}: ${f.text}`);
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' || Buffer.isBuffer(obj) ? obj : JSON.stringify(obj));
  }

  /** Send pusher:ping and wait for pusher:pong. */
  async ping(timeout = 2000) {
    this.send({ event: 'pusher:ping', data: {} });
    return this.nextEvent('pusher:pong', undefined, timeout);
  }

  async subscribe(channel, extra = {}, timeout = 5000) {
    this.send({ event: 'pusher:subscribe', data: { auth: '', channel, ...extra } });
    return this.nextEvent('pusher_internal:subscription_succeeded', channel, timeout);
  }

  waitClose(timeout = 5000) {
    return withTimeout(this.closed, timeout, 'close frame');
  }

  close(code, reason) {
    this.ws.close(code, reason);
  }

  terminate() {
    this.ws.terminate();
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }
}

/**
 * Open a raw WebSocket. Resolves { raw } once upgraded, or { httpStatus } if the server refused the upgrade.
 * options: key, query, path (overrides /app/{key}{query}), wsOptions (passed to `ws`).
 */
function rawOpen(relay, { key = relay.app.key, query, path: p, wsOptions = {}, timeout = 5000 } = {}) {
  const url = p ? `ws://${HOST}:${relay.port}${p}` : relay.wsUrl(key, query);
  const ws = new WebSocket(url, { handshakeTimeout: timeout, ...wsOptions });
  const raw = new RawSocket(ws); // attach listeners before any frame can arrive
  relay.raws.add(raw);
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', () => resolve({ raw }));
      ws.once('unexpected-response', (req, res) => {
        res.resume();
        resolve({ httpStatus: res.statusCode });
        req.destroy();
      });
      ws.once('error', (e) => reject(e));
    }),
    timeout,
    `WebSocket upgrade of ${url}`,
  );
}

/** Open a raw WebSocket and wait for pusher:connection_established; resolves { raw, socketId, established }. */
async function rawConnect(relay, options = {}) {
  const { raw, httpStatus } = await rawOpen(relay, options);
  if (!raw) throw new Error(`upgrade refused with HTTP ${httpStatus}`);
  const established = await raw.nextEvent('pusher:connection_established');
  const data = JSON.parse(established.data);
  return { raw, socketId: data.socket_id, established, data };
}

/** Private-channel auth token `key:hmac(socket_id:channel)`. */
function channelAuth(relay, socketId, channel, { key = relay.app.key, secret = relay.app.secret } = {}) {
  return `${key}:${hmacHex(secret, `${socketId}:${channel}`)}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Auth endpoints, event waits and error logs for the official clients (presence, signin, watchlist, …)

/** Write an apps file `{"apps":[...]}` (plus optional server settings) to a temp file; returns its path. */
function appsFile(apps, settings = {}) {
  return tempFile('apps.json', { ...settings, apps });
}

/**
 * pusher-js `channelAuthorization` whose customHandler is an in-process auth endpoint backed by the SDK's
 * authorizeChannel. For presence- channels, `presenceData(socketId, channelName)` gives the channel data
 * (return undefined to send no channel_data, as for a signed-in user).
 */
function sdkChannelAuth(sdk, presenceData) {
  return {
    customHandler: ({ socketId, channelName }, callback) => {
      try {
        const pd =
          channelName.startsWith('presence-') && presenceData ? presenceData(socketId, channelName) : undefined;
        const auth =
          pd === undefined ? sdk.authorizeChannel(socketId, channelName) : sdk.authorizeChannel(socketId, channelName, pd);
        callback(null, auth);
      } catch (e) {
        callback(e, null);
      }
    },
  };
}

/** pusher-js `userAuthentication` whose customHandler calls the SDK's authenticateUser (userData: object or fn). */
function sdkUserAuth(sdk, userData) {
  return {
    customHandler: ({ socketId }, callback) => {
      try {
        const ud = typeof userData === 'function' ? userData(socketId) : userData;
        callback(null, sdk.authenticateUser(socketId, ud));
      } catch (e) {
        callback(e, null);
      }
    },
  };
}

/**
 * Wait for the next `eventName` on a pusher-js dispatcher (a channel, client.user, client.user.watchlist,
 * client.connection) whose data satisfies pred; resolves { data, metadata }.
 */
function nextOn(emitter, eventName, { timeout = 5000, pred = () => true, what } = {}) {
  let handler;
  return withTimeout(
    new Promise((resolve) => {
      handler = (data, metadata) => {
        if (pred(data, metadata)) resolve({ data, metadata });
      };
      emitter.bind(eventName, handler);
    }),
    timeout,
    what || `${eventName}`,
  ).finally(() => emitter.unbind(eventName, handler));
}

/**
 * Every error a pusher-js connection reports, unwrapped to the inner {type, data:{code,message}} (a close code or
 * pusher:error during the handshake arrives wrapped as {type:'WebSocketError', error:{…}}).
 */
class ErrorLog {
  constructor(client) {
    this.errors = [];
    client.connection.bind('error', (e) => {
      this.errors.push(e && e.type === 'WebSocketError' && e.error && e.error.data ? e.error : e);
    });
  }

  codes() {
    return this.errors.map((e) => e && e.data && e.data.code);
  }

  /** Wait until an error with this code (any code if undefined) was reported; resolves it. */
  waitFor(code, timeout = 5000) {
    return eventually(
      () => {
        const e = this.errors.find((x) => x && x.data && (code === undefined || x.data.code === code));
        if (!e) throw new Error(`errors so far: ${JSON.stringify(this.errors)}`);
        return e;
      },
      { timeout, interval: 20, what: `pusher-js error${code === undefined ? '' : ' code ' + code}` },
    );
  }
}

/** Wait until a pusher-js client that called signin() is signed in and its #server-to-user channel subscribed. */
function awaitSignedIn(client, timeout = 5000) {
  return eventually(
    () => {
      const ch = client.user.serverToUserChannel;
      if (!client.user.user_data || !ch || !ch.subscribed) throw new Error('not signed in yet');
      return client.user.user_data;
    },
    { timeout, interval: 20, what: 'pusher-js signin + #server-to-user subscription' },
  );
}

/** Wait until a pusher-js client's connection reaches `state`. */
function awaitState(client, state, timeout = 5000) {
  return eventually(
    () => {
      if (client.connection.state !== state) throw new Error(`state is ${client.connection.state}`);
    },
    { timeout, interval: 20, what: `pusher-js state ${state}` },
  );
}

/** Presence auth token over `socket_id:channel:channel_data` (channel_data exactly as it will be sent). */
function presenceAuth(relay, socketId, channel, channelData, { key = relay.app.key, secret = relay.app.secret } = {}) {
  return `${key}:${hmacHex(secret, `${socketId}:${channel}:${channelData}`)}`;
}

/** pusher:signin auth token over `socket_id::user::user_data`. */
function signinAuth(relay, socketId, userData, { key = relay.app.key, secret = relay.app.secret } = {}) {
  return `${key}:${hmacHex(secret, `${socketId}::user::${userData}`)}`;
}

module.exports = {
  REPO,
  freePort,
  HOST,
  DEFAULT_APP,
  PusherClient,
  PusherServer,
  WebSocket,
  relayBin,
  sleep,
  withTimeout,
  eventually,
  tempFile,
  startRelay,
  pusherClient,
  awaitConnected,
  connectedClient,
  subscribe,
  disconnect,
  Collector,
  serverSdk,
  sdkResult,
  parseJson,
  hmacHex,
  md5Hex,
  signRequest,
  signedFetch,
  getJson,
  RawSocket,
  rawOpen,
  rawConnect,
  channelAuth,
  presenceAuth,
  signinAuth,
  appsFile,
  sdkChannelAuth,
  sdkUserAuth,
  nextOn,
  ErrorLog,
  awaitSignedIn,
  awaitState,
};

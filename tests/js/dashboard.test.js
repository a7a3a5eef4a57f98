'use strict';
// The dashboard in a real browser (headless Chromium, see browser.js): HTTP Basic authentication, then the page's
// counters move with a pusher-js subscriber and an SDK publish, live, without a reload; a screenshot is saved to
// target/dashboard.png. README "Dashboard".

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./harness');
const { skip, launch } = require('./browser');

const USER = 'admin';
const PASSWORD = 'dashboard secret';
const SCREENSHOT = path.join(h.REPO, 'target', 'dashboard.png');

describe('dashboard in headless Chromium', () => {
  let relay;
  let browser;
  let unusable; // why the browser could not be started: each test fails with it
  before(async () => {
    if (skip) return;
    relay = await h.startRelay({
      env: { RELAY_DASHBOARD_ENABLED: 'true', RELAY_DASHBOARD_PASSWORD: PASSWORD },
    });
    ({ browser, unusable } = await launch());
  });
  after(async () => {
    if (browser) await browser.close();
    if (relay) await relay.stop();
  });

  it('without credentials, or with a wrong password, the page is a 401 with a Basic challenge', { skip }, async () => {
    if (unusable) throw unusable;
    // Chromium answers a refused challenge by failing the navigation (ERR_INVALID_AUTH_CREDENTIALS): the 401
    // itself is read from the network.
    const attempt = async (httpCredentials) => {
      const context = await browser.newContext(httpCredentials ? { httpCredentials } : {});
      try {
        const page = await context.newPage();
        const statuses = [];
        page.on('response', (r) => statuses.push(`${r.status()} ${r.url()}`));
        const response = page.waitForResponse((r) => r.url() === `${relay.httpBase}/dashboard`, { timeout: 10000 });
        await page.goto(`${relay.httpBase}/dashboard`).catch(() => {});
        const res = await response;
        await h.sleep(300); // time for anything the page would load next
        return { status: res.status(), challenge: res.headers()['www-authenticate'], statuses };
      } finally {
        await context.close();
      }
    };
    for (const creds of [undefined, { username: USER, password: 'nope' }, { username: 'root', password: PASSWORD }]) {
      const r = await attempt(creds);
      assert.equal(r.status, 401, JSON.stringify(creds));
      assert.match(r.challenge || '', /^Basic realm="relay dashboard"/);
      assert.deepEqual(
        r.statuses.filter((x) => !x.startsWith('401 ')),
        [],
        'nothing but 401s without the password',
      );
    }
  });

  it('logged in, the counters follow a subscriber and a publish live; screenshot', { skip }, async () => {
    if (unusable) throw unusable;
    const context = await browser.newContext({
      httpCredentials: { username: USER, password: PASSWORD },
      viewport: { width: 1280, height: 800 },
    });
    try {
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(`console: ${m.text()}`);
      });
      const foreign = [];
      page.on('request', (r) => {
        if (!r.url().startsWith(relay.httpBase) && !r.url().startsWith('data:')) foreign.push(r.url());
      });
      let navigations = 0;
      page.on('framenavigated', (f) => {
        if (f === page.mainFrame()) navigations++;
      });

      const res = await page.goto(`${relay.httpBase}/dashboard`);
      assert.equal(res.status(), 200);
      assert.match(res.headers()['content-type'], /^text\/html/);

      const read = (id) =>
        page.$eval(`#${id}`, (el) => (el.dataset.value === '' ? null : Number(el.dataset.value)));
      const waitFor = (id, pred, what) =>
        h.eventually(
          async () => {
            const v = await read(id);
            if (v === null || !pred(v)) throw new Error(`#${id} is ${v}`);
            return v;
          },
          { timeout: 8000, interval: 100, what },
        );

      const connections0 = await waitFor('connections', () => true, 'a first snapshot in the page');
      const deliveries0 = await read('deliveries-total');
      assert.equal(connections0, 0);
      assert.equal(deliveries0, 0);
      await page.evaluate(() => {
        window.__sameDocument = true;
      });

      // A subscriber on a public channel, one on a presence channel, then publishes from the SDK.
      const sdk = h.serverSdk(relay);
      const { client } = await h.connectedClient(relay);
      const news = await h.subscribe(client, 'news');
      const got = new h.Collector(news, 'headline');
      const { client: member } = await h.connectedClient(relay, {
        channelAuthorization: h.sdkChannelAuth(sdk, (socketId) => ({ user_id: 'alice', user_info: { name: 'Alice' } })),
      });
      await h.subscribe(member, 'presence-lobby');
      await waitFor('connections', (v) => v === 2, 'connections to reach 2 in the page');

      for (let i = 0; i < 3; i++) {
        const r = await sdk.trigger('news', 'headline', { i });
        assert.equal(r.status, 200);
        await h.sleep(700);
      }
      await got.waitFor(3);
      const deliveries = await waitFor('deliveries-total', (v) => v >= deliveries0 + 3, 'deliveries to move in the page');
      assert.ok(deliveries >= 3);
      await waitFor('publishes-total', (v) => v === 3, 'publishes to reach 3 in the page');

      // The tables: the app, the presence channel with its member, the publishes in the log.
      await h.eventually(
        async () => {
          const text = await page.textContent('main');
          for (const needle of ['app-id', 'presence-lobby', 'headline']) {
            if (!text.includes(needle)) throw new Error(`no ${needle} in the page`);
          }
        },
        { timeout: 5000, interval: 100, what: 'apps, presence and log tables' },
      );
      const members = await page.$$eval('#presence tr', (rows) =>
        rows.map((r) => Array.from(r.children, (td) => td.textContent)),
      );
      assert.deepEqual(members, [['app-id', 'presence-lobby', '1']]);
      assert.equal(await page.textContent('#status'), 'live');

      assert.equal(navigations, 1, 'the page never reloaded');
      assert.equal(await page.evaluate(() => window.__sameDocument), true);
      assert.deepEqual(foreign, [], 'the page loads nothing from elsewhere');
      assert.deepEqual(errors, []);

      await h.sleep(1200); // one more snapshot, so the charts show the publishes settling
      fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT });
      assert.ok(fs.statSync(SCREENSHOT).size > 10000, 'screenshot written');
      h.disconnect(relay, client);
      h.disconnect(relay, member);
    } finally {
      await context.close();
    }
  });
});

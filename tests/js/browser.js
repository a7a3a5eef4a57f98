'use strict';
// Headless Chromium (Debian's `chromium` package) driven by playwright-core, for the tests that need a real
// browser: the dashboard, and pusher-js compressing as browsers do. Chromium is required: without it those tests
// fail, unless RELAY_SKIP_BROWSER=1 (scripts/test installs it).

const fs = require('node:fs');

const CHROMIUM = process.env.RELAY_CHROMIUM || '/usr/bin/chromium';
const SKIP = process.env.RELAY_SKIP_BROWSER === '1';

// Skipped only when asked to and Chromium is indeed missing; otherwise a missing or broken Chromium fails each test.
const skip = SKIP && !fs.existsSync(CHROMIUM) ? 'RELAY_SKIP_BROWSER=1 and no Chromium' : false;

/**
 * Starts Chromium with a fresh temporary profile (playwright's own user-data dir). Resolves to `{ browser }`, or to
 * `{ unusable }`: the error each test should fail with.
 */
async function launch() {
  if (!fs.existsSync(CHROMIUM)) {
    return {
      unusable: new Error(
        `Chromium not found at ${CHROMIUM}: install Debian's 'chromium' package (scripts/test does), ` +
          'set RELAY_CHROMIUM to its path, or set RELAY_SKIP_BROWSER=1 to skip this test',
      ),
    };
  }
  const { chromium } = require('playwright-core');
  try {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      timeout: 30000,
    });
    return { browser };
  } catch (e) {
    return { unusable: new Error(`Chromium at ${CHROMIUM} did not start: ${e.message}`) };
  }
}

module.exports = { CHROMIUM, skip, launch };

// Loads MQTT.js's browser bundle (dist/mqtt.min.js) into Debian's Chromium,
// headless, driven by playwright-core, and runs QoS 0, 1 and 2 round trips
// with MQTT 3.1.1 and with MQTT 5 from the page over each ws:// or wss://
// URL given. Prints "ok v<4|5> <url>" per pair; exits non-zero if any failed. Used by
// tests/e2e/18_websocket.py.
//
//   node browser_mqtt.js TESTS_JS_DIR SPKI URL...
//
// SPKI: base64 SHA-256 of the test server's public key, or "". Chromium
// trusts only its own certificate store, which a test cannot extend without
// NSS's certutil (not installed here); --ignore-certificate-errors-spki-list
// accepts exactly that one server key, instead of --ignore-certificate-errors
// accepting any certificate. The CA chain is still not what is checked.
const [jsDir, spki, ...urls] = process.argv.slice(2);
const path = require('path');
const { chromium } = require(path.join(jsDir, 'node_modules', 'playwright-core'));
(async () => {
  const args = ['--no-sandbox', '--disable-gpu'];
  if (spki) args.push('--ignore-certificate-errors-spki-list=' + spki);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args });
  const timer = setTimeout(() => { console.error('timed out'); process.exit(1); }, 60000);
  try {
    const page = await browser.newPage();
    page.on('console', (m) => console.error('page: ' + m.text()));
    await page.setContent('<!doctype html><title>wisp ws test</title><body></body>');
    await page.addScriptTag({ path: path.join(jsDir, 'node_modules', 'mqtt', 'dist', 'mqtt.min.js') });
    for (const [url, version] of urls.flatMap((u) => [[u, 4], [u, 5]])) {
      const res = await page.evaluate(([url, version]) => new Promise((resolve) => {
        const c = mqtt.connect(url, { protocolVersion: version, clientId: 'browser-' + Math.random().toString(16).slice(2), reconnectPeriod: 0, connectTimeout: 10000 });
        const left = new Set([0, 1, 2]);
        c.on('error', (e) => resolve('error: ' + e.message));
        c.on('close', () => { if (left.size) resolve('closed with ' + left.size + ' left'); });
        c.on('connect', () => c.subscribe('browser/t', { qos: 2 }, (err) => {
          if (err) return resolve('subscribe: ' + err);
          for (const q of [0, 1, 2]) c.publish('browser/t', 'qos ' + q, { qos: q });
        }));
        c.on('message', (t, p, packet) => {
          if (p.toString() === 'qos ' + packet.qos) left.delete(packet.qos);
          if (!left.size) c.end(false, {}, () => resolve('ok'));
        });
      }), [url, version]);
      console.log(res + ' v' + version + ' ' + url);
      if (res !== 'ok') process.exitCode = 1;
    }
  } finally {
    clearTimeout(timer);
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });

#!/usr/bin/env node
// Drives Wisp's built-in dashboard in headless Debian chromium for
// tests/e2e/19_http.py. Protocol, on stdin/stdout, one line each:
//   the script prints "READY" once the page shows its first live figures;
//   the test publishes with mosquitto_pub, then writes "PUBLISHED <topic> <value>";
//   the script opens the tree down to <topic>, waits for <value> in its row,
//   prints "SEEN <value>", then publishes "from the form" to <parent>/form
//   with the page's form and prints "FORM <result text>"; then it saves a screenshot
//   (argv[3]) and prints "SHOT";
//   the test publishes a topic with an empty first level ("/x/y") and writes
//   "LEADING <topic> <value>"; the script opens the top's "(empty)" row, then x,
//   waits for <value> in y's row, checks the top still lists its own levels and
//   prints "SLASH <value>"; then "DONE". Any failure prints "FAIL <why>" and exits 1.
// Every wait is bounded (WAIT_MS).
'use strict';

const path = require('path');
const readline = require('readline');
const { chromium } = require(path.join(__dirname, 'node_modules', 'playwright-core'));

const url = process.argv[2];
const screenshot = process.argv[3];
const chromiumPath = process.env.WISP_CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 15000;

function say(line) { process.stdout.write(line + '\n'); }

const lines = readline.createInterface({ input: process.stdin });
const pending = [];
const waiters = [];
lines.on('line', (l) => { if (waiters.length) waiters.shift()(l); else pending.push(l); });
function nextLine() {
  if (pending.length) return Promise.resolve(pending.shift());
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no line from the test within ' + WAIT_MS + ' ms')), WAIT_MS);
    waiters.push((l) => { clearTimeout(t); resolve(l); });
  });
}

(async () => {
  const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(url, { timeout: WAIT_MS });
    await page.waitForSelector('#status.ok', { timeout: WAIT_MS });
    say('READY');

    const [word, topic, value] = (await nextLine()).split(' ');
    if (word !== 'PUBLISHED') throw new Error('unexpected line ' + word);
    // Open each level down to the topic's parent, as a person would.
    const levels = topic.split('/');
    for (let i = 1; i < levels.length; i++) {
      const p = levels.slice(0, i).join('/');
      const row = page.locator(`li[data-path="${p}"] > .row`);
      await row.waitFor({ timeout: WAIT_MS });
      await row.click();
    }
    const leaf = page.locator(`li[data-path="${topic}"] > .row .value`);
    await leaf.waitFor({ timeout: WAIT_MS });
    await page.waitForFunction(([t, v]) => {
      const li = Array.from(document.querySelectorAll('li[data-path]')).find((x) => x.dataset.path === t);
      return li && li.querySelector('.value').textContent === v;
    }, [topic, value], { timeout: WAIT_MS });
    say('SEEN ' + (await leaf.textContent()));

    // The publish form: a message the test's subscriber must receive.
    const formTopic = levels.slice(0, -1).join('/') + '/form';
    await page.fill('#pub-topic', formTopic);
    await page.fill('#pub-payload', 'from the form');
    await page.selectOption('#pub-qos', '1');
    await page.click('#pub-send');
    await page.waitForFunction(() => /published|refused|failed/.test(document.getElementById('pub-result').textContent),
      null, { timeout: WAIT_MS });
    say('FORM ' + (await page.textContent('#pub-result')));
    // It shows in the tree too, under the open level.
    await page.waitForFunction((t) => {
      const li = Array.from(document.querySelectorAll('li[data-path]')).find((x) => x.dataset.path === t);
      return li && li.querySelector('.value').textContent === 'from the form';
    }, formTopic, { timeout: WAIT_MS });
    // The charts have a few samples for the screenshot.
    await page.waitForFunction(() => Number(document.getElementById('chart-msgs').dataset.samples) >= 4,
      null, { timeout: WAIT_MS });
    if (screenshot) await page.screenshot({ path: screenshot });
    say('SHOT');

    // A topic with an empty first level: the top's child '' is a level of
    // its own, not the top again (MQTT-4.7.1-3 lets a level be empty).
    const [word2, lead, leadValue] = (await nextLine()).split(' ');
    if (word2 !== 'LEADING' || !lead.startsWith('/')) throw new Error('unexpected line ' + word2);
    const rowOf = (p) => page.locator('li[data-path="' + p + '"] > .row');
    const leadLevels = lead.split('/');
    for (let i = 1; i < leadLevels.length; i++) {
      const row = rowOf(leadLevels.slice(0, i).join('/'));
      await row.waitFor({ timeout: WAIT_MS });
      await row.click();
    }
    await page.waitForFunction(([t, v]) => {
      const li = Array.from(document.querySelectorAll('li[data-path]')).find((x) => x.dataset.path === t);
      return li && li.querySelector('.value').textContent === v;
    }, [lead, leadValue], { timeout: WAIT_MS });
    const shape = await page.evaluate(() => {
      const top = Array.from(document.querySelectorAll('#tree > li')).map((li) => li.dataset.path);
      const empty = Array.from(document.querySelectorAll('#tree > li')).find((li) => li.dataset.path === '');
      const inside = Array.from(empty.querySelectorAll(':scope > ul > li')).map((li) => li.dataset.path);
      return { top, inside, label: empty.querySelector('.name').textContent };
    });
    if (!shape.top.includes('dash') || !shape.top.includes('')) throw new Error('the top lost a level: ' + JSON.stringify(shape));
    if (shape.inside.includes('dash')) throw new Error('the empty level shows the top: ' + JSON.stringify(shape));
    // The poll goes on: the form's topic, published again, updates in the top's tree.
    await page.fill('#pub-payload', 'again');
    await page.click('#pub-send');
    await page.waitForFunction((t) => {
      const li = Array.from(document.querySelectorAll('li[data-path]')).find((x) => x.dataset.path === t);
      return li && li.querySelector('.value').textContent === 'again';
    }, formTopic, { timeout: WAIT_MS });
    say('SLASH ' + leadValue + ' ' + shape.label);
    if (errors.length) throw new Error('page errors: ' + errors.join('; '));
    say('DONE');
  } finally {
    await browser.close();
  }
})().then(() => process.exit(0)).catch((e) => { say('FAIL ' + String(e && e.message || e).replace(/\n/g, ' ')); process.exit(1); });

// A browser on each hub node of a fleet (PostgreSQL + NATS): the fleet table lists every
// robot, online, with the node it is connected to, and a robot's page on a node it is not
// connected to draws its readings. Usage: node fleet.mjs URL... (env CHROMIUM, DEVICES).
// Prints what each node showed; exits non-zero on failure.
import { chromium } from 'playwright-core';

const urls = process.argv.slice(2);
const devices = Number(process.env.DEVICES || '1');
const fail = (why) => { console.error(`FAILED: ${why}`); process.exit(1); };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  for (const url of urls) {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(url);
    await page.waitForFunction((n) => document.querySelectorAll('#fleet tbody tr').length >= n, devices, { timeout: 15000 })
      .catch(() => fail(`${url}: fewer than ${devices} robots in the fleet table`));
    const rows = await page.$$eval('#fleet tbody tr', (rs) => rs.map((r) => ({
      name: r.dataset.device,
      status: r.querySelector('.status').innerText,
    })));
    for (const row of rows) {
      if (!row.status.startsWith('online')) fail(`${url}: ${row.name} is ${row.status}`);
    }
    console.log(`${url}: ${rows.length} robots: ${rows.map((r) => `${r.name} (${r.status})`).join(', ')}`);
    // A robot's page: its charts drawn from the shared store.
    await page.goto(`${url}#/d/${encodeURIComponent(rows[0].name)}`);
    await page.waitForFunction(() => document.querySelectorAll('canvas').length > 0, null, { timeout: 15000 })
      .catch(() => fail(`${url}: no chart for ${rows[0].name}`));
    await page.close();
  }
} finally {
  await browser.close();
}

// The dashboard end to end in headless Chromium (Debian's, driven by
// playwright-core; no browser is ever downloaded). Run by
// tests/it/dashboard.rs against `sluice serve` on a copy of examples/retail:
// log in, click Run on the retail pipeline, see it succeed, and read back
// what the charts draw (printed as JSON on stdout for the Rust test to
// compare with the database). Takes a screenshot of each page.
//
// Environment: SLUICE_URL, SLUICE_TOKEN (scope trigger), SHOTS (a folder),
// PROFILE (an empty folder for Chromium's profile).
import { chromium } from 'playwright-core';

const url = process.env.SLUICE_URL;
const token = process.env.SLUICE_TOKEN;
const shots = process.env.SHOTS;
const problems = [];

const context = await chromium.launchPersistentContext(process.env.PROFILE, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
  viewport: { width: 1280, height: 900 },
  colorScheme: 'light',
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(30000);
page.on('pageerror', e => problems.push(`page error: ${e.message}`));
page.on('console', m => { if (m.type() === 'error' && !/status of 40[134]/.test(m.text())) problems.push(`console: ${m.text()}`); });
page.on('requestfailed', r => { if (!r.url().includes('/api/events')) problems.push(`request failed: ${r.url()}`); });

const shot = async name => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const out = { charts: {} };

try {
  // Anonymous (the example allows reading): the page shows, Run is disabled.
  await page.goto(`${url}/ui/`);
  await page.getByRole('heading', { name: 'Pipelines' }).waitFor();
  const run = page.getByRole('button', { name: 'Run ETL Pipeline: retail' });
  await run.waitFor();
  out.anonymous_run_disabled = await run.isDisabled();

  // Log in with the token (by keyboard: the form works without a mouse).
  await page.goto(`${url}/ui/#/login`);
  await page.getByLabel('Token').fill(token);
  await shot('dashboard-login');
  await page.keyboard.press('Enter');
  await page.getByRole('button', { name: 'Log out' }).waitFor();
  await page.getByRole('heading', { name: 'Pipelines' }).waitFor();

  // Run the pipeline and watch it succeed, live.
  await run.click();
  const result = page.locator('.result[data-status]');
  await result.first().waitFor();
  await page.locator('.result[data-status="success"], .result[data-status="failed"], .result[data-status="cancelled"]').first().waitFor({ timeout: 120000 });
  out.result = await result.first().getAttribute('data-status');
  out.result_text = await result.first().textContent();
  out.steps_shown = await page.locator('.progress .steps li').allTextContents();

  // The charts, drawn again after the run: what Chart.js holds.
  for (const model of ['sales_by_product', 'sales_by_category']) {
    const canvas = page.locator(`canvas[data-model="${model}"]`);
    await canvas.waitFor();
    await page.waitForFunction(m => {
      const c = document.querySelector(`canvas[data-model="${m}"]`);
      return c && window.Chart && window.Chart.getChart(c) && window.Chart.getChart(c).data.labels.length > 0;
    }, model);
    out.charts[model] = await page.evaluate(m => {
      const c = window.Chart.getChart(document.querySelector(`canvas[data-model="${m}"]`));
      return { labels: c.data.labels, values: c.data.datasets[0].data };
    }, model);
  }
  await shot('dashboard-pipelines');

  // The run page: DAG, timeline, a task's log.
  await page.locator('.progress a').first().click();
  await page.getByRole('heading', { name: 'Timeline' }).waitFor();
  await page.locator('details[data-task="load_sales"] > summary').click();
  await page.locator('details[data-task="load_sales"] pre').first().waitFor();
  out.run_page_tasks = await page.locator('details[data-task]').count();
  out.load_log = await page.locator('details[data-task="load_sales"] pre').first().textContent();
  await page.waitForTimeout(400); // the toast fades
  await shot('dashboard-run');

  // By keyboard: Tab to the "Data" link and follow it.
  await page.goto(`${url}/ui/#/runs`);
  await page.getByRole('heading', { name: 'Runs' }).waitFor();
  let reached = false;
  for (let i = 0; i < 12 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement && document.activeElement.textContent === 'Data');
  }
  out.keyboard_reached_data = reached;
  if (reached) await page.keyboard.press('Enter');
  else await page.goto(`${url}/ui/#/data`);
  await page.getByRole('heading', { name: 'Published models' }).waitFor();
  await page.locator('section[aria-label="Model sales_by_product"] table').waitFor();
  out.hash_after_keyboard = await page.evaluate(() => location.hash);
  await shot('dashboard-data');

  await page.goto(`${url}/ui/#/runs`);
  await page.locator('table a').first().waitFor();
  await shot('dashboard-runs');

  await page.goto(`${url}/ui/#/quality`);
  await page.locator('section[aria-label="Quality of sales_clean"] canvas').waitFor();
  out.quality_badge = await page.locator('section[aria-label="Quality of sales_clean"] .badge').textContent();
  await shot('dashboard-quality');

  await page.goto(`${url}/ui/#/api`);
  await page.locator('details.op').first().waitFor();
  out.api_operations = await page.locator('details.op').count();
  await page.locator('details.op > summary').first().click();
  await shot('dashboard-api');

  // Dark, and a phone's width.
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.goto(`${url}/ui/#/`);
  await page.locator('canvas[data-model="sales_by_product"]').waitFor();
  await page.waitForTimeout(300);
  out.dark_background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await shot('dashboard-dark');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.emulateMedia({ colorScheme: 'light' });
  await page.goto(`${url}/ui/#/`);
  await page.locator('canvas[data-model="sales_by_product"]').waitFor();
  await page.waitForTimeout(300);
  out.phone_overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await shot('dashboard-phone');
} catch (e) {
  problems.push(`step failed: ${e.message}`);
  try { await shot('dashboard-failure'); } catch (_) { /* no page */ }
}
out.problems = problems;
console.log(JSON.stringify(out));
await context.close();
process.exit(problems.length ? 1 : 0);

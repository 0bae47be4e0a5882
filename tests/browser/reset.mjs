// Browser test of sluice.js across a real restart of the hub (and so of its memory store): a
// page's client has seen an event of the first run; tests/browser.rs stops that run (SIGTERM)
// and starts another on the same port; this script publishes 3 events to the new run. The app
// gets `reset` (its position names a run that is gone), then exactly those 3 events, in order.
//
// Usage: node reset.mjs <base-url> <screenshot-dir> <ready-file>   (run by tests/browser.rs,
// which restarts the hub once this script creates <ready-file>)

import { writeFileSync } from "node:fs";

import { assert, launch, parseArgs, runner, WAIT_MS } from "./lib.mjs";

const { base } = parseArgs();
const ready = process.argv[4];
assert(ready, "usage: node reset.mjs <base-url> <screenshot-dir> <ready-file>");
const t = runner("reset");
const browser = await launch();
const channel = `rs-${Date.now().toString(36)}`;
const problems = [];

const epochOf = (id) => id.slice(0, id.lastIndexOf("-"));

async function publish(data) {
  const response = await fetch(`${base}/api/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  assert(response.status === 200, `publish answered ${response.status}`);
  return (await response.json()).id;
}

async function until(what, condition, ms = WAIT_MS) {
  const end = Date.now() + ms;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

try {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  await page.goto(`${base}/healthz`);
  let before;

  await t.check("the app sees an event of the first run", async () => {
    await page.evaluate(async (channel) => {
      const { Sluice } = await import("/sluice.js");
      window.log = [];
      window.client = new Sluice(location.origin);
      window.client.on("reset", (info) => window.log.push({ reset: info }));
      window.client.subscribe(channel, (m) => window.log.push({ id: m.id, n: m.data.n }));
    }, channel);
    await until("the stream open", () => page.evaluate(() => window.client.state === "open"));
    // The channel is in the stream's URL: once the hub counts the stream, it is subscribed.
    await until("the stream on the hub", async () => {
      const stats = await (await fetch(`${base}/stats`)).json();
      return stats.totalConnections === 1;
    });
    before = await publish({ n: "before" });
    await until("the first event", () => page.evaluate(() => window.log.length === 1));
    const log = await page.evaluate(() => window.log);
    assert(log[0].id === before && log[0].n === "before", JSON.stringify(log));
  });

  await t.check("after a restart: reset, then exactly the new run's 3 events", async () => {
    writeFileSync(ready, "");
    // The hub goes and comes back; the new run is the one whose ids have another epoch.
    await until(
      "the restarted hub",
      async () => {
        try {
          const stats = await (await fetch(`${base}/stats`)).json();
          return typeof stats.lastEventId === "string" && epochOf(stats.lastEventId) !== epochOf(before);
        } catch {
          return false; // between the two runs
        }
      },
      20_000,
    );
    const published = [];
    for (const n of [0, 1, 2]) published.push(await publish({ n }));
    assert(epochOf(published[0]) !== epochOf(before), `same epoch: ${before} and ${published[0]}`);
    await until("the reset and 3 events", () => page.evaluate(() => window.log.length >= 5), 20_000);
    await new Promise((resolve) => setTimeout(resolve, 300)); // room for a late duplicate
    const log = await page.evaluate(() => window.log);
    console.log(`    the app's log: ${JSON.stringify(log)}`);
    assert(log.length === 5, `expected 5 entries: ${JSON.stringify(log)}`);
    const reset = log[1].reset;
    assert(reset && reset.reason === "unknown" && reset.lastEventId === before, JSON.stringify(log[1]));
    const after = log.slice(2).map((e) => [e.id, e.n]);
    const expected = published.map((id, n) => [id, n]);
    assert(JSON.stringify(after) === JSON.stringify(expected), `after the reset: ${JSON.stringify(after)}`);
    assert(
      (await page.evaluate(() => window.client.state)) === "open",
      "the client is not open on the new run",
    );
  });

  await t.check("no page errors", async () => {
    assert(problems.length === 0, problems.join("\n"));
  });
} finally {
  await browser.close();
  t.finish();
}

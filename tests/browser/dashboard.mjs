// Browser test of the dashboard (GET /): it connects to /metrics, draws live samples with
// plausible numbers, shows the hub totals, and its status pill follows the stream through an
// HTTP error, a dropped stream and the client's own reconnect (with the last event id).
//
// Usage: node dashboard.mjs <base-url> <screenshot-dir>   (run by tests/browser.rs, against a
// server started with a short --metrics-interval).

import {
  assert,
  launch,
  openPage,
  parseArgs,
  recordStatus,
  runner,
  screenshot,
  visit,
  waitFor,
} from "./lib.mjs";

const { base, shots } = parseArgs();
const t = runner("dashboard");
const browser = await launch();

/** The raw numbers the page shows (each figure keeps its number in data-value). */
async function figures(page) {
  return page.evaluate(() => {
    const value = (id) => Number(document.getElementById(id).dataset.value);
    return {
      cpu: value("cpu-value"),
      memory: value("memory-value"),
      rss: value("rss"),
      connections: value("connections"),
      published: value("published"),
      delivered: value("delivered"),
      uptime: value("uptime"),
      cpuSamples: Number(document.getElementById("cpu-chart").dataset.samples),
      memorySamples: Number(document.getElementById("memory-chart").dataset.samples),
    };
  });
}

/** Waits until both charts counted `min` samples (and, if `connected`, the status says so). */
function samplesAtLeast(page, min, { connected = true, what = `${min} samples on both charts` } = {}) {
  return waitFor(
    page,
    connected ? `status \`connected\` and ${what}` : what,
    ({ min, connected }) => {
      const count = (id) => Number(document.getElementById(id).dataset.samples);
      const status = document.getElementById("status").textContent;
      return (!connected || status === "connected") && Math.min(count("cpu-chart"), count("memory-chart")) >= min;
    },
    { min, connected },
  );
}

try {
  await t.check("GET / serves one self-contained HTML page", async () => {
    const response = await fetch(base + "/");
    assert(response.status === 200, `status ${response.status}`);
    const type = response.headers.get("content-type");
    assert(/^text\/html;\s*charset=utf-8$/i.test(type), `content-type ${type}`);
    const html = await response.text();
    assert(html.includes('id="cpu-chart"'), "no #cpu-chart in the page");
    const external = html.match(/(?:src|href)\s*=\s*["']?(?:https?:)?\/\/[^"'\s>]+/gi);
    assert(!external, `external references: ${external}`);
  });

  const page = await openPage(browser, base);

  await t.check("the dashboard connects and charts at least 3 live samples", async () => {
    await visit(page, base + "/");
    // The stream opens with the latest sample; three more are live ones.
    await samplesAtLeast(page, 4);
  });

  await t.check("the figures are plausible", async () => {
    const f = await figures(page);
    console.log(`    ${JSON.stringify(f)}`);
    assert(f.cpu >= 0 && f.cpu <= 100, `cpu ${f.cpu} outside 0..100`);
    assert(f.memory > 0 && f.memory <= 100, `memory ${f.memory} outside 0..100`);
    assert(f.rss > 1 << 20 && f.rss < 2 ** 36, `rss ${f.rss} bytes is implausible`);
    assert(Number.isInteger(f.connections) && f.connections >= 1, `connections ${f.connections} (this page has one open)`);
    assert(f.published >= 0 && Number.isFinite(f.published), `published/s ${f.published}`);
    assert(f.delivered >= 0 && Number.isFinite(f.delivered), `delivered/s ${f.delivered}`);
    assert(f.uptime >= 0 && f.uptime < 3600, `uptime ${f.uptime} s for a server just started`);
    const text = await page.textContent("#cpu-value");
    assert(/^\d+(\.\d)?%$/.test(text), `cpu shown as ${JSON.stringify(text)}`);
    const memory = await page.textContent("#memory-detail");
    assert(/iB \/ .*iB$/.test(memory), `memory detail shown as ${JSON.stringify(memory)}`);
  });

  await t.check("samples keep arriving and uptime advances", async () => {
    const before = await figures(page);
    await samplesAtLeast(page, Math.min(before.cpuSamples, before.memorySamples) + 2, { connected: false });
    const after = await figures(page);
    assert(after.uptime >= before.uptime, `uptime went from ${before.uptime} to ${after.uptime}`);
  });

  await t.check("both charts drew a line in their colour", async () => {
    const counts = await page.evaluate(() => {
      const css = getComputedStyle(document.documentElement);
      const count = (id, colour) => {
        const canvas = document.getElementById(id);
        const [r, g, b] = [1, 3, 5].map((i) => parseInt(colour.trim().slice(i, i + 2), 16));
        const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
          const close = Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 40;
          if (close && data[i + 3] > 200) n++;
        }
        return n;
      };
      return {
        cpu: count("cpu-chart", css.getPropertyValue("--cpu")),
        memory: count("memory-chart", css.getPropertyValue("--memory")),
      };
    });
    assert(counts.cpu > 20 && counts.memory > 20, `line pixels: ${JSON.stringify(counts)}`);
  });

  await t.check("the hub totals come from /stats", async () => {
    await waitFor(page, "a connection count from /stats", () => /^\d[\d,]*$/.test(document.getElementById("stat-connections").textContent));
    const workers = await page.locator("#workers span").count();
    assert(workers >= 1, "no worker chips");
  });

  await t.check("a screenshot once the charts have some history", async () => {
    await samplesAtLeast(page, 24);
    await screenshot(page, shots, "dashboard");
  });

  await t.check("no request left the server's origin and no script error", async () => {
    assert(page.problems().length === 0, page.problems().join("\n"));
  });
  await page.context().close();

  await t.check("status: disconnected on an HTTP error, reconnecting when the stream drops", async () => {
    const page = await openPage(browser, base);
    await recordStatus(page);
    // sluice.js resumes with the `lastEventId` query parameter (it reconnects by itself).
    let resumed;
    const resumedWith = () => resumed;
    const fakeId = "0000000a-1";
    const fake = {
      cpu: 42,
      memory: { total: 2 ** 34, used: 2 ** 33, percentage: 50 },
      uptime: 1,
      timestamp: new Date(Date.now() - 5000).toISOString(),
      process: { rss: 2 ** 23, connections: 1, publishedPerSec: 0, deliveredPerSec: 0 },
    };
    let calls = 0;
    await page.route((url) => url.pathname === "/metrics", async (route) => {
      calls++;
      resumed ??= new URL(route.request().url()).searchParams.get("lastEventId") ?? undefined;
      if (calls === 1) {
        // An HTTP error: the page must say so, and the client opens a new stream.
        return route.fulfill({ status: 503, contentType: "application/json", body: '{"error":"busy"}' });
      }
      if (calls === 2) {
        // A stream that ends after one sample: the client reconnects by itself.
        const body = `retry: 300\nevent: metrics\nid: ${fakeId}\ndata: ${JSON.stringify(fake)}\n\n`;
        return route.fulfill({ status: 200, contentType: "text/event-stream", body });
      }
      return route.fallback();
    });
    await visit(page, base + "/");
    // One fake sample, then the real stream's latest and at least one live one.
    await samplesAtLeast(page, 3, { what: "3 samples after two failed streams" });
    const log = await page.evaluate(() => window.statusLog);
    console.log(`    status log: ${log.join(" → ")}; requests: ${calls}; resumed with lastEventId ${resumedWith()}`);
    const expected = ["disconnected", "connected", "reconnecting", "connected"];
    let i = 0;
    for (const state of log) if (state === expected[i]) i++;
    assert(i === expected.length, `status log ${log.join(" → ")} lacks ${expected.join(" → ")}`);
    assert(resumedWith() === fakeId, `the client resumed with lastEventId ${resumedWith()}, not ${fakeId}`);
    const cpu = await page.evaluate(() => Number(document.getElementById("cpu-value").dataset.value));
    assert(cpu >= 0 && cpu <= 100, `cpu ${cpu} after the reconnect`);
    // The 503 is logged by the browser as a failed resource load: expected here.
    const unexpected = page.problems().filter((p) => !/status of 503/.test(p));
    assert(unexpected.length === 0, unexpected.join("\n"));
    await page.context().close();
  });
} finally {
  await browser.close();
  t.finish();
}

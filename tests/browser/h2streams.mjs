// Browser test of HTTP/2 served by sluice itself over HTTPS: one page opens 10 EventSources to
// 10 channels. Over HTTP/1.1 a browser holds at most 6 connections per origin and the rest
// would wait in CONNECTING; over HTTP/2 all 10 share one connection, all reach OPEN, and each
// receives its own channel's events. The certificate is the test's own (errors ignored).
//
// Usage: node h2streams.mjs <https-base-url> <screenshot-dir>   (run by tests/browser.rs)

import { assert, launch, openPage, parseArgs, runner, visit, waitFor } from "./lib.mjs";

const { base } = parseArgs();
const t = runner("h2streams");
const browser = await launch(["--ignore-certificate-errors"]);
const STREAMS = 10;
const prefix = `h2-${Date.now().toString(36)}`;

try {
  const page = await openPage(browser, base);

  await t.check("the page itself is served over HTTP/2", async () => {
    await visit(page, `${base}/healthz`);
    const protocol = await page.evaluate(
      () => performance.getEntriesByType("navigation")[0].nextHopProtocol,
    );
    assert(protocol === "h2", `navigation protocol ${protocol}`);
  });

  await t.check(`${STREAMS} EventSources on one page all reach OPEN`, async () => {
    await page.evaluate(
      ({ prefix, count }) => {
        window.sources = [];
        window.got = [];
        for (let i = 0; i < count; i++) {
          const source = new EventSource(`/events?channel=${prefix}-${i}`);
          window.got.push([]);
          source.onmessage = (e) => window.got[i].push(JSON.parse(e.data).data);
          window.sources.push(source);
        }
      },
      { prefix, count: STREAMS },
    );
    await waitFor(
      page,
      `all ${STREAMS} EventSources OPEN`,
      () => window.sources.every((s) => s.readyState === EventSource.OPEN),
    );
  });

  await t.check("each EventSource receives its own channel's events, and only those", async () => {
    await page.evaluate(
      async ({ prefix, count }) => {
        for (let i = 0; i < count; i++) {
          const response = await fetch("/api/publish", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ channel: `${prefix}-${i}`, data: `for ${i}` }),
          });
          if (response.status !== 200) throw new Error(`publish answered ${response.status}`);
        }
      },
      { prefix, count: STREAMS },
    );
    await waitFor(
      page,
      "one event on every stream",
      (count) => window.got.every((events) => events.length >= 1),
      STREAMS,
    );
    const got = await page.evaluate(() => window.got);
    for (let i = 0; i < STREAMS; i++) {
      assert(
        got[i].length === 1 && got[i][0] === `for ${i}`,
        `stream ${i} got ${JSON.stringify(got[i])}`,
      );
    }
  });

  await t.check("the page reports no errors", async () => {
    assert(page.problems().length === 0, page.problems().join("\n"));
  });
} finally {
  t.finish();
  await browser.close();
}

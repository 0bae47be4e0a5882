// Browser test of the three transports side by side: a page's EventSource, WebSocket and
// long-poll loop subscribe to one channel, the test publishes, and every transport must show the
// same events with the same ids, in order, once. Then the WebSocket is closed, more events are
// published, and a new WebSocket resuming with `lastEventId` must receive exactly those.
//
// Usage: node transports.mjs <base-url> <screenshot-dir>   (run by tests/browser.rs)

import { assert, launch, openPage, parseArgs, runner, visit, waitFor } from "./lib.mjs";

const { base } = parseArgs();
const t = runner("transports");
const browser = await launch();
const channel = `bt-${Date.now().toString(36)}`;

async function publish(n) {
  const response = await fetch(`${base}/api/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel, data: { n } }),
  });
  assert(response.status === 200, `publish answered ${response.status}`);
  return (await response.json()).id;
}

try {
  const page = await openPage(browser, base);
  const published = [];

  await t.check("the page opens an EventSource, a WebSocket and a poll loop", async () => {
    await visit(page, `${base}/chat`);
    await page.evaluate((channel) => {
      window.got = { sse: [], ws: [], poll: [] };
      window.ready = { sse: false, ws: false, poll: false };
      const source = new EventSource(`/events?channel=${channel}`);
      source.addEventListener("connected", () => (window.ready.sse = true));
      source.onmessage = (e) => window.got.sse.push({ id: e.lastEventId, data: JSON.parse(e.data).data });
      window.openWs = (query) => {
        const ws = new WebSocket(`ws://${location.host}/ws?channel=${channel}${query}`);
        ws.onmessage = (m) => {
          const message = JSON.parse(m.data);
          if (message.event === "position") window.ready.ws = true;
          if (message.event === "message") window.got.ws.push({ id: message.id, data: message.data });
        };
        window.ws = ws;
      };
      window.openWs("");
      (async () => {
        // The first poll starts from the current position (an empty answer after the timeout
        // would also do); every later one from `next`.
        let next = null;
        for (;;) {
          const since = next ? `&since=${next}` : "";
          const answer = fetch(`/poll?channel=${channel}${since}`);
          window.ready.poll = true;
          const body = await (await answer).json();
          for (const event of body.events) window.got.poll.push({ id: event.id, data: event.data });
          next = body.next;
        }
      })();
    }, channel);
    await waitFor(page, "all three transports to be open", () =>
      window.ready.sse && window.ready.ws && window.ready.poll,
    );
    // The poll's request is in flight once `fetch` was called; give the server a moment to open
    // it before publishing (an event published earlier would be before its start position).
    await page.waitForTimeout(300);
  });

  await t.check("every transport receives the same events, in order, once", async () => {
    for (let n = 0; n < 5; n++) published.push(await publish(n));
    await waitFor(
      page,
      "five events on every transport",
      () => window.got.sse.length >= 5 && window.got.ws.length >= 5 && window.got.poll.length >= 5,
    );
    await page.waitForTimeout(200);
    const got = await page.evaluate(() => window.got);
    for (const transport of ["sse", "ws", "poll"]) {
      assert(
        JSON.stringify(got[transport].map((e) => e.id)) === JSON.stringify(published),
        `${transport} ids ${JSON.stringify(got[transport].map((e) => e.id))} != ${JSON.stringify(published)}`,
      );
      assert(
        JSON.stringify(got[transport].map((e) => e.data.n)) === "[0,1,2,3,4]",
        `${transport} data ${JSON.stringify(got[transport])}`,
      );
    }
  });

  await t.check("a WebSocket resuming with lastEventId gets exactly what it missed", async () => {
    await page.evaluate(() => {
      window.ws.close();
      window.got.ws = [];
      window.ready.ws = false;
    });
    const missed = [await publish(5), await publish(6)];
    await page.evaluate((last) => window.openWs(`&lastEventId=${last}`), published.at(-1));
    await waitFor(page, "the resumed WebSocket to catch up", () => window.ready.ws);
    const live = await publish(7);
    await waitFor(page, "the live event after the replay", () => window.got.ws.length >= 3);
    const ids = await page.evaluate(() => window.got.ws.map((e) => e.id));
    assert(
      JSON.stringify(ids) === JSON.stringify([...missed, live]),
      `resumed ids ${JSON.stringify(ids)} != ${JSON.stringify([...missed, live])}`,
    );
  });

  await t.check("no page errors", async () => {
    assert(page.problems().length === 0, page.problems().join("\n"));
  });
} finally {
  await browser.close();
  t.finish();
}

// Browser test of sluice.js (served by the hub at /sluice.js) in headless Chromium:
// - five tabs of one browser with `shareAcrossTabs` hold one stream between them (the hub's
//   /stats counts 1), and each gets every event in order; a channel only one tab subscribed
//   rides on the leader's stream and reaches that tab only;
// - the leader tab closes while events keep coming at 50/s: another tab takes over, and every
//   remaining tab gets every event exactly once, in order;
// - the leader tab freezes (its script paused by CDP) while events keep coming at 50/s:
//   another tab steals the lead within about a second; once woken, the frozen tab follows, its
//   stream is closed (the hub counts 1 again), and every tab, it too, got every event once;
// - tokens that live 3 s are refreshed on the live stream for 12 s: the stream never drops (same
//   connection, state never leaves `open`) and events keep arriving; a refreshed token without
//   a channel ends that channel's subscription with an `unsubscribed` event;
// - a resume position from another life of the memory store (what a restart leaves a client
//   with) is answered with `reset`, which reaches the app;
// - the same API over a WebSocket and over long polling.
//
// Usage: node client.mjs <base-url> <screenshot-dir>   (run by tests/browser.rs, which starts
// the hub with --jwt-secret SECRET below)

import crypto from "node:crypto";

import { assert, launch, parseArgs, runner, WAIT_MS } from "./lib.mjs";

/** The HS256 secret tests/browser.rs gives the hub. */
const SECRET = "browser-client-test-secret-0123456789";
const TABS = 5;
const RATE_MS = 20; // 50 events per second

const { base } = parseArgs();
const t = runner("client");
const browser = await launch();
const channel = `ct-${Date.now().toString(36)}`;
const problems = [];

function mint(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const input = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${input}.${crypto.createHmac("sha256", SECRET).update(input).digest("base64url")}`;
}

async function publish(channelName, data) {
  const response = await fetch(`${base}/api/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel: channelName, data }),
  });
  assert(response.status === 200, `publish answered ${response.status}`);
  return (await response.json()).id;
}

async function totalConnections() {
  const stats = await (await fetch(`${base}/stats`)).json();
  return stats.totalConnections;
}

async function until(what, condition, ms = WAIT_MS) {
  const end = Date.now() + ms;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A tab of `context` on a plain page of the hub's origin, with the client module loaded. */
async function openTab(context) {
  const page = await context.newPage();
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  const response = await page.goto(`${base}/healthz`);
  assert(response.status() === 200, `GET /healthz answered ${response.status()}`);
  await page.evaluate(async () => {
    window.sluice = await import("/sluice.js");
  });
  return page;
}

const seq = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

try {
  const context = await browser.newContext();
  const tabs = [];

  await t.check(`${TABS} tabs with shareAcrossTabs hold one stream`, async () => {
    for (let i = 0; i < TABS; i++) tabs.push(await openTab(context));
    for (const page of tabs) {
      await page.evaluate((channel) => {
        window.got = [];
        window.client = new window.sluice.Sluice(location.origin, { shareAcrossTabs: true });
        window.client.subscribe(channel, (m) => window.got.push(m.data.n));
      }, channel);
    }
    await until("every tab open", async () => {
      const states = await Promise.all(tabs.map((p) => p.evaluate(() => window.client.state)));
      return states.every((s) => s === "open");
    });
    await until("one stream on the hub", async () => (await totalConnections()) === 1);
    // And it stays one: no tab opens a stream of its own a moment later.
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert((await totalConnections()) === 1, `the hub counts ${await totalConnections()} streams`);
    const leaders = await Promise.all(tabs.map((p) => p.evaluate(() => window.client.share.leader)));
    assert(leaders.filter(Boolean).length === 1, `leaders: ${leaders}`);
  });

  await t.check("20 events reach every tab, all of them, in order", async () => {
    for (const n of seq(0, 20)) await publish(channel, { n });
    await until("20 events in every tab", async () => {
      const got = await Promise.all(tabs.map((p) => p.evaluate(() => window.got.length)));
      return got.every((n) => n >= 20);
    });
    for (const [i, page] of tabs.entries()) {
      const got = await page.evaluate(() => window.got);
      assert(JSON.stringify(got) === JSON.stringify(seq(0, 20)), `tab ${i} got ${JSON.stringify(got)}`);
    }
  });

  await t.check("each tab's own channel rides on the leader's stream, and reaches that tab only", async () => {
    for (const [i, page] of tabs.entries()) {
      await page.evaluate(
        ({ name }) => {
          window.own = [];
          window.client.subscribe(name, (m) => m.data.probe || window.own.push(m.data.tab));
        },
        { name: `${channel}-tab${i}` },
      );
    }
    for (const i of tabs.keys()) {
      // Publish probes until the hub counts a subscriber: the leader added the channel.
      await until(`the leader to subscribe ${channel}-tab${i}`, async () => {
        const response = await fetch(`${base}/api/publish`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ channel: `${channel}-tab${i}`, data: { probe: true } }),
        });
        return (await response.json()).clients >= 1;
      });
      await publish(`${channel}-tab${i}`, { tab: i });
    }
    await until("each tab's own event", async () => {
      const own = await Promise.all(tabs.map((p) => p.evaluate(() => window.own.length)));
      return own.every((n) => n >= 1);
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (const [i, page] of tabs.entries()) {
      const own = await page.evaluate(() => window.own);
      assert(JSON.stringify(own) === JSON.stringify([i]), `tab ${i} got ${JSON.stringify(own)} on its own channels`);
    }
    assert((await totalConnections()) === 1, `the hub counts ${await totalConnections()} streams`);
  });

  await t.check("the leader tab closes at 50 events/s: every other tab gets every event once", async () => {
    const leaders = await Promise.all(tabs.map((p) => p.evaluate(() => window.client.share.leader)));
    const leader = tabs[leaders.indexOf(true)];
    const rest = tabs.filter((p) => p !== leader);
    let next = 20;
    let stop = false;
    const publisher = (async () => {
      while (!stop) {
        await publish(channel, { n: next++ });
        await new Promise((resolve) => setTimeout(resolve, RATE_MS));
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 600));
    const closedAt = Date.now();
    await leader.close();
    // How long the others go without a stream (reported, not asserted: wall-clock figures
    // depend on the machine).
    await until("a new leader with an open stream", async () => {
      const live = await Promise.all(
        rest.map((p) => p.evaluate(() => window.client.share.leader && Boolean(window.client.stream.connectionId))),
      );
      return live.some(Boolean);
    });
    console.log(`    takeover: a new leader's stream was open ${Date.now() - closedAt} ms after the leader tab closed`);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 1500 - (Date.now() - closedAt))));
    stop = true;
    await publisher;
    const last = next;
    await until(`all ${last} events in every remaining tab`, async () => {
      const got = await Promise.all(rest.map((p) => p.evaluate(() => window.got.length)));
      return got.every((n) => n >= last);
    });
    await new Promise((resolve) => setTimeout(resolve, 300)); // room for a late duplicate
    for (const [i, page] of rest.entries()) {
      const got = await page.evaluate(() => window.got);
      assert(
        JSON.stringify(got) === JSON.stringify(seq(0, last)),
        `tab ${i} did not get 0..${last - 1} exactly once: ${JSON.stringify(got)}`,
      );
    }
    const newLeaders = await Promise.all(rest.map((p) => p.evaluate(() => window.client.share.leader)));
    assert(newLeaders.filter(Boolean).length === 1, `leaders after the takeover: ${newLeaders}`);
    await until("one stream again", async () => (await totalConnections()) === 1);
    for (const page of rest) await page.close();
    await until("no stream left", async () => (await totalConnections()) === 0);
  });

  await t.check("the leader tab freezes at 50 events/s: another takes over, each tab gets every event once", async () => {
    const context = await browser.newContext();
    const name = `${channel}-frozen`;
    const pages = [];
    for (let i = 0; i < 4; i++) pages.push(await openTab(context));
    for (const page of pages) {
      await page.evaluate((name) => {
        window.got = [];
        window.client = new window.sluice.Sluice(location.origin, { shareAcrossTabs: true });
        window.client.subscribe(name, (m) => window.got.push(m.data.n));
      }, name);
    }
    await until("one stream on the hub, open in every tab", async () => {
      const states = await Promise.all(pages.map((p) => p.evaluate(() => window.client.state)));
      return states.every((s) => s === "open") && (await totalConnections()) === 1;
    });
    const leaders = await Promise.all(pages.map((p) => p.evaluate(() => window.client.share.leader)));
    assert(leaders.filter(Boolean).length === 1, `leaders: ${leaders}`);
    const frozen = pages[leaders.indexOf(true)];
    const rest = pages.filter((p) => p !== frozen);
    let next = 0;
    let stop = false;
    const publisher = (async () => {
      while (!stop) {
        await publish(name, { n: next++ });
        await new Promise((resolve) => setTimeout(resolve, RATE_MS));
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 600));
    // Frozen: its script stops where it is (timers, messages and stream reads wait), its lock
    // and its stream stay. Page.setWebLifecycleState("frozen") would be the browser's own
    // freeze, but headless Chromium keeps running the page's timers under it; pausing the
    // page in the debugger stops them.
    const cdp = await context.newCDPSession(frozen);
    await cdp.send("Debugger.enable");
    const frozenAt = Date.now();
    await cdp.send("Debugger.pause");
    await until("a new leader with an open stream", async () => {
      const live = await Promise.all(
        rest.map((p) => p.evaluate(() => window.client.share.leader && Boolean(window.client.stream.connectionId))),
      );
      return live.some(Boolean);
    });
    // Reported, not asserted: wall-clock figures depend on the machine.
    console.log(`    takeover: a new leader's stream was open ${Date.now() - frozenAt} ms after the leader tab froze`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await cdp.send("Debugger.resume");
    await cdp.send("Debugger.disable");
    // The woken tab finds it was replaced: it follows, and its stream is closed.
    await until("the woken tab to follow", () => frozen.evaluate(() => !window.client.share.leader));
    await new Promise((resolve) => setTimeout(resolve, 500));
    stop = true;
    await publisher;
    const last = next;
    await until(`all ${last} events in every tab`, async () => {
      const got = await Promise.all(pages.map((p) => p.evaluate(() => window.got.length)));
      return got.every((n) => n >= last);
    });
    await new Promise((resolve) => setTimeout(resolve, 300)); // room for a late duplicate
    for (const [i, page] of pages.entries()) {
      const got = await page.evaluate(() => window.got);
      const which = page === frozen ? "the woken tab" : `tab ${i}`;
      assert(
        JSON.stringify(got) === JSON.stringify(seq(0, last)),
        `${which} did not get 0..${last - 1} exactly once: ${JSON.stringify(got)}`,
      );
    }
    const after = await Promise.all(pages.map((p) => p.evaluate(() => window.client.share.leader)));
    assert(after.filter(Boolean).length === 1 && !after[pages.indexOf(frozen)], `leaders after waking: ${after}`);
    await until("one stream again", async () => (await totalConnections()) === 1);
    for (const page of pages) await page.close();
    await until("no stream left", async () => (await totalConnections()) === 0);
  });

  await t.check("3 s tokens refreshed on the live stream for 12 s: no drop, events keep coming", async () => {
    const page = await openTab(await browser.newContext());
    let grants = ["feed", "extra"];
    await page.exposeFunction("mintToken", () =>
      mint({ sub: "alice", exp: Math.floor(Date.now() / 1000) + 3, subscribe: grants }),
    );
    await page.evaluate(() => {
      window.got = [];
      window.states = [];
      window.ended = [];
      window.errors = [];
      const client = new window.sluice.Sluice(location.origin, {
        path: "/secure-events",
        getToken: () => window.mintToken(),
      });
      client.on("state", (s) => window.states.push(s));
      client.on("unsubscribed", (info) => window.ended.push(info));
      client.on("error", (e) => window.errors.push(e));
      client.subscribe("feed", (m) => window.got.push(m.data.n));
      client.subscribe("extra", () => {});
      window.client = client;
    });
    await until("the stream open", () => page.evaluate(() => window.client.state === "open"));
    const connection = await page.evaluate(() => window.client.stream.connectionId);
    const started = Date.now();
    let n = 0;
    while (Date.now() - started < 12_000) {
      await publish("feed", { n: n++ });
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await until(`all ${n} events`, () => page.evaluate((n) => window.got.length >= n, n));
    const seen = await page.evaluate(() => ({
      got: window.got,
      states: window.states,
      errors: window.errors,
      connection: window.client.stream.connectionId,
    }));
    assert(JSON.stringify(seen.got) === JSON.stringify(seq(0, n)), `got ${JSON.stringify(seen.got)}`);
    assert(JSON.stringify(seen.states) === JSON.stringify(["open"]), `states ${JSON.stringify(seen.states)}`);
    assert(seen.errors.length === 0, `errors ${JSON.stringify(seen.errors)}`);
    assert(seen.connection === connection, `the connection changed: ${connection} → ${seen.connection}`);

    // The next token no longer grants `extra`: its subscription ends, `feed` carries on.
    grants = ["feed"];
    await until(
      "the end of 'extra'",
      () => page.evaluate(() => window.ended.length === 1),
      6000,
    );
    const ended = await page.evaluate(() => window.ended[0]);
    assert(ended.channel === "extra" && ended.reason === "not-granted", JSON.stringify(ended));
    await publish("feed", { n: n++ });
    await until("feed still flowing", () => page.evaluate((n) => window.got.length === n, n));
    const states = await page.evaluate(() => window.states);
    assert(JSON.stringify(states) === JSON.stringify(["open"]), `states ${JSON.stringify(states)}`);
    await page.close();
  });

  await t.check("an id from another life of the store: reset reaches the app", async () => {
    const page = await openTab(await browser.newContext());
    await publish(channel, { n: "after" });
    const reset = await page.evaluate(
      (channel) =>
        new Promise((resolve) => {
          const client = new window.sluice.Sluice(location.origin, { lastEventId: "zzzzzz-41" });
          client.on("reset", (info) => {
            client.close();
            resolve(info);
          });
          client.subscribe(channel, () => {});
        }),
      channel,
    );
    assert(reset.reason === "unknown" && reset.lastEventId === "zzzzzz-41", JSON.stringify(reset));
    assert(typeof reset.id === "string" && reset.id.length > 0, JSON.stringify(reset));
    await page.close();
  });

  for (const transport of ["websocket", "poll"]) {
    await t.check(`the same API over ${transport}: events in order, a channel added live`, async () => {
      const page = await openTab(await browser.newContext());
      const a = `${channel}-${transport}-a`;
      const b = `${channel}-${transport}-b`;
      await page.evaluate(
        ({ a, transport }) => {
          window.got = {};
          window.client = new window.sluice.Sluice(location.origin, { transports: [transport] });
          window.take = (m) => {
            if (m.data.probe) return;
            (window.got[m.channel] ??= []).push(m.data.n);
          };
          window.client.subscribe(a, window.take);
        },
        { a, transport },
      );
      await until("the stream open", () => page.evaluate(() => window.client.state === "open"));
      // Wait until the hub counts the page's subscription, so no event goes before it.
      const probeUntilSubscribed = async (name) => {
        await until(`a subscriber on ${name}`, async () => {
          const response = await fetch(`${base}/api/publish`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ channel: name, data: { probe: true } }),
          });
          return (await response.json()).clients >= 1;
        });
      };
      await probeUntilSubscribed(a);
      for (const n of seq(0, 5)) await publish(a, { n });
      await page.evaluate((b) => window.client.subscribe(b, window.take), b);
      await probeUntilSubscribed(b);
      for (const n of seq(0, 3)) await publish(b, { n });
      await publish(a, { n: 5 });
      await until("every event", () =>
        page.evaluate(({ a, b }) => (window.got[a] || []).length >= 6 && (window.got[b] || []).length >= 3, { a, b }),
      );
      const got = await page.evaluate(() => window.got);
      assert(JSON.stringify(got[a]) === JSON.stringify(seq(0, 6)), `${a}: ${JSON.stringify(got[a])}`);
      assert(JSON.stringify(got[b]) === JSON.stringify(seq(0, 3)), `${b}: ${JSON.stringify(got[b])}`);
      const kind = await page.evaluate(() => window.client.stream.connection.kind);
      assert(kind === transport, `the client used ${kind}`);
      await page.evaluate(() => window.client.close());
      await page.close();
    });
  }

  await t.check("no page errors", async () => {
    assert(problems.length === 0, problems.join("\n"));
  });
} finally {
  await browser.close();
  t.finish();
}

// Unit tests of the client's state machine against a scripted hub: a fake `fetch` whose event
// streams the test writes into, so every request the client makes can be checked.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Sluice } from "../sluice.js";

const tick = (ms = 5) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, condition, ms = 2000) {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await tick();
  }
}

/** A fake hub: `streams` are the open event streams, `posts` every POST with its JSON body. */
function fakeHub() {
  const hub = { streams: [], posts: [], refuse: 0 };
  const encoder = new TextEncoder();
  hub.fetch = async (url, init = {}) => {
    const u = new URL(url);
    if (init.method === "POST") {
      hub.posts.push({ path: u.pathname, body: JSON.parse(init.body), auth: init.headers.authorization });
      return new Response('{"success":true}', { status: 200, headers: { "content-type": "application/json" } });
    }
    if (hub.refuse > 0) {
      hub.refuse -= 1;
      throw new TypeError("connection refused");
    }
    let controller;
    const body = new ReadableStream({ start: (c) => (controller = c) });
    const stream = {
      url: u,
      auth: init.headers.authorization,
      write: (text) => controller.enqueue(encoder.encode(text)),
      end: () => controller.close(),
    };
    init.signal.addEventListener("abort", () => {
      try {
        controller.error(new DOMException("aborted", "AbortError"));
      } catch {
        // Already closed.
      }
    });
    hub.streams.push(stream);
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  };
  return hub;
}

function connected(id, channels) {
  return `event: connected\nretry: 10\ndata: ${JSON.stringify({ connectionId: id, worker: 0, channels })}\n\n`;
}

function client(hub, options = {}) {
  return new Sluice("http://hub.test", {
    fetch: hub.fetch,
    env: { fetch: hub.fetch, ReadableStream, TextDecoder },
    ...options,
  });
}

test("one stream for the channels, JSON parsed, subscribe adds to the live stream", async () => {
  const hub = fakeHub();
  const c = client(hub);
  const got = [];
  const states = [];
  c.on("state", (s) => states.push(s));
  c.subscribe("news", (m) => got.push(m));
  await until("the stream", () => hub.streams.length === 1);
  assert.deepEqual(hub.streams[0].url.searchParams.getAll("channel"), ["news"]);
  hub.streams[0].write(connected("s0-00000000000000aa", ["news"]));
  hub.streams[0].write('id: e-1\ndata: {"channel":"news","data":{"n":1}}\n\n');
  await until("the event", () => got.length === 1);
  assert.deepEqual(got[0], { id: "e-1", channel: "news", event: "message", data: { n: 1 } });
  assert.deepEqual(states, ["open"]);

  c.subscribe("sport", () => {});
  await until("the subscribe", () => hub.posts.length === 1);
  assert.deepEqual(hub.posts[0], {
    path: "/subscribe",
    body: { channel: "sport", connectionId: "s0-00000000000000aa" },
    auth: undefined,
  });
  assert.equal(hub.streams.length, 1, "still one stream");
  c.close();
  assert.equal(c.state, "closed");
});

test("after a drop: reconnect with the last id and the current channels; no duplicate", async () => {
  const hub = fakeHub();
  const c = client(hub);
  const got = [];
  c.subscribe("news", (m) => got.push(m.id));
  await until("the stream", () => hub.streams.length === 1);
  hub.streams[0].write(connected("s0-00000000000000aa", ["news"]));
  hub.streams[0].write('id: e-5\ndata: {"channel":"news","data":1}\n\n');
  await until("e-5", () => got.length === 1);
  c.subscribe("sport", () => {});
  hub.streams[0].write("id: e-6\n\n"); // the position frame
  await tick(20);
  hub.streams[0].end();
  await until("the reconnect", () => hub.streams.length === 2);
  const url = hub.streams[1].url;
  assert.equal(url.searchParams.get("lastEventId"), "e-6");
  assert.deepEqual(url.searchParams.getAll("channel").sort(), ["news", "sport"]);
  // A replayed event the tab already had is dropped.
  hub.streams[1].write(connected("s0-00000000000000bb", ["news", "sport"]));
  hub.streams[1].write('id: e-5\ndata: {"channel":"news","data":1}\n\n');
  hub.streams[1].write('id: e-7\ndata: {"channel":"news","data":2}\n\n');
  await until("e-7", () => got.length === 2);
  assert.deepEqual(got, ["e-5", "e-7"]);
  c.close();
});

test("reset is handed to the app", async () => {
  const hub = fakeHub();
  const c = client(hub);
  const resets = [];
  c.on("reset", (info) => resets.push(info));
  c.subscribe("news", () => {});
  await until("the stream", () => hub.streams.length === 1);
  hub.streams[0].write(connected("s0-00000000000000aa", ["news"]));
  hub.streams[0].write('event: reset\nid: f-3\ndata: {"reason":"unknown","lastEventId":"e-9"}\n\n');
  await until("the reset", () => resets.length === 1);
  assert.deepEqual(resets[0], { reason: "unknown", lastEventId: "e-9", id: "f-3" });
  c.close();
});

test("tokens: refreshed on the live stream before exp; a not-granted channel ends", async () => {
  const hub = fakeHub();
  let minted = 0;
  const mint = () => {
    minted += 1;
    const exp = Math.floor(Date.now() / 1000) + 2;
    return `h.${Buffer.from(JSON.stringify({ sub: "a", exp, n: minted })).toString("base64url")}.s`;
  };
  const c = client(hub, { getToken: async () => mint() });
  const ended = [];
  c.on("unsubscribed", (info) => ended.push(info));
  c.subscribe("news", () => {});
  await until("the stream", () => hub.streams.length === 1);
  assert.match(hub.streams[0].auth, /^Bearer h\./);
  hub.streams[0].write(connected("s0-00000000000000aa", ["news"]));
  await until("a refresh", () => hub.posts.some((p) => p.path === "/token"), 3000);
  const post = hub.posts.find((p) => p.path === "/token");
  assert.deepEqual(post.body, { connectionId: "s0-00000000000000aa" });
  assert.notEqual(post.auth, hub.streams[0].auth, "a new token");
  hub.streams[0].write('event: unsubscribed\ndata: {"channel":"news","reason":"not-granted"}\n\n');
  await until("the end of news", () => ended.length === 1);
  assert.deepEqual(ended[0], { channel: "news", reason: "not-granted" });
  assert.equal(hub.streams.length, 1, "the stream never dropped");
  c.close();
});

test("a token-expired close reconnects at once with a fresh token", async () => {
  const hub = fakeHub();
  let n = 0;
  const c = client(hub, {
    getToken: () => `h.${Buffer.from(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 600, n: ++n })).toString("base64url")}.s`,
  });
  c.subscribe("news", () => {});
  await until("the stream", () => hub.streams.length === 1);
  hub.streams[0].write(connected("s0-00000000000000aa", ["news"]));
  hub.streams[0].write("id: e-4\n\n");
  hub.streams[0].write('event: closed\ndata: {"reason":"token-expired"}\n\n');
  await until("the reconnect", () => hub.streams.length === 2);
  assert.equal(hub.streams[1].url.searchParams.get("lastEventId"), "e-4");
  assert.notEqual(hub.streams[1].auth, hub.streams[0].auth);
  c.close();
});

test("a transport that cannot connect gives way to the next one", async () => {
  const hub = fakeHub();
  hub.refuse = 2;
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      sockets.push(this);
    }
    close() {}
  }
  const c = new Sluice("http://hub.test", {
    fetch: hub.fetch,
    env: { fetch: hub.fetch, ReadableStream, TextDecoder, WebSocket: FakeSocket },
  });
  const errors = [];
  c.on("error", (e) => errors.push(e));
  c.subscribe("news", () => {});
  await until("a WebSocket", () => sockets.length === 1, 5000);
  assert.equal(String(sockets[0].url), "ws://hub.test/ws?channel=news");
  assert.equal(errors.length, 2);
  c.close();
});

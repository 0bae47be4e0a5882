// Unit tests of the pure parts of sluice.js: the event-stream parser and the small helpers.

import { test } from "node:test";
import assert from "node:assert/strict";

import { EventStreamParser, isAfter, parseId, refreshAt, tokenExpiry, toMessage, availableTransports } from "../sluice.js";

function parse(chunks) {
  const out = [];
  const parser = new EventStreamParser((e) => out.push(e));
  for (const chunk of chunks) parser.push(chunk);
  return { out, parser };
}

test("events, ids, names and multi-line data", () => {
  const { out, parser } = parse(["event: connected\nretry: 3000\ndata: {\"a\":1}\n\n", "id: e-1\ndata: x\ndata: y\n\n"]);
  assert.deepEqual(out, [
    { id: "", event: "connected", data: '{"a":1}' },
    { id: "e-1", event: "message", data: "x\ny" },
  ]);
  assert.equal(parser.retry, 3000);
  assert.equal(parser.lastEventId, "e-1");
});

test("chunks split anywhere, CRLF and lone CR line ends", () => {
  const text = "id: e-2\r\nevent: news\r\ndata: hello\r\n\r\ndata: a\rdata: b\r\r";
  for (let cut = 0; cut <= text.length; cut++) {
    const { out } = parse([text.slice(0, cut), text.slice(cut)]);
    assert.deepEqual(
      out,
      [
        { id: "e-2", event: "news", data: "hello" },
        { id: "e-2", event: "message", data: "a\nb" },
      ],
      `cut at ${cut}`,
    );
  }
});

test("comments, unknown fields and the id-only position frame", () => {
  const { out } = parse([": heartbeat\n\nfoo: bar\n\nid: e-9\n\n"]);
  assert.deepEqual(out, [{ position: true, id: "e-9" }]);
});

test("an id with NUL is ignored, the id persists across events", () => {
  const { out } = parse(["id: a\0b\ndata: 1\n\nid: e-3\ndata: 2\n\ndata: 3\n\n"]);
  assert.deepEqual(
    out.map((e) => e.id),
    ["", "e-3", "e-3"],
  );
});

test("ids compare by seq within an epoch", () => {
  assert.deepEqual(parseId("mwvj7vfk-42"), { epoch: "mwvj7vfk", seq: 42 });
  assert.equal(parseId("junk"), null);
  assert.ok(isAfter("e-10", "e-9"));
  assert.ok(!isAfter("e-9", "e-9"));
  assert.ok(!isAfter("e-8", "e-9"));
  assert.ok(isAfter("f-1", "e-9"), "another epoch is news");
  assert.ok(isAfter("e-1", null));
});

test("token expiry and when to refresh", () => {
  const payload = Buffer.from(JSON.stringify({ sub: "alice", exp: 2000 })).toString("base64url");
  assert.equal(tokenExpiry(`h.${payload}.s`), 2_000_000);
  assert.equal(tokenExpiry("nope"), null);
  // A 3 s token is refreshed halfway; a long one 30 s before.
  assert.equal(refreshAt(3000, 0), 1500);
  assert.equal(refreshAt(3_600_000, 0), 3_570_000);
});

test("messages: JSON envelopes unwrapped, notifications keep their fields, text stays text", () => {
  assert.deepEqual(toMessage({ id: "e-1", event: "message", data: '{"channel":"news","data":{"n":1}}' }, true), {
    id: "e-1",
    channel: "news",
    event: "message",
    data: { n: 1 },
  });
  const note = '{"message":"hi","timestamp":"t","channel":"news"}';
  assert.deepEqual(toMessage({ id: "e-2", event: "notification", data: note }, true).data, JSON.parse(note));
  assert.deepEqual(toMessage({ id: "e-3", event: "message", data: "plain" }, true), {
    id: "e-3",
    channel: null,
    event: "message",
    data: "plain",
  });
  assert.deepEqual(toMessage({ id: "e-4", channel: "news", event: "message", data: { n: 2 } }, false).data, { n: 2 });
});

test("transports follow what the environment has", () => {
  const f = () => {};
  assert.deepEqual(availableTransports({ fetch: f, ReadableStream: f, TextDecoder: f, EventSource: f, WebSocket: f }), [
    "sse",
    "eventsource",
    "websocket",
    "poll",
  ]);
  assert.deepEqual(availableTransports({ WebSocket: f, fetch: f }), ["websocket", "poll"]);
  assert.deepEqual(availableTransports({ fetch: f }), ["poll"]);
});

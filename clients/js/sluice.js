// sluice.js: the browser client of a Sluice hub. One dependency-free ES module.
//
//   import { Sluice } from "/sluice.js";
//   const client = new Sluice("https://hub.example", { getToken, shareAcrossTabs: true });
//   const sub = client.subscribe("news", (msg) => console.log(msg.id, msg.channel, msg.data));
//   client.on("reset", (info) => refetchState());
//
// What it does for the page (see docs/client.md):
// - one stream per client, whatever the number of channels: `subscribe` on a live stream adds
//   the channel by connection id (POST /subscribe); after any drop the stream is opened again
//   with the current channel set and the last event id, so nothing retained is lost;
// - a `reset` (events lost for good) is always handed to the app;
// - tokens are refreshed on the live stream (POST /token) before they expire;
// - with `shareAcrossTabs`, the tabs of an origin elect one leader (Web Locks) that holds the
//   only stream and relays events (BroadcastChannel); when it closes or goes silent (a frozen
//   tab), another tab takes over and resumes from the last id the tabs saw, and every tab drops
//   what it already had;
// - transports: an event stream read with `fetch` (any event name, an Authorization header),
//   else EventSource, else a WebSocket, else long polling; the same API over each.

const DEFAULT_RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;
/** Refresh a token this long before its `exp` at most (half its life if that is less). */
const REFRESH_MARGIN_MS = 30_000;
/** Consecutive failures to open before the next transport is tried. */
const FAILURES_BEFORE_FALLBACK = 2;
/** How long a tab that became leader waits for the others to tell their channels. */
const TAKEOVER_GATHER_MS = 100;
/** How often a leader tab tells the others it is alive. */
const BEAT_MS = 250;
/** How long followers wait without a word from the leader before one takes over. */
const LEADER_SILENCE_MS = 1000;
/** How often a follower checks on the leader. */
const WATCH_MS = 100;
/** The most a follower waits at random before stealing, so that one steals and the others see it. */
const TAKEOVER_JITTER_MS = 150;
/** Control events that are the hub's, not the application's. */
const CONTROL = new Set(["connected", "reset", "dropped", "closed", "unsubscribed", "subscribed", "position", "error"]);

// ---------------------------------------------------------------------------------------------
// Event-stream parsing (WHATWG "event stream interpretation"), without IO.

/** Parses `text/event-stream` text fed in arbitrary chunks; calls `onEvent` per dispatch. */
export class EventStreamParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.lastEventId = "";
    this.data = [];
    this.event = "";
    this.pendingCR = false;
    this.retry = null;
  }

  /** Feeds decoded text. */
  push(text) {
    let chunk = text;
    if (this.pendingCR && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.pendingCR = false;
    this.buffer += chunk;
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      let end;
      if (cr === -1 && lf === -1) break;
      if (cr === -1 || (lf !== -1 && lf < cr)) end = lf;
      else end = cr;
      const line = this.buffer.slice(start, end);
      if (this.buffer[end] === "\r") {
        if (end + 1 === this.buffer.length) {
          this.pendingCR = true;
          start = end + 1;
        } else {
          start = this.buffer[end + 1] === "\n" ? end + 2 : end + 1;
        }
      } else {
        start = end + 1;
      }
      this.line(line);
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
    }
    switch (field) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.idBuffer = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
    }
  }

  dispatch() {
    const sawId = this.idBuffer !== undefined;
    if (sawId) this.lastEventId = this.idBuffer;
    this.idBuffer = undefined;
    const data = this.data;
    const event = this.event || "message";
    this.data = [];
    this.event = "";
    if (data.length === 0) {
      // An id-only frame (the hub's position frame) moves the resume point and nothing else.
      if (sawId) this.onEvent({ position: true, id: this.lastEventId });
      return;
    }
    this.onEvent({ id: this.lastEventId, event, data: data.join("\n") });
  }
}

// ---------------------------------------------------------------------------------------------
// Pure helpers.

/** `{seq, epoch}` of an id `<epoch>-<seq>`, or null. */
export function parseId(id) {
  if (typeof id !== "string") return null;
  const dash = id.lastIndexOf("-");
  if (dash <= 0) return null;
  const seq = Number(id.slice(dash + 1));
  if (!Number.isSafeInteger(seq)) return null;
  return { epoch: id.slice(0, dash), seq };
}

/** Whether event id `id` is after `last` (true when either cannot be compared). */
export function isAfter(id, last) {
  const a = parseId(id);
  const b = parseId(last);
  if (!a || !b || a.epoch !== b.epoch) return true;
  return a.seq > b.seq;
}

/** The `exp` of a JWT in milliseconds since the epoch, or null. Does not verify anything. */
export function tokenExpiry(token) {
  if (typeof token !== "string") return null;
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const text = typeof atob === "function" ? atob(padded) : Buffer.from(padded, "base64").toString("binary");
    const claims = JSON.parse(decodeURIComponent(escape(text)));
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/** When to refresh a token that expires at `expMs`, seen at `nowMs`. */
export function refreshAt(expMs, nowMs) {
  const life = expMs - nowMs;
  return expMs - Math.min(REFRESH_MARGIN_MS, Math.max(life / 2, 0));
}

/**
 * Turns one event as the hub sent it (`{id, event, data}` with `data` text on SSE, or the JSON
 * object of a WebSocket / poll message) into the app's message `{id, channel, event, data}`.
 * An SSE publish of JSON carries `{"channel", "data"}`: unwrapped. A notification carries its
 * channel beside its fields. Text stays text.
 */
export function toMessage(raw, sse) {
  if (!sse) {
    return { id: raw.id ?? null, channel: raw.channel ?? null, event: raw.event || "message", data: raw.data };
  }
  let data = raw.data;
  let channel = null;
  try {
    const parsed = JSON.parse(raw.data);
    data = parsed;
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed) && typeof parsed.channel === "string") {
      channel = parsed.channel;
      const keys = Object.keys(parsed);
      if (keys.length === 2 && "data" in parsed) data = parsed.data;
    }
  } catch {
    // Not JSON: the text as is.
  }
  return { id: raw.id || null, channel, event: raw.event, data };
}

function joinUrl(base, path, params) {
  const url = new URL(path, base.endsWith("/") ? base : `${base}/`);
  for (const [key, value] of params) url.searchParams.append(key, value);
  return url;
}

function withJitter(ms) {
  return ms + Math.floor(Math.random() * ms * 0.2);
}

// ---------------------------------------------------------------------------------------------
// Transports. Each opens one connection and reports through `sink`:
//   sink.raw(raw, sse)  an event (control or app), sink.position(id), sink.opened(),
//   sink.failed(error, {status, fatal}) when it ends. `close()` ends it quietly.

function sseOverFetch(client, channels, lastEventId, sink) {
  const controller = new AbortController();
  const params = channels.map((c) => ["channel", c]);
  if (lastEventId) params.push(["lastEventId", lastEventId]);
  const headers = { accept: "text/event-stream" };
  if (client.token) headers.authorization = `Bearer ${client.token}`;
  let done = false;
  (async () => {
    let response;
    try {
      response = await client.fetch(joinUrl(client.url, client.path, params), {
        headers,
        signal: controller.signal,
        cache: "no-store",
        credentials: client.credentials,
      });
    } catch (error) {
      if (!done) sink.failed(error, {});
      return;
    }
    if (!response.ok || !response.body) {
      let message = `HTTP ${response.status}`;
      try {
        message = (await response.json()).error || message;
      } catch {
        // No JSON error body.
      }
      if (!done) sink.failed(new Error(message), { status: response.status });
      return;
    }
    sink.opened();
    const parser = new EventStreamParser((raw) => (raw.position ? sink.position(raw.id) : sink.raw(raw, true)));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        parser.push(decoder.decode(value, { stream: true }));
        if (parser.retry !== null) sink.retry(parser.retry);
      }
      if (!done) sink.failed(new Error("the stream ended"), {});
    } catch (error) {
      if (!done) sink.failed(error, {});
    }
  })();
  return {
    kind: "sse",
    close() {
      done = true;
      controller.abort();
    },
  };
}

function sseOverEventSource(client, channels, lastEventId, sink) {
  const params = channels.map((c) => ["channel", c]);
  if (lastEventId) params.push(["lastEventId", lastEventId]);
  if (client.token) params.push(["token", client.token]);
  const source = new client.EventSource(joinUrl(client.url, client.path, params), {
    withCredentials: client.credentials === "include",
  });
  let done = false;
  const listen = (name) =>
    source.addEventListener(name, (e) => {
      if (!done) sink.raw({ id: e.lastEventId, event: name, data: e.data }, true);
    });
  for (const name of new Set([...CONTROL, "message", ...client.eventNames])) {
    if (name !== "error" && name !== "position") listen(name);
  }
  source.onerror = () => {
    if (done) return;
    done = true;
    source.close();
    sink.failed(new Error("the event stream failed"), {});
  };
  return {
    kind: "eventsource",
    close() {
      done = true;
      source.close();
    },
  };
}

function overWebSocket(client, channels, lastEventId, sink) {
  const params = channels.map((c) => ["channel", c]);
  if (lastEventId) params.push(["lastEventId", lastEventId]);
  if (client.token) params.push(["token", client.token]);
  const url = joinUrl(client.url, "ws", params);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const socket = new client.WebSocket(url);
  let done = false;
  socket.onmessage = (m) => {
    if (done) return;
    let message;
    try {
      message = JSON.parse(m.data);
    } catch {
      return;
    }
    if (message.event === "position") sink.position(message.id);
    else sink.raw(message, false);
  };
  const end = (why) => {
    if (done) return;
    done = true;
    sink.failed(new Error(why), {});
  };
  socket.onerror = () => end("the WebSocket failed");
  socket.onclose = (e) => end(`the WebSocket closed (${e.code})`);
  return {
    kind: "websocket",
    send(action, channel) {
      if (socket.readyState === 1) socket.send(JSON.stringify({ action, channel }));
    },
    close() {
      done = true;
      socket.close();
    },
  };
}

function overPolling(client, channels, lastEventId, sink) {
  let done = false;
  let controller = null;
  let since = lastEventId;
  let current = channels;
  // Set once a poll's answer has arrived and until it is handled. A channel change then waits
  // for the next poll instead of aborting: the answer holds events the hub has already handed
  // over. So does a change before any answer (no `since` yet): an aborted first poll may have
  // been answered on the wire, and a new poll without `since` would start after its events.
  // Such a change takes effect when the first poll answers (its first event or its timeout).
  let answered = false;
  (async () => {
    // A poll is "open" once it is asked: its answer only comes with an event or the timeout.
    await null;
    if (!done) sink.raw({ event: "connected", data: { channels: current } }, false);
    while (!done) {
      controller = new AbortController();
      const params = current.map((c) => ["channel", c]);
      if (since) params.push(["since", since]);
      const headers = {};
      if (client.token) headers.authorization = `Bearer ${client.token}`;
      let body;
      try {
        const response = await client.fetch(joinUrl(client.url, "poll", params), {
          headers,
          signal: controller.signal,
          cache: "no-store",
          credentials: client.credentials,
        });
        answered = true;
        if (!response.ok) {
          if (!done) sink.failed(new Error(`HTTP ${response.status}`), { status: response.status });
          return;
        }
        body = await response.json();
      } catch (error) {
        answered = false;
        if (done) return;
        if (error && error.name === "AbortError") continue; // channels changed: poll again
        sink.failed(error, {});
        return;
      }
      answered = false;
      for (const event of body.events || []) sink.raw(event, false);
      if (body.next) {
        since = body.next;
        sink.position(body.next);
      }
    }
  })();
  return {
    kind: "poll",
    setChannels(next) {
      current = next;
      if (controller && !answered && since) controller.abort();
    },
    close() {
      done = true;
      if (controller) controller.abort();
    },
  };
}

const TRANSPORTS = {
  sse: sseOverFetch,
  eventsource: sseOverEventSource,
  websocket: overWebSocket,
  poll: overPolling,
};

/** The transports this environment can use, in order of preference. */
export function availableTransports(env) {
  const list = [];
  if (typeof env.fetch === "function" && typeof env.ReadableStream === "function" && typeof env.TextDecoder === "function") {
    list.push("sse");
  }
  if (typeof env.EventSource === "function") list.push("eventsource");
  if (typeof env.WebSocket === "function") list.push("websocket");
  if (typeof env.fetch === "function") list.push("poll");
  return list;
}

// ---------------------------------------------------------------------------------------------
// Stream: one connection with reconnection, resume, subscription changes and token refresh.
// Knows channels, not handlers; what arrives goes to `deliver`, `emit`.

class Stream {
  constructor(client) {
    this.client = client;
    this.channels = new Set();
    this.lastEventId = null;
    this.connectionId = null;
    this.connection = null;
    this.serverChannels = new Set();
    this.requested = new Set();
    this.retryMs = DEFAULT_RETRY_MS;
    this.failures = 0;
    this.transportIndex = 0;
    this.timer = null;
    this.refreshTimer = null;
    this.stopped = true;
    this.opened = false;
  }

  start(lastEventId) {
    if (lastEventId && (!this.lastEventId || isAfter(lastEventId, this.lastEventId))) this.lastEventId = lastEventId;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.refreshTimer);
    if (this.connection) this.connection.close();
    this.connection = null;
    this.connectionId = null;
  }

  setChannels(channels) {
    const next = new Set(channels);
    const added = [...next].filter((c) => !this.channels.has(c));
    const removed = [...this.channels].filter((c) => !next.has(c));
    this.channels = next;
    if (this.stopped || this.client.fixed) return;
    if (!this.connection) return;
    if (this.connection.kind === "poll") {
      this.connection.setChannels([...next]);
      return;
    }
    if (!this.opened || (!this.connectionId && this.connection.kind !== "websocket")) return; // `connected` reconciles
    for (const c of added) this.change(c, true);
    for (const c of removed) this.change(c, false);
  }

  async change(channel, add) {
    const connection = this.connection;
    if (connection && connection.kind === "websocket") {
      connection.send(add ? "subscribe" : "unsubscribe", channel);
      return;
    }
    if (!this.connectionId) return;
    const headers = { "content-type": "application/json" };
    if (this.client.token) headers.authorization = `Bearer ${this.client.token}`;
    try {
      const response = await this.client.fetch(joinUrl(this.client.url, add ? "subscribe" : "unsubscribe", []), {
        method: "POST",
        headers,
        credentials: this.client.credentials,
        body: JSON.stringify({ channel, connectionId: this.connectionId }),
      });
      if (response.ok) {
        if (add) this.serverChannels.add(channel);
        else this.serverChannels.delete(channel);
        return;
      }
      const body = await response.json().catch(() => ({}));
      if (connection !== this.connection) return; // reconnected meanwhile: `connected` reconciles
      this.client.emit("error", { status: response.status, channel, message: body.error || `HTTP ${response.status}` });
    } catch (error) {
      this.client.emit("error", { channel, message: String(error && error.message) });
    }
  }

  async connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.opened = false;
    this.connectionId = null;
    this.client.setState("connecting");
    await this.client.ensureToken();
    if (this.stopped) return;
    const kinds = this.client.transports;
    const kind = kinds[Math.min(this.transportIndex, kinds.length - 1)];
    const open = TRANSPORTS[kind];
    let connection = null;
    const current = () => connection === this.connection && !this.stopped;
    const sink = {
      raw: (raw, sse) => current() && this.onRaw(raw, sse),
      position: (id) => {
        if (!current()) return;
        if (id) this.lastEventId = id;
        this.client.onPosition(id);
      },
      retry: (ms) => (this.retryMs = ms),
      opened: () => current() && this.onOpened(),
      failed: (error, info) => current() && this.onFailed(error, info),
    };
    this.requested = new Set(this.channels);
    const channels = this.client.fixed ? [] : [...this.channels];
    connection = open(this.client, channels, this.lastEventId, sink);
    this.connection = connection;
  }

  onRaw(raw, sse) {
    const event = raw.event || "message";
    const data = sse && CONTROL.has(event) ? safeJson(raw.data) : raw.data;
    switch (event) {
      case "connected":
        this.onOpened();
        this.connectionId = (data && data.connectionId) || null;
        this.serverChannels = new Set((data && data.channels) || []);
        this.reconcile();
        this.scheduleRefresh();
        this.client.emit("connected", data);
        return;
      case "reset":
        if (raw.id) this.lastEventId = raw.id;
        this.client.onReset({ ...(data || {}), id: raw.id || null });
        return;
      case "dropped":
        this.client.emit("dropped", data);
        return;
      case "closed":
        // Token expired on the hub (a refresh did not come in time): reconnect with a fresh one.
        this.client.token = this.client.getToken ? null : this.client.token;
        if (!this.client.getToken) {
          this.client.emit("error", { message: "the token expired", reason: data && data.reason });
          this.stopForGood();
          return;
        }
        this.reconnect(0);
        return;
      case "unsubscribed":
        if (data && data.reason) {
          this.channels.delete(data.channel);
          this.serverChannels.delete(data.channel);
          this.client.onUnsubscribed(data);
        }
        return;
      case "subscribed":
        return;
      case "error":
        if (!sse) this.client.emit("error", data);
        return;
      default: {
        const message = toMessage(raw, sse);
        if (message.id) this.lastEventId = message.id;
        this.client.onMessage(message);
      }
    }
  }

  /** The hub accepted the stream (a 200 event stream, or its `connected` event). */
  onOpened() {
    this.opened = true;
    this.failures = 0;
    this.client.setState("open");
  }

  /**
   * After `connected`: apply what the app changed while the stream was opening. Channels the
   * hub added of its own (a user's or a room's channel, `broadcast` by default) are left alone.
   */
  reconcile() {
    if (this.client.fixed) return;
    const had = new Set([...this.requested, ...this.serverChannels]);
    for (const c of this.channels) if (!had.has(c)) this.change(c, true);
    for (const c of this.requested) if (!this.channels.has(c)) this.change(c, false);
  }

  onFailed(error, { status }) {
    if (this.connection) this.connection.close();
    this.connection = null;
    if (status === 401 && this.client.getToken) {
      this.client.token = null;
      this.client.emit("error", { status, message: error.message });
      this.reconnect(this.backoff());
      return;
    }
    if (status && status >= 400 && status < 500 && status !== 408 && status !== 429) {
      this.client.emit("error", { status, message: error.message });
      this.stopForGood();
      return;
    }
    if (!this.opened) {
      this.failures += 1;
      if (this.failures >= FAILURES_BEFORE_FALLBACK && this.transportIndex < this.client.transports.length - 1) {
        this.transportIndex += 1;
        this.failures = 0;
      }
    }
    this.client.emit("error", { status, message: error && error.message });
    this.reconnect(this.backoff());
  }

  backoff() {
    const base = this.opened ? this.retryMs : this.retryMs * 2 ** Math.min(this.failures, 5);
    return withJitter(Math.min(base, MAX_RETRY_MS));
  }

  reconnect(delay) {
    if (this.connection) this.connection.close();
    this.connection = null;
    this.connectionId = null;
    if (this.stopped) return;
    this.client.setState("connecting");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  stopForGood() {
    this.stop();
    this.client.setState("closed");
  }

  /** Posts a fresh token to the live stream before the current one expires. */
  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const client = this.client;
    if (!client.getToken || !client.token) return;
    const exp = tokenExpiry(client.token);
    if (exp === null) return;
    const wait = Math.max(0, refreshAt(exp, Date.now()) - Date.now());
    this.refreshTimer = setTimeout(() => this.refresh(), wait);
  }

  async refresh() {
    const client = this.client;
    let token;
    try {
      token = await client.getToken();
    } catch (error) {
      client.emit("error", { message: `getToken failed: ${error && error.message}` });
      this.refreshTimer = setTimeout(() => this.refresh(), DEFAULT_RETRY_MS);
      return;
    }
    if (this.stopped) return;
    client.token = token;
    if (!this.connectionId || (this.connection && this.connection.kind === "poll")) {
      this.scheduleRefresh();
      return;
    }
    try {
      const response = await client.fetch(joinUrl(client.url, "token", []), {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        credentials: client.credentials,
        body: JSON.stringify({ connectionId: this.connectionId }),
      });
      if (!response.ok && response.status !== 404) {
        const body = await response.json().catch(() => ({}));
        client.emit("error", { status: response.status, message: body.error || `HTTP ${response.status}` });
      }
    } catch (error) {
      client.emit("error", { message: String(error && error.message) });
    }
    this.scheduleRefresh();
  }
}

function safeJson(text) {
  if (typeof text !== "string") return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// ---------------------------------------------------------------------------------------------
// Sharing one stream between tabs.

function randomId() {
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/** Messages only a leader sends: a follower takes them from the leader it follows only. */
const FROM_LEADER = new Set(["leader", "beat", "event", "position", "reset", "state", "unsubscribed"]);

/**
 * The tab-sharing side of a client: joins the group on a BroadcastChannel, competes for the
 * leader lock, and when it holds it runs the client's Stream with the union of every tab's
 * channels and relays what arrives.
 *
 * A leader announces itself every BEAT_MS. A follower that hears nothing from it for
 * LEADER_SILENCE_MS (a frozen or hung tab keeps its lock) steals the lock and leads, resuming
 * from the last id it saw. Each lead has a term, one more than the highest seen: followers take
 * relays from the tab of the newest term only, and a leader that hears a newer one, or whose
 * lock is stolen, steps down and closes its stream.
 */
class Share {
  constructor(client, env) {
    this.client = client;
    this.env = env;
    this.tab = randomId();
    this.name = `sluice:${client.url}:${client.path}`;
    this.channel = new env.BroadcastChannel(this.name);
    this.tabs = new Map(); // tab → channels
    this.leader = false;
    this.closed = false;
    this.hold = null; // the lock this tab leads with: {release}
    this.term = 0; // the newest lead this tab knows of
    this.leaderTab = null; // the tab that leads it
    this.lastBeat = Date.now();
    this.queued = false; // a plain (non-stealing) lock request is pending
    this.stealTimer = null;
    this.beatTimer = null;
    this.channel.onmessage = (e) => this.onMessage(e.data);
    this.send({ type: "channels", tab: this.tab, channels: [...client.wanted()] });
    this.send({ type: "hello", tab: this.tab });
    this.abort = new AbortController();
    this.request(false);
    this.watchTimer = setInterval(() => this.watch(), WATCH_MS);
  }

  send(message) {
    if (!this.closed) this.channel.postMessage({ ...message, from: this.tab, term: this.term });
  }

  union() {
    const all = new Set(this.client.wanted());
    for (const channels of this.tabs.values()) for (const c of channels) all.add(c);
    return all;
  }

  /** Asks for the leader lock: in turn, or (`steal`) from a leader that went silent. */
  request(steal) {
    const hold = { release: null };
    const options = steal ? { steal: true } : { signal: this.abort.signal };
    if (!steal) this.queued = true;
    const done = () => {
      if (!steal) this.queued = false;
      // Stolen (the held lock's request rejects), or released: no longer leading with it.
      if (this.hold === hold) this.stepDown();
    };
    this.env.navigator.locks.request(this.name, options, () => this.lead(hold, steal)).then(done, done);
  }

  async lead(hold, steal) {
    if (!steal) this.queued = false;
    if (this.closed || this.hold) return;
    clearTimeout(this.stealTimer);
    this.stealTimer = null;
    this.hold = hold;
    this.leader = true;
    this.term += 1;
    this.leaderTab = this.tab;
    this.send({ type: "leader", tab: this.tab });
    this.beatTimer = setInterval(() => this.send({ type: "beat" }), BEAT_MS);
    // Channels are known from earlier broadcasts; a moment lets any late tab answer `leader`.
    await new Promise((resolve) => setTimeout(resolve, TAKEOVER_GATHER_MS));
    if (this.closed || this.hold !== hold) return;
    if (steal) this.send({ type: "leader", tab: this.tab });
    const stream = this.client.stream;
    stream.channels = this.union();
    stream.start(this.client.lastSeen);
    await new Promise((resolve) => (hold.release = resolve));
  }

  /** Stops leading: the stream closes, and this tab waits in turn for the lock again. */
  stepDown() {
    const hold = this.hold;
    if (!hold) return;
    this.hold = null;
    this.leader = false;
    clearInterval(this.beatTimer);
    this.client.stream.stop();
    this.lastBeat = Date.now();
    if (hold.release) hold.release();
    if (!this.queued && !this.closed) this.request(false);
  }

  /** On a follower: steal the lock from a leader silent for LEADER_SILENCE_MS. */
  watch() {
    if (this.closed || this.leader || this.stealTimer) return;
    if (Date.now() - this.lastBeat < LEADER_SILENCE_MS) return;
    // A random delay, so that of several followers one steals and the others hear it lead.
    this.stealTimer = setTimeout(() => {
      this.stealTimer = null;
      if (this.closed || this.leader || Date.now() - this.lastBeat < LEADER_SILENCE_MS) return;
      this.lastBeat = Date.now();
      this.request(true);
    }, Math.random() * TAKEOVER_JITTER_MS);
  }

  /** This tab's channels changed. */
  update(channels) {
    this.send({ type: "channels", tab: this.tab, channels: [...channels] });
    if (this.leader) this.client.stream.setChannels(this.union());
  }

  /** Called on the leader for what its stream produced: relay it. */
  relay(message) {
    this.send(message);
  }

  onMessage(message) {
    if (!message || this.closed) return;
    if (FROM_LEADER.has(message.type)) {
      if (message.term < this.term) return; // a former leader's, sent before it learnt
      // Two followers stole at once, and both lead this term: the lock decides, the one it was
      // taken from steps down when its request rejects, and the other announces itself again.
      if (this.leader && message.term === this.term) return;
      if (message.type === "leader" || message.term > this.term || !this.leaderTab) {
        this.stepDown();
        this.term = message.term;
        this.leaderTab = message.from;
      } else if (message.from !== this.leaderTab) {
        return;
      }
      this.lastBeat = Date.now();
      if (message.type === "leader") {
        this.send({ type: "channels", tab: this.tab, channels: [...this.client.wanted()] });
      } else if (message.type !== "beat") {
        this.client.onRelayed(message);
      }
      return;
    }
    switch (message.type) {
      case "channels":
        this.tabs.set(message.tab, message.channels);
        if (this.leader) this.client.stream.setChannels(this.union());
        return;
      case "bye":
        this.tabs.delete(message.tab);
        if (this.leader) this.client.stream.setChannels(this.union());
        return;
      case "hello":
        this.send({ type: "channels", tab: this.tab, channels: [...this.client.wanted()] });
        if (this.leader) {
          this.send({ type: "beat" });
          this.send({ type: "state", state: this.client.state });
        }
        return;
      default:
    }
  }

  close() {
    if (this.closed) return;
    this.send({ type: "bye", tab: this.tab });
    this.closed = true;
    clearInterval(this.watchTimer);
    clearInterval(this.beatTimer);
    clearTimeout(this.stealTimer);
    this.channel.close();
    this.abort.abort();
    const hold = this.hold;
    this.hold = null;
    this.leader = false;
    if (hold && hold.release) hold.release();
  }
}

// ---------------------------------------------------------------------------------------------
// The public client.

/** A Sluice client: subscriptions, events and state over one stream (or one per origin). */
export class Sluice {
  /**
   * @param {string} url the hub's base URL (absolute, or relative to the page).
   * @param {object} [options] see docs/client.md.
   */
  constructor(url, options = {}) {
    const env = options.env || globalThis;
    const base = typeof env.location === "object" && env.location ? env.location.href : undefined;
    this.url = new URL(url || "/", base).href.replace(/\/+$/, "") + "/";
    this.path = (options.path || "/events").replace(/^\/+/, "");
    // The path names the stream's channels (/metrics, /chat/<room>): none are sent or changed.
    this.fixed = Boolean(options.fixed);
    this.token = options.token || null;
    this.getToken = options.getToken || null;
    this.credentials = options.credentials || "same-origin";
    this.eventNames = options.events || ["notification"];
    this.fetch = options.fetch || (env.fetch ? env.fetch.bind(env) : null);
    this.EventSource = env.EventSource;
    this.WebSocket = env.WebSocket;
    const available = availableTransports(env);
    this.transports = options.transports ? options.transports.filter((t) => available.includes(t)) : available;
    if (this.transports.length === 0) throw new Error("sluice: no transport available here");
    this.handlers = new Map(); // channel → Set(handler)
    this.listeners = new Map(); // event type → Set(fn)
    this.state = "connecting";
    // The last event id this tab saw (own stream or relayed); where a new stream resumes.
    this.lastSeen = options.lastEventId || null;
    this.closedForGood = false;
    this.stream = new Stream(this);
    const canShare = options.shareAcrossTabs && env.BroadcastChannel && env.navigator && env.navigator.locks;
    this.share = canShare ? new Share(this, env) : null;
    if (!this.share) {
      queueMicrotask(() => {
        if (!this.closedForGood) this.stream.start(this.lastSeen);
      });
    }
    if (this.share && typeof env.addEventListener === "function") {
      env.addEventListener("pagehide", () => this.close());
    }
  }

  /** Channels this tab subscribes to. */
  wanted() {
    return new Set(this.handlers.keys());
  }

  /** Calls `handler({id, channel, event, data})` for each event of `channel`. */
  subscribe(channel, handler) {
    if (typeof channel !== "string" || channel === "") throw new TypeError("sluice: a channel name is required");
    let set = this.handlers.get(channel);
    const added = !set;
    if (!set) {
      set = new Set();
      this.handlers.set(channel, set);
    }
    const entry = { handler };
    set.add(entry);
    if (added) this.channelsChanged();
    return {
      channel,
      unsubscribe: () => {
        const current = this.handlers.get(channel);
        if (!current || !current.delete(entry)) return;
        if (current.size === 0) {
          this.handlers.delete(channel);
          this.channelsChanged();
        }
      },
    };
  }

  channelsChanged() {
    if (this.closedForGood) return;
    if (this.share) this.share.update(this.wanted());
    else this.stream.setChannels(this.wanted());
  }

  /** Listens to `reset`, `state`, `error`, `dropped`, `unsubscribed` or `connected`; returns a remover. */
  on(type, fn) {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  emit(type, value) {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /** Ends the stream (and, if this tab leads, hands the lead to another tab). */
  close() {
    if (this.closedForGood) return;
    this.closedForGood = true;
    this.stream.stop();
    if (this.share) this.share.close();
    this.setState("closed");
  }

  // -- called by the Stream (and relayed to followers when leading) --

  setState(state) {
    if (this.closedForGood && state !== "closed") return;
    if (state === this.state) return;
    this.state = state;
    this.emit("state", state);
    if (this.share && this.share.leader) this.share.relay({ type: "state", state });
  }

  async ensureToken() {
    if (!this.getToken) return;
    const exp = tokenExpiry(this.token);
    if (this.token && (exp === null || exp - Date.now() > 1000)) return;
    try {
      this.token = await this.getToken();
    } catch (error) {
      this.emit("error", { message: `getToken failed: ${error && error.message}` });
    }
  }

  onMessage(message) {
    if (this.share && this.share.leader) this.share.relay({ type: "event", message });
    this.deliver(message);
  }

  onPosition(id) {
    if (id) this.lastSeen = id;
    if (this.share && this.share.leader) this.share.relay({ type: "position", id });
  }

  onReset(info) {
    if (info.id) this.lastSeen = info.id;
    if (this.share && this.share.leader) this.share.relay({ type: "reset", info });
    this.emit("reset", info);
  }

  onUnsubscribed(info) {
    if (this.share && this.share.leader) this.share.relay({ type: "unsubscribed", info });
    this.endChannel(info);
  }

  endChannel(info) {
    if (!this.handlers.has(info.channel)) return;
    this.handlers.delete(info.channel);
    if (this.share) this.share.update(this.wanted());
    this.emit("unsubscribed", info);
  }

  /** A follower's view of what the leader relayed. */
  onRelayed(message) {
    switch (message.type) {
      case "event":
        this.deliver(message.message);
        return;
      case "position":
        if (message.id && (!this.lastSeen || isAfter(message.id, this.lastSeen))) this.lastSeen = message.id;
        return;
      case "reset":
        if (message.info.id) this.lastSeen = message.info.id;
        this.emit("reset", message.info);
        return;
      case "state":
        this.setState(message.state);
        return;
      case "unsubscribed":
        this.endChannel(message.info);
        return;
      default:
    }
  }

  /** Hands a message to the handlers of its channel, once per id. */
  deliver(message) {
    if (message.id) {
      if (this.lastSeen && !isAfter(message.id, this.lastSeen)) return;
      this.lastSeen = message.id;
    }
    let targets;
    if (message.channel !== null && message.channel !== undefined) {
      targets = [this.handlers.get(message.channel)];
    } else {
      // Text events carry no channel: every subscription of the stream gets them.
      targets = [...this.handlers.values()];
    }
    for (const set of targets) {
      if (!set) continue;
      for (const { handler } of [...set]) {
        try {
          handler(message);
        } catch (error) {
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    }
  }
}

export default Sluice;

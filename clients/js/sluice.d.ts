// Types of sluice.js, the browser client of a Sluice hub (see docs/client.md).

/** One event as the application sees it. */
export interface Message<T = unknown> {
  /** The hub's event id (`<epoch>-<seq>`), or null for events outside the sequence. */
  id: string | null;
  /** The channel, or null for a text event on a stream of several channels. */
  channel: string | null;
  /** The event name (`message` when the publisher gave none). */
  event: string;
  /** The payload: parsed JSON where the event carried JSON, else the text. */
  data: T;
}

/** What `reset` hands the application: events were lost for good; refetch your state. */
export interface ResetInfo {
  reason: "malformed" | "unknown" | "expired" | string;
  lastEventId?: string;
  /** The position the stream continues from. */
  id: string | null;
}

/** A channel the hub took off the stream: the refreshed token does not allow it. */
export interface UnsubscribedInfo {
  channel: string;
  reason: "not-granted" | string;
}

export interface ErrorInfo {
  status?: number;
  channel?: string;
  message: string;
}

export type State = "connecting" | "open" | "closed";
export type TransportName = "sse" | "eventsource" | "websocket" | "poll";

export interface Options {
  /** A JWT sent with the stream and subscription changes. */
  token?: string;
  /** Returns a fresh JWT; called before the current one expires and after a 401. */
  getToken?: () => string | Promise<string>;
  /** One stream for all tabs of this origin (Web Locks + BroadcastChannel), where available. */
  shareAcrossTabs?: boolean;
  /** Resume from this event id (one the app kept, e.g. across a page reload). */
  lastEventId?: string;
  /** The stream path (default `/events`). */
  path?: string;
  /** The path names the stream's channels (`/metrics`, `/chat/<room>`): send and change none. */
  fixed?: boolean;
  /** Transports to try, in order (default: every one this environment has). */
  transports?: TransportName[];
  /** Event names an EventSource listens to besides `message` (default `["notification"]`). */
  events?: string[];
  /** `credentials` of fetch requests (default `same-origin`). */
  credentials?: RequestCredentials;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
}

export interface Subscription {
  readonly channel: string;
  /** Stops this handler; the channel leaves the stream when its last handler goes. */
  unsubscribe(): void;
}

export declare class Sluice {
  constructor(url: string, options?: Options);
  readonly state: State;
  subscribe<T = unknown>(channel: string, handler: (message: Message<T>) => void): Subscription;
  on(type: "reset", fn: (info: ResetInfo) => void): () => void;
  on(type: "state", fn: (state: State) => void): () => void;
  on(type: "error", fn: (error: ErrorInfo) => void): () => void;
  on(type: "dropped", fn: (info: { count: number; reason: string }) => void): () => void;
  on(type: "unsubscribed", fn: (info: UnsubscribedInfo) => void): () => void;
  /** The data of this tab's own stream's `connected` event (`connectionId`, `channels`, ...). */
  on(type: "connected", fn: (data: Record<string, unknown>) => void): () => void;
  close(): void;
}

/** Parses `text/event-stream` text fed in chunks. */
export declare class EventStreamParser {
  constructor(onEvent: (event: { id: string; event?: string; data?: string; position?: true }) => void);
  lastEventId: string;
  retry: number | null;
  push(text: string): void;
}

export declare function parseId(id: string): { epoch: string; seq: number } | null;
export declare function isAfter(id: string, last: string | null): boolean;
export declare function tokenExpiry(token: string): number | null;
export declare function refreshAt(expMs: number, nowMs: number): number;
export declare function toMessage(raw: object, sse: boolean): Message;
export declare function availableTransports(env: object): TransportName[];

export default Sluice;

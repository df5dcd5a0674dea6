// Types of wshub.js, the browser client of a wshub hub (docs/client.md).

/** A topic's place in its stream: the epoch and the last seq delivered. */
export interface Position {
  epoch: string;
  seq: number;
}

/** What a handler receives beside the publication's data. */
export interface MessageMeta {
  topic: string;
  /** The publication's number in its topic, counting from 1 per epoch. */
  seq: number;
  /** The epoch `seq` counts in (undefined from a hub without streams). */
  epoch: string | undefined;
  /** A retained value sent on subscribing (`"retained":true`), not a new publication. */
  retained: boolean;
  /** One of the publications missed while disconnected, replayed on reconnecting. */
  recovered: boolean;
}

export type Handler = (data: unknown, meta: MessageMeta) => void;

/** Every change of the connection's state. */
export type Status =
  | { state: "connecting"; attempt: number; url: string }
  | {
      state: "open";
      /** The hub's subscription set right after the handshake. */
      topics: string[];
      rejected: string[];
      /** Per topic asked `since`: whether what was missed is being replayed. */
      recovered: Record<string, boolean>;
    }
  | {
      state: "reconnecting";
      /** Milliseconds until the next attempt. */
      delay: number;
      /** Why the last connection ended ("ping timeout", "handshake failed", the close reason...). */
      reason: string;
      /** The close code (1006 when there was none). */
      code: number;
      /** Attempts since the last stable connection, this one included. */
      attempt: number;
    }
  | { state: "closed"; code: number; reason: string };

/** Per topic asked `since` on a (re)subscribe. */
export interface Recovery {
  topic: string;
  /** true: the missed publications follow (meta.recovered); false: reload this topic's state. */
  recovered: boolean;
  /** The topic's stream now: its epoch and newest seq. */
  epoch: string;
  seq: number;
  /** How many publications are replayed (null when not recovered). */
  missed: number | null;
  /** The epoch is not the one asked: the hub restarted or forgot the topic. */
  epochChanged: boolean;
}

/** An error frame of the hub, a refused topic, or a handler that threw. */
export interface HubError {
  /** The hub's error code ("invalid_since", "rate_limited", ...), or "rejected", "handler", "invalid_frame". */
  error: string;
  message: string;
  /** For "rejected": the topic and the hub's reason ("not_allowed", "hub_full", ...). */
  topic?: string;
  reason?: string;
  /** For "handler": what the handler threw. */
  cause?: unknown;
}

export interface Options {
  /** Topics to subscribe to (kept across reconnects). Default []. */
  topics?: string[];
  /** Positions to resume from, e.g. saved by an earlier page. */
  since?: Record<string, Position>;
  /** A JWT for a hub with jwt_key, sent as the subprotocol "bearer.<token>"; a
   * function is called (and awaited) before every connection attempt. */
  token?: string | null | (() => string | null | Promise<string | null>);
  onStatus?: (status: Status) => void;
  onRecovery?: (recovery: Recovery) => void;
  /** The hub's subscription set changed (an answer, or [] when the connection is lost). */
  onSubscribed?: (topics: string[]) => void;
  onError?: (error: HubError) => void;
  /** Ceiling of the first retry's random delay, ms. Default 500. */
  reconnectBaseMs?: number;
  /** The ceiling stops doubling here, ms. Default 30000. */
  reconnectMaxMs?: number;
  /** Ping after this long without a frame, ms. Default 20000. */
  pingIntervalMs?: number;
  /** No frame this long after a ping: the connection is dead, ms. Default 10000. */
  pongTimeoutMs?: number;
  /** From opening the socket to the hub's `connected`, ms. Default 15000. */
  connectTimeoutMs?: number;
  /** Reconnect even after a close that refuses the client (1008, 4400-4499). Default false. */
  retryRefused?: boolean;
  /** Longest query for topics and since; the rest is subscribed by message. Default 4000. */
  maxQueryChars?: number;
  /** The WebSocket class to use. Default globalThis.WebSocket. */
  WebSocket?: new (url: string, protocols?: string[]) => WebSocket;
}

export interface Hub {
  readonly state: "connecting" | "open" | "reconnecting" | "closed";
  /** The topics the app wants, sorted. */
  readonly topics: string[];
  /** The hub's subscription set for this connection, from its last answer. */
  readonly subscribed: string[];
  position(topic: string): Position | undefined;
  /** Returns a function that removes the handler. "*" receives every topic. */
  on(topic: string, handler: Handler): () => void;
  subscribe(topics: string[] | string): void;
  unsubscribe(topics: string[] | string): void;
  /** Round trip in ms. */
  ping(): Promise<number>;
  /** Sends a newer token for this connection; the hub's answer. */
  refresh(token: string): Promise<{ exp: number; topics: string[] }>;
  close(code?: number, reason?: string): void;
}

export const DEFAULTS: Readonly<Required<Omit<Options, "since" | "token" | "onStatus" | "onRecovery" | "onSubscribed" | "onError" | "WebSocket">>>;

export function connect(url: string | URL, options?: Options): Hub;

/** A random delay in [0, min(maxMs, baseMs * 2^attempt)). */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random?: () => number): number;

/** Whether a close refuses the client (no reconnect unless retryRefused). */
export function isRefusal(code: number, reason: string): boolean;

/** The handshake URL with `topics` and `since` in its query, and which topics it holds. */
export function handshakeUrl(
  base: string | URL,
  topics: string[],
  positions: Map<string, Position>,
  maxQueryChars: number,
): { url: string; topics: string[] };

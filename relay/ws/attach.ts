/**
 * The messaging half of the relay: WebSocket connections on /v1/ws, authenticated on `upgrade` (401
 * before a socket is accepted), messages stored in the mailbox before the sender hears "accepted", then
 * pushed to the recipient's connections here and, through the bus, on other relay instances.
 * The wire format is protocol/wire.ts, documented in protocol/README.md ("WebSocket").
 */
import type { IncomingMessage, Server as HttpServer } from "node:http";
import { STATUS_CODES } from "node:http";
import type { Server as HttpsServer } from "node:https";
import type { Duplex } from "node:stream";
import { performance } from "node:perf_hooks";
import type pino from "pino";
import type { Registry } from "prom-client";
import { WebSocket, WebSocketServer, type RawData } from "ws";
import { isChatError, type ErrorCode } from "../../protocol/errors";
import { CLOSE_CODES, ClientFrame, MessageId, type ServerFrame } from "../../protocol/wire";
import type { MessageBus, RoutedMessage } from "../bus/bus";
import { verifySessionToken, type SessionClaims } from "../sessions";
import type { Mailbox } from "../storage/mailbox";
import { messagingMetrics } from "./metrics";
import { createTokenBucket, type TokenBucket } from "./token-bucket";

export const WS_PATH = "/v1/ws";

export interface MessagingLimits {
  /** Largest frame in bytes; a bigger one closes the socket with 1009. */
  maxFrameBytes: number;
  /** How long a message waits in the mailbox. */
  mailboxTtlMs: number;
  /** Send frames per second per connection (token bucket), then RATE_LIMITED. Default 100. */
  messagesPerSecond?: number;
  /** Bucket size for send frames. Default 2 × messagesPerSecond. */
  messageBurst?: number;
  /** Any frame (acks, bad frames) per second per connection. Default 10 × messagesPerSecond. */
  framesPerSecond?: number;
  /** A peer that does not answer a ping within this interval is dropped. Default 30 s. */
  pingIntervalMs?: number;
  /** How often expired mailbox messages are deleted. Default 60 s. */
  purgeIntervalMs?: number;
  /** Backlog messages fetched per query on connect. Default 500. */
  backlogPageSize?: number;
  /** Connections this instance accepts; beyond it the upgrade answers 503. Default 10,000. */
  maxConnections?: number;
  /** A connection whose unsent output exceeds this is closed with 1013 (the mailbox keeps its messages). Default 8 MiB. */
  maxBufferedBytes?: number;
  /** How long a connection waits for its bus subscription before sending the backlog anyway. Default 2 s. */
  busSubscribeTimeoutMs?: number;
}

export const DEFAULT_MESSAGES_PER_SECOND = 100;
export const DEFAULT_PING_INTERVAL_MS = 30_000;
export const DEFAULT_PURGE_INTERVAL_MS = 60_000;

export interface Messaging {
  close(): Promise<void>;
  connectionCount(): number;
  /** Runs the mailbox purge now (it also runs every purgeIntervalMs); returns how many were purged. */
  purgeExpired(): Promise<number>;
}

interface Connection {
  ws: WebSocket;
  username: string;
  claims: SessionClaims;
  alive: boolean;
  /** true while the backlog is being sent; live messages wait in `held` meanwhile */
  syncing: boolean;
  held: RoutedMessage[];
  /** `${from}\n${id}` of messages pushed on this connection and not yet acknowledged: no double push */
  inflight: Set<string>;
  /** keys acknowledged while syncing: forgotten only after `held` is flushed, so a held copy is not pushed again */
  ackedWhileSyncing: string[];
  sends: TokenBucket;
  frames: TokenBucket;
  expiryTimer?: NodeJS.Timeout;
  unsubscribe?: () => Promise<void>;
  closed: boolean;
}

const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export function attachMessaging(params: {
  server: HttpServer | HttpsServer;
  sessionSecret: Uint8Array;
  mailbox: Mailbox;
  bus?: MessageBus;
  logger: pino.Logger;
  clock: () => number;
  metrics: Registry;
  limits: MessagingLimits;
}): Messaging {
  const { server, sessionSecret, mailbox, bus, clock } = params;
  const logger = params.logger.child({ component: "ws" });
  const limits = params.limits;
  if (!(Number.isInteger(limits.maxFrameBytes) && limits.maxFrameBytes > 0)) throw new Error("limits.maxFrameBytes must be a positive integer");
  if (!(limits.mailboxTtlMs > 0)) throw new Error("limits.mailboxTtlMs must be positive");
  const messagesPerSecond = limits.messagesPerSecond ?? DEFAULT_MESSAGES_PER_SECOND;
  const messageBurst = limits.messageBurst ?? 2 * messagesPerSecond;
  const framesPerSecond = limits.framesPerSecond ?? 10 * messagesPerSecond;
  const pingIntervalMs = limits.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS;
  const purgeIntervalMs = limits.purgeIntervalMs ?? DEFAULT_PURGE_INTERVAL_MS;
  const backlogPageSize = limits.backlogPageSize ?? 500;
  const maxConnections = limits.maxConnections ?? 10_000;
  const maxBufferedBytes = limits.maxBufferedBytes ?? 8 * 1024 * 1024;
  const busSubscribeTimeoutMs = limits.busSubscribeTimeoutMs ?? 2_000;

  const metrics = messagingMetrics(params.metrics, () => mailbox.depth());
  const connections = new Set<Connection>();
  const byUser = new Map<string, Set<Connection>>();
  let closing = false;

  // Storage and bus failures can come once per message: log them at most once per 5 s.
  let lastFailureLog = 0;
  const logFailure = (what: string, error: unknown) => {
    const now = performance.now();
    if (now - lastFailureLog < 5_000) return;
    lastFailureLog = now;
    logger.warn({ err: { message: error instanceof Error ? error.message : String(error) } }, what);
  };

  // perMessageDeflate off: ciphertext does not compress, and inflating is a decompression-bomb risk.
  const wss = new WebSocketServer({ noServer: true, maxPayload: limits.maxFrameBytes, perMessageDeflate: false, clientTracking: false });

  // ---------------------------------------------------------------------------------------------
  // sending
  // ---------------------------------------------------------------------------------------------

  const send = (conn: Connection, frame: ServerFrame | string) => {
    if (conn.ws.readyState !== WebSocket.OPEN) return;
    conn.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  };

  const sendError = (conn: Connection, code: ErrorCode, message: string, extra: { id?: string; retryable?: boolean; retryAfterMs?: number } = {}) => {
    metrics.rejected.inc({ code });
    send(conn, { type: "error", code, message, ...extra });
  };

  const messageText = (m: RoutedMessage) =>
    JSON.stringify({ type: "message", id: m.id, from: m.from, envelope: m.envelope, receivedAt: m.receivedAt });

  /** Pushes a live message to one connection (held back while its backlog is being sent). */
  const push = (conn: Connection, m: RoutedMessage, text?: string) => {
    if (conn.closed) return;
    if (conn.syncing) {
      conn.held.push(m);
      return;
    }
    const key = `${m.from}\n${m.id}`;
    if (conn.inflight.has(key)) return;
    if (conn.ws.bufferedAmount > maxBufferedBytes) {
      // A reader this slow would make us buffer without bound; the message is safe in the mailbox.
      conn.ws.close(CLOSE_CODES.tryAgainLater, "slow consumer: reconnect to fetch the mailbox");
      return;
    }
    conn.inflight.add(key);
    send(conn, text ?? messageText(m));
    metrics.delivered.inc();
  };

  const routeLocal = (m: RoutedMessage) => {
    const conns = byUser.get(m.to);
    if (!conns) return;
    const text = messageText(m);
    for (const conn of conns) push(conn, m, text);
  };

  // ---------------------------------------------------------------------------------------------
  // client frames
  // ---------------------------------------------------------------------------------------------

  const handleSend = (conn: Connection, frame: { id: string; to: string; envelope: string }) => {
    const receivedAt = clock();
    const message = {
      recipient: frame.to,
      sender: conn.username, // the session's user, never client input
      id: frame.id,
      envelope: frame.envelope,
      receivedAt,
      expiresAt: receivedAt + limits.mailboxTtlMs,
    };
    mailbox.put(message).then(
      (result) => {
        metrics.relayed.inc();
        send(conn, { type: "accepted", id: frame.id, status: result.outcome === "acked" ? "delivered" : "stored" });
        if (result.outcome !== "new") return; // a re-send: its first copy was routed already
        metrics.stored.inc();
        const routed: RoutedMessage = { to: frame.to, from: conn.username, id: frame.id, envelope: frame.envelope, receivedAt };
        routeLocal(routed);
        bus?.publish(routed).catch((error) => logFailure("bus publish failed; the recipient gets the message from the mailbox", error));
      },
      (error) => {
        logFailure("mailbox write failed", error);
        sendError(conn, "STORAGE_UNAVAILABLE", "the relay cannot store messages right now; send again later", { id: frame.id, retryable: true });
      },
    );
  };

  const handleAck = (conn: Connection, frame: { id: string; from: string }) => {
    metrics.acked.inc();
    const key = `${frame.from}\n${frame.id}`;
    // Only the session's own mailbox: a user cannot acknowledge (erase) someone else's messages.
    mailbox.ack({ recipient: conn.username, sender: frame.from, id: frame.id }).then(
      () => {
        if (conn.syncing) conn.ackedWhileSyncing.push(key);
        else conn.inflight.delete(key);
      },
      (error) => {
        logFailure("mailbox ack failed", error);
        sendError(conn, "STORAGE_UNAVAILABLE", "the relay cannot record the acknowledgement right now; acknowledge again later", {
          id: frame.id,
          retryable: true,
        });
      },
    );
  };

  const describeIssue = (issue: { path: PropertyKey[]; message: string }) => `${issue.path.map(String).join(".") || "frame"}: ${issue.message}`;

  const onFrame = (conn: Connection, data: RawData, isBinary: boolean) => {
    const now = performance.now();
    const wait = conn.frames.take(now);
    if (wait > 0) return sendError(conn, "RATE_LIMITED", "too many frames", { retryable: true, retryAfterMs: wait });
    if (isBinary) return sendError(conn, "BAD_REQUEST", "frames are JSON text, not binary");
    let json: unknown;
    try {
      json = JSON.parse(data.toString());
    } catch {
      return sendError(conn, "BAD_REQUEST", "frame is not valid JSON");
    }
    const parsed = ClientFrame.safeParse(json);
    if (!parsed.success) {
      const rawId = (json as { id?: unknown } | null)?.id;
      const id = MessageId.safeParse(rawId).success ? (rawId as string) : undefined;
      const issue = parsed.error.issues[0];
      const code: ErrorCode = issue.path[0] === "to" || issue.path[0] === "from" ? "INVALID_USERNAME" : "BAD_REQUEST";
      return sendError(conn, code, describeIssue(issue), id === undefined ? {} : { id });
    }
    const frame = parsed.data;
    if (frame.type === "ack") return handleAck(conn, frame);
    const sendWait = conn.sends.take(now);
    if (sendWait > 0) {
      return sendError(conn, "RATE_LIMITED", "too many messages; send again later", { id: frame.id, retryable: true, retryAfterMs: sendWait });
    }
    handleSend(conn, frame);
  };

  // ---------------------------------------------------------------------------------------------
  // connections
  // ---------------------------------------------------------------------------------------------

  const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

  const sendBacklog = async (conn: Connection) => {
    if (bus) {
      const subscribed = bus.subscribe(conn.username, (m) => push(conn, m));
      subscribed.then(
        (unsubscribe) => {
          if (conn.closed) unsubscribe().catch(() => undefined);
          else conn.unsubscribe = unsubscribe;
        },
        (error) => logFailure("bus subscribe failed; live messages from other relays wait in the mailbox", error),
      );
      // Subscribe before reading the mailbox, so that nothing falls between the two; but do not wait
      // for a bus that is down: the mailbox alone is correct, only slower.
      await Promise.race([subscribed.catch(() => undefined), sleep(busSubscribeTimeoutMs)]);
    }
    let afterSeq: string | undefined;
    let count = 0;
    for (;;) {
      const page = await mailbox.pending({ recipient: conn.username, now: clock(), afterSeq, limit: backlogPageSize });
      if (conn.closed) return;
      for (const m of page) {
        const key = `${m.sender}\n${m.id}`;
        if (conn.inflight.has(key)) continue;
        conn.inflight.add(key);
        send(conn, messageText({ to: m.recipient, from: m.sender, id: m.id, envelope: m.envelope, receivedAt: m.receivedAt }));
        metrics.delivered.inc();
        count++;
      }
      if (page.length < backlogPageSize) break;
      afterSeq = page[page.length - 1].seq;
      while (!conn.closed && conn.ws.bufferedAmount > maxBufferedBytes / 2) await sleep(5);
    }
    conn.syncing = false;
    send(conn, { type: "ready", pending: count });
    const held = conn.held;
    conn.held = [];
    for (const m of held) push(conn, m);
    for (const key of conn.ackedWhileSyncing) conn.inflight.delete(key);
    conn.ackedWhileSyncing = [];
  };

  /** After a bus outage: push what other instances stored meanwhile (inflight keys skip what was pushed). */
  const catchUp = async (conn: Connection) => {
    let afterSeq: string | undefined;
    for (;;) {
      const page = await mailbox.pending({ recipient: conn.username, now: clock(), afterSeq, limit: backlogPageSize });
      for (const m of page) push(conn, { to: m.recipient, from: m.sender, id: m.id, envelope: m.envelope, receivedAt: m.receivedAt });
      if (conn.closed || page.length < backlogPageSize) return;
      afterSeq = page[page.length - 1].seq;
    }
  };
  bus?.onReconnected?.(() => {
    if (closing) return;
    for (const conn of connections) {
      // a connection still syncing reads the mailbox anyway
      if (!conn.syncing) catchUp(conn).catch((error) => logFailure("mailbox catch-up after a bus outage failed", error));
    }
  });

  const onConnection = (ws: WebSocket, claims: SessionClaims) => {
    const now = performance.now();
    const conn: Connection = {
      ws,
      username: claims.sub,
      claims,
      alive: true,
      syncing: true,
      held: [],
      inflight: new Set(),
      ackedWhileSyncing: [],
      sends: createTokenBucket({ ratePerSecond: messagesPerSecond, burst: messageBurst, now }),
      frames: createTokenBucket({ ratePerSecond: framesPerSecond, burst: 2 * framesPerSecond, now }),
      closed: false,
    };
    connections.add(conn);
    let mine = byUser.get(conn.username);
    if (!mine) byUser.set(conn.username, (mine = new Set()));
    mine.add(conn);
    metrics.connections.inc();
    logger.debug({ user: conn.username }, "connected");

    ws.on("message", (data, isBinary) => {
      try {
        onFrame(conn, data, isBinary);
      } catch (error) {
        logger.error({ err: { message: error instanceof Error ? error.message : String(error) } }, "frame handler failed");
        ws.close(CLOSE_CODES.internal, "internal error");
      }
    });
    ws.on("pong", () => {
      conn.alive = true;
    });
    // ws closes the socket itself on protocol errors (1009 beyond maxPayload, 1007 invalid UTF-8, ...).
    ws.on("error", (error) => logger.debug({ user: conn.username, err: { message: error.message } }, "socket error"));
    ws.on("close", () => {
      conn.closed = true;
      connections.delete(conn);
      const set = byUser.get(conn.username);
      set?.delete(conn);
      if (set?.size === 0) byUser.delete(conn.username);
      if (conn.expiryTimer) clearTimeout(conn.expiryTimer);
      conn.unsubscribe?.().catch(() => undefined);
      metrics.connections.dec();
      logger.debug({ user: conn.username }, "disconnected");
    });

    // The session ends while connected: close 4001, the client logs in again and reconnects.
    conn.expiryTimer = setTimeout(
      () => ws.close(CLOSE_CODES.sessionExpired, "session expired"),
      Math.min(Math.max(0, claims.exp - clock()), MAX_TIMEOUT_MS),
    );
    conn.expiryTimer.unref();

    sendBacklog(conn).catch((error) => {
      logFailure("backlog read failed", error);
      sendError(conn, "STORAGE_UNAVAILABLE", "the relay cannot read the mailbox right now; reconnect later", { retryable: true });
      ws.close(CLOSE_CODES.tryAgainLater, "storage unavailable");
    });
  };

  const rejectUpgrade = (socket: Duplex, status: number, code: ErrorCode, message: string, headers: string[] = []) => {
    const body = JSON.stringify({ error: { code, message } });
    const head = [
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}`,
      "Content-Type: application/json",
      `Content-Length: ${Buffer.byteLength(body)}`,
      "Connection: close",
      ...headers,
    ];
    socket.once("finish", () => socket.destroy());
    socket.end(`${head.join("\r\n")}\r\n\r\n${body}`);
  };

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => socket.destroy());
    let pathname = "";
    try {
      pathname = new URL(req.url ?? "/", "http://relay").pathname;
    } catch {}
    if (pathname !== WS_PATH) return rejectUpgrade(socket, 404, "NOT_FOUND", `no WebSocket endpoint here; use ${WS_PATH}`);
    if (closing) return rejectUpgrade(socket, 503, "RELAY_UNREACHABLE", "relay shutting down", ["Retry-After: 1"]);
    if (connections.size >= maxConnections) {
      return rejectUpgrade(socket, 503, "RATE_LIMITED", "too many connections on this relay", ["Retry-After: 5"]);
    }
    const match = /^Bearer ([A-Za-z0-9_.~+/=-]+)$/.exec(req.headers.authorization ?? "");
    let claims: SessionClaims;
    try {
      claims = verifySessionToken({ secret: sessionSecret, token: match?.[1], now: clock() });
    } catch (error) {
      const code: ErrorCode = isChatError(error) ? error.code : "UNAUTHORIZED";
      const message = isChatError(error) ? error.message : "invalid session token";
      // RFC 6750 §3: a Bearer challenge with every 401.
      return rejectUpgrade(socket, 401, code, message, [`WWW-Authenticate: Bearer realm="eth-chat", error="invalid_token"`]);
    }
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, claims));
  };
  server.on("upgrade", onUpgrade);

  // Dead peers: a connection that did not answer the previous ping is dropped.
  const pingTimer = setInterval(() => {
    for (const conn of connections) {
      if (!conn.alive) {
        conn.ws.terminate();
        continue;
      }
      conn.alive = false;
      conn.ws.ping();
    }
  }, pingIntervalMs);
  pingTimer.unref();

  const purgeExpired = async () => {
    const n = await mailbox.purgeExpired(clock());
    metrics.purged.inc(n);
    return n;
  };
  const runPurge = () => purgeExpired().catch((error) => logFailure("mailbox purge failed", error));
  const purgeTimer = setInterval(runPurge, purgeIntervalMs);
  purgeTimer.unref();
  void runPurge();

  return {
    connectionCount: () => connections.size,
    purgeExpired,
    async close() {
      closing = true;
      server.off("upgrade", onUpgrade);
      clearInterval(pingTimer);
      clearInterval(purgeTimer);
      const open = [...connections];
      await Promise.all(
        open.map(
          (conn) =>
            new Promise<void>((resolve) => {
              if (conn.closed) return resolve();
              const timer = setTimeout(() => conn.ws.terminate(), 1_000);
              conn.ws.once("close", () => {
                clearTimeout(timer);
                resolve();
              });
              conn.ws.close(CLOSE_CODES.goingAway, "relay shutting down");
            }),
        ),
      );
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

/**
 * The messaging half of the relay: WebSocket connections on /v1/ws, authenticated on `upgrade` (401
 * before a socket is accepted), messages stored in the mailbox before the sender hears "accepted", then
 * pushed to the recipient's connections here and, through the bus, on other relay instances.
 * The wire format is protocol/wire.ts, documented in protocol/README.md ("WebSocket").
 * The jobs live beside this file: upgrade.ts (admission, auth), connection.ts (one connection's
 * state machine), router.ts (who is connected where), heartbeats.ts (dead peers), mailbox-purge.ts (expiry).
 * A session that ends (logout, or the user's key or password changed on chain) has its sockets closed with
 * 4001 on every instance: each hears the session event and re-checks the tokens of its own sockets.
 */
import type { Server as HttpServer } from "node:http";
import type { Server as HttpsServer } from "node:https";
import type pino from "pino";
import type { Registry } from "prom-client";
import { WebSocketServer } from "ws";
import { CLOSE_CODES, type GroupNotice } from "../../protocol/wire";
import { usernameHash } from "../../protocol/username";
import { selectSubprotocol, type SessionClaims, type SessionGuard } from "../sessions";
import type { SessionEvent } from "../storage/revocations";
import type { MessageBus } from "../bus/bus";
import type { Mailbox } from "../storage/mailbox";
import { Connection, type ConnectionDeps } from "./connection";
import { throttledFailureLog } from "./failure-log";
import { startHeartbeats } from "./heartbeats";
import { startMailboxPurge } from "./mailbox-purge";
import { messagingMetrics } from "./metrics";
import { createRouter } from "./router";
import { createUpgradeHandler } from "./upgrade";
import type { UserDirectory } from "./user-directory";

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
  /** Connections of one user on this instance; beyond it the upgrade answers 429. Default 8. */
  maxConnectionsPerUser?: number;
  /** Connections from one client address (upgrades being authenticated included); beyond it 429. Default 32. */
  maxConnectionsPerAddress?: number;
  /** Live messages held while the backlog is sent; beyond it they are dropped and re-read. Default 1,000. */
  maxHeldMessages?: number;
  /** The backlog must be sent within this, or the connection is closed with 1013. Default 60 s. */
  backlogTimeoutMs?: number;
  /** Rejected frames answered in a burst (refilled over 10 s) before the connection is closed with 1008. Default 20. */
  rejectedFrameBurst?: number;
  /** Unsent output above which Delivery Service notices wait, merged per group. Default 64 KiB. */
  noticeWatermarkBytes?: number;
  /** Groups with a waiting notice on one connection beyond which it is closed with 1013. Default 1,000. */
  maxPendingNotices?: number;
}

export interface Messaging {
  close(): Promise<void>;
  connectionCount(): number;
  /** Runs the mailbox purge now (it also runs every purgeIntervalMs); returns how many were purged. */
  purgeExpired(): Promise<number>;
  /**
   * Sends a Delivery Service notice to every connection of `usernames`, on this instance and the others, but
   * `origin` (a connection of this instance that appended the entry and has its answer).
   */
  notify(usernames: Iterable<string>, notice: GroupNotice, origin?: object): void;
  /** Sends an early frame to the connections of `usernames` on this instance that asked for them, but `origin`. */
  notifyEarly(usernames: Iterable<string>, text: string, origin?: object): void;
}

export function attachMessaging(params: {
  server: HttpServer | HttpsServer;
  /** checks a token at the upgrade, and re-checks an open socket's session when its account changes */
  sessions: Pick<SessionGuard, "authenticate" | "current">;
  /** subscribes to session events from every instance */
  onSessionEvent?: (listener: (event: SessionEvent) => void) => void;
  mailbox: Mailbox;
  bus?: MessageBus;
  logger: pino.Logger;
  clock: () => number;
  metrics: Registry;
  limits: MessagingLimits;
  /** Whether a recipient is registered; without it every recipient is accepted (tests of the wire alone). */
  users?: Pick<UserDirectory, "exists">;
  /** The Delivery Service's cursor move, for cursor frames. */
  moveCursor?: ConnectionDeps["settings"]["moveCursor"];
  /** The Delivery Service's application append, for append frames. */
  appendApplication?: ConnectionDeps["settings"]["appendApplication"];
  appendsInCallOrder?: ConnectionDeps["settings"]["appendsInCallOrder"];
}): Messaging {
  const { server, mailbox, clock, limits } = params;
  if (!(Number.isInteger(limits.maxFrameBytes) && limits.maxFrameBytes > 0)) throw new Error("limits.maxFrameBytes must be a positive integer");
  if (!(limits.mailboxTtlMs > 0)) throw new Error("limits.mailboxTtlMs must be positive");
  const messagesPerSecond = limits.messagesPerSecond ?? 100;
  const logger = params.logger.child({ component: "ws" });
  const logFailure = throttledFailureLog(logger);
  const metrics = messagingMetrics(params.metrics, () => mailbox.depth());
  let closing = false;

  const router = createRouter<Connection>({
    bus: params.bus,
    busSubscribeTimeoutMs: limits.busSubscribeTimeoutMs ?? 2_000,
    logFailure,
    isClosing: () => closing,
  });
  const deps: ConnectionDeps = {
    mailbox,
    router,
    clock,
    metrics,
    logger,
    logFailure,
    settings: {
      mailboxTtlMs: limits.mailboxTtlMs,
      messagesPerSecond,
      messageBurst: limits.messageBurst ?? 2 * messagesPerSecond,
      framesPerSecond: limits.framesPerSecond ?? 10 * messagesPerSecond,
      backlogPageSize: limits.backlogPageSize ?? 500,
      maxBufferedBytes: limits.maxBufferedBytes ?? 8 * 1024 * 1024,
      maxHeldMessages: limits.maxHeldMessages ?? 1_000,
      backlogTimeoutMs: limits.backlogTimeoutMs ?? 60_000,
      rejectedFrameBurst: limits.rejectedFrameBurst ?? 20,
      noticeWatermarkBytes: limits.noticeWatermarkBytes ?? 64 * 1024,
      maxPendingNotices: limits.maxPendingNotices ?? 1_000,
      recipientExists: params.users ? (username) => params.users!.exists(username) : async () => true,
      moveCursor: params.moveCursor,
      appendApplication: params.appendApplication,
      appendsInCallOrder: params.appendsInCallOrder,
    },
  };

  // perMessageDeflate off: ciphertext does not compress, and inflating is a decompression-bomb risk.
  // handleProtocols: a browser's token comes as a subprotocol; only `eth-chat` is ever selected (echoed).
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: limits.maxFrameBytes,
    perMessageDeflate: false,
    clientTracking: false,
    handleProtocols: selectSubprotocol,
  });
  const onUpgrade = createUpgradeHandler({
    wss,
    authenticate: (token) => params.sessions.authenticate(token),
    isClosing: () => closing,
    connectionCount: router.size,
    maxConnections: limits.maxConnections ?? 10_000,
    userConnectionCount: (username) => [...router.connectionsOf(username)].length,
    maxConnectionsPerUser: limits.maxConnectionsPerUser ?? 8,
    maxConnectionsPerAddress: limits.maxConnectionsPerAddress ?? 32,
    onRefused: (cap) => metrics.refusedUpgrades.inc({ cap }),
    onConnection: (ws, claims, release, asked) => {
      ws.once("close", release);
      const conn = new Connection(deps, ws, claims, asked.early);
      claimsOf.set(conn, claims);
      connectedNames.set(usernameHash(claims.sub), claims.sub);
    },
  });
  server.on("upgrade", onUpgrade);

  // Ending sessions: the claims each socket was opened with, and the names connected here by their hash
  // (chain events name users by hash). A name is forgotten once an event finds none of its sockets.
  const claimsOf = new WeakMap<Connection, SessionClaims>();
  const connectedNames = new Map<string, string>();
  const end = (conn: Connection) => {
    logger.info({ username: conn.username }, "session ended: closing its socket");
    conn.close(CLOSE_CODES.sessionExpired, "session ended: log in again").catch(() => undefined);
  };
  params.onSessionEvent?.((event) => {
    if (closing) return;
    if (event.type === "revoked") {
      for (const conn of router.connections()) if (claimsOf.get(conn)?.jti === event.jti) end(conn);
      return;
    }
    const username = connectedNames.get(event.usernameHash);
    if (username === undefined) return;
    const conns = [...router.connectionsOf(username)];
    if (conns.length === 0) connectedNames.delete(event.usernameHash);
    for (const conn of conns) {
      const claims = claimsOf.get(conn);
      if (!claims) continue;
      params.sessions.current(claims).then(
        (stands) => stands || end(conn),
        () => end(conn),
      );
    }
  });

  // Dead peers: a connection that did not answer the previous ping is dropped.
  const heartbeats = startHeartbeats({ connections: () => router.connections(), intervalMs: limits.pingIntervalMs ?? 30_000 });

  const purge = startMailboxPurge({ mailbox, clock, intervalMs: limits.purgeIntervalMs ?? 60_000, metrics, logFailure });

  return {
    connectionCount: router.size,
    purgeExpired: purge.purgeExpired,
    notify(usernames, notice, origin) {
      if (!closing) router.notify(usernames, notice, origin);
    },
    notifyEarly(usernames, text, origin) {
      if (!closing) router.notifyEarly(usernames, text, origin);
    },
    async close() {
      closing = true;
      server.off("upgrade", onUpgrade);
      heartbeats.stop();
      purge.stop();
      await Promise.all([...router.connections()].map((conn) => conn.close(CLOSE_CODES.goingAway, "relay shutting down")));
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

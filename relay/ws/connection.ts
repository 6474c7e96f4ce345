/**
 * One authenticated WebSocket connection, from the upgrade to its close:
 *   syncing  the mailbox backlog is being sent; live messages wait in `held` meanwhile
 *   live     live messages are pushed as they arrive, then "ready" has been sent
 *   closed   the socket is gone; nothing more is sent
 * A message is pushed at most once per connection until it is acknowledged (`inflight`), whether it
 * comes from the backlog, the live route or a catch-up after a bus outage.
 */
import { performance } from "node:perf_hooks";
import type pino from "pino";
import { WebSocket, type RawData } from "ws";
import type { ErrorCode } from "../../protocol/errors";
import { ClientFrame, CLOSE_CODES, MessageId, type ServerFrame } from "../../protocol/wire";
import type { RoutedMessage } from "../bus/bus";
import type { SessionClaims } from "../sessions";
import { MailboxError, type Mailbox, type StoredMessage } from "../storage/mailbox";
import type { FailureLog } from "./failure-log";
import { pendingPages } from "./mailbox-reader";
import type { MessagingMetrics } from "./metrics";
import { messageFrameText, type RoutedConnection, type Router } from "./router";
import { createTokenBucket, type TokenBucket } from "./token-bucket";

export interface ConnectionSettings {
  mailboxTtlMs: number;
  messagesPerSecond: number;
  messageBurst: number;
  framesPerSecond: number;
  backlogPageSize: number;
  maxBufferedBytes: number;
}

/** What every connection of one messaging instance shares. */
export interface ConnectionDeps {
  mailbox: Mailbox;
  router: Router<Connection>;
  clock: () => number;
  metrics: MessagingMetrics;
  logger: pino.Logger;
  logFailure: FailureLog;
  settings: ConnectionSettings;
}

type State = "syncing" | "live" | "closed";

const MAX_TIMEOUT_MS = 2 ** 31 - 1;

const routed = (m: StoredMessage): RoutedMessage => ({ to: m.recipient, from: m.sender, id: m.id, envelope: m.envelope, receivedAt: m.receivedAt });
const messageKey = (from: string, id: string) => `${from}\n${id}`;
const describeIssue = (issue: { path: PropertyKey[]; message: string }) => `${issue.path.map(String).join(".") || "frame"}: ${issue.message}`;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

export class Connection implements RoutedConnection {
  readonly username: string;
  private state: State = "syncing";
  /** whether the peer answered the last ping */
  private alive = true;
  private held: RoutedMessage[] = [];
  /** keys of messages pushed here and not yet acknowledged: no double push */
  private readonly inflight = new Set<string>();
  /** keys acknowledged while syncing: forgotten only after `held` is flushed, so a held copy is not pushed again */
  private ackedWhileSyncing: string[] = [];
  private readonly sends: TokenBucket;
  private readonly frames: TokenBucket;
  private readonly expiryTimer: NodeJS.Timeout;

  constructor(
    private readonly deps: ConnectionDeps,
    private readonly ws: WebSocket,
    claims: SessionClaims,
  ) {
    const { settings, metrics, logger } = deps;
    this.username = claims.sub;
    const now = performance.now();
    this.sends = createTokenBucket({ ratePerSecond: settings.messagesPerSecond, burst: settings.messageBurst, now });
    this.frames = createTokenBucket({ ratePerSecond: settings.framesPerSecond, burst: 2 * settings.framesPerSecond, now });
    const subscribed = deps.router.add(this);
    metrics.connections.inc();
    logger.debug({ user: this.username }, "connected");

    ws.on("message", (data, isBinary) => {
      try {
        this.onFrame(data, isBinary);
      } catch (error) {
        logger.error({ err: { message: error instanceof Error ? error.message : String(error) } }, "frame handler failed");
        ws.close(CLOSE_CODES.internal, "internal error");
      }
    });
    ws.on("pong", () => {
      this.alive = true;
    });
    // ws closes the socket itself on protocol errors (1009 beyond maxPayload, 1007 invalid UTF-8, ...).
    ws.on("error", (error) => logger.debug({ user: this.username, err: { message: error.message } }, "socket error"));
    ws.on("close", () => {
      this.state = "closed";
      deps.router.remove(this);
      clearTimeout(this.expiryTimer);
      metrics.connections.dec();
      logger.debug({ user: this.username }, "disconnected");
    });

    // The session ends while connected: close 4001, the client logs in again and reconnects.
    this.expiryTimer = setTimeout(
      () => ws.close(CLOSE_CODES.sessionExpired, "session expired"),
      Math.min(Math.max(0, claims.exp - deps.clock()), MAX_TIMEOUT_MS),
    );
    this.expiryTimer.unref();

    this.sendBacklog(subscribed).catch((error) => {
      deps.logFailure("backlog read failed", error);
      this.sendError("STORAGE_UNAVAILABLE", "the relay cannot read the mailbox right now; reconnect later", { retryable: true });
      ws.close(CLOSE_CODES.tryAgainLater, "storage unavailable");
    });
  }

  /** Pushes a live message (held back while the backlog is being sent). */
  push(m: RoutedMessage, text: string): void {
    if (this.state === "closed") return;
    if (m.receipt) {
      // A receipt is not a mailbox message: no backlog order to keep, so it goes out at once.
      this.send({ type: "receipt", id: m.id, to: m.from, status: m.receipt });
      return;
    }
    if (this.state === "syncing") {
      this.held.push(m);
      return;
    }
    const key = messageKey(m.from, m.id);
    if (this.inflight.has(key)) return;
    if (this.ws.bufferedAmount > this.deps.settings.maxBufferedBytes) {
      // A reader this slow would make us buffer without bound; the message is safe in the mailbox.
      this.ws.close(CLOSE_CODES.tryAgainLater, "slow consumer: reconnect to fetch the mailbox");
      return;
    }
    this.inflight.add(key);
    this.send(text);
    this.deps.metrics.delivered.inc();
  }

  /** Pushes what the mailbox holds that was not pushed yet (a connection still syncing reads it anyway). */
  async catchUp(): Promise<void> {
    if (this.state !== "live") return;
    for await (const page of this.pendingPages()) {
      if (this.closed) return;
      for (const m of page) this.push(routed(m), messageFrameText(routed(m)));
    }
  }

  /** Drops a peer that did not answer the previous ping, and pings again. */
  heartbeat(): void {
    if (!this.alive) {
      this.ws.terminate();
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  /** Closes with `code`; a peer that does not complete the close within 1 s is cut. */
  close(code: number, reason: string): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.state === "closed") return resolve();
      const timer = setTimeout(() => this.ws.terminate(), 1_000);
      this.ws.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      this.ws.close(code, reason);
    });
  }

  /** A getter, not a narrowed field: the socket may close during any await. */
  private get closed(): boolean {
    return this.state === "closed";
  }

  private pendingPages() {
    const { mailbox, clock, settings } = this.deps;
    return pendingPages({ mailbox, recipient: this.username, clock, pageSize: settings.backlogPageSize });
  }

  private async sendBacklog(subscribed: Promise<void>): Promise<void> {
    // Subscribed before reading the mailbox, so that nothing falls between the two.
    await subscribed;
    const { settings, metrics } = this.deps;
    let count = 0;
    for await (const page of this.pendingPages()) {
      if (this.closed) return;
      for (const m of page) {
        const key = messageKey(m.sender, m.id);
        if (this.inflight.has(key)) continue;
        this.inflight.add(key);
        this.send(messageFrameText(routed(m)));
        metrics.delivered.inc();
        count++;
      }
      if (page.length === settings.backlogPageSize) {
        while (!this.closed && this.ws.bufferedAmount > settings.maxBufferedBytes / 2) await sleep(5);
      }
    }
    this.state = "live";
    this.send({ type: "ready", pending: count });
    const held = this.held;
    this.held = [];
    for (const m of held) this.push(m, messageFrameText(m));
    for (const key of this.ackedWhileSyncing) this.inflight.delete(key);
    this.ackedWhileSyncing = [];
  }

  private send(frame: ServerFrame | string): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  private sendError(code: ErrorCode, message: string, extra: { id?: string; retryable?: boolean; retryAfterMs?: number } = {}): void {
    this.deps.metrics.rejected.inc({ code });
    this.send({ type: "error", code, message, ...extra });
  }

  private onFrame(data: RawData, isBinary: boolean): void {
    const now = performance.now();
    const wait = this.frames.take(now);
    if (wait > 0) return this.sendError("RATE_LIMITED", "too many frames", { retryable: true, retryAfterMs: wait });
    if (isBinary) return this.sendError("BAD_REQUEST", "frames are JSON text, not binary");
    let json: unknown;
    try {
      json = JSON.parse(data.toString());
    } catch {
      return this.sendError("BAD_REQUEST", "frame is not valid JSON");
    }
    const parsed = ClientFrame.safeParse(json);
    if (!parsed.success) {
      const rawId = (json as { id?: unknown } | null)?.id;
      const id = MessageId.safeParse(rawId).success ? (rawId as string) : undefined;
      const issue = parsed.error.issues[0];
      const code: ErrorCode = issue.path[0] === "to" || issue.path[0] === "from" ? "INVALID_USERNAME" : "BAD_REQUEST";
      return this.sendError(code, describeIssue(issue), id === undefined ? {} : { id });
    }
    const frame = parsed.data;
    if (frame.type === "ack") return this.onAck(frame);
    if (frame.type === "presence") return this.onPresence(frame.user);
    const sendWait = this.sends.take(now);
    if (sendWait > 0) {
      return this.sendError("RATE_LIMITED", "too many messages; send again later", { id: frame.id, retryable: true, retryAfterMs: sendWait });
    }
    this.onSend(frame);
  }

  /** Stores the message before "accepted"; only a newly stored one is routed (a re-send's first copy was). */
  private onSend(frame: { id: string; to: string; envelope: string }): void {
    const { mailbox, metrics, clock, settings } = this.deps;
    const receivedAt = clock();
    const sender = this.username; // the session's user, never client input
    mailbox
      .put({ recipient: frame.to, sender, id: frame.id, envelope: frame.envelope, receivedAt, expiresAt: receivedAt + settings.mailboxTtlMs })
      .then(
        (result) => {
          metrics.relayed.inc();
          this.send({ type: "accepted", id: frame.id, status: result.outcome === "acked" ? "delivered" : "stored" });
          if (result.outcome !== "new") return;
          metrics.stored.inc();
          this.deps.router.deliver({ to: frame.to, from: sender, id: frame.id, envelope: frame.envelope, receivedAt });
        },
        (error) => {
          if (error instanceof MailboxError && error.code === "MAILBOX_FULL") {
            return this.sendError("MAILBOX_FULL", `the mailbox of ${frame.to} is full; send again later`, {
              id: frame.id,
              retryable: true,
              retryAfterMs: (error.retryAfterSeconds ?? 60) * 1000,
            });
          }
          this.deps.logFailure("mailbox write failed", error);
          this.sendError("STORAGE_UNAVAILABLE", "the relay cannot store messages right now; send again later", { id: frame.id, retryable: true });
        },
      );
  }

  /** Online means connected to this instance: other instances are not asked (the bus has no query). */
  private onPresence(user: string): void {
    let online = false;
    for (const conn of this.deps.router.connections()) {
      if (conn.username === user) {
        online = true;
        break;
      }
    }
    this.send({ type: "presence", user, online });
  }

  private onAck(frame: { id: string; from: string }): void {
    this.deps.metrics.acked.inc();
    const key = messageKey(frame.from, frame.id);
    // Only the session's own mailbox: a user cannot acknowledge (erase) someone else's messages.
    this.deps.mailbox.ack({ recipient: this.username, sender: frame.from, id: frame.id }).then(
      () => {
        if (this.state === "syncing") this.ackedWhileSyncing.push(key);
        else this.inflight.delete(key);
        // Tell the sender, on this instance and through the bus; it matches the receipt by id and recipient.
        this.deps.router.deliver({ to: frame.from, from: this.username, id: frame.id, envelope: "", receivedAt: this.deps.clock(), receipt: "delivered" });
      },
      (error) => {
        this.deps.logFailure("mailbox ack failed", error);
        this.sendError("STORAGE_UNAVAILABLE", "the relay cannot record the acknowledgement right now; acknowledge again later", {
          id: frame.id,
          retryable: true,
        });
      },
    );
  }
}

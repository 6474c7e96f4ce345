/**
 * One authenticated WebSocket connection, from the upgrade to its close:
 *   syncing  the mailbox backlog is being sent; live messages wait in `held` meanwhile
 *   live     live messages are pushed as they arrive, then "ready" has been sent
 *   closed   the socket is gone; nothing more is sent
 * A message is pushed at most once per connection until it is acknowledged (`inflight`), whether it
 * comes from the backlog, the live route or a catch-up after a bus outage.
 * Delivery Service notices (a group's log grew, a welcome was stored) are not mailbox messages: they go out
 * in any state, at once while the socket keeps up, and otherwise wait here, one per group (the newest seq),
 * until it has drained. A device's cursor moves and small application messages may come in as frames too
 * (the same calls as the Delivery Service's POST /v2/groups/:groupId/cursor and /messages), so that a
 * message costs one frame each way for its sender and for each recipient, and no HTTP request.
 */
import { performance } from "node:perf_hooks";
import type pino from "pino";
import { WebSocket, type RawData } from "ws";
import type { ErrorCode } from "../../protocol/errors";
import { ChatError } from "../../protocol/errors";
import { ClientFrame, CLOSE_CODES, MAX_APPENDS_WAITING, MessageId, parseAppendOrCursorFrame, type AppendFrame, type CursorFrame, type GroupNotice, type ServerFrame } from "../../protocol/wire";
import type { RoutedMessage } from "../bus/bus";
import type { SessionClaims } from "../sessions";
import { MailboxError, type Mailbox, type StoredMessage } from "../storage/mailbox";
import { corkForThisTurn, transportOf } from "./cork";
import type { FailureLog } from "./failure-log";
import { pendingPages } from "./mailbox-reader";
import type { MessagingMetrics } from "./metrics";
import { messageFrameText, type RoutedConnection, type Router } from "./router";
import { createTokenBucket, type TokenBucket } from "./token-bucket";

type AppendOutcome = { accepted: true; seq: number; epoch: number; duplicate: boolean; senderCursor?: number } | { accepted: false; currentEpoch: number };

export interface ConnectionSettings {
  mailboxTtlMs: number;
  messagesPerSecond: number;
  messageBurst: number;
  framesPerSecond: number;
  backlogPageSize: number;
  /** unsent output (the ws send queue and the socket's own buffer) beyond which the connection is closed 1013 */
  maxBufferedBytes: number;
  /** live messages held while the backlog is sent; beyond it they are dropped and re-read from the mailbox */
  maxHeldMessages: number;
  /** unsent output above which notices wait (coalesced per group) instead of being written */
  noticeWatermarkBytes: number;
  /** groups with a waiting notice beyond which the connection is closed 1013 (it syncs on reconnect) */
  maxPendingNotices: number;
  /** the whole backlog must be sent within this, or the connection is closed 1013 */
  backlogTimeoutMs: number;
  /** rejected frames (malformed, unknown recipient) answered in a burst before the connection is closed 1008 */
  rejectedFrameBurst: number;
  /** whether a recipient exists; a send to a name that does not is refused with UNKNOWN_USER */
  recipientExists: (username: string) => Promise<boolean>;
  /**
   * The Delivery Service's cursor move (refusals as ChatErrors); without it (a relay without /v2) a cursor
   * frame is refused with NOT_FOUND.
   */
  moveCursor?: (device: { username: string; deviceId: string }, groupIdHex: string, seq: number) => Promise<number>;
  /**
   * The Delivery Service's application append, durable when it resolves (refusals as ChatErrors); without
   * it an append frame is refused with NOT_FOUND.
   */
  appendApplication?: (
    sender: { username: string; deviceId: string },
    groupIdHex: string,
    body: { epoch: number; id: string; bytes: string },
    /** this connection: the notice of the entry skips it, since its answer tells it */
    origin: object,
    /** called once the result is durable, right before the entry's notices go out */
    answer: (result: AppendOutcome) => void,
  ) => Promise<AppendOutcome>;
  /**
   * Whether appendApplication stores one group's appends in call order (asked per append: a store may fall
   * back); if not, a socket's next append to a group waits until the one before is stored.
   */
  appendsInCallOrder?: () => boolean;
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
/** How often waiting notices re-check whether a backed-up socket has drained. */
const NOTICE_RETRY_MS = 25;
/** When a socket with MAX_APPENDS_WAITING appends waiting (while storage is slow the send rate alone would let it queue thousands) is told to send again. */
const APPENDS_WAITING_RETRY_MS = 1_000;

const routed = (m: StoredMessage): RoutedMessage => ({ to: m.recipient, from: m.sender, id: m.id, envelope: m.envelope, receivedAt: m.receivedAt });
const messageKey = (from: string, id: string) => `${from}\n${id}`;
const describeIssue = (issue: { path: PropertyKey[]; message: string }) => `${issue.path.map(String).join(".") || "frame"}: ${issue.message}`;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

/** A notice's frame, serialised once for every connection it goes to (a carried entry makes it worth it). */
const noticeTexts = new WeakMap<GroupNotice, string>();
function noticeText(n: GroupNotice): string {
  let text = noticeTexts.get(n);
  if (text === undefined) noticeTexts.set(n, (text = JSON.stringify(n)));
  return text;
}

export class Connection implements RoutedConnection {
  readonly username: string;
  /** the device a device login's session is bound to: its only device here */
  private readonly sessionDevice: string | undefined;
  private state: State = "syncing";
  /** whether the peer answered the last ping */
  private alive = true;
  private held: RoutedMessage[] = [];
  /** set when `held` passed its bound and was dropped: the backlog is read again before going live */
  private heldDropped = false;
  /** the frame rate was exceeded and the client was told once; further excess frames are dropped silently */
  private frameLimitTold = false;
  /** frames dropped silently since the client was told */
  private unansweredFrames = 0;
  /** keys of messages pushed here and not yet acknowledged: no double push */
  private readonly inflight = new Set<string>();
  /** keys acknowledged while syncing: forgotten only after `held` is flushed, so a held copy is not pushed again */
  private ackedWhileSyncing: string[] = [];
  private readonly sends: TokenBucket;
  private readonly frames: TokenBucket;
  /** answers to rejected input: output must never outgrow input */
  private readonly rejections: TokenBucket;
  private readonly expiryTimer: NodeJS.Timeout;
  private backlogTimer: NodeJS.Timeout | null = null;
  /** notices not yet written, one per (kind, group), in arrival order */
  private readonly notices = new Map<string, GroupNotice>();
  private noticeTimer: NodeJS.Timeout | null = null;
  /** per group, the last append of this socket still being stored: the next one waits for it */
  private readonly appendsInFlight = new Map<string, Promise<void>>();
  /** appends of this socket taken and not yet answered */
  private appendsWaiting = 0;

  constructor(
    private readonly deps: ConnectionDeps,
    private readonly ws: WebSocket,
    claims: SessionClaims,
    /** whether the client asked for early frames (WS_EARLY_PARAM) */
    readonly wantsEarly = false,
  ) {
    const { settings, metrics, logger } = deps;
    this.username = claims.sub;
    this.sessionDevice = claims.dev;
    const now = performance.now();
    this.sends = createTokenBucket({ ratePerSecond: settings.messagesPerSecond, burst: settings.messageBurst, now });
    this.frames = createTokenBucket({ ratePerSecond: settings.framesPerSecond, burst: 2 * settings.framesPerSecond, now });
    this.rejections = createTokenBucket({ ratePerSecond: settings.rejectedFrameBurst / 10, burst: settings.rejectedFrameBurst, now });
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
      if (this.backlogTimer) clearTimeout(this.backlogTimer);
      if (this.noticeTimer) clearTimeout(this.noticeTimer);
      this.notices.clear();
      this.held = [];
      metrics.connections.dec();
      logger.debug({ user: this.username }, "disconnected");
    });

    // The session ends while connected: close 4001, the client logs in again and reconnects.
    this.expiryTimer = setTimeout(
      () => ws.close(CLOSE_CODES.sessionExpired, "session expired"),
      Math.min(Math.max(0, claims.exp - deps.clock()), MAX_TIMEOUT_MS),
    );
    this.expiryTimer.unref();

    // A backlog read that never finishes (a slow store, or a reader that never drains) must not hold the connection.
    this.backlogTimer = setTimeout(() => {
      if (this.state === "syncing") this.closeFor(CLOSE_CODES.tryAgainLater, "mailbox backlog timed out: reconnect later");
    }, settings.backlogTimeoutMs);
    this.backlogTimer.unref();

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
      if (this.heldDropped) return;
      if (this.held.length >= this.deps.settings.maxHeldMessages) {
        // Every live message is stored before it is routed: dropped here, it is read again after the backlog.
        this.held = [];
        this.heldDropped = true;
        return;
      }
      this.held.push(m);
      return;
    }
    const key = messageKey(m.from, m.id);
    if (this.inflight.has(key)) return;
    if (!this.send(text)) return;
    this.inflight.add(key);
    this.deps.metrics.delivered.inc();
  }

  /**
   * Pushes a Delivery Service notice. While one for the same group waits unsent, the two are merged into
   * the newer (highest seq): a busy group costs a backed-up socket one entry, not one per log entry.
   */
  notice(n: GroupNotice): void {
    if (this.state === "closed") return;
    // Nothing waiting and room in the socket, as almost always: written at once, without the queue.
    if (this.notices.size === 0 && this.ws.readyState === WebSocket.OPEN && this.buffered() <= this.deps.settings.noticeWatermarkBytes) {
      if (this.send(noticeText(n))) this.deps.metrics.noticesSent.inc();
      return;
    }
    const key = `${n.type} ${n.groupId}`;
    const waiting = this.notices.get(key);
    if (waiting) {
      // The merged notice skips entries: the one it carried is no use to a device that missed the ones before.
      if (n.type === "group" && waiting.type === "group" && n.seq > waiting.seq) this.notices.set(key, { type: "group", groupId: n.groupId, seq: n.seq, epoch: n.epoch });
      else if (waiting.type === "group" && waiting.entry) this.notices.set(key, { type: "group", groupId: waiting.groupId, seq: waiting.seq, epoch: waiting.epoch });
      this.deps.metrics.noticesCoalesced.inc();
      return;
    }
    if (this.notices.size >= this.deps.settings.maxPendingNotices) {
      this.closeFor(CLOSE_CODES.tryAgainLater, "slow consumer: reconnect and sync");
      return;
    }
    this.notices.set(key, n);
    if (!this.noticeTimer) this.flushNotices();
  }

  /**
   * Writes an early frame (`text`, serialised once for every connection) if this client asked for them.
   * Never queued: while the socket is backed up it is dropped, and the entry comes with its seq anyway.
   */
  early(text: string): void {
    if (!this.wantsEarly || this.state === "closed") return;
    const { settings, metrics } = this.deps;
    if (this.buffered() > settings.noticeWatermarkBytes) {
      metrics.earlyDropped.inc();
      return;
    }
    if (this.send(text)) metrics.earlySent.inc();
  }

  /** Writes waiting notices while the socket keeps up; otherwise checks again shortly. */
  private flushNotices(): void {
    this.noticeTimer = null;
    const { settings, metrics } = this.deps;
    for (const [key, n] of this.notices) {
      if (this.closed || this.ws.readyState !== WebSocket.OPEN) {
        this.notices.clear();
        return;
      }
      if (this.buffered() > settings.noticeWatermarkBytes) {
        this.noticeTimer = setTimeout(() => this.flushNotices(), NOTICE_RETRY_MS);
        this.noticeTimer.unref();
        return;
      }
      this.notices.delete(key);
      if (this.send(noticeText(n))) metrics.noticesSent.inc();
    }
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
    do {
      this.heldDropped = false;
      for await (const page of this.pendingPages()) {
        if (this.closed) return;
        for (const m of page) {
          const key = messageKey(m.sender, m.id);
          if (this.inflight.has(key)) continue;
          if (!this.send(messageFrameText(routed(m)))) return;
          this.inflight.add(key);
          metrics.delivered.inc();
          count++;
        }
        // Pace the backlog by the reader: wait for it to drain instead of buffering the whole mailbox.
        while (!this.closed && this.buffered() > settings.maxBufferedBytes / 2) await sleep(5);
      }
      // Live messages were dropped while syncing: they are in the mailbox, so read it again.
    } while (this.heldDropped && !this.closed);
    if (this.closed) return;
    if (this.backlogTimer) clearTimeout(this.backlogTimer);
    this.backlogTimer = null;
    this.state = "live";
    this.send({ type: "ready", pending: count });
    const held = this.held;
    this.held = [];
    for (const m of held) this.push(m, messageFrameText(m));
    for (const key of this.ackedWhileSyncing) this.inflight.delete(key);
    this.ackedWhileSyncing = [];
  }

  /**
   * Unsent output: ws counts its own queue plus the socket's writable buffer; the socket's writableLength is
   * read as well, in case a transport buffers beneath ws's count.
   */
  private buffered(): number {
    return Math.max(this.ws.bufferedAmount, transportOf(this.ws)?.writableLength ?? 0);
  }

  /** Closes (once) with a code that says why; a peer that does not complete the close within 1 s is cut. */
  private closeFor(code: number, reason: string): void {
    if (this.state === "closed" || this.ws.readyState !== WebSocket.OPEN) return;
    this.deps.metrics.closedByRelay.inc({ code: String(code) });
    this.close(code, reason).catch(() => undefined);
  }

  /**
   * Every write goes through here: a peer that does not read would otherwise make the relay buffer without
   * bound. Past the limit the connection is closed 1013 (its messages stay in the mailbox). False when nothing was sent.
   */
  private send(frame: ServerFrame | string): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    if (this.buffered() > this.deps.settings.maxBufferedBytes) {
      this.closeFor(CLOSE_CODES.tryAgainLater, "slow consumer: reconnect to fetch the mailbox");
      return false;
    }
    const socket = transportOf(this.ws);
    if (socket && corkForThisTurn(socket)) this.deps.metrics.socketWrites.inc();
    this.deps.metrics.framesSent.inc();
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    return true;
  }

  private sendError(code: ErrorCode, message: string, extra: { id?: string; retryable?: boolean; retryAfterMs?: number; currentEpoch?: number } = {}): void {
    this.deps.metrics.rejected.inc({ code });
    this.send({ type: "error", code, message, ...extra });
  }

  /** Answers rejected input within a budget; a peer that keeps sending it is closed 1008 instead of answered. */
  private reject(code: ErrorCode, message: string, extra: { id?: string } = {}): void {
    if (this.rejections.take(performance.now()) > 0) {
      this.closeFor(CLOSE_CODES.policy, "too many rejected frames");
      return;
    }
    this.sendError(code, message, extra);
  }

  private onFrame(data: RawData, isBinary: boolean): void {
    const now = performance.now();
    const wait = this.frames.take(now);
    if (wait > 0) {
      // One answer per burst: the client is told once, then excess frames are dropped; a peer that keeps
      // going for another full burst is closed.
      if (!this.frameLimitTold) {
        this.frameLimitTold = true;
        this.unansweredFrames = 0;
        return this.sendError("RATE_LIMITED", "too many frames", { retryable: true, retryAfterMs: wait });
      }
      if (++this.unansweredFrames > 2 * this.deps.settings.framesPerSecond) this.closeFor(CLOSE_CODES.policy, "frame rate limit ignored");
      return;
    }
    this.frameLimitTold = false;
    if (isBinary) return this.reject("BAD_REQUEST", "frames are JSON text, not binary");
    let json: unknown;
    try {
      json = JSON.parse(data.toString());
    } catch {
      return this.reject("BAD_REQUEST", "frame is not valid JSON");
    }
    // Well-formed appends and cursor moves, most of what a busy socket sends, are checked without zod.
    const frame = parseAppendOrCursorFrame(json) ?? this.parseFrame(json);
    if (!frame) return;
    if (frame.type === "ack") return this.onAck(frame);
    if (frame.type === "presence") return this.onPresence(frame.user);
    if (frame.type === "cursor") return this.onCursor(frame);
    const sendWait = this.sends.take(now);
    if (sendWait > 0) {
      return this.sendError("RATE_LIMITED", "too many messages; send again later", { id: frame.id, retryable: true, retryAfterMs: sendWait });
    }
    if (frame.type === "append") return this.onAppend(frame);
    this.onSend(frame);
  }

  /** Any other frame, as ClientFrame parses it; a malformed one is answered with what is wrong, and gives undefined. */
  private parseFrame(json: unknown): ClientFrame | undefined {
    const parsed = ClientFrame.safeParse(json);
    if (parsed.success) return parsed.data;
    const rawId = (json as { id?: unknown } | null)?.id;
    const id = MessageId.safeParse(rawId).success ? (rawId as string) : undefined;
    const issue = parsed.error.issues[0];
    const code: ErrorCode = issue.path[0] === "to" || issue.path[0] === "from" ? "INVALID_USERNAME" : "BAD_REQUEST";
    this.reject(code, describeIssue(issue), id === undefined ? {} : { id });
    return undefined;
  }

  /**
   * Stores the message before "accepted"; only a newly stored one is routed (a re-send's first copy was).
   * A recipient that is not registered is refused first: nothing is stored for a name nobody can read.
   */
  private onSend(frame: { id: string; to: string; envelope: string }): void {
    const { settings } = this.deps;
    const sender = this.username; // the session's user, never client input
    settings.recipientExists(frame.to).then(
      (exists) => {
        if (this.closed) return;
        if (!exists) return this.reject("UNKNOWN_USER", `no user named ${frame.to}`, { id: frame.id });
        this.store(frame, sender);
      },
      (error) => {
        this.deps.logFailure("recipient lookup failed", error);
        this.sendError("STORAGE_UNAVAILABLE", "the relay cannot check the recipient right now; send again later", { id: frame.id, retryable: true });
      },
    );
  }

  private store(frame: { id: string; to: string; envelope: string }, sender: string): void {
    const { mailbox, metrics, clock, settings } = this.deps;
    const receivedAt = clock();
    mailbox.put({ recipient: frame.to, sender, id: frame.id, envelope: frame.envelope, receivedAt, expiresAt: receivedAt + settings.mailboxTtlMs }).then(
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

  /**
   * A device of this socket's user moves its cursor: the user is the session's, never client input; a device
   * login's session acts only as its own device (as the /v2 session gate); the store refuses a device that is
   * not a member. Nothing is answered when the move is taken.
   */
  private onCursor(frame: CursorFrame): void {
    const { moveCursor } = this.deps.settings;
    if (!moveCursor) return this.reject("NOT_FOUND", "this relay has no Delivery Service");
    if (this.sessionDevice !== undefined && frame.deviceId !== this.sessionDevice) {
      return this.reject("FORBIDDEN", `this session belongs to device ${this.sessionDevice}; the cursor frame must name it`);
    }
    moveCursor({ username: this.username, deviceId: frame.deviceId }, frame.groupId, frame.seq).then(
      () => undefined,
      (error) => {
        if (this.closed) return;
        if (error instanceof ChatError && error.code !== "STORAGE_UNAVAILABLE") return this.reject(error.code, error.message);
        this.deps.logFailure("cursor move failed", error);
        this.sendError("STORAGE_UNAVAILABLE", "the relay cannot move the cursor right now; move it again later", { retryable: true });
      },
    );
  }

  /**
   * A device of this socket's user appends an application message: the user is the session's, a device
   * login's session acts only as its own device, and the store refuses a device that is not a member (as the
   * /v2 routes). Answered once the message is durable; an epoch conflict is an answer, not a rejection.
   * One socket's appends to a group are stored in the order they came, so a client may send several
   * without waiting and keep its order (the send rate limit bounds the queue).
   */
  private onAppend(frame: AppendFrame): void {
    if (this.appendsWaiting >= MAX_APPENDS_WAITING) {
      return this.sendError("RATE_LIMITED", `${MAX_APPENDS_WAITING} messages of this connection are still being stored; send again later`, {
        id: frame.id,
        retryable: true,
        retryAfterMs: APPENDS_WAITING_RETRY_MS,
      });
    }
    this.appendsWaiting++;
    // A store that keeps call order keeps this socket's order with several appends in flight.
    if (this.deps.settings.appendsInCallOrder?.() && !this.appendsInFlight.has(frame.groupId)) {
      void this.appendCounted(frame);
      return;
    }
    const before = this.appendsInFlight.get(frame.groupId) ?? Promise.resolve();
    const done = before.then(() => this.appendCounted(frame));
    this.appendsInFlight.set(frame.groupId, done);
    void done.then(() => {
      if (this.appendsInFlight.get(frame.groupId) === done) this.appendsInFlight.delete(frame.groupId);
    });
  }

  /** Stores one append and answers it, then counts it out of appendsWaiting; never rejects. */
  private appendCounted(frame: AppendFrame): Promise<void> {
    // (Functions made per message are anonymous here: tsx names every named one at its creation, at a cost.)
    return this.append(frame).then(() => {
      this.appendsWaiting--;
    });
  }

  /** Answers an append once it is durable (or refused for its epoch). */
  private answerAppend(frame: AppendFrame, result: AppendOutcome): void {
    if (this.closed) return;
    const id = frame.id;
    if (result.accepted) {
      this.deps.metrics.relayed.inc();
      const cursor = result.senderCursor ?? 0;
      this.send({ type: "appended", groupId: frame.groupId, id, seq: result.seq, epoch: result.epoch, duplicate: result.duplicate, cursor });
      return;
    }
    this.sendError("EPOCH_CONFLICT", `the group is at epoch ${result.currentEpoch}; catch up and retry`, { id, currentEpoch: result.currentEpoch });
  }

  /** Stores one append and answers it; never rejects. */
  private append(frame: AppendFrame): Promise<void> {
    const { appendApplication } = this.deps.settings;
    const id = frame.id;
    if (!appendApplication) return Promise.resolve(this.reject("NOT_FOUND", "this relay has no Delivery Service", { id }));
    if (this.sessionDevice !== undefined && frame.deviceId !== this.sessionDevice) {
      return Promise.resolve(this.reject("FORBIDDEN", `this session belongs to device ${this.sessionDevice}; the append frame must name it`, { id }));
    }
    const body = { epoch: frame.epoch, id, bytes: frame.bytes };
    // Answered before the entry's notices go out, so that this socket hears of entries in seq order.
    return appendApplication({ username: this.username, deviceId: frame.deviceId }, frame.groupId, body, this, (result) => this.answerAppend(frame, result)).then(
      () => undefined,
      (error) => {
        if (this.closed) return;
        if (error instanceof ChatError && error.code !== "STORAGE_UNAVAILABLE") return this.reject(error.code, error.message, { id });
        this.deps.logFailure("append failed", error);
        this.sendError("STORAGE_UNAVAILABLE", "the relay cannot store messages right now; send again later", { id, retryable: true });
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

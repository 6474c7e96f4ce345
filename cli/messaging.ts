/**
 * Sending and receiving on top of the envelope (protocol/envelope.ts): seal for a chain-checked key,
 * keep in the outbox until the relay says "accepted", re-send unaccepted messages with the same id on
 * every connection (the relay deduplicates by (from, id)); open, verify, save to history, and only
 * then acknowledge.
 */
import { ChatError } from "../protocol/errors";
import { assertFitsFrame, maxBodyBytes, openEnvelope, sealEnvelope, supersededAtReceipt, type InnerMessageV1 } from "../protocol/envelope";
import { assertUsername } from "../protocol/username";
import { randomUUID } from "node:crypto";
import { DEFAULT_MAILBOX_TTL_MS, MAX_STATUS_IDS, type MessageFrame } from "../protocol/wire";
import type { z } from "zod";
import { fetchMessageStatus, type ConnectionDeps, type RelayConnection } from "./connection";
import type { Context } from "./context";
import { describeError } from "./errors";
import { inert, inertLine } from "./output";
import type { Session } from "./session";
import { historyDedupStore, type OutboxEntry } from "./stores";
import { KeyBook, type KeyBookDeps } from "./trust";

export type MessengerDeps = Pick<Context, "deployment" | "history" | "outbox"> & KeyBookDeps;

/** How far a sent message has come; it only moves forward. */
export type DeliveryState = "sending" | "stored" | "delivered";
const STATE_ORDER: Record<DeliveryState, number> = { sending: 0, stored: 1, delivered: 2 };
/** Whether `next` is a step forward from `previous`. */
export function advances(previous: DeliveryState | undefined, next: DeliveryState): boolean {
  return previous === undefined || STATE_ORDER[next] > STATE_ORDER[previous];
}

const ACCEPT_TIMEOUT_MS = 20_000;

export class Messenger {
  readonly book: KeyBook;
  private readonly dedup;
  private selfChecked = false;
  private receiving: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly ctx: MessengerDeps,
    readonly session: Session,
  ) {
    this.book = new KeyBook(ctx, session.username);
    this.dedup = historyDedupStore(ctx.history, session.username);
  }

  get me(): string {
    return this.session.username;
  }

  /** Our session key must still be our current key on chain (not rotated or reset elsewhere). */
  async checkSelf(): Promise<void> {
    // A linked device's session follows its credential, renewed when its MLS device opens (session-device.ts).
    if (this.selfChecked || this.session.linked) return;
    const registry = await this.ctx.registry();
    const current = await registry.currentKey(this.me);
    if (current.index !== this.session.keyIndex) {
      throw new ChatError(
        "WRONG_KEY",
        `your key on chain is now key ${current.index} (changed from another device): log in again, or on this device run chat reset ${this.me}`,
      );
    }
    this.selfChecked = true;
  }

  /** Encrypts `body` for `to`'s current, chain-checked key and puts it in the outbox. */
  async prepare(to: string, body: string): Promise<OutboxEntry> {
    assertUsername(to);
    const { maxFrameBytes } = await this.ctx.deployment();
    const limit = maxBodyBytes(maxFrameBytes);
    if (Buffer.byteLength(body, "utf8") > limit) {
      throw new ChatError("MESSAGE_TOO_LONG", `message too long: ${Buffer.byteLength(body, "utf8")} bytes, the relay allows about ${limit}`);
    }
    await this.checkSelf().catch((error: unknown) => {
      // Without the chain our own key cannot be re-checked; the relay checked it at login.
      if (!(error instanceof ChatError && error.code === "CHAIN_UNAVAILABLE")) throw error;
    });
    await this.recheckPeerKey(to);
    const recipient = await this.book.current(to);
    const inner: InnerMessageV1 = {
      v: 1,
      sender: this.me,
      recipient: to,
      id: newMessageId(),
      timestamp: Date.now(),
      senderKeyIndex: this.session.keyIndex,
      recipientKeyIndex: recipient.index,
      body,
    };
    const envelope = await sealEnvelope({ inner, senderPrivateKey: this.session.keys[0].privateKey, recipientPublicKey: recipient.publicKey });
    assertFitsFrame({ id: inner.id, to, envelope, maxFrameBytes });
    const entry: OutboxEntry = { id: inner.id, to, envelope, body, timestamp: inner.timestamp, recipientKeyIndex: recipient.index };
    this.ctx.outbox.put(this.me, entry);
    return entry;
  }

  /**
   * A long conversation must not keep encrypting to a key the peer has since rotated or reset: when the
   * chain's current key index differs from the one held, the peer's keys are read again (and the change
   * announced). Without the chain the held key stays; KeyBook.current handles that case.
   */
  async recheckPeerKey(peer: string): Promise<void> {
    let onChain: number;
    try {
      onChain = (await (await this.ctx.registry()).currentKey(peer)).index;
    } catch {
      return;
    }
    const held = await this.book.keys(peer).catch(() => undefined);
    if (held && held[held.length - 1].index !== onChain) await this.book.keys(peer, true);
  }

  /**
   * Sends every outbox entry (new and left over) and waits for the relay's answers. Accepted entries
   * move to the history; the others stay in the outbox for the next connection.
   */
  async flushOutbox(conn: RelayConnection, only?: Set<string>): Promise<{ entry: OutboxEntry; status?: string; error?: ChatError }[]> {
    // Messages on MLS (v: 2) are sent by the MLS chat (cli/mls/chat.ts), not over this connection.
    const entries = this.ctx.outbox.list(this.me).filter((entry) => entry.envelope !== undefined && (!only || only.has(entry.id)));
    if (entries.length === 0) return [];
    return Promise.all(entries.map((entry) => this.sendOne(conn, entry)));
  }

  private sendOne(conn: RelayConnection, entry: OutboxEntry): Promise<{ entry: OutboxEntry; status?: string; error?: ChatError }> {
    return new Promise((resolve) => {
      let attempts = 0;
      let retryTimer: NodeJS.Timeout | undefined;
      const finish = (result: { status?: string; error?: ChatError }) => {
        clearTimeout(timer);
        if (retryTimer) clearTimeout(retryTimer);
        off();
        offClose();
        resolve({ entry, ...result });
      };
      // A connection that dies (relay crash) fails the send at once, not after the timeout; the outbox keeps it.
      const offClose = conn.onClose((error) =>
        finish({ error: error ?? new ChatError("RELAY_UNREACHABLE", `the connection closed before the relay accepted message ${entry.id}; it stays in the outbox`) }),
      );
      const timer = setTimeout(
        () => finish({ error: new ChatError("RELAY_UNREACHABLE", `the relay did not accept message ${entry.id} in time; it stays in the outbox`) }),
        ACCEPT_TIMEOUT_MS,
      );
      const off = conn.onFrame((frame) => {
        if (frame.type === "accepted" && frame.id === entry.id) {
          this.ctx.outbox.remove(this.me, entry.id);
          this.ctx.history.append(this.me, {
            id: entry.id,
            direction: "out",
            peer: entry.to,
            body: entry.body,
            timestamp: entry.timestamp,
            at: Date.now(),
            status: frame.status,
          });
          finish({ status: frame.status });
        } else if (frame.type === "error" && frame.id === entry.id) {
          if (frame.code === "RATE_LIMITED" && attempts < 5) {
            retryTimer = setTimeout(trySend, Math.min(frame.retryAfterMs ?? 500, 5_000));
            return;
          }
          if (!frame.retryable) this.ctx.outbox.remove(this.me, entry.id); // it can never succeed as it is
          finish({ error: new ChatError(frame.code, frame.message) });
        }
      });
      const trySend = () => {
        attempts++;
        try {
          conn.send({ type: "send", id: entry.id, to: entry.to, envelope: entry.envelope! });
        } catch (error) {
          finish({ error: error instanceof ChatError ? error : new ChatError("RELAY_UNREACHABLE", "connection lost") });
        }
      };
      trySend();
    });
  }

  /**
   * Opens an incoming message, saves it to the history and acknowledges it. Returns the opened inner
   * message, or undefined for a duplicate or a rejected message (acknowledged so that it is not sent
   * again when it can never be valid; left in the mailbox when the chain could not be checked).
   */
  receive(conn: RelayConnection, frame: z.infer<typeof MessageFrame>): Promise<InnerMessageV1 | undefined> {
    // One message at a time per device: after a reconnect the old connection may still be opening a message
    // that the new one delivers again; run together, both passed the duplicate check and it was shown twice.
    const run = this.receiving.then(() => this.receiveOne(conn, frame));
    this.receiving = run.catch(() => undefined);
    return run;
  }

  private async receiveOne(conn: RelayConnection, frame: z.infer<typeof MessageFrame>): Promise<InnerMessageV1 | undefined> {
    // Once saved, a message is shown even if the connection died before the ack went out: the relay
    // delivers it again and the dedup store drops that copy (failing here lost it from view for good).
    const ack = () => {
      try {
        conn.send({ type: "ack", id: frame.id, from: frame.from });
      } catch {
        /* connection lost: acknowledged on the next delivery */
      }
    };
    try {
      const opened = await openEnvelope({
        envelope: frame.envelope,
        from: frame.from,
        frameId: frame.id,
        me: this.me,
        privateKeys: this.session.keys,
        lookupSenderKey: async (user, index) => (await this.book.keyAt(user, index)).publicKey,
        dedup: this.dedup,
      });
      const inner = opened.inner;
      const keys = await this.book.keys(inner.sender);
      const replacedBy = supersededAtReceipt({ senderKeyIndex: inner.senderKeyIndex, history: keys, receivedAt: frame.receivedAt });
      if (replacedBy) {
        throw new ChatError(
          "ENVELOPE_INVALID",
          `signed with ${inner.sender}'s key ${inner.senderKeyIndex}, which was replaced (${replacedBy.kind}) before the message arrived`,
        );
      }
      if (inner.senderKeyIndex !== keys[keys.length - 1].index) {
        this.ctx.out.warn({
          code: "OLD_SENDER_KEY",
          user: inner.sender,
          id: inner.id,
          message: `message ${inner.id} from ${inner.sender} is signed with ${inner.sender}'s older key ${inner.senderKeyIndex}, not the current key`,
        });
      }
      this.ctx.history.append(this.me, {
        id: inner.id,
        direction: "in",
        peer: inner.sender,
        body: inner.body,
        timestamp: inner.timestamp,
        at: frame.receivedAt,
      });
      ack();
      return inner;
    } catch (error) {
      const { code, message } = describeError(error);
      if (code === "DUPLICATE") {
        ack();
        return undefined;
      }
      if (code === "ENVELOPE_INVALID") {
        this.ctx.out.warn({ code: "MESSAGE_REJECTED", user: frame.from, id: frame.id, reason: message, message: `rejected message ${frame.id} from ${frame.from}: ${message}` });
        ack();
        return undefined;
      }
      // KEY_MISMATCH, CHAIN_UNAVAILABLE...: the message may be genuine; keep it in the mailbox for later.
      this.ctx.out.warn({ code, user: frame.from, id: frame.id, message: `could not check message ${frame.id} from ${frame.from}: ${message} (kept on the relay)` });
      return undefined;
    }
  }
}

/** A message the relay accepted and had not delivered when last heard of. */
export interface WaitingMessage {
  id: string;
  to: string;
  body: string;
  timestamp: number;
  /** "pending": on the relay, not yet on the peer's device; "unknown": the relay no longer has it (lost or expired) */
  state: "pending" | "unknown";
}

/**
 * Messages `me` sent that the relay accepted as stored and that have not reached the recipient's device,
 * as the relay answers now (POST /v1/messages/status). Only those accepted within the mailbox lifetime
 * are asked about: older ones have expired either way. `peers` defaults to every conversation.
 */
export async function waitingMessages(
  ctx: Pick<Context, "history"> & ConnectionDeps,
  session: Session,
  peers: string[] = ctx.history.peers(session.username),
  now = Date.now(),
): Promise<WaitingMessage[]> {
  const waiting: WaitingMessage[] = [];
  for (const peer of peers) {
    const asked = ctx.history
      .read(session.username, peer)
      .filter((e) => e.direction === "out" && e.v !== 2 && e.status === "stored" && now - e.at < DEFAULT_MAILBOX_TTL_MS)
      .slice(-MAX_STATUS_IDS);
    if (asked.length === 0) continue;
    const answer = await fetchMessageStatus(ctx, session, peer, asked.map((e) => e.id));
    const pending = new Set(answer.pending);
    const unknown = new Set(answer.unknown);
    for (const e of asked) {
      if (pending.has(e.id) || unknown.has(e.id)) {
        waiting.push({ id: e.id, to: peer, body: e.body, timestamp: e.timestamp, state: pending.has(e.id) ? "pending" : "unknown" });
      }
    }
  }
  return waiting;
}

/** One line about a waiting message, for people. */
export function describeWaiting(m: WaitingMessage): string {
  const what = `your message to ${inertLine(m.to)} of ${localTime(m.timestamp)} ("${snippet(m.body)}")`;
  return m.state === "pending"
    ? `${what} is on the relay, not yet on ${inertLine(m.to)}'s device`
    : `${what} is no longer on the relay (lost or expired) and was never delivered: send it again`;
}

/** The start of a body on one line, for status notes. */
export function snippet(body: string, max = 40): string {
  const line = inertLine(body);
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** A message id: a UUID (RFC 9562 v4) fits the wire's MessageId. */
export function newMessageId(): string {
  return randomUUID();
}

/** `timestamp` in the local time zone, as YYYY-MM-DD HH:MM:SS. */
export function localTime(timestamp: number): string {
  const d = new Date(timestamp);
  const two = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** The indent of a body's second and later lines: no line of a body can look like a new header. */
export const BODY_INDENT = "    ";

/**
 * One message for a terminal: "[local time] sender: body". Control characters, escape sequences and bidi
 * overrides in the name or body are shown as escapes, and every further line of a multi-line body is
 * indented under the header, so a body cannot pass for a line from another sender.
 */
export function formatMessage(inner: { sender: string; body: string; timestamp: number }, note?: string): string {
  const lines = inert(inner.body.replace(/\r\n?/g, "\n")).split("\n");
  const header = `[${localTime(inner.timestamp)}] ${inertLine(inner.sender)}: ${lines[0]}`;
  const rest = lines.slice(1).map((line) => `${BODY_INDENT}${line}`);
  return [note ? `${header}  (${note})` : header, ...rest].join("\n");
}

/**
 * The offline mailbox: messages waiting for their recipient's acknowledgement. The relay stores every
 * message here before it tells the sender "accepted", so nothing accepted is lost if a process dies.
 *
 * A message is identified by (recipient, sender, id): the sender chooses `id`, the relay stamps `sender`
 * from the session. After an acknowledgement the envelope is erased but a tombstone of the identity stays
 * until the message's expiry, so that a sender re-sending a message it never saw accepted is answered
 * "delivered" instead of delivering it twice.
 */
export interface MailboxMessage {
  recipient: string;
  sender: string;
  id: string;
  /** the opaque envelope text (ciphertext); never logged */
  envelope: string;
  /** relay clock, Unix ms */
  receivedAt: number;
  /** Unix ms after which the message is purged and never delivered */
  expiresAt: number;
}

export interface StoredMessage extends MailboxMessage {
  /** insertion order, as a decimal string (a BIGINT in MySQL); backlogs are delivered in this order */
  seq: string;
}

/**
 * What put() did: "new" the message was stored now; "pending" it was already stored and waits for its
 * acknowledgement; "acked" it was already delivered and acknowledged (only the tombstone remains).
 */
export interface PutResult {
  outcome: "new" | "pending" | "acked";
  seq: string;
  /** receivedAt of the stored copy (the first one for a duplicate) */
  receivedAt: number;
}

/** At most this many ids per pendingIds() question, so that one request stays one cheap lookup. */
export const MAX_PENDING_IDS = 500;

/** Where each asked-about message stands; every distinct asked id appears in exactly one list, in asked order. */
export interface PendingIdsResult {
  /** stored and waiting for the recipient's acknowledgement */
  pending: string[];
  /** delivered and acknowledged (the tombstone is still kept) */
  delivered: string[];
  /** never stored, expired, or lost: the sender should send it again (a re-send is idempotent) */
  unknown: string[];
}

export type MailboxErrorCode =
  /** another process (or another mailbox in this one) has the directory open */
  | "MAILBOX_LOCKED"
  /** used before migrate() opened it, or after close() */
  | "MAILBOX_CLOSED"
  /** a write or fsync failed: what reached the disk is unknown, so the store refuses further work */
  | "MAILBOX_FAILED"
  /** the directory holds something that is not a mailbox log of a known format */
  | "MAILBOX_UNREADABLE"
  /** a caller passed a malformed or oversized request */
  | "MAILBOX_BAD_REQUEST"
  /** the recipient's waiting messages reached the quota: nothing was stored; retryable once they read */
  | "MAILBOX_FULL";

export class MailboxError extends Error {
  readonly code: MailboxErrorCode;
  /** For MAILBOX_FULL: when a retry may succeed (the recipient has to read first, so this is a hint). */
  readonly retryAfterSeconds?: number;
  constructor(code: MailboxErrorCode, message: string, options?: { cause?: unknown; retryAfterSeconds?: number }) {
    super(message, options);
    this.name = "MailboxError";
    this.code = code;
    if (options?.retryAfterSeconds !== undefined) this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

/**
 * What one recipient may have waiting (unacknowledged) at once, so that a flood to one user cannot fill
 * the relay's storage. A put beyond it is refused with MAILBOX_FULL and nothing is stored; a re-send of a
 * message already stored is still answered (it takes no new room).
 */
export interface MailboxQuota {
  /** waiting messages per recipient */
  maxMessages: number;
  /** waiting envelope bytes (UTF-8) per recipient */
  maxBytes: number;
  /** the hint MAILBOX_FULL carries */
  retryAfterSeconds: number;
}

export const DEFAULT_MAILBOX_QUOTA: MailboxQuota = { maxMessages: 10_000, maxBytes: 64 * 1024 * 1024, retryAfterSeconds: 60 };

/** Validates a quota once, where a mailbox is built. */
export function checkQuota(quota: MailboxQuota): MailboxQuota {
  for (const field of ["maxMessages", "maxBytes", "retryAfterSeconds"] as const) {
    if (!Number.isSafeInteger(quota[field]) || quota[field] < 1) throw new MailboxError("MAILBOX_BAD_REQUEST", `quota.${field} must be a whole number >= 1`);
  }
  return { maxMessages: quota.maxMessages, maxBytes: quota.maxBytes, retryAfterSeconds: quota.retryAfterSeconds };
}

/** The refusal every store gives for a put beyond the quota. */
export function mailboxFull(recipient: string, quota: MailboxQuota): MailboxError {
  return new MailboxError("MAILBOX_FULL", `the mailbox of ${recipient} is full; send again after they have read it`, {
    retryAfterSeconds: quota.retryAfterSeconds,
  });
}

/** What one envelope counts against the byte quota. */
export const envelopeBytes = (envelope: string): number => Buffer.byteLength(envelope, "utf8");

/** Validates a pendingIds() request the same way for every store; returns the distinct ids in asked order. */
export function distinctAskedIds(ids: readonly string[]): string[] {
  if (!Array.isArray(ids)) throw new MailboxError("MAILBOX_BAD_REQUEST", "ids must be an array");
  if (ids.length > MAX_PENDING_IDS) {
    throw new MailboxError("MAILBOX_BAD_REQUEST", `at most ${MAX_PENDING_IDS} ids per question (got ${ids.length})`);
  }
  for (const id of ids) {
    if (typeof id !== "string" || id.length === 0) throw new MailboxError("MAILBOX_BAD_REQUEST", "every id must be a non-empty string");
  }
  return [...new Set(ids)];
}

export interface Mailbox {
  readonly kind: "mysql" | "memory" | "file";
  /** Creates the tables (or opens the files) when missing; safe to call on every start; call before anything else. */
  migrate(): Promise<void>;
  /** Resolves when the storage answers; rejects otherwise. */
  ping(): Promise<void>;
  /**
   * Stores a message durably (idempotent on recipient, sender, id). A new message that would take the
   * recipient beyond its quota rejects with MailboxError MAILBOX_FULL (checked atomically with the insert).
   */
  put(message: MailboxMessage): Promise<PutResult>;
  /** Unacknowledged, unexpired messages of `recipient` in order, after `afterSeq` (exclusive). */
  pending(params: { recipient: string; now: number; afterSeq?: string; limit: number }): Promise<StoredMessage[]>;
  /** The recipient has processed the message: erase its envelope (idempotent; unknown messages are ignored). */
  ack(params: { recipient: string; sender: string; id: string }): Promise<void>;
  /**
   * Where the messages `sender` sent to `recipient` under `ids` stand (at most MAX_PENDING_IDS), so that a
   * sender whose accepted message was later lost by the relay learns of it. Expired messages are "unknown".
   */
  pendingIds(params: { recipient: string; sender: string; ids: readonly string[]; now: number }): Promise<PendingIdsResult>;
  /** Deletes every message (and tombstone) whose expiry has passed; returns how many. */
  purgeExpired(now: number): Promise<number>;
  /** Number of unacknowledged messages (all recipients), for the mailbox depth metric. */
  depth(): Promise<number>;
  /** Waits for writes in flight; does not close a connection pool it was given. */
  close(): Promise<void>;
}

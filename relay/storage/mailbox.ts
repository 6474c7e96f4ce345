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

export interface Mailbox {
  readonly kind: "mysql" | "memory";
  /** Creates the tables when missing; safe to call on every start. */
  migrate(): Promise<void>;
  /** Resolves when the storage answers; rejects otherwise. */
  ping(): Promise<void>;
  /** Stores a message durably (idempotent on recipient, sender, id). */
  put(message: MailboxMessage): Promise<PutResult>;
  /** Unacknowledged, unexpired messages of `recipient` in order, after `afterSeq` (exclusive). */
  pending(params: { recipient: string; now: number; afterSeq?: string; limit: number }): Promise<StoredMessage[]>;
  /** The recipient has processed the message: erase its envelope (idempotent; unknown messages are ignored). */
  ack(params: { recipient: string; sender: string; id: string }): Promise<void>;
  /** Deletes every message (and tombstone) whose expiry has passed; returns how many. */
  purgeExpired(now: number): Promise<number>;
  /** Number of unacknowledged messages (all recipients), for the mailbox depth metric. */
  depth(): Promise<number>;
  /** Waits for writes in flight; does not close a connection pool it was given. */
  close(): Promise<void>;
}

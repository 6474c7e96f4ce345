import {
  DEFAULT_MAILBOX_QUOTA,
  checkQuota,
  distinctAskedIds,
  envelopeBytes,
  mailboxFull,
  type Mailbox,
  type MailboxMessage,
  type MailboxQuota,
  type PendingIdsResult,
  type PutResult,
  type StoredMessage,
} from "./mailbox";

/** An in-memory mailbox for tests: nothing survives a restart (mailbox-file.ts is the durable one without MySQL). */
export function createMemoryMailbox(options: { quota?: MailboxQuota } = {}): Mailbox {
  const quota = checkQuota(options.quota ?? DEFAULT_MAILBOX_QUOTA);
  type Row = StoredMessage & { acked: boolean; bytes: number };
  let nextSeq = 1n;
  let unacked = 0;
  // Per recipient, what waits for acknowledgement (the quota's measure); a recipient with nothing waiting has no entry.
  const usage = new Map<string, { messages: number; bytes: number }>();
  const release = (row: Row) => {
    const used = usage.get(row.recipient)!;
    used.messages--;
    used.bytes -= row.bytes;
    if (used.messages === 0) usage.delete(row.recipient);
    unacked--;
  };
  const byKey = new Map<string, Row>();
  // Per recipient, rows in seq order (acked rows are skipped when listing and removed by purge).
  const byRecipient = new Map<string, Row[]>();
  const keyOf = (recipient: string, sender: string, id: string) => `${recipient}\n${sender}\n${id}`;

  return {
    kind: "memory",
    async migrate() {},
    async ping() {},
    async put(message: MailboxMessage): Promise<PutResult> {
      const key = keyOf(message.recipient, message.sender, message.id);
      const existing = byKey.get(key);
      if (existing) {
        return { outcome: existing.acked ? "acked" : "pending", seq: existing.seq, receivedAt: existing.receivedAt };
      }
      const bytes = envelopeBytes(message.envelope);
      const used = usage.get(message.recipient) ?? { messages: 0, bytes: 0 };
      if (used.messages + 1 > quota.maxMessages || used.bytes + bytes > quota.maxBytes) throw mailboxFull(message.recipient, quota);
      usage.set(message.recipient, { messages: used.messages + 1, bytes: used.bytes + bytes });
      unacked++;
      const row: Row = { ...message, seq: String(nextSeq++), acked: false, bytes };
      byKey.set(key, row);
      let list = byRecipient.get(message.recipient);
      if (!list) byRecipient.set(message.recipient, (list = []));
      list.push(row);
      return { outcome: "new", seq: row.seq, receivedAt: row.receivedAt };
    },
    async pending({ recipient, now, afterSeq, limit }) {
      const after = afterSeq === undefined ? 0n : BigInt(afterSeq);
      const out: StoredMessage[] = [];
      for (const row of byRecipient.get(recipient) ?? []) {
        if (out.length >= limit) break;
        if (row.acked || row.expiresAt <= now || BigInt(row.seq) <= after) continue;
        const { acked: _acked, bytes: _bytes, ...message } = row;
        out.push(message);
      }
      return out;
    },
    async ack({ recipient, sender, id }) {
      const row = byKey.get(keyOf(recipient, sender, id));
      if (!row || row.acked) return;
      release(row);
      row.acked = true;
      row.envelope = "";
    },
    async pendingIds({ recipient, sender, ids, now }) {
      const result: PendingIdsResult = { pending: [], delivered: [], unknown: [] };
      for (const id of distinctAskedIds(ids)) {
        const row = byKey.get(keyOf(recipient, sender, id));
        if (!row || row.expiresAt <= now) result.unknown.push(id);
        else (row.acked ? result.delivered : result.pending).push(id);
      }
      return result;
    },
    async purgeExpired(now) {
      let purged = 0;
      for (const [recipient, list] of byRecipient) {
        const keep = list.filter((row) => {
          if (row.expiresAt > now) return true;
          byKey.delete(keyOf(row.recipient, row.sender, row.id));
          if (!row.acked) release(row);
          purged++;
          return false;
        });
        if (keep.length === 0) byRecipient.delete(recipient);
        else byRecipient.set(recipient, keep);
      }
      return purged;
    },
    async depth() {
      return unacked;
    },
    async close() {},
  };
}

/**
 * The mailbox in a directory of its own, for a relay without MySQL: an append-only log of CRC-framed
 * records (record-frame.ts) replayed into an in-memory index on open. The index holds what the memory
 * mailbox holds; the log is what makes it survive restarts and crashes.
 *
 * Durability: every put, ack and purge goes through one group-commit queue (serial-batcher.ts); a batch is
 * appended and fdatasync'ed before any of its callers resolves, so "accepted" is only ever said about a
 * message on disk. Readers see a new message only once its batch is on disk (visibleSeq), so nothing is
 * delivered that a crash could still take back. A torn or damaged tail (a crash mid-append) is cut off on
 * open and reported; what precedes it is intact.
 *
 * When most of the log is garbage (acknowledged envelopes, purged messages) it is compacted: the live index
 * is written to a temporary file, fsync'ed, renamed over the log, and the directory fsync'ed, so a crash at
 * any point leaves either the old or the new log whole.
 */
import { DEFAULT_COMPACT_MIN_BYTES, createStoreLog, decodeJsonRecord, encodeJsonRecord, type DurableLogEvent, type DurableLogFormat, type DurableStoreOptions } from "./durable-log";
import {
  DEFAULT_MAILBOX_QUOTA,
  MailboxError,
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
import { createSerialBatcher } from "./serial-batcher";

const LOG_NAME = "mailbox.log";
const FORMAT = "eth-chat-mailbox";
const FORMAT_VERSION = 1;
/** Operations per group commit; bounds one write (and the memory it holds) under a burst. */
const MAX_BATCH = 512;

export type FileMailboxEvent = DurableLogEvent;

export interface FileMailboxOptions extends DurableStoreOptions {
  /** ...and runs when the log is more than this many times the size of its live records. Default 2. */
  compactGarbageRatio?: number;
  /** What one recipient may have waiting; default DEFAULT_MAILBOX_QUOTA. */
  quota?: MailboxQuota;
}

// Records as JSON: short keys keep the log small; seq as a number (safe far beyond any mailbox's life).
type HeaderRecord = { t: "m"; format: string; v: number; nextSeq: number };
type PutRecord = { t: "p"; seq: number; r: string; s: string; i: string; e: string; ra: number; ea: number; a?: 1 };
type AckRecord = { t: "a"; r: string; s: string; i: string };
type PurgeRecord = { t: "x"; now: number };
type LogRecord = HeaderRecord | PutRecord | AckRecord | PurgeRecord;

/** `bytes`: the row's record in a compacted log; `envelopeBytes`: what it counts against the quota while unacknowledged. */
type Row = {
  recipient: string;
  sender: string;
  id: string;
  envelope: string;
  receivedAt: number;
  expiresAt: number;
  seq: number;
  acked: boolean;
  bytes: number;
  envelopeBytes: number;
};
type RecipientRows = { rows: Row[]; acked: number };

type Op =
  | { kind: "put"; message: MailboxMessage }
  | { kind: "ack"; recipient: string; sender: string; id: string }
  | { kind: "purge"; now: number }
  | { kind: "compact" };

const keyOf = (recipient: string, sender: string, id: string) => `${recipient}\n${sender}\n${id}`;
const encode = (record: LogRecord) => encodeJsonRecord(record);

/** The mailbox's log: its file, records and typed errors. */
const LOG_FORMAT: DurableLogFormat<LogRecord> = {
  file: LOG_NAME,
  title: "mailbox",
  header: { t: "m", format: FORMAT, v: FORMAT_VERSION, nextSeq: 1 },
  encode,
  decode: (payload) => decodeJsonRecord<LogRecord>(payload),
  error: (kind, message, options) => new MailboxError(`MAILBOX_${kind}`, message, options),
};

export function createFileMailbox(options: FileMailboxOptions): Mailbox {
  const compactMinBytes = options.compactMinBytes ?? DEFAULT_COMPACT_MIN_BYTES;
  const compactGarbageRatio = options.compactGarbageRatio ?? 2;
  const quota = checkQuota(options.quota ?? DEFAULT_MAILBOX_QUOTA);

  // The index (as in mailbox-memory.ts). byKey keeps insertion order, which is seq order, for compaction.
  const byKey = new Map<string, Row>();
  const byRecipient = new Map<string, RecipientRows>();
  let nextSeq = 1;
  /** Highest seq whose record is on disk: readers never see beyond it. */
  let visibleSeq = 0;
  let unacked = 0;
  // Per recipient, what waits for acknowledgement (the quota's measure); no entry when nothing waits.
  const usage = new Map<string, { messages: number; bytes: number }>();
  const hold = (row: Row) => {
    const used = usage.get(row.recipient);
    if (used) {
      used.messages++;
      used.bytes += row.envelopeBytes;
    } else usage.set(row.recipient, { messages: 1, bytes: row.envelopeBytes });
    unacked++;
  };
  const release = (row: Row) => {
    const used = usage.get(row.recipient)!;
    used.messages--;
    used.bytes -= row.envelopeBytes;
    if (used.messages === 0) usage.delete(row.recipient);
    unacked--;
  };
  const fits = (recipient: string, bytes: number) => {
    const used = usage.get(recipient) ?? { messages: 0, bytes: 0 };
    return used.messages + 1 <= quota.maxMessages && used.bytes + bytes <= quota.maxBytes;
  };
  /** Bytes the live rows would take in a compacted log. */
  let liveBytes = 0;

  let compactionQueued = false;

  const insertRow = (row: Row) => {
    byKey.set(keyOf(row.recipient, row.sender, row.id), row);
    let list = byRecipient.get(row.recipient);
    if (!list) byRecipient.set(row.recipient, (list = { rows: [], acked: 0 }));
    list.rows.push(row);
    if (row.acked) list.acked++;
    else hold(row);
    liveBytes += row.bytes;
    if (row.seq >= nextSeq) nextSeq = row.seq + 1;
  };

  const ackRow = (recipient: string, sender: string, id: string): boolean => {
    const row = byKey.get(keyOf(recipient, sender, id));
    if (!row || row.acked) return false;
    release(row);
    row.acked = true;
    row.envelope = "";
    liveBytes -= row.bytes;
    row.bytes = encode(putRecordOf(row)).length; // what compaction will write for the tombstone
    liveBytes += row.bytes;
    const list = byRecipient.get(recipient)!;
    list.acked++;
    // Tombstones stay in byKey until expiry; drop them from the recipient's list once they dominate it,
    // so that listing a backlog does not walk past thousands of delivered messages.
    if (list.acked > 64 && list.acked * 2 > list.rows.length) {
      list.rows = list.rows.filter((r) => !r.acked);
      list.acked = 0;
    }
    return true;
  };

  const purgeRows = (now: number): number => {
    let purged = 0;
    const touched = new Set<string>();
    for (const [key, row] of byKey) {
      if (row.expiresAt > now) continue;
      byKey.delete(key);
      liveBytes -= row.bytes;
      if (!row.acked) release(row);
      touched.add(row.recipient);
      purged++;
    }
    for (const recipient of touched) {
      const list = byRecipient.get(recipient)!;
      const rows = list.rows.filter((r) => r.expiresAt > now);
      if (rows.length === 0) byRecipient.delete(recipient);
      else byRecipient.set(recipient, { rows, acked: rows.filter((r) => r.acked).length });
    }
    return purged;
  };

  const putRecordOf = (row: Row): PutRecord => ({
    t: "p",
    seq: row.seq,
    r: row.recipient,
    s: row.sender,
    i: row.id,
    e: row.envelope,
    ra: row.receivedAt,
    ea: row.expiresAt,
    ...(row.acked ? { a: 1 as const } : {}),
  });

  const usable = () => log.usable();

  function* liveRecords(): Iterable<Buffer> {
    yield encode({ t: "m", format: FORMAT, v: FORMAT_VERSION, nextSeq });
    for (const row of byKey.values()) yield encode(putRecordOf(row));
  }

  const compact = async () => {
    compactionQueued = false;
    const current = usable();
    if (await current.compact(liveRecords())) liveBytes = current.bytes;
  };

  const maybeQueueCompaction = (fileBytes: number) => {
    if (compactionQueued || fileBytes < compactMinBytes || fileBytes <= compactGarbageRatio * liveBytes) return;
    compactionQueued = true;
    // Runs as the next item of the commit queue, between batches; its caller is nobody.
    ops.push({ kind: "compact" }).catch(() => {});
  };

  const flush = async (batch: Op[]): Promise<unknown[]> => {
    const current = usable();
    const results: unknown[] = [];
    let frames: Buffer[] = [];
    for (const op of batch) {
      switch (op.kind) {
        case "put": {
          const m = op.message;
          const existing = byKey.get(keyOf(m.recipient, m.sender, m.id));
          if (existing) {
            results.push({ outcome: existing.acked ? "acked" : "pending", seq: String(existing.seq), receivedAt: existing.receivedAt } satisfies PutResult);
            break;
          }
          // Checked here, inside the one commit queue, so that concurrent puts cannot pass the quota together.
          const size = envelopeBytes(m.envelope);
          if (!fits(m.recipient, size)) {
            results.push(mailboxFull(m.recipient, quota));
            break;
          }
          const row: Row = { ...pick(m), seq: nextSeq, acked: false, bytes: 0, envelopeBytes: size };
          const frame = encode(putRecordOf(row));
          row.bytes = frame.length;
          insertRow(row);
          frames.push(frame);
          results.push({ outcome: "new", seq: String(row.seq), receivedAt: row.receivedAt } satisfies PutResult);
          break;
        }
        case "ack":
          if (ackRow(op.recipient, op.sender, op.id)) frames.push(encode({ t: "a", r: op.recipient, s: op.sender, i: op.id }));
          results.push(undefined);
          break;
        case "purge": {
          const purged = purgeRows(op.now);
          if (purged > 0) frames.push(encode({ t: "x", now: op.now }));
          results.push(purged);
          break;
        }
        case "compact":
          // Everything before it in this batch goes to the old log first, so the snapshot is all on disk.
          await current.append(frames);
          frames = [];
          visibleSeq = nextSeq - 1;
          await compact();
          results.push(undefined);
          break;
      }
    }
    await current.append(frames);
    visibleSeq = nextSeq - 1;
    maybeQueueCompaction(current.bytes);
    return results;
  };

  const ops = createSerialBatcher<Op, unknown>({ maxBatch: MAX_BATCH, flush });

  /** Applies the log's records in order; `frameBytes[i]` is the on-disk size of record i. */
  const replay = (records: LogRecord[], frameBytes: number[]) => {
    for (const [index, record] of records.entries()) {
      switch (record.t) {
        case "m":
          if (record.nextSeq > nextSeq) nextSeq = record.nextSeq;
          break;
        case "p": {
          const row: Row = {
            recipient: record.r,
            sender: record.s,
            id: record.i,
            envelope: record.e,
            receivedAt: record.ra,
            expiresAt: record.ea,
            seq: record.seq,
            acked: record.a === 1,
            bytes: frameBytes[index],
            envelopeBytes: envelopeBytes(record.e),
          };
          if (!byKey.has(keyOf(row.recipient, row.sender, row.id))) insertRow(row);
          break;
        }
        case "a":
          ackRow(record.r, record.s, record.i);
          break;
        case "x":
          purgeRows(record.now);
          break;
      }
    }
    visibleSeq = nextSeq - 1;
  };

  const log = createStoreLog(options, LOG_FORMAT, replay);

  const visible = (row: Row, now: number) => !row.acked && row.seq <= visibleSeq && row.expiresAt > now;

  return {
    kind: "file",
    migrate: () => log.open(),
    async ping() {
      usable();
    },
    async put(message) {
      usable();
      checkMessage(message);
      const result = (await ops.push({ kind: "put", message })) as PutResult | MailboxError;
      if (result instanceof MailboxError) throw result;
      return result;
    },
    async pending({ recipient, now, afterSeq, limit }) {
      usable();
      const after = afterSeq === undefined ? 0 : Number(afterSeq);
      const rows = byRecipient.get(recipient)?.rows ?? [];
      // rows are in seq order: start at the first one after `after`
      let lo = 0;
      let hi = rows.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (rows[mid].seq <= after) lo = mid + 1;
        else hi = mid;
      }
      const out: StoredMessage[] = [];
      for (let i = lo; i < rows.length && out.length < limit; i++) {
        const row = rows[i];
        if (!visible(row, now)) continue;
        out.push({ ...pick(row), seq: String(row.seq) });
      }
      return out;
    },
    async ack({ recipient, sender, id }) {
      usable();
      await ops.push({ kind: "ack", recipient, sender, id });
    },
    async pendingIds({ recipient, sender, ids, now }) {
      usable();
      const result: PendingIdsResult = { pending: [], delivered: [], unknown: [] };
      for (const id of distinctAskedIds(ids)) {
        const row = byKey.get(keyOf(recipient, sender, id));
        if (!row || row.seq > visibleSeq || row.expiresAt <= now) result.unknown.push(id);
        else (row.acked ? result.delivered : result.pending).push(id);
      }
      return result;
    },
    async purgeExpired(now) {
      usable();
      return (await ops.push({ kind: "purge", now })) as number;
    },
    async depth() {
      usable();
      return unacked;
    },
    close: () => log.close(() => ops.idle()),
  };
}

/** The log stores JSON: a non-finite number or a non-string would not read back as written. */
function checkMessage(m: MailboxMessage): void {
  for (const field of ["recipient", "sender", "id", "envelope"] as const) {
    if (typeof m[field] !== "string") throw new MailboxError("MAILBOX_BAD_REQUEST", `message.${field} must be a string`);
  }
  for (const field of ["receivedAt", "expiresAt"] as const) {
    if (!Number.isSafeInteger(m[field])) throw new MailboxError("MAILBOX_BAD_REQUEST", `message.${field} must be an integer (Unix ms)`);
  }
}

function pick(m: MailboxMessage): MailboxMessage {
  return { recipient: m.recipient, sender: m.sender, id: m.id, envelope: m.envelope, receivedAt: m.receivedAt, expiresAt: m.expiresAt };
}

import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from "mysql2/promise";
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

/** Rows per multi-row INSERT/UPDATE; bounded so that one statement stays far below max_allowed_packet. */
const MAX_BATCH = 256;
const PURGE_CHUNK = 5000;

/**
 * The mailbox in MySQL/MariaDB (MariaDB 10.11 tested). The pool must be created with supportBigNumbers
 * and bigNumberStrings (seq is a BIGINT). Several relay processes may share the table.
 *
 * Writes are group-committed (serial-batcher.ts): one transaction per batch, one multi-row INSERT on
 * MariaDB (`RETURNING` gives the new rows' seq); on MySQL (no RETURNING) each row is inserted alone.
 * The per-recipient quota is checked in the same transaction (see insertLocked).
 */
export function createMysqlMailbox(pool: Pool, options: { quota?: MailboxQuota } = {}): Mailbox {
  const quota = checkQuota(options.quota ?? DEFAULT_MAILBOX_QUOTA);
  let returningSupported: boolean | undefined;

  const detectReturning = async () => {
    if (returningSupported === undefined) {
      const [rows] = await pool.query<RowDataPacket[]>("SELECT VERSION() AS v");
      returningSupported = /mariadb/i.test(String(rows[0]?.v ?? ""));
    }
    return returningSupported;
  };

  const keyOf = (m: { recipient: string; sender: string; id: string }) => `${m.recipient}\n${m.sender}\n${m.id}`;

  /**
   * One batch in one transaction. The quota must hold across relay processes sharing the table, so each
   * batch first locks its recipients' rows in mailbox_recipient (sorted, so two batches never wait on each
   * other in a cycle); every put to a recipient then counts and inserts alone. Acks and purges only ever
   * lower the count, so they need no lock: a count taken while one runs errs on the side of refusing.
   */
  const insertLocked = async (conn: PoolConnection, items: MailboxMessage[], returning: boolean): Promise<Array<PutResult | MailboxError>> => {
    const recipients = [...new Set(items.map((m) => m.recipient))].sort();
    await conn.query(
      `INSERT INTO mailbox_recipient (recipient) VALUES ${recipients.map(() => "(?)").join(", ")} ON DUPLICATE KEY UPDATE recipient = VALUES(recipient)`,
      recipients,
    );
    const where = items.map(() => "(recipient = ? AND sender = ? AND id = ?)").join(" OR ");
    const [existingRows] = await conn.query<RowDataPacket[]>(
      `SELECT seq, recipient, sender, id, state, received_at FROM mailbox WHERE ${where}`,
      items.flatMap((m) => [m.recipient, m.sender, m.id]),
    );
    const existing = new Map<string, PutResult>();
    for (const r of existingRows) {
      existing.set(keyOf(r as MailboxMessage), {
        outcome: Number(r.state) === 0 ? "pending" : "acked",
        seq: String(r.seq),
        receivedAt: Number(r.received_at),
      });
    }
    const [usageRows] = await conn.query<RowDataPacket[]>(
      "SELECT recipient, COUNT(*) AS n, COALESCE(SUM(envelope_bytes), 0) AS b FROM mailbox WHERE recipient IN (?) AND state = 0 GROUP BY recipient",
      [recipients],
    );
    const usage = new Map<string, { messages: number; bytes: number }>();
    for (const r of usageRows) usage.set(String(r.recipient), { messages: Number(r.n), bytes: Number(r.b) });

    // Decide each item in push order: a known message is answered as before, a second copy in this batch
    // follows its first, and a new one is taken only while its recipient has room.
    type Decision = { kind: "known"; result: PutResult } | { kind: "full" } | { kind: "insert"; index: number } | { kind: "copy"; of: number };
    const decisions: Decision[] = [];
    const toInsert: Array<MailboxMessage & { bytes: number }> = [];
    const insertedIndex = new Map<string, number>();
    for (const m of items) {
      const key = keyOf(m);
      const known = existing.get(key);
      if (known) {
        decisions.push({ kind: "known", result: known });
        continue;
      }
      const first = insertedIndex.get(key);
      if (first !== undefined) {
        decisions.push({ kind: "copy", of: first });
        continue;
      }
      const bytes = envelopeBytes(m.envelope);
      const used = usage.get(m.recipient) ?? { messages: 0, bytes: 0 };
      if (used.messages + 1 > quota.maxMessages || used.bytes + bytes > quota.maxBytes) {
        decisions.push({ kind: "full" });
        continue;
      }
      usage.set(m.recipient, { messages: used.messages + 1, bytes: used.bytes + bytes });
      insertedIndex.set(key, toInsert.length);
      decisions.push({ kind: "insert", index: toInsert.length });
      toInsert.push({ ...m, bytes });
    }

    const seqs: string[] = [];
    if (toInsert.length > 0) {
      const values = (m: MailboxMessage & { bytes: number }) => [m.recipient, m.sender, m.id, m.envelope, m.bytes, m.receivedAt, m.expiresAt];
      const columns = "(recipient, sender, id, envelope, envelope_bytes, received_at, expires_at)";
      if (returning) {
        // The recipients are locked and the keys were looked up under the lock: every row is new.
        const [rows] = await conn.query<RowDataPacket[]>(
          `INSERT INTO mailbox ${columns} VALUES ${toInsert.map(() => "(?, ?, ?, ?, ?, ?, ?)").join(", ")} RETURNING seq, recipient, sender, id`,
          toInsert.flatMap(values),
        );
        const seqByKey = new Map(rows.map((r) => [keyOf(r as MailboxMessage), String(r.seq)]));
        for (const m of toInsert) seqs.push(seqByKey.get(keyOf(m))!);
      } else {
        for (const m of toInsert) {
          const [res] = await conn.query<ResultSetHeader>(`INSERT INTO mailbox ${columns} VALUES (?, ?, ?, ?, ?, ?, ?)`, values(m));
          seqs.push(String(res.insertId));
        }
      }
    }

    return decisions.map((d, i) => {
      switch (d.kind) {
        case "known":
          return d.result;
        case "full":
          return mailboxFull(items[i].recipient, quota);
        case "insert":
          return { outcome: "new", seq: seqs[d.index], receivedAt: toInsert[d.index].receivedAt };
        case "copy":
          return { outcome: "pending", seq: seqs[d.of], receivedAt: toInsert[d.of].receivedAt };
      }
    });
  };

  const insertBatch = async (items: MailboxMessage[]): Promise<Array<PutResult | MailboxError>> => {
    // Asked before taking a connection: asking while holding one could wait forever on an exhausted pool.
    const returning = await detectReturning();
    const conn = await pool.getConnection();
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          // Each statement sees what committed before it, in particular the puts that held the lock before us.
          await conn.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED");
          await conn.beginTransaction();
          const results = await insertLocked(conn, items, returning);
          await conn.commit();
          return results;
        } catch (error) {
          await conn.rollback().catch(() => {});
          // InnoDB picks a victim when lock orders cross (e.g. with a purge); the batch is simply run again.
          if (attempt < 4 && (error as { code?: string }).code === "ER_LOCK_DEADLOCK") continue;
          throw error;
        }
      }
    } finally {
      conn.release();
    }
  };

  type AckKey = { recipient: string; sender: string; id: string };
  const ackBatch = async (items: AckKey[]): Promise<void[]> => {
    // The envelope is erased; the identity stays as a tombstone until expiry so re-sends are recognised.
    const where = items.map(() => "(recipient = ? AND sender = ? AND id = ?)").join(" OR ");
    const values = items.flatMap((k) => [k.recipient, k.sender, k.id]);
    await pool.query(`UPDATE mailbox SET state = 1, envelope = NULL WHERE state = 0 AND (${where})`, values);
    return items.map(() => undefined);
  };

  const puts = createSerialBatcher<MailboxMessage, PutResult | MailboxError>({ maxBatch: MAX_BATCH, flush: insertBatch });
  const acks = createSerialBatcher<AckKey, void>({ maxBatch: MAX_BATCH, flush: ackBatch });

  return {
    kind: "mysql",
    async migrate() {
      // state: 0 waiting for the recipient's ack, 1 acknowledged (envelope erased, kept until expires_at
      // so that a re-send is recognised). utf8mb4_bin: usernames and ids compare byte for byte.
      await pool.query(`CREATE TABLE IF NOT EXISTS mailbox (
        seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
        recipient VARCHAR(32) NOT NULL,
        sender VARCHAR(32) NOT NULL,
        id VARCHAR(64) NOT NULL,
        envelope MEDIUMTEXT NULL,
        envelope_bytes INT UNSIGNED NOT NULL DEFAULT 0,
        received_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        state TINYINT NOT NULL DEFAULT 0,
        PRIMARY KEY (seq),
        UNIQUE KEY mailbox_message (recipient, sender, id),
        KEY mailbox_pending (recipient, state, seq),
        KEY mailbox_expiry (expires_at)
      ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
      // A table from before the quota lacks envelope_bytes: add it and count what already waits.
      const [columns] = await pool.query<RowDataPacket[]>(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'mailbox' AND column_name = 'envelope_bytes'",
      );
      if (columns.length === 0) {
        await pool.query("ALTER TABLE mailbox ADD COLUMN envelope_bytes INT UNSIGNED NOT NULL DEFAULT 0 AFTER envelope");
        await pool.query("UPDATE mailbox SET envelope_bytes = LENGTH(envelope) WHERE state = 0");
      }
      // One row per recipient ever written to: the lock that makes a recipient's puts count one at a time.
      await pool.query(`CREATE TABLE IF NOT EXISTS mailbox_recipient (
        recipient VARCHAR(32) NOT NULL,
        PRIMARY KEY (recipient)
      ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
      await detectReturning();
    },
    async ping() {
      await pool.query("SELECT 1");
    },
    async put(message) {
      const result = await puts.push(message);
      if (result instanceof MailboxError) throw result;
      return result;
    },
    async pending({ recipient, now, afterSeq, limit }) {
      const [rows] = await pool.query<RowDataPacket[]>(
        `SELECT seq, recipient, sender, id, envelope, received_at, expires_at FROM mailbox
         WHERE recipient = ? AND state = 0 AND seq > ? AND expires_at > ? ORDER BY seq LIMIT ?`,
        [recipient, afterSeq ?? "0", now, limit],
      );
      return rows.map(
        (r): StoredMessage => ({
          seq: String(r.seq),
          recipient: r.recipient,
          sender: r.sender,
          id: r.id,
          envelope: r.envelope,
          receivedAt: Number(r.received_at),
          expiresAt: Number(r.expires_at),
        }),
      );
    },
    ack: (key) => acks.push({ recipient: key.recipient, sender: key.sender, id: key.id }),
    async pendingIds({ recipient, sender, ids, now }) {
      const asked = distinctAskedIds(ids);
      const result: PendingIdsResult = { pending: [], delivered: [], unknown: [] };
      if (asked.length === 0) return result;
      // One lookup on the unique key (recipient, sender, id); expired rows count as gone even before the purge.
      const [rows] = await pool.query<RowDataPacket[]>(
        `SELECT id, state FROM mailbox WHERE recipient = ? AND sender = ? AND id IN (?) AND expires_at > ?`,
        [recipient, sender, asked, now],
      );
      const stateById = new Map<string, number>();
      for (const r of rows) stateById.set(String(r.id), Number(r.state));
      for (const id of asked) {
        const state = stateById.get(id);
        if (state === undefined) result.unknown.push(id);
        else (state === 0 ? result.pending : result.delivered).push(id);
      }
      return result;
    },
    async purgeExpired(now) {
      let total = 0;
      for (;;) {
        const [res] = await pool.query<ResultSetHeader>("DELETE FROM mailbox WHERE expires_at <= ? LIMIT ?", [now, PURGE_CHUNK]);
        total += res.affectedRows;
        if (res.affectedRows < PURGE_CHUNK) return total;
      }
    },
    async depth() {
      const [rows] = await pool.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM mailbox WHERE state = 0");
      return Number(rows[0].n);
    },
    async close() {
      await Promise.all([puts.idle(), acks.idle()]);
    },
  };
}

import type { Pool, ResultSetHeader, RowDataPacket } from "mysql2/promise";
import { distinctAskedIds, type Mailbox, type MailboxMessage, type PendingIdsResult, type PutResult, type StoredMessage } from "./mailbox";
import { createSerialBatcher } from "./serial-batcher";

/** Rows per multi-row INSERT/UPDATE; bounded so that one statement stays far below max_allowed_packet. */
const MAX_BATCH = 256;
const PURGE_CHUNK = 5000;

/**
 * The mailbox in MySQL/MariaDB (MariaDB 10.11 tested). The pool must be created with supportBigNumbers
 * and bigNumberStrings (seq is a BIGINT). Several relay processes may share the table.
 *
 * Writes are group-committed (serial-batcher.ts): one multi-row INSERT per batch. On MariaDB,
 * `INSERT IGNORE ... RETURNING` names exactly the rows that were new; on MySQL (no RETURNING) each row
 * is inserted alone.
 */
export function createMysqlMailbox(pool: Pool): Mailbox {
  let returningSupported: boolean | undefined;

  const detectReturning = async () => {
    if (returningSupported === undefined) {
      const [rows] = await pool.query<RowDataPacket[]>("SELECT VERSION() AS v");
      returningSupported = /mariadb/i.test(String(rows[0]?.v ?? ""));
    }
    return returningSupported;
  };

  const lookup = async (m: MailboxMessage): Promise<PutResult | undefined> => {
    const [rows] = await pool.query<RowDataPacket[]>(
      "SELECT seq, state, received_at FROM mailbox WHERE recipient = ? AND sender = ? AND id = ?",
      [m.recipient, m.sender, m.id],
    );
    if (rows.length === 0) return undefined;
    return {
      outcome: Number(rows[0].state) === 0 ? "pending" : "acked",
      seq: String(rows[0].seq),
      receivedAt: Number(rows[0].received_at),
    };
  };

  const insertOne = async (m: MailboxMessage): Promise<PutResult> => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const [res] = await pool.query<ResultSetHeader>(
        "INSERT IGNORE INTO mailbox (recipient, sender, id, envelope, received_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        [m.recipient, m.sender, m.id, m.envelope, m.receivedAt, m.expiresAt],
      );
      if (res.affectedRows === 1) return { outcome: "new", seq: String(res.insertId), receivedAt: m.receivedAt };
      const found = await lookup(m);
      if (found) return found;
      // the duplicate was purged between the two statements: insert again
    }
    throw new Error("mailbox: could not store message");
  };

  const insertBatch = async (items: MailboxMessage[]): Promise<PutResult[]> => {
    if (!(await detectReturning())) {
      const out: PutResult[] = [];
      for (const m of items) out.push(await insertOne(m));
      return out;
    }
    const placeholders = items.map(() => "(?, ?, ?, ?, ?, ?)").join(", ");
    const values = items.flatMap((m) => [m.recipient, m.sender, m.id, m.envelope, m.receivedAt, m.expiresAt]);
    const [rows] = await pool.query<RowDataPacket[]>(
      `INSERT IGNORE INTO mailbox (recipient, sender, id, envelope, received_at, expires_at) VALUES ${placeholders} RETURNING seq, recipient, sender, id`,
      values,
    );
    const inserted = new Map<string, string>();
    for (const r of rows) inserted.set(`${r.recipient}\n${r.sender}\n${r.id}`, String(r.seq));
    const out: PutResult[] = [];
    for (const m of items) {
      const key = `${m.recipient}\n${m.sender}\n${m.id}`;
      const seq = inserted.get(key);
      if (seq !== undefined) {
        inserted.delete(key); // a second copy in the same batch is a duplicate of the first
        out.push({ outcome: "new", seq, receivedAt: m.receivedAt });
      } else {
        out.push((await lookup(m)) ?? (await insertOne(m))); // rare: a re-sent message
      }
    }
    return out;
  };

  type AckKey = { recipient: string; sender: string; id: string };
  const ackBatch = async (items: AckKey[]): Promise<void[]> => {
    // The envelope is erased; the identity stays as a tombstone until expiry so re-sends are recognised.
    const where = items.map(() => "(recipient = ? AND sender = ? AND id = ?)").join(" OR ");
    const values = items.flatMap((k) => [k.recipient, k.sender, k.id]);
    await pool.query(`UPDATE mailbox SET state = 1, envelope = NULL WHERE state = 0 AND (${where})`, values);
    return items.map(() => undefined);
  };

  const puts = createSerialBatcher<MailboxMessage, PutResult>({ maxBatch: MAX_BATCH, flush: insertBatch });
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
        received_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        state TINYINT NOT NULL DEFAULT 0,
        PRIMARY KEY (seq),
        UNIQUE KEY mailbox_message (recipient, sender, id),
        KEY mailbox_pending (recipient, state, seq),
        KEY mailbox_expiry (expires_at)
      ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
      await detectReturning();
    },
    async ping() {
      await pool.query("SELECT 1");
    },
    put: (message) => puts.push(message),
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

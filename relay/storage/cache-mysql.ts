/**
 * The MySQL/MariaDB cache of the chain. Tables (created on start, idempotently, utf8mb4):
 * - users: the seed's table; `password` holds the on-chain credential hash (never a password) and
 *   `update_time` the block time of the last key change; plus username_hash to map events.
 * - key_history: every key record with its kind, block and transaction.
 * - sync_state: one row, the chain id, contract, and the last synced block and its hash.
 * - login_challenges: single-use login challenges, so that any relay instance can check one.
 * - pending_resets: each user's reset requested on chain and not yet completed or cancelled.
 * Several relay instances may share these tables: each range of events is applied in one transaction
 * that first locks sync_state and checks the position it started from (optimistic concurrency).
 */
import type mysql from "mysql2/promise";
import { applyEvent, sameSyncState, type CacheWriter } from "./cache-apply";
import type { CacheStore, CachedKey, CachedPendingReset, CachedUser, SyncState } from "./cache-types";
import type { KeyKind } from "../chain/registry";

const MIGRATIONS = [
  `CREATE TABLE IF NOT EXISTS users (
    username VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    username_hash CHAR(66) CHARACTER SET ascii NOT NULL,
    password CHAR(66) CHARACTER SET ascii NOT NULL COMMENT 'on-chain credential hash, never a password',
    pub_key CHAR(130) CHARACTER SET ascii NOT NULL,
    update_time DATETIME NOT NULL COMMENT 'block time of the last key change (UTC)',
    PRIMARY KEY (username),
    UNIQUE KEY users_username_hash (username_hash)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  `CREATE TABLE IF NOT EXISTS key_history (
    username VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    idx INT UNSIGNED NOT NULL,
    public_key CHAR(130) CHARACTER SET ascii NOT NULL,
    address CHAR(42) CHARACTER SET ascii NOT NULL,
    kind ENUM('registered','rotated','reset') NOT NULL,
    block_number BIGINT UNSIGNED NOT NULL,
    block_time BIGINT UNSIGNED NOT NULL COMMENT 'Unix seconds',
    tx_hash CHAR(66) CHARACTER SET ascii NOT NULL,
    PRIMARY KEY (username, idx)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  `CREATE TABLE IF NOT EXISTS sync_state (
    id TINYINT UNSIGNED NOT NULL,
    chain_id DECIMAL(65,0) NOT NULL,
    contract_address CHAR(42) CHARACTER SET ascii NOT NULL,
    deploy_block BIGINT UNSIGNED NOT NULL,
    last_block BIGINT NOT NULL,
    last_block_hash VARCHAR(66) CHARACTER SET ascii NOT NULL,
    PRIMARY KEY (id)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  `CREATE TABLE IF NOT EXISTS login_challenges (
    challenge CHAR(66) CHARACTER SET ascii NOT NULL,
    username VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    expires_at BIGINT UNSIGNED NOT NULL COMMENT 'Unix ms',
    PRIMARY KEY (challenge),
    KEY login_challenges_expires (expires_at)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  `CREATE TABLE IF NOT EXISTS pending_resets (
    username VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    public_key CHAR(130) CHARACTER SET ascii NOT NULL,
    address CHAR(42) CHARACTER SET ascii NOT NULL,
    effective_at BIGINT UNSIGNED NOT NULL COMMENT 'Unix seconds of chain time',
    block_number BIGINT UNSIGNED NOT NULL,
    tx_hash CHAR(66) CHARACTER SET ascii NOT NULL,
    PRIMARY KEY (username),
    KEY pending_resets_effective (effective_at)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
];

export const CACHE_TABLES = ["users", "key_history", "sync_state", "login_challenges", "pending_resets"] as const;

type Row = Record<string, any>;

function toUser(row: Row): CachedUser {
  return {
    username: row.username,
    usernameHash: row.username_hash,
    credentialHash: row.password,
    publicKey: row.pub_key,
    updateTime: Math.floor(new Date(row.update_time).getTime() / 1000),
  };
}

function toKey(row: Row): CachedKey {
  return {
    username: row.username,
    index: Number(row.idx),
    publicKey: row.public_key,
    address: row.address,
    kind: row.kind as KeyKind,
    blockNumber: Number(row.block_number),
    blockTime: Number(row.block_time),
    transactionHash: row.tx_hash,
  };
}

function toPendingReset(row: Row): CachedPendingReset {
  return {
    username: row.username,
    publicKey: row.public_key,
    address: row.address,
    effectiveAt: Number(row.effective_at),
    blockNumber: Number(row.block_number),
    transactionHash: row.tx_hash,
  };
}

function toSync(row: Row | undefined): SyncState | null {
  if (!row) return null;
  return {
    chainId: String(row.chain_id),
    contractAddress: row.contract_address,
    deployBlock: Number(row.deploy_block),
    lastBlock: Number(row.last_block),
    lastBlockHash: row.last_block_hash,
  };
}

async function writeSync(conn: mysql.PoolConnection | mysql.Pool, state: SyncState): Promise<void> {
  await conn.query(
    `INSERT INTO sync_state (id, chain_id, contract_address, deploy_block, last_block, last_block_hash)
     VALUES (1, ?, ?, ?, ?, ?)
     ON DUPLICATE KEY UPDATE chain_id = VALUES(chain_id), contract_address = VALUES(contract_address),
       deploy_block = VALUES(deploy_block), last_block = VALUES(last_block), last_block_hash = VALUES(last_block_hash)`,
    [state.chainId, state.contractAddress, state.deployBlock, state.lastBlock, state.lastBlockHash],
  );
}

export function createMysqlCache(pool: mysql.Pool): CacheStore {
  async function inTransaction<T>(task: (conn: mysql.PoolConnection) => Promise<T>): Promise<T> {
    const conn = await pool.getConnection();
    try {
      await conn.beginTransaction();
      const result = await task(conn);
      await conn.commit();
      return result;
    } catch (error) {
      await conn.rollback().catch(() => undefined);
      throw error;
    } finally {
      conn.release();
    }
  }

  return {
    kind: "mysql",
    migrate: async () => {
      for (const statement of MIGRATIONS) await pool.query(statement);
    },
    ping: async () => {
      await pool.query("SELECT 1");
    },
    getSyncState: async () => {
      const [rows] = await pool.query<any[]>("SELECT * FROM sync_state WHERE id = 1");
      return toSync(rows[0]);
    },
    applyEvents: ({ expected, events, next }) =>
      inTransaction(async (conn) => {
        const [rows] = await conn.query<any[]>("SELECT * FROM sync_state WHERE id = 1 FOR UPDATE");
        if (!sameSyncState(toSync(rows[0]), expected)) return false;
        const writer: CacheWriter = {
          userByHash: async (hash) => {
            const [found] = await conn.query<any[]>("SELECT * FROM users WHERE username_hash = ?", [hash]);
            return found[0] ? toUser(found[0]) : null;
          },
          insertUser: async (u) => {
            await conn.query(
              "INSERT INTO users (username, username_hash, password, pub_key, update_time) VALUES (?, ?, ?, ?, ?)",
              [u.username, u.usernameHash, u.credentialHash, u.publicKey, new Date(u.updateTime * 1000)],
            );
          },
          updateUser: async (username, changes) => {
            const sets: string[] = [];
            const values: unknown[] = [];
            if (changes.credentialHash !== undefined) sets.push("password = ?") && values.push(changes.credentialHash);
            if (changes.publicKey !== undefined) sets.push("pub_key = ?") && values.push(changes.publicKey);
            if (changes.updateTime !== undefined) sets.push("update_time = ?") && values.push(new Date(changes.updateTime * 1000));
            if (sets.length) await conn.query(`UPDATE users SET ${sets.join(", ")} WHERE username = ?`, [...values, username]);
          },
          insertKey: async (k) => {
            await conn.query(
              `INSERT INTO key_history (username, idx, public_key, address, kind, block_number, block_time, tx_hash)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
              [k.username, k.index, k.publicKey, k.address, k.kind, k.blockNumber, k.blockTime, k.transactionHash],
            );
          },
          putPendingReset: async (r) => {
            await conn.query(
              `REPLACE INTO pending_resets (username, public_key, address, effective_at, block_number, tx_hash) VALUES (?, ?, ?, ?, ?, ?)`,
              [r.username, r.publicKey, r.address, r.effectiveAt, r.blockNumber, r.transactionHash],
            );
          },
          deletePendingReset: async (username) => {
            await conn.query("DELETE FROM pending_resets WHERE username = ?", [username]);
          },
        };
        for (const event of events) await applyEvent(writer, event);
        await writeSync(conn, next);
        return true;
      }),
    reset: (start) =>
      inTransaction(async (conn) => {
        // DELETE, not TRUNCATE: TRUNCATE commits implicitly and would break the all-or-nothing reset.
        await conn.query("SELECT id FROM sync_state WHERE id = 1 FOR UPDATE");
        await conn.query("DELETE FROM key_history");
        await conn.query("DELETE FROM pending_resets");
        await conn.query("DELETE FROM users");
        await writeSync(conn, start);
      }),
    truncate: async () => {
      for (const table of CACHE_TABLES) await pool.query(`TRUNCATE TABLE ${table}`);
    },
    getUser: async (username) => {
      const [rows] = await pool.query<any[]>("SELECT * FROM users WHERE username = ?", [username]);
      return rows[0] ? toUser(rows[0]) : null;
    },
    getKeys: async (username) => {
      const [rows] = await pool.query<any[]>("SELECT * FROM key_history WHERE username = ? ORDER BY idx", [username]);
      return rows.map(toKey);
    },
    getPendingReset: async (username) => {
      const [rows] = await pool.query<any[]>("SELECT * FROM pending_resets WHERE username = ?", [username]);
      return rows[0] ? toPendingReset(rows[0]) : null;
    },
    duePendingResets: async (chainTime, limit) => {
      const [rows] = await pool.query<any[]>(
        "SELECT * FROM pending_resets WHERE effective_at <= ? ORDER BY effective_at LIMIT ?",
        [chainTime, limit],
      );
      return rows.map(toPendingReset);
    },
    countUsers: async () => {
      const [rows] = await pool.query<any[]>("SELECT COUNT(*) AS n FROM users");
      return Number(rows[0].n);
    },
    putChallenge: async ({ username, challenge, expiresAt }) => {
      await pool.query("DELETE FROM login_challenges WHERE expires_at <= ?", [Date.now()]);
      await pool.query("INSERT INTO login_challenges (challenge, username, expires_at) VALUES (?, ?, ?)", [challenge, username, expiresAt]);
    },
    consumeChallenge: async ({ username, challenge, now }) => {
      // One DELETE decides: of two instances racing for the same challenge only one sees a row deleted.
      const [result] = await pool.query<mysql.ResultSetHeader>(
        "DELETE FROM login_challenges WHERE challenge = ? AND username = ? AND expires_at > ?",
        [challenge, username, now],
      );
      if (result.affectedRows === 1) return true;
      await pool.query("DELETE FROM login_challenges WHERE challenge = ?", [challenge]);
      return false;
    },
    close: async () => undefined,
  };
}

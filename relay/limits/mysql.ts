/**
 * Attempt limits in MySQL/MariaDB, shared by every relay instance on the database, for deployments without
 * Redis. Times are the relays' clocks in ms (instances are assumed NTP-synchronised, as for challenge and
 * session expiry). Expired rows are purged in bounded chunks at most once per window per instance, so the
 * tables hold about one window of keys. Errors propagate: see fallback.ts for what happens while the
 * database is away.
 */
import type { Pool, RowDataPacket } from "mysql2/promise";
import {
  assertValidEntries,
  assertValidPolicy,
  backoffDelayMs,
  rateLimitedError,
  type AttemptLimiter,
  type BackoffPolicy,
  type LimitEntry,
  type PasswordBackoff,
} from "./limits";

const MIGRATIONS = [
  `CREATE TABLE IF NOT EXISTS rate_limit_windows (
    limit_key VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    hits INT UNSIGNED NOT NULL,
    expires_at BIGINT NOT NULL,
    KEY rate_limit_windows_expiry (expires_at)
  ) ENGINE=InnoDB`,
  `CREATE TABLE IF NOT EXISTS password_failures (
    username VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    failures INT UNSIGNED NOT NULL,
    blocked_until BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    KEY password_failures_expiry (expires_at)
  ) ENGINE=InnoDB`,
];

const PURGE_CHUNK = 5_000;

export interface MysqlLimits {
  limiter: AttemptLimiter;
  backoff: PasswordBackoff;
  /** Creates the two tables if missing. */
  migrate(): Promise<void>;
  /** Deletes expired rows now (otherwise done by hits, at most once per window). */
  purgeExpired(): Promise<void>;
}

/** The pool stays the caller's: close() here only stops using it. */
export function createMysqlLimits(options: { pool: Pool; windowMs: number; policy: BackoffPolicy; clock?: () => number }): MysqlLimits {
  if (!(options.windowMs >= 1)) throw new TypeError(`windowMs must be >= 1, got ${options.windowMs}`);
  assertValidPolicy(options.policy);
  const { pool, windowMs, policy } = options;
  const clock = options.clock ?? Date.now;

  async function purgeExpired(): Promise<void> {
    const now = clock();
    for (const table of ["rate_limit_windows", "password_failures"]) {
      for (;;) {
        const [result] = await pool.query<any>(`DELETE FROM ${table} WHERE expires_at <= ? LIMIT ${PURGE_CHUNK}`, [now]);
        if (result.affectedRows < PURGE_CHUNK) break;
      }
    }
  }

  let lastPurge = clock();
  let purging = false;
  const maybePurge = (now: number) => {
    if (purging || now - lastPurge < windowMs) return;
    lastPurge = now;
    purging = true;
    // In the background: a hit does not wait for it, and a failure only delays it to the next window.
    purgeExpired()
      .catch(() => undefined)
      .finally(() => (purging = false));
  };

  const limiter: AttemptLimiter = {
    async hit(entries: readonly LimitEntry[]) {
      assertValidEntries(entries);
      if (entries.length === 0) return;
      const now = clock();
      // Sorted, so that two instances locking the same rows lock them in the same order (no deadlock).
      const keys = [...new Set(entries.map((e) => e.key))].sort();
      // Assignments apply left to right: `hits` is decided on the old expires_at before it is renewed.
      await pool.query(
        `INSERT INTO rate_limit_windows (limit_key, hits, expires_at) VALUES ${keys.map(() => "(?, 1, ?)").join(", ")}
         ON DUPLICATE KEY UPDATE hits = IF(expires_at <= ?, 1, hits + 1), expires_at = IF(expires_at <= ?, ?, expires_at)`,
        [...keys.flatMap((key) => [key, now + windowMs]), now, now, now + windowMs],
      );
      // Read after the write: another instance's hit in between can only raise the counts (refuse sooner).
      const [rows] = await pool.query<RowDataPacket[]>("SELECT limit_key, hits, expires_at FROM rate_limit_windows WHERE limit_key IN (?)", [keys]);
      const byKey = new Map(rows.map((r) => [String(r.limit_key), { hits: Number(r.hits), expiresAt: Number(r.expires_at) }]));
      let retryAfterMs = 0;
      for (const { key, limit } of entries) {
        const window = byKey.get(key);
        if (window && window.hits > limit) retryAfterMs = Math.max(retryAfterMs, window.expiresAt - now);
      }
      maybePurge(now);
      if (retryAfterMs > 0) throw rateLimitedError(retryAfterMs);
    },
    async close() {},
  };

  const backoff: PasswordBackoff = {
    async checkAllowed(username) {
      const now = clock();
      const [rows] = await pool.query<RowDataPacket[]>("SELECT blocked_until, expires_at FROM password_failures WHERE username = ?", [username]);
      const row = rows[0];
      if (row && Number(row.expires_at) > now && Number(row.blocked_until) > now) throw rateLimitedError(Number(row.blocked_until) - now);
    },
    async recordFailure(username) {
      const now = clock();
      const forgetAt = now + policy.forgetAfterMs;
      await pool.query(
        `INSERT INTO password_failures (username, failures, blocked_until, expires_at) VALUES (?, 1, 0, ?)
         ON DUPLICATE KEY UPDATE failures = IF(expires_at <= ?, 1, failures + 1), blocked_until = IF(expires_at <= ?, 0, blocked_until), expires_at = ?`,
        [username, forgetAt, now, now, forgetAt],
      );
      const [rows] = await pool.query<RowDataPacket[]>("SELECT failures FROM password_failures WHERE username = ?", [username]);
      const failures = Number(rows[0]?.failures ?? 1);
      const delayMs = backoffDelayMs(policy, failures);
      if (delayMs > 0) {
        await pool.query("UPDATE password_failures SET blocked_until = GREATEST(blocked_until, ?) WHERE username = ?", [now + delayMs, username]);
      }
      maybePurge(now);
      return { failures, delayMs };
    },
    async recordSuccess(username) {
      await pool.query("DELETE FROM password_failures WHERE username = ?", [username]);
    },
    async close() {},
  };

  return {
    limiter,
    backoff,
    migrate: async () => {
      for (const statement of MIGRATIONS) await pool.query(statement);
    },
    purgeExpired,
  };
}

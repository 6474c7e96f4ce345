/**
 * Revoked session ids in MySQL, for relays without Redis: one row per revocation, purged once its token
 * would have expired. Without Redis there is one relay instance, so session events stay in this process.
 */
import type { Pool } from "mysql2/promise";
import { listenerSet, type SessionRevocations } from "./revocations";

const PURGE_EVERY_MS = 60_000;

export function createMysqlRevocations(options: { pool: Pool; clock?: () => number }): SessionRevocations {
  const { pool } = options;
  const clock = options.clock ?? Date.now;
  const listeners = listenerSet();
  let lastPurge = 0;
  return {
    kind: "mysql",
    async migrate() {
      await pool.query(`CREATE TABLE IF NOT EXISTS session_revocations (
        token_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
        expires_at BIGINT NOT NULL,
        KEY session_revocations_expiry (expires_at)
      ) ENGINE=InnoDB`);
      await pool.query(`CREATE TABLE IF NOT EXISTS session_device_revocations (
        username VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        device_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (username, device_id),
        KEY session_device_revocations_expiry (expires_at)
      ) ENGINE=InnoDB`);
    },
    async revoke(jti, expiresAt) {
      const now = clock();
      if (expiresAt <= now) return;
      await pool.query("INSERT INTO session_revocations (token_id, expires_at) VALUES (?, ?) ON DUPLICATE KEY UPDATE expires_at = VALUES(expires_at)", [jti, expiresAt]);
      if (now - lastPurge > PURGE_EVERY_MS) {
        lastPurge = now;
        await pool.query("DELETE FROM session_revocations WHERE expires_at <= ?", [now]);
        await pool.query("DELETE FROM session_device_revocations WHERE expires_at <= ?", [now]);
      }
    },
    async isRevoked(jti) {
      const [rows] = await pool.query<any[]>("SELECT 1 FROM session_revocations WHERE token_id = ? AND expires_at > ?", [jti, clock()]);
      return rows.length > 0;
    },
    async revokeDevice(username, deviceId, until) {
      if (until <= clock()) return;
      await pool.query(
        "INSERT INTO session_device_revocations (username, device_id, expires_at) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE expires_at = GREATEST(expires_at, VALUES(expires_at))",
        [username, deviceId, until],
      );
    },
    async isDeviceRevoked(username, deviceId) {
      const [rows] = await pool.query<any[]>("SELECT 1 FROM session_device_revocations WHERE username = ? AND device_id = ? AND expires_at > ?", [username, deviceId, clock()]);
      return rows.length > 0;
    },
    announce: async (event) => listeners.emit(event),
    onEvent: listeners.add,
    close: async () => undefined,
  };
}

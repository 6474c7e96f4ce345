/**
 * Devices and link requests in MySQL/MariaDB, shared by every relay instance. Adding a device runs in one
 * transaction that first locks the user's row in `device_owners`, so two approvals for the same user (on
 * two instances) cannot both pass the device limit. Times are Unix ms (BIGINT).
 */
import type { Pool, PoolConnection } from "mysql2/promise";
import { DeviceStoreError, type DeviceLinkRecord, type DeviceRecord, type DeviceStore } from "./devices-types";

const ER_DUP_ENTRY = 1062;
const ER_LOCK_DEADLOCK = 1213;
const ER_LOCK_WAIT_TIMEOUT = 1205;
const TRANSACTION_ATTEMPTS = 3;

const errno = (error: unknown) => (error as { errno?: number })?.errno;
const bytes = (value: Buffer | Uint8Array) => new Uint8Array(value);
const time = (value: unknown) => (value === null || value === undefined ? null : Number(value));

function deviceOf(row: any): DeviceRecord {
  return {
    username: row.username,
    deviceId: row.device_id,
    publicKey: bytes(row.public_key),
    keyIndex: Number(row.key_index),
    credential: bytes(row.credential),
    name: row.name ?? null,
    linkedAt: Number(row.linked_at),
    lastSeenAt: time(row.last_seen_at),
    revokedAt: time(row.revoked_at),
  };
}

function linkOf(row: any): DeviceLinkRecord {
  return {
    code: row.code,
    secretHash: bytes(row.secret_hash),
    username: row.username,
    publicKey: bytes(row.public_key),
    name: row.name ?? null,
    createdAt: Number(row.created_at),
    expiresAt: Number(row.expires_at),
    approved:
      row.device_id === null ? null : { deviceId: row.device_id, keyIndex: Number(row.key_index), credential: bytes(row.credential) },
  };
}

const DEVICE_COLUMNS = "username, device_id, public_key, key_index, credential, name, linked_at, last_seen_at, revoked_at";
const LINK_COLUMNS = "code, secret_hash, username, public_key, name, created_at, expires_at, device_id, key_index, credential";

export function createMysqlDeviceStore(pool: Pool): DeviceStore {
  async function transaction<T>(work: (conn: PoolConnection) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const conn = await pool.getConnection();
      try {
        await conn.beginTransaction();
        const result = await work(conn);
        await conn.commit();
        return result;
      } catch (error) {
        await conn.rollback().catch(() => undefined);
        const code = errno(error);
        if (attempt < TRANSACTION_ATTEMPTS && (code === ER_LOCK_DEADLOCK || code === ER_LOCK_WAIT_TIMEOUT)) continue;
        throw error;
      } finally {
        conn.release();
      }
    }
  }

  /** Serialises every change of one user's devices: the row lock is held until the transaction ends. */
  async function lockOwner(conn: PoolConnection, username: string): Promise<void> {
    await conn.query("INSERT IGNORE INTO device_owners (username) VALUES (?)", [username]);
    await conn.query("SELECT username FROM device_owners WHERE username = ? FOR UPDATE", [username]);
  }

  /** The user's unrevoked devices, checked against the limit and the key; throws as approveLink/registerDevice document. */
  async function admit(conn: PoolConnection, device: DeviceRecord, maxDevices: number): Promise<void> {
    const [rows] = await conn.query<any[]>("SELECT device_id, public_key FROM devices WHERE username = ? AND revoked_at IS NULL", [device.username]);
    const same = rows.find((r) => Buffer.compare(r.public_key, Buffer.from(device.publicKey)) === 0);
    if (same) throw new DeviceStoreError("KEY_LINKED", `this key is already device ${same.device_id}`);
    if (rows.length >= maxDevices) throw new DeviceStoreError("DEVICES_FULL", `${device.username} has ${rows.length} devices`);
  }

  async function insertDevice(conn: PoolConnection, d: DeviceRecord): Promise<void> {
    try {
      await conn.query(`INSERT INTO devices (${DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
        d.username,
        d.deviceId,
        Buffer.from(d.publicKey),
        d.keyIndex,
        Buffer.from(d.credential),
        d.name,
        d.linkedAt,
        d.lastSeenAt,
        d.revokedAt,
      ]);
    } catch (error) {
      if (errno(error) === ER_DUP_ENTRY) throw new DeviceStoreError("DEVICE_TAKEN", "device id taken");
      throw error;
    }
  }

  return {
    kind: "mysql",
    async migrate() {
      await pool.query(`CREATE TABLE IF NOT EXISTS device_owners (
        username VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY
      ) ENGINE=InnoDB`);
      await pool.query(`CREATE TABLE IF NOT EXISTS devices (
        username VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        device_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        public_key BINARY(32) NOT NULL,
        key_index INT UNSIGNED NOT NULL,
        credential VARBINARY(255) NOT NULL,
        name VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
        linked_at BIGINT NOT NULL,
        last_seen_at BIGINT NULL,
        revoked_at BIGINT NULL,
        PRIMARY KEY (username, device_id),
        KEY devices_revoked (revoked_at)
      ) ENGINE=InnoDB`);
      await pool.query(`CREATE TABLE IF NOT EXISTS device_links (
        code CHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
        secret_hash BINARY(32) NOT NULL,
        username VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        public_key BINARY(32) NOT NULL,
        name VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        device_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
        key_index INT UNSIGNED NULL,
        credential VARBINARY(255) NULL,
        UNIQUE KEY device_links_secret (secret_hash),
        KEY device_links_user (username, expires_at),
        KEY device_links_expiry (expires_at)
      ) ENGINE=InnoDB`);
    },
    async createLink({ link, maxPendingPerUser, now }) {
      await transaction(async (conn) => {
        await lockOwner(conn, link.username);
        const [rows] = await conn.query<any[]>(
          "SELECT COUNT(*) AS n FROM device_links WHERE username = ? AND expires_at > ? AND device_id IS NULL",
          [link.username, now],
        );
        const pending = Number(rows[0].n);
        if (pending >= maxPendingPerUser) throw new DeviceStoreError("LINKS_FULL", `${link.username} has ${pending} link requests waiting`);
        // An expired request may still hold the code until the next sweep: it no longer counts.
        await conn.query("DELETE FROM device_links WHERE code = ? AND expires_at <= ?", [link.code, now]);
        try {
          await conn.query(`INSERT INTO device_links (${LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)`, [
            link.code,
            Buffer.from(link.secretHash),
            link.username,
            Buffer.from(link.publicKey),
            link.name,
            link.createdAt,
            link.expiresAt,
          ]);
        } catch (error) {
          if (errno(error) === ER_DUP_ENTRY) throw new DeviceStoreError("CODE_TAKEN", "link code taken");
          throw error;
        }
      });
    },
    async linkByCode(code, now) {
      const [rows] = await pool.query<any[]>(`SELECT ${LINK_COLUMNS} FROM device_links WHERE code = ? AND expires_at > ?`, [code, now]);
      return rows.length ? linkOf(rows[0]) : null;
    },
    async linkBySecretHash(secretHash, now) {
      const [rows] = await pool.query<any[]>(`SELECT ${LINK_COLUMNS} FROM device_links WHERE secret_hash = ? AND expires_at > ?`, [
        Buffer.from(secretHash),
        now,
      ]);
      return rows.length ? linkOf(rows[0]) : null;
    },
    async approveLink({ code, device, maxDevices, now, answerUntil }) {
      return transaction(async (conn) => {
        await lockOwner(conn, device.username);
        const [links] = await conn.query<any[]>(
          "SELECT code FROM device_links WHERE code = ? AND username = ? AND expires_at > ? AND device_id IS NULL FOR UPDATE",
          [code, device.username, now],
        );
        if (links.length === 0) throw new DeviceStoreError("NO_SUCH_LINK", "no such link request waiting");
        await admit(conn, device, maxDevices);
        await insertDevice(conn, device);
        await conn.query("UPDATE device_links SET device_id = ?, key_index = ?, credential = ?, expires_at = ? WHERE code = ?", [
          device.deviceId,
          device.keyIndex,
          Buffer.from(device.credential),
          answerUntil,
          code,
        ]);
        return device;
      });
    },
    async registerDevice({ device, maxDevices }) {
      return transaction(async (conn) => {
        await lockOwner(conn, device.username);
        const [rows] = await conn.query<any[]>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE username = ? AND device_id = ?`, [
          device.username,
          device.deviceId,
        ]);
        if (rows.length > 0) {
          const existing = deviceOf(rows[0]);
          if (existing.revokedAt !== null || Buffer.compare(Buffer.from(existing.publicKey), Buffer.from(device.publicKey)) !== 0) {
            throw new DeviceStoreError("DEVICE_TAKEN", existing.revokedAt !== null ? "this device was revoked" : "this device id has another key");
          }
          await conn.query(
            "UPDATE devices SET key_index = IF(? >= key_index, ?, key_index), credential = IF(? >= key_index, ?, credential), name = COALESCE(?, name) WHERE username = ? AND device_id = ?",
            [device.keyIndex, device.keyIndex, device.keyIndex, Buffer.from(device.credential), device.name, device.username, device.deviceId],
          );
          const [again] = await conn.query<any[]>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE username = ? AND device_id = ?`, [
            device.username,
            device.deviceId,
          ]);
          return deviceOf(again[0]);
        }
        await admit(conn, device, maxDevices);
        await insertDevice(conn, device);
        return device;
      });
    },
    async device(username, deviceId) {
      const [rows] = await pool.query<any[]>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE username = ? AND device_id = ?`, [username, deviceId]);
      return rows.length ? deviceOf(rows[0]) : null;
    },
    async devices(username) {
      const [rows] = await pool.query<any[]>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE username = ? ORDER BY linked_at, device_id`, [username]);
      return rows.map(deviceOf);
    },
    async revokeDevice({ username, deviceId, now }) {
      await pool.query("UPDATE devices SET revoked_at = ? WHERE username = ? AND device_id = ? AND revoked_at IS NULL", [now, username, deviceId]);
      const [rows] = await pool.query<any[]>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE username = ? AND device_id = ?`, [username, deviceId]);
      return rows.length ? deviceOf(rows[0]) : null;
    },
    async updateCredential({ username, deviceId, keyIndex, credential }) {
      const [result] = await pool.query<any>(
        "UPDATE devices SET key_index = ?, credential = ? WHERE username = ? AND device_id = ? AND revoked_at IS NULL AND key_index <= ?",
        [keyIndex, Buffer.from(credential), username, deviceId, keyIndex],
      );
      return result.affectedRows > 0;
    },
    async touch(username, deviceId, now) {
      await pool.query("UPDATE devices SET last_seen_at = GREATEST(COALESCE(last_seen_at, 0), ?) WHERE username = ? AND device_id = ?", [now, username, deviceId]);
    },
    async sweep({ now, revokedBefore }) {
      const [links] = await pool.query<any>("DELETE FROM device_links WHERE expires_at <= ?", [now]);
      const [devices] = await pool.query<any>("DELETE FROM devices WHERE revoked_at IS NOT NULL AND revoked_at < ?", [revokedBefore]);
      return Number(links.affectedRows) + Number(devices.affectedRows);
    },
    close: async () => undefined,
  };
}

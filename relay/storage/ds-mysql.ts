/**
 * The Delivery Service stores in MySQL/MariaDB (MariaDB 10.11 tested), shared by every relay instance.
 * The pool must be created with supportBigNumbers and bigNumberStrings (relay/storage/mysql-pool.ts).
 *
 * Every statement is prepared (pool.execute): bytes travel as binary parameters, never as text in a query.
 * The two calls every message costs (an application append, a cursor move) are stored procedures created by
 * migrate(), one round trip each; the relay's MySQL user needs CREATE ROUTINE and EXECUTE for them (without,
 * the same steps run as plain statements).
 * Writes that must be atomic run in one READ COMMITTED transaction that first locks the row it orders on:
 * the group row for appends (so the epoch check, the seq and the insert are one step, and seqs commit in
 * order), the user row for key package uploads (so caps hold), and each claimed key package with
 * FOR UPDATE SKIP LOCKED (so two instances claiming at once take different packages).
 */
import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from "mysql2/promise";
import { createSerialBatcher } from "./serial-batcher";
import {
  APPLICATION_EPOCH_WINDOW,
  DsError,
  INITIAL_EPOCH,
  MAX_DEVICES_PER_USER,
  MAX_GROUP_DEVICES,
  MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE,
  checkApplication,
  checkCommit,
  checkCount,
  checkDevice,
  checkDevices,
  checkGroupId,
  checkKeyPackages,
  checkLimit,
  checkUsername,
  checkWelcomeId,
  deviceKey,
  epochAccepted,
  type AppendBase,
  type AppendResult,
  type ClaimedKeyPackage,
  type DeliveryServiceStore,
  type DeviceRef,
  type GroupState,
  type KeyPackageCounts,
  type LogEntry,
  type LogEntryKind,
  type WelcomeUpload,
} from "./ds-types";

const KIND_CODE: Record<LogEntryKind, number> = { handshake: 0, application: 1 };
const KIND_OF_CODE: LogEntryKind[] = ["handshake", "application"];
/** MySQL error numbers after which the whole transaction may simply run again. */
const ER_LOCK_WAIT_TIMEOUT = 1205;
const ER_LOCK_DEADLOCK = 1213;
const ER_DUP_ENTRY = 1062;
const ER_SP_ALREADY_EXISTS = 1304;
const ER_NO_SUCH_TABLE = 1146;
const TRANSACTION_ATTEMPTS = 5;
type SqlParam = string | number | Buffer;

/** Cursor moves written together at most; bounds the statement's JSON parameter. */
const MAX_CURSOR_BATCH = 128;
/** Log entries a purge reads at once, and the most chunks one purge goes through (the rest waits for the next). */
const PURGE_CHUNK = 500;
const PURGE_MAX_CHUNKS = 200;
/**
 * How long a cursor move waits for others to share its round trips. Nothing waits on a move sent as a
 * WebSocket frame, a lost one only makes its device skip entries it has again, and under load one batch
 * of two statements then serves many deliveries instead of one CALL each.
 */
const CURSOR_LINGER_MS = 20;
/**
 * Application appends stored in one transaction at most; small messages only, so a batch stays well under
 * max_allowed_packet. While the relay's event loop is saturated each batch waits for it, and a batch that may
 * grow keeps up where one of 64 fell behind for good: on a 2-core VM offered 6,400 appends a second, batches
 * of up to 256 (200-240 each) delivered everything in 5 attempts of 6 (p99 52-160 ms), where batches of 64,
 * full, let the queue run away in all 7 (p99 5.6-9.6 s, thousands of appends refused or sent over HTTP).
 */
const MAX_APPEND_BATCH = 256;
/** Rows of one prepared INSERT into ds_append_items: up to this many, or a multiple of it (see appendItemsInsert). */
const APPEND_INSERT_ROWS = 64;
/**
 * The least time between two append batches while fewer than APPEND_PACE_BELOW appends wait. A batch costs
 * MariaDB about half a millisecond of CPU beyond its items (more for the set-based procedure), and without a
 * pause a busy relay sends a batch of two or three as soon as the one before returns. 8 ms and 48 (against 5
 * ms and 16) let batches grow to 40-50 appends at 6,400 a second, where the set-based procedure pays most:
 * MariaDB's CPU per message fell by a quarter there and a fifth at 3,200, and the share of time a batch was
 * in flight from 0.95-1.0 to 0.63-0.81, for about 2.5 ms more latency at p50. An append into an idle store
 * is not held, and 48 waiting stay under what one socket may have waiting (MAX_APPENDS_WAITING, 64).
 */
const APPEND_MIN_INTERVAL_MS = 8;
const APPEND_PACE_BELOW = 48;
/**
 * A batch goes to the set-based procedure when it holds at least this many appends (and no message id
 * repeats in it). With the items passed in ds_append_items, a batch of 4-12 appends to as many groups cost
 * MariaDB 2.5-3.2 ms of CPU there against 2.5-4.3 in the loop (2 appends: the same).
 */
const SET_BASED_MIN_ITEMS = 4;
/**
 * The largest message stored in a batch (larger ones go alone). It must fit ds_append_items' VARBINARY column,
 * and its base64 text the JSON loop's VARCHAR one (BATCHED_APPEND_MAX_BASE64), so that the items' cursor stays
 * an in-memory temporary table: a BLOB or TEXT column moves it to disk and cost every batch about half a
 * millisecond of MariaDB's CPU.
 */
export const BATCHED_APPEND_MAX_BYTES = 2048;
const BATCHED_APPEND_MAX_BASE64 = Math.ceil(BATCHED_APPEND_MAX_BYTES / 3) * 4;
type AppendItem = AppendBase & { withMemberUsernames?: boolean };
type AppendOutcome = AppendResult | { error: DsError };
type CursorMove = { device: DeviceRef; groupId: Uint8Array; seq: number };
type CursorOutcome = { cursor: number } | { error: DsError };

const bin = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
/** A plain Uint8Array copy, so callers never hold a Buffer from the driver's pool. */
const bytesOut = (value: unknown) => new Uint8Array(value as Buffer);
const errno = (error: unknown) => (error as { errno?: number }).errno;

const TABLES = [
  // One row per user that ever uploaded key packages: locked while uploading so that caps hold across instances.
  `CREATE TABLE IF NOT EXISTS ds_key_package_owners (
    username VARCHAR(32) NOT NULL,
    PRIMARY KEY (username)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  `CREATE TABLE IF NOT EXISTS ds_devices (
    username VARCHAR(32) NOT NULL,
    device_id VARCHAR(64) NOT NULL,
    PRIMARY KEY (username, device_id)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  `CREATE TABLE IF NOT EXISTS ds_key_packages (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    username VARCHAR(32) NOT NULL,
    device_id VARCHAR(64) NOT NULL,
    bytes BLOB NOT NULL,
    not_after BIGINT NOT NULL,
    PRIMARY KEY (id),
    KEY ds_key_packages_device (username, device_id, id),
    KEY ds_key_packages_expiry (not_after)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  `CREATE TABLE IF NOT EXISTS ds_last_resort_key_packages (
    username VARCHAR(32) NOT NULL,
    device_id VARCHAR(64) NOT NULL,
    bytes BLOB NOT NULL,
    not_after BIGINT NOT NULL,
    PRIMARY KEY (username, device_id),
    KEY ds_last_resort_expiry (not_after)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  `CREATE TABLE IF NOT EXISTS ds_groups (
    id BINARY(32) NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    last_seq BIGINT UNSIGNED NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (id)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  // cursor_seq: the last seq the device has processed. Looked up by device for catch-up (pendingFor).
  `CREATE TABLE IF NOT EXISTS ds_members (
    group_id BINARY(32) NOT NULL,
    username VARCHAR(32) NOT NULL,
    device_id VARCHAR(64) NOT NULL,
    cursor_seq BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (group_id, username, device_id),
    KEY ds_members_device (username, device_id)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  // kind: 0 handshake, 1 application. The primary key (group_id, seq) is the paging order.
  `CREATE TABLE IF NOT EXISTS ds_log (
    group_id BINARY(32) NOT NULL,
    seq BIGINT UNSIGNED NOT NULL,
    epoch BIGINT UNSIGNED NOT NULL,
    kind TINYINT NOT NULL,
    sender_username VARCHAR(32) NOT NULL,
    sender_device VARCHAR(64) NOT NULL,
    message_id VARCHAR(64) NOT NULL,
    bytes MEDIUMBLOB NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, seq),
    UNIQUE KEY ds_log_message (group_id, sender_username, sender_device, message_id),
    KEY ds_log_age (received_at)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  `CREATE TABLE IF NOT EXISTS ds_welcomes (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    username VARCHAR(32) NOT NULL,
    device_id VARCHAR(64) NOT NULL,
    group_id BINARY(32) NOT NULL,
    bytes MEDIUMBLOB NOT NULL,
    received_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (id),
    KEY ds_welcomes_device (username, device_id, id),
    KEY ds_welcomes_expiry (expires_at)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
];

/**
 * The two statements every message costs, as stored procedures: one round trip each instead of six and
 * two. The names carry a version: a changed body gets a new name, so instances of different versions can
 * share one database while they are upgraded one by one.
 *
 * An application append: the same transaction as append() below (READ COMMITTED, the group row locked
 * first, the verdict of epochAccepted with the window passed in), committed before the CALL answers; then
 * the member users, for the notice. A caught-up sender's cursor moves past its own message in the same
 * transaction. Outcome codes: accepted, duplicate, conflict, unknown, not-member.
 */
const APPEND_APPLICATION = "ds_append_application_v2";
/** A cursor move: a plain read of the end and the cursor (no lock, so it never waits for an append), then the move. */
const ADVANCE_CURSOR = "ds_advance_cursor_v1";
/**
 * Application appends that arrive together, in one transaction and one commit: each item gets the verdict
 * APPEND_APPLICATION would give it (a refused item rolls nothing back), the items sorted by group first so
 * that every batch locks group rows in one order. Items come as a JSON array of {g: group hex, e: epoch,
 * u: username, d: device, m: message id, b: base64 bytes, r: received at}, read once through JSON_TABLE; a
 * group's row is locked and read once for its run of items and written once after it. The verdicts go back
 * as one text, `;`-separated in item order, each `code,seq,epoch,cursor` (a accepted, d duplicate, c
 * conflict, u unknown group, n not a member), then the member users of the batch's groups.
 */
const APPEND_APPLICATIONS_JSON = "ds_append_applications_v3";
/**
 * The same loop, its items read from the connection's temporary table ds_append_items (APPEND_ITEMS_TABLE),
 * which the relay fills with one prepared multi-row INSERT right before the CALL: binary parameters, so
 * MariaDB parses no JSON and decodes no base64. For 16 items of 350 bytes the JSON_TABLE read cost MariaDB
 * about 1.1 ms of CPU and the INSERT about 0.1 ms. Items carry the batch's number (p_batch), and the CALL
 * empties the table, so that rows left by a failed batch are never read as another's.
 */
const APPEND_APPLICATIONS = "ds_append_applications_v4";
/**
 * The same batch, the same verdicts and answer, as set statements instead of a loop over the items (read from
 * ds_append_items as the loop reads them), for a batch in which no message id repeats: every group of the
 * batch is locked at once in key order (by primary key lookups from the batch's items: a statement that
 * scanned ds_groups would take time in proportion to all groups and wait for any group another transaction
 * holds), every item is judged by one INSERT ... SELECT (window functions count what the items before it in
 * its group did), stored by one INSERT, and the groups' seqs and the caught-up senders' cursors written by
 * one UPDATE each. A repeated id is judged against the batch's own first copy, which only the loop sees.
 */
const APPEND_APPLICATIONS_SET = "ds_append_applications_set_v4";
/**
 * The items of one batch of appends, per connection (a temporary table). A MEMORY table:
 * VARBINARY, not BLOB, so that it and the loop's cursor over it stay in memory. BTREE keys (a MEMORY table's
 * default is HASH, which cannot look up a prefix): a batch's items are read by its number, in item order.
 */
const APPEND_ITEMS_TABLE = `CREATE TEMPORARY TABLE IF NOT EXISTS ds_append_items (
  batch BIGINT UNSIGNED NOT NULL, k INT NOT NULL, g BINARY(32) NOT NULL, e BIGINT UNSIGNED NOT NULL,
  u VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, d VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  m VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, b VARBINARY(${BATCHED_APPEND_MAX_BYTES}) NOT NULL, r BIGINT NOT NULL,
  PRIMARY KEY (batch, k) USING BTREE) ENGINE=MEMORY`;
/** The set-based procedure's verdicts, one row per item; created before ds_append_items, so that a connection with that one has both. */
const APPEND_VERDICTS_TABLE = `CREATE TEMPORARY TABLE IF NOT EXISTS ds_append_verdicts (
  k INT NOT NULL, g BINARY(32) NOT NULL, u VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  d VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, o CHAR(1) NOT NULL, s BIGINT UNSIGNED NOT NULL,
  e BIGINT UNSIGNED NOT NULL, c BIGINT UNSIGNED NOT NULL, moved TINYINT NOT NULL, PRIMARY KEY (k)) ENGINE=MEMORY`;
const APPEND_ITEM_COLUMNS = 9;
/**
 * The INSERT of `count` items into ds_append_items, one text per count, each prepared once per connection:
 * counts up to APPEND_INSERT_ROWS and its multiples only, so that a connection holds at most 67 of them
 * (MariaDB bounds prepared statements server-wide by max_prepared_stmt_count), and a batch goes in at most two.
 */
const appendItemsInserts = new Map<number, string>();
function appendItemsInsert(count: number): string {
  if (count < 1 || count > MAX_APPEND_BATCH || (count > APPEND_INSERT_ROWS && count % APPEND_INSERT_ROWS !== 0)) throw new Error(`no INSERT of ${count} append items`);
  let sql = appendItemsInserts.get(count);
  if (sql === undefined) {
    sql = `INSERT INTO ds_append_items (batch, k, g, e, u, d, m, b, r) VALUES ${Array(count).fill(`(${Array(APPEND_ITEM_COLUMNS).fill("?").join(", ")})`).join(", ")}`;
    appendItemsInserts.set(count, sql);
  }
  return sql;
}
/** How a batch of `count` items is split into INSERTs: a multiple of APPEND_INSERT_ROWS, then the rest. */
function appendItemsChunks(count: number): number[] {
  if (count <= APPEND_INSERT_ROWS) return [count];
  const rest = count % APPEND_INSERT_ROWS;
  return rest === 0 ? [count] : [count - rest, rest];
}

/**
 * The loop of APPEND_APPLICATIONS_JSON and APPEND_APPLICATIONS, for either source of a batch's items (in group
 * order): `items` selects (group, epoch, user, device, id, bytes, received at), `group` and `bytes` turn what
 * it gives into the group id and the message's bytes, `groups` selects the batch's group ids, and `cleanUp`
 * runs once the batch is done or has failed.
 */
function appendLoopProcedure(from: {
  name: string;
  input: string;
  groupType: string;
  bytesType: string;
  items: string;
  group: (column: string) => string;
  bytes: (column: string) => string;
  groups: string;
  cleanUp: string;
}): string {
  return `CREATE PROCEDURE IF NOT EXISTS ${from.name}(${from.input}, IN p_window BIGINT UNSIGNED)
  MODIFIES SQL DATA
  BEGIN
    DECLARE v_done INT DEFAULT 0;
    DECLARE v_group_in ${from.groupType};
    DECLARE v_group BINARY(32);
    DECLARE v_epoch_in BIGINT UNSIGNED;
    DECLARE v_username VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
    DECLARE v_device VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
    DECLARE v_message_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
    DECLARE v_bytes ${from.bytesType};
    DECLARE v_received_at BIGINT;
    DECLARE v_locked BINARY(32) DEFAULT NULL;
    DECLARE v_epoch BIGINT UNSIGNED;
    DECLARE v_last_seq BIGINT UNSIGNED;
    DECLARE v_locked_seq BIGINT UNSIGNED;
    DECLARE v_cursor BIGINT UNSIGNED;
    DECLARE v_existing_seq BIGINT UNSIGNED;
    DECLARE v_existing_epoch BIGINT UNSIGNED;
    DECLARE v_out LONGTEXT DEFAULT '';
    DECLARE items CURSOR FOR ${from.items};
    -- Also raised by a SELECT ... INTO that finds no row: v_done is only read right after a FETCH, and reset after each such SELECT.
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_done = 1;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK;${from.cleanUp} RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    OPEN items;
    each_item: LOOP
      FETCH items INTO v_group_in, v_epoch_in, v_username, v_device, v_message_id, v_bytes, v_received_at;
      IF v_done = 1 THEN LEAVE each_item; END IF;
      SET v_group = ${from.group("v_group_in")};
      IF v_locked IS NULL OR v_locked <> v_group THEN
        IF v_last_seq > v_locked_seq THEN UPDATE ds_groups SET last_seq = v_last_seq WHERE id = v_locked; END IF;
        SET v_epoch = NULL, v_last_seq = NULL;
        SELECT epoch, last_seq INTO v_epoch, v_last_seq FROM ds_groups WHERE id = v_group FOR UPDATE;
        SET v_done = 0, v_locked = v_group, v_locked_seq = v_last_seq;
      END IF;
      SET v_cursor = NULL, v_existing_seq = NULL, v_existing_epoch = NULL;
      IF v_epoch IS NOT NULL THEN
        -- Under the group's lock: the sender's membership and cursor, and an entry of the same id (this batch's own included).
        SELECT m.cursor_seq, l.seq, l.epoch INTO v_cursor, v_existing_seq, v_existing_epoch
          FROM ds_members m LEFT JOIN ds_log l
            ON l.group_id = m.group_id AND l.sender_username = m.username AND l.sender_device = m.device_id AND l.message_id = v_message_id
          WHERE m.group_id = v_group AND m.username = v_username AND m.device_id = v_device;
        SET v_done = 0;
      END IF;
      IF v_epoch IS NULL THEN
        SET v_out = CONCAT(v_out, 'u,0,0,0;');
      ELSEIF v_cursor IS NULL THEN
        SET v_out = CONCAT(v_out, 'n,0,0,0;');
      ELSEIF v_existing_seq IS NOT NULL THEN
        SET v_out = CONCAT(v_out, 'd,', v_existing_seq, ',', v_existing_epoch, ',', v_cursor, ';');
      ELSEIF v_epoch_in > v_epoch OR v_epoch_in + p_window < v_epoch THEN
        SET v_out = CONCAT(v_out, 'c,0,', v_epoch, ',0;');
      ELSE
        SET v_last_seq = v_last_seq + 1;
        INSERT INTO ds_log (group_id, seq, epoch, kind, sender_username, sender_device, message_id, bytes, received_at)
          VALUES (v_group, v_last_seq, v_epoch_in, ${KIND_CODE.application}, v_username, v_device, v_message_id, ${from.bytes("v_bytes")}, v_received_at);
        IF v_cursor = v_last_seq - 1 THEN
          UPDATE ds_members SET cursor_seq = v_last_seq WHERE group_id = v_group AND username = v_username AND device_id = v_device;
          SET v_cursor = v_last_seq;
        END IF;
        SET v_out = CONCAT(v_out, 'a,', v_last_seq, ',', v_epoch_in, ',', v_cursor, ';');
      END IF;
    END LOOP;
    CLOSE items;
    IF v_last_seq > v_locked_seq THEN UPDATE ds_groups SET last_seq = v_last_seq WHERE id = v_locked; END IF;
    COMMIT;
    SELECT v_out AS verdicts;
    SELECT DISTINCT HEX(m.group_id) AS group_hex, m.username FROM ds_members m WHERE m.group_id IN (${from.groups});${from.cleanUp}
  END`;
}

const ROUTINES = [
  `CREATE PROCEDURE IF NOT EXISTS ${APPEND_APPLICATION}(
    IN p_group BINARY(32), IN p_epoch BIGINT UNSIGNED, IN p_window BIGINT UNSIGNED, IN p_username VARCHAR(32),
    IN p_device VARCHAR(64), IN p_message_id VARCHAR(64), IN p_bytes MEDIUMBLOB, IN p_received_at BIGINT)
  MODIFIES SQL DATA
  BEGIN
    DECLARE v_epoch BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_last_seq BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_cursor BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_existing_seq BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_existing_epoch BIGINT UNSIGNED DEFAULT NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT g.epoch, g.last_seq,
        (SELECT m.cursor_seq FROM ds_members m WHERE m.group_id = g.id AND m.username = p_username AND m.device_id = p_device),
        l.seq, l.epoch
      INTO v_epoch, v_last_seq, v_cursor, v_existing_seq, v_existing_epoch
      FROM ds_groups g LEFT JOIN ds_log l
        ON l.group_id = g.id AND l.sender_username = p_username AND l.sender_device = p_device AND l.message_id = p_message_id
      WHERE g.id = p_group FOR UPDATE;
    IF v_epoch IS NULL THEN
      ROLLBACK;
      SELECT 'unknown' AS outcome, 0 AS seq, 0 AS epoch;
    ELSEIF v_cursor IS NULL THEN
      ROLLBACK;
      SELECT 'not-member' AS outcome, 0 AS seq, 0 AS epoch;
    ELSEIF v_existing_seq IS NOT NULL THEN
      ROLLBACK;
      SELECT 'duplicate' AS outcome, v_existing_seq AS seq, v_existing_epoch AS epoch, v_cursor AS sender_cursor;
      SELECT DISTINCT username FROM ds_members WHERE group_id = p_group;
    ELSEIF p_epoch > v_epoch OR p_epoch + p_window < v_epoch THEN
      ROLLBACK;
      SELECT 'conflict' AS outcome, 0 AS seq, v_epoch AS epoch;
    ELSE
      UPDATE ds_groups SET last_seq = v_last_seq + 1 WHERE id = p_group;
      INSERT INTO ds_log (group_id, seq, epoch, kind, sender_username, sender_device, message_id, bytes, received_at)
        VALUES (p_group, v_last_seq + 1, p_epoch, ${KIND_CODE.application}, p_username, p_device, p_message_id, p_bytes, p_received_at);
      IF v_cursor = v_last_seq THEN
        UPDATE ds_members SET cursor_seq = v_last_seq + 1 WHERE group_id = p_group AND username = p_username AND device_id = p_device;
        SET v_cursor = v_last_seq + 1;
      END IF;
      COMMIT;
      SELECT 'accepted' AS outcome, v_last_seq + 1 AS seq, p_epoch AS epoch, v_cursor AS sender_cursor;
      SELECT DISTINCT username FROM ds_members WHERE group_id = p_group;
    END IF;
  END`,
  appendLoopProcedure({
    name: APPEND_APPLICATIONS_JSON,
    input: "IN p_items LONGTEXT",
    groupType: "CHAR(64)",
    bytesType: `VARCHAR(${BATCHED_APPEND_MAX_BASE64}) CHARACTER SET ascii`,
    items: `SELECT j.g, j.e, j.u, j.d, j.m, j.b, j.r FROM JSON_TABLE(p_items, '$[*]' COLUMNS (
        g CHAR(64) PATH '$.g', e BIGINT UNSIGNED PATH '$.e', u VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.u', d VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.d',
        m VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.m', b VARCHAR(${BATCHED_APPEND_MAX_BASE64}) CHARACTER SET ascii PATH '$.b', r BIGINT PATH '$.r')) AS j`,
    group: (column) => `UNHEX(${column})`,
    bytes: (column) => `FROM_BASE64(${column})`,
    groups: "SELECT UNHEX(j.g) FROM JSON_TABLE(p_items, '$[*]' COLUMNS (g CHAR(64) PATH '$.g')) AS j",
    cleanUp: "",
  }),
  appendLoopProcedure({
    name: APPEND_APPLICATIONS,
    input: "IN p_batch BIGINT UNSIGNED",
    groupType: "BINARY(32)",
    bytesType: `VARBINARY(${BATCHED_APPEND_MAX_BYTES})`,
    items: "SELECT i.g, i.e, i.u, i.d, i.m, i.b, i.r FROM ds_append_items i WHERE i.batch = p_batch ORDER BY i.k",
    group: (column) => column,
    bytes: (column) => column,
    groups: "SELECT i.g FROM ds_append_items i WHERE i.batch = p_batch",
    cleanUp: " DELETE FROM ds_append_items;",
  }),
  `CREATE PROCEDURE IF NOT EXISTS ${APPEND_APPLICATIONS_SET}(IN p_batch BIGINT UNSIGNED, IN p_window BIGINT UNSIGNED)
  MODIFIES SQL DATA
  BEGIN
    DECLARE v_locked INT DEFAULT 0;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; DELETE FROM ds_append_items; RESIGNAL; END;
    DELETE FROM ds_append_verdicts;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    -- Every group of the batch locked at once, in key order as every batch locks them: the items in their
    -- order (sorted by group) through their key, each group's row found by its primary key.
    SELECT COUNT(*) INTO v_locked FROM ds_append_items i STRAIGHT_JOIN ds_groups g ON g.id = i.g WHERE i.batch = p_batch FOR UPDATE;
    -- Each item's verdict as the loop would give it, in one pass: it depends only on the group and the log
    -- as they were (no id repeats within the batch), but for its seq, which counts the group's accepted
    -- items up to it (ga), and its sender's cursor. A caught-up sender's cursor moves with each of its own
    -- items while they follow it without a gap: its i-th accepted item of the group (xa) moves it when that
    -- item's seq is the cursor it started from plus i (the items before it then moved it too), and the
    -- cursor an item reports is that start plus the moves up to it (mv).
    INSERT INTO ds_append_verdicts (k, g, u, d, o, s, e, c, moved)
      SELECT w.k, w.g, w.u, w.d, w.o,
        CASE w.o WHEN 'a' THEN w.last_seq + w.ga WHEN 'd' THEN w.ls ELSE 0 END,
        CASE w.o WHEN 'a' THEN w.te WHEN 'd' THEN w.le WHEN 'c' THEN w.ge ELSE 0 END,
        CASE WHEN w.o IN ('a', 'd') THEN w.c0 + w.mv ELSE 0 END,
        w.moves
      FROM (
        SELECT x.*, SUM(x.moves) OVER (PARTITION BY x.g, x.u, x.d ORDER BY x.k ROWS UNBOUNDED PRECEDING) AS mv
        FROM (
          SELECT y.*, CASE WHEN y.o = 'a' AND y.last_seq + y.ga = y.c0 + y.xa THEN 1 ELSE 0 END AS moves
          FROM (
            SELECT z.*,
              SUM(z.o = 'a') OVER (PARTITION BY z.g ORDER BY z.k ROWS UNBOUNDED PRECEDING) AS ga,
              SUM(z.o = 'a') OVER (PARTITION BY z.g, z.u, z.d ORDER BY z.k ROWS UNBOUNDED PRECEDING) AS xa
            FROM (
              SELECT t.k, t.g, t.u, t.d, t.e AS te, gr.epoch AS ge, gr.last_seq, mb.cursor_seq AS c0, l.seq AS ls, l.epoch AS le,
                CASE WHEN gr.id IS NULL THEN 'u' WHEN mb.cursor_seq IS NULL THEN 'n' WHEN l.seq IS NOT NULL THEN 'd'
                     WHEN t.e > gr.epoch OR t.e + p_window < gr.epoch THEN 'c' ELSE 'a' END AS o
              FROM ds_append_items t
                LEFT JOIN ds_groups gr ON gr.id = t.g
                LEFT JOIN ds_members mb ON mb.group_id = t.g AND mb.username = t.u AND mb.device_id = t.d
                LEFT JOIN ds_log l ON l.group_id = t.g AND l.sender_username = t.u AND l.sender_device = t.d AND l.message_id = t.m
              WHERE t.batch = p_batch
            ) z
          ) y
        ) x
      ) w;
    INSERT INTO ds_log (group_id, seq, epoch, kind, sender_username, sender_device, message_id, bytes, received_at)
      SELECT t.g, v.s, t.e, ${KIND_CODE.application}, t.u, t.d, t.m, t.b, t.r
      FROM ds_append_verdicts v JOIN ds_append_items t ON t.batch = p_batch AND t.k = v.k WHERE v.o = 'a';
    UPDATE ds_groups gr JOIN (SELECT g, MAX(s) AS s FROM ds_append_verdicts WHERE o = 'a' GROUP BY g) v ON v.g = gr.id SET gr.last_seq = v.s;
    UPDATE ds_members mb JOIN (SELECT g, u, d, MAX(s) AS s FROM ds_append_verdicts WHERE moved = 1 GROUP BY g, u, d) v
        ON v.g = mb.group_id AND v.u = mb.username AND v.d = mb.device_id
      SET mb.cursor_seq = v.s;
    COMMIT;
    SELECT GROUP_CONCAT(CONCAT_WS(',', o, s, e, c) ORDER BY k SEPARATOR ';') AS verdicts FROM ds_append_verdicts;
    SELECT DISTINCT HEX(m.group_id) AS group_hex, m.username FROM ds_members m WHERE m.group_id IN (SELECT g FROM ds_append_items WHERE batch = p_batch);
    DELETE FROM ds_append_items;
  END`,
  `CREATE PROCEDURE IF NOT EXISTS ${ADVANCE_CURSOR}(IN p_group BINARY(32), IN p_username VARCHAR(32), IN p_device VARCHAR(64), IN p_seq BIGINT UNSIGNED)
  MODIFIES SQL DATA
  BEGIN
    DECLARE v_last_seq BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_cursor BIGINT UNSIGNED DEFAULT NULL;
    SELECT g.last_seq, m.cursor_seq INTO v_last_seq, v_cursor
      FROM ds_groups g LEFT JOIN ds_members m ON m.group_id = g.id AND m.username = p_username AND m.device_id = p_device
      WHERE g.id = p_group;
    IF v_last_seq IS NULL THEN
      SELECT 'unknown' AS outcome, 0 AS cursor_seq;
    ELSEIF p_seq > v_last_seq THEN
      SELECT 'beyond' AS outcome, 0 AS cursor_seq;
    ELSEIF v_cursor IS NULL THEN
      SELECT 'not-member' AS outcome, 0 AS cursor_seq;
    ELSEIF v_cursor >= p_seq THEN
      SELECT 'moved' AS outcome, v_cursor AS cursor_seq;
    ELSE
      -- GREATEST: a late acknowledgement arriving after a newer one never moves the cursor back.
      UPDATE ds_members SET cursor_seq = GREATEST(cursor_seq, p_seq) WHERE group_id = p_group AND username = p_username AND device_id = p_device;
      -- No row: the device was removed meanwhile.
      SELECT 'moved' AS outcome, cursor_seq FROM ds_members WHERE group_id = p_group AND username = p_username AND device_id = p_device;
    END IF;
  END`,
];

export interface MysqlDeliveryServiceOptions {
  /**
   * Which batches of appends go to the set-based procedure: by their shape (the default), all, or none (for
   * tests and measurements). None either way when its user may not create temporary tables.
   */
  setBasedBatches?: "auto" | "always" | "never";
  /** Told at migrate() why temporary tables cannot be used (every batch then goes to the loop, as JSON). */
  onSetBasedUnavailable?: (reason: string) => void;
}

/**
 * `onRoutinesUnavailable`: told why the stored procedures could not be created (the store then runs the same
 * steps as plain statements).
 */
export function createMysqlDeliveryServiceStore(
  pool: Pool,
  onRoutinesUnavailable?: (reason: string) => void,
  options: MysqlDeliveryServiceOptions = {},
): DeliveryServiceStore {
  /** whether migrate() could create the stored procedures (until it runs, they are assumed) */
  let procedures = true;
  /** whether batches can go through ds_append_items (and the set-based procedure): it needs the right to create temporary tables */
  let temporaryTablesUsable = true;
  /** Numbers this store's batches of appends, so that a batch's procedure reads only its own items. */
  let batchesStarted = 0;
  const inTransaction = async <T>(work: (conn: PoolConnection) => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      const conn = await pool.getConnection();
      try {
        await conn.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED");
        await conn.beginTransaction();
        const result = await work(conn);
        await conn.commit();
        return result;
      } catch (error) {
        await conn.rollback().catch(() => {});
        const code = errno(error);
        if (attempt < TRANSACTION_ATTEMPTS && (code === ER_LOCK_DEADLOCK || code === ER_LOCK_WAIT_TIMEOUT)) continue;
        throw error;
      } finally {
        conn.release();
      }
    }
  };

  const rows = async (conn: Pool | PoolConnection, sql: string, params: SqlParam[]) => (await conn.execute<RowDataPacket[]>(sql, params))[0];
  const textRows = async (sql: string, params: SqlParam[]) => (await pool.query<RowDataPacket[]>(sql, params))[0];
  /**
   * A procedure's result sets (the trailing status is dropped); a deadlock or lock wait timeout, after
   * which its transaction was rolled back, runs it again as inTransaction does.
   */
  const call = async (sql: string, params: SqlParam[]): Promise<RowDataPacket[][]> => {
    for (let attempt = 1; ; attempt++) {
      try {
        const [results] = await pool.execute<RowDataPacket[][]>(sql, params);
        return results.filter((r) => Array.isArray(r));
      } catch (error) {
        const code = errno(error);
        if (attempt < TRANSACTION_ATTEMPTS && (code === ER_LOCK_DEADLOCK || code === ER_LOCK_WAIT_TIMEOUT)) continue;
        throw error;
      }
    }
  };
  const write = async (conn: Pool | PoolConnection, sql: string, params: SqlParam[]) => (await conn.execute<ResultSetHeader>(sql, params))[0];

  const counts = async (conn: Pool | PoolConnection, device: DeviceRef, now: number): Promise<KeyPackageCounts> => {
    const [one] = await rows(conn, "SELECT COUNT(*) AS n FROM ds_key_packages WHERE username = ? AND device_id = ? AND not_after > ?", [device.username, device.deviceId, now]);
    const last = await rows(conn, "SELECT 1 FROM ds_last_resort_key_packages WHERE username = ? AND device_id = ? AND not_after > ?", [device.username, device.deviceId, now]);
    return { oneTime: Number(one.n), lastResort: last.length > 0 };
  };

  const lockGroup = async (conn: PoolConnection, groupId: Uint8Array) => {
    const [row] = await rows(conn, "SELECT epoch, last_seq FROM ds_groups WHERE id = ? FOR UPDATE", [bin(groupId)]);
    if (!row) throw new DsError("DS_UNKNOWN_GROUP", "no such group");
    return { epoch: Number(row.epoch), lastSeq: Number(row.last_seq) };
  };

  const changeMembers = async (conn: PoolConnection, groupId: Uint8Array, add: DeviceRef[], remove: DeviceRef[], cursor: number) => {
    for (const d of remove) await write(conn, "DELETE FROM ds_members WHERE group_id = ? AND username = ? AND device_id = ?", [bin(groupId), d.username, d.deviceId]);
    for (const d of add) {
      await write(conn, "INSERT IGNORE INTO ds_members (group_id, username, device_id, cursor_seq) VALUES (?, ?, ?, ?)", [bin(groupId), d.username, d.deviceId, cursor]);
    }
    if (add.length > 0) {
      const [row] = await rows(conn, "SELECT COUNT(*) AS n FROM ds_members WHERE group_id = ?", [bin(groupId)]);
      if (Number(row.n) > MAX_GROUP_DEVICES) throw new DsError("DS_LIMIT", `at most ${MAX_GROUP_DEVICES} devices per group`);
    }
  };

  const append = (
    kind: LogEntryKind,
    p: AppendBase,
    commit?: { add: DeviceRef[]; remove: DeviceRef[]; welcomes: WelcomeUpload[] },
  ): Promise<AppendResult> =>
    inTransaction(async (conn) => {
      // The group row lock orders every append to this group across instances: the epoch check, the
      // seq and the insert happen as one step, and a later seq can never become visible before an earlier one.
      // One round trip locks the group and answers membership and idempotency under that lock.
      const [group] = await rows(
        conn,
        `SELECT g.epoch, g.last_seq,
           (SELECT m.cursor_seq FROM ds_members m WHERE m.group_id = g.id AND m.username = ? AND m.device_id = ?) AS sender_cursor,
           (SELECT CONCAT(l.seq, ' ', l.epoch) FROM ds_log l
             WHERE l.group_id = g.id AND l.sender_username = ? AND l.sender_device = ? AND l.message_id = ?) AS existing
         FROM ds_groups g WHERE g.id = ? FOR UPDATE`,
        [p.sender.username, p.sender.deviceId, p.sender.username, p.sender.deviceId, p.messageId, bin(p.groupId)],
      );
      if (!group) throw new DsError("DS_UNKNOWN_GROUP", "no such group");
      if (group.sender_cursor === null) throw new DsError("DS_NOT_MEMBER", "the sender is not a member of the group");
      const cursor = Number(group.sender_cursor);
      const senderCursor = (next: number) => (kind === "application" ? { senderCursor: next } : {});
      if (group.existing !== null) {
        const [seq, epoch] = String(group.existing).split(" ").map(Number);
        return { accepted: true, seq, epoch, duplicate: true, ...senderCursor(cursor) };
      }
      const current = { epoch: Number(group.epoch), lastSeq: Number(group.last_seq) };
      if (!epochAccepted(kind, p.epoch, current.epoch)) return { accepted: false, currentEpoch: current.epoch };
      const seq = current.lastSeq + 1;
      await write(conn, "UPDATE ds_groups SET last_seq = ?, epoch = ? WHERE id = ?", [seq, commit ? current.epoch + 1 : current.epoch, bin(p.groupId)]);
      await write(
        conn,
        `INSERT INTO ds_log (group_id, seq, epoch, kind, sender_username, sender_device, message_id, bytes, received_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [bin(p.groupId), seq, p.epoch, KIND_CODE[kind], p.sender.username, p.sender.deviceId, p.messageId, bin(p.bytes), p.receivedAt],
      );
      if (kind === "application" && cursor === seq - 1) {
        // The sender has processed its own message: a caught-up sender's cursor moves with the append.
        await write(conn, "UPDATE ds_members SET cursor_seq = ? WHERE group_id = ? AND username = ? AND device_id = ?", [seq, bin(p.groupId), p.sender.username, p.sender.deviceId]);
      }
      if (commit) {
        await changeMembers(conn, p.groupId, commit.add, commit.remove, seq);
        for (const w of commit.welcomes) {
          await write(
            conn,
            "INSERT INTO ds_welcomes (username, device_id, group_id, bytes, received_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            [w.recipient.username, w.recipient.deviceId, bin(p.groupId), bin(w.bytes), p.receivedAt, w.expiresAt],
          );
        }
      }
      return { accepted: true, seq, epoch: p.epoch, duplicate: false, ...senderCursor(cursor === seq - 1 ? seq : cursor) };
    });

  const cursorRefusals = {
    unknown: () => new DsError("DS_UNKNOWN_GROUP", "no such group"),
    beyond: () => new DsError("DS_BAD_REQUEST", "cursor beyond the end of the log"),
    "not-member": () => new DsError("DS_NOT_MEMBER", "the device is not a member of the group"),
  };

  /** The verdict on one cursor move, given the group's end and the device's cursor (null: not a member). */
  const judgeMove = (move: CursorMove, lastSeq: number | undefined, cursor: number | null): CursorOutcome => {
    if (lastSeq === undefined) return { error: cursorRefusals.unknown() };
    if (move.seq > lastSeq) return { error: cursorRefusals.beyond() };
    if (cursor === null) return { error: cursorRefusals["not-member"]() };
    return { cursor: Math.max(cursor, move.seq) };
  };

  const moveOne = async (move: CursorMove): Promise<CursorOutcome> => {
    const [answer] = await call(`CALL ${ADVANCE_CURSOR}(?, ?, ?, ?)`, [bin(move.groupId), move.device.username, move.device.deviceId, move.seq]);
    // No row after the update: the device was removed meanwhile.
    const outcome = (answer[0]?.outcome ?? "not-member") as keyof typeof cursorRefusals | "moved";
    return outcome === "moved" ? { cursor: Number(answer[0].cursor_seq) } : { error: cursorRefusals[outcome]() };
  };

  const movesJson = (moves: CursorMove[]) =>
    JSON.stringify(moves.map((m, i) => ({ i, g: Buffer.from(m.groupId).toString("hex"), u: m.device.username, d: m.device.deviceId, s: m.seq })));
  // Binary collation, as the tables' (a JSON_TABLE column's default is case-insensitive): no device id matches another by case.
  const movesTable = `JSON_TABLE(?, '$[*]' COLUMNS (i INT PATH '$.i', g CHAR(64) PATH '$.g', u VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.u',
    d VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.d', s BIGINT UNSIGNED PATH '$.s')) AS j`;
  /**
   * Cursor moves that arrive together (every member of a group acknowledging the same append) go out as one
   * plain read of their groups' ends and cursors and one UPDATE: one round trip pair and one commit for the
   * batch instead of one per move. A move is judged by the read; a device removed between the read and the
   * update is not moved (the UPDATE finds no row) and learns of its removal at its next read.
   */
  const moveMany = async (moves: CursorMove[]): Promise<CursorOutcome[]> => {
    // The moves as one JSON parameter, joined through JSON_TABLE: one statement of the same text whatever
    // the batch's size (text protocol: nothing to prepare), each row found by its primary key.
    const found = await textRows(
      `SELECT j.i, g.last_seq, m.cursor_seq FROM ${movesTable}
         JOIN ds_groups g ON g.id = UNHEX(j.g)
         LEFT JOIN ds_members m ON m.group_id = g.id AND m.username = j.u AND m.device_id = j.d`,
      [movesJson(moves)],
    );
    const state = new Map(found.map((r) => [Number(r.i), { lastSeq: Number(r.last_seq), cursor: r.cursor_seq === null ? null : Number(r.cursor_seq) }]));
    const outcomes = moves.map((move, i) => judgeMove(move, state.get(i)?.lastSeq, state.get(i)?.cursor ?? null));
    // The furthest accepted move per device and group: what every move of that device in the batch answers,
    // as if they ran one after the other; only those beyond the cursor read are written.
    const keyOf = (move: CursorMove) => `${Buffer.from(move.groupId).toString("hex")}\n${deviceKey(move.device)}`;
    const furthest = new Map<string, CursorMove>();
    moves.forEach((move, i) => {
      const key = keyOf(move);
      if (!("error" in outcomes[i]) && (furthest.get(key)?.seq ?? -1) < move.seq) furthest.set(key, move);
    });
    const written: CursorMove[] = [];
    moves.forEach((move, i) => {
      const outcome = outcomes[i];
      if ("error" in outcome) return;
      const last = furthest.get(keyOf(move))!;
      outcome.cursor = Math.max(outcome.cursor, last.seq);
      if (last === move && (state.get(i)?.cursor ?? 0) < move.seq) written.push(move);
    });
    if (written.length > 0) {
      // GREATEST: a late acknowledgement arriving after a newer one never moves the cursor back.
      await pool.query(
        `UPDATE ${movesTable} JOIN ds_members m ON m.group_id = UNHEX(j.g) AND m.username = j.u AND m.device_id = j.d
         SET m.cursor_seq = GREATEST(m.cursor_seq, j.s)`,
        [movesJson(written)],
      );
    }
    return outcomes;
  };

  /**
   * Deletes the log entries received before `cutoff` that every current member's cursor has passed (a group
   * nobody is left in keeps nothing worth delivering), oldest first, PURGE_CHUNK at a time and at most
   * PURGE_MAX_CHUNKS per call. Each chunk is found by a plain read, which takes no lock and so never waits
   * for an append or a cursor move in flight (one DELETE joined to the members would lock every member row it
   * read, and wait for any a transaction holds), then deleted one by one by primary key under READ COMMITTED (no
   * gap locks). An entry found deletable stays so: cursors only move forward, and a device added later starts
   * at the group's end.
   */
  const purgeLog = async (cutoff: number): Promise<number> => {
    let deleted = 0;
    let after: { receivedAt: number; groupId: Buffer; seq: number } | undefined;
    for (let chunk = 0; chunk < PURGE_MAX_CHUNKS; chunk++) {
      const found = await rows(
        pool,
        `SELECT l.received_at, l.group_id, l.seq, (SELECT MIN(m.cursor_seq) FROM ds_members m WHERE m.group_id = l.group_id) AS low
         FROM ds_log l WHERE l.received_at < ?${after ? " AND (l.received_at > ? OR (l.received_at = ? AND (l.group_id > ? OR (l.group_id = ? AND l.seq > ?))))" : ""}
         ORDER BY l.received_at, l.group_id, l.seq LIMIT ${PURGE_CHUNK}`,
        after ? [cutoff, after.receivedAt, after.receivedAt, after.groupId, after.groupId, after.seq] : [cutoff],
      );
      const gone = found.filter((r) => r.low === null || Number(r.seq) <= Number(r.low));
      if (gone.length > 0) {
        // One statement per entry, by its primary key: a lookup that locks that row alone. A statement naming
        // several may be run as a scan (small tables), which waits for any row in flight it passes.
        deleted += await inTransaction(async (conn) => {
          let n = 0;
          for (const r of gone) n += (await write(conn, "DELETE FROM ds_log WHERE group_id = ? AND seq = ?", [r.group_id as Buffer, Number(r.seq)])).affectedRows;
          return n;
        });
      }
      if (found.length < PURGE_CHUNK) break;
      const end = found[found.length - 1];
      after = { receivedAt: Number(end.received_at), groupId: end.group_id as Buffer, seq: Number(end.seq) };
    }
    return deleted;
  };

  /** One application append, one CALL: what a batch of one costs least as (the batch procedure parses JSON). */
  const appendOne = async (p: AppendItem): Promise<AppendResult> => {
    const args = [bin(p.groupId), p.epoch, APPLICATION_EPOCH_WINDOW, p.sender.username, p.sender.deviceId, p.messageId, bin(p.bytes), p.receivedAt];
    const [verdict, users] = await call(`CALL ${APPEND_APPLICATION}(?, ?, ?, ?, ?, ?, ?, ?)`, args);
    const { outcome, seq, epoch, sender_cursor: senderCursor } = verdict[0];
    switch (outcome) {
      case "unknown":
        throw new DsError("DS_UNKNOWN_GROUP", "no such group");
      case "not-member":
        throw new DsError("DS_NOT_MEMBER", "the sender is not a member of the group");
      case "conflict":
        return { accepted: false, currentEpoch: Number(epoch) };
      case "accepted":
      case "duplicate":
        return {
          accepted: true,
          seq: Number(seq),
          epoch: Number(epoch),
          duplicate: outcome === "duplicate",
          senderCursor: Number(senderCursor),
          ...(p.withMemberUsernames === true ? { memberUsernames: users.map((r) => String(r.username)) } : {}),
        };
      default:
        throw new Error(`${APPEND_APPLICATION}: unexpected outcome`);
    }
  };

  /**
   * Appends that arrive while a batch is being stored go out together in the next one: one round trip and
   * one commit (one redo-log flush) for all of them, each still durable before it is answered.
   */
  const appendMany = async (items: AppendItem[]): Promise<AppendOutcome[]> => {
    if (items.length === 1) return [await appendAlone(items[0])];
    const hexOf = items.map((p) => bin(p.groupId).toString("hex"));
    // Sorted by group (stable: one group's items keep their order), so batches lock groups in one order.
    const order = items.map((_, i) => i).sort((a, b) => (hexOf[a] < hexOf[b] ? -1 : hexOf[a] > hexOf[b] ? 1 : a - b));
    const sorted = order.map((i) => items[i]);
    const sortedHexes = order.map((i) => hexOf[i]);
    const [verdictRows, memberRows] = temporaryTablesUsable ? await callWithItems(sorted, sortedHexes) : await callWithJson(sorted, sortedHexes);
    const verdicts = String(verdictRows[0].verdicts)
      .split(";")
      .filter((v) => v !== "")
      .map((v) => {
        const [o, seq, epoch, cursor] = v.split(",");
        return { o, s: Number(seq), e: Number(epoch), c: Number(cursor) };
      });
    if (verdicts.length !== items.length) throw new Error(`append batch: ${verdicts.length} verdicts for ${items.length} items`);
    const members = new Map<string, string[]>();
    for (const r of memberRows) {
      const key = String(r.group_hex).toLowerCase();
      members.set(key, [...(members.get(key) ?? []), String(r.username)]);
    }
    const outcomes: AppendOutcome[] = new Array(items.length);
    order.forEach((i, k) => {
      const v = verdicts[k];
      const p = items[i];
      if (v.o === "u") outcomes[i] = { error: new DsError("DS_UNKNOWN_GROUP", "no such group") };
      else if (v.o === "n") outcomes[i] = { error: new DsError("DS_NOT_MEMBER", "the sender is not a member of the group") };
      else if (v.o === "c") outcomes[i] = { accepted: false, currentEpoch: Number(v.e) };
      else if (v.o === "a" || v.o === "d") {
        outcomes[i] = {
          accepted: true,
          seq: Number(v.s),
          epoch: Number(v.e),
          duplicate: v.o === "d",
          senderCursor: Number(v.c),
          ...(p.withMemberUsernames === true ? { memberUsernames: members.get(hexOf[i]) ?? [] } : {}),
        };
      } else throw new Error("append batch: unexpected outcome");
    });
    return outcomes;
  };
  /** A batch (sorted by group) as JSON, to the loop that reads it with JSON_TABLE: for a user who may not create temporary tables. */
  const callWithJson = (sorted: AppendItem[], groupHexes: string[]) => {
    const json = JSON.stringify(
      sorted.map((p, k) => ({ g: groupHexes[k], e: p.epoch, u: p.sender.username, d: p.sender.deviceId, m: p.messageId, b: bin(p.bytes).toString("base64"), r: p.receivedAt })),
    );
    return call(`CALL ${APPEND_APPLICATIONS_JSON}(?, ?)`, [json, APPLICATION_EPOCH_WINDOW]);
  };
  /**
   * A batch (sorted by group) written to the connection's ds_append_items, then stored by the procedure for
   * its shape, on the same connection. A deadlock or lock wait timeout (the procedure rolled back and emptied
   * the table) runs both again, as call() does.
   */
  const callWithItems = async (sorted: AppendItem[], groupHexes: string[]): Promise<RowDataPacket[][]> => {
    const params: SqlParam[] = [];
    const batch = ++batchesStarted;
    const messages = new Set<string>();
    sorted.forEach((p, k) => {
      messages.add(`${groupHexes[k]}\n${p.sender.username}\n${p.sender.deviceId}\n${p.messageId}`);
      params.push(batch, k + 1, bin(p.groupId), p.epoch, p.sender.username, p.sender.deviceId, p.messageId, bin(p.bytes), p.receivedAt);
    });
    const callSql = `CALL ${batchProcedure(sorted.length, messages.size < sorted.length)}(?, ?)`;
    const callParams = [batch, APPLICATION_EPOCH_WINDOW];
    const insertItems = async (conn: PoolConnection) => {
      let done = 0;
      for (const rows of appendItemsChunks(sorted.length)) {
        await conn.execute(appendItemsInsert(rows), params.slice(done * APPEND_ITEM_COLUMNS, (done + rows) * APPEND_ITEM_COLUMNS));
        done += rows;
      }
    };
    for (let attempt = 1; ; attempt++) {
      const conn = await pool.getConnection();
      try {
        try {
          await insertItems(conn);
        } catch (error) {
          // The connection's first batch (a temporary table lives as long as its connection): its first INSERT failed.
          if (errno(error) !== ER_NO_SUCH_TABLE) throw error;
          await conn.query(APPEND_VERDICTS_TABLE);
          await conn.query(APPEND_ITEMS_TABLE);
          await insertItems(conn);
        }
        const [results] = await conn.execute<RowDataPacket[][]>(callSql, callParams);
        return results.filter((r) => Array.isArray(r));
      } catch (error) {
        const code = errno(error);
        if (attempt < TRANSACTION_ATTEMPTS && (code === ER_LOCK_DEADLOCK || code === ER_LOCK_WAIT_TIMEOUT)) continue;
        throw error;
      } finally {
        conn.release();
      }
    }
  };
  /** The procedure for a batch of `items` appends, in which some message id may be `repeated` (see SET_BASED_MIN_ITEMS). */
  const batchProcedure = (items: number, repeated: boolean): string => {
    if (options.setBasedBatches === "never" || repeated) return APPEND_APPLICATIONS;
    if (options.setBasedBatches === "always") return APPEND_APPLICATIONS_SET;
    return items >= SET_BASED_MIN_ITEMS ? APPEND_APPLICATIONS_SET : APPEND_APPLICATIONS;
  };
  const appendAlone = (p: AppendItem): Promise<AppendOutcome> => appendOne(p).catch((error: unknown) => (error instanceof DsError ? { error } : Promise.reject(error)));
  /**
   * One flush of the queue: its small appends together, a large one on its own, in the order they came (so
   * one group's appends are stored in call order whatever their sizes).
   */
  const appendQueued = async (items: AppendItem[]): Promise<AppendOutcome[]> => {
    const out: AppendOutcome[] = [];
    let run: AppendItem[] = [];
    const storeRun = async () => {
      if (run.length > 0) out.push(...(await appendMany(run)));
      run = [];
    };
    for (const item of items) {
      if (item.bytes.length <= BATCHED_APPEND_MAX_BYTES) {
        run.push(item);
        continue;
      }
      await storeRun();
      out.push(await appendAlone(item));
    }
    await storeRun();
    return out;
  };
  const appends = createSerialBatcher<AppendItem, AppendOutcome>({
    maxBatch: MAX_APPEND_BATCH,
    minIntervalMs: APPEND_MIN_INTERVAL_MS,
    paceBelow: APPEND_PACE_BELOW,
    flush: appendQueued,
  });

  const cursorMoves = createSerialBatcher<CursorMove, CursorOutcome>({
    maxBatch: MAX_CURSOR_BATCH,
    lingerMs: CURSOR_LINGER_MS,
    flush: (moves) => (moves.length === 1 && procedures ? moveOne(moves[0]).then((o) => [o]) : moveMany(moves)),
  });

  const entryOf = (groupId: Uint8Array, r: RowDataPacket): LogEntry => ({
    groupId: groupId.slice(),
    seq: Number(r.seq),
    epoch: Number(r.epoch),
    kind: KIND_OF_CODE[Number(r.kind)],
    sender: { username: r.sender_username, deviceId: r.sender_device },
    messageId: r.message_id,
    bytes: bytesOut(r.bytes),
    receivedAt: Number(r.received_at),
  });

  const groupState = async (groupId: Uint8Array): Promise<GroupState | undefined> => {
    const [row] = await rows(pool, "SELECT epoch, last_seq FROM ds_groups WHERE id = ?", [bin(groupId)]);
    return row ? { groupId: groupId.slice(), epoch: Number(row.epoch), lastSeq: Number(row.last_seq) } : undefined;
  };

  const requireGroup = async (groupId: Uint8Array): Promise<GroupState> => {
    const state = await groupState(groupId);
    if (!state) throw new DsError("DS_UNKNOWN_GROUP", "no such group");
    return state;
  };

  return {
    kind: "mysql",
    // Application appends join one queue of batches, one batch stored at a time; the plain statements
    // (without the stored procedures) run as concurrent transactions.
    get appendsInCallOrder() {
      return procedures;
    },
    // Without the stored procedures nothing is batched, and the totals stay at zero.
    appendBatchStats: () => appends.stats(),
    async migrate() {
      for (const ddl of TABLES) await pool.query(ddl);
      for (const ddl of ROUTINES) {
        try {
          await pool.query(ddl);
        } catch (error) {
          // Another instance created it between our check and our create: the same body, by its name.
          if (errno(error) === ER_SP_ALREADY_EXISTS) continue;
          // A server or user that cannot hold routines (no CREATE ROUTINE right, no mysql.proc table):
          // the same steps go as plain statements, a few more round trips each.
          procedures = false;
          onRoutinesUnavailable?.(error instanceof Error ? error.message : String(error));
          return;
        }
      }
      // Batches pass their items in a temporary table (and the set-based procedure keeps its verdicts in another).
      const conn = await pool.getConnection();
      try {
        await conn.query("CREATE TEMPORARY TABLE IF NOT EXISTS ds_temporary_probe (x INT) ENGINE=MEMORY");
        await conn.query("DROP TEMPORARY TABLE IF EXISTS ds_temporary_probe");
      } catch (error) {
        temporaryTablesUsable = false;
        options.onSetBasedUnavailable?.(error instanceof Error ? error.message : String(error));
      } finally {
        conn.release();
      }
    },

    async putKeyPackages(params) {
      const { device, now, oneTime, lastResort, replace } = checkKeyPackages(params);
      return inTransaction(async (conn) => {
        await write(conn, "INSERT IGNORE INTO ds_key_package_owners (username) VALUES (?)", [device.username]);
        await rows(conn, "SELECT username FROM ds_key_package_owners WHERE username = ? FOR UPDATE", [device.username]);
        const devices = await rows(conn, "SELECT device_id FROM ds_devices WHERE username = ?", [device.username]);
        const known = devices.some((r) => r.device_id === device.deviceId);
        if (!known && devices.length >= MAX_DEVICES_PER_USER) throw new DsError("DS_LIMIT", `at most ${MAX_DEVICES_PER_USER} devices per user`);
        if (!known) await write(conn, "INSERT INTO ds_devices (username, device_id) VALUES (?, ?)", [device.username, device.deviceId]);
        if (replace) {
          for (const table of ["ds_key_packages", "ds_last_resort_key_packages"]) {
            await write(conn, `DELETE FROM ${table} WHERE username = ? AND device_id = ?`, [device.username, device.deviceId]);
          }
        }
        const before = await counts(conn, device, now);
        if (before.oneTime + oneTime.length > MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE) {
          throw new DsError("DS_LIMIT", `at most ${MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE} one-time key packages per device`);
        }
        for (const p of oneTime) {
          await write(conn, "INSERT INTO ds_key_packages (username, device_id, bytes, not_after) VALUES (?, ?, ?, ?)", [device.username, device.deviceId, bin(p.bytes), p.notAfter]);
        }
        if (lastResort) {
          await write(
            conn,
            `INSERT INTO ds_last_resort_key_packages (username, device_id, bytes, not_after) VALUES (?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE bytes = VALUES(bytes), not_after = VALUES(not_after)`,
            [device.username, device.deviceId, bin(lastResort.bytes), lastResort.notAfter],
          );
        }
        return counts(conn, device, now);
      });
    },

    async claimKeyPackages(params) {
      const username = checkUsername(params.username);
      const now = checkCount(params.now, "now");
      return inTransaction(async (conn) => {
        const out: ClaimedKeyPackage[] = [];
        const devices = await rows(conn, "SELECT device_id FROM ds_devices WHERE username = ? ORDER BY device_id", [username]);
        for (const { device_id: deviceId } of devices) {
          // SKIP LOCKED: a package another instance is claiming right now is not waited for but skipped,
          // so concurrent claims take different packages and each is deleted by exactly one of them.
          const [taken] = await rows(
            conn,
            "SELECT id, bytes, not_after FROM ds_key_packages WHERE username = ? AND device_id = ? AND not_after > ? ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            [username, deviceId, now],
          );
          if (taken) {
            await write(conn, "DELETE FROM ds_key_packages WHERE id = ?", [taken.id]);
            out.push({ deviceId, bytes: bytesOut(taken.bytes), notAfter: Number(taken.not_after), lastResort: false });
            continue;
          }
          const [last] = await rows(conn, "SELECT bytes, not_after FROM ds_last_resort_key_packages WHERE username = ? AND device_id = ? AND not_after > ?", [username, deviceId, now]);
          if (last) out.push({ deviceId, bytes: bytesOut(last.bytes), notAfter: Number(last.not_after), lastResort: true });
        }
        return out;
      });
    },

    async keyPackageCounts(params) {
      return counts(pool, checkDevice(params.device), checkCount(params.now, "now"));
    },

    async removeDevice(deviceIn) {
      const device = checkDevice(deviceIn);
      await inTransaction(async (conn) => {
        for (const table of ["ds_key_packages", "ds_last_resort_key_packages", "ds_devices"]) {
          await write(conn, `DELETE FROM ${table} WHERE username = ? AND device_id = ?`, [device.username, device.deviceId]);
        }
      });
    },

    async createGroup(params) {
      const groupId = checkGroupId(params.groupId);
      const members = checkDevices(params.members, MAX_GROUP_DEVICES);
      const now = checkCount(params.now, "now");
      if (members.length === 0) throw new DsError("DS_BAD_REQUEST", "a group starts with at least one member");
      await inTransaction(async (conn) => {
        try {
          await write(conn, "INSERT INTO ds_groups (id, epoch, last_seq, created_at) VALUES (?, ?, 0, ?)", [bin(groupId), INITIAL_EPOCH, now]);
        } catch (error) {
          if (errno(error) === ER_DUP_ENTRY) throw new DsError("DS_GROUP_EXISTS", "a group with this id exists");
          throw error;
        }
        await changeMembers(conn, groupId, members, [], 0);
      });
      return { groupId: groupId.slice(), epoch: INITIAL_EPOCH, lastSeq: 0 };
    },

    group: (groupId) => groupState(checkGroupId(groupId)),

    async appendCommit(params) {
      const p = checkCommit(params);
      return append("handshake", p, { add: p.addMembers, remove: p.removeMembers, welcomes: p.welcomes });
    },

    async appendApplication(params) {
      const p = checkApplication(params);
      if (!procedures) {
        const result = await append("application", p);
        if (!result.accepted || params.withMemberUsernames !== true) return result;
        const members = await rows(pool, "SELECT DISTINCT username FROM ds_members WHERE group_id = ?", [bin(p.groupId)]);
        return { ...result, memberUsernames: members.map((r) => String(r.username)) };
      }
      const outcome = await appends.push({ ...p, withMemberUsernames: params.withMemberUsernames });
      if ("error" in outcome) throw outcome.error;
      return outcome;
    },

    async read(params) {
      const groupId = checkGroupId(params.groupId);
      const afterSeq = checkCount(params.afterSeq, "afterSeq");
      const limit = checkLimit(params.limit);
      const found = await rows(
        pool,
        `SELECT seq, epoch, kind, sender_username, sender_device, message_id, bytes, received_at FROM ds_log
         WHERE group_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
        [bin(groupId), afterSeq, limit],
      );
      if (found.length === 0) await requireGroup(groupId);
      return found.map((r) => entryOf(groupId, r));
    },

    async readAsMember(params) {
      const device = checkDevice(params.device);
      const groupId = checkGroupId(params.groupId);
      const afterSeq = checkCount(params.afterSeq, "afterSeq");
      const limit = checkLimit(params.limit);
      // One statement, so one consistent view: the group row (always one row when the group exists), the
      // caller's membership, and the entries, joined only for a member. Group and member are primary-key
      // lookups, so the entries come in primary-key order from the log's (group_id, seq) index.
      const found = await rows(
        pool,
        `SELECT g.epoch AS group_epoch, g.last_seq, m.username IS NOT NULL AS is_member,
           l.seq, l.epoch, l.kind, l.sender_username, l.sender_device, l.message_id, l.bytes, l.received_at
         FROM ds_groups g
         LEFT JOIN ds_members m ON m.group_id = g.id AND m.username = ? AND m.device_id = ?
         LEFT JOIN ds_log l ON l.group_id = g.id AND m.username IS NOT NULL AND l.seq > ?
         WHERE g.id = ? ORDER BY l.seq LIMIT ?`,
        [device.username, device.deviceId, afterSeq, bin(groupId), limit],
      );
      if (found.length === 0) throw new DsError("DS_UNKNOWN_GROUP", "no such group");
      if (Number(found[0].is_member) !== 1) throw new DsError("DS_NOT_MEMBER", "the device is not a member of the group");
      return {
        epoch: Number(found[0].group_epoch),
        lastSeq: Number(found[0].last_seq),
        entries: found[0].seq === null ? [] : found.map((r) => entryOf(groupId, r)),
      };
    },

    async members(groupIdIn) {
      const groupId = checkGroupId(groupIdIn);
      await requireGroup(groupId);
      const found = await rows(pool, "SELECT username, device_id, cursor_seq FROM ds_members WHERE group_id = ? ORDER BY username, device_id", [bin(groupId)]);
      return found.map((r) => ({ username: r.username, deviceId: r.device_id, cursor: Number(r.cursor_seq) }));
    },

    async memberUsernames(groupIdIn) {
      const groupId = checkGroupId(groupIdIn);
      const found = await rows(pool, "SELECT DISTINCT username FROM ds_members WHERE group_id = ?", [bin(groupId)]);
      if (found.length === 0) await requireGroup(groupId);
      return found.map((r) => String(r.username));
    },

    async updateMembers(params) {
      const groupId = checkGroupId(params.groupId);
      const add = checkDevices(params.add, MAX_GROUP_DEVICES);
      const remove = checkDevices(params.remove, MAX_GROUP_DEVICES);
      await inTransaction(async (conn) => {
        const group = await lockGroup(conn, groupId);
        await changeMembers(conn, groupId, add, remove, group.lastSeq);
      });
    },

    async advanceCursor(params) {
      const device = checkDevice(params.device);
      const groupId = checkGroupId(params.groupId);
      const seq = checkCount(params.seq, "seq");
      const outcome = await cursorMoves.push({ device, groupId, seq });
      if ("error" in outcome) throw outcome.error;
      return outcome.cursor;
    },

    async pendingFor(deviceIn) {
      const device = checkDevice(deviceIn);
      const found = await rows(
        pool,
        `SELECT m.group_id, m.cursor_seq, g.last_seq, g.epoch FROM ds_members m JOIN ds_groups g ON g.id = m.group_id
         WHERE m.username = ? AND m.device_id = ? AND g.last_seq > m.cursor_seq ORDER BY m.group_id`,
        [device.username, device.deviceId],
      );
      return found.map((r) => ({ groupId: bytesOut(r.group_id), cursor: Number(r.cursor_seq), lastSeq: Number(r.last_seq), epoch: Number(r.epoch) }));
    },

    async welcomes(params) {
      const device = checkDevice(params.device);
      const now = checkCount(params.now, "now");
      const limit = checkLimit(params.limit);
      const found = await rows(
        pool,
        `SELECT id, group_id, bytes, received_at, expires_at FROM ds_welcomes
         WHERE username = ? AND device_id = ? AND expires_at > ? ORDER BY id LIMIT ?`,
        [device.username, device.deviceId, now, limit],
      );
      return found.map((r) => ({
        id: String(r.id),
        groupId: bytesOut(r.group_id),
        recipient: device,
        bytes: bytesOut(r.bytes),
        receivedAt: Number(r.received_at),
        expiresAt: Number(r.expires_at),
      }));
    },

    async ackWelcome(params) {
      const device = checkDevice(params.device);
      const id = checkWelcomeId(params.id);
      await write(pool, "DELETE FROM ds_welcomes WHERE id = ? AND username = ? AND device_id = ?", [id, device.username, device.deviceId]);
    },

    async purge(params) {
      const now = checkCount(params.now, "now");
      const logTtlMs = checkCount(params.logTtlMs, "logTtlMs");
      const oneTime = await write(pool, "DELETE FROM ds_key_packages WHERE not_after <= ?", [now]);
      const last = await write(pool, "DELETE FROM ds_last_resort_key_packages WHERE not_after <= ?", [now]);
      const welcomes = await write(pool, "DELETE FROM ds_welcomes WHERE expires_at <= ?", [now]);
      return { keyPackages: oneTime.affectedRows + last.affectedRows, welcomes: welcomes.affectedRows, logEntries: await purgeLog(now - logTtlMs) };
    },

    async close() {},
  };
}

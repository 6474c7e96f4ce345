/**
 * The relay as MLS Delivery Service (RFC 9420 §3.2): key packages per device, welcomes per device, and per
 * group an ordered log of handshake and application messages with the group's current epoch. The relay
 * never parses MLS: every message is opaque bytes, bounded in size; ids are validated here, once, for every
 * store.
 *
 * Ordering is the store's job: a commit is accepted only for the group's current epoch (first come wins, in
 * one transaction on every relay instance together), and each group's log has its own dense sequence numbers
 * assigned under the group's lock, so a reader paging by seq can never skip an entry that commits later with
 * a smaller number. Cursors are per device, not per user.
 */
import { isValidUsername } from "../../protocol/username";
import type { SerialBatcherStats } from "./serial-batcher";

/** A fresh ts-mls group (createGroup) reports epoch 0; the commit that adds the first peers makes it 1. */
export const INITIAL_EPOCH = 0;
export const GROUP_ID_BYTES = 32;

/**
 * Application messages are accepted for the current epoch and this many before it. A member may seal under
 * epoch e while commits to e+1.. are being accepted; readers process the log in order and are then in the
 * current epoch, so they can open it only while they keep epoch e's secrets (ts-mls keeps 4 past epochs by
 * default). Older messages could not be read by anyone and would only extend how long old keys matter.
 */
export const APPLICATION_EPOCH_WINDOW = 3;

export const MAX_KEY_PACKAGE_BYTES = 16 * 1024;
/** A Welcome for 100 members is about 38 KB; room for larger groups and credentials. */
export const MAX_WELCOME_BYTES = 1024 * 1024;
/** A commit with a path for a large group, or a proposal list. */
export const MAX_HANDSHAKE_BYTES = 1024 * 1024;
export const MAX_APPLICATION_BYTES = 256 * 1024;

export const MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE = 200;
/** Bounds one claim (one package per device) and the devices a user can make others fetch packages for. */
export const MAX_DEVICES_PER_USER = 16;
export const MAX_KEY_PACKAGE_LIFETIME_MS = 90 * 24 * 3600 * 1000;
/** At least 100 members with several devices each. */
export const MAX_GROUP_DEVICES = 2000;
export const MAX_WELCOMES_PER_COMMIT = MAX_GROUP_DEVICES;
export const MAX_READ_LIMIT = 1000;

export type DsErrorCode =
  /** malformed ids, sizes out of bounds, or times that make no sense */
  | "DS_BAD_REQUEST"
  /** a per-device or per-user cap would be exceeded; nothing was stored */
  | "DS_LIMIT"
  | "DS_UNKNOWN_GROUP"
  | "DS_GROUP_EXISTS"
  /** the sending (or cursor-moving) device is not a member of the group as the relay sees it */
  | "DS_NOT_MEMBER"
  /** used before migrate() opened it, or after close() */
  | "DS_CLOSED"
  /** a write or fsync failed: what reached the disk is unknown, so the store refuses further work */
  | "DS_FAILED"
  /** the directory holds something that is not a Delivery Service log of a known format */
  | "DS_UNREADABLE";

export class DsError extends Error {
  readonly code: DsErrorCode;
  constructor(code: DsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DsError";
    this.code = code;
  }
}

export interface DeviceRef {
  username: string;
  deviceId: string;
}

export interface KeyPackageUpload {
  /** an MLS KeyPackage, opaque to the relay */
  bytes: Uint8Array;
  /** Unix ms after which it is never handed out and may be purged */
  notAfter: number;
}

export interface ClaimedKeyPackage {
  deviceId: string;
  bytes: Uint8Array;
  notAfter: number;
  /** true when the device had no one-time package left: the device should upload a new last-resort one */
  lastResort: boolean;
}

export interface KeyPackageCounts {
  oneTime: number;
  /** an unexpired last-resort package is on file */
  lastResort: boolean;
}

export interface WelcomeUpload {
  recipient: DeviceRef;
  bytes: Uint8Array;
  /** Unix ms after which it is never delivered and may be purged */
  expiresAt: number;
}

export interface StoredWelcome {
  /** store-assigned, increasing per store; ack by it */
  id: string;
  groupId: Uint8Array;
  recipient: DeviceRef;
  bytes: Uint8Array;
  receivedAt: number;
  expiresAt: number;
}

export type LogEntryKind = "handshake" | "application";

export interface LogEntry {
  groupId: Uint8Array;
  /** 1, 2, 3, ... within the group, without gaps (until retention purges the oldest) */
  seq: number;
  /** the epoch the message was sent in (for a commit: the epoch it ends) */
  epoch: number;
  kind: LogEntryKind;
  sender: DeviceRef;
  /** chosen by the sender; a retried append with the same id is not stored twice */
  messageId: string;
  bytes: Uint8Array;
  receivedAt: number;
}

export interface GroupState {
  groupId: Uint8Array;
  epoch: number;
  /** seq of the newest entry; 0 for an empty log */
  lastSeq: number;
}

export interface GroupMember extends DeviceRef {
  /** the last seq this device has processed */
  cursor: number;
}

export type AppendResult =
  /**
   * stored at `seq` (or, with duplicate, stored earlier under the same sender and messageId); asked with
   * withMemberUsernames, a store that read the group's member users in the same step hands them over, so
   * the notice needs no second lookup
   */
  | {
      accepted: true;
      seq: number;
      epoch: number;
      duplicate: boolean;
      memberUsernames?: string[];
      /**
       * for an application message: the sending device's cursor after the append. An append moves it past
       * the new entry when it stood right before it (the sender has processed its own message), in the same
       * step, so a caught-up sender needs no cursor move of its own.
       */
      senderCursor?: number;
    }
  /** not stored: the group is at `currentEpoch`; catch up from the log and retry */
  | { accepted: false; currentEpoch: number };

export interface AppendBase {
  groupId: Uint8Array;
  /** for a commit: the group's epoch the commit was made in; for an application message: its epoch */
  epoch: number;
  sender: DeviceRef;
  messageId: string;
  bytes: Uint8Array;
  receivedAt: number;
}

export interface AppendCommitParams extends AppendBase {
  /** membership as the relay will see it once the commit is accepted, changed in the same transaction */
  addMembers?: DeviceRef[];
  removeMembers?: DeviceRef[];
  /** stored in the same transaction, so an accepted commit never loses the Welcome of the members it adds */
  welcomes?: WelcomeUpload[];
}

/** What a member reads in one call: the group's state and the entries after its `afterSeq`, as of one moment. */
export interface LogPage {
  epoch: number;
  lastSeq: number;
  entries: LogEntry[];
}

export interface PendingGroup {
  groupId: Uint8Array;
  cursor: number;
  lastSeq: number;
  epoch: number;
}

export interface PurgeResult {
  keyPackages: number;
  welcomes: number;
  logEntries: number;
}

export interface DeliveryServiceStore {
  readonly kind: "mysql" | "memory" | "file";
  /** Creates the tables when missing; safe on every start; call before anything else. */
  migrate(): Promise<void>;

  /**
   * Adds one-time packages and replaces the last-resort one; all or nothing (DS_LIMIT beyond the caps).
   * With `replace`, every package the device had is dropped first, in the same transaction: after a key
   * rotation its old packages carry a credential that peers will soon refuse, and must not be handed out.
   */
  putKeyPackages(params: { device: DeviceRef; oneTime: KeyPackageUpload[]; lastResort?: KeyPackageUpload; replace?: boolean; now: number }): Promise<KeyPackageCounts>;
  /** One unexpired package per device of `username`: a one-time one (handed out once, ever) or else the last-resort one. */
  claimKeyPackages(params: { username: string; now: number }): Promise<ClaimedKeyPackage[]>;
  keyPackageCounts(params: { device: DeviceRef; now: number }): Promise<KeyPackageCounts>;
  /** Forgets a device's packages (a device that was retired). */
  removeDevice(device: DeviceRef): Promise<void>;

  /** A new group at INITIAL_EPOCH with an empty log; its first members start with cursor 0. */
  createGroup(params: { groupId: Uint8Array; members: DeviceRef[]; now: number }): Promise<GroupState>;
  group(groupId: Uint8Array): Promise<GroupState | undefined>;
  /** Accepted only if `epoch` is the group's current epoch; the epoch then becomes epoch + 1. */
  appendCommit(params: AppendCommitParams): Promise<AppendResult>;
  /** Accepted for epochs from current - APPLICATION_EPOCH_WINDOW to current. */
  appendApplication(params: AppendBase & { withMemberUsernames?: boolean }): Promise<AppendResult>;
  /**
   * Whether application appends to one group, called one after another without waiting, are stored in the
   * order of the calls (a sender may then have several in flight and keep their order).
   */
  readonly appendsInCallOrder: boolean;
  /**
   * Running totals of the batches application appends were stored in (each one round trip and one commit);
   * absent for a store that does not batch them.
   */
  appendBatchStats?(): SerialBatcherStats;
  /** Entries with seq > afterSeq, in order, at most `limit` (<= MAX_READ_LIMIT). */
  read(params: { groupId: Uint8Array; afterSeq: number; limit: number }): Promise<LogEntry[]>;

  /**
   * read() for a member device, with the group's epoch and last seq from the same moment; DS_UNKNOWN_GROUP,
   * or DS_NOT_MEMBER when `device` is not a member. The hot path of every reader: one step, not three.
   */
  readAsMember(params: { device: DeviceRef; groupId: Uint8Array; afterSeq: number; limit: number }): Promise<LogPage>;

  members(groupId: Uint8Array): Promise<GroupMember[]>;
  /** The users with at least one device in the group, without cursors (who to notify after an append). */
  memberUsernames(groupId: Uint8Array): Promise<string[]>;
  /** Membership changes outside a commit; added devices start at the current last seq. */
  updateMembers(params: { groupId: Uint8Array; add?: DeviceRef[]; remove?: DeviceRef[] }): Promise<void>;
  /** Moves the device's cursor forward (never back); returns the cursor after the call. */
  advanceCursor(params: { device: DeviceRef; groupId: Uint8Array; seq: number }): Promise<number>;
  /** The device's groups whose log goes beyond its cursor. */
  pendingFor(device: DeviceRef): Promise<PendingGroup[]>;

  /** Unexpired welcomes of the device, oldest first. */
  welcomes(params: { device: DeviceRef; now: number; limit: number }): Promise<StoredWelcome[]>;
  /** The device has processed the welcome (idempotent; unknown ids are ignored). */
  ackWelcome(params: { device: DeviceRef; id: string }): Promise<void>;

  /**
   * Deletes expired key packages and welcomes, and log entries received before now - logTtlMs that every
   * current member's cursor has passed.
   */
  purge(params: { now: number; logTtlMs: number }): Promise<PurgeResult>;
  /** Does not close a pool it was given. */
  close(): Promise<void>;
}

// ---- validation, the same for every store ----

const DEVICE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const MESSAGE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const WELCOME_ID_PATTERN = /^[1-9][0-9]{0,19}$/;

function bad(message: string): DsError {
  return new DsError("DS_BAD_REQUEST", message);
}

export function checkUsername(username: unknown): string {
  if (!isValidUsername(username)) throw bad("invalid username");
  return username;
}

export function checkDevice(device: unknown): DeviceRef {
  const d = device as DeviceRef;
  if (typeof d !== "object" || d === null) throw bad("device must be { username, deviceId }");
  checkUsername(d.username);
  if (typeof d.deviceId !== "string" || !DEVICE_ID_PATTERN.test(d.deviceId)) throw bad("deviceId must be 1 to 64 characters of A-Z a-z 0-9 _ -");
  return { username: d.username, deviceId: d.deviceId };
}

export function checkDevices(devices: unknown, max: number): DeviceRef[] {
  if (devices === undefined) return [];
  if (!Array.isArray(devices)) throw bad("devices must be an array");
  if (devices.length > max) throw new DsError("DS_LIMIT", `at most ${max} devices`);
  return devices.map(checkDevice);
}

export function checkGroupId(groupId: unknown): Uint8Array {
  if (!(groupId instanceof Uint8Array) || groupId.length !== GROUP_ID_BYTES) throw bad(`group id must be ${GROUP_ID_BYTES} bytes`);
  return groupId;
}

export function checkMessageId(id: unknown): string {
  if (typeof id !== "string" || !MESSAGE_ID_PATTERN.test(id)) throw bad("message id must be 1 to 64 characters of A-Z a-z 0-9 _ -");
  return id;
}

export function checkWelcomeId(id: unknown): string {
  if (typeof id !== "string" || !WELCOME_ID_PATTERN.test(id)) throw bad("welcome id must be a positive decimal integer");
  return id;
}

export function checkBytes(bytes: unknown, max: number, what: string): Uint8Array {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0 || bytes.length > max) throw bad(`${what} must be 1 to ${max} bytes`);
  return bytes;
}

/** Non-negative safe integer: times (Unix ms), epochs, seqs. */
export function checkCount(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) throw bad(`${what} must be a non-negative integer`);
  return value;
}

export function checkLimit(limit: unknown): number {
  if (typeof limit !== "number" || !Number.isSafeInteger(limit) || limit < 1 || limit > MAX_READ_LIMIT) throw bad(`limit must be 1 to ${MAX_READ_LIMIT}`);
  return limit;
}

export function checkKeyPackages(params: { device: DeviceRef; oneTime: KeyPackageUpload[]; lastResort?: KeyPackageUpload; replace?: boolean; now: number }) {
  const device = checkDevice(params.device);
  const now = checkCount(params.now, "now");
  if (params.replace !== undefined && typeof params.replace !== "boolean") throw bad("replace must be a boolean");
  if (!Array.isArray(params.oneTime)) throw bad("oneTime must be an array");
  if (params.oneTime.length > MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE) {
    throw new DsError("DS_LIMIT", `at most ${MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE} one-time key packages per device`);
  }
  const one = (p: KeyPackageUpload): KeyPackageUpload => {
    if (typeof p !== "object" || p === null) throw bad("key package must be { bytes, notAfter }");
    const notAfter = checkCount(p.notAfter, "notAfter");
    if (notAfter <= now || notAfter > now + MAX_KEY_PACKAGE_LIFETIME_MS) throw bad("notAfter must be in the future and within the maximum lifetime");
    return { bytes: checkBytes(p.bytes, MAX_KEY_PACKAGE_BYTES, "key package").slice(), notAfter };
  };
  return {
    device,
    now,
    oneTime: params.oneTime.map(one),
    lastResort: params.lastResort === undefined ? undefined : one(params.lastResort),
    replace: params.replace === true,
  };
}

function checkAppendBase(params: AppendBase, maxBytes: number): AppendBase {
  return {
    groupId: checkGroupId(params.groupId),
    epoch: checkCount(params.epoch, "epoch"),
    sender: checkDevice(params.sender),
    messageId: checkMessageId(params.messageId),
    bytes: checkBytes(params.bytes, maxBytes, "message").slice(),
    receivedAt: checkCount(params.receivedAt, "receivedAt"),
  };
}

export function checkApplication(params: AppendBase): AppendBase {
  return checkAppendBase(params, MAX_APPLICATION_BYTES);
}

export function checkCommit(params: AppendCommitParams): Required<AppendCommitParams> {
  const base = checkAppendBase(params, MAX_HANDSHAKE_BYTES);
  const welcomesIn = params.welcomes ?? [];
  if (!Array.isArray(welcomesIn)) throw bad("welcomes must be an array");
  if (welcomesIn.length > MAX_WELCOMES_PER_COMMIT) throw new DsError("DS_LIMIT", `at most ${MAX_WELCOMES_PER_COMMIT} welcomes per commit`);
  const welcomes = welcomesIn.map((w): WelcomeUpload => {
    if (typeof w !== "object" || w === null) throw bad("welcome must be { recipient, bytes, expiresAt }");
    const expiresAt = checkCount(w.expiresAt, "expiresAt");
    if (expiresAt <= base.receivedAt) throw bad("a welcome must expire after it is received");
    return { recipient: checkDevice(w.recipient), bytes: checkBytes(w.bytes, MAX_WELCOME_BYTES, "welcome").slice(), expiresAt };
  });
  return {
    ...base,
    addMembers: checkDevices(params.addMembers, MAX_GROUP_DEVICES),
    removeMembers: checkDevices(params.removeMembers, MAX_GROUP_DEVICES),
    welcomes,
  };
}

/**
 * The verdict on an append given the group's current epoch, the same for every store: commits only for
 * the current epoch; application messages within the window, never from a future epoch.
 */
export function epochAccepted(kind: LogEntryKind, epoch: number, currentEpoch: number): boolean {
  if (kind === "handshake") return epoch === currentEpoch;
  return epoch <= currentEpoch && epoch >= currentEpoch - APPLICATION_EPOCH_WINDOW;
}

export const deviceKey = (d: DeviceRef) => `${d.username}\n${d.deviceId}`;

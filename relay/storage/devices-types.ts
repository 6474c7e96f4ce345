/**
 * The devices of each user and the link requests of new devices, behind one interface with a MySQL and an
 * in-memory implementation (relay/storage/devices-mysql.ts, devices-memory.ts). The store only keeps and
 * counts; every credential in it was checked against the chain by the routes (relay/http/devices.ts).
 */

/** One device of a user: its Ed25519 MLS signature key and the newest credential that authorises it. */
export interface DeviceRecord {
  username: string;
  deviceId: string;
  /** 32-byte Ed25519 public key */
  publicKey: Uint8Array;
  /** index of the identity key that signed `credential` */
  keyIndex: number;
  /** the credential's identity bytes (protocol/mls/device-identity.ts) */
  credential: Uint8Array;
  name: string | null;
  /** Unix ms */
  linkedAt: number;
  lastSeenAt: number | null;
  revokedAt: number | null;
}

/** A new device's request to be linked, found by its short code (approver) or its secret's hash (new device). */
export interface DeviceLinkRecord {
  code: string;
  /** SHA-256 of the link secret: the secret itself is never stored */
  secretHash: Uint8Array;
  username: string;
  publicKey: Uint8Array;
  name: string | null;
  createdAt: number;
  /** until then a pending request can be approved; an approved one answers its status until then */
  expiresAt: number;
  /** set on approval */
  approved: { deviceId: string; keyIndex: number; credential: Uint8Array } | null;
}

export type DeviceStoreErrorCode =
  /** too many pending link requests for the user, or too many links in memory */
  | "LINKS_FULL"
  /** the code is taken (a new code is drawn) */
  | "CODE_TAKEN"
  /** no pending, unexpired request with this code for this user */
  | "NO_SUCH_LINK"
  /** the user has its maximum of devices */
  | "DEVICES_FULL"
  /** this Ed25519 key is already one of the user's devices (`deviceId` in the message) */
  | "KEY_LINKED"
  /** the device id is taken by another key, or revoked */
  | "DEVICE_TAKEN";

export class DeviceStoreError extends Error {
  constructor(
    readonly code: DeviceStoreErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "DeviceStoreError";
  }
}

export interface DeviceStore {
  readonly kind: "mysql" | "memory";
  migrate(): Promise<void>;
  /** Stores a pending request; throws LINKS_FULL (the user has `maxPendingPerUser` pending) or CODE_TAKEN. */
  createLink(params: { link: DeviceLinkRecord; maxPendingPerUser: number; now: number }): Promise<void>;
  /** The unexpired request with this code (pending or approved), or null. */
  linkByCode(code: string, now: number): Promise<DeviceLinkRecord | null>;
  /** The unexpired request whose secret hashes to `secretHash`, or null. */
  linkBySecretHash(secretHash: Uint8Array, now: number): Promise<DeviceLinkRecord | null>;
  /**
   * Atomically: the request `code` of `device.username` is pending and unexpired (else NO_SUCH_LINK), the
   * user has fewer than `maxDevices` unrevoked devices (else DEVICES_FULL), the key is not one of them
   * (else KEY_LINKED); then the device is added and the request marked approved, answerable until
   * `answerUntil`.
   */
  approveLink(params: { code: string; device: DeviceRecord; maxDevices: number; now: number; answerUntil: number }): Promise<DeviceRecord>;
  /**
   * The device holding the identity key registers its own MLS key under its device id: added (counted
   * against `maxDevices`), or its credential updated when the same key is already there; DEVICE_TAKEN when
   * the id names another key or a revoked device.
   */
  registerDevice(params: { device: DeviceRecord; maxDevices: number }): Promise<DeviceRecord>;
  device(username: string, deviceId: string): Promise<DeviceRecord | null>;
  /** Every device of the user, revoked ones included, oldest first. */
  devices(username: string): Promise<DeviceRecord[]>;
  /** Marks the device revoked; returns it, or null when the user has no such device (a revoked one answers as is). */
  revokeDevice(params: { username: string; deviceId: string; now: number }): Promise<DeviceRecord | null>;
  /** Replaces an unrevoked device's credential by one of the same or a later key index; false when there is no such device. */
  updateCredential(params: { username: string; deviceId: string; keyIndex: number; credential: Uint8Array }): Promise<boolean>;
  /** Records that the device was seen at `now`. */
  touch(username: string, deviceId: string, now: number): Promise<void>;
  /** Deletes expired link requests and devices revoked before `revokedBefore`; returns how many rows went. */
  sweep(params: { now: number; revokedBefore: number }): Promise<number>;
  close(): Promise<void>;
}

/**
 * What one MLS device keeps, all sealed at rest, as named documents (the CLI keeps them as files under
 * users/<name>/mls/ in its home, the browser in IndexedDB):
 *
 *   state-key.json       a random 32-byte state key, AES-256-GCM-wrapped under a key derived (HKDF-SHA256)
 *                        from the user's identity private key; rewrapped under the current key on rotation.
 *                        On a linked device (no identity key) it is wrapped under the device secret instead.
 *   device-secret.json   linked devices only: a random 32-byte device secret, encrypted under the user's
 *                        password (scrypt, AES-256-GCM); unlocked into the session at device login
 *   device.json          device id (public) and the sealed device secrets (Ed25519 key, credential)
 *   key-packages.json    published key packages (public) with their sealed private parts
 *   groups/<id>.json     each group's sealed ts-mls state, the log cursor, and a sealed pending commit
 *
 * Why a wrapped random key rather than one kept in the session: the session ends at logout or expiry, but
 * group states must survive it; the identity key is only ever on disk inside the password-encrypted
 * keystore (or the live session), so nothing here opens without the password. Why wrapped rather than
 * derived directly: a key rotation then rewrites one small file instead of every sealed state.
 */
import { gcm } from "@noble/ciphers/aes.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { scrypt } from "ethers";
import { bytesToHex, hexToBytes, randomBytes } from "../protocol/bytes";
import { ChatError } from "../protocol/errors";
import { decodeBase64, encodeBase64 } from "../protocol/wire-v2";

const SEAL_VERSION = 1;
const NONCE_BYTES = 12;

/** An unlocked identity key (secp256k1, 0x-prefixed hex) and its index in the user's on-chain history. */
export interface UnlockedKey {
  index: number;
  privateKey: string;
}

/**
 * Where one device's documents live: named JSON documents ("device.json", "groups/<id>.json"), each written
 * atomically (a crash leaves the old or the new one). Synchronous, so that a state is on record before the
 * next network call can make it matter; the CLI writes files, the browser a memory copy that it persists
 * before each request.
 */
export interface DeviceDocuments {
  read<T>(name: string): T | undefined;
  write(name: string, value: unknown): void;
  /** the names (without the folder) of the documents in `folder` */
  list(folder: string): string[];
}

const hexBytes = (hex: string): Uint8Array => hexToBytes(hex.startsWith("0x") ? hex.slice(2) : hex);

/** AES-256-GCM with a random nonce; `label` is the AAD, so a sealed blob cannot be moved to another slot. */
export function sealBytes(key: Uint8Array, label: string, plain: Uint8Array): string {
  const nonce = randomBytes(NONCE_BYTES);
  const sealed = gcm(key, nonce, new TextEncoder().encode(label)).encrypt(plain);
  const out = new Uint8Array(1 + NONCE_BYTES + sealed.length);
  out[0] = SEAL_VERSION;
  out.set(nonce, 1);
  out.set(sealed, 1 + NONCE_BYTES);
  return encodeBase64(out);
}

export function openBytes(key: Uint8Array, label: string, sealedBase64: string): Uint8Array {
  const sealed = decodeBase64(sealedBase64);
  if (sealed[0] !== SEAL_VERSION || sealed.length < 1 + NONCE_BYTES + 16) throw new ChatError("BAD_REQUEST", `sealed ${label} has an unknown format`);
  try {
    return gcm(key, sealed.subarray(1, 1 + NONCE_BYTES), new TextEncoder().encode(label)).decrypt(sealed.subarray(1 + NONCE_BYTES));
  } catch {
    throw new ChatError("KEY_MISMATCH", `sealed ${label} does not open with this key`);
  }
}

function wrappingKey(username: string, identity: UnlockedKey): Uint8Array {
  return hkdf(sha256, hexBytes(identity.privateKey), new TextEncoder().encode("eth-chat mls"), new TextEncoder().encode(`state key wrap v1 ${username}`), 32);
}

/** The linked device's wrapping key: another HKDF info string, so it can never equal an identity-key wrap. */
function deviceSecretWrappingKey(username: string, deviceSecret: Uint8Array): Uint8Array {
  return hkdf(sha256, deviceSecret, new TextEncoder().encode("eth-chat mls"), new TextEncoder().encode(`state key wrap by device secret v1 ${username}`), 32);
}

interface StateKeyFile {
  /** the identity key index that wraps the state key, or "device" for a linked device's device secret */
  wrappedBy: number | "device";
  sealed: string;
}

/** scrypt parameters of the device secret file: ethers' keystore defaults, or the tests' cheap ones. */
const SCRYPT = { N: 1 << 17, r: 8, p: 1 };
const SCRYPT_FAST = { N: 1 << 10, r: 8, p: 1 };

interface DeviceSecretFile {
  version: 1;
  scrypt: { N: number; r: number; p: number; salt: string };
  sealed: string;
}

export interface DeviceFile {
  deviceId: string;
  /** the identity key index that authorised the device's credential */
  keyIndex: number;
  /** sealed JSON { publicKey, signKey, identity } (hex) */
  sealed: string;
}

export interface KeyPackageEntry {
  /** the public MLSMessage (key package), base64 */
  publicPackage: string;
  /** sealed JSON of the private package (hex fields) */
  sealedPrivate: string;
  /** Unix ms */
  notAfter: number;
  lastResort: boolean;
}

export interface GroupFile {
  groupId: string;
  /** sealed ts-mls state (protocol/mls sealGroupState), base64 */
  sealed: string;
  /** the last log seq this device has processed */
  cursor: number;
  /** for a one-to-one group: the peer */
  peer?: string;
  /** a commit sent but not yet confirmed: its id, epoch, and the sealed state to adopt when it is */
  pending?: { id: string; epoch: number; sealedNext: string };
  /** this device was removed; the state is kept for reading history only */
  removed?: boolean;
  /** the group's name, as its members last set it (absent for one-to-one chats) */
  name?: string;
  /** members who asked to leave and are not removed yet */
  leaveRequests?: string[];
  /** this device asked to leave: it no longer reads or sends */
  left?: boolean;
  /**
   * Relay ids of application messages applied from early frames (before they had a seq), oldest first: the
   * log entry with such an id is passed over, since its message key is used up. At most MAX_EARLY_IDS.
   */
  early?: string[];
}

/**
 * Early ids kept per group. Some are never met in the log (a message never stored, or the re-send of one
 * read already, which the relay hands on before it finds the id stored), so the list is bounded. An id
 * dropped before its log entry came makes that entry fail to open: reported as refused, the message shown.
 */
export const MAX_EARLY_IDS = 256;

export class DeviceStore {
  constructor(
    private readonly documents: DeviceDocuments,
    readonly username: string,
  ) {}

  /** Whether a device was ever created in these documents. */
  exists(): boolean {
    return this.documents.read("device.json") !== undefined;
  }

  /** Whether these documents hold a linked device (its device secret). */
  isLinked(): boolean {
    return this.documents.read("device-secret.json") !== undefined;
  }

  /**
   * The state key, creating it on first use; opened with whichever unlocked identity key wrapped it, and
   * rewrapped under the current one (first in `identityKeys`) after a rotation.
   */
  stateKey(identityKeys: UnlockedKey[]): Uint8Array {
    const storedBy = this.documents.read<StateKeyFile>("state-key.json")?.wrappedBy;
    if (storedBy === "device") throw new ChatError("NO_LOCAL_KEY", "this device is a linked device: log in to unlock its device secret");
    if (identityKeys.length === 0) throw new ChatError("NO_LOCAL_KEY", "no unlocked identity key: log in first");
    const current = identityKeys[0];
    const stored = this.documents.read<StateKeyFile>("state-key.json");
    let key: Uint8Array;
    if (stored) {
      const wrapper = identityKeys.find((k) => k.index === stored.wrappedBy);
      if (!wrapper) throw new ChatError("NO_LOCAL_KEY", `the MLS state is sealed under identity key ${stored.wrappedBy}, which is not unlocked`);
      key = openBytes(wrappingKey(this.username, wrapper), "state key", stored.sealed);
      if (stored.wrappedBy === current.index) return key;
    } else {
      key = randomBytes(32);
    }
    this.documents.write("state-key.json", { wrappedBy: current.index, sealed: sealBytes(wrappingKey(this.username, current), "state key", key) });
    return key;
  }

  /**
   * A linked device's state key, opened with its device secret (created with the first call). A device whose
   * state key an identity key wraps is not a linked device: NO_LOCAL_KEY.
   */
  linkedStateKey(deviceSecret: Uint8Array): Uint8Array {
    const wrap = deviceSecretWrappingKey(this.username, deviceSecret);
    const stored = this.documents.read<StateKeyFile>("state-key.json");
    if (stored) {
      if (stored.wrappedBy !== "device") throw new ChatError("NO_LOCAL_KEY", "this device's MLS state is sealed under the identity key, not a device secret");
      return openBytes(wrap, "state key", stored.sealed);
    }
    const key = randomBytes(32);
    this.documents.write("state-key.json", { wrappedBy: "device", sealed: sealBytes(wrap, "state key", key) });
    return key;
  }

  /** Encrypts a linked device's secret under the user's password (scrypt, then AES-256-GCM) and saves it. */
  async writeDeviceSecret(deviceSecret: Uint8Array, password: string, options: { fastKdf: boolean }): Promise<void> {
    const params = options.fastKdf ? SCRYPT_FAST : SCRYPT;
    const salt = randomBytes(16);
    const key = hexBytes(await scrypt(new TextEncoder().encode(password.normalize("NFC")), salt, params.N, params.r, params.p, 32));
    const file: DeviceSecretFile = { version: 1, scrypt: { ...params, salt: bytesToHex(salt) }, sealed: sealBytes(key, "device secret", deviceSecret) };
    this.documents.write("device-secret.json", file);
  }

  /** The linked device's secret; WRONG_PASSWORD when the password does not open it. */
  async readDeviceSecret(password: string): Promise<Uint8Array> {
    const file = this.documents.read<DeviceSecretFile>("device-secret.json");
    if (!file || file.version !== 1) throw new ChatError("NO_LOCAL_KEY", `no linked device of ${this.username} here`);
    const { N, r, p, salt } = file.scrypt;
    const key = hexBytes(await scrypt(new TextEncoder().encode(password.normalize("NFC")), hexBytes(salt), N, r, p, 32));
    try {
      return openBytes(key, "device secret", file.sealed);
    } catch {
      throw new ChatError("WRONG_PASSWORD", `wrong password for ${this.username}`);
    }
  }

  readDevice(): DeviceFile | undefined {
    return this.documents.read<DeviceFile>("device.json");
  }

  writeDevice(device: DeviceFile): void {
    this.documents.write("device.json", device);
  }

  readKeyPackages(): KeyPackageEntry[] {
    return this.documents.read<{ packages: KeyPackageEntry[] }>("key-packages.json")?.packages ?? [];
  }

  writeKeyPackages(packages: KeyPackageEntry[]): void {
    this.documents.write("key-packages.json", { packages });
  }

  readGroup(groupIdHex: string): GroupFile | undefined {
    return this.documents.read<GroupFile>(`groups/${groupIdHex}.json`);
  }

  writeGroup(group: GroupFile): void {
    this.documents.write(`groups/${group.groupId}.json`, group);
  }

  groupIds(): string[] {
    return this.documents
      .list("groups")
      .filter((name) => /^[0-9a-f]{64}\.json$/.test(name))
      .map((name) => name.slice(0, 64));
  }
}

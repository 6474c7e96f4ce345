/**
 * The user's identity keys on this device, each encrypted with the password. On disk: the keystore
 * files of cli/keystore.ts (users/<name>/identity.json and users/<name>/keys/<index>.json).
 */
import { randomBytes, scryptSync, timingSafeEqual } from "node:crypto";
import { ChatError } from "../../protocol/errors";
import { publicKeyOf, publicKeyToAddress } from "../../protocol/keys";
import type { Home } from "../home";
import { confirmKey, dropPendingKey, readIdentity, storeKey, unlockKey, type LocalKey, type UnlockedKey } from "../keystore";

export interface KeyStore {
  /** The keys of `username` on this device, oldest first, pending ones included. */
  localKeys(username: string): LocalKey[];
  /** Encrypts `privateKey` with the password and records it as key `index` (pending until the chain has it). */
  store(params: { username: string; index: number; privateKey: string; password: string; pending: boolean }): Promise<LocalKey>;
  /** Marks key `index` as on chain. */
  confirm(username: string, index: number): void;
  /** Forgets a key that never reached the chain. */
  dropPending(username: string, index: number): void;
  /** Decrypts key `index`: NO_LOCAL_KEY when absent, WRONG_PASSWORD when the password does not open it. */
  unlock(username: string, index: number, password: string): Promise<UnlockedKey>;
}

export class FileKeyStore implements KeyStore {
  /** `fastKdf`: the tests' cheap scrypt parameters (CHAT_INSECURE_FAST_KDF=1), never for real keys. */
  constructor(
    private readonly home: Home,
    private readonly fastKdf: boolean,
  ) {}
  localKeys(username: string): LocalKey[] {
    return readIdentity(this.home, username).keys;
  }
  store(params: { username: string; index: number; privateKey: string; password: string; pending: boolean }): Promise<LocalKey> {
    return storeKey({ home: this.home, fastKdf: this.fastKdf, ...params });
  }
  confirm(username: string, index: number): void {
    confirmKey(this.home, username, index);
  }
  dropPending(username: string, index: number): void {
    dropPendingKey(this.home, username, index);
  }
  unlock(username: string, index: number, password: string): Promise<UnlockedKey> {
    return unlockKey({ home: this.home, username, index, password });
  }
}

/** Keys held in memory for tests; the password is checked against a salted scrypt hash, never kept. */
export class MemoryKeyStore implements KeyStore {
  private readonly keys = new Map<string, { key: LocalKey; privateKey: string; salt: Buffer; check: Buffer }>();

  private static hash(password: string, salt: Buffer): Buffer {
    return scryptSync(password.normalize("NFC"), salt, 32, { N: 1 << 10 });
  }

  localKeys(username: string): LocalKey[] {
    return [...this.keys.entries()]
      .filter(([id]) => id.startsWith(`${username}/`))
      .map(([, stored]) => ({ ...stored.key }))
      .sort((a, b) => a.index - b.index);
  }
  async store(params: { username: string; index: number; privateKey: string; password: string; pending: boolean }): Promise<LocalKey> {
    const publicKey = publicKeyOf(params.privateKey);
    const key: LocalKey = { index: params.index, publicKey, address: publicKeyToAddress(publicKey), createdAt: Date.now(), ...(params.pending ? { pending: true } : {}) };
    const salt = randomBytes(16);
    this.keys.set(`${params.username}/${params.index}`, { key, privateKey: params.privateKey, salt, check: MemoryKeyStore.hash(params.password, salt) });
    return { ...key };
  }
  confirm(username: string, index: number): void {
    const stored = this.keys.get(`${username}/${index}`);
    if (stored) delete stored.key.pending;
  }
  dropPending(username: string, index: number): void {
    if (this.keys.get(`${username}/${index}`)?.key.pending) this.keys.delete(`${username}/${index}`);
  }
  async unlock(username: string, index: number, password: string): Promise<UnlockedKey> {
    const stored = this.keys.get(`${username}/${index}`);
    if (!stored) throw new ChatError("NO_LOCAL_KEY", `no key ${index} of ${username} on this device; on a new device use: chat reset ${username}`);
    if (!timingSafeEqual(MemoryKeyStore.hash(password, stored.salt), stored.check)) throw new ChatError("WRONG_PASSWORD", `wrong password for ${username}`);
    return { index, privateKey: stored.privateKey };
  }
}

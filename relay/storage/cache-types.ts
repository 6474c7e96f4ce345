/**
 * The relay's cache of the chain (users, key histories, sync position) and its login challenges,
 * behind one interface with a MySQL and an in-memory implementation. The cache is written only from
 * ChatRegistry events (relay/chain/sync.ts); nothing else may change users or keys.
 */
import type { KeyKind, RegistryEvent } from "../chain/registry";

export interface SyncState {
  chainId: string;
  contractAddress: string;
  deployBlock: number;
  /** the last block whose events are applied; deployBlock - 1 before the first range */
  lastBlock: number;
  /** its hash ("" when lastBlock < 0), to notice a reorganised or reset chain */
  lastBlockHash: string;
}

export interface CachedUser {
  username: string;
  usernameHash: string;
  /** the on-chain credential hash (never a password) */
  credentialHash: string;
  /** the current public key */
  publicKey: string;
  /** block time of the last key change, Unix seconds */
  updateTime: number;
}

export interface CachedKey {
  username: string;
  index: number;
  publicKey: string;
  address: string;
  kind: KeyKind;
  blockNumber: number;
  /** Unix seconds */
  blockTime: number;
  transactionHash: string;
}

/** A reset requested on chain and neither completed nor cancelled, as the events tell it. */
export interface CachedPendingReset {
  username: string;
  publicKey: string;
  address: string;
  /** Unix seconds of chain time from which anyone may complete it */
  effectiveAt: number;
  blockNumber: number;
  transactionHash: string;
}

/** An event together with the time of its block. */
export type TimedEvent = RegistryEvent & { blockTime: number };

export interface CacheStore {
  readonly kind: "mysql" | "memory";
  migrate(): Promise<void>;
  ping(): Promise<void>;
  getSyncState(): Promise<SyncState | null>;
  /**
   * Applies `events` (in chain order) and moves the position to `next`, atomically, but only if the
   * stored position still equals `expected` (another relay instance may have moved it); returns
   * whether it applied.
   */
  applyEvents(params: { expected: SyncState; events: TimedEvent[]; next: SyncState }): Promise<boolean>;
  /** Forgets every user and key and sets the position (a rebuild from the deployment block). */
  reset(start: SyncState): Promise<void>;
  /** Empties every cache table, position included (the `resync` command). */
  truncate(): Promise<void>;
  getUser(username: string): Promise<CachedUser | null>;
  getKeys(username: string): Promise<CachedKey[]>;
  getPendingReset(username: string): Promise<CachedPendingReset | null>;
  /** Pending resets whose effectiveAt is at or before `chainTime` (Unix seconds), oldest first. */
  duePendingResets(chainTime: number, limit: number): Promise<CachedPendingReset[]>;
  countUsers(): Promise<number>;
  /** Remembers a login challenge until `expiresAt` (Unix ms). */
  putChallenge(params: { username: string; challenge: string; expiresAt: number }): Promise<void>;
  /** Deletes the challenge and says whether it existed for this user and had not expired (single use). */
  consumeChallenge(params: { username: string; challenge: string; now: number }): Promise<boolean>;
  close(): Promise<void>;
}

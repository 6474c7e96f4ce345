/**
 * How events change the cache, shared by both implementations so they cannot drift apart.
 */
import { publicKeyToAddress } from "../../protocol/keys";
import type { CachedKey, CachedPendingReset, CachedUser, TimedEvent } from "./cache-types";

export interface CacheWriter {
  userByHash(usernameHash: string): Promise<CachedUser | null>;
  insertUser(user: CachedUser): Promise<void>;
  updateUser(username: string, changes: Partial<Pick<CachedUser, "credentialHash" | "publicKey" | "updateTime">>): Promise<void>;
  insertKey(key: CachedKey): Promise<void>;
  /** Records the user's one pending reset (the contract allows one at a time). */
  putPendingReset(reset: CachedPendingReset): Promise<void>;
  deletePendingReset(username: string): Promise<void>;
}

export async function applyEvent(writer: CacheWriter, event: TimedEvent): Promise<void> {
  if (event.type === "registered") {
    await writer.insertUser({
      username: event.username,
      usernameHash: event.usernameHash,
      credentialHash: event.credentialHash,
      publicKey: event.publicKey,
      updateTime: event.blockTime,
    });
    await writer.insertKey({
      username: event.username,
      index: 0,
      publicKey: event.publicKey,
      address: publicKeyToAddress(event.publicKey),
      kind: "registered",
      blockNumber: event.blockNumber,
      blockTime: event.blockTime,
      transactionHash: event.transactionHash,
    });
    return;
  }
  const user = await writer.userByHash(event.usernameHash);
  // The contract emits nothing for an unknown user, so this means the cache missed a registration.
  if (!user) throw new Error(`cache: event for unknown username hash ${event.usernameHash} at block ${event.blockNumber}`);
  if (event.type === "credential") {
    await writer.updateUser(user.username, { credentialHash: event.credentialHash });
    return;
  }
  if (event.type === "resetRequested") {
    await writer.putPendingReset({
      username: user.username,
      publicKey: event.publicKey,
      address: publicKeyToAddress(event.publicKey),
      effectiveAt: event.effectiveAt,
      blockNumber: event.blockNumber,
      transactionHash: event.transactionHash,
    });
    return;
  }
  if (event.type === "resetCancelled") {
    await writer.deletePendingReset(user.username);
    return;
  }
  // A completed reset ends the pending one; a rotation also drops it (the contract emits ResetCancelled too).
  await writer.deletePendingReset(user.username);
  await writer.insertKey({
    username: user.username,
    index: event.index,
    publicKey: event.publicKey,
    address: publicKeyToAddress(event.publicKey),
    kind: event.type,
    blockNumber: event.blockNumber,
    blockTime: event.blockTime,
    transactionHash: event.transactionHash,
  });
  await writer.updateUser(user.username, { publicKey: event.publicKey, updateTime: event.blockTime });
}

export function sameSyncState(a: { lastBlock: number; lastBlockHash: string; chainId: string; contractAddress: string } | null, b: typeof a): boolean {
  if (!a || !b) return a === b;
  return a.lastBlock === b.lastBlock && a.lastBlockHash === b.lastBlockHash && a.chainId === b.chainId && a.contractAddress === b.contractAddress;
}

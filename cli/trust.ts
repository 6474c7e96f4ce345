/**
 * Keys of other users: fetched from the relay, CHECKED against the chain over the client's own JSON-RPC
 * (each record's address, index and kind), pinned in the contact store, and every change since
 * the pin announced before the next message: a rotation as a warning, a reset more loudly.
 */
import type { KeyKindName } from "../protocol/eip712";
import { ChatError } from "../protocol/errors";
import { keyFingerprint, normalizePublicKey, publicKeyToAddress } from "../protocol/keys";
import { KeysResponse } from "../protocol/wire";
import type { Context } from "./context";

/** What checking keys needs: the chain (registry), the relay, output for warnings, and for pinning the contacts. */
export type KeyFetchDeps = Pick<Context, "registry" | "relay" | "out">;
export type KeyPinDeps = Pick<Context, "contacts" | "out">;
export type KeyBookDeps = KeyFetchDeps & KeyPinDeps;

export interface VerifiedKey {
  index: number;
  publicKey: string;
  address: string;
  kind: KeyKindName;
  /** block time from the chain, Unix seconds */
  timestamp: number;
  fingerprint: string;
}

const RELAY_CATCH_UP_MS = 6_000;

/**
 * The user's key history as the relay gives it, every record checked against the chain. A reset pending on
 * chain is announced as loudly as a completed one: it is the moment the owner can still stop a takeover.
 */
export async function fetchVerifiedKeys(ctx: KeyFetchDeps, username: string): Promise<VerifiedKey[]> {
  const registry = await ctx.registry();
  const [chainKeys, pendingReset] = await Promise.all([registry.keyHistory(username), registry.pendingReset(username)]);
  if (chainKeys.length === 0) throw new ChatError("UNKNOWN_USER", `unknown user ${username}`);
  if (pendingReset) announcePendingReset(ctx, username, pendingReset);
  const started = Date.now();
  let relayKeys: KeysResponse["keys"];
  for (;;) {
    let response: KeysResponse;
    try {
      response = await ctx.relay.get(`/v1/users/${encodeURIComponent(username)}/keys`, KeysResponse);
    } catch (error) {
      if (error instanceof ChatError && (error.code === "UNKNOWN_USER" || error.code === "NOT_FOUND")) {
        throw new ChatError("KEY_MISMATCH", `key mismatch for ${username}: the relay does not know ${username}, the chain does`);
      }
      throw error;
    }
    if (response.username !== username) throw new ChatError("KEY_MISMATCH", `key mismatch for ${username}: the relay answered for ${response.username}`);
    relayKeys = response.keys;
    // The relay's cache may lag the chain by a block or two after a rotation: wait for it, briefly.
    if (relayKeys.length >= chainKeys.length || Date.now() - started > RELAY_CATCH_UP_MS) break;
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  if (relayKeys.length !== chainKeys.length) {
    throw new ChatError(
      "KEY_MISMATCH",
      `key mismatch for ${username}: the relay lists ${relayKeys.length} keys, the chain has ${chainKeys.length}`,
    );
  }
  return chainKeys.map((record) => {
    const given = relayKeys.find((key) => key.index === record.index);
    let publicKey: string;
    try {
      publicKey = normalizePublicKey(given?.publicKey);
    } catch {
      throw new ChatError("KEY_MISMATCH", `key mismatch for ${username}: the relay gave no valid key ${record.index}`);
    }
    if (publicKeyToAddress(publicKey) !== record.address || given!.kind !== record.kind) {
      throw new ChatError(
        "KEY_MISMATCH",
        `key mismatch for ${username}: the relay's key ${record.index} is not the one on chain; not encrypting to it`,
      );
    }
    return { index: record.index, publicKey, address: record.address, kind: record.kind, timestamp: record.timestamp, fingerprint: keyFingerprint(publicKey) };
  });
}

function when(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(".000Z", "Z");
}

function announcePendingReset(ctx: Pick<Context, "out">, peer: string, pending: { address: string; effectiveAt: number }): void {
  ctx.out.warn(
    {
      code: "KEY_RESET_PENDING",
      user: peer,
      pendingKey: pending.address,
      effectiveAt: when(pending.effectiveAt),
      message:
        `${peer}'s key is being RESET: a password-proven reset to a new key (address ${pending.address}) is pending on chain and ` +
        `takes effect at ${when(pending.effectiveAt)} unless ${peer}'s current key cancels it. If ${peer} did not ask for it, ` +
        `someone else knows ${peer}'s password: tell ${peer} to run chat cancel-reset. Messages still go to ${peer}'s current key.`,
    },
    true,
  );
}

/**
 * Compares the chain-checked keys with the pin, announces every change, and pins the new state.
 * Returns the warnings announced.
 */
export function announceKeyChanges(ctx: KeyPinDeps, me: string, peer: string, keys: VerifiedKey[]): { code: string }[] {
  const pin = ctx.contacts.get(me, peer);
  const warnings: { code: string }[] = [];
  if (pin) {
    for (const pinned of pin.keys) {
      const now = keys.find((key) => key.index === pinned.index);
      if (!now || now.publicKey !== pinned.publicKey) {
        // The chain's history is append-only: a different key at a pinned index means another chain or contract.
        throw new ChatError("KEY_MISMATCH", `key mismatch for ${peer}: key ${pinned.index} differs from the one pinned earlier`);
      }
    }
    const known = new Set(pin.keys.map((key) => key.index));
    const verifiedLost = pin.verified !== undefined;
    for (const key of keys.filter((k) => !known.has(k.index))) {
      if (key.kind === "reset") {
        const warning = {
          code: "KEY_RESET",
          user: peer,
          index: key.index,
          fingerprint: key.fingerprint,
          at: when(key.timestamp),
          message:
            `${peer}'s key was RESET at ${when(key.timestamp)} (a password-proven recovery through the relay, e.g. a new device); ` +
            `new fingerprint ${key.fingerprint}. If ${peer} did not do this, someone else may be posing as ${peer}: ` +
            `compare safety numbers (chat whois ${peer}) before trusting it.${verifiedLost ? " The key you verified is no longer current." : ""}`,
        };
        ctx.out.warn(warning, true);
        warnings.push(warning);
      } else {
        const warning = {
          code: "KEY_ROTATED",
          user: peer,
          index: key.index,
          fingerprint: key.fingerprint,
          at: when(key.timestamp),
          message:
            `${peer} changed keys (rotated at ${when(key.timestamp)}, signed by the previous key); new fingerprint ${key.fingerprint}.` +
            `${verifiedLost ? ` The key you verified is no longer current: compare safety numbers again (chat whois ${peer}).` : ""}`,
        };
        ctx.out.warn(warning);
        warnings.push(warning);
      }
    }
  }
  const current = keys[keys.length - 1];
  const verified = pin?.verified && pin.verified.index === current.index && pin.verified.publicKey === current.publicKey ? pin.verified : undefined;
  ctx.contacts.put(me, peer, {
    keys: keys.map((key) => ({ index: key.index, publicKey: key.publicKey, kind: key.kind, timestamp: key.timestamp })),
    ...(verified ? { verified } : {}),
  });
  return warnings;
}

/** Per-process cache of checked and announced keys. */
export class KeyBook {
  private cache = new Map<string, Promise<VerifiedKey[]>>();
  constructor(
    private readonly ctx: KeyBookDeps,
    private readonly me: string,
  ) {}

  /** Checked keys of `peer`, with changes announced once per process. `fresh` re-reads the chain. */
  keys(peer: string, fresh = false): Promise<VerifiedKey[]> {
    if (fresh || !this.cache.has(peer)) {
      const loading = fetchVerifiedKeys(this.ctx, peer).then((keys) => {
        announceKeyChanges(this.ctx, this.me, peer, keys);
        return keys;
      });
      loading.catch(() => this.cache.delete(peer));
      this.cache.set(peer, loading);
    }
    return this.cache.get(peer)!;
  }

  /** The key `peer` held at `index` (for checking a signature); refreshes once when the index is new. */
  async keyAt(peer: string, index: number): Promise<VerifiedKey> {
    let keys = await this.keys(peer);
    if (!keys.some((key) => key.index === index)) keys = await this.keys(peer, true);
    const key = keys.find((k) => k.index === index);
    if (!key) throw new ChatError("KEY_MISMATCH", `key mismatch for ${peer}: the chain has no key ${index}`);
    return key;
  }

  /**
   * The key to encrypt to: the chain-checked current key; when the chain cannot be reached, only the
   * exact key the person verified earlier (chat verify), and only while the relay still names it current.
   */
  async current(peer: string): Promise<VerifiedKey> {
    let keys: VerifiedKey[];
    try {
      keys = await this.keys(peer);
    } catch (error) {
      if (error instanceof ChatError && error.code === "CHAIN_UNAVAILABLE") return verifiedKeyWithoutChain(this.ctx, this.me, peer, error);
      throw error;
    }
    return keys[keys.length - 1];
  }
}

async function verifiedKeyWithoutChain(ctx: KeyBookDeps, me: string, peer: string, cause: ChatError): Promise<VerifiedKey> {
  const pin = ctx.contacts.get(me, peer);
  const verified = pin?.verified;
  if (!verified) {
    throw new ChatError("KEY_UNVERIFIED", `cannot check ${peer}'s key against the chain (${cause.message}) and you have not verified it (chat verify ${peer}): not encrypting`);
  }
  const response = await ctx.relay.get(`/v1/users/${encodeURIComponent(peer)}/keys`, KeysResponse);
  const current = response.keys[response.keys.length - 1];
  let publicKey: string | undefined;
  try {
    publicKey = normalizePublicKey(current?.publicKey);
  } catch {}
  if (response.username !== peer || current?.index !== verified.index || publicKey !== verified.publicKey) {
    throw new ChatError(
      "KEY_UNVERIFIED",
      `cannot check ${peer}'s key against the chain (${cause.message}), and the relay's current key is not the key #${verified.index} you verified: not encrypting`,
    );
  }
  const pinned = pin.keys.find((key) => key.index === verified.index);
  ctx.out.info(`note: the chain is unreachable; encrypting to ${peer}'s key #${verified.index}, which you verified on ${new Date(verified.at).toISOString().slice(0, 10)}`, { always: true });
  return {
    index: verified.index,
    publicKey: verified.publicKey,
    address: publicKeyToAddress(verified.publicKey),
    kind: pinned?.kind ?? "registered",
    timestamp: pinned?.timestamp ?? 0,
    fingerprint: keyFingerprint(verified.publicKey),
  };
}

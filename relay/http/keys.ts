/**
 * Key lookup: a user's current key and whole history, with kinds and blocks, from the cache; on a miss
 * (a user registered after the last sync), from the chain's events. Clients must still check keys
 * against the chain themselves (the relay is not trusted with keys); `verified` says whether the relay could confirm its
 * cache against a reachable chain.
 */
import { Router } from "express";
import { ChatError, isChatError } from "../../protocol/errors";
import { publicKeyToAddress } from "../../protocol/keys";
import { Username, type KeyRecordView, type KeysResponse, type PendingResetView } from "../../protocol/wire";
import { isKeyEvent, type KeyEvent, type RegistryEvent } from "../chain/registry";
import { assertCacheFresh, cacheVerified, clientAddress, fromStorage, type HttpContext } from "./context";
import { parseWith } from "./errors";
import type { UserDirectory } from "../ws/user-directory";

export function keyRoutes(
  ctx: HttpContext,
  params: {
    /** remembers names the chain did not know, so that a junk name costs one chain call per TTL */
    users: Pick<UserDirectory, "knownMissing" | "rememberMissing">;
    /** lookups per rate-limit window per address that miss the cache and must ask the chain */
    missesPerAddress: number;
  },
): Router {
  const router = Router();

  async function scan(username: string, from: number, head: number): Promise<RegistryEvent[]> {
    const events: RegistryEvent[] = [];
    for (let start = from; start <= head; start += ctx.settings.syncBlockRange) {
      const end = Math.min(head, start + ctx.settings.syncBlockRange - 1);
      events.push(...(await ctx.chain.getEvents(start, end, username)));
    }
    return events;
  }

  async function fromChain(username: string): Promise<KeyRecordView[]> {
    const count = await ctx.chain.keyCount(username);
    if (count === 0) throw new ChatError("UNKNOWN_USER", `no user named ${username}`);
    const head = await ctx.chain.blockNumber();
    const synced = ctx.syncer.status().syncedBlock;
    // A miss normally means the user is newer than the cache: scan only the unsynced blocks first.
    let events: KeyEvent[] = (await scan(username, Math.max(ctx.settings.deployBlock, synced + 1), head)).filter(isKeyEvent);
    if (events[0]?.type !== "registered" || events.length < count) {
      events = (await scan(username, ctx.settings.deployBlock, head)).filter(isKeyEvent);
    }
    const times = new Map<number, number>();
    for (const n of new Set(events.map((e) => e.blockNumber))) {
      const block = await ctx.chain.getBlock(n);
      if (!block) throw new ChatError("CHAIN_UNAVAILABLE", "the chain lost a block while reading keys; retry");
      times.set(n, block.timestamp);
    }
    return events.map((e) => ({
      index: e.type === "registered" ? 0 : e.index,
      publicKey: e.publicKey,
      address: publicKeyToAddress(e.publicKey),
      kind: e.type,
      blockNumber: e.blockNumber,
      timestamp: times.get(e.blockNumber)!,
      transactionHash: e.transactionHash,
    }));
  }

  /**
   * The pending reset from the cache; for a user the cache does not know yet, from the chain (the contract
   * stores only the key's address: the full key is in the latest ResetRequested event).
   */
  async function pendingResetOf(username: string, cachedUser: boolean): Promise<PendingResetView | null> {
    if (cachedUser) {
      const cached = await fromStorage(ctx.cache.getPendingReset(username));
      return cached
        ? { publicKey: cached.publicKey, address: cached.address, effectiveAt: cached.effectiveAt, blockNumber: cached.blockNumber, transactionHash: cached.transactionHash }
        : null;
    }
    const pending = await ctx.chain.pendingReset(username);
    if (!pending) return null;
    const head = await ctx.chain.blockNumber();
    const requested = (await scan(username, ctx.settings.deployBlock, head)).filter(
      (e): e is Extract<RegistryEvent, { type: "resetRequested" }> => e.type === "resetRequested",
    );
    const last = requested[requested.length - 1];
    if (!last || publicKeyToAddress(last.publicKey) !== pending.address) {
      throw new ChatError("CHAIN_UNAVAILABLE", "the chain's pending reset is not in its events yet; retry");
    }
    return { publicKey: last.publicKey, address: pending.address, effectiveAt: pending.effectiveAt, blockNumber: last.blockNumber, transactionHash: last.transactionHash };
  }

  router.get("/v1/users/:username/keys", async (req, res) => {
    const username = parseWith(Username, req.params.username, "username");
    assertCacheFresh(ctx);
    const cached = await fromStorage(ctx.cache.getKeys(username));
    let response: KeysResponse;
    if (cached.length > 0) {
      response = {
        username,
        source: "cache",
        verified: cacheVerified(ctx),
        keys: cached.map((k) => ({
          index: k.index,
          publicKey: k.publicKey,
          address: k.address,
          kind: k.kind,
          blockNumber: k.blockNumber,
          timestamp: k.blockTime,
          transactionHash: k.transactionHash,
        })),
        pendingReset: await pendingResetOf(username, true),
      };
    } else {
      // A cache miss costs chain calls: a name known to be missing is answered from memory, and each
      // address may make only so many misses per window (junk names cannot make the relay query the chain).
      if (params.users.knownMissing(username)) throw new ChatError("UNKNOWN_USER", `no user named ${username}`);
      await ctx.limits.limiter.hit([{ key: `keys-miss:addr:${clientAddress(req)}`, limit: params.missesPerAddress }]);
      let keys: KeyRecordView[];
      try {
        keys = await fromChain(username);
      } catch (error) {
        if (isChatError(error) && error.code === "UNKNOWN_USER") params.users.rememberMissing(username);
        throw error;
      }
      response = { username, source: "chain", verified: true, keys, pendingReset: await pendingResetOf(username, false) };
    }
    res.json(response);
  });

  return router;
}

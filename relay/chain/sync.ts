/**
 * Keeps the cache true to the chain: applies ChatRegistry events from the deployment block on, in
 * bounded eth_getLogs ranges, resuming from the stored position, polling for new blocks.
 *
 * Each poll first checks that the chain is still the one the cache was built from: same chain id,
 * contract code present, and the stored last block still has the stored hash. Any difference (a reset
 * or replaced chain, a reorganisation) marks the cache stale, so keys and logins answer 503 CACHE_STALE,
 * and then, once the contract's code is present, rebuilds the cache from the deployment block. Stale
 * data is never served in between: the flag clears only when the rebuild has caught up with the head.
 */
import type { Logger } from "pino";
import { isChatError } from "../../protocol/errors";
import type { CacheStore, SyncState, TimedEvent } from "../storage/cache-types";
import type { RegistryChain } from "./registry";
import { createResetCompleter } from "./reset-completer";

export interface SyncStatus {
  /** last block whose events are in the cache (deployBlock - 1 before any) */
  syncedBlock: number;
  headBlock: number | null;
  lagBlocks: number;
  stale: boolean;
  staleReason: string | null;
  /** whether the last poll reached the chain */
  chainOk: boolean;
  /** Unix ms of the last poll that reached the chain */
  lastContactAt: number | null;
}

export interface Syncer {
  start(): void;
  stop(): Promise<void>;
  status(): SyncStatus;
  /** One poll now (joins a running one). */
  syncOnce(): Promise<void>;
  /** Forgets the cache and rebuilds it from the deployment block up to the head. */
  rebuild(reason: string): Promise<void>;
  /** Polls until the cache covers `blockNumber`; false after `timeoutMs`. */
  waitForBlock(blockNumber: number, timeoutMs: number): Promise<boolean>;
  /** The pass over due resets that the last poll started, if one runs (tests wait for it). */
  resetsCompleted(): Promise<void>;
}

export function createSyncer(params: {
  chain: RegistryChain;
  cache: CacheStore;
  deployBlock: number;
  pollMs: number;
  blockRange: number;
  confirmations: number;
  logger: Logger;
  clock?: () => number;
  /** Whether this instance completes due resets after each poll (default true). */
  completeResets?: boolean;
}): Syncer {
  const { chain, cache, deployBlock, logger } = params;
  const clock = params.clock ?? Date.now;
  const status: SyncStatus = {
    syncedBlock: deployBlock - 1,
    headBlock: null,
    lagBlocks: 0,
    stale: false,
    staleReason: null,
    chainOk: false,
    lastContactAt: null,
  };
  let running: Promise<void> | null = null;
  const completer = params.completeResets === false ? null : createResetCompleter({ chain, cache, logger, clock });
  let completing: Promise<void> = Promise.resolve();
  let completerHead = -1;
  let timer: NodeJS.Timeout | null = null;
  let stopped = true;

  function markStale(reason: string) {
    if (!status.stale || status.staleReason !== reason) logger.warn({ reason }, "chain cache is stale: keys are not served until it is rebuilt");
    status.stale = true;
    status.staleReason = reason;
  }

  async function genesis(chainId: bigint): Promise<SyncState> {
    const before = deployBlock - 1;
    const block = before >= 0 ? await chain.getBlock(before) : null;
    return {
      chainId: chainId.toString(),
      contractAddress: chain.contractAddress,
      deployBlock,
      lastBlock: before,
      lastBlockHash: block?.hash ?? "",
    };
  }

  /** Why the stored position cannot be trusted on this chain, or null. */
  async function mismatch(state: SyncState, chainId: bigint, head: number): Promise<string | null> {
    if (state.chainId !== chainId.toString()) return `chain id changed from ${state.chainId} to ${chainId}`;
    if (state.contractAddress.toLowerCase() !== chain.contractAddress.toLowerCase()) return "contract address changed";
    if (state.deployBlock !== deployBlock) return "deployment block changed";
    if (state.lastBlock < 0) return null;
    if (head < state.lastBlock) return `chain head ${head} is behind the synced block ${state.lastBlock}`;
    const block = await chain.getBlock(state.lastBlock);
    if (!block) return `synced block ${state.lastBlock} is gone`;
    if (block.hash !== state.lastBlockHash) return `block ${state.lastBlock} has a different hash`;
    return null;
  }

  async function catchUp(state: SyncState, target: number): Promise<SyncState | null> {
    let current = state;
    while (current.lastBlock < target) {
      const from = current.lastBlock + 1;
      const to = Math.min(target, from + params.blockRange - 1);
      const events = await chain.getEvents(from, to);
      const blockNumbers = [...new Set([...events.map((e) => e.blockNumber), to])];
      const blocks = new Map((await Promise.all(blockNumbers.map((n) => chain.getBlock(n)))).map((b, i) => [blockNumbers[i], b]));
      const end = blocks.get(to);
      if (!end) return null; // the node lost the block meanwhile: try again next poll
      for (const event of events) {
        // A log from another fork than the block we just read: the chain moved; retry next poll.
        if (blocks.get(event.blockNumber)?.hash !== event.blockHash) return null;
      }
      const timed: TimedEvent[] = events.map((e) => ({ ...e, blockTime: blocks.get(e.blockNumber)!.timestamp }));
      const next: SyncState = { ...current, lastBlock: to, lastBlockHash: end.hash };
      const applied = await cache.applyEvents({ expected: current, events: timed, next });
      if (!applied) {
        // Another relay instance moved the position; continue from wherever it is now.
        const fresh = await cache.getSyncState();
        if (!fresh) return null;
        current = fresh;
        continue;
      }
      if (events.length) logger.debug({ from, to, events: events.length }, "cache synced a block range");
      current = next;
      status.syncedBlock = current.lastBlock;
    }
    return current;
  }

  let lastCheckedHead = -1;

  async function poll(forceRebuild: string | null): Promise<void> {
    let chainId: bigint;
    let head: number;
    let hasCode = true;
    try {
      [chainId, head] = await Promise.all([chain.liveChainId(), chain.blockNumber()]);
      // Fetching the contract's code costs ~3 ms of CPU (7 KB of hex); it can only vanish with a new block
      // (a reset chain moves its head too), so check it when the head moved, or while stale or forced.
      if (head !== lastCheckedHead || status.stale || forceRebuild) {
        hasCode = await chain.hasCode();
        lastCheckedHead = head;
      }
    } catch (error) {
      status.chainOk = false;
      throw error;
    }
    status.chainOk = true;
    status.lastContactAt = clock();
    status.headBlock = head;
    const target = head - params.confirmations;

    let state = await cache.getSyncState();
    if (!hasCode) {
      chain.resetNonce();
      markStale(`no contract code at ${chain.contractAddress}`);
      return;
    }
    const reason = forceRebuild ?? (state ? await mismatch(state, chainId, head) : "empty cache");
    if (reason) {
      if (state) markStale(reason); // an empty cache has nothing stale to hide
      logger.info({ reason, deployBlock }, "rebuilding the chain cache from the deployment block");
      if (state) chain.resetNonce(); // the relayer's nonce on a reset chain starts over
      state = await genesis(chainId);
      await cache.reset(state);
      status.syncedBlock = state.lastBlock;
    }
    const reached = await catchUp(state!, target);
    if (reached) {
      status.syncedBlock = reached.lastBlock;
      status.lagBlocks = Math.max(0, head - reached.lastBlock);
      if (status.stale && reached.lastBlock >= target) {
        logger.info({ syncedBlock: reached.lastBlock }, "chain cache rebuilt; serving keys again");
        status.stale = false;
        status.staleReason = null;
      }
      if (completer && !status.stale && reached.lastBlock >= target && head !== completerHead) {
        // Due by the chain's clock, the one completeReset checks, which moves only with a new block.
        // Not awaited: a poll never waits for a transaction.
        const block = await chain.getBlock(head);
        if (block) {
          completerHead = head;
          completing = completer.run(block.timestamp);
        }
      }
    } else {
      status.lagBlocks = Math.max(0, head - status.syncedBlock);
    }
  }

  function run(forceRebuild: string | null): Promise<void> {
    if (running && !forceRebuild) return running;
    const previous = running ?? Promise.resolve();
    const next = previous
      .catch(() => undefined)
      .then(() => poll(forceRebuild))
      .finally(() => {
        if (running === next) running = null;
      });
    running = next;
    return next;
  }

  function schedule() {
    if (stopped) return;
    timer = setTimeout(async () => {
      timer = null;
      try {
        await run(null);
      } catch (error) {
        const chatError = isChatError(error);
        logger.warn({ err: chatError ? { code: error.code, message: error.message } : String(error) }, "chain cache sync failed; retrying");
      }
      schedule();
    }, params.pollMs);
  }

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      run(null).catch((error) => logger.warn({ err: String(error?.message ?? error) }, "first chain cache sync failed; retrying"));
      schedule();
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
      await running?.catch(() => undefined);
    },
    status: () => ({ ...status }),
    resetsCompleted: () => completing,
    syncOnce: () => run(null),
    rebuild: (reason) => run(reason),
    async waitForBlock(blockNumber, timeoutMs) {
      const deadline = clock() + timeoutMs;
      while (status.syncedBlock < blockNumber || status.stale) {
        if (clock() > deadline) return false;
        await run(null).catch(() => undefined);
        if (status.syncedBlock < blockNumber || status.stale) await new Promise((r) => setTimeout(r, 25));
      }
      return true;
    },
  };
}

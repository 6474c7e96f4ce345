/**
 * Completes due resets: a requested reset becomes current only when someone sends completeReset after the
 * delay, and the relay that requested it is the one party sure to be around. Every relay instance may run
 * this; each re-reads pendingReset on chain just before sending, so an instance that lost the race (or a
 * reset cancelled meanwhile) sends nothing instead of a transaction that reverts and still costs gas.
 */
import type { Logger } from "pino";
import { isChatError } from "../../protocol/errors";
import type { CacheStore } from "../storage/cache-types";
import type { RegistryChain } from "./registry";

/** How many due resets one pass completes at most (the rest wait for the next pass). */
const COMPLETIONS_PER_PASS = 20;
/** After a failure, leave that user alone this long (a node error should not become a transaction storm). */
const RETRY_AFTER_MS = 30_000;

export interface ResetCompleter {
  /** One pass over the due resets; joins a running pass. Never throws. */
  run(chainTime: number): Promise<void>;
}

export function createResetCompleter(params: {
  chain: RegistryChain;
  cache: CacheStore;
  logger: Logger;
  clock?: () => number;
}): ResetCompleter {
  const { chain, cache, logger } = params;
  const clock = params.clock ?? Date.now;
  const failedUntil = new Map<string, number>();
  let running: Promise<void> | null = null;

  async function completeOne(username: string, publicKey: string, address: string, chainTime: number): Promise<void> {
    const onChain = await chain.pendingReset(username);
    // Already completed or cancelled (by another instance, the owner or anyone), or replaced by a new request.
    if (!onChain || onChain.address !== address || onChain.effectiveAt > chainTime) return;
    const result = await chain.completeReset({ username, publicKey });
    logger.warn({ username, blockNumber: result.blockNumber, tx: result.transactionHash }, "key reset completed after its delay");
  }

  async function pass(chainTime: number): Promise<void> {
    const due = await cache.duePendingResets(chainTime, COMPLETIONS_PER_PASS);
    const now = clock();
    for (const reset of due) {
      if ((failedUntil.get(reset.username) ?? 0) > now) continue;
      try {
        await completeOne(reset.username, reset.publicKey, reset.address, chainTime);
        failedUntil.delete(reset.username);
      } catch (error) {
        failedUntil.set(reset.username, now + RETRY_AFTER_MS);
        const err = isChatError(error) ? { code: error.code, message: error.message } : String(error);
        logger.warn({ username: reset.username, err }, "could not complete a due key reset; retrying later");
      }
    }
  }

  return {
    run(chainTime) {
      running ??= pass(chainTime)
        .catch((error) => logger.warn({ err: String((error as Error)?.message ?? error) }, "due key resets pass failed"))
        .finally(() => (running = null));
      return running;
    },
  };
}

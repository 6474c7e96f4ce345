/**
 * Limits in a shared store (Redis or MySQL) with this instance's bounded memory as the fallback while the
 * store cannot answer. During an outage each instance counts alone with the same settings, so the effective
 * limit becomes N times the configured one for N instances: still bounded, and what a relay without a shared
 * store has. Failing closed instead would let an outage of the store, or an attacker who causes one, lock
 * every user out of login and reset. A store error is logged once per outage, not per request.
 */
import type { Logger } from "pino";
import { isChatError } from "../../protocol/errors";
import type { AttemptLimiter, BackoffPolicy, LimitEntry, PasswordBackoff } from "./limits";
import { MemoryAttemptLimiter, MemoryPasswordBackoff } from "./memory";

export interface SharedLimits {
  limiter: AttemptLimiter;
  backoff: PasswordBackoff;
}

export function withLocalFallback(
  shared: SharedLimits,
  options: { storeName: string; windowMs: number; policy: BackoffPolicy; maxKeys?: number; clock?: () => number; logger?: Logger },
): SharedLimits {
  const { storeName, logger } = options;
  const local = {
    limiter: new MemoryAttemptLimiter({ windowMs: options.windowMs, maxKeys: options.maxKeys, clock: options.clock }),
    backoff: new MemoryPasswordBackoff({ policy: options.policy, maxKeys: options.maxKeys, clock: options.clock }),
  };

  let degraded = false;
  /** Runs `onShared`; if the store fails (a limit refusal is not a failure), runs `onLocal` instead. */
  async function attempt<T>(onShared: () => Promise<T>, onLocal: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await onShared();
    } catch (error) {
      if (isChatError(error)) throw error;
      if (!degraded) {
        degraded = true;
        logger?.warn({ err: { message: (error as Error).message }, store: storeName }, "rate limits: shared store unavailable, counting on this instance only");
      }
      return onLocal();
    }
    if (degraded) {
      degraded = false;
      logger?.info({ store: storeName }, "rate limits: shared store back, counting across instances again");
    }
    return result;
  }

  const close = async () => {
    await Promise.all([shared.limiter.close(), shared.backoff.close()]);
  };

  return {
    limiter: {
      hit: (entries: readonly LimitEntry[]) => attempt(() => shared.limiter.hit(entries), () => local.limiter.hit(entries)),
      close,
    },
    backoff: {
      checkAllowed: (username) => attempt(() => shared.backoff.checkAllowed(username), () => local.backoff.checkAllowed(username)),
      recordFailure: (username) => attempt(() => shared.backoff.recordFailure(username), () => local.backoff.recordFailure(username)),
      async recordSuccess(username) {
        // Both stores: a success must also clear failures counted locally during an outage.
        await local.backoff.recordSuccess(username);
        await attempt(() => shared.backoff.recordSuccess(username), async () => undefined);
      },
      close,
    },
  };
}

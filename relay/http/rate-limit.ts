/**
 * The routes' synchronous limiter: fixed-window attempt counters per key (a username or a client address)
 * in this process's memory, bounded in keys (see relay/limits/memory.ts). Counts attempts, not only
 * failures, so that guessing passwords costs the same whether guesses fail or not. Limits shared across
 * relay instances are the AttemptLimiter built by createAttemptLimits() in relay/limits/create.ts (async:
 * `await limiter.hit([...])`).
 */
import { rateLimitedError, type LimitEntry } from "../limits/limits";
import { BoundedFixedWindows } from "../limits/memory";

export class RateLimiter {
  private readonly windows: BoundedFixedWindows;

  constructor(windowMs: number, clock: () => number, maxKeys?: number) {
    this.windows = new BoundedFixedWindows({ windowMs, clock, maxKeys });
  }

  /** Counts one attempt for each key; throws RATE_LIMITED (with the wait) when any is over its limit. */
  hit(entries: LimitEntry[]): void {
    const retryAfterMs = this.windows.hit(entries);
    if (retryAfterMs > 0) throw rateLimitedError(retryAfterMs);
  }
}

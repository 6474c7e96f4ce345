/**
 * A synchronous, per-process limiter: fixed-window attempt counters per key in this process's memory,
 * bounded in keys (see relay/limits/memory.ts). The routes do not use it: their limits are shared by every
 * relay instance (createAttemptLimits() in relay/limits/create.ts, built by relay/stack.ts, awaited on
 * every hit). It remains only for callers that need a local, synchronous count.
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

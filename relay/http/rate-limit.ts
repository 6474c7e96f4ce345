/**
 * Fixed-window attempt counters per key (a username or a client address), in this process's memory.
 * Several relay instances each count on their own, so the effective limit behind a load balancer is
 * up to N times the configured one (documented in README). Counts attempts, not only failures, so
 * that guessing passwords costs the same whether guesses fail or not.
 */
import { ChatError } from "../../protocol/errors";

export class RateLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();
  private lastSweep = 0;

  constructor(
    private readonly windowMs: number,
    private readonly clock: () => number,
  ) {}

  /** Counts one attempt for each key; throws RATE_LIMITED (with the wait) when any is over its limit. */
  hit(entries: { key: string; limit: number }[]): void {
    const now = this.clock();
    this.sweep(now);
    let retryAfterMs = 0;
    for (const { key, limit } of entries) {
      let window = this.windows.get(key);
      if (!window || now - window.start >= this.windowMs) {
        window = { start: now, count: 0 };
        this.windows.set(key, window);
      }
      window.count += 1;
      if (window.count > limit) retryAfterMs = Math.max(retryAfterMs, window.start + this.windowMs - now);
    }
    if (retryAfterMs > 0) {
      const retryAfterSeconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
      throw new ChatError("RATE_LIMITED", `too many attempts; retry in ${retryAfterSeconds} s`, { retryAfterSeconds });
    }
  }

  private sweep(now: number) {
    if (now - this.lastSweep < this.windowMs) return;
    this.lastSweep = now;
    for (const [key, window] of this.windows) if (now - window.start >= this.windowMs) this.windows.delete(key);
  }
}

/**
 * What the relay's attempt limits promise, whichever store holds the counts: fixed-window counters per key
 * (a username or a client address) and a per-user backoff after failed password checks. The stores are
 * in this process's memory (one instance), in Redis (shared by every instance), or in MySQL (shared, when
 * there is no Redis).
 */
import { ChatError } from "../../protocol/errors";

export interface LimitEntry {
  /** what is counted, e.g. `login:user:alice` or `login:addr:10.0.0.1` */
  key: string;
  /** attempts allowed per window; the next one is refused until the window ends */
  limit: number;
}

export interface AttemptLimiter {
  /**
   * Counts one attempt for each key, refused ones included (so that guessing costs the same whether
   * guesses fail or not); throws RATE_LIMITED with `retryAfterSeconds` when any key is over its limit.
   */
  hit(entries: readonly LimitEntry[]): Promise<void>;
  close(): Promise<void>;
}

/**
 * After `freeFailures` failed password checks for one user, each further failure makes the next check
 * wait baseDelayMs * 2^(n-1) (the n-th failure beyond the free ones), capped at maxDelayMs. The failure
 * count is forgotten forgetAfterMs after the last failure, or at once on a success.
 */
export interface BackoffPolicy {
  freeFailures: number;
  baseDelayMs: number;
  maxDelayMs: number;
  forgetAfterMs: number;
}

export const DEFAULT_BACKOFF_POLICY: BackoffPolicy = {
  freeFailures: 5,
  baseDelayMs: 1_000,
  maxDelayMs: 15 * 60_000,
  forgetAfterMs: 24 * 60 * 60_000,
};

/**
 * For each password check (login, reset): `await limiter.hit(...)`, then `await backoff.checkAllowed(user)`,
 * then the check, then `recordFailure(user)` or `recordSuccess(user)`.
 */
export interface PasswordBackoff {
  /** Throws RATE_LIMITED (with the wait) while the user is inside a backoff delay. */
  checkAllowed(username: string): Promise<void>;
  /** Counts a failed password check; returns the failures so far and the delay it imposes (0 if none). */
  recordFailure(username: string): Promise<{ failures: number; delayMs: number }>;
  /** A right password forgets the user's failures. */
  recordSuccess(username: string): Promise<void>;
  close(): Promise<void>;
}

/** The delay imposed by the `failures`-th failure (0 while within the free ones). */
export function backoffDelayMs(policy: BackoffPolicy, failures: number): number {
  const beyond = failures - policy.freeFailures;
  if (beyond <= 0) return 0;
  // 2^(beyond-1) overflows to Infinity long before it matters; min() caps it.
  return Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(beyond - 1, 60));
}

export function rateLimitedError(retryAfterMs: number): ChatError {
  const retryAfterSeconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return new ChatError("RATE_LIMITED", `too many attempts; retry in ${retryAfterSeconds} s`, { retryAfterSeconds });
}

/** Keys and limits come from route code, never from a client directly; a bad one is a bug, caught here. */
export function assertValidEntries(entries: readonly LimitEntry[]): void {
  for (const { key, limit } of entries) {
    if (typeof key !== "string" || key.length === 0 || key.length > 512) throw new TypeError(`rate limit key must be 1..512 characters`);
    if (!Number.isInteger(limit) || limit < 1) throw new TypeError(`rate limit for ${key} must be a positive integer, got ${limit}`);
  }
}

export function assertValidPolicy(policy: BackoffPolicy): void {
  const { freeFailures, baseDelayMs, maxDelayMs, forgetAfterMs } = policy;
  if (!Number.isInteger(freeFailures) || freeFailures < 0) throw new TypeError("backoff freeFailures must be a whole number");
  if (!(baseDelayMs >= 1 && maxDelayMs >= baseDelayMs)) throw new TypeError("backoff delays must satisfy 1 <= baseDelayMs <= maxDelayMs");
  if (!(forgetAfterMs >= maxDelayMs)) throw new TypeError("backoff forgetAfterMs must be at least maxDelayMs");
}

/**
 * Attempt limits in this process's memory, for a single relay instance and as the fallback while Redis is
 * away. Memory is bounded: at most `maxKeys` entries per store; when full, the entry written longest ago
 * goes first (for windows that is the oldest window), so junk keys cannot grow the map. The bound must sit
 * well above the keys honest traffic creates in one window: an attacker who creates more than that within
 * one window (each attempt is also counted per client address) can make the limiter forget older counts.
 */
import {
  assertValidEntries,
  assertValidPolicy,
  backoffDelayMs,
  rateLimitedError,
  type AttemptLimiter,
  type BackoffPolicy,
  type LimitEntry,
  type PasswordBackoff,
} from "./limits";

export const DEFAULT_MAX_KEYS = 100_000;

/**
 * A Map with an expiry per entry and a queue of keys in write order. Every entry of one store lives equally
 * long from its last write, so the front of the queue is always the next to expire: expired entries are
 * dropped from the front, and a full map evicts from the front too, each in amortised O(1). (Iterating a
 * Map from its start is not O(1): V8 keeps deleted slots until a rehash, and skips them one by one.)
 */
class ExpiringOldestFirstMap<V extends { expiresAt: number }> {
  private readonly entries = new Map<string, { value: V; seq: number }>();
  /** keys in write order; an item whose seq no longer matches its entry's is stale and skipped */
  private order: { key: string; seq: number }[] = [];
  private head = 0;
  private nextSeq = 0;

  constructor(private readonly maxKeys: number) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: string, now: number): V | undefined {
    const entry = this.entries.get(key);
    if (entry && entry.value.expiresAt <= now) {
      this.entries.delete(key);
      return undefined;
    }
    return entry?.value;
  }

  /** Writes `value` as the newest entry. */
  set(key: string, value: V, now: number): void {
    this.dropExpired(now);
    if (!this.entries.has(key)) while (this.entries.size >= this.maxKeys) this.entries.delete(this.oldest()!.key);
    const seq = this.nextSeq++;
    this.entries.set(key, { value, seq });
    this.order.push({ key, seq });
    this.compact();
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  /** The live entry written longest ago, with stale queue items before it dropped. */
  private oldest(): { key: string; value: V } | undefined {
    while (this.head < this.order.length) {
      const { key, seq } = this.order[this.head];
      const entry = this.entries.get(key);
      if (entry && entry.seq === seq) return { key, value: entry.value };
      this.head += 1;
    }
    return undefined;
  }

  private dropExpired(now: number): void {
    for (let front = this.oldest(); front && front.value.expiresAt <= now; front = this.oldest()) {
      this.entries.delete(front.key);
      this.head += 1;
    }
  }

  /** Keeps the queue within about twice the live entries. */
  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.order.length) {
      this.order = this.order.slice(this.head);
      this.head = 0;
    }
    if (this.order.length > 2 * this.maxKeys + 1024) {
      this.order = this.order.slice(this.head).filter(({ key, seq }) => this.entries.get(key)?.seq === seq);
      this.head = 0;
    }
  }
}

function assertValidMaxKeys(maxKeys: number): void {
  // Room for the keys of one hit (a few) so that a hit never evicts its own windows.
  if (!Number.isInteger(maxKeys) || maxKeys < 16) throw new TypeError(`maxKeys must be a whole number >= 16, got ${maxKeys}`);
}

/** The synchronous core of the memory limiter: counts and returns the wait (0 when all keys are within limits). */
export class BoundedFixedWindows {
  private readonly windows: ExpiringOldestFirstMap<{ expiresAt: number; count: number }>;

  constructor(private readonly options: { windowMs: number; maxKeys?: number; clock: () => number }) {
    if (!(options.windowMs >= 1)) throw new TypeError(`windowMs must be >= 1, got ${options.windowMs}`);
    const maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
    assertValidMaxKeys(maxKeys);
    this.windows = new ExpiringOldestFirstMap(maxKeys);
  }

  /** How many windows are held now (for tests and metrics). */
  get size(): number {
    return this.windows.size;
  }

  /** Counts one attempt per key; returns the milliseconds until every over-limit key allows again, or 0. */
  hit(entries: readonly LimitEntry[]): number {
    assertValidEntries(entries);
    const now = this.options.clock();
    let retryAfterMs = 0;
    for (const { key, limit } of entries) {
      let window = this.windows.get(key, now);
      if (!window) {
        window = { expiresAt: now + this.options.windowMs, count: 0 };
        this.windows.set(key, window, now);
      }
      window.count += 1;
      if (window.count > limit) retryAfterMs = Math.max(retryAfterMs, window.expiresAt - now);
    }
    return retryAfterMs;
  }
}

export class MemoryAttemptLimiter implements AttemptLimiter {
  private readonly windows: BoundedFixedWindows;

  constructor(options: { windowMs: number; maxKeys?: number; clock?: () => number }) {
    this.windows = new BoundedFixedWindows({ ...options, clock: options.clock ?? Date.now });
  }

  get size(): number {
    return this.windows.size;
  }

  async hit(entries: readonly LimitEntry[]): Promise<void> {
    this.hitNow(entries);
  }

  /** The same as hit(), synchronously: the Redis limiter's fallback needs no extra tick. */
  hitNow(entries: readonly LimitEntry[]): void {
    const retryAfterMs = this.windows.hit(entries);
    if (retryAfterMs > 0) throw rateLimitedError(retryAfterMs);
  }

  async close(): Promise<void> {}
}

export class MemoryPasswordBackoff implements PasswordBackoff {
  private readonly users: ExpiringOldestFirstMap<{ expiresAt: number; failures: number; blockedUntil: number }>;
  private readonly clock: () => number;

  constructor(private readonly options: { policy: BackoffPolicy; maxKeys?: number; clock?: () => number }) {
    assertValidPolicy(options.policy);
    const maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
    assertValidMaxKeys(maxKeys);
    this.users = new ExpiringOldestFirstMap(maxKeys);
    this.clock = options.clock ?? Date.now;
  }

  get size(): number {
    return this.users.size;
  }

  async checkAllowed(username: string): Promise<void> {
    const now = this.clock();
    const entry = this.users.get(username, now);
    if (entry && entry.blockedUntil > now) throw rateLimitedError(entry.blockedUntil - now);
  }

  async recordFailure(username: string): Promise<{ failures: number; delayMs: number }> {
    const now = this.clock();
    const failures = (this.users.get(username, now)?.failures ?? 0) + 1;
    const delayMs = backoffDelayMs(this.options.policy, failures);
    this.users.set(username, { failures, blockedUntil: now + delayMs, expiresAt: now + this.options.policy.forgetAfterMs }, now);
    return { failures, delayMs };
  }

  async recordSuccess(username: string): Promise<void> {
    this.users.delete(username);
  }

  async close(): Promise<void> {}
}

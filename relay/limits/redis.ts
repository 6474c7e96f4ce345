/**
 * Attempt limits in Redis, shared by every relay instance on it: one round trip per hit (a Lua script runs
 * INCR and PTTL over all keys atomically), every key prefixed and expiring with its window or backoff, so
 * Redis holds no more than the keys of one window.
 *
 * While Redis cannot answer, each instance falls back to its own bounded memory limits with the same
 * settings: the effective limit becomes N times the configured one for N instances (still bounded, and
 * what a relay without Redis has), while logins and resets keep working. Failing closed instead would let
 * a Redis outage, or an attacker who causes one, lock every user out.
 */
import Redis from "ioredis";
import type { Logger } from "pino";
import { isChatError } from "../../protocol/errors";
import {
  assertValidEntries,
  assertValidPolicy,
  rateLimitedError,
  type AttemptLimiter,
  type BackoffPolicy,
  type LimitEntry,
  type PasswordBackoff,
} from "./limits";
import { MemoryAttemptLimiter, MemoryPasswordBackoff } from "./memory";

export const DEFAULT_REDIS_KEY_PREFIX = "eth-chat:limits:";

// KEYS: the counters. ARGV[1]: the window in ms; ARGV[1 + i]: the limit of KEYS[i].
// Returns the ms until every over-limit key allows again, 0 when all are within their limits.
const HIT_WINDOWS_LUA = `
local window = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, window)
    ttl = window
  end
  if count > tonumber(ARGV[i + 1]) and ttl > wait then wait = ttl end
end
return wait
`;

// KEYS[1]: the user's failure count; KEYS[2]: the user's backoff marker (exists while blocked).
// ARGV: freeFailures, baseDelayMs, maxDelayMs, forgetAfterMs. The same formula as backoffDelayMs().
const RECORD_FAILURE_LUA = `
local failures = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local beyond = failures - tonumber(ARGV[1])
local delay = 0
if beyond > 0 then
  delay = math.floor(math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ math.min(beyond - 1, 60)))
  if delay > 0 then redis.call('SET', KEYS[2], '1', 'PX', delay) end
end
return {failures, delay}
`;

interface LimitCommands {
  chatHitWindows(numKeys: number, ...keysAndArgs: (string | number)[]): Promise<number>;
  chatRecordFailure(...keysAndArgs: (string | number)[]): Promise<[number, number]>;
}

export interface RedisLimitsOptions {
  url: string;
  windowMs: number;
  policy: BackoffPolicy;
  /** bound of the memory fallback's stores */
  maxKeys?: number;
  keyPrefix?: string;
  /** a command slower than this counts as Redis being away */
  commandTimeoutMs?: number;
  clock?: () => number;
  logger?: Logger;
}

export interface RedisLimits {
  limiter: AttemptLimiter;
  backoff: PasswordBackoff;
  /** Resolves once Redis answers (startup checks and tests); rejects if it does not. */
  ping(): Promise<void>;
  /** Closes the one connection both share (also what limiter.close() and backoff.close() do). */
  close(): Promise<void>;
}

export function createRedisLimits(options: RedisLimitsOptions): RedisLimits {
  if (!(options.windowMs >= 1)) throw new TypeError(`windowMs must be >= 1, got ${options.windowMs}`);
  assertValidPolicy(options.policy);
  const prefix = options.keyPrefix ?? DEFAULT_REDIS_KEY_PREFIX;
  const { logger, policy } = options;
  // Commands fail at once while disconnected (no offline queue), so a hit never waits for a reconnect.
  const redis = new Redis(options.url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: options.commandTimeoutMs ?? 1_000,
    connectionName: "eth-chat-limits",
  });
  redis.defineCommand("chatHitWindows", { lua: HIT_WINDOWS_LUA });
  redis.defineCommand("chatRecordFailure", { numberOfKeys: 2, lua: RECORD_FAILURE_LUA });
  const commands = redis as unknown as LimitCommands;
  redis.on("error", () => undefined); // reported once per outage by fallback() below, not per reconnect attempt

  const memoryLimiter = new MemoryAttemptLimiter({ windowMs: options.windowMs, maxKeys: options.maxKeys, clock: options.clock });
  const memoryBackoff = new MemoryPasswordBackoff({ policy, maxKeys: options.maxKeys, clock: options.clock });

  let degraded = false;
  /** Runs `shared` on Redis; if Redis fails (not a limit refusal), runs `local` on this instance's memory. */
  async function withFallback<T>(shared: () => Promise<T>, local: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await shared();
    } catch (error) {
      if (isChatError(error)) throw error;
      if (!degraded) {
        degraded = true;
        logger?.warn({ err: { message: (error as Error).message } }, "rate limits: Redis unavailable, counting on this instance only");
      }
      return local();
    }
    if (degraded) {
      degraded = false;
      logger?.info("rate limits: Redis back, counting across instances again");
    }
    return result;
  }

  let closed: Promise<void> | null = null;
  const close = () => {
    closed ??= (async () => {
      redis.disconnect();
    })();
    return closed;
  };

  const limiter: AttemptLimiter = {
    async hit(entries: readonly LimitEntry[]) {
      assertValidEntries(entries);
      if (entries.length === 0) return;
      await withFallback(
        async () => {
          const wait = Number(
            await commands.chatHitWindows(
              entries.length,
              ...entries.map((e) => prefix + "w:" + e.key),
              options.windowMs,
              ...entries.map((e) => e.limit),
            ),
          );
          if (wait > 0) throw rateLimitedError(wait);
        },
        async () => memoryLimiter.hitNow(entries),
      );
    },
    close,
  };

  const backoff: PasswordBackoff = {
    async checkAllowed(username) {
      await withFallback(
        async () => {
          const wait = await redis.pttl(prefix + "b:" + username);
          if (wait > 0) throw rateLimitedError(wait);
        },
        () => memoryBackoff.checkAllowed(username),
      );
    },
    async recordFailure(username) {
      return withFallback(
        async () => {
          const [failures, delayMs] = await commands.chatRecordFailure(
            prefix + "f:" + username,
            prefix + "b:" + username,
            policy.freeFailures,
            policy.baseDelayMs,
            policy.maxDelayMs,
            policy.forgetAfterMs,
          );
          return { failures: Number(failures), delayMs: Number(delayMs) };
        },
        () => memoryBackoff.recordFailure(username),
      );
    },
    async recordSuccess(username) {
      // Both stores: a success must also clear failures counted locally during an outage.
      await memoryBackoff.recordSuccess(username);
      await withFallback(
        async () => {
          await redis.del(prefix + "f:" + username, prefix + "b:" + username);
        },
        async () => undefined,
      );
    },
    close,
  };

  return {
    limiter,
    backoff,
    async ping() {
      if (redis.status !== "ready") await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("Redis not ready")), options.commandTimeoutMs ?? 5_000);
        redis.once("ready", () => {
          clearTimeout(timer);
          resolve();
        });
      });
      await redis.ping();
    },
    close,
  };
}

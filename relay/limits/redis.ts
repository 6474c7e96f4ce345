/**
 * Attempt limits in Redis, shared by every relay instance on it: one round trip per hit (a Lua script runs
 * INCR and PTTL over all keys atomically), every key prefixed and expiring with its window or its backoff,
 * so Redis holds no more than the keys of one window. Errors propagate: see fallback.ts for what happens
 * while Redis is away.
 */
import Redis from "ioredis";
import {
  assertValidEntries,
  assertValidPolicy,
  rateLimitedError,
  type AttemptLimiter,
  type BackoffPolicy,
  type LimitEntry,
  type PasswordBackoff,
} from "./limits";

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
  if delay > redis.call('PTTL', KEYS[2]) then redis.call('SET', KEYS[2], '1', 'PX', delay) end
end
return {failures, delay}
`;

interface LimitCommands {
  /** numKeys first: the number of keys varies per call */
  chatHitWindows(numKeys: number, ...keysAndArgs: (string | number)[]): Promise<number>;
  /** two keys, declared with the command */
  chatRecordFailure(...keysAndArgs: (string | number)[]): Promise<[number, number]>;
}

export interface RedisLimits {
  limiter: AttemptLimiter;
  backoff: PasswordBackoff;
  /** Resolves once Redis answers (startup checks and tests); rejects after 5 s if it does not. */
  ping(): Promise<void>;
  /** Closes the one connection both share (as limiter.close() and backoff.close() do). */
  close(): Promise<void>;
}

export function createRedisLimits(options: {
  url: string;
  windowMs: number;
  policy: BackoffPolicy;
  keyPrefix?: string;
  /** a command slower than this fails (and counts as Redis being away) */
  commandTimeoutMs?: number;
}): RedisLimits {
  if (!(options.windowMs >= 1)) throw new TypeError(`windowMs must be >= 1, got ${options.windowMs}`);
  assertValidPolicy(options.policy);
  const { policy, windowMs } = options;
  const prefix = options.keyPrefix ?? DEFAULT_REDIS_KEY_PREFIX;
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
  redis.on("error", () => undefined); // failed commands report the outage (fallback.ts), not every reconnect attempt

  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    redis.disconnect();
  };

  const limiter: AttemptLimiter = {
    async hit(entries: readonly LimitEntry[]) {
      assertValidEntries(entries);
      if (entries.length === 0) return;
      const wait = Number(
        await commands.chatHitWindows(entries.length, ...entries.map((e) => prefix + "w:" + e.key), windowMs, ...entries.map((e) => e.limit)),
      );
      if (wait > 0) throw rateLimitedError(wait);
    },
    close,
  };

  const backoff: PasswordBackoff = {
    async checkAllowed(username) {
      const wait = await redis.pttl(prefix + "b:" + username);
      if (wait > 0) throw rateLimitedError(wait);
    },
    async recordFailure(username) {
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
    async recordSuccess(username) {
      await redis.del(prefix + "f:" + username, prefix + "b:" + username);
    },
    close,
  };

  return {
    limiter,
    backoff,
    async ping() {
      if (redis.status !== "ready") {
        await new Promise<void>((resolve, reject) => {
          const onReady = () => {
            clearTimeout(timer);
            resolve();
          };
          const timer = setTimeout(() => {
            redis.off("ready", onReady);
            reject(new Error("Redis not ready"));
          }, 5_000);
          redis.once("ready", onReady);
        });
      }
      await redis.ping();
    },
    close,
  };
}

/**
 * Builds the relay's attempt limits from its settings: in Redis when a Redis URL is configured (shared by
 * every instance), else in MySQL when there is a database (shared too), else in this process's memory.
 * Shared stores fall back to bounded memory while they cannot answer (fallback.ts).
 */
import type { Pool } from "mysql2/promise";
import type { Logger } from "pino";
import { withLocalFallback } from "./fallback";
import { DEFAULT_BACKOFF_POLICY, type AttemptLimiter, type BackoffPolicy, type PasswordBackoff } from "./limits";
import { DEFAULT_MAX_KEYS, MemoryAttemptLimiter, MemoryPasswordBackoff } from "./memory";
import { createMysqlLimits } from "./mysql";
import { createRedisLimits } from "./redis";

export interface AttemptLimits {
  limiter: AttemptLimiter;
  backoff: PasswordBackoff;
  store: "redis" | "mysql" | "memory";
  /** Creates what the store needs (the MySQL tables); call once at startup. */
  migrate(): Promise<void>;
  /** Resolves once the shared store answers; rejects if it does not (startup checks, tests). */
  ready(): Promise<void>;
  close(): Promise<void>;
}

export function createAttemptLimits(options: {
  redisUrl: string | null;
  pool: Pool | null;
  windowMs: number;
  /** bound of each in-memory store (the limiter itself, or the fallback of a shared one) */
  maxKeys?: number;
  policy?: BackoffPolicy;
  clock?: () => number;
  logger?: Logger;
  /** Redis key prefix (tests use one of their own) */
  keyPrefix?: string;
}): AttemptLimits {
  const policy = options.policy ?? DEFAULT_BACKOFF_POLICY;
  const { windowMs, clock, logger } = options;
  const maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
  const fallback = (storeName: string) => ({ storeName, windowMs, policy, maxKeys, clock, logger });

  if (options.redisUrl) {
    const redis = createRedisLimits({ url: options.redisUrl, windowMs, policy, keyPrefix: options.keyPrefix });
    return {
      ...withLocalFallback(redis, fallback("redis")),
      store: "redis",
      migrate: async () => undefined,
      ready: () => redis.ping(),
      close: () => redis.close(),
    };
  }
  if (options.pool) {
    const pool = options.pool;
    const mysql = createMysqlLimits({ pool, windowMs, policy, clock });
    return {
      ...withLocalFallback(mysql, fallback("mysql")),
      store: "mysql",
      migrate: () => mysql.migrate(),
      ready: async () => {
        await pool.query("SELECT 1");
      },
      close: async () => undefined, // the pool is the caller's
    };
  }
  return {
    limiter: new MemoryAttemptLimiter({ windowMs, maxKeys, clock }),
    backoff: new MemoryPasswordBackoff({ policy, maxKeys, clock }),
    store: "memory",
    migrate: async () => undefined,
    ready: async () => undefined,
    close: async () => undefined,
  };
}

/** What the HTTP routes share: built once by relay/server.ts from the parts relay/stack.ts assembles. */
import type { Request } from "express";
import type { Logger } from "pino";
import type { Counter, Registry } from "prom-client";
import { ChatError, isChatError } from "../../protocol/errors";
import type { RegistryChain } from "../chain/registry";
import type { Syncer } from "../chain/sync";
import type { RateLimitConfig } from "../config";
import type { CacheStore } from "../storage/cache-types";
import type { AttemptLimits } from "../limits/create";
import { bearerToken, type SessionClaims, type SessionGuard } from "../sessions";

export interface HttpContext {
  chain: RegistryChain;
  cache: CacheStore;
  syncer: Syncer;
  /** attempt limits and password backoff, shared by every relay instance (await every call) */
  limits: Pick<AttemptLimits, "limiter" | "backoff">;
  sessions: SessionGuard;
  logger: Logger;
  clock: () => number;
  metrics: Registry;
  failedLogins: Counter<"reason">;
  settings: {
    credentialPepper: Uint8Array;
    sessionSecret: Uint8Array;
    sessionTtlMs: number;
    challengeTtlMs: number;
    loginRateLimit: RateLimitConfig;
    registerRateLimit: RateLimitConfig;
    /** POSTed messages and commits per user per rate-limit window */
    appendsPerUser: number;
    deployBlock: number;
    syncBlockRange: number;
    syncConfirmations: number;
    syncPollMs: number;
    maxFrameBytes: number;
    mailboxTtlMs: number;
    /** how long a write waits for the cache to show it before answering anyway */
    writeSyncWaitMs: number;
  };
}

/** The client address for per-address limits (express resolves X-Forwarded-For only with TRUST_PROXY). */
export function clientAddress(req: Request): string {
  return req.ip ?? req.socket.remoteAddress ?? "unknown";
}

/** The session of the request's Authorization bearer token; throws 401 when there is none or it no longer stands. */
export async function requireSession(ctx: HttpContext, req: Request): Promise<SessionClaims> {
  const token = bearerToken(req.headers.authorization);
  if (token === undefined) throw new ChatError("UNAUTHORIZED", "an Authorization: Bearer session token is required");
  return fromStorage(ctx.sessions.authenticate(token));
}

/** Storage failures become STORAGE_UNAVAILABLE (503, retryable) instead of a 500. */
export async function fromStorage<T>(task: Promise<T>): Promise<T> {
  try {
    return await task;
  } catch (error) {
    if (isChatError(error)) throw error;
    throw new ChatError("STORAGE_UNAVAILABLE", "storage unavailable");
  }
}

/** Refuses to answer from a cache that may belong to another (reset) chain. */
export function assertCacheFresh(ctx: HttpContext): void {
  const status = ctx.syncer.status();
  if (status.stale) {
    throw new ChatError("CACHE_STALE", `the relay's chain cache is being rebuilt (${status.staleReason ?? "chain changed"}); retry shortly`);
  }
}

/** Whether the cache was confirmed against a reachable chain recently and is close to its head. */
export function cacheVerified(ctx: HttpContext): boolean {
  const status = ctx.syncer.status();
  const recent = status.lastContactAt !== null && ctx.clock() - status.lastContactAt <= Math.max(5_000, 4 * ctx.settings.syncPollMs);
  return status.chainOk && recent && !status.stale && status.lagBlocks <= ctx.settings.syncConfirmations + 1;
}

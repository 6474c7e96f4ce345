/**
 * Ended sessions, shared by every relay instance: token ids revoked by logout, kept until the token would
 * have expired anyway (then the MAC check refuses it by itself), revoked devices (every session bound to
 * one, kept as long as a token issued before the revocation can live), and a channel that tells every
 * instance to close the sockets of a revoked token or of a user whose key, password or devices changed.
 * Stores: Redis when REDIS_URL is set (keys expire by themselves, pub/sub reaches every instance), else
 * MySQL (a table purged by expiry; without Redis there is one instance, so the channel is local), else this
 * process's memory (bounded).
 */
import type { Pool } from "mysql2/promise";
import { createMysqlRevocations } from "./revocations-mysql";
import { createRedisRevocations } from "./revocations-redis";

export type SessionEvent =
  /** a token was revoked (logout): close its sockets */
  | { type: "revoked"; jti: string }
  /** the user's key or credential changed on chain, or one of its devices was revoked: re-check its sockets' tokens */
  | { type: "account"; usernameHash: string };

export interface SessionRevocations {
  readonly kind: "redis" | "mysql" | "memory";
  migrate(): Promise<void>;
  /** Revokes token id `jti` until `expiresAt` (Unix ms). */
  revoke(jti: string, expiresAt: number): Promise<void>;
  isRevoked(jti: string): Promise<boolean>;
  /** Revokes every session bound to (username, deviceId) until `until` (Unix ms). */
  revokeDevice(username: string, deviceId: string, until: number): Promise<void>;
  isDeviceRevoked(username: string, deviceId: string): Promise<boolean>;
  /** Delivers `event` to every instance's listeners, this one's included. */
  announce(event: SessionEvent): Promise<void>;
  onEvent(listener: (event: SessionEvent) => void): void;
  close(): Promise<void>;
}

export const DEFAULT_MAX_REVOCATIONS = 100_000;

/** One key per device; usernames ([a-z0-9_]) and device ids ([A-Za-z0-9_-]) never contain a colon. */
export const deviceRevocationKey = (username: string, deviceId: string) => `${username}:${deviceId}`;

export function parseSessionEvent(text: string): SessionEvent | null {
  try {
    const value = JSON.parse(text);
    if (value?.type === "revoked" && typeof value.jti === "string") return { type: "revoked", jti: value.jti };
    if (value?.type === "account" && typeof value.usernameHash === "string") return { type: "account", usernameHash: value.usernameHash };
  } catch {}
  return null;
}

/** Listeners called in turn; one that throws does not stop the others. */
export function listenerSet(): { add(listener: (event: SessionEvent) => void): void; emit(event: SessionEvent): void } {
  const listeners: ((event: SessionEvent) => void)[] = [];
  return {
    add: (listener) => void listeners.push(listener),
    emit: (event) => {
      for (const listener of listeners) {
        try {
          listener(event);
        } catch {}
      }
    },
  };
}

/**
 * In memory for a lone instance, bounded: when full, the revocation that expires soonest is forgotten first
 * (its token is the closest to being refused by its own expiry).
 */
export function createMemoryRevocations(options: { clock?: () => number; maxEntries?: number } = {}): SessionRevocations {
  const clock = options.clock ?? Date.now;
  const maxEntries = options.maxEntries ?? DEFAULT_MAX_REVOCATIONS;
  const revoked = new Map<string, number>();
  // Device revocations are kept apart: they are few (a user action each) and must not be evicted by a flood of logouts.
  const revokedDevices = new Map<string, number>();
  const listeners = listenerSet();
  const purge = (entries: Map<string, number>) => {
    const now = clock();
    for (const [key, expiresAt] of entries) if (expiresAt <= now) entries.delete(key);
    while (entries.size >= maxEntries) {
      let soonest: string | null = null;
      let soonestAt = Infinity;
      for (const [key, expiresAt] of entries) if (expiresAt < soonestAt) [soonest, soonestAt] = [key, expiresAt];
      entries.delete(soonest!);
    }
  };
  const add = (entries: Map<string, number>, key: string, expiresAt: number) => {
    if (expiresAt <= clock()) return;
    if (!entries.has(key) && entries.size >= maxEntries) purge(entries);
    entries.set(key, Math.max(expiresAt, entries.get(key) ?? 0));
  };
  const has = (entries: Map<string, number>, key: string) => {
    const expiresAt = entries.get(key);
    return expiresAt !== undefined && expiresAt > clock();
  };
  return {
    kind: "memory",
    migrate: async () => undefined,
    async revoke(jti, expiresAt) {
      add(revoked, jti, expiresAt);
    },
    async isRevoked(jti) {
      return has(revoked, jti);
    },
    async revokeDevice(username, deviceId, until) {
      add(revokedDevices, deviceRevocationKey(username, deviceId), until);
    },
    async isDeviceRevoked(username, deviceId) {
      return has(revokedDevices, deviceRevocationKey(username, deviceId));
    },
    announce: async (event) => listeners.emit(event),
    onEvent: listeners.add,
    close: async () => undefined,
  };
}

export function createSessionRevocations(options: { redisUrl: string | null; pool: Pool | null; maxEntries?: number; clock?: () => number }): SessionRevocations {
  if (options.redisUrl) return createRedisRevocations({ url: options.redisUrl });
  if (options.pool) return createMysqlRevocations({ pool: options.pool, clock: options.clock });
  return createMemoryRevocations({ maxEntries: options.maxEntries, clock: options.clock });
}

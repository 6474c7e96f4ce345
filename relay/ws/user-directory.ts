/**
 * Whether a username is registered, for refusing sends to and key lookups of names nobody holds: the
 * users cache first, then the chain (a user newer than the last sync). Registrations are never undone, so
 * a name found stays found (bounded in memory); a name not found is remembered as missing for a short time
 * only, so that junk names cost one chain call each per TTL while a new user is known soon after registering.
 */
import type { RegistryChain } from "../chain/registry";
import type { CacheStore } from "../storage/cache-types";

export interface UserDirectorySettings {
  /** how long a name the chain did not know is answered "missing" without asking again */
  missingTtlMs: number;
  /** names remembered (each of found and missing); the oldest are forgotten first */
  maxEntries: number;
}

export const DEFAULT_USER_DIRECTORY: UserDirectorySettings = { missingTtlMs: 30_000, maxEntries: 10_000 };

export interface UserDirectory {
  /** True when registered; throws when neither the cache nor the chain can answer. */
  exists(username: string): Promise<boolean>;
  /** Whether the name was looked up recently and found missing (no I/O). */
  knownMissing(username: string): boolean;
  /** Records that the chain did not know the name (a caller that asked the chain itself). */
  rememberMissing(username: string): void;
}

/** A Map kept in insertion order, forgetting its oldest entry beyond `max`. */
class BoundedMap<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly max: number) {}
  get(key: string): V | undefined {
    return this.map.get(key);
  }
  set(key: string, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as string);
  }
  delete(key: string): void {
    this.map.delete(key);
  }
  get size(): number {
    return this.map.size;
  }
}

export function createUserDirectory(params: {
  cache: Pick<CacheStore, "getUser">;
  chain: Pick<RegistryChain, "keyCount">;
  clock: () => number;
  settings?: Partial<UserDirectorySettings>;
}): UserDirectory & { size(): number } {
  const settings = { ...DEFAULT_USER_DIRECTORY, ...params.settings };
  const { clock } = params;
  const found = new BoundedMap<true>(settings.maxEntries);
  /** name → when the "missing" answer expires */
  const missing = new BoundedMap<number>(settings.maxEntries);
  /** one chain call per name at a time, however many ask */
  const asking = new Map<string, Promise<boolean>>();

  const knownMissing = (username: string) => {
    const until = missing.get(username);
    if (until === undefined) return false;
    if (until > clock()) return true;
    missing.delete(username);
    return false;
  };
  const rememberMissing = (username: string) => missing.set(username, clock() + settings.missingTtlMs);

  return {
    knownMissing,
    rememberMissing,
    size: () => found.size + missing.size,
    async exists(username) {
      if (found.get(username)) return true;
      if (knownMissing(username)) return false;
      let pending = asking.get(username);
      if (!pending) {
        pending = (async () => {
          if ((await params.cache.getUser(username)) !== null || (await params.chain.keyCount(username)) > 0) {
            found.set(username, true);
            return true;
          }
          rememberMissing(username);
          return false;
        })().finally(() => asking.delete(username));
        asking.set(username, pending);
      }
      return pending;
    },
  };
}

/** The in-memory cache, for MYSQL_URL unset and for tests: nothing survives a restart. */
import { applyEvent, sameSyncState, type CacheWriter } from "./cache-apply";
import type { CacheStore, CachedKey, CachedPendingReset, CachedUser, SyncState } from "./cache-types";

export function createMemoryCache(): CacheStore {
  let users = new Map<string, CachedUser>();
  let keys = new Map<string, CachedKey[]>();
  let pending = new Map<string, CachedPendingReset>();
  let sync: SyncState | null = null;
  const challenges = new Map<string, { username: string; expiresAt: number }>();

  return {
    kind: "memory",
    migrate: async () => undefined,
    ping: async () => undefined,
    getSyncState: async () => (sync ? { ...sync } : null),
    applyEvents: async ({ expected, events, next }) => {
      if (!sameSyncState(sync, expected)) return false;
      // Work on copies and swap at the end: all or nothing, as the MySQL transaction.
      const nextUsers = new Map([...users].map(([k, v]) => [k, { ...v }]));
      const nextKeys = new Map([...keys].map(([k, v]) => [k, [...v]]));
      const nextPending = new Map(pending);
      const writer: CacheWriter = {
        userByHash: async (hash) => [...nextUsers.values()].find((u) => u.usernameHash === hash) ?? null,
        insertUser: async (user) => {
          nextUsers.set(user.username, { ...user });
        },
        updateUser: async (username, changes) => {
          const user = nextUsers.get(username);
          if (user) Object.assign(user, changes);
        },
        insertKey: async (key) => {
          const list = nextKeys.get(key.username) ?? [];
          if (!list.some((k) => k.index === key.index)) list.push({ ...key });
          list.sort((a, b) => a.index - b.index);
          nextKeys.set(key.username, list);
        },
        putPendingReset: async (reset) => {
          nextPending.set(reset.username, { ...reset });
        },
        deletePendingReset: async (username) => {
          nextPending.delete(username);
        },
      };
      for (const event of events) await applyEvent(writer, event);
      users = nextUsers;
      keys = nextKeys;
      pending = nextPending;
      sync = { ...next };
      return true;
    },
    reset: async (start) => {
      users = new Map();
      keys = new Map();
      pending = new Map();
      sync = { ...start };
    },
    truncate: async () => {
      users = new Map();
      keys = new Map();
      pending = new Map();
      sync = null;
      challenges.clear();
    },
    getUser: async (username) => {
      const user = users.get(username);
      return user ? { ...user } : null;
    },
    getKeys: async (username) => (keys.get(username) ?? []).map((k) => ({ ...k })),
    getPendingReset: async (username) => {
      const reset = pending.get(username);
      return reset ? { ...reset } : null;
    },
    duePendingResets: async (chainTime, limit) =>
      [...pending.values()]
        .filter((r) => r.effectiveAt <= chainTime)
        .sort((a, b) => a.effectiveAt - b.effectiveAt)
        .slice(0, limit)
        .map((r) => ({ ...r })),
    countUsers: async () => users.size,
    putChallenge: async ({ username, challenge, expiresAt }) => {
      const now = Date.now();
      for (const [key, value] of challenges) if (value.expiresAt <= now) challenges.delete(key);
      challenges.set(challenge, { username, expiresAt });
    },
    consumeChallenge: async ({ username, challenge, now }) => {
      const entry = challenges.get(challenge);
      challenges.delete(challenge);
      return !!entry && entry.username === username && entry.expiresAt > now;
    },
    close: async () => undefined,
  };
}

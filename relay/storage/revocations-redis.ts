/**
 * Revoked session ids in Redis (`SET key 1 PX ttl`: each expires with its token, so Redis holds no more
 * than the live revocations) and the session-event channel over Redis pub/sub, which reaches every
 * instance. A subscriber needs its own connection (RESP2: a subscribed connection runs no other command).
 */
import Redis from "ioredis";
import { deviceRevocationKey, listenerSet, parseSessionEvent, type SessionRevocations } from "./revocations";

const PREFIX = "eth-chat:revoked:";
const DEVICE_PREFIX = "eth-chat:revoked-device:";
const CHANNEL = "eth-chat:session-events";
/** How long migrate() waits for the command connection before the relay starts without it (checks then fail fast). */
const READY_WAIT_MS = 5_000;

export function createRedisRevocations(options: { url: string; clock?: () => number }): SessionRevocations {
  const clock = options.clock ?? Date.now;
  // Failing fast: a check that cannot reach Redis refuses the session rather than waiting.
  const redis = new Redis(options.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: false });
  const subscriber = new Redis(options.url, { maxRetriesPerRequest: null });
  redis.on("error", () => undefined);
  subscriber.on("error", () => undefined);
  const listeners = listenerSet();
  const subscribed = subscriber.subscribe(CHANNEL).catch(() => undefined);
  subscriber.on("message", (channel: string, text: string) => {
    if (channel !== CHANNEL) return;
    const event = parseSessionEvent(text);
    if (event) listeners.emit(event);
  });

  /** Resolves once the command connection is ready, or after `ms`: without an offline queue a command sent before would fail. */
  const commandsReady = (ms: number) =>
    new Promise<void>((resolve) => {
      if (redis.status === "ready") return resolve();
      const done = () => {
        clearTimeout(timer);
        redis.off("ready", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      redis.once("ready", done);
    });

  return {
    kind: "redis",
    migrate: async () => {
      await subscribed;
      // The subscriber's connection being up says nothing of the command connection's: the first session
      // check right after start would otherwise be refused as if Redis were away.
      await commandsReady(READY_WAIT_MS);
    },
    async revoke(jti, expiresAt) {
      const ttl = expiresAt - clock();
      if (ttl > 0) await redis.set(PREFIX + jti, "1", "PX", ttl);
    },
    async isRevoked(jti) {
      return (await redis.exists(PREFIX + jti)) === 1;
    },
    async revokeDevice(username, deviceId, until) {
      const ttl = until - clock();
      if (ttl > 0) await redis.set(DEVICE_PREFIX + deviceRevocationKey(username, deviceId), "1", "PX", ttl);
    },
    async isDeviceRevoked(username, deviceId) {
      return (await redis.exists(DEVICE_PREFIX + deviceRevocationKey(username, deviceId))) === 1;
    },
    async announce(event) {
      await redis.publish(CHANNEL, JSON.stringify(event));
    },
    onEvent: listeners.add,
    async close() {
      redis.disconnect();
      subscriber.disconnect();
    },
  };
}

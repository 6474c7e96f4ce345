import { randomBytes } from "node:crypto";
import Redis from "ioredis";
import type pino from "pino";
import type { MessageBus, RoutedMessage } from "./bus";

const CHANNEL_PREFIX = "eth-chat:user:";

/**
 * Redis pub/sub between relay instances: one channel per online user, subscribed by each instance that
 * holds a connection of that user. Redis pub/sub is fire-and-forget; that is enough here because every
 * message is in the shared mailbox before it is published (see bus.ts).
 */
export function createRedisBus(url: string, options: { logger?: pino.Logger } = {}): MessageBus {
  // Messages this instance published come back only to other instances: they are delivered locally already.
  const instanceId = randomBytes(8).toString("hex");
  // The publisher fails fast while Redis is away (the mailbox holds the message); the subscriber
  // re-subscribes by itself after a reconnect.
  const publisher = new Redis(url, { enableOfflineQueue: false, lazyConnect: false, maxRetriesPerRequest: 1 });
  const subscriber = new Redis(url, { autoResubscribe: true, maxRetriesPerRequest: null, connectionName: `eth-chat-bus-${instanceId}` });
  const onError = (which: string) => (error: Error) =>
    options.logger?.warn({ err: { message: error.message }, which }, "redis bus connection error");
  publisher.on("error", onError("publisher"));
  subscriber.on("error", onError("subscriber"));

  const reconnectListeners: Array<() => void> = [];
  let wasReady = false;
  subscriber.on("ready", () => {
    if (!wasReady) {
      wasReady = true;
      return;
    }
    // PING answers after the re-SUBSCRIBEs sent on reconnect: the subscriptions are active from here on.
    subscriber.ping().then(
      () => reconnectListeners.forEach((listener) => listener()),
      () => undefined,
    );
  });

  type Entry = { handlers: Set<(m: RoutedMessage) => void>; ready: Promise<unknown> };
  const channels = new Map<string, Entry>();

  subscriber.on("message", (channel: string, raw: string) => {
    const entry = channels.get(channel);
    if (!entry) return;
    let parsed: { o: string; m: RoutedMessage };
    try {
      parsed = JSON.parse(raw);
    } catch {
      return;
    }
    if (parsed.o === instanceId || typeof parsed.m !== "object" || parsed.m === null) return;
    for (const handler of entry.handlers) handler(parsed.m);
  });

  return {
    async publish(message) {
      await publisher.publish(CHANNEL_PREFIX + message.to, JSON.stringify({ o: instanceId, m: message }));
    },
    async subscribe(username, handler) {
      const channel = CHANNEL_PREFIX + username;
      let entry = channels.get(channel);
      if (!entry) {
        // Commands on one connection run in order, so a SUBSCRIBE issued after a pending UNSUBSCRIBE of
        // the same channel wins.
        entry = { handlers: new Set(), ready: subscriber.subscribe(channel) };
        channels.set(channel, entry);
      }
      entry.handlers.add(handler);
      const mine = entry;
      await mine.ready;
      return async () => {
        mine.handlers.delete(handler);
        if (mine.handlers.size === 0 && channels.get(channel) === mine) {
          channels.delete(channel);
          await subscriber.unsubscribe(channel).catch(() => undefined);
        }
      };
    },
    onReconnected(listener) {
      reconnectListeners.push(listener);
    },
    async ping() {
      // The publisher has no offline queue: wait (briefly) for its first connection instead.
      if (publisher.status === "connecting" || publisher.status === "wait" || publisher.status === "reconnecting") {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => {
            publisher.off("ready", onReady);
            reject(new Error("redis not ready"));
          }, 2_000);
          const onReady = () => {
            clearTimeout(timer);
            resolve();
          };
          publisher.once("ready", onReady);
        });
      }
      await publisher.ping();
    },
    async close() {
      channels.clear();
      await Promise.allSettled([publisher.quit(), subscriber.quit()]);
      publisher.disconnect();
      subscriber.disconnect();
    },
  };
}

import { randomBytes } from "node:crypto";
import Redis from "ioredis";
import type pino from "pino";
import { GroupNotice } from "../../protocol/wire";
import type { BusHandlers, MessageBus, RoutedMessage } from "./bus";

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

  type Entry = { handlers: Set<BusHandlers>; ready: Promise<unknown> };
  const channels = new Map<string, Entry>();

  subscriber.on("message", (channel: string, raw: string) => {
    const entry = channels.get(channel);
    if (!entry) return;
    // { o: instance, m: message } or { o: instance, n: notice }
    let parsed: { o?: unknown; m?: unknown; n?: unknown };
    try {
      parsed = JSON.parse(raw);
    } catch {
      return;
    }
    if (typeof parsed !== "object" || parsed === null || parsed.o === instanceId) return;
    if (parsed.n !== undefined) {
      // Notices reach clients as they are: only well-formed ones are passed on.
      const notice = GroupNotice.safeParse(parsed.n);
      if (!notice.success) return;
      for (const handlers of entry.handlers) handlers.notice(notice.data);
      return;
    }
    if (typeof parsed.m !== "object" || parsed.m === null) return;
    const message = parsed.m as RoutedMessage;
    for (const handlers of entry.handlers) handlers.message(message);
  });

  return {
    async publish(message) {
      await publisher.publish(CHANNEL_PREFIX + message.to, JSON.stringify({ o: instanceId, m: message }));
    },
    async publishNotice(usernames, notice) {
      if (usernames.length === 0) return;
      const payload = JSON.stringify({ o: instanceId, n: notice });
      // One round trip for every member of the group.
      const pipeline = publisher.pipeline();
      for (const username of usernames) pipeline.publish(CHANNEL_PREFIX + username, payload);
      const results = await pipeline.exec();
      const failed = results?.find(([error]) => error);
      if (failed) throw failed[0];
    },
    async subscribe(username, handlers) {
      const channel = CHANNEL_PREFIX + username;
      let entry = channels.get(channel);
      if (!entry) {
        // Commands on one connection run in order, so a SUBSCRIBE issued after a pending UNSUBSCRIBE of
        // the same channel wins.
        entry = { handlers: new Set(), ready: subscriber.subscribe(channel) };
        channels.set(channel, entry);
      }
      entry.handlers.add(handlers);
      const mine = entry;
      await mine.ready;
      return async () => {
        mine.handlers.delete(handlers);
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

/**
 * Routes accepted messages to their recipients' connections: those on this instance directly, those on
 * other instances through the bus. Each connection is subscribed on the bus for its user while it is open.
 * The Delivery Service's notices (a group's log grew, a welcome was stored) go the same way, to every user
 * it names.
 */
import type { GroupNotice } from "../../protocol/wire";
import type { MessageBus, RoutedMessage } from "../bus/bus";
import type { FailureLog } from "./failure-log";

export interface RoutedConnection {
  readonly username: string;
  /** Pushes a live message; `text` is its frame, serialised once for every connection of the recipient. */
  push(message: RoutedMessage, text: string): void;
  /** Pushes a Delivery Service notice (coalesced per group while the socket is backed up). */
  notice(notice: GroupNotice): void;
  /** Writes an early frame (`text`) if the client asked for them; never queued. */
  early(text: string): void;
  /** Re-reads the mailbox after a bus outage, for what other instances stored meanwhile. */
  catchUp(): Promise<void>;
}

export interface Router<C extends RoutedConnection> {
  /**
   * Registers an open connection. Resolves once its bus subscription is active, or has failed, or after
   * the subscribe timeout: a bus that is down must not hold the backlog, the mailbox alone is correct.
   */
  add(conn: C): Promise<void>;
  remove(conn: C): void;
  /** Hands a newly stored message to its recipient's connections here and on other instances. */
  deliver(message: RoutedMessage): void;
  /** Hands a Delivery Service notice to every connection of `usernames` but `origin` (the one whose append it announces), here and on other instances. */
  notify(usernames: Iterable<string>, notice: GroupNotice, origin?: object): void;
  /** Hands an early frame to this instance's connections of `usernames` but `origin` (never to other instances). */
  notifyEarly(usernames: Iterable<string>, text: string, origin?: object): void;
  size(): number;
  connections(): Iterable<C>;
  /** This instance's open connections of `username`. */
  connectionsOf(username: string): Iterable<C>;
}

/** The `message` frame of a routed message, as sent to the recipient. */
export function messageFrameText(m: RoutedMessage): string {
  return JSON.stringify({ type: "message", id: m.id, from: m.from, envelope: m.envelope, receivedAt: m.receivedAt });
}

export function createRouter<C extends RoutedConnection>(params: {
  bus?: MessageBus;
  busSubscribeTimeoutMs: number;
  logFailure: FailureLog;
  isClosing: () => boolean;
}): Router<C> {
  const { bus, logFailure } = params;
  const all = new Set<C>();
  const byUser = new Map<string, Set<C>>();
  const unsubscribes = new Map<C, () => Promise<void>>();

  bus?.onReconnected?.(() => {
    if (params.isClosing()) return;
    for (const conn of all) conn.catchUp().catch((error) => logFailure("mailbox catch-up after a bus outage failed", error));
  });

  const wait = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

  return {
    add(conn) {
      all.add(conn);
      let mine = byUser.get(conn.username);
      if (!mine) byUser.set(conn.username, (mine = new Set()));
      mine.add(conn);
      if (!bus) return Promise.resolve();
      const subscribed = bus.subscribe(conn.username, {
        message: (m) => conn.push(m, messageFrameText(m)),
        notice: (n) => conn.notice(n),
      });
      subscribed.then(
        (unsubscribe) => {
          if (all.has(conn)) unsubscribes.set(conn, unsubscribe);
          else unsubscribe().catch(() => undefined);
        },
        (error) => logFailure("bus subscribe failed; live messages from other relays wait in the mailbox", error),
      );
      return Promise.race([subscribed.then(() => undefined, () => undefined), wait(params.busSubscribeTimeoutMs)]);
    },
    remove(conn) {
      all.delete(conn);
      const mine = byUser.get(conn.username);
      mine?.delete(conn);
      if (mine?.size === 0) byUser.delete(conn.username);
      unsubscribes.get(conn)?.().catch(() => undefined);
      unsubscribes.delete(conn);
    },
    deliver(m) {
      const conns = byUser.get(m.to);
      if (conns) {
        const text = messageFrameText(m);
        for (const conn of conns) conn.push(m, text);
      }
      bus?.publish(m).catch((error) => logFailure("bus publish failed; the recipient gets the message from the mailbox", error));
    },
    notify(usernames, notice, origin) {
      const distinct = usernames instanceof Set ? (usernames as ReadonlySet<string>) : new Set(usernames);
      for (const username of distinct) {
        const conns = byUser.get(username);
        if (conns) for (const conn of conns) if (conn !== origin) conn.notice(notice);
      }
      bus?.publishNotice([...distinct], notice).catch((error) => logFailure("bus publish of a group notice failed; members read the log when they next sync", error));
    },
    notifyEarly(usernames, text, origin) {
      for (const username of usernames) for (const conn of byUser.get(username) ?? []) if (conn !== origin) conn.early(text);
    },
    size: () => all.size,
    connections: () => all,
    connectionsOf: (username) => [...(byUser.get(username) ?? [])],
  };
}

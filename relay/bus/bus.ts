import type { GroupNotice } from "../../protocol/wire";

/**
 * Routing between relay instances. Every accepted message is already in the shared mailbox before it is
 * published, so the bus is only the fast path: a message the bus loses is still delivered from the mailbox
 * on the recipient's next connection.
 */
export interface RoutedMessage {
  to: string;
  from: string;
  id: string;
  envelope: string;
  receivedAt: number;
  /**
   * Set on a delivery receipt, routed like a message to the original sender: then `to` is the sender of
   * message `id`, `from` the recipient whose device acknowledged it, and `envelope` is empty.
   */
  receipt?: "delivered";
}

/** What a subscription receives for its user: mailbox messages (and receipts), and Delivery Service hints. */
export interface BusHandlers {
  message(message: RoutedMessage): void;
  /** A group's log grew or a welcome was stored; the hint carries no MLS bytes, so losing one loses no data. */
  notice(notice: GroupNotice): void;
}

export interface MessageBus {
  /** Hands `message` to the other relay instances that have `message.to` subscribed (never back to this one). */
  publish(message: RoutedMessage): Promise<void>;
  /** Hands `notice` to the other relay instances that have any of `usernames` subscribed (never back to this one). */
  publishNotice(usernames: readonly string[], notice: GroupNotice): Promise<void>;
  /**
   * Calls `handlers` for each message or notice published for `username` by other instances, until the
   * returned function is called. Resolves once the subscription is active. Subscriptions are counted per
   * username: several subscribers (one per local connection) may watch the same user.
   */
  subscribe(username: string, handlers: BusHandlers): Promise<() => Promise<void>>;
  /**
   * Calls `listener` each time the bus is back after an outage, once its subscriptions are active again:
   * messages published meanwhile were not routed, so the relay re-reads the mailbox of its connections.
   */
  onReconnected?(listener: () => void): void;
  ping(): Promise<void>;
  close(): Promise<void>;
}

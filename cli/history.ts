/**
 * Local conversation history, one JSON-lines file per peer (0600), and the outbox of messages the relay
 * has not yet accepted. The history of incoming ids doubles as the dedup store of protocol/envelope.
 */
import { randomUUID } from "node:crypto";
import type { DedupStore } from "../protocol/envelope";
import type { Home } from "./home";

export interface HistoryEntry {
  id: string;
  direction: "in" | "out";
  peer: string;
  body: string;
  /** sender's clock, Unix ms */
  timestamp: number;
  /** relay's clock (incoming) or acceptance time (outgoing), Unix ms */
  at: number;
  status?: "stored" | "delivered";
}

export function historyPath(home: Home, me: string, peer: string): string {
  return `${home.userDir(me, "history")}/${peer}.jsonl`;
}

export function readHistory(home: Home, me: string, peer: string): HistoryEntry[] {
  return home.readLines<HistoryEntry>(historyPath(home, me, peer));
}

export function appendHistory(home: Home, me: string, entry: HistoryEntry): void {
  home.appendLine(historyPath(home, me, entry.peer), entry);
}

/** Seen incoming ids per sender, backed by the history files (written before the relay is acked). */
export function historyDedupStore(home: Home, me: string): DedupStore {
  const loaded = new Map<string, Set<string>>();
  const idsOf = (sender: string) => {
    let ids = loaded.get(sender);
    if (!ids) {
      ids = new Set(readHistory(home, me, sender).filter((e) => e.direction === "in").map((e) => e.id));
      loaded.set(sender, ids);
    }
    return ids;
  };
  const split = (key: string) => {
    const slash = key.indexOf("/");
    return { sender: key.slice(0, slash), id: key.slice(slash + 1) };
  };
  return {
    has: (key) => {
      const { sender, id } = split(key);
      return idsOf(sender).has(id);
    },
    add: (key) => {
      const { sender, id } = split(key);
      idsOf(sender).add(id);
    },
  };
}

export interface OutboxEntry {
  id: string;
  to: string;
  envelope: string;
  /** kept to write the history once accepted; the outbox is as private as the history (0600) */
  body: string;
  timestamp: number;
  /** the recipient's key index the message is sealed to */
  recipientKeyIndex?: number;
}

function outboxPath(home: Home, me: string): string {
  return `${home.userDir(me)}/outbox.json`;
}

export function readOutbox(home: Home, me: string): OutboxEntry[] {
  return home.readJson<OutboxEntry[]>(outboxPath(home, me)) ?? [];
}

export function addToOutbox(home: Home, me: string, entry: OutboxEntry): void {
  home.writeJson(outboxPath(home, me), [...readOutbox(home, me).filter((e) => e.id !== entry.id), entry]);
}

export function removeFromOutbox(home: Home, me: string, id: string): void {
  home.writeJson(outboxPath(home, me), readOutbox(home, me).filter((e) => e.id !== id));
}

/** A message id: a UUID (RFC 9562 v4) without dashes fits the wire's MessageId. */
export function newMessageId(): string {
  return randomUUID();
}

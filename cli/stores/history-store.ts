/**
 * The conversation with each peer, and of each group, per local user, append-only. On disk: one JSON-lines
 * file per conversation, users/<me>/history/<peer>.jsonl and users/<me>/history/group-<id>.jsonl (0600).
 * The incoming ids double as the dedup store of protocol/envelope and of MLS application messages.
 */
import type { DedupStore } from "../../protocol/envelope";
import { existsSync, readdirSync } from "node:fs";
import { assertUsername, isValidUsername } from "../../protocol/username";
import type { Home } from "../home";

/** A group's conversation key: "#" and the group id (no username has a "#"). */
export const groupConversation = (groupIdHex: string) => `#${groupIdHex}`;
const GROUP_KEY = /^#([0-9a-f]{64})$/;

export interface HistoryEntry {
  id: string;
  direction: "in" | "out";
  /** the peer's username, or a group's conversation key (groupConversation) */
  peer: string;
  /** in a group: who sent an incoming message */
  from?: string;
  /** 2 for messages on MLS (absent: envelope v1) */
  v?: 2;
  /** messages on MLS: the group and the log position, to tell when every member has read it */
  group?: string;
  seq?: number;
  body: string;
  /** sender's clock, Unix ms */
  timestamp: number;
  /** relay's clock (incoming) or acceptance time (outgoing), Unix ms */
  at: number;
  status?: "stored" | "delivered";
}

export interface HistoryStore {
  /** The conversation of `me` with `peer`, oldest first. */
  read(me: string, peer: string): HistoryEntry[];
  append(me: string, entry: HistoryEntry): void;
  /** The peers `me` has a conversation with. */
  peers(me: string): string[];
}

export class FileHistoryStore implements HistoryStore {
  constructor(private readonly home: Home) {}
  private file(me: string, peer: string): string {
    // The key becomes a file name: only a valid username or a group key may.
    const group = GROUP_KEY.exec(peer);
    return `${this.home.userDir(me, "history")}/${group ? `group-${group[1]}` : assertUsername(peer)}.jsonl`;
  }
  read(me: string, peer: string): HistoryEntry[] {
    return this.home.readLines<HistoryEntry>(this.file(me, peer));
  }
  append(me: string, entry: HistoryEntry): void {
    this.home.appendLine(this.file(me, entry.peer), entry);
  }
  peers(me: string): string[] {
    const dir = this.home.userDir(me, "history");
    if (!existsSync(dir)) return [];
    return readdirSync(dir)
      .filter((name) => name.endsWith(".jsonl"))
      .map((name) => name.slice(0, -".jsonl".length))
      .filter((name) => isValidUsername(name));
  }
}

export class MemoryHistoryStore implements HistoryStore {
  private readonly conversations = new Map<string, HistoryEntry[]>();
  read(me: string, peer: string): HistoryEntry[] {
    return (this.conversations.get(`${me}/${peer}`) ?? []).map((entry) => ({ ...entry }));
  }
  append(me: string, entry: HistoryEntry): void {
    const key = `${me}/${entry.peer}`;
    this.conversations.set(key, [...(this.conversations.get(key) ?? []), { ...entry }]);
  }
  peers(me: string): string[] {
    return [...this.conversations.keys()].filter((key) => key.startsWith(`${me}/`)).map((key) => key.slice(me.length + 1));
  }
}

/** Seen incoming ids per sender, backed by the history (written before the relay is acknowledged). */
export function historyDedupStore(history: HistoryStore, me: string): DedupStore {
  const loaded = new Map<string, Set<string>>();
  const idsOf = (sender: string) => {
    let ids = loaded.get(sender);
    if (!ids) {
      ids = new Set(history.read(me, sender).filter((e) => e.direction === "in").map((e) => e.id));
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

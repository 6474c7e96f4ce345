/**
 * Messages the relay has not yet accepted, per local user, re-sent with the same id on every connection.
 * On disk: users/<me>/outbox.json (0600, as private as the history since it keeps the body).
 */
import type { Home } from "../home";

export interface OutboxEntry {
  id: string;
  /** the peer, or a group's conversation key */
  to: string;
  /** envelope v1 (absent for messages on MLS, sealed only when sent: a sealed MLS message is bound to an epoch) */
  envelope?: string;
  /** 2 for messages on MLS */
  v?: 2;
  /** kept to write the history once accepted */
  body: string;
  timestamp: number;
  /** the recipient's key index the message is sealed to */
  recipientKeyIndex?: number;
}

export interface OutboxStore {
  list(me: string): OutboxEntry[];
  /** Adds `entry`, replacing an entry with the same id. */
  put(me: string, entry: OutboxEntry): void;
  remove(me: string, id: string): void;
}

export class FileOutboxStore implements OutboxStore {
  constructor(private readonly home: Home) {}
  private file(me: string): string {
    return `${this.home.userDir(me)}/outbox.json`;
  }
  list(me: string): OutboxEntry[] {
    return this.home.readJson<OutboxEntry[]>(this.file(me)) ?? [];
  }
  put(me: string, entry: OutboxEntry): void {
    this.home.writeJson(this.file(me), [...this.list(me).filter((e) => e.id !== entry.id), entry]);
  }
  remove(me: string, id: string): void {
    this.home.writeJson(this.file(me), this.list(me).filter((e) => e.id !== id));
  }
}

export class MemoryOutboxStore implements OutboxStore {
  private readonly entries = new Map<string, OutboxEntry[]>();
  list(me: string): OutboxEntry[] {
    return (this.entries.get(me) ?? []).map((entry) => ({ ...entry }));
  }
  put(me: string, entry: OutboxEntry): void {
    this.entries.set(me, [...this.list(me).filter((e) => e.id !== entry.id), { ...entry }]);
  }
  remove(me: string, id: string): void {
    this.entries.set(me, this.list(me).filter((e) => e.id !== id));
  }
}

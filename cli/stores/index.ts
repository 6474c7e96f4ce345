/**
 * Everything the client keeps, behind one small store each: files in a home folder for the real client,
 * memory for tests. Commands receive only the stores they use.
 */
import type { Home } from "../home";
import { FileContactStore, MemoryContactStore, type ContactStore } from "./contact-store";
import { FileHistoryStore, MemoryHistoryStore, type HistoryStore } from "./history-store";
import { FileKeyStore, MemoryKeyStore, type KeyStore } from "./key-store";
import { FileOutboxStore, MemoryOutboxStore, type OutboxStore } from "./outbox-store";
import { FileRelayPinStore, MemoryRelayPinStore, type RelayPinStore } from "./relay-pin-store";
import { FileSessionStore, MemorySessionStore, type SessionStore } from "./session-store";

export interface ClientStores {
  keys: KeyStore;
  contacts: ContactStore;
  history: HistoryStore;
  outbox: OutboxStore;
  sessions: SessionStore;
  relayPins: RelayPinStore;
}

export function fileStores(home: Home, options: { fastKdf: boolean }): ClientStores {
  return {
    keys: new FileKeyStore(home, options.fastKdf),
    contacts: new FileContactStore(home),
    history: new FileHistoryStore(home),
    outbox: new FileOutboxStore(home),
    sessions: new FileSessionStore(home),
    relayPins: new FileRelayPinStore(home),
  };
}

export function memoryStores(): ClientStores {
  return {
    keys: new MemoryKeyStore(),
    contacts: new MemoryContactStore(),
    history: new MemoryHistoryStore(),
    outbox: new MemoryOutboxStore(),
    sessions: new MemorySessionStore(),
    relayPins: new MemoryRelayPinStore(),
  };
}

export type { ContactStore, HistoryStore, KeyStore, OutboxStore, RelayPinStore, SessionStore };
export type { ContactPin } from "./contact-store";
export { groupConversation, historyDedupStore, type HistoryEntry } from "./history-store";
export type { OutboxEntry } from "./outbox-store";
export type { RelayPin, RelayPins } from "./relay-pin-store";
export type { Session } from "./session-store";

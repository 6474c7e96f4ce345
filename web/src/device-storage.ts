/**
 * An MLS device's storage in the browser: its documents in IndexedDB, one database per user. Reads and
 * writes go to a copy in memory (client-core's device works synchronously); every write is queued to
 * IndexedDB, and every request to the relay first waits for the queue, so that nothing the relay is told
 * (a moved cursor, a sent message) gets ahead of the state that produced it, as with the CLI's files.
 */
import type { DeviceDocuments } from "../../client-core/device-store";
import type { DeviceStorage } from "../../client-core/mls-device";
import { ChatError } from "../../protocol/errors";
import { Idb } from "./idb";

/** The object stores of a user's messaging database: the device's documents and the messenger's records. */
const STORES = ["device", "records"] as const;

export class PersistedDocuments implements DeviceDocuments {
  private writes: Promise<void> = Promise.resolve();
  /** documents written since the last batch started, by name (the latest text; undefined: removed) */
  private readonly pending = new Map<string, string | undefined>();
  private batchQueued = false;
  private failure: ChatError | undefined;

  private constructor(
    private readonly idb: Idb,
    private readonly store: string,
    private readonly docs: Map<string, string>,
  ) {}

  static async load(idb: Idb, store: string): Promise<PersistedDocuments> {
    const docs = new Map<string, string>();
    for (const key of await idb.keys(store)) {
      const text = await idb.get<unknown>(store, key);
      if (typeof key === "string" && typeof text === "string") docs.set(key, text);
    }
    return new PersistedDocuments(idb, store, docs);
  }

  read<T>(name: string): T | undefined {
    const text = this.docs.get(name);
    // A fresh object per read, as a file read gives: callers may change what they get.
    return text === undefined ? undefined : (JSON.parse(text) as T);
  }

  write(name: string, value: unknown): void {
    const text = JSON.stringify(value);
    this.docs.set(name, text);
    this.queue(name, text);
  }

  remove(name: string): void {
    if (!this.docs.delete(name)) return;
    this.queue(name, undefined);
  }

  private queue(name: string, text: string | undefined): void {
    this.pending.set(name, text);
    if (this.batchQueued) return;
    // Writes made while a batch is in flight wait for it and then go in one transaction, each document once
    // (its latest text): a busy conversation costs a transaction per burst, not one per change.
    this.batchQueued = true;
    this.writes = this.writes
      .then(() => {
        this.batchQueued = false;
        const batch = [...this.pending];
        this.pending.clear();
        return this.idb.putAll(this.store, batch);
      })
      .catch((error: unknown) => {
        this.failure ??= error instanceof ChatError ? error : new ChatError("STORAGE_UNAVAILABLE", `browser storage failed: ${String(error)}`);
      });
  }

  list(folder: string): string[] {
    const prefix = `${folder}/`;
    return [...this.docs.keys()].filter((name) => name.startsWith(prefix) && !name.slice(prefix.length).includes("/")).map((name) => name.slice(prefix.length));
  }

  /** Resolves once every write so far is in IndexedDB; rejects (for good) after one failed. */
  async flushed(): Promise<void> {
    await this.writes;
    if (this.failure) throw this.failure;
  }
}

export interface BrowserDeviceStorage extends DeviceStorage {
  documents: PersistedDocuments;
  /** the messenger's own records (history, pinned keys), sealed by it before they get here */
  records: PersistedDocuments;
  /** waits until both are in IndexedDB */
  flushed(): Promise<void>;
  close(): void;
}

export function messagingDatabaseName(username: string): string {
  return `eth-chat-mls-${username}`;
}

/**
 * Opens `username`'s device storage. Operations are not locked here: one tab holds the account (a Web
 * Lock taken by the messenger), and within it the messenger runs one device operation at a time, so an
 * operation called from inside another simply runs.
 */
export async function openDeviceStorage(username: string): Promise<BrowserDeviceStorage> {
  const idb = await Idb.open(messagingDatabaseName(username), STORES);
  const documents = await PersistedDocuments.load(idb, "device");
  const records = await PersistedDocuments.load(idb, "records");
  return {
    documents,
    records,
    exclusive: (work) => work(),
    flushed: async () => {
      await documents.flushed();
      await records.flushed();
    },
    close: () => idb.close(),
  };
}

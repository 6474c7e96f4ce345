/**
 * A small promise wrapper over IndexedDB: one database per app, named object stores with out-of-line keys,
 * get/put/delete/keys/clear. Every database this app opens is recorded, so that logout can delete them all
 * even where indexedDB.databases() is missing.
 */
import { ChatError } from "../../protocol/errors";

const REGISTRY_KEY = "eth-chat:idb-databases";

function storageError(what: string, error: unknown): ChatError {
  const reason = error instanceof DOMException ? `${error.name}: ${error.message}` : String(error);
  return new ChatError("STORAGE_UNAVAILABLE", `browser storage failed to ${what} (${reason})`);
}

function request<T>(req: IDBRequest<T>, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(storageError(what, req.error));
  });
}

function recordedNames(): string[] {
  try {
    const parsed: unknown = JSON.parse(localStorage.getItem(REGISTRY_KEY) ?? "[]");
    return Array.isArray(parsed) ? parsed.filter((name): name is string => typeof name === "string") : [];
  } catch {
    return [];
  }
}

function recordName(name: string): void {
  const names = recordedNames();
  if (!names.includes(name)) localStorage.setItem(REGISTRY_KEY, JSON.stringify([...names, name]));
}

export class Idb {
  private constructor(private readonly db: IDBDatabase) {}

  /** Opens (creating or upgrading) database `name` with at least the object stores `stores`. */
  static async open(name: string, stores: readonly string[]): Promise<Idb> {
    if (typeof indexedDB === "undefined") throw new ChatError("STORAGE_UNAVAILABLE", "this browser offers no IndexedDB (a private window may disable it)");
    recordName(name);
    const openAt = (version?: number) =>
      new Promise<IDBDatabase>((resolve, reject) => {
        const req = version === undefined ? indexedDB.open(name) : indexedDB.open(name, version);
        req.onupgradeneeded = () => {
          for (const store of stores) if (!req.result.objectStoreNames.contains(store)) req.result.createObjectStore(store);
        };
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(storageError(`open ${name}`, req.error));
        req.onblocked = () => reject(new ChatError("STORAGE_UNAVAILABLE", `database ${name} is held open by another tab of this app: close it and retry`));
      });
    let db = await openAt();
    const missing = stores.filter((store) => !db.objectStoreNames.contains(store));
    if (missing.length > 0) {
      const version = db.version + 1;
      db.close();
      db = await openAt(version);
    }
    // Another tab deleting the database (logout) must not be blocked by this one.
    db.onversionchange = () => db.close();
    return new Idb(db);
  }

  private store(name: string, mode: IDBTransactionMode): IDBObjectStore {
    try {
      return this.db.transaction(name, mode).objectStore(name);
    } catch (error) {
      throw storageError(`use store ${name}`, error);
    }
  }

  async get<T>(store: string, key: IDBValidKey): Promise<T | undefined> {
    return (await request(this.store(store, "readonly").get(key), `read ${store}`)) as T | undefined;
  }

  async put(store: string, key: IDBValidKey, value: unknown): Promise<void> {
    await request(this.store(store, "readwrite").put(value, key), `write ${store}`);
  }

  /** Writes every entry in one transaction: all of them are stored, or none. */
  /** Puts every entry in one transaction; an entry whose value is undefined is deleted. */
  async putAll(store: string, entries: readonly (readonly [IDBValidKey, unknown])[]): Promise<void> {
    let transaction: IDBTransaction;
    try {
      transaction = this.db.transaction(store, "readwrite");
    } catch (error) {
      throw storageError(`use store ${store}`, error);
    }
    const objects = transaction.objectStore(store);
    await new Promise<void>((resolve, reject) => {
      transaction.oncomplete = () => resolve();
      transaction.onabort = transaction.onerror = () => reject(storageError(`write ${store}`, transaction.error));
      for (const [key, value] of entries) {
        if (value === undefined) objects.delete(key);
        else objects.put(value, key);
      }
    });
  }

  async delete(store: string, key: IDBValidKey): Promise<void> {
    await request(this.store(store, "readwrite").delete(key), `delete from ${store}`);
  }

  async keys(store: string): Promise<IDBValidKey[]> {
    return request(this.store(store, "readonly").getAllKeys(), `list ${store}`);
  }

  async clear(store: string): Promise<void> {
    await request(this.store(store, "readwrite").clear(), `clear ${store}`);
  }

  close(): void {
    this.db.close();
  }
}

/** Deletes every IndexedDB database of this origin (logout): those the browser lists and those this app recorded. */
export async function deleteAllDatabases(): Promise<void> {
  if (typeof indexedDB === "undefined") return;
  const names = new Set(recordedNames());
  if (typeof indexedDB.databases === "function") {
    for (const info of await indexedDB.databases()) if (info.name) names.add(info.name);
  }
  await Promise.all(
    [...names].map(
      (name) =>
        new Promise<void>((resolve, reject) => {
          const req = indexedDB.deleteDatabase(name);
          req.onsuccess = () => resolve();
          req.onerror = () => reject(storageError(`delete ${name}`, req.error));
          // Blocked: another tab still holds it; the deletion completes once that tab closes it.
          req.onblocked = () => resolve();
        }),
    ),
  );
  localStorage.removeItem(REGISTRY_KEY);
}

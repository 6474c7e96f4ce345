/**
 * The Delivery Service stores in a directory of their own, for a relay without MySQL: the in-memory store
 * (ds-memory.ts) plus an append-only log of CRC-framed records (record-frame.ts), replayed on open.
 *
 * The log records every operation that changed something, with its inputs; the memory store is
 * deterministic in its inputs (times are passed in, welcome ids count up), so replaying the operations in
 * order rebuilds the same state. Every call, reads included, goes through one group-commit queue
 * (serial-batcher.ts) and resolves only after its batch's records are appended and fdatasync'ed: nobody
 * ever sees a seq, an epoch or a claimed key package that a crash could take back (a seq handed out twice
 * would corrupt every reader's view of the group). A torn tail is cut off on open and reported.
 *
 * When the log has grown well beyond its size after the last compaction, it is rewritten as the live state
 * (exportState) into a temporary file, fsync'ed and renamed over the log, so a crash leaves one whole log.
 * Bytes are kept as base64 inside JSON records: simple to inspect, a third larger than binary.
 */
import path from "node:path";
import { DEFAULT_COMPACT_MIN_BYTES, openDurableLog, type DurableLog, type DurableLogEvent, type DurableStoreOptions } from "./durable-log";
import { frameRecord } from "./record-frame";
import { createSerialBatcher } from "./serial-batcher";
import { createMemoryDeliveryServiceStore, type DsStateRecord, type MemoryDeliveryServiceStore } from "./ds-memory";
import { DsError, type AppendResult, type ClaimedKeyPackage, type DeliveryServiceStore, type PurgeResult } from "./ds-types";

const LOG_NAME = "delivery-service.log";
const FORMAT = "eth-chat-delivery-service";
const FORMAT_VERSION = 1;
const MAX_BATCH = 512;

type Method = Exclude<keyof DeliveryServiceStore, "kind" | "migrate" | "close">;

/** Which calls change state, and whether this result says it did (only those are logged). */
const CHANGED: Partial<Record<Method, (result: unknown) => boolean>> = {
  putKeyPackages: () => true,
  claimKeyPackages: (r) => (r as ClaimedKeyPackage[]).some((k) => !k.lastResort),
  removeDevice: () => true,
  createGroup: () => true,
  appendCommit: (r) => (r as AppendResult).accepted && !(r as { duplicate: boolean }).duplicate,
  appendApplication: (r) => (r as AppendResult).accepted && !(r as { duplicate: boolean }).duplicate,
  updateMembers: () => true,
  advanceCursor: () => true,
  ackWelcome: () => true,
  purge: (r) => Object.values(r as PurgeResult).some((n) => n > 0),
};

type HeaderRecord = { t: "h"; format: string; v: number };
type OperationRecord = { t: "op"; op: Method; p: unknown };
type StateRecord = { t: "s"; s: DsStateRecord };
type LogRecord = HeaderRecord | OperationRecord | StateRecord;

type Call = { method: Method; params: unknown } | { method: "compact" };
type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** Uint8Array as { $b: base64 }; `this[key]` is the original value, before Buffer's own toJSON. */
function replacer(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const original = this[key];
  return original instanceof Uint8Array ? { $b: Buffer.from(original.buffer, original.byteOffset, original.length).toString("base64") } : value;
}

function reviver(_key: string, value: unknown): unknown {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const v = value as { $b?: unknown };
    if (typeof v.$b === "string" && Object.keys(v).length === 1) return new Uint8Array(Buffer.from(v.$b, "base64"));
  }
  return value;
}

const encode = (record: LogRecord) => frameRecord(Buffer.from(JSON.stringify(record, replacer), "utf8"));

function parseRecord(payload: Buffer): LogRecord | undefined {
  try {
    const value = JSON.parse(payload.toString("utf8"), reviver) as LogRecord;
    return value && typeof value === "object" && typeof value.t === "string" ? value : undefined;
  } catch {
    return undefined;
  }
}

export type FileDeliveryServiceEvent = DurableLogEvent;

export interface FileDeliveryServiceOptions extends DurableStoreOptions {
  /** ...and runs when the log is this many times its size after the last compaction (or open). Default 2. */
  compactGrowthRatio?: number;
}

export function createFileDeliveryServiceStore(options: FileDeliveryServiceOptions): DeliveryServiceStore {
  const dir = path.resolve(options.dir);
  const compactMinBytes = options.compactMinBytes ?? DEFAULT_COMPACT_MIN_BYTES;
  const compactGrowthRatio = options.compactGrowthRatio ?? 2;

  let state: MemoryDeliveryServiceStore = createMemoryDeliveryServiceStore();
  let log: DurableLog | undefined;
  let baselineBytes = 0;
  let opening: Promise<void> | undefined;
  let closed = false;
  let compactionQueued = false;

  const usable = (): DurableLog => {
    if (log?.failure) throw log.failure;
    if (closed || !log) throw new DsError("DS_CLOSED", `delivery service store ${dir} is not open`);
    return log;
  };

  function* snapshotRecords(): Iterable<Buffer> {
    yield encode({ t: "h", format: FORMAT, v: FORMAT_VERSION });
    for (const s of state.exportState()) yield encode({ t: "s", s });
  }

  const compact = async () => {
    compactionQueued = false;
    const current = usable();
    if (await current.compact(snapshotRecords())) baselineBytes = current.bytes;
  };

  const flush = async (batch: Call[]): Promise<Outcome[]> => {
    const current = usable();
    const outcomes: Outcome[] = [];
    let frames: Buffer[] = [];
    for (const call of batch) {
      if (call.method === "compact") {
        // What precedes it in this batch goes to the old log first, so the snapshot is all on disk.
        await current.append(frames);
        frames = [];
        await compact();
        outcomes.push({ ok: true, value: undefined });
        continue;
      }
      try {
        const value = await (state[call.method] as (p: unknown) => Promise<unknown>)(call.params);
        if (CHANGED[call.method]?.(value)) frames.push(encode({ t: "op", op: call.method, p: call.params }));
        outcomes.push({ ok: true, value });
      } catch (error) {
        outcomes.push({ ok: false, error });
      }
    }
    await current.append(frames);
    if (!compactionQueued && current.bytes >= compactMinBytes && current.bytes > compactGrowthRatio * baselineBytes) {
      compactionQueued = true;
      // Runs as the next item of the queue, between batches; its caller is nobody.
      calls.push({ method: "compact" }).catch(() => {});
    }
    return outcomes;
  };

  const calls = createSerialBatcher<Call, Outcome>({ maxBatch: MAX_BATCH, flush });

  const call = async <T>(method: Method, params: unknown): Promise<T> => {
    usable();
    const outcome = await calls.push({ method, params });
    if (!outcome.ok) throw outcome.error;
    return outcome.value as T;
  };

  const replay = async (file: string, records: LogRecord[]) => {
    const header = records[0] as HeaderRecord | undefined;
    // The header is written whole before the log exists (rename), so a bad one means this is not our file.
    if (!header || header.format !== FORMAT || header.v !== FORMAT_VERSION) {
      throw new DsError("DS_UNREADABLE", `${file} is not a delivery service log of format ${FORMAT} v${FORMAT_VERSION}`);
    }
    const rebuilt = createMemoryDeliveryServiceStore();
    for (const record of records.slice(1)) {
      if (record.t === "s") rebuilt.importState(record.s);
      else if (record.t === "op" && Object.hasOwn(CHANGED, record.op)) {
        try {
          await (rebuilt[record.op] as (p: unknown) => Promise<unknown>)(record.p);
        } catch (error) {
          // It succeeded when it was logged: a different outcome now means another version's rules.
          throw new DsError("DS_UNREADABLE", `${file}: an operation no longer applies (${record.op})`, { cause: error });
        }
      } else throw new DsError("DS_UNREADABLE", `${file}: unknown record`);
    }
    state = rebuilt;
  };

  const openLog = async () => {
    const file = path.join(dir, LOG_NAME);
    log = await openDurableLog<LogRecord>({
      dir,
      name: LOG_NAME,
      decode: parseRecord,
      isHeader: (record) => record.t === "h",
      emptyLog: () => [encode({ t: "h", format: FORMAT, v: FORMAT_VERSION })],
      replay: (records) => replay(file, records),
      // After a failed write or fsync the disk holds an unknown prefix of what we meant; memory no longer
      // matches it, so everything stops until a restart replays the log.
      failed: (what, cause) => new DsError("DS_FAILED", `delivery service store ${dir}: ${what} failed; restart to recover from the log`, { cause }),
      onEvent: options.onEvent,
    });
    baselineBytes = log.bytes;
  };

  return {
    kind: "file",
    migrate() {
      if (closed) return Promise.reject(new DsError("DS_CLOSED", `delivery service store ${dir} is closed`));
      opening ??= openLog().catch((error) => {
        opening = undefined;
        throw error;
      });
      return opening;
    },
    putKeyPackages: (p) => call("putKeyPackages", p),
    claimKeyPackages: (p) => call("claimKeyPackages", p),
    keyPackageCounts: (p) => call("keyPackageCounts", p),
    removeDevice: (p) => call("removeDevice", p),
    createGroup: (p) => call("createGroup", p),
    group: (p) => call("group", p),
    appendCommit: (p) => call("appendCommit", p),
    appendApplication: (p) => call("appendApplication", p),
    read: (p) => call("read", p),
    members: (p) => call("members", p),
    updateMembers: (p) => call("updateMembers", p),
    advanceCursor: (p) => call("advanceCursor", p),
    pendingFor: (p) => call("pendingFor", p),
    welcomes: (p) => call("welcomes", p),
    ackWelcome: (p) => call("ackWelcome", p),
    purge: (p) => call("purge", p),
    async close() {
      if (closed) return;
      await opening?.catch(() => {});
      await calls.idle();
      closed = true;
      // `log` stays set: a store that failed keeps saying so after close.
      await log?.close();
    },
  };
}

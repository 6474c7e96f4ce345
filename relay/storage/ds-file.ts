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
import { DEFAULT_COMPACT_MIN_BYTES, createStoreLog, decodeJsonRecord, encodeJsonRecord, type DurableLogEvent, type DurableLogFormat, type DurableStoreOptions } from "./durable-log";
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

const encode = (record: LogRecord) => encodeJsonRecord(record, replacer);

/** The delivery service's log: its file, records and typed errors. */
const LOG_FORMAT: DurableLogFormat<LogRecord> = {
  file: LOG_NAME,
  title: "delivery service store",
  header: { t: "h", format: FORMAT, v: FORMAT_VERSION },
  encode,
  decode: (payload) => decodeJsonRecord<LogRecord>(payload, reviver),
  error: (kind, message, options) => new DsError(`DS_${kind}`, message, options),
};

export type FileDeliveryServiceEvent = DurableLogEvent;

export interface FileDeliveryServiceOptions extends DurableStoreOptions {
  /** ...and runs when the log is this many times its size after the last compaction (or open). Default 2. */
  compactGrowthRatio?: number;
}

export function createFileDeliveryServiceStore(options: FileDeliveryServiceOptions): DeliveryServiceStore {
  const dir = path.resolve(options.dir);
  const logFile = path.join(dir, LOG_NAME);
  const compactMinBytes = options.compactMinBytes ?? DEFAULT_COMPACT_MIN_BYTES;
  const compactGrowthRatio = options.compactGrowthRatio ?? 2;

  let state: MemoryDeliveryServiceStore = createMemoryDeliveryServiceStore();
  /** The log's size after the last compaction, or at open (set by the first batch, before it appends). */
  let baselineBytes: number | undefined;
  let compactionQueued = false;

  const usable = () => log.usable();

  function* snapshotRecords(): Iterable<Buffer> {
    yield encode(LOG_FORMAT.header);
    for (const s of state.exportState()) yield encode({ t: "s", s });
  }

  const compact = async () => {
    compactionQueued = false;
    const current = usable();
    if (await current.compact(snapshotRecords())) baselineBytes = current.bytes;
  };

  const flush = async (batch: Call[]): Promise<Outcome[]> => {
    const current = usable();
    baselineBytes ??= current.bytes;
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

  /** Rebuilds the state from the log's records, header first. */
  const replay = async (records: LogRecord[]) => {
    const rebuilt = createMemoryDeliveryServiceStore();
    for (const record of records.slice(1)) {
      if (record.t === "s") rebuilt.importState(record.s);
      else if (record.t === "op" && Object.hasOwn(CHANGED, record.op)) {
        try {
          await (rebuilt[record.op] as (p: unknown) => Promise<unknown>)(record.p);
        } catch (error) {
          // It succeeded when it was logged: a different outcome now means another version's rules.
          throw new DsError("DS_UNREADABLE", `${logFile}: an operation no longer applies (${record.op})`, { cause: error });
        }
      } else throw new DsError("DS_UNREADABLE", `${logFile}: unknown record`);
    }
    state = rebuilt;
  };

  const log = createStoreLog(options, LOG_FORMAT, replay);

  return {
    kind: "file",
    // Every call joins one queue, applied in order.
    appendsInCallOrder: true,
    migrate: () => log.open(),
    putKeyPackages: (p) => call("putKeyPackages", p),
    claimKeyPackages: (p) => call("claimKeyPackages", p),
    keyPackageCounts: (p) => call("keyPackageCounts", p),
    removeDevice: (p) => call("removeDevice", p),
    createGroup: (p) => call("createGroup", p),
    group: (p) => call("group", p),
    appendCommit: (p) => call("appendCommit", p),
    appendApplication: (p) => call("appendApplication", p),
    read: (p) => call("read", p),
    readAsMember: (p) => call("readAsMember", p),
    members: (p) => call("members", p),
    memberUsernames: (p) => call("memberUsernames", p),
    updateMembers: (p) => call("updateMembers", p),
    advanceCursor: (p) => call("advanceCursor", p),
    pendingFor: (p) => call("pendingFor", p),
    welcomes: (p) => call("welcomes", p),
    ackWelcome: (p) => call("ackWelcome", p),
    purge: (p) => call("purge", p),
    close: () => log.close(() => calls.idle()),
  };
}

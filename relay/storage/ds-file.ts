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
import { mkdir, open, readFile, rename, unlink, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { lockDirectory, type DirectoryLock } from "./directory-lock";
import { fsyncDirectory, writeFully } from "./mailbox-file";
import { FRAME_HEADER_BYTES, frameRecord, readFrames } from "./record-frame";
import { createSerialBatcher } from "./serial-batcher";
import { createMemoryDeliveryServiceStore, type DsStateRecord, type MemoryDeliveryServiceStore } from "./ds-memory";
import { DsError, type AppendResult, type ClaimedKeyPackage, type DeliveryServiceStore, type PurgeResult } from "./ds-types";

const LOG_NAME = "delivery-service.log";
const COMPACT_NAME = "delivery-service.log.compacting";
const FORMAT = "eth-chat-delivery-service";
const FORMAT_VERSION = 1;
/** Owner only: the log holds who is in which group, when they wrote, and the (encrypted) messages. */
const FILE_MODE = 0o600;
const MAX_BATCH = 512;
const COMPACT_CHUNK_RECORDS = 2_048;

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

export type FileDeliveryServiceEvent =
  | { type: "tail-truncated"; file: string; validBytes: number; truncatedBytes: number }
  | { type: "compacted"; file: string; beforeBytes: number; afterBytes: number }
  | { type: "compaction-failed"; file: string; error: unknown };

export interface FileDeliveryServiceOptions {
  /** The directory of these stores (created if missing), not the mailbox's; one process at a time. */
  dir: string;
  /** Compaction is considered once the log exceeds this size. Default 8 MiB. */
  compactMinBytes?: number;
  /** ...and runs when the log is this many times its size after the last compaction (or open). Default 2. */
  compactGrowthRatio?: number;
  /** Recoveries and compactions, for the relay's log; never carries message bytes. */
  onEvent?: (event: FileDeliveryServiceEvent) => void;
}

export function createFileDeliveryServiceStore(options: FileDeliveryServiceOptions): DeliveryServiceStore {
  const dir = path.resolve(options.dir);
  const logPath = path.join(dir, LOG_NAME);
  const compactPath = path.join(dir, COMPACT_NAME);
  const compactMinBytes = options.compactMinBytes ?? 8 * 1024 * 1024;
  const compactGrowthRatio = options.compactGrowthRatio ?? 2;
  const emit = (event: FileDeliveryServiceEvent) => options.onEvent?.(event);

  let state: MemoryDeliveryServiceStore = createMemoryDeliveryServiceStore();
  let handle: FileHandle | undefined;
  let lock: DirectoryLock | undefined;
  let fileBytes = 0;
  let baselineBytes = 0;
  let opening: Promise<void> | undefined;
  let closed = false;
  let failure: DsError | undefined;
  let compactionQueued = false;

  const usable = () => {
    if (failure) throw failure;
    if (closed || !handle) throw new DsError("DS_CLOSED", `delivery service store ${dir} is not open`);
    return handle;
  };

  const fail = (what: string, error: unknown): DsError => {
    // After a failed write or fsync the disk holds an unknown prefix of what we meant; memory no longer
    // matches it, so everything stops until a restart replays the log.
    failure ??= new DsError("DS_FAILED", `delivery service store ${dir}: ${what} failed; restart to recover from the log`, { cause: error });
    return failure;
  };

  const append = async (frames: Buffer[]) => {
    if (frames.length === 0) return;
    const h = usable();
    const bytes = frames.length === 1 ? frames[0] : Buffer.concat(frames);
    try {
      await writeFully(h, bytes, fileBytes);
      await h.datasync();
    } catch (error) {
      throw fail("append", error);
    }
    fileBytes += bytes.length;
  };

  /** Writes header + state records to the temporary file and renames it over the log; returns its size. */
  const writeSnapshot = async (records: Iterable<LogRecord>): Promise<number> => {
    const out = await open(compactPath, "w", FILE_MODE);
    try {
      let position = 0;
      let chunk: Buffer[] = [];
      const flushChunk = async () => {
        const bytes = Buffer.concat(chunk);
        await writeFully(out, bytes, position);
        position += bytes.length;
        chunk = [];
      };
      for (const record of records) {
        chunk.push(encode(record));
        if (chunk.length >= COMPACT_CHUNK_RECORDS) await flushChunk();
      }
      await flushChunk();
      await out.sync();
      await out.close();
      await rename(compactPath, logPath);
      return position;
    } catch (error) {
      // Before the rename the old log is untouched and still current.
      await out.close().catch(() => {});
      await unlink(compactPath).catch(() => {});
      throw error;
    }
  };

  function* snapshotRecords(): Iterable<LogRecord> {
    yield { t: "h", format: FORMAT, v: FORMAT_VERSION };
    for (const s of state.exportState()) yield { t: "s", s };
  }

  const compact = async () => {
    compactionQueued = false;
    const beforeBytes = fileBytes;
    try {
      fileBytes = await writeSnapshot(snapshotRecords());
    } catch (error) {
      emit({ type: "compaction-failed", file: logPath, error });
      return;
    }
    // The new log is in place; the open handle still points at the old (unlinked) file.
    try {
      await fsyncDirectory(dir);
      const old = handle;
      handle = await open(logPath, "r+");
      await old?.close();
    } catch (error) {
      throw fail("switching to the compacted log", error);
    }
    baselineBytes = fileBytes;
    emit({ type: "compacted", file: logPath, beforeBytes, afterBytes: fileBytes });
  };

  const flush = async (batch: Call[]): Promise<Outcome[]> => {
    usable();
    const outcomes: Outcome[] = [];
    let frames: Buffer[] = [];
    for (const call of batch) {
      if (call.method === "compact") {
        // What precedes it in this batch goes to the old log first, so the snapshot is all on disk.
        await append(frames);
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
    await append(frames);
    if (!compactionQueued && fileBytes >= compactMinBytes && fileBytes > compactGrowthRatio * baselineBytes) {
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

  const replay = async (records: LogRecord[]) => {
    const rebuilt = createMemoryDeliveryServiceStore();
    for (const record of records.slice(1)) {
      if (record.t === "s") rebuilt.importState(record.s);
      else if (record.t === "op" && Object.hasOwn(CHANGED, record.op)) {
        try {
          await (rebuilt[record.op] as (p: unknown) => Promise<unknown>)(record.p);
        } catch (error) {
          // It succeeded when it was logged: a different outcome now means another version's rules.
          throw new DsError("DS_UNREADABLE", `${logPath}: an operation no longer applies (${record.op})`, { cause: error });
        }
      } else throw new DsError("DS_UNREADABLE", `${logPath}: unknown record`);
    }
    state = rebuilt;
  };

  const openLog = async () => {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    lock = await lockDirectory(dir);
    try {
      // A leftover temporary file is a compaction cut short before its rename: the log itself is whole.
      await unlink(compactPath).catch(() => {});
      let bytes = await readFile(logPath).catch((error: NodeJS.ErrnoException) => {
        if (error.code === "ENOENT") return undefined;
        throw error;
      });
      if (bytes === undefined) {
        await writeSnapshot([{ t: "h", format: FORMAT, v: FORMAT_VERSION }]);
        await fsyncDirectory(dir);
        bytes = await readFile(logPath);
      }
      const { payloads } = readFrames(bytes);
      const records: LogRecord[] = [];
      let usableBytes = 0;
      for (const payload of payloads) {
        const record = parseRecord(payload);
        // a checksum can pass on a record this version cannot parse: the log is cut there like a torn tail
        if (!record || (records.length === 0) !== (record.t === "h")) break;
        records.push(record);
        usableBytes += FRAME_HEADER_BYTES + payload.length;
      }
      const header = records[0] as HeaderRecord | undefined;
      // The header is written whole before the log exists (rename), so a bad one means this is not our file.
      if (!header || header.format !== FORMAT || header.v !== FORMAT_VERSION) {
        throw new DsError("DS_UNREADABLE", `${logPath} is not a delivery service log of format ${FORMAT} v${FORMAT_VERSION}`);
      }
      await replay(records);
      handle = await open(logPath, "r+");
      if (usableBytes < bytes.length) {
        await handle.truncate(usableBytes);
        await handle.sync();
        emit({ type: "tail-truncated", file: logPath, validBytes: usableBytes, truncatedBytes: bytes.length - usableBytes });
      }
      fileBytes = usableBytes;
      baselineBytes = usableBytes;
    } catch (error) {
      await handle?.close().catch(() => {});
      handle = undefined;
      await lock.release();
      lock = undefined;
      throw error;
    }
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
      await handle?.close().catch(() => {});
      handle = undefined;
      await lock?.release();
      lock = undefined;
    },
  };
}

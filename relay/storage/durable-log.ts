/**
 * The durable append-only log under the file stores (mailbox-file.ts, ds-file.ts): one file of CRC-framed
 * records (record-frame.ts) in a locked directory (directory-lock.ts). What a record means is the store's;
 * this module only keeps the bytes safe.
 *
 * - Open: the whole log is read and handed to the store to replay; a torn or damaged tail (a crash
 *   mid-append), or a record the store cannot decode, is cut off and reported.
 * - Append: a batch of frames is written and fdatasync'ed before the call resolves, so a store that calls it
 *   once per group commit only ever reports what is on disk. A failed write or fsync leaves an unknown prefix
 *   on disk, so the log refuses all further work until a restart replays it.
 * - Compaction: the store's live records are written to a temporary file, fsync'ed, renamed over the log and
 *   the directory fsync'ed, so a crash at any point leaves either the old or the new log whole.
 */
import { mkdir, open, readFile, rename, unlink, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { lockDirectory } from "./directory-lock";
import { FRAME_HEADER_BYTES, frameRecord, readFrames } from "./record-frame";

/** Owner only: the logs hold ciphertexts, group membership, and who wrote to whom and when. */
const FILE_MODE = 0o600;
/** Records per write while compacting, so a large store is not copied into one buffer. */
const COMPACT_CHUNK_RECORDS = 2_048;

export type DurableLogEvent =
  | { type: "tail-truncated"; file: string; validBytes: number; truncatedBytes: number }
  | { type: "compacted"; file: string; beforeBytes: number; afterBytes: number }
  | { type: "compaction-failed"; file: string; error: unknown };

/** What every file store is configured with; each adds its own compaction trigger. */
export interface DurableStoreOptions {
  /** The directory of this store (created if missing); one process at a time. */
  dir: string;
  /** Compaction is considered once the log exceeds this size. Default 8 MiB. */
  compactMinBytes?: number;
  /** Recoveries and compactions, for the relay's log; never carries message bytes. */
  onEvent?: (event: DurableLogEvent) => void;
}

export const DEFAULT_COMPACT_MIN_BYTES = 8 * 1024 * 1024;

export type DurableLogErrorKind = "CLOSED" | "FAILED" | "UNREADABLE";

/** The first record of every log: its type tag, and which format and version the log is in. */
export type LogHeader = { t: string; format: string; v: number };

/** What a store's log is, independent of any one directory: its file, records and typed errors. */
export interface DurableLogFormat<R extends { t: string }> {
  /** The log's file name in the store's directory; `<file>.compacting` is the temporary file of a compaction. */
  file: string;
  /** What the store is called in its errors, e.g. "mailbox". */
  title: string;
  /** The header a new log starts with; a log whose first record is not a header of this format and version is refused. */
  header: R & LogHeader;
  encode(record: R): Buffer;
  /** A record from its payload, or undefined for one this version cannot read (the log is cut there). */
  decode(payload: Buffer): R | undefined;
  /** The store's typed error of this kind (its own stable code). */
  error(kind: DurableLogErrorKind, message: string, options?: ErrorOptions): Error;
}

/** Rebuilds the store from the log's readable records, header first; `frameBytes[i]` is the on-disk size of record i. Throw to refuse the log. */
export type Replay<R> = (records: R[], frameBytes: number[]) => void | Promise<void>;

export interface DurableLog {
  /** Current size of the log on disk. */
  readonly bytes: number;
  /** Set once a write, fsync or switch failed: nothing more may be written until a restart. */
  readonly failure: Error | undefined;
  /** Appends the frames and resolves after fdatasync; rejects with the failure otherwise. */
  append(frames: Buffer[]): Promise<void>;
  /**
   * Replaces the log with these frames (header first). Resolves false if the new log could not be written
   * (the old one stays current, reported as compaction-failed); rejects with the failure if switching to it failed.
   */
  compact(frames: Iterable<Buffer>): Promise<boolean>;
  /** Closes the file and releases the directory. */
  close(): Promise<void>;
}

/** A JSON record in its frame; `replacer` as for JSON.stringify. */
export function encodeJsonRecord(record: { t: string }, replacer?: (this: Record<string, unknown>, key: string, value: unknown) => unknown): Buffer {
  return frameRecord(Buffer.from(JSON.stringify(record, replacer as (key: string, value: unknown) => unknown), "utf8"));
}

/** A frame's payload as a JSON record with a string type `t`, or undefined for anything else. */
export function decodeJsonRecord<R extends { t: string }>(payload: Buffer, reviver?: (key: string, value: unknown) => unknown): R | undefined {
  try {
    const value = JSON.parse(payload.toString("utf8"), reviver) as R;
    return value && typeof value === "object" && typeof value.t === "string" ? value : undefined;
  } catch {
    return undefined;
  }
}

async function writeFully(handle: FileHandle, bytes: Buffer, position: number): Promise<void> {
  let written = 0;
  while (written < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, written, bytes.length - written, position + written);
    written += bytesWritten;
  }
}

async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function openDurableLog<R extends { t: string }>(
  options: DurableStoreOptions,
  format: DurableLogFormat<R>,
  replay: Replay<R>,
): Promise<DurableLog> {
  const dir = path.resolve(options.dir);
  const logPath = path.join(dir, format.file);
  const compactPath = `${logPath}.compacting`;
  const emit = (event: DurableLogEvent) => options.onEvent?.(event);

  let handle: FileHandle | undefined;
  let fileBytes = 0;
  let failure: Error | undefined;

  // After a failed write or fsync the disk holds an unknown prefix of what the store meant; its memory no
  // longer matches the disk, so everything stops until a restart replays the log.
  const fail = (what: string, error: unknown): Error =>
    (failure ??= format.error("FAILED", `${format.title} ${dir}: ${what} failed; restart to recover from the log`, { cause: error }));

  /** Writes the frames to the temporary file and renames it over the log; returns its size. */
  const writeWhole = async (frames: Iterable<Buffer>): Promise<number> => {
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
      for (const frame of frames) {
        chunk.push(frame);
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

  await mkdir(dir, { recursive: true, mode: 0o700 });
  const lock = await lockDirectory(dir);
  try {
    // A leftover temporary file is a compaction cut short before its rename: the log itself is whole.
    await unlink(compactPath).catch(() => {});
    let bytes = await readFile(logPath).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return undefined;
      throw error;
    });
    if (bytes === undefined) {
      await writeWhole([format.encode(format.header)]);
      await fsyncDirectory(dir);
      bytes = await readFile(logPath);
    }
    const records: R[] = [];
    const frameBytes: number[] = [];
    let usableBytes = 0;
    for (const payload of readFrames(bytes).payloads) {
      const record = format.decode(payload);
      // a checksum can pass on a record this version cannot read: the log is cut there like a torn tail
      if (record === undefined || (records.length === 0) !== (record.t === format.header.t)) break;
      records.push(record);
      frameBytes.push(FRAME_HEADER_BYTES + payload.length);
      usableBytes += FRAME_HEADER_BYTES + payload.length;
    }
    const header = records[0] as Partial<LogHeader> | undefined;
    // The header is written whole before the log exists (rename), so a bad one means this is not our file.
    if (!header || header.format !== format.header.format || header.v !== format.header.v) {
      throw format.error("UNREADABLE", `${logPath} is not a ${format.title} log of format ${format.header.format} v${format.header.v}`);
    }
    await replay(records, frameBytes);
    handle = await open(logPath, "r+");
    if (usableBytes < bytes.length) {
      await handle.truncate(usableBytes);
      await handle.sync();
      emit({ type: "tail-truncated", file: logPath, validBytes: usableBytes, truncatedBytes: bytes.length - usableBytes });
    }
    fileBytes = usableBytes;
  } catch (error) {
    await handle?.close().catch(() => {});
    await lock.release();
    throw error;
  }

  return {
    get bytes() {
      return fileBytes;
    },
    get failure() {
      return failure;
    },
    async append(frames) {
      if (failure) throw failure;
      if (frames.length === 0) return;
      const bytes = frames.length === 1 ? frames[0] : Buffer.concat(frames);
      try {
        await writeFully(handle!, bytes, fileBytes);
        await handle!.datasync();
      } catch (error) {
        throw fail("append", error);
      }
      fileBytes += bytes.length;
    },
    async compact(frames) {
      if (failure) throw failure;
      const beforeBytes = fileBytes;
      let afterBytes: number;
      try {
        afterBytes = await writeWhole(frames);
      } catch (error) {
        emit({ type: "compaction-failed", file: logPath, error });
        return false;
      }
      // The new log is in place; the open handle still points at the old (unlinked) file.
      fileBytes = afterBytes;
      try {
        await fsyncDirectory(dir);
        const old = handle;
        handle = await open(logPath, "r+");
        await old?.close();
      } catch (error) {
        throw fail("switching to the compacted log", error);
      }
      emit({ type: "compacted", file: logPath, beforeBytes, afterBytes });
      return true;
    },
    async close() {
      await handle?.close().catch(() => {});
      handle = undefined;
      await lock.release();
    },
  };
}

/** A store's log over the store's life: opened by `migrate` (once; retried after a failed open), closed once. */
export interface StoreLog {
  open(): Promise<void>;
  /** The open log; throws the store's failure if it has one, or its closed error if not open. */
  usable(): DurableLog;
  /** Waits for an open under way and for `drain` (the store's queue), then closes the log. */
  close(drain: () => Promise<void>): Promise<void>;
}

export function createStoreLog<R extends { t: string }>(options: DurableStoreOptions, format: DurableLogFormat<R>, replay: Replay<R>): StoreLog {
  const dir = path.resolve(options.dir);
  // `log` stays set after close: a store that failed keeps saying so.
  let log: DurableLog | undefined;
  let opening: Promise<void> | undefined;
  let closed = false;
  return {
    open() {
      if (closed) return Promise.reject(format.error("CLOSED", `${format.title} ${dir} is closed`));
      opening ??= openDurableLog(options, format, replay).then(
        (opened) => {
          log = opened;
        },
        (error) => {
          opening = undefined;
          throw error;
        },
      );
      return opening;
    },
    usable() {
      if (log?.failure) throw log.failure;
      if (closed || !log) throw format.error("CLOSED", `${format.title} ${dir} is not open`);
      return log;
    },
    async close(drain) {
      if (closed) return;
      await opening?.catch(() => {});
      await drain();
      closed = true;
      await log?.close();
    },
  };
}

/**
 * The framing of an append-only log: each record is [payload length: u32 LE][CRC-32 of payload: u32 LE]
 * [payload]. A crash can leave the last record half written (or, on some file systems, followed by zeroes);
 * the reader stops at the first frame that is incomplete or fails its checksum, and reports where the valid
 * prefix ends so the caller can cut the file there.
 */
import { crc32 } from "./crc32";

export const FRAME_HEADER_BYTES = 8;
/** Larger than any envelope the relay accepts; a bigger length can only be damage. */
export const MAX_RECORD_PAYLOAD_BYTES = 64 * 1024 * 1024;

export function frameRecord(payload: Uint8Array): Buffer {
  if (payload.length === 0 || payload.length > MAX_RECORD_PAYLOAD_BYTES) {
    throw new RangeError(`record payload must be 1..${MAX_RECORD_PAYLOAD_BYTES} bytes (got ${payload.length})`);
  }
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  frame.writeUInt32LE(payload.length, 0);
  frame.writeUInt32LE(crc32(payload), 4);
  frame.set(payload, FRAME_HEADER_BYTES);
  return frame;
}

export interface ReadFramesResult {
  /** the payloads of the valid prefix, in order (views into the input) */
  payloads: Buffer[];
  /** byte length of the valid prefix; equals the input length when nothing is torn or damaged */
  validBytes: number;
}

export function readFrames(bytes: Buffer): ReadFramesResult {
  const payloads: Buffer[] = [];
  let offset = 0;
  while (offset + FRAME_HEADER_BYTES <= bytes.length) {
    const length = bytes.readUInt32LE(offset);
    // Zero length is refused too: a run of zero bytes would otherwise read as valid empty records.
    if (length === 0 || length > MAX_RECORD_PAYLOAD_BYTES) break;
    const start = offset + FRAME_HEADER_BYTES;
    const end = start + length;
    if (end > bytes.length) break;
    if (crc32(bytes, start, end) !== bytes.readUInt32LE(offset + 4)) break;
    payloads.push(bytes.subarray(start, end));
    offset = end;
  }
  return { payloads, validBytes: offset };
}

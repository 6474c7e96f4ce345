import { ChatError } from "../errors";
import { bytesToHex, concatBytes, hexToBytes, randomBytes } from "./bytes";

/**
 * The plaintext inside an MLS application message. `id` lets a receiver drop duplicates as with
 * envelope v1 (MLS itself does not stop the Delivery Service from replaying a message it already
 * fanned out to a device that lost its cursor).
 */
export interface ApplicationPayload {
  /** 16 random bytes as 32 lowercase hex characters */
  id: string;
  /** sender's clock, Unix ms */
  sentAt: number;
  body: string;
}

export const APPLICATION_PAYLOAD_VERSION = 1;
export const MAX_BODY_BYTES = 64 * 1024;
const ID_BYTES = 16;

function bad(field: string, why: string): ChatError {
  return new ChatError("ENVELOPE_INVALID", `application payload: ${field} ${why}`, { field });
}

/**
 * Canonical encoding: version u8, id[16], sent_at u64 (ms), body<0..2^32-1> as UTF-8 with a u32 length.
 * Fixed layout, one encoding per value.
 */
export function encodeApplicationPayload(payload: ApplicationPayload): Uint8Array {
  if (typeof payload.id !== "string" || !/^[0-9a-f]{32}$/.test(payload.id)) throw bad("id", "must be 32 lowercase hex characters");
  if (!Number.isSafeInteger(payload.sentAt) || payload.sentAt < 0) throw bad("sentAt", "must be a non-negative integer (ms)");
  if (typeof payload.body !== "string") throw bad("body", "must be a string");
  const body = new TextEncoder().encode(payload.body);
  if (body.length > MAX_BODY_BYTES) throw new ChatError("MESSAGE_TOO_LONG", `body exceeds ${MAX_BODY_BYTES} bytes`, { field: "body" });
  const header = new Uint8Array(1 + ID_BYTES + 8 + 4);
  const view = new DataView(header.buffer);
  header[0] = APPLICATION_PAYLOAD_VERSION;
  header.set(hexToBytes(payload.id), 1);
  view.setBigUint64(1 + ID_BYTES, BigInt(payload.sentAt));
  view.setUint32(1 + ID_BYTES + 8, body.length);
  return concatBytes(header, body);
}

export function decodeApplicationPayload(bytes: Uint8Array): ApplicationPayload {
  const headerBytes = 1 + ID_BYTES + 8 + 4;
  if (!(bytes instanceof Uint8Array) || bytes.length < headerBytes) throw bad("bytes", "are truncated");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes[0] !== APPLICATION_PAYLOAD_VERSION) throw bad("version", `is ${bytes[0]}, expected ${APPLICATION_PAYLOAD_VERSION}`);
  const id = bytesToHex(bytes.subarray(1, 1 + ID_BYTES));
  const sentAt = view.getBigUint64(1 + ID_BYTES);
  if (sentAt > BigInt(Number.MAX_SAFE_INTEGER)) throw bad("sentAt", "is out of range");
  const length = view.getUint32(1 + ID_BYTES + 8);
  if (length > MAX_BODY_BYTES) throw bad("body", `exceeds ${MAX_BODY_BYTES} bytes`);
  if (bytes.length !== headerBytes + length) throw bad("body", "length does not match");
  let body: string;
  try {
    body = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(headerBytes));
  } catch {
    throw bad("body", "is not UTF-8");
  }
  return { id, sentAt: Number(sentAt), body };
}

/** A fresh payload id (16 random bytes). */
export function newPayloadId(): string {
  return bytesToHex(randomBytes(ID_BYTES));
}

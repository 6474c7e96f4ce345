import { ChatError } from "../errors";
import { bytesToHex, concatBytes, hexToBytes, randomBytes } from "./bytes";

/**
 * What an application message says: a text; the group's name (sent by whoever names the group, and again
 * after each add so that new members learn it, since they cannot read earlier epochs); or a member's wish
 * to leave (RFC 9420 lets no member commit its own removal, so another member commits it).
 */
export const PAYLOAD_KINDS = ["text", "group-name", "leave"] as const;
export type PayloadKind = (typeof PAYLOAD_KINDS)[number];

/**
 * The plaintext inside an MLS application message. `id` lets a receiver drop duplicates as with
 * envelope v1 (MLS itself does not stop the Delivery Service from replaying a message it already
 * fanned out to a device that lost its cursor). Control messages are authenticated by MLS like texts.
 */
export interface ApplicationPayload {
  /** absent means "text" */
  kind?: PayloadKind;
  /** 16 random bytes as 32 lowercase hex characters */
  id: string;
  /** sender's clock, Unix ms */
  sentAt: number;
  /** the text, the group's new name, or empty for "leave" */
  body: string;
}

/** Version 1 (a text, no kind byte) is still read; version 2 adds the kind byte. */
export const APPLICATION_PAYLOAD_VERSION = 2;
export const MAX_GROUP_NAME_BYTES = 128;
export const MAX_BODY_BYTES = 64 * 1024;
const ID_BYTES = 16;

function bad(field: string, why: string): ChatError {
  return new ChatError("ENVELOPE_INVALID", `application payload: ${field} ${why}`, { field });
}

function checkKindBody(kind: PayloadKind, body: Uint8Array): void {
  if (kind === "group-name" && (body.length === 0 || body.length > MAX_GROUP_NAME_BYTES)) throw bad("body", `of a group name must be 1 to ${MAX_GROUP_NAME_BYTES} bytes`);
  if (kind === "leave" && body.length !== 0) throw bad("body", "of a leave must be empty");
}

/**
 * Canonical encoding (version 2): version u8 = 2, kind u8 (0 text, 1 group-name, 2 leave), id[16],
 * sent_at u64 (ms), body<0..2^32-1> as UTF-8 with a u32 length. Fixed layout, one encoding per value.
 * Version 1 is the same without the kind byte, and is always a text.
 */
export function encodeApplicationPayload(payload: ApplicationPayload): Uint8Array {
  const kind = payload.kind ?? "text";
  const kindByte = PAYLOAD_KINDS.indexOf(kind);
  if (kindByte < 0) throw bad("kind", `must be one of ${PAYLOAD_KINDS.join(", ")}`);
  if (typeof payload.id !== "string" || !/^[0-9a-f]{32}$/.test(payload.id)) throw bad("id", "must be 32 lowercase hex characters");
  if (!Number.isSafeInteger(payload.sentAt) || payload.sentAt < 0) throw bad("sentAt", "must be a non-negative integer (ms)");
  if (typeof payload.body !== "string") throw bad("body", "must be a string");
  const body = new TextEncoder().encode(payload.body);
  if (body.length > MAX_BODY_BYTES) throw new ChatError("MESSAGE_TOO_LONG", `body exceeds ${MAX_BODY_BYTES} bytes`, { field: "body" });
  checkKindBody(kind, body);
  const header = new Uint8Array(2 + ID_BYTES + 8 + 4);
  const view = new DataView(header.buffer);
  header[0] = APPLICATION_PAYLOAD_VERSION;
  header[1] = kindByte;
  header.set(hexToBytes(payload.id), 2);
  view.setBigUint64(2 + ID_BYTES, BigInt(payload.sentAt));
  view.setUint32(2 + ID_BYTES + 8, body.length);
  return concatBytes(header, body);
}

export function decodeApplicationPayload(bytes: Uint8Array): ApplicationPayload {
  if (!(bytes instanceof Uint8Array) || bytes.length < 1) throw bad("bytes", "are truncated");
  const version = bytes[0];
  if (version !== 1 && version !== APPLICATION_PAYLOAD_VERSION) throw bad("version", `is ${version}, expected 1 or ${APPLICATION_PAYLOAD_VERSION}`);
  const at = version === 1 ? 1 : 2;
  const headerBytes = at + ID_BYTES + 8 + 4;
  if (bytes.length < headerBytes) throw bad("bytes", "are truncated");
  const kind = version === 1 ? "text" : PAYLOAD_KINDS[bytes[1]];
  if (kind === undefined) throw bad("kind", `${bytes[1]} is unknown`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const id = bytesToHex(bytes.subarray(at, at + ID_BYTES));
  const sentAt = view.getBigUint64(at + ID_BYTES);
  if (sentAt > BigInt(Number.MAX_SAFE_INTEGER)) throw bad("sentAt", "is out of range");
  const length = view.getUint32(at + ID_BYTES + 8);
  if (length > MAX_BODY_BYTES) throw bad("body", `exceeds ${MAX_BODY_BYTES} bytes`);
  if (bytes.length !== headerBytes + length) throw bad("body", "length does not match");
  const bodyBytes = bytes.subarray(headerBytes);
  checkKindBody(kind, bodyBytes);
  let body: string;
  try {
    // ignoreBOM keeps a leading U+FEFF: it is part of the text as sent, not a byte-order mark to drop.
    body = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bodyBytes);
  } catch {
    throw bad("body", "is not UTF-8");
  }
  return { ...(kind === "text" ? {} : { kind }), id, sentAt: Number(sentAt), body };
}

/** A fresh payload id (16 random bytes). */
export function newPayloadId(): string {
  return bytesToHex(randomBytes(ID_BYTES));
}

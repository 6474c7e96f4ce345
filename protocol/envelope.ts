/**
 * Message envelopes, version 1 (pure: no network, disk or clock; the caller passes time, keys and stores).
 *
 * seal: the sender builds the inner message (v, sender, recipient, id, timestamp, senderKeyIndex,
 * recipientKeyIndex, body) and signs it with its identity key as an EIP-191 personal message
 * (https://eips.ethereum.org/EIPS/eip-191, version 0x45: keccak256("\x19Ethereum Signed Message:\n" ||
 * len || text)) over a canonical text (a domain tag and the fields as a fixed-order JSON array), then
 * encrypts {m: inner, s: signature} for the recipient's current public key with ECIES as eth-crypto's
 * `encryptWithPublicKey` does it (./ecies, byte for byte): secp256k1 (SEC 1 §5.1: ephemeral ECDH, SHA-512 as KDF,
 * AES-256-CBC, HMAC-SHA256 over iv || ephemeral key || ciphertext, encrypt-then-MAC).
 * The envelope text is JSON `{"v":1,"c":"0x<hex>"}`, where c is iv (16) || compressed ephemeral public
 * key (33) || mac (32) || AES-CBC ciphertext, as lowercase 0x-prefixed hex like every binary value of the
 * protocol. Nothing outside the ciphertext names the sender, the recipient, the id or the body. Signing
 * inside the encryption hides who signed from the relay. protocol/README.md specifies every byte.
 *
 * open: decrypt with one of this device's keys, parse, and check: the signature recovers to the
 * sender's key at the claimed index (looked up by the caller, who has checked it against the chain);
 * the message is addressed to this user and to the key that decrypted it; the sender equals the relay's
 * authenticated `from`; the id was not seen before (dedup store passed in).
 *
 * `v` lets a forward-secret version 2 follow without a flag day: open() refuses unknown versions.
 */
import { SigningKey, getAddress, hashMessage, recoverAddress } from "ethers";
import { z } from "zod";
import { bytesToHex, hexToBytes, utf8Bytes, utf8Length, utf8Text } from "./bytes";
import { eciesDecrypt, eciesEncrypt, parseEcies, serializeEcies, type EciesCiphertext } from "./ecies";
import { ChatError } from "./errors";
import { normalizePublicKey, publicKeyToAddress, type PublicKeyHex } from "./keys";
import { MessageId, Signature65, Username } from "./wire";

export const ENVELOPE_VERSION = 1;
export const ENVELOPE_SIGNING_DOMAIN = "eth-chat envelope v1";

/** A sane upper bound for one envelope text, whatever the relay announces (16 MiB). */
const MAX_ENVELOPE_CHARS = 16 * 1024 * 1024;

const KeyIndex = z.number().int().min(0).max(2 ** 32);

export const InnerMessageV1 = z.object({
  v: z.literal(1),
  sender: Username,
  recipient: Username,
  id: MessageId,
  /** sender's clock, Unix ms */
  timestamp: z.number().int().min(0).max(2 ** 50),
  senderKeyIndex: KeyIndex,
  recipientKeyIndex: KeyIndex,
  body: z.string(),
});
export type InnerMessageV1 = z.infer<typeof InnerMessageV1>;

const SignedInner = z.object({ m: InnerMessageV1, s: Signature65 });

/** iv (16) + compressed ephemeral key (33) + mac (32) + at least one AES block (16). */
const MIN_CIPHERTEXT_BYTES = 16 + 33 + 32 + 16;

/**
 * `c` as written: 0x-prefixed hex. Reading also accepts it without the prefix, as the first v1 clients
 * wrote it, so that envelopes already waiting in mailboxes and kept in local histories stay readable.
 */
const EnvelopeV1 = z.object({ v: z.literal(1), c: z.string().regex(/^(0x)?([0-9a-fA-F]{2})+$/) });

/** The envelope's `c`: eth-crypto's compact layout (iv || compressed ephemeral key || mac || ciphertext). */
export function encodeCiphertext(encrypted: EciesCiphertext): string {
  return `0x${bytesToHex(serializeEcies(encrypted))}`;
}

/** Parses `c`, with or without 0x; throws ENVELOPE_INVALID when it cannot be the compact layout. */
export function decodeCiphertext(c: string): EciesCiphertext {
  const hex = c.startsWith("0x") ? c.slice(2) : c;
  if (hex.length / 2 < MIN_CIPHERTEXT_BYTES) throw invalid("envelope ciphertext is too short");
  try {
    return parseEcies(hexToBytes(hex));
  } catch {
    throw invalid("envelope ciphertext is malformed");
  }
}

/** The exact text the sender signs (EIP-191 personal message). */
export function innerSigningText(inner: InnerMessageV1): string {
  return `${ENVELOPE_SIGNING_DOMAIN}\n${JSON.stringify([
    inner.v,
    inner.sender,
    inner.recipient,
    inner.id,
    inner.timestamp,
    inner.senderKeyIndex,
    inner.recipientKeyIndex,
    inner.body,
  ])}`;
}

/** keccak256 EIP-191 digest of the inner message. */
export function innerDigest(inner: InnerMessageV1): string {
  return hashMessage(innerSigningText(inner));
}

/** A UTF-16 surrogate without its partner: it has no UTF-8 form, so it cannot survive encryption intact. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function parseInner(value: unknown, field: string): InnerMessageV1 {
  const parsed = InnerMessageV1.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ChatError("BAD_REQUEST", `${field}.${issue.path.join(".")}: ${issue.message}`);
  }
  if (LONE_SURROGATE.test(parsed.data.body)) throw new ChatError("BAD_REQUEST", `${field}.body: not well-formed Unicode (a lone surrogate)`);
  return parsed.data;
}

/** Signs the inner message with the sender's identity key (65-byte r || s || v). */
export function signInner(params: { inner: InnerMessageV1; privateKey: string }): string {
  const inner = parseInner(params.inner, "inner");
  return new SigningKey(params.privateKey).sign(innerDigest(inner)).serialized;
}

/** Deterministic-encryption options, for known-answer tests only. */
export interface SealTestOptions {
  iv: Uint8Array;
  ephemPrivateKey: Uint8Array;
}

/** Signs, then encrypts; returns the envelope text to put in a SendFrame. */
export async function sealEnvelope(params: {
  inner: InnerMessageV1;
  senderPrivateKey: string;
  recipientPublicKey: PublicKeyHex;
  /** tests only: fixed iv and ephemeral key make the output a known-answer vector */
  deterministic?: SealTestOptions;
}): Promise<string> {
  const inner = parseInner(params.inner, "inner");
  const recipientPublicKey = normalizePublicKey(params.recipientPublicKey, "recipientPublicKey");
  const signature = signInner({ inner, privateKey: params.senderPrivateKey });
  const plaintext = JSON.stringify({ m: inner, s: signature });
  const encrypted = eciesEncrypt(hexToBytes(recipientPublicKey), utf8Bytes(plaintext), params.deterministic);
  return JSON.stringify({ v: ENVELOPE_VERSION, c: encodeCiphertext(encrypted) });
}

/** The byte size of the SendFrame that carries an envelope, as the relay measures it. */
export function sendFrameBytes(params: { id: string; to: string; envelope: string }): number {
  return utf8Length(JSON.stringify({ type: "send", id: params.id, to: params.to, envelope: params.envelope }));
}

/**
 * Room the relay needs on top of a SendFrame to deliver it as a MessageFrame (it adds `from` and
 * `receivedAt`): keep this much under maxFrameBytes so that the delivery also fits.
 */
export const DELIVERY_OVERHEAD_BYTES = 128;

/** Throws MESSAGE_TOO_LONG unless the frame carrying `envelope` fits the relay's limit. */
export function assertFitsFrame(params: { id: string; to: string; envelope: string; maxFrameBytes: number }): void {
  const size = sendFrameBytes(params);
  const limit = params.maxFrameBytes - DELIVERY_OVERHEAD_BYTES;
  if (size > limit) {
    throw new ChatError("MESSAGE_TOO_LONG", `message too long: ${size} bytes encrypted, the relay allows ${limit}`, {
      bytes: size,
      limit,
    });
  }
}

/**
 * A rough upper bound of the body's UTF-8 size that can fit, for refusing long bodies before the
 * (slower) encryption: ECIES hex doubles the size; signature, fields and JSON add under 1 KiB.
 */
export function maxBodyBytes(maxFrameBytes: number): number {
  return Math.max(0, Math.floor((maxFrameBytes - DELIVERY_OVERHEAD_BYTES - 1024) / 2));
}

/** Seen message ids, per sender. Implementations persist as the caller sees fit. */
export interface DedupStore {
  has(key: string): boolean | Promise<boolean>;
  add(key: string): void | Promise<void>;
}

export function dedupKey(sender: string, id: string): string {
  return `${sender}/${id}`;
}

export function memoryDedupStore(): DedupStore & { size(): number } {
  const seen = new Set<string>();
  return { has: (key) => seen.has(key), add: (key) => void seen.add(key), size: () => seen.size };
}

/**
 * Returns the key (public key or address) that `username` held at `index`, as checked against the
 * chain by the caller; throws (KEY_MISMATCH, UNKNOWN_USER...) when it cannot vouch for one.
 */
export type SenderKeyLookup = (username: string, index: number) => Promise<PublicKeyHex | string>;

export interface OpenedMessage {
  inner: InnerMessageV1;
  /** the address that signed (the sender's key at inner.senderKeyIndex) */
  signer: string;
}

function invalid(message: string): ChatError {
  return new ChatError("ENVELOPE_INVALID", message);
}

/**
 * Decrypts and verifies an envelope. Throws ENVELOPE_INVALID for anything altered, forged, misaddressed
 * or unreadable, DUPLICATE for an id already seen from that sender, or the lookup's own error.
 */
export async function openEnvelope(params: {
  envelope: string;
  /** the relay's authenticated sender (MessageFrame.from) */
  from: string;
  /** the relay's message id (MessageFrame.id): must equal the signed id */
  frameId?: string;
  /** this user's username */
  me: string;
  /** this device's identity keys, by chain key index; the current one first is fastest */
  privateKeys: { index: number; privateKey: string }[] | (() => AsyncIterable<{ index: number; privateKey: string }>);
  lookupSenderKey: SenderKeyLookup;
  dedup: DedupStore;
}): Promise<OpenedMessage> {
  if (typeof params.envelope !== "string" || params.envelope.length > MAX_ENVELOPE_CHARS) throw invalid("envelope is not a string of sane size");
  let outer: unknown;
  try {
    outer = JSON.parse(params.envelope);
  } catch {
    throw invalid("envelope is not JSON");
  }
  if (typeof outer === "object" && outer !== null && "v" in outer && (outer as { v: unknown }).v !== ENVELOPE_VERSION) {
    throw invalid(`unsupported envelope version ${String((outer as { v: unknown }).v)}`);
  }
  const envelope = EnvelopeV1.safeParse(outer);
  if (!envelope.success) throw invalid("envelope.c must be 0x-prefixed hex of whole bytes");
  const encrypted = decodeCiphertext(envelope.data.c);

  // The recipient key index is inside the ciphertext (so the relay does not see it): try each key.
  // A wrong key or an altered ciphertext fails the HMAC (encrypt-then-MAC), so nothing is parsed.
  let plaintext: string | undefined;
  let decryptedWith = -1;
  const keys = typeof params.privateKeys === "function" ? params.privateKeys() : params.privateKeys;
  for await (const key of keys as AsyncIterable<{ index: number; privateKey: string }>) {
    try {
      plaintext = utf8Text(eciesDecrypt(key.privateKey, encrypted));
      decryptedWith = key.index;
      break;
    } catch {
      // not this key (or altered): try the next
    }
  }
  if (plaintext === undefined) throw invalid("cannot decrypt: altered, or not encrypted to any key of this device");

  let signed: z.infer<typeof SignedInner>;
  try {
    const parsed = SignedInner.safeParse(JSON.parse(plaintext));
    if (!parsed.success) throw new Error();
    signed = parsed.data;
  } catch {
    throw invalid("decrypted message is malformed");
  }
  const inner = signed.m;
  if (inner.recipient !== params.me) throw invalid(`message is addressed to ${inner.recipient}, not to ${params.me}`);
  if (inner.recipientKeyIndex !== decryptedWith) {
    throw invalid(`message names recipient key ${inner.recipientKeyIndex} but was encrypted to key ${decryptedWith}`);
  }
  if (inner.sender !== params.from) throw invalid(`message claims sender ${inner.sender} but the relay says ${params.from}`);
  if (params.frameId !== undefined && params.frameId !== inner.id) throw invalid("message id differs from the relay's id");

  let recovered: string;
  try {
    recovered = recoverAddress(innerDigest(inner), signed.s);
  } catch {
    throw invalid("signature is malformed");
  }
  const expectedKey = await params.lookupSenderKey(inner.sender, inner.senderKeyIndex);
  const expected = /^0x[0-9a-fA-F]{40}$/.test(expectedKey) ? getAddress(expectedKey) : publicKeyToAddress(expectedKey);
  if (recovered !== expected) {
    throw invalid(`signature does not match ${inner.sender}'s key ${inner.senderKeyIndex}`);
  }

  const key = dedupKey(inner.sender, inner.id);
  if (await params.dedup.has(key)) throw new ChatError("DUPLICATE", `duplicate message ${inner.id} from ${inner.sender}`);
  await params.dedup.add(key);
  return { inner, signer: recovered };
}

/**
 * Messages signed with a key that was later replaced are accepted only when the relay received them before
 * the replacement landed on chain, plus this allowance for clock skew between the relay and block time.
 */
export const SUPERSEDED_KEY_GRACE_MS = 60_000;

/**
 * Whether the sender's signing key still vouches for a message that reached the relay at `receivedAt`.
 * A replaced key may have been lost or stolen (the usual reason to rotate or reset), so after its
 * replacement is on chain it signs nothing new. Returns the replacing record when the message is late.
 */
export function supersededAtReceipt(params: {
  senderKeyIndex: number;
  /** the sender's chain-checked key history; timestamps are block times in Unix seconds */
  history: readonly { index: number; kind: string; timestamp: number }[];
  /** the relay's receive time, Unix ms */
  receivedAt: number;
}): { index: number; kind: string; timestamp: number } | undefined {
  const successor = params.history.find((key) => key.index === params.senderKeyIndex + 1);
  if (successor && params.receivedAt > successor.timestamp * 1000 + SUPERSEDED_KEY_GRACE_MS) return successor;
  return undefined;
}

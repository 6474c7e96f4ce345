/**
 * Several devices per user: linking a new device, approving it, a device logging in with its own Ed25519
 * key (never the identity key), listing and revoking devices, and re-authorised credentials after a key
 * rotation. Zod schemas of the routes, the short link code, and the exact text a device signs to log in.
 * Documented in protocol/README.md ("Devices", under Messages v2). Pure: Uint8Array, no Buffer.
 */
import { z } from "zod";
import { MAX_DEVICE_IDENTITY_BYTES } from "./mls/device-identity";
import { bytesToHex } from "./mls/bytes";
import { sha256 } from "./mls/sha256";
import { Hex32, Username } from "./wire";
import { base64Of, DeviceId } from "./wire-v2";

/**
 * Crockford's base32 alphabet (https://www.crockford.com/base32.html): no I, L, O or U, so a code read
 * aloud or typed from a screen has no look-alike letters; 8 characters carry 40 bits.
 */
export const DEVICE_LINK_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
export const DEVICE_LINK_CODE_LENGTH = 8;
const CODE_PATTERN = /^[0-9ABCDEFGHJKMNPQRSTVWXYZ]{8}$/;

/** Bounds of linking; the lifetime of a link request is a relay setting (DEVICE_LINK_TTL_SECONDS, default 10 min). */
export const DEVICE_LINK_LIMITS = {
  /** link requests one user may have waiting at once */
  pendingPerUser: 5,
  nameMaxLength: 64,
} as const;

export const ED25519_PUBLIC_KEY_BYTES = 32;
export const ED25519_SIGNATURE_BYTES = 64;

/**
 * A code as typed by a person, in its one canonical form: upper case, without spaces or dashes, with the
 * letters Crockford maps onto digits (I and L are 1, O is 0). Returns null when it is not a code.
 */
export function normalizeDeviceLinkCode(text: string): string | null {
  if (typeof text !== "string" || text.length > 32) return null;
  const code = text
    .toUpperCase()
    .replace(/[\s-]/g, "")
    .replace(/[IL]/g, "1")
    .replace(/O/g, "0");
  return CODE_PATTERN.test(code) ? code : null;
}

/** A code from 5 random bytes (40 bits), one alphabet character per 5 bits. */
export function deviceLinkCodeFromBytes(bytes: Uint8Array): string {
  if (!(bytes instanceof Uint8Array) || bytes.length !== 5) throw new TypeError("a link code takes exactly 5 random bytes");
  let bits = 0n;
  for (const byte of bytes) bits = (bits << 8n) | BigInt(byte);
  let code = "";
  for (let i = DEVICE_LINK_CODE_LENGTH - 1; i >= 0; i--) code += DEVICE_LINK_CODE_ALPHABET[Number((bits >> BigInt(5 * i)) & 31n)];
  return code;
}

/**
 * What a person compares between the new device and the approving one: SHA-256 of the device's Ed25519
 * public key, first 16 bytes as hex in groups of four (the same shape as identity key fingerprints).
 */
export function deviceFingerprint(devicePublicKey: Uint8Array): string {
  if (!(devicePublicKey instanceof Uint8Array) || devicePublicKey.length !== ED25519_PUBLIC_KEY_BYTES) {
    throw new TypeError("a device fingerprint takes a 32-byte Ed25519 public key");
  }
  return bytesToHex(sha256(devicePublicKey).subarray(0, 16)).match(/.{4}/g)!.join(" ");
}

/**
 * The text a device signs with its Ed25519 MLS signature key (RFC 8032, pure Ed25519 over the UTF-8
 * bytes of this text) to log in. The first line keeps it from ever being taken for a device authorisation
 * or an identity-key login (those are EIP-191 texts signed by the secp256k1 key); the challenge makes it
 * single use; chain id and contract pin the deployment; the device id binds the session to one device.
 */
export function deviceLoginText(params: { username: string; challenge: string; chainId: string | bigint; contract: string; deviceId: string }): string {
  return [
    "eth-chat device login",
    "version: 1",
    `username: ${params.username}`,
    `device id: ${params.deviceId}`,
    `challenge: ${params.challenge.toLowerCase()}`,
    `chain id: ${params.chainId.toString()}`,
    `contract: ${params.contract.toLowerCase()}`,
  ].join("\n");
}

const hexBytes = (bytes: number) => z.string().regex(new RegExp(`^[0-9a-f]{${bytes * 2}}$`), `expected ${bytes} bytes as lowercase hex`);
/** An Ed25519 public key (RFC 8032 §5.1.5), 32 bytes as 64 lowercase hex characters. */
export const DevicePublicKeyHex = hexBytes(ED25519_PUBLIC_KEY_BYTES);
/** An Ed25519 signature (RFC 8032 §5.1.6), 64 bytes as 128 lowercase hex characters. */
export const Ed25519SignatureHex = hexBytes(ED25519_SIGNATURE_BYTES);
/** A device credential's identity bytes (protocol/mls/device-identity.ts) as standard base64. */
export const DeviceCredentialBase64 = base64Of(MAX_DEVICE_IDENTITY_BYTES);
export const DeviceName = z
  .string()
  .min(1)
  .max(DEVICE_LINK_LIMITS.nameMaxLength)
  .regex(/^[^\p{Cc}\p{Cf}]+$/u, "no control or format characters");
export const DeviceLinkCode = z.string().regex(CODE_PATTERN, `expected ${DEVICE_LINK_CODE_LENGTH} characters of ${DEVICE_LINK_CODE_ALPHABET}`);
/** 32 random bytes as 64 lowercase hex characters: only the new device knows it. */
export const DeviceLinkSecret = hexBytes(32);
const Time = z.number().int().nonnegative();

/** POST /v2/device-links (no session: the new device has none) */
export const CreateDeviceLinkRequest = z.object({ username: Username, devicePublicKey: DevicePublicKeyHex, deviceName: DeviceName.optional() });
export const CreateDeviceLinkResponse = z.object({ code: DeviceLinkCode, linkSecret: DeviceLinkSecret, expiresAt: Time });

/** GET /v2/device-links/:code (a session of the user the request names) */
export const DeviceLinkView = z.object({
  code: DeviceLinkCode,
  username: Username,
  devicePublicKey: DevicePublicKeyHex,
  fingerprint: z.string(),
  deviceName: DeviceName.nullable(),
  createdAt: Time,
  expiresAt: Time,
});

/** POST /v2/device-links/:code/approve: the new device's credential, signed by the user's current identity key */
export const ApproveDeviceLinkRequest = z.object({ credential: DeviceCredentialBase64 });

/** GET /v2/device-links/status?secret=<linkSecret> (no session) */
export const DeviceLinkStatusResponse = z.discriminatedUnion("status", [
  z.object({ status: z.literal("pending"), expiresAt: Time }),
  z.object({ status: z.literal("approved"), deviceId: DeviceId, keyIndex: z.number().int().nonnegative(), credential: DeviceCredentialBase64 }),
  /** expired, or never existed: the new device starts again */
  z.object({ status: z.literal("expired") }),
]);

/** One device as GET /v2/devices lists it (and as approval answers it). */
export const DeviceView = z.object({
  deviceId: DeviceId,
  name: DeviceName.nullable(),
  devicePublicKey: DevicePublicKeyHex,
  fingerprint: z.string(),
  /** index of the identity key that signed its newest credential */
  keyIndex: z.number().int().nonnegative(),
  linkedAt: Time,
  lastSeenAt: Time.nullable(),
  revokedAt: Time.nullable(),
});
export const DevicesResponse = z.object({ devices: z.array(DeviceView), maxDevices: z.number().int().positive() });

/** POST /v2/devices/self: the device that holds the identity key registers its own MLS key (X-Device-Id) */
export const RegisterOwnDeviceRequest = z.object({ devicePublicKey: DevicePublicKeyHex, credential: DeviceCredentialBase64, deviceName: DeviceName.optional() });

/** POST /v2/devices/:deviceId/credential: a newer credential for a kept device (after a rotation) */
export const PutDeviceCredentialRequest = z.object({ credential: DeviceCredentialBase64 });
/** GET /v2/devices/self/credential, and the answer of POST /v2/devices/:deviceId/credential */
export const DeviceCredentialResponse = z.object({ deviceId: DeviceId, keyIndex: z.number().int().nonnegative(), credential: DeviceCredentialBase64 });

/** POST /v2/devices/:deviceId/revoke */
export const RevokeDeviceResponse = z.object({ deviceId: DeviceId, revokedAt: Time });

/**
 * POST /v1/login/device, after POST /v1/login/challenge: the device proves its Ed25519 key over
 * deviceLoginText(); `credential` is the newest credential it holds.
 */
export const DeviceLoginRequest = z.object({
  username: Username,
  deviceId: DeviceId,
  credential: DeviceCredentialBase64,
  challenge: Hex32,
  signature: Ed25519SignatureHex,
});
/**
 * The session, bound to the device and to the key index of the credential that stood. `credential` is the
 * relay's newest for this device when it is newer than the one sent (a device re-authorised after a
 * rotation while it was away learns its new credential here).
 */
export const DeviceLoginResponse = z.object({
  token: z.string(),
  expiresAt: Time,
  keyIndex: z.number().int().nonnegative(),
  deviceId: DeviceId,
  credential: DeviceCredentialBase64,
});

export type CreateDeviceLinkRequest = z.infer<typeof CreateDeviceLinkRequest>;
export type CreateDeviceLinkResponse = z.infer<typeof CreateDeviceLinkResponse>;
export type DeviceLinkView = z.infer<typeof DeviceLinkView>;
export type DeviceLinkStatusResponse = z.infer<typeof DeviceLinkStatusResponse>;
export type DeviceView = z.infer<typeof DeviceView>;
export type DevicesResponse = z.infer<typeof DevicesResponse>;
export type DeviceCredentialResponse = z.infer<typeof DeviceCredentialResponse>;
export type DeviceLoginRequest = z.infer<typeof DeviceLoginRequest>;
export type DeviceLoginResponse = z.infer<typeof DeviceLoginResponse>;

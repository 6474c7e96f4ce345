import { SigningKey, computeAddress, getBytes, hexlify, sha256 } from "ethers";
import { ChatError } from "./errors";

/**
 * Public keys travel as 0x-prefixed hex of the 64-byte uncompressed secp256k1 point without the 0x04
 * prefix (SEC 1 §2.3.3 minus the prefix byte), as the contract stores them in events.
 */
export type PublicKeyHex = string;

const PUBLIC_KEY_PATTERN = /^0x[0-9a-fA-F]{128}$/;

/** Accepts 64-byte (with or without 0x) or 65-byte 0x04-prefixed keys; returns the canonical form. */
export function normalizePublicKey(value: unknown, field = "publicKey"): PublicKeyHex {
  if (typeof value !== "string") throw new ChatError("INVALID_PUBLIC_KEY", `${field} must be a hex string`);
  let hex = value.startsWith("0x") ? value : `0x${value}`;
  if (/^0x04[0-9a-fA-F]{128}$/.test(hex)) hex = `0x${hex.slice(4)}`;
  if (!PUBLIC_KEY_PATTERN.test(hex)) throw new ChatError("INVALID_PUBLIC_KEY", `${field} must be 64 bytes of hex`);
  try {
    // Rejects points that are not on the curve.
    SigningKey.computePublicKey(`0x04${hex.slice(2)}`, false);
  } catch {
    throw new ChatError("INVALID_PUBLIC_KEY", `${field} is not a point on secp256k1`);
  }
  return hex.toLowerCase();
}

/** The 64-byte public key of a private key. */
export function publicKeyOf(privateKey: string): PublicKeyHex {
  const uncompressed = SigningKey.computePublicKey(privateKey, false);
  return `0x${uncompressed.slice(4)}`.toLowerCase();
}

/** The Ethereum address of a public key: keccak256(x || y)[12:] (Ethereum yellow paper, eq. 284). */
export function publicKeyToAddress(publicKey: PublicKeyHex): string {
  return computeAddress(`0x04${normalizePublicKey(publicKey).slice(2)}`);
}

/** A short human-comparable fingerprint: SHA-256 of the key, first 16 bytes, grouped. */
export function keyFingerprint(publicKey: PublicKeyHex): string {
  const digest = getBytes(sha256(getBytes(normalizePublicKey(publicKey))));
  const hex = hexlify(digest.slice(0, 16)).slice(2);
  return hex.match(/.{4}/g)!.join(" ");
}

/** Bytes of a public key, for hashing. */
export function publicKeyBytes(publicKey: PublicKeyHex): Uint8Array {
  return getBytes(normalizePublicKey(publicKey));
}


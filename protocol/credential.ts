/**
 * Credentials. The client derives `credential = argon2id(password, salt)` (RFC 9106) with a salt bound
 * to the username, chain and contract (see deriveCredential in this folder, written on the client side);
 * the password never leaves the client. The relay then stores on chain only
 * `keccak256(HMAC-SHA256(pepper, credential))` (RFC 2104 HMAC, FIPS 180-4 SHA-256), so that whoever reads
 * the chain cannot test password guesses offline without the relay's pepper.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { getBytes, keccak256 } from "ethers";
import { ChatError } from "./errors";

/** A credential is 32 bytes, sent as 0x-prefixed hex. */
export const CREDENTIAL_PATTERN = /^0x[0-9a-fA-F]{64}$/;

export function assertCredential(value: unknown, field = "credential"): string {
  if (typeof value !== "string" || !CREDENTIAL_PATTERN.test(value)) {
    throw new ChatError("BAD_REQUEST", `${field} must be 32 bytes of hex`);
  }
  return value.toLowerCase();
}

/** The on-chain credential hash: keccak256(HMAC-SHA256(pepper, credential)). */
export function pepperCredential(params: { pepper: Uint8Array; credential: string }): string {
  const mac = createHmac("sha256", params.pepper).update(getBytes(assertCredential(params.credential))).digest();
  return keccak256(mac);
}

/** Constant-time comparison of two 32-byte hex hashes. */
export function credentialHashesEqual(a: string, b: string): boolean {
  const left = getBytes(a);
  const right = getBytes(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

/**
 * Credentials. The client derives `credential = argon2id(password, salt)` (RFC 9106) with a salt bound
 * to the username, chain and contract (see deriveCredential in this folder, written on the client side);
 * the password never leaves the client. The relay then stores on chain only
 *
 *   keccak256(HMAC-SHA256(pepper, len32(username) || username || credential))
 *
 * (RFC 2104 HMAC, FIPS 180-4 SHA-256; len32 = the username's UTF-8 byte length as 4 bytes big-endian),
 * so that whoever reads the chain cannot test password guesses offline without the relay's pepper, and
 * a hash the relay computes for one name is worthless as a guess against another name.
 */
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { getBytes, keccak256 } from "ethers";
import { concatBytes, constantTimeEqual, uint32BE, utf8Bytes } from "./bytes";
import { ChatError } from "./errors";
import { isValidUsername } from "./username";

/** A credential is 32 bytes, sent as 0x-prefixed hex. */
export const CREDENTIAL_PATTERN = /^0x[0-9a-fA-F]{64}$/;

export function assertCredential(value: unknown, field = "credential"): string {
  if (typeof value !== "string" || !CREDENTIAL_PATTERN.test(value)) {
    throw new ChatError("BAD_REQUEST", `${field} must be 32 bytes of hex`);
  }
  return value.toLowerCase();
}

/** The HMAC's message: the length prefix keeps (username, credential) pairs from colliding. */
function pepperInput(username: string, credential: string): Uint8Array {
  const name = utf8Bytes(username);
  return concatBytes(uint32BE(name.length), name, getBytes(assertCredential(credential)));
}

/** The on-chain credential hash of `username`: keccak256(HMAC-SHA256(pepper, len32(username) || username || credential)). */
export function pepperCredential(params: { pepper: Uint8Array; username: string; credential: string }): string {
  if (!isValidUsername(params.username)) throw new ChatError("INVALID_USERNAME", "invalid username");
  const mac = hmac(sha256, params.pepper, pepperInput(params.username, params.credential));
  return keccak256(mac);
}

/** Constant-time comparison of two 32-byte hex hashes. */
export function credentialHashesEqual(a: string, b: string): boolean {
  const left = getBytes(a);
  const right = getBytes(b);
  return constantTimeEqual(left, right);
}

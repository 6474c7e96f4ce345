/**
 * SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) for the MLS suite, from @noble/hashes (audited, widely
 * used; it runs alike in Node and in browsers). Synchronous on purpose: WebCrypto's HMAC needs a key import
 * per call, and a message derives several secret-tree keys (RFC 9420 §9).
 */
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";

export const SHA256_BYTES = 32;

export function sha256(data: Uint8Array): Uint8Array {
  return nobleSha256(data);
}

export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  return hmac(nobleSha256, key, data);
}

import { expand, extract } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import {
  defaultCryptoProvider,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  type CiphersuiteImpl,
  type CiphersuiteName,
  type Hash,
  type Kdf,
} from "ts-mls";

/**
 * The one cipher suite of the project: suite 1, the mandatory-to-implement suite of RFC 9420 §17.1
 * (X25519 HPKE, AES-128-GCM, SHA-256, Ed25519). It needs no optional peer package of ts-mls and runs in
 * a browser; one suite means no downgrade negotiation to get wrong.
 */
export const MLS_CIPHER_SUITE_NAME = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519" satisfies CiphersuiteName;
/** Its IANA code point (RFC 9420 §17.1), carried in device credentials. */
export const MLS_CIPHER_SUITE_ID = 1;

/** Constant-time comparison, so a MAC check leaks nothing about where a forged tag differs. */
function equalTags(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * SHA-256 (FIPS 180-4), HMAC (RFC 2104) and HKDF (RFC 5869) from @noble/hashes, synchronous. The library's
 * default goes through WebCrypto with a key import per call, which costs about 0.3 ms each here, and a
 * message derives several secret-tree keys (RFC 9420 §9): the same functions, the same bytes, far less
 * time. AEAD, HPKE and Ed25519 stay the library's.
 */
const sha256Hash: Hash = {
  async digest(data) {
    return sha256(data);
  },
  async mac(key, data) {
    return hmac(sha256, key, data);
  },
  async verifyMac(key, mac, data) {
    return equalTags(hmac(sha256, key, data), mac);
  },
};

const hkdfSha256: Kdf = {
  async extract(salt, ikm) {
    return extract(sha256, ikm, salt);
  },
  async expand(prk, info, length) {
    return expand(sha256, prk, info, length);
  },
  size: 32,
};

let cached: Promise<CiphersuiteImpl> | undefined;

/** The implementation of the suite, built once per process (it holds no secrets). */
export function mlsCipherSuite(): Promise<CiphersuiteImpl> {
  cached ??= getCiphersuiteImpl(getCiphersuiteFromName(MLS_CIPHER_SUITE_NAME), defaultCryptoProvider).then((impl) => ({
    ...impl,
    hash: sha256Hash,
    kdf: hkdfSha256,
  }));
  return cached;
}

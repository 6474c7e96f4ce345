import {
  defaultCryptoProvider,
  getCiphersuiteFromName,
  type Ciphersuite,
  type CiphersuiteImpl,
  type CiphersuiteName,
  type CryptoProvider,
  type Hash,
  type Kdf,
} from "ts-mls";
import { hmacSha256, sha256, SHA256_BYTES } from "./sha256";
import { webCryptoEd25519 } from "./webcrypto-ed25519";

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
 * SHA-256 and HMAC-SHA256, synchronous (./sha256). The library's default goes through WebCrypto with a
 * key import per call, about 0.3 ms each here, and a message derives several secret-tree keys.
 */
const sha256Hash: Hash = {
  async digest(data) {
    return sha256(data);
  },
  async mac(key, data) {
    return hmacSha256(key, data);
  },
  async verifyMac(key, mac, data) {
    return equalTags(hmacSha256(key, data), mac);
  },
};

/** Most output HKDF-Expand may give (RFC 5869 §2.3: 255 blocks). */
const MAX_EXPAND_BYTES = 255 * SHA256_BYTES;

/** HKDF-SHA256 (RFC 5869 §2.2, §2.3) over the HMAC above. */
const hkdfSha256: Kdf = {
  async extract(salt, ikm) {
    // RFC 5869 §2.2: an absent salt is HashLen zeros, which HMAC pads to the same block as an empty key.
    return hmacSha256(salt, ikm);
  },
  async expand(prk, info, length) {
    if (!Number.isInteger(length) || length < 0 || length > MAX_EXPAND_BYTES) throw new Error(`HKDF-Expand: invalid length ${length}`);
    const out = new Uint8Array(length);
    const input = new Uint8Array(SHA256_BYTES + info.length + 1);
    let previous: Uint8Array = new Uint8Array(0);
    for (let block = 1, offset = 0; offset < length; block++, offset += SHA256_BYTES) {
      // T(i) = HMAC(PRK, T(i-1) | info | i)
      const start = SHA256_BYTES - previous.length;
      input.set(previous, start);
      input.set(info, SHA256_BYTES);
      input[input.length - 1] = block;
      previous.fill(0);
      previous = hmacSha256(prk, input.subarray(start));
      out.set(previous.subarray(0, Math.min(SHA256_BYTES, length - offset)), offset);
    }
    previous.fill(0);
    input.fill(0);
    return out;
  },
  size: SHA256_BYTES,
};

/**
 * The project's ts-mls crypto provider: the library's default (WebCrypto AES-GCM and HPKE) with the
 * hash, MAC, KDF and signature replaced by the faster equivalents above, for suite 1 only. Every
 * replacement computes the same function: states, keys and messages interoperate with the default.
 */
export const mlsCryptoProvider: CryptoProvider = {
  async getCiphersuiteImpl(cs: Ciphersuite): Promise<CiphersuiteImpl> {
    if (cs.name !== MLS_CIPHER_SUITE_NAME) throw new Error(`unsupported MLS cipher suite ${cs.name}`);
    const impl = await defaultCryptoProvider.getCiphersuiteImpl(cs);
    return { ...impl, hash: sha256Hash, kdf: hkdfSha256, signature: webCryptoEd25519() };
  },
};

let cached: Promise<CiphersuiteImpl> | undefined;

/** The implementation of the suite, built once per process (it holds no secrets). */
export function mlsCipherSuite(): Promise<CiphersuiteImpl> {
  cached ??= mlsCryptoProvider.getCiphersuiteImpl(getCiphersuiteFromName(MLS_CIPHER_SUITE_NAME));
  return cached;
}

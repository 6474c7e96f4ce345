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
import { equalBytes } from "@noble/ciphers/utils.js"; // constant time: a forged tag leaks nothing
import { expand as hkdfExpand, extract as hkdfExtract } from "@noble/hashes/hkdf.js";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
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
    return equalBytes(hmacSha256(key, data), mac);
  },
};

/** HKDF-SHA256 (RFC 5869), @noble/hashes' extract and expand. */
const hkdfSha256: Kdf = {
  async extract(salt, ikm) {
    return hkdfExtract(nobleSha256, ikm, salt);
  },
  async expand(prk, info, length) {
    return hkdfExpand(nobleSha256, prk, info, length);
  },
  size: SHA256_BYTES,
};

/**
 * The project's ts-mls crypto provider: the library's default (WebCrypto AES-GCM and HPKE) with the
 * hash, MAC and KDF from @noble/hashes and the signature with kept WebCrypto keys (faster), for suite 1 only. Every
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

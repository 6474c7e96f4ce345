import type { Signature } from "ts-mls";
import { bytesEqual, bytesToHex } from "./bytes";
import { sha256 } from "./sha256";

/**
 * Ed25519 (RFC 8032) for MLS signatures through WebCrypto (Node >= 20 and current browsers), with the
 * imported keys kept. The library's default imports the key on every call; importing a PKCS#8 private
 * key costs about ten signatures here, and every application message is signed (RFC 9420 §6.1), so
 * that import was the largest single cost of a seal. Same algorithm, same bytes: keys and signatures
 * are interchangeable with the default's.
 */

/** PKCS#8 (RFC 8410 §7) of a raw 32-byte Ed25519 private key, the only private format WebCrypto imports. */
const PKCS8_ED25519_PREFIX = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);
const RAW_PRIVATE_KEY_BYTES = 32;
const PUBLIC_KEY_BYTES = 32;
const SIGNATURE_BYTES = 64;
/** Peers whose verification keys are kept at once: a few groups' worth; older ones are imported again. */
const MAX_CACHED_PUBLIC_KEYS = 1024;

function pkcs8Of(signKey: Uint8Array): Uint8Array {
  if (signKey.length !== RAW_PRIVATE_KEY_BYTES) return signKey; // already PKCS#8, as WebCrypto's keygen exports
  const out = new Uint8Array(PKCS8_ED25519_PREFIX.length + RAW_PRIVATE_KEY_BYTES);
  out.set(PKCS8_ED25519_PREFIX);
  out.set(signKey, PKCS8_ED25519_PREFIX.length);
  return out;
}

// WebCrypto's types from the global `crypto` (no DOM library and no node:crypto import here).
type WebCryptoSubtle = typeof globalThis.crypto.subtle;
type CryptoKey = Awaited<ReturnType<WebCryptoSubtle["importKey"]>>;
type CryptoKeyPair = Awaited<ReturnType<WebCryptoSubtle["generateKey"]>> & { publicKey: CryptoKey; privateKey: CryptoKey };

/**
 * Private keys by the array that holds them. The entry keeps a digest of the bytes, not a copy, so no
 * extra copy of the secret lives here, and a changed or wiped array is imported again instead of
 * signing with stale key material. A WeakMap: the entry goes when the state holding the array goes.
 */
const signingKeys = new WeakMap<Uint8Array, { digest: Uint8Array; key: Promise<CryptoKey> }>();
const verifyingKeys = new Map<string, Promise<CryptoKey>>();

function subtleCrypto(): WebCryptoSubtle {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) throw new Error("WebCrypto (crypto.subtle) is not available");
  return subtle;
}

function signingKey(signKey: Uint8Array): Promise<CryptoKey> {
  const digest = sha256(signKey);
  const cached = signingKeys.get(signKey);
  if (cached && bytesEqual(cached.digest, digest)) return cached.key;
  const pkcs8 = pkcs8Of(signKey);
  const key = subtleCrypto().importKey("pkcs8", pkcs8 as Uint8Array<ArrayBuffer>, "Ed25519", false, ["sign"]);
  if (pkcs8 !== signKey) key.finally(() => pkcs8.fill(0)).catch(() => undefined);
  const entry = { digest, key };
  signingKeys.set(signKey, entry);
  key.catch(() => {
    if (signingKeys.get(signKey) === entry) signingKeys.delete(signKey);
  });
  return key;
}

function verifyingKey(publicKey: Uint8Array): Promise<CryptoKey> {
  const id = bytesToHex(publicKey);
  const cached = verifyingKeys.get(id);
  if (cached) {
    // Most recently used last, so that the oldest entry is the first one evicted.
    verifyingKeys.delete(id);
    verifyingKeys.set(id, cached);
    return cached;
  }
  const key = subtleCrypto().importKey("raw", publicKey.slice() as Uint8Array<ArrayBuffer>, "Ed25519", false, ["verify"]);
  verifyingKeys.set(id, key);
  key.catch(() => {
    if (verifyingKeys.get(id) === key) verifyingKeys.delete(id);
  });
  if (verifyingKeys.size > MAX_CACHED_PUBLIC_KEYS) verifyingKeys.delete(verifyingKeys.keys().next().value!);
  return key;
}

/** The MLS signature scheme of cipher suite 1 over WebCrypto's Ed25519, keys imported once. */
export function webCryptoEd25519(): Signature {
  return {
    async sign(signKey, message) {
      const key = await signingKey(signKey);
      return new Uint8Array(await subtleCrypto().sign("Ed25519", key, message as Uint8Array<ArrayBuffer>));
    },
    async verify(publicKey, message, signature) {
      // Wrong sizes or a key WebCrypto cannot import are a failed verification, never an exception.
      if (publicKey.length !== PUBLIC_KEY_BYTES || signature.length !== SIGNATURE_BYTES) return false;
      let key: CryptoKey;
      try {
        key = await verifyingKey(publicKey);
      } catch {
        return false;
      }
      return subtleCrypto().verify("Ed25519", key, signature as Uint8Array<ArrayBuffer>, message as Uint8Array<ArrayBuffer>);
    },
    async keygen() {
      const pair = (await subtleCrypto().generateKey("Ed25519", true, ["sign", "verify"])) as CryptoKeyPair;
      const publicKey = new Uint8Array(await subtleCrypto().exportKey("raw", pair.publicKey));
      const signKey = new Uint8Array(await subtleCrypto().exportKey("pkcs8", pair.privateKey));
      return { publicKey, signKey };
    },
  };
}

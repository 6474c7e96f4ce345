/**
 * ECIES over secp256k1 exactly as eccrypto and eth-crypto do it, so that envelopes v1 written by either
 * open here and the other way round, byte for byte (SEC 1 §5.1 in eccrypto's variant):
 *   shared  = x-coordinate of (ephemeral secret key · recipient public key), 32 bytes
 *   k       = SHA-512(shared); encryption key = k[0..32), MAC key = k[32..64)
 *   c       = AES-256-CBC(encryption key, iv, PKCS#7-padded plaintext)
 *   mac     = HMAC-SHA256(MAC key, iv || uncompressed ephemeral public key (65) || c)
 * The compact layout (eth-crypto's `cipher.stringify`) is iv (16) || compressed ephemeral key (33) || mac (32) || c.
 * Built from @noble/curves, @noble/ciphers and @noble/hashes (audited, no Node-only code).
 */
import { cbc } from "@noble/ciphers/aes.js";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { concatBytes, constantTimeEqual, hexToBytes, randomBytes } from "./bytes";

export const ECIES_IV_BYTES = 16;
export const ECIES_COMPRESSED_KEY_BYTES = 33;
export const ECIES_MAC_BYTES = 32;
const AES_BLOCK_BYTES = 16;

/** One ECIES ciphertext, its parts as bytes; the ephemeral key uncompressed (0x04 || x || y), as the MAC covers it. */
export interface EciesCiphertext {
  iv: Uint8Array;
  ephemPublicKey: Uint8Array;
  mac: Uint8Array;
  ciphertext: Uint8Array;
}

/** Fixed iv and ephemeral secret key: for known-answer tests only (reusing them breaks confidentiality). */
export interface EciesDeterministicOptions {
  iv: Uint8Array;
  ephemPrivateKey: Uint8Array;
}

function derivedKeys(secretKey: Uint8Array, publicKey: Uint8Array): { encryptionKey: Uint8Array; macKey: Uint8Array } {
  const shared = secp256k1.getSharedSecret(secretKey, publicKey, true).subarray(1);
  const k = sha512(shared);
  return { encryptionKey: k.subarray(0, 32), macKey: k.subarray(32) };
}

function macOf(macKey: Uint8Array, parts: { iv: Uint8Array; ephemPublicKey: Uint8Array; ciphertext: Uint8Array }): Uint8Array {
  return hmac(sha256, macKey, concatBytes(parts.iv, parts.ephemPublicKey, parts.ciphertext));
}

/** The recipient's key as 0x04-prefixed uncompressed bytes, from 64 raw bytes (x || y) or any SEC 1 encoding. */
function recipientPoint(publicKey: Uint8Array): Uint8Array {
  const sec1 = publicKey.length === 64 ? concatBytes(new Uint8Array([4]), publicKey) : publicKey;
  // fromBytes checks that the point is on the curve: an invalid key must not leak the ephemeral secret.
  return secp256k1.Point.fromBytes(sec1).toBytes(false);
}

/** Encrypts `plaintext` to a secp256k1 public key (64 raw bytes, or SEC 1 compressed/uncompressed). */
export function eciesEncrypt(publicKey: Uint8Array, plaintext: Uint8Array, deterministic?: EciesDeterministicOptions): EciesCiphertext {
  const recipient = recipientPoint(publicKey);
  const ephemPrivateKey = deterministic ? deterministic.ephemPrivateKey : secp256k1.utils.randomSecretKey();
  if (!secp256k1.utils.isValidSecretKey(ephemPrivateKey)) throw new RangeError("ephemeral secret key is not a valid secp256k1 scalar");
  const iv = deterministic ? deterministic.iv : randomBytes(ECIES_IV_BYTES);
  if (iv.length !== ECIES_IV_BYTES) throw new RangeError("iv must be 16 bytes");
  const ephemPublicKey = secp256k1.getPublicKey(ephemPrivateKey, false);
  const { encryptionKey, macKey } = derivedKeys(ephemPrivateKey, recipient);
  const ciphertext = cbc(encryptionKey, iv).encrypt(plaintext);
  return { iv: iv.slice(), ephemPublicKey, mac: macOf(macKey, { iv, ephemPublicKey, ciphertext }), ciphertext };
}

/**
 * Checks the MAC (constant time), then decrypts. Throws on a wrong key or any altered byte
 * (encrypt-then-MAC: nothing is decrypted before the MAC matches).
 */
export function eciesDecrypt(privateKey: Uint8Array | string, encrypted: EciesCiphertext): Uint8Array {
  const secretKey = typeof privateKey === "string" ? hexToBytes(privateKey) : privateKey;
  const { encryptionKey, macKey } = derivedKeys(secretKey, encrypted.ephemPublicKey);
  if (!constantTimeEqual(macOf(macKey, encrypted), encrypted.mac)) throw new Error("bad MAC");
  return cbc(encryptionKey, encrypted.iv).decrypt(encrypted.ciphertext);
}

/** iv || compressed ephemeral key || mac || ciphertext. */
export function serializeEcies(encrypted: EciesCiphertext): Uint8Array {
  const compressed = secp256k1.Point.fromBytes(encrypted.ephemPublicKey).toBytes(true);
  return concatBytes(encrypted.iv, compressed, encrypted.mac, encrypted.ciphertext);
}

/** Parses the compact layout; throws when it is too short or the ephemeral key is not a curve point. */
export function parseEcies(bytes: Uint8Array): EciesCiphertext {
  const headerBytes = ECIES_IV_BYTES + ECIES_COMPRESSED_KEY_BYTES + ECIES_MAC_BYTES;
  if (bytes.length < headerBytes + AES_BLOCK_BYTES) throw new RangeError("ECIES ciphertext is too short");
  const compressed = bytes.subarray(ECIES_IV_BYTES, ECIES_IV_BYTES + ECIES_COMPRESSED_KEY_BYTES);
  return {
    iv: bytes.slice(0, ECIES_IV_BYTES),
    ephemPublicKey: secp256k1.Point.fromBytes(compressed).toBytes(false),
    mac: bytes.slice(ECIES_IV_BYTES + ECIES_COMPRESSED_KEY_BYTES, headerBytes),
    ciphertext: bytes.slice(headerBytes),
  };
}

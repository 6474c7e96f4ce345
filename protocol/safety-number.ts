/**
 * Safety numbers: a 60-digit number two people compare (aloud, or side by side) to make sure that each
 * holds the other's real key, after the design of libsignal's NumericFingerprintGenerator
 * (https://signal.org/blog/safety-number-updates/):
 *   for each party: h = SHA-512(version(2 bytes) || publicKey(64 bytes) || UTF-8(username));
 *                   repeat 5200 times: h = SHA-512(h || publicKey);
 *                   30 digits = the first 30 bytes of h in six 5-byte big-endian chunks, each mod 100000
 *   safety number = the two 30-digit strings sorted ascending and concatenated, shown in 12 groups of 5.
 * Both parties therefore compute the same number whoever computes it. The iterations make finding a
 * second key with a colliding number costly (FIPS 180-4 SHA-512).
 */
import { createHash } from "node:crypto";
import { publicKeyBytes, type PublicKeyHex } from "./keys";
import { assertUsername } from "./username";

export const SAFETY_NUMBER_VERSION = 0;
export const SAFETY_NUMBER_ITERATIONS = 5200;

function sha512(...parts: Uint8Array[]): Buffer {
  const hash = createHash("sha512");
  for (const part of parts) hash.update(part);
  return hash.digest();
}

/** One party's 30 digits. */
export function partyDigits(params: { username: string; publicKey: PublicKeyHex }): string {
  const username = assertUsername(params.username);
  const key = publicKeyBytes(params.publicKey);
  const version = Buffer.alloc(2);
  version.writeUInt16BE(SAFETY_NUMBER_VERSION);
  let hash = sha512(version, key, Buffer.from(username, "utf8"));
  for (let i = 0; i < SAFETY_NUMBER_ITERATIONS; i++) hash = sha512(hash, key);
  let digits = "";
  for (let chunk = 0; chunk < 6; chunk++) {
    const value = hash.readUIntBE(chunk * 5, 5) % 100000;
    digits += value.toString().padStart(5, "0");
  }
  return digits;
}

/** The 60-digit safety number of a pair, identical for both parties. */
export function safetyNumber(params: {
  a: { username: string; publicKey: PublicKeyHex };
  b: { username: string; publicKey: PublicKeyHex };
}): string {
  const [first, second] = [partyDigits(params.a), partyDigits(params.b)].sort();
  return first + second;
}

/** "12345 67890 ..." in 12 groups of 5 digits (3 lines of 4 groups when `lines`). */
export function formatSafetyNumber(digits: string, options: { lines?: boolean } = {}): string {
  const groups = digits.match(/.{1,5}/g) ?? [];
  if (!options.lines) return groups.join(" ");
  const rows: string[] = [];
  for (let i = 0; i < groups.length; i += 4) rows.push(groups.slice(i, i + 4).join(" "));
  return rows.join("\n");
}

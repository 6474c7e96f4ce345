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
import { sha512 } from "@noble/hashes/sha2.js";
import { concatBytes, utf8Bytes } from "./bytes";
import { publicKeyBytes, type PublicKeyHex } from "./keys";
import { assertUsername } from "./username";

export const SAFETY_NUMBER_VERSION = 0;
export const SAFETY_NUMBER_ITERATIONS = 5200;

/** One party's 30 digits. */
export function partyDigits(params: { username: string; publicKey: PublicKeyHex }): string {
  const username = assertUsername(params.username);
  const key = publicKeyBytes(params.publicKey);
  const version = new Uint8Array([SAFETY_NUMBER_VERSION >> 8, SAFETY_NUMBER_VERSION & 0xff]);
  let hash = sha512(concatBytes(version, key, utf8Bytes(username)));
  // One buffer reused for h || publicKey: 5200 rounds without 5200 allocations.
  const round = new Uint8Array(hash.length + key.length);
  round.set(key, hash.length);
  for (let i = 0; i < SAFETY_NUMBER_ITERATIONS; i++) {
    round.set(hash, 0);
    hash = sha512(round);
  }
  let digits = "";
  for (let chunk = 0; chunk < 6; chunk++) {
    let value = 0;
    // 5 bytes big-endian fit in a double exactly (40 bits < 53).
    for (let byte = 0; byte < 5; byte++) value = value * 256 + hash[chunk * 5 + byte];
    value %= 100000;
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

/**
 * SHA-256 (FIPS 180-4 §6.2) and HMAC-SHA256 (RFC 2104), synchronous, in one self-contained module.
 *
 * Why not @noble/hashes: under tsx (how the CLI, the relay and the benchmarks run), an ESM package in
 * node_modules is rewritten to CommonJS with getter-based exports, and noble's compression loop calls
 * its helpers through those getters: about 35 µs per 300-byte hash here instead of 3.5 µs. Each MLS
 * application message derives several secret-tree keys (RFC 9420 §9), so that difference was a large
 * share of a seal. Why not WebCrypto: it is asynchronous and needs a key import per HMAC, about 0.3 ms
 * each. This file has no cross-module call in its loop, no secret-dependent branch or table index
 * (SHA-256 needs none), and is checked against FIPS/RFC vectors and against WebCrypto in the tests.
 */

/** FIPS 180-4 §4.2.2: the first 32 bits of the fractional parts of the cube roots of the first 64 primes. */
const ROUND_CONSTANTS = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** FIPS 180-4 §5.3.3: the initial hash value. */
const INITIAL_STATE = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

const BLOCK_BYTES = 64;
export const SHA256_BYTES = 32;

/** The message schedule, reused: JavaScript runs one call at a time and nothing here awaits. */
const schedule = new Uint32Array(64);

/** One compression of the 64-byte block at `offset` into `state` (FIPS 180-4 §6.2.2). */
function compress(state: Uint32Array, block: Uint8Array, offset: number): void {
  const w = schedule;
  for (let i = 0; i < 16; i++, offset += 4) {
    w[i] = (block[offset] << 24) | (block[offset + 1] << 16) | (block[offset + 2] << 8) | block[offset + 3];
  }
  for (let i = 16; i < 64; i++) {
    const x = w[i - 15];
    const y = w[i - 2];
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    w[i] = (s1 + w[i - 7] + s0 + w[i - 16]) | 0;
  }
  let a = state[0];
  let b = state[1];
  let c = state[2];
  let d = state[3];
  let e = state[4];
  let f = state[5];
  let g = state[6];
  let h = state[7];
  for (let i = 0; i < 64; i++) {
    const bigSigma1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + bigSigma1 + ((e & f) ^ (~e & g)) + ROUND_CONSTANTS[i] + w[i]) | 0;
    const bigSigma0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (bigSigma0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  state[0] = (state[0] + a) | 0;
  state[1] = (state[1] + b) | 0;
  state[2] = (state[2] + c) | 0;
  state[3] = (state[3] + d) | 0;
  state[4] = (state[4] + e) | 0;
  state[5] = (state[5] + f) | 0;
  state[6] = (state[6] + g) | 0;
  state[7] = (state[7] + h) | 0;
}

/** SHA-256 of the concatenation of `parts`, without building the concatenation. */
function sha256Of(parts: readonly Uint8Array[]): Uint8Array {
  const state = Uint32Array.from(INITIAL_STATE);
  const buffer = new Uint8Array(BLOCK_BYTES * 2);
  let buffered = 0;
  let total = 0;
  for (const part of parts) {
    total += part.length;
    let offset = 0;
    if (buffered > 0) {
      const take = Math.min(BLOCK_BYTES - buffered, part.length);
      buffer.set(part.subarray(0, take), buffered);
      buffered += take;
      offset = take;
      if (buffered < BLOCK_BYTES) continue;
      compress(state, buffer, 0);
      buffered = 0;
    }
    for (; offset + BLOCK_BYTES <= part.length; offset += BLOCK_BYTES) compress(state, part, offset);
    buffer.set(part.subarray(offset), 0);
    buffered = part.length - offset;
  }
  // Padding (FIPS 180-4 §5.1.1): 0x80, zeros, then the length in bits as a 64-bit big-endian number.
  buffer.fill(0, buffered);
  buffer[buffered] = 0x80;
  const padded = buffered < BLOCK_BYTES - 8 ? BLOCK_BYTES : BLOCK_BYTES * 2;
  const bitsHigh = Math.floor(total / 0x20000000); // total * 8 / 2^32
  const bitsLow = (total * 8) >>> 0;
  const view = new DataView(buffer.buffer);
  view.setUint32(padded - 8, bitsHigh);
  view.setUint32(padded - 4, bitsLow);
  compress(state, buffer, 0);
  if (padded > BLOCK_BYTES) compress(state, buffer, BLOCK_BYTES);
  const out = new Uint8Array(SHA256_BYTES);
  const outView = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) outView.setUint32(i * 4, state[i]);
  buffer.fill(0); // it held message bytes, which may be secret (HMAC keys)
  return out;
}

/** SHA-256 (FIPS 180-4) of `data`. */
export function sha256(data: Uint8Array): Uint8Array {
  return sha256Of([data]);
}

/** HMAC-SHA256 (RFC 2104, with the block size and key handling of FIPS 198-1) of `data` under `key`. */
export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  const padded = new Uint8Array(BLOCK_BYTES);
  padded.set(key.length > BLOCK_BYTES ? sha256(key) : key);
  const inner = new Uint8Array(BLOCK_BYTES);
  const outer = new Uint8Array(BLOCK_BYTES);
  for (let i = 0; i < BLOCK_BYTES; i++) {
    inner[i] = padded[i] ^ 0x36;
    outer[i] = padded[i] ^ 0x5c;
  }
  const innerHash = sha256Of([inner, data]);
  const tag = sha256Of([outer, innerHash]);
  padded.fill(0);
  inner.fill(0);
  outer.fill(0);
  innerHash.fill(0);
  return tag;
}

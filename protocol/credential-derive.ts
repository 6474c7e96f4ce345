/**
 * The client side of credentials: `credential = argon2id(password, salt)` (RFC 9106, Argon2id, version
 * 0x13) computed with hash-wasm (a maintained WebAssembly build of the reference implementation).
 *
 * Parameters (RFC 9106 §4 "second recommended option" in memory and passes, with one lane because the
 * wasm build is single-threaded): 64 MiB of memory, 3 passes, parallelism 1, a 32-byte tag.
 *
 * The salt binds the credential to one username on one deployment, so that one password used by two
 * users, or by one user on two deployments, gives unrelated credentials and one precomputed table
 * cannot serve every user:
 *   salt = SHA-256( enc("eth-chat credential v1") || enc(username) || enc(chainId as decimal)
 *                   || enc(contract address as lowercase 0x-hex) )
 * where enc(s) = 4-byte big-endian length of UTF-8(s) || UTF-8(s) (length prefixes make the encoding
 * injective: no two field lists share an encoding).
 * The password is normalised to Unicode NFC first so that the same password typed on two keyboards
 * (composed or decomposed accents) gives one credential.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { argon2id } from "hash-wasm";
import { concatBytes, uint32BE, utf8Bytes } from "./bytes";
import { ChatError } from "./errors";
import { assertUsername } from "./username";

export const CREDENTIAL_DOMAIN = "eth-chat credential v1";

export interface Argon2Params {
  /** memory in KiB */
  memoryKiB: number;
  /** passes over memory (t) */
  iterations: number;
  /** lanes (p) */
  parallelism: number;
  /** tag length in bytes */
  hashLength: number;
}

/** The production parameters. Every client of one deployment must use exactly these. */
export const CREDENTIAL_ARGON2_PARAMS: Readonly<Argon2Params> = Object.freeze({
  memoryKiB: 64 * 1024,
  iterations: 3,
  parallelism: 1,
  hashLength: 32,
});

/**
 * Deliberately weak parameters for automated tests only (they give different credentials from the
 * production parameters, so an account made with them cannot log in with a normal client and vice versa).
 */
export const INSECURE_TEST_ARGON2_PARAMS: Readonly<Argon2Params> = Object.freeze({
  memoryKiB: 256,
  iterations: 1,
  parallelism: 1,
  hashLength: 32,
});

function lengthPrefixed(value: string): Uint8Array {
  const bytes = utf8Bytes(value);
  return concatBytes(uint32BE(bytes.length), bytes);
}

/** The salt of a user's credential (see the file comment for the encoding). */
export function credentialSalt(params: { username: string; chainId: bigint | number | string; contractAddress: string }): Uint8Array {
  const username = assertUsername(params.username);
  let chainId: bigint;
  try {
    chainId = BigInt(params.chainId);
  } catch {
    throw new ChatError("BAD_REQUEST", "chainId must be an integer");
  }
  if (chainId <= 0n) throw new ChatError("BAD_REQUEST", "chainId must be positive");
  if (typeof params.contractAddress !== "string" || !/^0x[0-9a-fA-F]{40}$/.test(params.contractAddress)) {
    throw new ChatError("BAD_REQUEST", "contractAddress must be a 20-byte 0x-hex address");
  }
  const encoded = concatBytes(
    lengthPrefixed(CREDENTIAL_DOMAIN),
    lengthPrefixed(username),
    lengthPrefixed(chainId.toString(10)),
    lengthPrefixed(params.contractAddress.toLowerCase()),
  );
  return sha256(encoded);
}

/**
 * Derives the 32-byte credential (0x-hex) from the password. Takes ~0.3-1 s with the production
 * parameters. Weaker parameters than the production ones are refused unless `allowInsecureParams`.
 */
export async function deriveCredential(params: {
  password: string;
  username: string;
  chainId: bigint | number | string;
  contractAddress: string;
  argon2?: Argon2Params;
  allowInsecureParams?: boolean;
}): Promise<string> {
  if (typeof params.password !== "string" || params.password.length === 0) {
    throw new ChatError("BAD_REQUEST", "password must be a non-empty string");
  }
  const argon = params.argon2 ?? CREDENTIAL_ARGON2_PARAMS;
  for (const field of ["memoryKiB", "iterations", "parallelism", "hashLength"] as const) {
    if (!Number.isInteger(argon[field]) || argon[field] <= 0) throw new ChatError("BAD_REQUEST", `argon2.${field} must be a positive integer`);
  }
  if (argon.hashLength !== 32) throw new ChatError("BAD_REQUEST", "argon2.hashLength must be 32");
  const weaker = argon.memoryKiB < CREDENTIAL_ARGON2_PARAMS.memoryKiB || argon.iterations < CREDENTIAL_ARGON2_PARAMS.iterations;
  if (weaker && !params.allowInsecureParams) {
    throw new ChatError("BAD_REQUEST", "argon2 parameters weaker than 64 MiB / 3 passes are for tests only");
  }
  const salt = credentialSalt(params);
  const tag = await argon2id({
    password: params.password.normalize("NFC"),
    salt,
    memorySize: argon.memoryKiB,
    iterations: argon.iterations,
    parallelism: argon.parallelism,
    hashLength: argon.hashLength,
    outputType: "hex",
  });
  return `0x${tag}`;
}

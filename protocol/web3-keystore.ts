/**
 * The JSON keystore of an identity key as the Web3 Secret Storage definition (version 3) spells it. Pure,
 * shared by every client that writes keystores (the CLI's files, the browser's IndexedDB records).
 *
 * ethers writes the cipher section under `Crypto`, but the definition names it `crypto` and some readers
 * (web3.js) match it case-sensitively and reject `Crypto`; so keystores are written with `crypto`. Reading
 * accepts either spelling (ethers looks keys up case-insensitively).
 */
import { ChatError } from "./errors";

/**
 * The keystore with its cipher section under the lowercase `crypto` key of the Web3 Secret Storage
 * definition, whatever the case it came with; other fields and their order are kept.
 */
export function toWeb3SecretStorage(keystore: Record<string, unknown>): Record<string, unknown> {
  if (keystore === null || typeof keystore !== "object" || Array.isArray(keystore)) throw new ChatError("BAD_REQUEST", "a keystore must be a JSON object");
  const cryptoKeys = Object.keys(keystore).filter((key) => key.toLowerCase() === "crypto");
  if (cryptoKeys.length !== 1) throw new ChatError("BAD_REQUEST", "a keystore must have exactly one crypto section");
  return Object.fromEntries(Object.entries(keystore).map(([key, value]) => [key.toLowerCase() === "crypto" ? "crypto" : key, value]));
}

/** What a client records, in the clear, about each identity key it keeps in a keystore. */
export interface LocalKey {
  index: number;
  publicKey: string;
  address: string;
  createdAt: number;
  /** written before the transaction that puts it on chain; cleared once the chain has it */
  pending?: boolean;
}

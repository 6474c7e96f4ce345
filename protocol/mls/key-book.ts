import type { KeyKindName } from "../eip712";

/** One on-chain key record of a user, as read from the chain (through the client's chain-checked cache). */
export interface KeyRecord {
  /** the Ethereum address of the secp256k1 identity key */
  address: string;
  kind: KeyKindName;
  /** block time of the record, Unix seconds */
  timestamp: number;
}

/**
 * The user key history the authentication service trusts. The caller decides where it comes from
 * (chain reads in the CLI, an in-memory book in tests); protocol code never does I/O itself.
 */
export interface KeyBook {
  /** the record at `index`, or undefined when the user or the index does not exist */
  keyRecord(username: string, index: number): Promise<KeyRecord | undefined>;
  /** how many records the user has (the current key is at keyCount - 1); 0 for an unknown user */
  keyCount(username: string): Promise<number>;
}

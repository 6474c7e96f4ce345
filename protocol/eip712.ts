/**
 * The EIP-712 typed data of ChatRegistry (https://eips.ethereum.org/EIPS/eip-712), defined once here so
 * that the contract tests, the relay and the CLI sign and check exactly the same structures.
 * The domain binds every signature to one chain id and one contract address (replay protection across
 * chains and deployments); the per-user nonce and the deadline inside each struct stop replays in time.
 * Signatures go on chain in the EIP-2098 compact form (r, vs) (https://eips.ethereum.org/EIPS/eip-2098).
 */
import { Signature, SigningKey, TypedDataEncoder, recoverAddress } from "ethers";
import { ChatError } from "./errors";

export const EIP712_NAME = "ChatRegistry";
export const EIP712_VERSION = "1";

export interface RegistryDomain {
  name: string;
  version: string;
  chainId: bigint;
  verifyingContract: string;
}

/** The one place the domain is built: every signer and checker of ChatRegistry's typed data calls this. */
export function registryDomain(params: { chainId: bigint | number; verifyingContract: string }): RegistryDomain {
  return {
    name: EIP712_NAME,
    version: EIP712_VERSION,
    chainId: BigInt(params.chainId),
    verifyingContract: params.verifyingContract,
  };
}

/** Solidity's typehashes are keccak256 of exactly these type strings. */
export const REGISTER_TYPES = {
  Register: [
    { name: "username", type: "string" },
    { name: "credentialHash", type: "bytes32" },
    { name: "publicKey", type: "bytes" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
} as const;

export const ROTATE_KEY_TYPES = {
  RotateKey: [
    { name: "username", type: "string" },
    { name: "newPublicKey", type: "bytes" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
} as const;

export const RESET_KEY_TYPES = {
  ResetKey: [
    { name: "username", type: "string" },
    { name: "newPublicKey", type: "bytes" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
} as const;

/** Signed by the CURRENT key to drop a pending reset (the defence against a stolen password). */
export const CANCEL_RESET_TYPES = {
  CancelReset: [
    { name: "username", type: "string" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
} as const;

export const UPDATE_CREDENTIAL_TYPES = {
  UpdateCredential: [
    { name: "username", type: "string" },
    { name: "credentialHash", type: "bytes32" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
} as const;

export interface RegisterMessage {
  username: string;
  credentialHash: string;
  publicKey: string;
  nonce: bigint;
  deadline: bigint;
}
export interface RotateKeyMessage {
  username: string;
  newPublicKey: string;
  nonce: bigint;
  deadline: bigint;
}
export type ResetKeyMessage = RotateKeyMessage;
export interface UpdateCredentialMessage {
  username: string;
  credentialHash: string;
  nonce: bigint;
  deadline: bigint;
}

export interface CancelResetMessage {
  username: string;
  nonce: bigint;
  deadline: bigint;
}

export type RegistryTypedData =
  | { primaryType: "Register"; message: RegisterMessage }
  | { primaryType: "RotateKey"; message: RotateKeyMessage }
  | { primaryType: "ResetKey"; message: ResetKeyMessage }
  | { primaryType: "CancelReset"; message: CancelResetMessage }
  | { primaryType: "UpdateCredential"; message: UpdateCredentialMessage };

function typesOf(primaryType: RegistryTypedData["primaryType"]) {
  switch (primaryType) {
    case "Register":
      return REGISTER_TYPES;
    case "RotateKey":
      return ROTATE_KEY_TYPES;
    case "ResetKey":
      return RESET_KEY_TYPES;
    case "CancelReset":
      return CANCEL_RESET_TYPES;
    case "UpdateCredential":
      return UPDATE_CREDENTIAL_TYPES;
  }
}

/** The EIP-712 digest: keccak256("\x19\x01" || domainSeparator || hashStruct(message)). */
export function registryDigest(domain: RegistryDomain, data: RegistryTypedData): string {
  const types = typesOf(data.primaryType) as unknown as Record<string, { name: string; type: string }[]>;
  return TypedDataEncoder.hash(domain, types, data.message as unknown as Record<string, unknown>);
}

/** The compact signature (r, vs) of EIP-2098, as the contract takes it: a pair of bytes32. */
export type CompactSignature = [string, string];

export function toCompactSignature(signature: string): CompactSignature {
  const sig = Signature.from(signature);
  return [sig.r, sig.yParityAndS];
}

export function fromCompactSignature(compact: CompactSignature): string {
  return Signature.from({ r: compact[0], yParityAndS: compact[1] }).serialized;
}

/** Signs typed data with a raw private key and returns the compact signature. */
export function signRegistryTypedData(params: {
  privateKey: string;
  domain: RegistryDomain;
  data: RegistryTypedData;
}): CompactSignature {
  const digest = registryDigest(params.domain, params.data);
  const signature = new SigningKey(params.privateKey).sign(digest);
  return [signature.r, signature.yParityAndS];
}

/** The address that signed `data`, or throws INVALID_SIGNATURE for a malformed signature. */
export function recoverRegistrySigner(params: {
  domain: RegistryDomain;
  data: RegistryTypedData;
  signature: CompactSignature;
}): string {
  try {
    return recoverAddress(registryDigest(params.domain, params.data), fromCompactSignature(params.signature));
  } catch {
    throw new ChatError("INVALID_SIGNATURE", "malformed signature");
  }
}

/** The kinds a key record can have: registered (first key), rotated (signed by the previous key), reset (password-proven). */
export const KEY_KIND_NAMES = ["registered", "rotated", "reset"] as const;
export type KeyKindName = (typeof KEY_KIND_NAMES)[number];
/** The same kinds numbered as the contract's KeyKind enum, where 0 means "no record". */
export const KEY_KINDS = ["none", ...KEY_KIND_NAMES] as const;

export function keyKindName(kind: number | bigint): KeyKindName {
  const name = KEY_KINDS[Number(kind)];
  if (!name || name === "none") throw new ChatError("BAD_REQUEST", `unknown key kind ${kind}`);
  return name;
}

/**
 * Revert decoding for relay and CLI alike: a ChatRegistry custom error in whatever ethers or a node threw
 * becomes a stable error code and a message a user can act on.
 */
import type { ErrorDescription } from "ethers";
import { ChatError, type ErrorCode } from "../protocol/errors";
import { registryErrorInterface, type RegistryErrorName } from "./registry";

export interface RegistryRevert {
  code: ErrorCode;
  /** the custom error's name, e.g. ChatRegistryUsernameTaken */
  name: string;
  args: unknown[];
  message: string;
}

/** Every custom error needs an entry: a new one in the contract fails the build here until it has a code. */
const CONTRACT_ERRORS: Record<RegistryErrorName, { code: ErrorCode; message: (e: ErrorDescription) => string }> = {
  ChatRegistryInvalidUsername: { code: "INVALID_USERNAME", message: () => "invalid username: use 3 to 32 characters of a-z, 0-9 and _" },
  ChatRegistryUsernameTaken: { code: "USERNAME_TAKEN", message: (e) => `username ${e.args[0]} is already registered` },
  ChatRegistryUnknownUser: { code: "UNKNOWN_USER", message: (e) => `no user named ${e.args[0]}` },
  ChatRegistryInvalidPublicKey: { code: "INVALID_PUBLIC_KEY", message: (e) => `public key must be 64 bytes, got ${e.args[0]}` },
  ChatRegistryInvalidCredentialHash: { code: "BAD_REQUEST", message: () => "credential hash must not be zero" },
  ChatRegistryInvalidSigner: { code: "INVALID_SIGNATURE", message: () => "signature was not made by the expected key" },
  ChatRegistryExpiredSignature: { code: "SIGNATURE_EXPIRED", message: (e) => `signature deadline ${e.args[0]} has passed` },
  ChatRegistryUnauthorizedRelayer: { code: "FORBIDDEN", message: () => "this relay's account is not an authorised relayer of the contract" },
  ChatRegistryKeyUnchanged: { code: "KEY_UNCHANGED", message: () => "the new key equals the current key" },
  ChatRegistryKeyIndexOutOfRange: { code: "NOT_FOUND", message: (e) => `no key record ${e.args[1]} (count ${e.args[2]})` },
  AccessControlUnauthorizedAccount: { code: "FORBIDDEN", message: () => "the relay's account lacks the role for this call" },
  AccessControlBadConfirmation: { code: "FORBIDDEN", message: () => "bad role confirmation" },
  ECDSAInvalidSignature: { code: "INVALID_SIGNATURE", message: () => "malformed signature" },
  ECDSAInvalidSignatureLength: { code: "INVALID_SIGNATURE", message: () => "malformed signature" },
  ECDSAInvalidSignatureS: { code: "INVALID_SIGNATURE", message: () => "signature s value is not canonical (EIP-2)" },
  ChatRegistryInvalidResetDelay: { code: "BAD_REQUEST", message: (e) => `reset delay ${e.args[0]} s is out of range` },
  ChatRegistryResetPending: { code: "RESET_PENDING", message: (e) => `a reset of ${e.args[0]} is already pending (effective at ${e.args[1]})` },
  ChatRegistryNoPendingReset: { code: "NO_PENDING_RESET", message: (e) => `no reset of ${e.args[0]} is pending` },
  ChatRegistryResetNotDue: { code: "RESET_NOT_DUE", message: (e) => `the reset of ${e.args[0]} becomes effective only at ${e.args[1]}` },
  ChatRegistryPendingKeyMismatch: { code: "KEY_MISMATCH", message: () => "the public key is not the pending reset's key" },
  StringTooLong: { code: "BAD_REQUEST", message: () => "string too long" },
  InvalidShortString: { code: "BAD_REQUEST", message: () => "invalid short string" },
};

/** Finds revert data in the nested shapes ethers and different nodes use. */
export function revertDataOf(error: unknown): string | null {
  const seen = new Set<unknown>();
  const visit = (value: unknown, depth: number): string | null => {
    if (depth > 6 || value === null || typeof value !== "object" || seen.has(value)) return null;
    seen.add(value);
    const record = value as Record<string, unknown>;
    const data = record.data;
    if (typeof data === "string" && /^0x[0-9a-fA-F]{8,}$/.test(data)) return data;
    for (const key of ["error", "info", "cause", "data", "payload"]) {
      const found = visit(record[key], depth + 1);
      if (found) return found;
    }
    return null;
  };
  return visit(error, 0);
}

/**
 * The registry's custom error inside `error` (an ethers error, a node's JSON-RPC error, or bare revert
 * data), or null when it carries none the contract declares.
 */
export function decodeRegistryRevert(error: unknown): RegistryRevert | null {
  const data = typeof error === "string" ? error : revertDataOf(error);
  if (!data) return null;
  let parsed: ErrorDescription | null = null;
  try {
    parsed = registryErrorInterface.parseError(data);
  } catch {
    return null;
  }
  if (!parsed) return null;
  const known = (CONTRACT_ERRORS as Record<string, (typeof CONTRACT_ERRORS)[RegistryErrorName] | undefined>)[parsed.name];
  return {
    code: known?.code ?? "BAD_REQUEST",
    name: parsed.name,
    args: [...parsed.args],
    message: known ? known.message(parsed) : `contract rejected the call (${parsed.name})`,
  };
}

/** A ChatError for the registry's custom error inside `error`, or null. */
export function registryRevertError(error: unknown): ChatError | null {
  const revert = decodeRegistryRevert(error);
  return revert ? new ChatError(revert.code, revert.message, { contractError: revert.name }) : null;
}

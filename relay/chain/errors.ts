/**
 * Turns whatever the chain or ethers throws into a ChatError with a stable code: contract custom
 * errors (decoded from the revert data with the contract's ABI) become 4xx codes; an unreachable or
 * failing node becomes CHAIN_UNAVAILABLE (HTTP 503, retryable).
 */
import { Interface, type ErrorDescription } from "ethers";
import { ChatRegistry__factory } from "../../typechain-types";
import { ChatError, type ErrorCode } from "../../protocol/errors";

/** ChatRegistry's ABI plus OpenZeppelin's ECDSA errors, which a library may raise without the ABI listing them. */
export const registryInterface = new Interface([
  ...ChatRegistry__factory.abi,
  "error ECDSAInvalidSignature()",
  "error ECDSAInvalidSignatureLength(uint256 length)",
  "error ECDSAInvalidSignatureS(bytes32 s)",
]);

const CONTRACT_ERRORS: Record<string, { code: ErrorCode; message: (e: ErrorDescription) => string }> = {
  ChatRegistryInvalidUsername: { code: "INVALID_USERNAME", message: () => "invalid username: use 3 to 32 characters of a-z, 0-9 and _" },
  ChatRegistryUsernameTaken: { code: "USERNAME_TAKEN", message: (e) => `username ${e.args[0]} is already registered` },
  ChatRegistryUnknownUser: { code: "UNKNOWN_USER", message: (e) => `no user named ${e.args[0]}` },
  ChatRegistryInvalidPublicKey: { code: "INVALID_PUBLIC_KEY", message: (e) => `public key must be 64 bytes, got ${e.args[0]}` },
  ChatRegistryInvalidCredentialHash: { code: "BAD_REQUEST", message: () => "credential hash must not be zero" },
  ChatRegistryInvalidSigner: { code: "INVALID_SIGNATURE", message: () => "signature was not made by the expected key" },
  ChatRegistryExpiredSignature: { code: "SIGNATURE_EXPIRED", message: (e) => `signature deadline ${e.args[0]} has passed` },
  ChatRegistryUnauthorizedRelayer: {
    code: "FORBIDDEN",
    message: () => "this relay's account is not an authorised relayer of the contract",
  },
  ChatRegistryKeyUnchanged: { code: "KEY_UNCHANGED", message: () => "the new key equals the current key" },
  ChatRegistryKeyIndexOutOfRange: { code: "NOT_FOUND", message: (e) => `no key record ${e.args[1]} (count ${e.args[2]})` },
  AccessControlUnauthorizedAccount: { code: "FORBIDDEN", message: () => "the relay's account lacks the role for this call" },
  AccessControlBadConfirmation: { code: "FORBIDDEN", message: () => "bad role confirmation" },
  ECDSAInvalidSignature: { code: "INVALID_SIGNATURE", message: () => "malformed signature" },
  ECDSAInvalidSignatureLength: { code: "INVALID_SIGNATURE", message: () => "malformed signature" },
  ECDSAInvalidSignatureS: { code: "INVALID_SIGNATURE", message: () => "signature s value is not canonical (EIP-2)" },
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

/** A ChatError for a decoded contract revert, or null when `data` is not a known error. */
export function decodeContractError(data: string): ChatError | null {
  let parsed: ErrorDescription | null = null;
  try {
    parsed = registryInterface.parseError(data);
  } catch {
    return null;
  }
  if (!parsed) return null;
  const known = CONTRACT_ERRORS[parsed.name];
  if (!known) return new ChatError("BAD_REQUEST", `contract rejected the call (${parsed.name})`, { contractError: parsed.name });
  return new ChatError(known.code, known.message(parsed), { contractError: parsed.name });
}

export function toChainError(error: unknown, action = "chain request"): ChatError {
  if (error instanceof ChatError) return error;
  const data = revertDataOf(error);
  if (data) {
    const decoded = decodeContractError(data);
    if (decoded) return decoded;
  }
  const code = (error as { code?: string })?.code;
  if (code === "CALL_EXCEPTION") return new ChatError("BAD_REQUEST", `the contract rejected the ${action}`);
  if (code === "INSUFFICIENT_FUNDS") return new ChatError("CHAIN_UNAVAILABLE", "the relay's account cannot pay for gas");
  return new ChatError("CHAIN_UNAVAILABLE", `chain unavailable during ${action}`);
}

/**
 * Turns whatever the chain or ethers throws into a ChatError with a stable code: contract custom
 * errors (decoded by the shared registry decoder) become 4xx codes; an unreachable or failing node
 * becomes CHAIN_UNAVAILABLE (HTTP 503, retryable).
 */
import { registryRevertError } from "../../chain/errors";
import { ChatError } from "../../protocol/errors";

export function toChainError(error: unknown, action = "chain request"): ChatError {
  if (error instanceof ChatError) return error;
  const decoded = registryRevertError(error);
  if (decoded) return decoded;
  const code = (error as { code?: string })?.code;
  if (code === "CALL_EXCEPTION") return new ChatError("BAD_REQUEST", `the contract rejected the ${action}`);
  if (code === "INSUFFICIENT_FUNDS") return new ChatError("CHAIN_UNAVAILABLE", "the relay's account cannot pay for gas");
  return new ChatError("CHAIN_UNAVAILABLE", `chain unavailable during ${action}`);
}

/**
 * JSON-RPC access shared by the relay, the CLI, scripts and benchmarks: the chain id asked once, one way to
 * build a provider, and the deployment check (is there code at the contract's address).
 */
import { FetchRequest, JsonRpcProvider, Network } from "ethers";
import { ChatError } from "../protocol/errors";

export const DEFAULT_RPC_TIMEOUT_MS = 10_000;

/**
 * eth_chainId over a plain POST, before any provider exists: ethers' network detection retries forever on a
 * dead endpoint, so a node that is down must fail here, fast and with CHAIN_UNAVAILABLE.
 * `endpointName` is what messages call the endpoint (a URL may carry an API key, so callers choose).
 */
export async function fetchChainId(url: string, options: { endpointName?: string; timeoutMs?: number } = {}): Promise<bigint> {
  const name = options.endpointName ?? url;
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }),
      signal: AbortSignal.timeout(options.timeoutMs ?? DEFAULT_RPC_TIMEOUT_MS),
    });
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).name;
    throw new ChatError("CHAIN_UNAVAILABLE", `chain unreachable at ${name} (${cause})`);
  }
  const body = (await response.json().catch(() => undefined)) as { result?: unknown } | undefined;
  if (!response.ok || typeof body?.result !== "string" || !/^0x[0-9a-fA-F]+$/.test(body.result)) {
    throw new ChatError("CHAIN_UNAVAILABLE", `chain at ${name} failed eth_chainId (status ${response.status})`);
  }
  return BigInt(body.result);
}

/**
 * A provider for a chain whose id is already known. Its response cache is off: ethers otherwise answers an
 * identical request made within 250 ms from memory, so a re-read transaction count, head block or code
 * would be the old answer (a nonce reused, a count that looks unchanged).
 */
export function createRpcProvider(
  url: string,
  chainId: bigint,
  options: { timeoutMs?: number; batchMaxCount?: number; pollingIntervalMs?: number } = {},
): JsonRpcProvider {
  const request = new FetchRequest(url);
  request.timeout = options.timeoutMs ?? DEFAULT_RPC_TIMEOUT_MS;
  const network = Network.from(chainId);
  return new JsonRpcProvider(request, network, {
    staticNetwork: network,
    cacheTimeout: -1,
    batchMaxCount: options.batchMaxCount ?? 1,
    pollingInterval: options.pollingIntervalMs,
  });
}

/** The chain id, then a provider for it. */
export async function connectRpc(
  url: string,
  options: { endpointName?: string; timeoutMs?: number; batchMaxCount?: number; pollingIntervalMs?: number } = {},
): Promise<{ chainId: bigint; provider: JsonRpcProvider }> {
  const chainId = await fetchChainId(url, options);
  return { chainId, provider: createRpcProvider(url, chainId, options) };
}

/** The deployment check: whether contract code is present at `address` (a reset chain has none). */
export async function hasContractCode(provider: JsonRpcProvider, address: string): Promise<boolean> {
  return (await provider.getCode(address)) !== "0x";
}

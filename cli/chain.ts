/**
 * The client's own view of the chain, over its own JSON-RPC endpoint (--rpc): the relay is never
 * trusted for what the chain says. Reads only; the client sends no transaction itself.
 */
import { Contract, JsonRpcProvider, Network, getAddress } from "ethers";
import { ChatError } from "../protocol/errors";
import { KEY_KINDS, keyKindName, type KeyKindName } from "../protocol/eip712";
import { REGISTRY_READ_ABI } from "./abi";

export interface ChainKeyRecord {
  index: number;
  /** address of the key (keccak256 of the public key, last 20 bytes) */
  address: string;
  /** block time, Unix seconds */
  timestamp: number;
  kind: KeyKindName;
}

const RPC_TIMEOUT_MS = 10_000;

async function rpc(url: string, method: string, params: unknown[]): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
      signal: AbortSignal.timeout(RPC_TIMEOUT_MS),
    });
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).name;
    throw new ChatError("CHAIN_UNAVAILABLE", `chain unreachable at ${url} (${cause})`);
  }
  const json = (await response.json().catch(() => undefined)) as { result?: unknown; error?: { message?: string } } | undefined;
  if (!response.ok || !json || json.error || json.result === undefined) {
    throw new ChatError("CHAIN_UNAVAILABLE", `chain at ${url} failed ${method} (status ${response.status})`);
  }
  return json.result;
}

export class ChainReader {
  private constructor(
    readonly url: string,
    readonly chainId: bigint,
    private readonly provider: JsonRpcProvider,
  ) {}

  /** Connects and reads the chain id (eth_chainId); CHAIN_UNAVAILABLE names the URL tried. */
  static async connect(url: string): Promise<ChainReader> {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ChatError("BAD_REQUEST", `--rpc: not a URL: ${url}`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new ChatError("BAD_REQUEST", "--rpc: use an http(s):// URL");
    const chainId = BigInt(String(await rpc(url, "eth_chainId", [])));
    // staticNetwork: ethers would otherwise retry network detection forever on a dead endpoint
    const provider = new JsonRpcProvider(url, Network.from(chainId), { staticNetwork: true, batchMaxCount: 1 });
    return new ChainReader(url, chainId, provider);
  }

  close(): void {
    this.provider.destroy();
  }

  private wrap<T>(what: string, work: Promise<T>): Promise<T> {
    return work.catch((error: unknown) => {
      if (error instanceof ChatError) throw error;
      throw new ChatError("CHAIN_UNAVAILABLE", `chain at ${this.url} failed ${what}`);
    });
  }

  /** Whether there is contract code at `address`. */
  async hasCode(address: string): Promise<boolean> {
    const code = await this.wrap("eth_getCode", this.provider.getCode(address));
    return code !== "0x";
  }

  async latestTimestamp(): Promise<number> {
    const block = await this.wrap("eth_getBlockByNumber", this.provider.getBlock("latest"));
    return block?.timestamp ?? Math.floor(Date.now() / 1000);
  }

  registry(address: string): RegistryReader {
    return new RegistryReader(new Contract(getAddress(address), REGISTRY_READ_ABI, this.provider), this.url);
  }
}

export class RegistryReader {
  constructor(
    private readonly contract: Contract,
    private readonly url: string,
  ) {}

  private async call<T>(name: string, ...args: unknown[]): Promise<T> {
    try {
      return (await this.contract.getFunction(name).staticCall(...args)) as T;
    } catch (error) {
      throw new ChatError("CHAIN_UNAVAILABLE", `chain at ${this.url} failed ${name}: ${(error as { shortMessage?: string }).shortMessage ?? "call failed"}`);
    }
  }

  async keyCount(username: string): Promise<number> {
    return Number(await this.call<bigint>("keyCount", username));
  }

  async keyRecord(username: string, index: number): Promise<ChainKeyRecord> {
    const record = await this.call<{ key: string; timestamp: bigint; kind: bigint }>("keyRecord", username, index);
    if (Number(record.kind) === 0 || Number(record.kind) >= KEY_KINDS.length) {
      throw new ChatError("KEY_MISMATCH", `the chain has no valid key record ${index} for ${username}`);
    }
    return { index, address: getAddress(record.key), timestamp: Number(record.timestamp), kind: keyKindName(record.kind) };
  }

  /** The whole key history of a user, oldest first (empty when unknown). */
  async keyHistory(username: string): Promise<ChainKeyRecord[]> {
    const count = await this.keyCount(username);
    return Promise.all(Array.from({ length: count }, (_, i) => this.keyRecord(username, i)));
  }

  async currentKey(username: string): Promise<{ address: string; index: number }> {
    const [key, index] = await this.call<[string, bigint]>("currentKey", username);
    return { address: getAddress(key), index: Number(index) };
  }

  async nonce(username: string): Promise<bigint> {
    return this.call<bigint>("nonces", username);
  }

  async isRegistered(username: string): Promise<boolean> {
    return this.call<boolean>("isRegistered", username);
  }
}

/**
 * The client's own view of the chain, over its own JSON-RPC endpoint (--rpc): the relay is never
 * trusted for what the chain says. Reads only; the client sends no transaction itself.
 */
import { getAddress, type JsonRpcProvider } from "ethers";
import { registryRevertError } from "../chain/errors";
import { connectRegistry, type RegistryContract } from "../chain/registry";
import { connectRpc, hasContractCode } from "../chain/rpc";
import { ChatError } from "../protocol/errors";
import { KEY_KINDS, keyKindName, type KeyKindName } from "../protocol/eip712";

export interface ChainKeyRecord {
  index: number;
  /** address of the key (keccak256 of the public key, last 20 bytes) */
  address: string;
  /** block time, Unix seconds */
  timestamp: number;
  kind: KeyKindName;
}

/**
 * A failed chain read as a ChatError: the contract's own custom error (unknown user, no such key record)
 * keeps its code; anything else means the endpoint failed us.
 */
function readError(error: unknown, url: string, what: string): ChatError {
  if (error instanceof ChatError) return error;
  const reverted = registryRevertError(error);
  if (reverted) return reverted;
  const reason = (error as { shortMessage?: string }).shortMessage ?? "call failed";
  return new ChatError("CHAIN_UNAVAILABLE", `chain at ${url} failed ${what}: ${reason}`);
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
    const { chainId, provider } = await connectRpc(url);
    return new ChainReader(url, chainId, provider);
  }

  close(): void {
    this.provider.destroy();
  }

  private wrap<T>(what: string, work: Promise<T>): Promise<T> {
    return work.catch((error: unknown) => {
      throw readError(error, this.url, what);
    });
  }

  /** Whether there is contract code at `address`. */
  async hasCode(address: string): Promise<boolean> {
    return this.wrap("eth_getCode", hasContractCode(this.provider, address));
  }

  async latestTimestamp(): Promise<number> {
    const block = await this.wrap("eth_getBlockByNumber", this.provider.getBlock("latest"));
    return block?.timestamp ?? Math.floor(Date.now() / 1000);
  }

  registry(address: string): RegistryReader {
    return new RegistryReader(connectRegistry(getAddress(address), this.provider), this.url);
  }
}

export class RegistryReader {
  constructor(
    private readonly contract: RegistryContract,
    private readonly url: string,
  ) {}

  private async call<T>(name: string, read: (contract: RegistryContract) => Promise<T>): Promise<T> {
    try {
      return await read(this.contract);
    } catch (error) {
      throw readError(error, this.url, name);
    }
  }

  async keyCount(username: string): Promise<number> {
    return Number(await this.call("keyCount", (c) => c.keyCount(username)));
  }

  async keyRecord(username: string, index: number): Promise<ChainKeyRecord> {
    const record = await this.call("keyRecord", (c) => c.keyRecord(username, index));
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
    const [key, index] = await this.call("currentKey", (c) => c.currentKey(username));
    return { address: getAddress(key), index: Number(index) };
  }

  async nonce(username: string): Promise<bigint> {
    return this.call("nonces", (c) => c.nonces(username));
  }

  /** The user's reset requested on chain and not yet completed or cancelled, or null. */
  async pendingReset(username: string): Promise<{ address: string; effectiveAt: number } | null> {
    const [key, effectiveAt] = await this.call("pendingReset", (c) => c.pendingReset(username));
    return /^0x0{40}$/i.test(key) ? null : { address: getAddress(key), effectiveAt: Number(effectiveAt) };
  }

  async isRegistered(username: string): Promise<boolean> {
    return this.call("isRegistered", (c) => c.isRegistered(username));
  }
}

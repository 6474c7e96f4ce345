/**
 * Which chain and contract this browser trusts, chosen on its own side: the user's JSON-RPC URL and contract
 * address, kept in localStorage. With no contract set, the known deployment for the chain id the RPC
 * reports (protocol/known-deployments.ts). Only on a local development chain does the page offer the
 * contract named by /client-config.json, and only as a suggestion the user accepts, labelled as coming from
 * the relay: a relay must never choose the registry its users' keys are checked against.
 * Every key check reads the chain over ChainReader.connect(rpcUrl).registry(contract), never the relay.
 */
import { getAddress } from "ethers";
import { ChainReader, type RegistryReader } from "../../client-core/chain-reader";
import { ChatError } from "../../protocol/errors";
import { knownDeployment } from "../../protocol/known-deployments";
import { InfoResponse } from "../../protocol/wire";
import type { RelayApi } from "./relay-api";

export const DEFAULT_RPC_URL = "http://127.0.0.1:8545";
/** The chain id of anvil and Hardhat's node: the only chain where the relay's suggestion is offered. */
export const LOCAL_DEV_CHAIN_ID = 31337n;
export const RELAY_SUGGESTION_LABEL = "suggested by the relay that served this page";

const SETTINGS_KEY = "eth-chat:settings";

export interface Settings {
  rpcUrl: string;
  /** the contract the user chose (lowercase 0x hex); absent: the known deployment of the chain */
  contract?: string;
}

export function parseRpcUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value.trim());
  } catch {
    throw new ChatError("BAD_REQUEST", `not a URL: ${value.trim().slice(0, 200)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new ChatError("BAD_REQUEST", "the chain RPC URL must be http:// or https://");
  return url.toString();
}

export function parseContract(value: string): string {
  const text = value.trim();
  if (!/^0x[0-9a-fA-F]{40}$/.test(text)) throw new ChatError("BAD_REQUEST", "a contract address is 0x followed by 40 hex digits");
  return text.toLowerCase();
}

export function loadSettings(): Settings {
  try {
    const raw = JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? "null") as Partial<Settings> | null;
    const rpcUrl = typeof raw?.rpcUrl === "string" ? parseRpcUrl(raw.rpcUrl) : DEFAULT_RPC_URL;
    const contract = typeof raw?.contract === "string" ? parseContract(raw.contract) : undefined;
    return { rpcUrl, ...(contract ? { contract } : {}) };
  } catch {
    return { rpcUrl: DEFAULT_RPC_URL };
  }
}

export function saveSettings(settings: Settings): void {
  const value: Settings = { rpcUrl: parseRpcUrl(settings.rpcUrl), ...(settings.contract ? { contract: parseContract(settings.contract) } : {}) };
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(value));
}

/** What the settings screen shows about the chain behind an RPC URL. */
export interface ChainView {
  chainId: bigint;
  known?: { contract: string; note: string };
  /** on a local dev chain only: the contract /client-config.json names, to be accepted by the user */
  relaySuggestion?: { contract: string; label: string };
}

/** The relay's /client-config.json, or undefined when it has none or it is malformed. */
async function clientConfig(): Promise<{ chainId: bigint; contract: string } | undefined> {
  try {
    const response = await fetch("/client-config.json", { cache: "no-store", credentials: "omit" });
    if (!response.ok) return undefined;
    const body = (await response.json()) as { chainId?: unknown; contractAddress?: unknown };
    if ((typeof body.chainId !== "string" && typeof body.chainId !== "number") || typeof body.contractAddress !== "string") return undefined;
    return { chainId: BigInt(body.chainId), contract: parseContract(body.contractAddress) };
  } catch {
    return undefined;
  }
}

export async function inspectChain(rpcUrl: string): Promise<ChainView> {
  const chain = await ChainReader.connect(parseRpcUrl(rpcUrl));
  try {
    const view: ChainView = { chainId: chain.chainId };
    const known = knownDeployment(chain.chainId);
    if (known) view.known = { contract: known.contractAddress, note: known.note };
    if (chain.chainId === LOCAL_DEV_CHAIN_ID) {
      const config = await clientConfig();
      if (config && config.chainId === chain.chainId) view.relaySuggestion = { contract: config.contract, label: RELAY_SUGGESTION_LABEL };
    }
    return view;
  } finally {
    chain.close();
  }
}

/** The deployment every account flow works against, read over the user's own RPC. */
export interface Deployment {
  rpcUrl: string;
  chainId: bigint;
  /** lowercase 0x hex */
  contract: string;
  source: "settings" | "known deployment";
  chain: ChainReader;
  registry: RegistryReader;
}

/**
 * Connects to the user's chain and picks the contract (settings, else the known deployment); checks there
 * is code at it, and that the relay serving this page names the same chain and contract (CHAIN_MISMATCH
 * otherwise: its users' keys live in another registry). USAGE when no contract is chosen yet.
 */
export async function connectDeployment(settings: Settings, relay: RelayApi): Promise<Deployment> {
  const chain = await ChainReader.connect(parseRpcUrl(settings.rpcUrl));
  try {
    const known = knownDeployment(chain.chainId);
    const contract = settings.contract ?? known?.contractAddress;
    if (!contract) throw new ChatError("USAGE", `no contract is chosen for chain ${chain.chainId}: open Settings and enter the ChatRegistry address`);
    if (!(await chain.hasCode(contract))) {
      throw new ChatError("CONTRACT_MISMATCH", `there is no contract at ${contract} on chain ${chain.chainId} (${chain.url}): check Settings`);
    }
    const info = await relay.get("/v1/info", InfoResponse);
    let infoChainId: bigint;
    try {
      infoChainId = BigInt(info.chainId);
    } catch {
      throw new ChatError("RELAY_UNREACHABLE", "the relay announced a malformed chain id");
    }
    if (infoChainId !== chain.chainId || info.contractAddress.toLowerCase() !== contract) {
      throw new ChatError(
        "CHAIN_MISMATCH",
        `this relay serves chain ${infoChainId} contract ${info.contractAddress.toLowerCase()}, but you trust chain ${chain.chainId} contract ${contract}; refusing`,
      );
    }
    return {
      rpcUrl: chain.url,
      chainId: chain.chainId,
      contract,
      source: settings.contract ? "settings" : "known deployment",
      chain,
      registry: chain.registry(getAddress(contract)),
    };
  } catch (error) {
    chain.close();
    throw error;
  }
}

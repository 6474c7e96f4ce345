/**
 * The client's trust anchor: the one ChatRegistry deployment whose keys it believes, chosen from the client's
 * own side and never from the relay (whose operator could otherwise name a registry it controls). In order:
 *   1. --contract ADDRESS, then CHAT_CONTRACT: the user's explicit choice, on the chain the user's own RPC
 *      reports;
 *   2. protocol/known-deployments.ts: the reviewed deployment for that chain id;
 *   3. on a local development chain only, the deployment `npm start` wrote to DATA_DIR/deployment.json (the
 *      same DATA_DIR setting npm start reads, relative to the repository; default data/). A file in a working
 *      folder must never pick the contract on a real network.
 * No anchor: the client stops and asks for --contract.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { getAddress } from "ethers";
import { ChatError } from "../protocol/errors";
import { KNOWN_DEPLOYMENTS, knownDeployment, type KnownDeployment } from "../protocol/known-deployments";

/** The repository the `chat` command runs from (bin/chat.js and npm start live here). */
export const REPOSITORY_ROOT = path.resolve(__dirname, "..");

/** Where npm start records its local deployment, inside DATA_DIR. */
export const LOCAL_DEPLOYMENT_FILE_NAME = "deployment.json";

/** Chain ids of local development chains (anvil and Hardhat's 31337, Ganache's 1337). */
export const LOCAL_CHAIN_IDS: ReadonlySet<bigint> = new Set([31337n, 1337n]);

export type TrustAnchorSource = "--contract" | "CHAT_CONTRACT" | "known-deployments" | "npm start";

export interface TrustAnchor {
  chainId: bigint;
  /** lowercase 0x hex */
  contractAddress: string;
  /** where events start, when the source knows it */
  deployBlock?: number;
  source: TrustAnchorSource;
  /** the source in words, for messages and `chat status` */
  sourceDescription: string;
}

/** What npm start writes for the chain it started (DATA_DIR/deployment.json). */
export interface LocalDeployment {
  /** decimal */
  chainId: string;
  /** lowercase 0x hex */
  contractAddress: string;
  deployBlock: number;
}

/** The local deployment file for a DATA_DIR setting (relative to the repository, as npm start resolves it). */
export function localDeploymentFile(dataDir: string | undefined): string {
  return path.join(path.resolve(REPOSITORY_ROOT, dataDir ?? "data"), LOCAL_DEPLOYMENT_FILE_NAME);
}

/** An address from the user (--contract, CHAT_CONTRACT), as lowercase hex; USAGE when it is none. */
export function parseContractAddress(value: string, where: string): string {
  if (!/^0x[0-9a-fA-F]{40}$/.test(value)) throw new ChatError("USAGE", `${where}: not a contract address (0x and 40 hex digits): ${value}`);
  try {
    // A mixed-case address carries an EIP-55 checksum: a typo there must not silently name another contract.
    return getAddress(value).toLowerCase();
  } catch {
    throw new ChatError("USAGE", `${where}: the address's checksum (its mixed case) is wrong: ${value}`);
  }
}

/** Reads the deployment npm start recorded; undefined when there is none. USAGE when it is malformed. */
export function readLocalDeployment(file: string): LocalDeployment | undefined {
  if (!existsSync(file)) return undefined;
  const malformed = () => new ChatError("USAGE", `${file} is malformed: delete it and run npm start again, or pass --contract`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch {
    throw malformed();
  }
  const record = parsed as Partial<Record<keyof LocalDeployment, unknown>>;
  if (
    typeof record?.chainId !== "string" ||
    !/^[1-9][0-9]*$/.test(record.chainId) ||
    typeof record.contractAddress !== "string" ||
    !/^0x[0-9a-fA-F]{40}$/.test(record.contractAddress) ||
    typeof record.deployBlock !== "number" ||
    !Number.isSafeInteger(record.deployBlock) ||
    record.deployBlock < 0
  ) {
    throw malformed();
  }
  return { chainId: record.chainId, contractAddress: record.contractAddress.toLowerCase(), deployBlock: record.deployBlock };
}

/** The deployment the client trusts on `chainId` (its own RPC's answer); USAGE when there is none. */
export function chooseTrustAnchor(params: {
  chainId: bigint;
  /** --contract */
  contractOption?: string;
  /** CHAT_CONTRACT (environment or ./.env) */
  contractSetting?: string;
  /** DATA_DIR/deployment.json */
  localDeploymentFile: string;
  rpcName: string;
  known?: Readonly<Record<string, KnownDeployment>>;
}): TrustAnchor {
  const { chainId } = params;
  if (params.contractOption !== undefined) {
    return { chainId, contractAddress: parseContractAddress(params.contractOption, "--contract"), source: "--contract", sourceDescription: "--contract" };
  }
  if (params.contractSetting !== undefined) {
    return { chainId, contractAddress: parseContractAddress(params.contractSetting, "CHAT_CONTRACT"), source: "CHAT_CONTRACT", sourceDescription: "CHAT_CONTRACT" };
  }
  const known = knownDeployment(chainId, params.known ?? KNOWN_DEPLOYMENTS);
  if (known) {
    return {
      chainId,
      contractAddress: parseContractAddress(known.contractAddress, "protocol/known-deployments.ts"),
      deployBlock: known.deployBlock,
      source: "known-deployments",
      sourceDescription: `known deployments (${known.note})`,
    };
  }
  if (LOCAL_CHAIN_IDS.has(chainId)) {
    const local = readLocalDeployment(params.localDeploymentFile);
    if (local && BigInt(local.chainId) === chainId) {
      return {
        chainId,
        contractAddress: local.contractAddress,
        deployBlock: local.deployBlock,
        source: "npm start",
        sourceDescription: `the local deployment npm start wrote (${params.localDeploymentFile})`,
      };
    }
  }
  throw new ChatError(
    "USAGE",
    `no trusted ChatRegistry is known for chain ${chainId} (your chain at ${params.rpcName}): pass --contract ADDRESS (or set CHAT_CONTRACT) with the deployment you trust` +
      (LOCAL_CHAIN_IDS.has(chainId) ? `, or start the local stack with npm start (it writes ${params.localDeploymentFile})` : ""),
  );
}

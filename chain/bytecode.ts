/**
 * Is the code at an address the compiled ChatRegistry? The runtime bytecode on chain is compared byte for
 * byte with the compiled contract's deployedBytecode, except where they may rightly differ:
 * - immutables (EIP712's cached domain separator, chain id, address and name hashes, the reset delay), which
 *   the constructor writes into the code; their byte ranges come from solc's `immutableReferences`, which
 *   Hardhat 2 keeps only in the build-info file that the artifact's .dbg.json names;
 * - the CBOR metadata tail (hash of the sources' metadata, solc version), which changes with a comment or a
 *   file path but not with the code. A difference there is reported, not refused.
 * Anything else (an extra function such as an admin key setter, another compiler setting) is a mismatch.
 * This proves what code runs at the address, not how it was deployed: which address to trust is the
 * client's own choice (known deployments, --contract).
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { ChatError } from "../protocol/errors";
import { createRpcProvider } from "./rpc";

const ROOT = path.resolve(__dirname, "..");

export interface ByteRange {
  start: number;
  length: number;
}

export interface CompiledRuntime {
  contractName: string;
  /** the runtime bytecode, immutables left as zeros */
  bytecode: Uint8Array;
  /** where the constructor writes immutables into the runtime code */
  immutableRanges: ByteRange[];
}

export interface RuntimeComparison {
  matches: boolean;
  /** the code matches but its CBOR metadata tail does not (another build of the same code) */
  metadataDiffers: boolean;
  /** why it does not match, for the error message */
  reason?: string;
}

interface SolcDeployedBytecode {
  object: string;
  immutableReferences?: Record<string, ByteRange[]>;
}

function hexBytes(hex: string): Uint8Array {
  const digits = hex.startsWith("0x") ? hex.slice(2) : hex;
  if (digits.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(digits)) throw new ChatError("INTERNAL", "bytecode is not hex");
  return Uint8Array.from(Buffer.from(digits, "hex"));
}

/**
 * The compiled runtime of `contractName` (in `sourceName`) from Hardhat's artifacts: the artifact's
 * deployedBytecode, and the immutable ranges from the build-info the artifact's .dbg.json points to (the
 * two must agree, or the artifacts are from different builds).
 */
export function loadCompiledRuntime(
  contractName = "ChatRegistry",
  sourceName = `contracts/${contractName}.sol`,
  artifactsDir = path.join(ROOT, "artifacts"),
): CompiledRuntime {
  const artifactFile = path.join(artifactsDir, sourceName, `${contractName}.json`);
  const debugFile = path.join(artifactsDir, sourceName, `${contractName}.dbg.json`);
  if (!existsSync(artifactFile) || !existsSync(debugFile)) {
    throw new ChatError("INTERNAL", `the compiled ${contractName} is missing (artifacts/): run npm run compile`);
  }
  const artifact = JSON.parse(readFileSync(artifactFile, "utf8")) as { deployedBytecode?: string };
  const debug = JSON.parse(readFileSync(debugFile, "utf8")) as { buildInfo?: string };
  const buildInfoFile = debug.buildInfo ? path.resolve(path.dirname(debugFile), debug.buildInfo) : "";
  if (!buildInfoFile || !existsSync(buildInfoFile)) {
    throw new ChatError("INTERNAL", `the build info of ${contractName} is missing (artifacts/build-info): run npm run compile`);
  }
  const buildInfo = JSON.parse(readFileSync(buildInfoFile, "utf8")) as {
    output?: { contracts?: Record<string, Record<string, { evm?: { deployedBytecode?: SolcDeployedBytecode } }>> };
  };
  const deployed = buildInfo.output?.contracts?.[sourceName]?.[contractName]?.evm?.deployedBytecode;
  if (!deployed || typeof artifact.deployedBytecode !== "string" || `0x${deployed.object}`.toLowerCase() !== artifact.deployedBytecode.toLowerCase()) {
    throw new ChatError("INTERNAL", `the artifacts of ${contractName} are from different builds: run npm run compile`);
  }
  const bytecode = hexBytes(deployed.object);
  const immutableRanges = Object.values(deployed.immutableReferences ?? {}).flat();
  for (const range of immutableRanges) {
    if (!Number.isInteger(range.start) || !Number.isInteger(range.length) || range.start < 0 || range.start + range.length > bytecode.length) {
      throw new ChatError("INTERNAL", `the build info of ${contractName} has an immutable range outside its code`);
    }
  }
  return { contractName, bytecode, immutableRanges };
}

/**
 * The CBOR metadata tail solc appends: its length is the code's last two bytes (big-endian), and it is a CBOR
 * map (major type 5). Undefined when the code does not end in one.
 */
export function metadataTail(code: Uint8Array): ByteRange | undefined {
  if (code.length < 2) return undefined;
  const length = (code[code.length - 2] << 8) | code[code.length - 1];
  const start = code.length - 2 - length;
  if (length === 0 || start < 0 || code[start] >> 5 !== 5) return undefined;
  return { start, length: length + 2 };
}

/** Compares code read from the chain with the compiled runtime, immutables masked (see the file's comment). */
export function compareRuntimeBytecode(onChain: Uint8Array | string, compiled: CompiledRuntime): RuntimeComparison {
  const actual = typeof onChain === "string" ? hexBytes(onChain) : onChain;
  const expected = compiled.bytecode;
  if (actual.length === 0) return { matches: false, metadataDiffers: false, reason: "there is no contract code at the address" };
  if (actual.length !== expected.length) {
    return { matches: false, metadataDiffers: false, reason: `its code is ${actual.length} bytes, the compiled ${compiled.contractName} ${expected.length}` };
  }
  const masked = new Uint8Array(expected.length);
  for (const { start, length } of compiled.immutableRanges) masked.fill(1, start, start + length);
  const expectedTail = metadataTail(expected);
  const actualTail = metadataTail(actual);
  let metadataDiffers = false;
  if (expectedTail && actualTail && expectedTail.start === actualTail.start) {
    const tailEnd = expectedTail.start + expectedTail.length;
    metadataDiffers = !Buffer.from(actual.subarray(expectedTail.start, tailEnd)).equals(Buffer.from(expected.subarray(expectedTail.start, tailEnd)));
    masked.fill(1, expectedTail.start, tailEnd);
  }
  for (let i = 0; i < expected.length; i++) {
    if (masked[i] === 0 && actual[i] !== expected[i]) {
      return { matches: false, metadataDiffers, reason: `its code differs from the compiled ${compiled.contractName} at byte ${i}` };
    }
  }
  return { matches: true, metadataDiffers };
}

/**
 * eth_getCode at `address` over the endpoint at `rpcUrl` (whose chain id the caller already checked).
 * CHAIN_UNAVAILABLE names `endpointName`, since a URL may carry an API key.
 */
export async function readRuntimeCode(rpcUrl: string, chainId: bigint, address: string, endpointName = rpcUrl): Promise<Uint8Array> {
  const provider = createRpcProvider(rpcUrl, chainId);
  try {
    return hexBytes(await provider.getCode(address));
  } catch (error) {
    if (error instanceof ChatError) throw error;
    const reason = (error as { shortMessage?: string }).shortMessage ?? "call failed";
    throw new ChatError("CHAIN_UNAVAILABLE", `chain at ${endpointName} failed eth_getCode: ${reason}`);
  } finally {
    provider.destroy();
  }
}

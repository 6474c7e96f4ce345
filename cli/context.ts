/**
 * The composition root of the client: resolves the options, builds the stores of a home folder (or takes
 * memory stores in tests), output, password input, the relay (HTTP, pinned TLS), the client's own chain
 * connection and the deployment it trusts (its own choice, which the relay must match). Commands and
 * helpers declare the few members they use (a Pick of Context), so each can be given just those.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import dotenv from "dotenv";
import { keccak256 } from "ethers";
import { compareRuntimeBytecode, loadCompiledRuntime, readRuntimeCode } from "../chain/bytecode";
import { CREDENTIAL_ARGON2_PARAMS, INSECURE_TEST_ARGON2_PARAMS, deriveCredential } from "../protocol/credential-derive";
import { ChatError } from "../protocol/errors";
import { DEFAULT_MAX_FRAME_BYTES, InfoResponse } from "../protocol/wire";
import { ChainReader, type RegistryReader } from "../client-core/chain-reader";
import { checkRelayTransport, checkRpcTransport } from "./connection";
import { Home, defaultHome } from "./home";
import { StdinLines, passwordSource, type PasswordSource } from "./input";
import { Output } from "./output";
import { RelayHttp } from "./relay-http";
import { chooseTrustAnchor, localDeploymentFile, type TrustAnchor, type TrustAnchorSource } from "./trust-anchor";
import { fileStores, type ClientStores, type ContactStore, type HistoryStore, type KeyStore, type OutboxStore, type RelayPinStore, type SessionStore } from "./stores";


export interface GlobalOptions {
  relay?: string;
  rpc?: string;
  home?: string;
  json?: boolean;
  passwordStdin?: boolean;
  /** the ChatRegistry address to trust (overrides CHAT_CONTRACT and the known deployments) */
  contract?: string;
  /** answer yes to confirmations */
  yes?: boolean;
  /** accept a plain http:// relay off this machine, as CHAT_INSECURE_RELAY=1 does */
  insecureRelay?: boolean;
  /** send, talk: the group (its name, or the start of its id) instead of a user */
  group?: string;
  /** group create: the users to add at once, comma-separated */
  with?: string;
  /** device link: a name for the new device */
  name?: string;
}

export interface Deployment {
  chainId: bigint;
  /** lowercase 0x hex */
  contractAddress: string;
  maxFrameBytes: number;
  /** where the choice of this deployment came from ("pin": checked earlier, the chain is unreachable now) */
  source: TrustAnchorSource | "pin";
  deployBlock?: number;
}

/** Settings from the environment, then from ./.env, then the defaults (command-line options win over all). */
function setting(name: string, env: NodeJS.ProcessEnv, file: Record<string, string>): string | undefined {
  const value = env[name] ?? file[name];
  return value === undefined || value === "" ? undefined : value;
}

export class Context implements ClientStores {
  readonly home: Home;
  readonly keys: KeyStore;
  readonly contacts: ContactStore;
  readonly history: HistoryStore;
  readonly outbox: OutboxStore;
  readonly sessions: SessionStore;
  readonly relayPins: RelayPinStore;
  readonly out: Output;
  readonly lines: StdinLines;
  readonly passwords: PasswordSource;
  readonly relayUrl: string;
  readonly rpcUrl: string;
  /** CHAT_CONTRACT: the ChatRegistry address to trust when --contract is not given */
  readonly contractSetting?: string;
  /** where npm start records the local chain's deployment (DATA_DIR/deployment.json) */
  readonly localDeploymentFile: string;
  /**
   * CHAT_INSECURE_FAST_KDF=1 (tests only; read from the process environment, never from the relay):
   * argon2id 256 KiB / 1 pass and keystore scrypt N=2^10 instead of 64 MiB / 3 passes and N=2^17.
   */
  readonly insecureFastKdf: boolean;
  /** --insecure-relay or CHAT_INSECURE_RELAY=1: a plain http:// relay off this machine is accepted (and warned about) */
  readonly insecureRelay: boolean;
  private relayHttp?: RelayHttp;
  private chainReader?: ChainReader;
  private deploymentCache?: Deployment;

  /** `stores`: where to keep things instead of the home folder's files (tests). */
  constructor(
    readonly options: GlobalOptions,
    env: NodeJS.ProcessEnv = process.env,
    stores?: ClientStores,
  ) {
    const envFile = path.resolve(".env");
    const file = existsSync(envFile) ? dotenv.parse(readFileSync(envFile)) : {};
    this.relayUrl = options.relay ?? setting("CHAT_RELAY_URL", env, file) ?? "https://127.0.0.1:8443";
    this.rpcUrl = options.rpc ?? setting("CHAT_RPC_URL", env, file) ?? "http://127.0.0.1:8545";
    this.contractSetting = setting("CHAT_CONTRACT", env, file);
    this.localDeploymentFile = localDeploymentFile(setting("DATA_DIR", env, file));
    this.home = new Home(options.home ?? setting("CHAT_HOME", env, file) ?? defaultHome(env));
    this.out = new Output(Boolean(options.json));
    this.lines = new StdinLines();
    this.passwords = passwordSource({ fromStdin: Boolean(options.passwordStdin), lines: this.lines });
    this.insecureFastKdf = env.CHAT_INSECURE_FAST_KDF === "1";
    this.insecureRelay = Boolean(options.insecureRelay) || setting("CHAT_INSECURE_RELAY", env, file) === "1";
    ({
      keys: this.keys,
      contacts: this.contacts,
      history: this.history,
      outbox: this.outbox,
      sessions: this.sessions,
      relayPins: this.relayPins,
    } = stores ?? fileStores(this.home, { fastKdf: this.insecureFastKdf }));
  }

  /**
   * The relay, refused before any use when it is plain http:// off this machine (the credential and the
   * session token would travel in the clear) unless insecureRelay accepts it: every command goes through here.
   */
  get relay(): RelayHttp {
    if (!this.relayHttp) {
      const relay = new RelayHttp(this.relayUrl, this.relayPins, this.out);
      checkRelayTransport(relay.url, this.out, this.insecureRelay ? { CHAT_INSECURE_RELAY: "1" } : {});
      this.relayHttp = relay;
    }
    return this.relayHttp;
  }

  async chain(): Promise<ChainReader> {
    if (!this.chainReader) checkRpcTransport(this.rpcUrl, this.out);
    this.chainReader ??= await ChainReader.connect(this.rpcUrl);
    return this.chainReader;
  }

  /**
   * The deployment this client trusts on the chain its own RPC reports (cli/trust-anchor.ts): --contract,
   * CHAT_CONTRACT, the known deployments, or the local one npm start wrote. USAGE when there is none.
   */
  trustAnchor(chainId: bigint): TrustAnchor {
    return chooseTrustAnchor({
      chainId,
      contractOption: this.options.contract,
      contractSetting: this.contractSetting,
      localDeploymentFile: this.localDeploymentFile,
      rpcName: this.rpcUrl,
    });
  }

  /**
   * The chain id and contract to use with this relay. The client chooses them itself (trustAnchor, on the
   * chain its own RPC reports); the relay's GET /v1/info must name the same, else CHAIN_MISMATCH naming both.
   * Once per pin the runtime code at that address is compared with the compiled ChatRegistry (immutables
   * masked), else CONTRACT_MISMATCH; the pin then records the code's hash, so later commands skip the check.
   */
  async deployment(): Promise<Deployment> {
    if (this.deploymentCache) return this.deploymentCache;
    const info = await this.relay.get("/v1/info", InfoResponse);
    const origin = this.relay.origin;
    const pin = this.relayPins.get(origin);
    let infoChainId: bigint;
    try {
      infoChainId = BigInt(info.chainId);
    } catch {
      throw new ChatError("RELAY_UNREACHABLE", `relay at ${origin} announced a malformed chain id`);
    }
    if (!/^0x[0-9a-fA-F]{40}$/.test(info.contractAddress)) throw new ChatError("RELAY_UNREACHABLE", `relay at ${origin} announced a malformed contract address`);
    const infoContract = info.contractAddress.toLowerCase();
    const maxFrameBytes = info.maxFrameBytes > 0 ? info.maxFrameBytes : DEFAULT_MAX_FRAME_BYTES;
    let chain: ChainReader;
    try {
      chain = await this.chain();
    } catch (error) {
      // Chain unreachable: a deployment checked and pinned earlier still names the chain and contract, if the
      // relay agrees and no explicit choice contradicts it. Not cached: every chain read still needs the chain.
      const explicit = this.options.contract ?? this.contractSetting;
      if (
        error instanceof ChatError &&
        error.code === "CHAIN_UNAVAILABLE" &&
        pin?.contractCodeHash !== undefined &&
        pin.chainId === infoChainId.toString() &&
        pin.contractAddress === infoContract &&
        (explicit === undefined || explicit.toLowerCase() === infoContract)
      ) {
        return { chainId: infoChainId, contractAddress: infoContract, maxFrameBytes, source: "pin" };
      }
      throw error;
    }
    const anchor = this.trustAnchor(chain.chainId);
    if (infoChainId !== anchor.chainId || infoContract !== anchor.contractAddress) {
      throw new ChatError(
        "CHAIN_MISMATCH",
        `the relay at ${origin} serves chain ${infoChainId} contract ${infoContract}, but you trust chain ${anchor.chainId} contract ${anchor.contractAddress} (from ${anchor.sourceDescription}); refusing`,
      );
    }
    if (pin?.chainId !== undefined && pin.contractAddress !== undefined && (pin.chainId !== infoChainId.toString() || pin.contractAddress !== infoContract)) {
      throw new ChatError(
        "CHAIN_MISMATCH",
        `chain ${pin.chainId} contract ${pin.contractAddress} is pinned for the relay at ${origin}, but now you and the relay name chain ${infoChainId} contract ${infoContract}; ` +
          "if you moved to that deployment on purpose, use a fresh --home (this one's keys belong to the old one); refusing",
      );
    }
    if (pin?.contractCodeHash === undefined || pin.chainId === undefined) {
      const codeHash = await this.checkContractCode(anchor);
      this.relayPins.update(origin, { chainId: infoChainId.toString(), contractAddress: infoContract, contractCodeHash: codeHash, maxFrameBytes });
      this.out.info(`Pinned chain ${infoChainId}, contract ${infoContract} for ${origin} (from ${anchor.sourceDescription}; its code is ChatRegistry's, checked over ${this.rpcUrl})`);
    } else if (pin.maxFrameBytes !== maxFrameBytes) {
      this.relayPins.update(origin, { maxFrameBytes });
    }
    this.deploymentCache = { chainId: infoChainId, contractAddress: infoContract, maxFrameBytes, source: anchor.source, deployBlock: anchor.deployBlock };
    return this.deploymentCache;
  }

  /**
   * Compares the runtime code at the anchor's address (eth_getCode over the client's own RPC) with the
   * compiled ChatRegistry, immutables and metadata masked; returns the code's keccak256.
   */
  private async checkContractCode(anchor: TrustAnchor): Promise<string> {
    const code = await readRuntimeCode(this.rpcUrl, anchor.chainId, anchor.contractAddress);
    const comparison = compareRuntimeBytecode(code, loadCompiledRuntime());
    if (!comparison.matches) {
      throw new ChatError(
        "CONTRACT_MISMATCH",
        `contract ${anchor.contractAddress} on chain ${anchor.chainId} (from ${anchor.sourceDescription}) is not the ChatRegistry this client was built with: ${comparison.reason}; refusing`,
      );
    }
    if (comparison.metadataDiffers) {
      this.out.info(`The code at ${anchor.contractAddress} is ChatRegistry's, built from other source files (its metadata hash differs).`);
    }
    return keccak256(code);
  }

  async registry(): Promise<RegistryReader> {
    const deployment = await this.deployment();
    return (await this.chain()).registry(deployment.contractAddress);
  }

  /** The credential of `username` with this deployment's salt (argon2id, protocol/credential-derive). */
  async credential(username: string, password: string): Promise<string> {
    const deployment = await this.deployment();
    return this.out.progress(
      "deriving the credential (argon2id)",
      deriveCredential({
        password,
        username,
        chainId: deployment.chainId,
        contractAddress: deployment.contractAddress,
        argon2: this.insecureFastKdf ? INSECURE_TEST_ARGON2_PARAMS : CREDENTIAL_ARGON2_PARAMS,
        allowInsecureParams: this.insecureFastKdf,
      }),
    );
  }

  /** Deadline of a signature: an hour after the chain's latest block time. */
  async deadline(): Promise<number> {
    const chainTime = await (await this.chain()).latestTimestamp();
    return Math.max(chainTime, Math.floor(Date.now() / 1000)) + 3600;
  }

  close(): void {
    this.chainReader?.close();
    this.lines.close();
  }
}

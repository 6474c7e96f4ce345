/**
 * The composition root of the client: resolves the options, builds the stores of a home folder (or takes
 * memory stores in tests), output, password input, the relay (HTTP, pinned TLS), the client's own chain
 * connection and the deployment pinned for this relay. Commands and helpers declare the few members they
 * use (a Pick of Context), so each can be given just those.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import dotenv from "dotenv";
import { CREDENTIAL_ARGON2_PARAMS, INSECURE_TEST_ARGON2_PARAMS, deriveCredential } from "../protocol/credential-derive";
import { ChatError } from "../protocol/errors";
import { DEFAULT_MAX_FRAME_BYTES, InfoResponse } from "../protocol/wire";
import { ChainReader, type RegistryReader } from "./chain";
import { Home, defaultHome } from "./home";
import { StdinLines, passwordSource, type PasswordSource } from "./input";
import { Output } from "./output";
import { RelayHttp } from "./relay-http";
import { fileStores, type ClientStores, type ContactStore, type HistoryStore, type KeyStore, type OutboxStore, type RelayPinStore, type SessionStore } from "./stores";


export interface GlobalOptions {
  relay?: string;
  rpc?: string;
  home?: string;
  json?: boolean;
  passwordStdin?: boolean;
}

export interface Deployment {
  chainId: bigint;
  contractAddress: string;
  maxFrameBytes: number;
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
  /**
   * CHAT_INSECURE_FAST_KDF=1 (tests only; read from the process environment, never from the relay):
   * argon2id 256 KiB / 1 pass and keystore scrypt N=2^10 instead of 64 MiB / 3 passes and N=2^17.
   */
  readonly insecureFastKdf: boolean;
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
    this.home = new Home(options.home ?? setting("CHAT_HOME", env, file) ?? defaultHome(env));
    this.out = new Output(Boolean(options.json));
    this.lines = new StdinLines();
    this.passwords = passwordSource({ fromStdin: Boolean(options.passwordStdin), lines: this.lines });
    this.insecureFastKdf = env.CHAT_INSECURE_FAST_KDF === "1";
    ({
      keys: this.keys,
      contacts: this.contacts,
      history: this.history,
      outbox: this.outbox,
      sessions: this.sessions,
      relayPins: this.relayPins,
    } = stores ?? fileStores(this.home, { fastKdf: this.insecureFastKdf }));
  }

  get relay(): RelayHttp {
    this.relayHttp ??= new RelayHttp(this.relayUrl, this.relayPins, this.out);
    return this.relayHttp;
  }

  async chain(): Promise<ChainReader> {
    this.chainReader ??= await ChainReader.connect(this.rpcUrl);
    return this.chainReader;
  }

  /**
   * The chain id and contract this relay serves: from GET /v1/info on first contact, checked against
   * the client's own JSON-RPC (same chain id, contract code at the address), then pinned. Later the
   * relay's answer must equal the pin, and the client's chain must still be that chain.
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
    const contractAddress = info.contractAddress.toLowerCase();
    if (pin?.chainId !== undefined && pin.contractAddress !== undefined) {
      if (pin.chainId !== infoChainId.toString() || pin.contractAddress !== contractAddress) {
        throw new ChatError(
          "CHAIN_MISMATCH",
          `the relay at ${origin} now names chain ${infoChainId} contract ${contractAddress}, but chain ${pin.chainId} contract ${pin.contractAddress} is pinned; refusing`,
        );
      }
    }
    let chain: ChainReader;
    try {
      chain = await this.chain();
    } catch (error) {
      // Chain unreachable: the deployment pinned after an earlier check still names the chain and contract
      // (the relay agrees, checked above). Not cached: every chain read still needs the chain itself.
      if (error instanceof ChatError && error.code === "CHAIN_UNAVAILABLE" && pin?.chainId === infoChainId.toString() && pin.contractAddress === contractAddress) {
        return { chainId: infoChainId, contractAddress, maxFrameBytes: info.maxFrameBytes > 0 ? info.maxFrameBytes : DEFAULT_MAX_FRAME_BYTES };
      }
      throw error;
    }
    if (chain.chainId !== infoChainId) {
      throw new ChatError("CHAIN_MISMATCH", `your chain at ${this.rpcUrl} is chain ${chain.chainId}, but the relay at ${origin} serves chain ${infoChainId}`);
    }
    if (!(await chain.hasCode(contractAddress))) {
      throw new ChatError("CHAIN_MISMATCH", `no contract at ${contractAddress} on your chain at ${this.rpcUrl}`);
    }
    const maxFrameBytes = info.maxFrameBytes > 0 ? info.maxFrameBytes : DEFAULT_MAX_FRAME_BYTES;
    if (!pin?.chainId) {
      this.out.info(`Pinned chain ${infoChainId}, contract ${contractAddress} for ${origin} (checked against ${this.rpcUrl})`);
    }
    this.relayPins.update(origin, { chainId: infoChainId.toString(), contractAddress, maxFrameBytes });
    this.deploymentCache = { chainId: infoChainId, contractAddress, maxFrameBytes };
    return this.deploymentCache;
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

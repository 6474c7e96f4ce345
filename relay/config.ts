/**
 * The relay's settings, parsed and validated from a plain key/value map. relay/main.ts passes
 * process.env (after dotenv); tests pass their own maps. A missing or malformed setting throws
 * ConfigError whose message is one line naming the setting, which main.ts prints before exit 1.
 */
import { Wallet, getAddress, isAddress } from "ethers";
import { DEFAULT_MAILBOX_TTL_MS, DEFAULT_MAX_FRAME_BYTES } from "../protocol/wire";
import { V2_LIMITS } from "../protocol/wire-v2";
import { DEFAULT_BACKOFF_POLICY, type BackoffPolicy } from "./limits/limits";
import { DEFAULT_MAX_KEYS } from "./limits/memory";

export class ConfigError extends Error {
  readonly setting: string;
  constructor(setting: string, problem: string) {
    super(`invalid setting ${setting}: ${problem}`);
    this.name = "ConfigError";
    this.setting = setting;
  }
}

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface RateLimitConfig {
  /** attempts per window per username */
  perUser: number;
  /** attempts per window per client address */
  perAddress: number;
}

export interface RelayConfig {
  rpcUrl: string;
  contractAddress: string;
  deployBlock: number;
  /** the relayer's private key; never logged */
  privateKey: string;
  /** the relayer's address, derived from privateKey (ACCOUNT must match when given) */
  account: string;
  /** how the relayer spends gas: pre-broadcast checks, fee replacement, balance warning */
  gas: RelayerGasSettings;
  credentialPepper: Uint8Array;
  sessionSecret: Uint8Array;
  mysqlUrl: string | null;
  redisUrl: string | null;
  host: string;
  port: number;
  tlsCertFile: string | null;
  tlsKeyFile: string | null;
  insecureHttp: boolean;
  dataDir: string;
  maxFrameBytes: number;
  mailboxTtlMs: number;
  /** how long a v2 group's log keeps an entry every member has read (DS_LOG_TTL_DAYS) */
  dsLogTtlMs: number;
  /** how often the relay purges the v2 store: that log, expired key packages and welcomes (DS_PURGE_INTERVAL_SECONDS) */
  dsPurgeIntervalMs: number;
  logLevel: LogLevel;
  /** relay tuning */
  syncPollMs: number;
  syncBlockRange: number;
  syncConfirmations: number;
  sessionTtlMs: number;
  challengeTtlMs: number;
  rateLimitWindowMs: number;
  loginRateLimit: RateLimitConfig;
  registerRateLimit: RateLimitConfig;
  /** messages and commits one user may POST to /v2 per window, all devices together (WebSocket appends have their own rate) */
  appendsPerUser: number;
  /** bound of each in-memory limit store (a lone instance's, or a shared store's fallback) */
  rateLimitMaxKeys: number;
  /** the per-user delay after failed password checks */
  passwordBackoff: BackoffPolicy;
  trustProxy: string | null;
  /** unrevoked devices one user may have (MAX_DEVICES_PER_USER) */
  maxDevicesPerUser: number;
  /** how long a new device's link request waits for approval (DEVICE_LINK_TTL_SECONDS) */
  deviceLinkTtlMs: number;
  bounds: RelayBounds;
  messagingBounds: MessagingBounds;
  /** the browser client the relay serves at / */
  webClient: WebClientSettings;
}

type Env = Record<string, string | undefined>;

/** An empty string counts as unset, as in .env.example where every key is present. */
function read(env: Env, name: string): string | undefined {
  const value = env[name];
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  return trimmed === "" ? undefined : trimmed;
}

function required(env: Env, name: string, hint: string): string {
  const value = read(env, name);
  if (value === undefined) throw new ConfigError(name, `missing (${hint})`);
  return value;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const value = read(env, name);
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new ConfigError(name, `expected a whole number, got "${value}"`);
  const n = Number(value);
  if (n < min || n > max) throw new ConfigError(name, `expected ${min} to ${max}, got ${n}`);
  return n;
}

function positiveNumber(env: Env, name: string, fallback: number): number {
  const value = read(env, name);
  if (value === undefined) return fallback;
  if (!/^\d+(\.\d+)?$/.test(value) || Number(value) <= 0) throw new ConfigError(name, `expected a positive number, got "${value}"`);
  return Number(value);
}

function boolean(env: Env, name: string): boolean {
  const value = read(env, name);
  if (value === undefined) return false;
  if (/^(1|true|yes)$/i.test(value)) return true;
  if (/^(0|false|no)$/i.test(value)) return false;
  throw new ConfigError(name, `expected 1 or 0, got "${value}"`);
}

/** 32 random bytes as 64 hex characters (optionally 0x-prefixed). The value itself is never echoed. */
function secret32(env: Env, name: string): Uint8Array {
  const value = required(env, name, "32 random bytes as 64 hex characters, e.g. `openssl rand -hex 32`");
  const hex = value.startsWith("0x") ? value.slice(2) : value;
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new ConfigError(name, "expected 64 hex characters (32 bytes)");
  return Uint8Array.from(Buffer.from(hex, "hex"));
}

function url(env: Env, name: string, protocols: string[], isRequired: boolean): string | null {
  const value = isRequired ? required(env, name, `a ${protocols.join(" or ")} URL`) : read(env, name);
  if (value === undefined) return null;
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new ConfigError(name, `not a URL`);
  }
  if (!protocols.includes(parsed.protocol.replace(/:$/, ""))) {
    throw new ConfigError(name, `expected a ${protocols.join(" or ")} URL, got ${parsed.protocol}`);
  }
  return value;
}

export function parseConfig(env: Env): RelayConfig {
  const rpcUrl = url(env, "RPC_URL", ["http", "https"], true)!;

  const contractAddress = required(env, "CONTRACT_ADDRESS", "ChatRegistry's 0x address");
  if (!isAddress(contractAddress)) throw new ConfigError("CONTRACT_ADDRESS", "not an Ethereum address");

  const deployBlock = integer(env, "DEPLOY_BLOCK", 0, 0, Number.MAX_SAFE_INTEGER);

  const privateKey = required(env, "PRIVATE_KEY", "the relayer's 0x-prefixed private key");
  if (!/^0x[0-9a-fA-F]{64}$/.test(privateKey)) throw new ConfigError("PRIVATE_KEY", "expected 0x and 64 hex characters");
  let account: string;
  try {
    account = new Wallet(privateKey).address;
  } catch {
    throw new ConfigError("PRIVATE_KEY", "not a valid secp256k1 private key");
  }
  const accountSetting = read(env, "ACCOUNT");
  if (accountSetting !== undefined) {
    if (!isAddress(accountSetting)) throw new ConfigError("ACCOUNT", "not an Ethereum address");
    if (getAddress(accountSetting) !== account) throw new ConfigError("ACCOUNT", "does not match the address of PRIVATE_KEY");
  }

  const credentialPepper = secret32(env, "CREDENTIAL_PEPPER");
  const sessionSecret = secret32(env, "SESSION_SECRET");

  const mysqlUrl = url(env, "MYSQL_URL", ["mysql", "mariadb"], false);
  const redisUrl = url(env, "REDIS_URL", ["redis", "rediss"], false);

  const host = read(env, "HOST") ?? "127.0.0.1";
  if (!/^[A-Za-z0-9.:\-\[\]]+$/.test(host)) throw new ConfigError("HOST", `not a host name or address: "${host}"`);
  const port = integer(env, "PORT", 8443, 0, 65535);

  const tlsCertFile = read(env, "TLS_CERT") ?? null;
  const tlsKeyFile = read(env, "TLS_KEY") ?? null;
  if (tlsCertFile && !tlsKeyFile) throw new ConfigError("TLS_KEY", "missing (TLS_CERT is set; give both or neither)");
  if (tlsKeyFile && !tlsCertFile) throw new ConfigError("TLS_CERT", "missing (TLS_KEY is set; give both or neither)");
  const insecureHttp = boolean(env, "INSECURE_HTTP");

  const dataDir = read(env, "DATA_DIR") ?? "./data";
  const maxFrameBytes = integer(env, "MAX_FRAME_BYTES", DEFAULT_MAX_FRAME_BYTES, 1024, 16 * 1024 * 1024);
  const mailboxTtlMs = Math.round(
    positiveNumber(env, "MAILBOX_TTL_DAYS", DEFAULT_MAILBOX_TTL_MS / 86_400_000) * 86_400_000,
  );

  const logLevel = (read(env, "LOG_LEVEL") ?? "info") as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError("LOG_LEVEL", `expected one of ${LOG_LEVELS.join(", ")}`);

  const trustProxy = read(env, "TRUST_PROXY") ?? null;
  if (trustProxy !== null && !/^[A-Za-z0-9.,:/ \-]+$/.test(trustProxy)) {
    throw new ConfigError("TRUST_PROXY", "expected a hop count, loopback, or a list of addresses");
  }

  const passwordBackoff: BackoffPolicy = {
    freeFailures: integer(env, "RATE_LIMIT_BACKOFF_FREE_FAILURES", DEFAULT_BACKOFF_POLICY.freeFailures, 0, 1_000_000),
    baseDelayMs: integer(env, "RATE_LIMIT_BACKOFF_BASE_MS", DEFAULT_BACKOFF_POLICY.baseDelayMs, 1, 86_400_000),
    maxDelayMs: integer(env, "RATE_LIMIT_BACKOFF_MAX_MS", DEFAULT_BACKOFF_POLICY.maxDelayMs, 1, 86_400_000),
    forgetAfterMs: integer(env, "RATE_LIMIT_BACKOFF_FORGET_MS", DEFAULT_BACKOFF_POLICY.forgetAfterMs, 1, 30 * 86_400_000),
  };
  if (passwordBackoff.maxDelayMs < passwordBackoff.baseDelayMs) throw new ConfigError("RATE_LIMIT_BACKOFF_MAX_MS", "must be at least RATE_LIMIT_BACKOFF_BASE_MS");
  if (passwordBackoff.forgetAfterMs < passwordBackoff.maxDelayMs) throw new ConfigError("RATE_LIMIT_BACKOFF_FORGET_MS", "must be at least RATE_LIMIT_BACKOFF_MAX_MS");

  return {
    rpcUrl,
    contractAddress: getAddress(contractAddress),
    deployBlock,
    privateKey,
    account,
    gas: parseRelayerGas(env),
    credentialPepper,
    sessionSecret,
    mysqlUrl,
    redisUrl,
    host,
    port,
    tlsCertFile,
    tlsKeyFile,
    insecureHttp,
    dataDir,
    maxFrameBytes,
    mailboxTtlMs,
    dsLogTtlMs: Math.round(positiveNumber(env, "DS_LOG_TTL_DAYS", 30) * 86_400_000),
    dsPurgeIntervalMs: integer(env, "DS_PURGE_INTERVAL_SECONDS", 600, 1, 86_400) * 1000,
    logLevel,
    syncPollMs: integer(env, "SYNC_POLL_MS", 500, 10, 600_000),
    syncBlockRange: integer(env, "SYNC_BLOCK_RANGE", 2000, 1, 1_000_000),
    syncConfirmations: integer(env, "SYNC_CONFIRMATIONS", 0, 0, 1000),
    sessionTtlMs: integer(env, "SESSION_TTL_MINUTES", 720, 1, 60 * 24 * 30) * 60_000,
    challengeTtlMs: integer(env, "LOGIN_CHALLENGE_TTL_SECONDS", 120, 5, 3600) * 1000,
    rateLimitWindowMs: integer(env, "RATE_LIMIT_WINDOW_SECONDS", 60, 1, 86_400) * 1000,
    loginRateLimit: {
      perUser: integer(env, "RATE_LIMIT_LOGIN_PER_USER", 10, 1, 1_000_000),
      perAddress: integer(env, "RATE_LIMIT_LOGIN_PER_ADDRESS", 60, 1, 1_000_000),
    },
    registerRateLimit: {
      perUser: integer(env, "RATE_LIMIT_REGISTER_PER_USER", 5, 1, 1_000_000),
      perAddress: integer(env, "RATE_LIMIT_REGISTER_PER_ADDRESS", 20, 1, 1_000_000),
    },
    appendsPerUser: integer(env, "RATE_LIMIT_APPENDS_PER_USER", 6_000, 1, 100_000_000),
    rateLimitMaxKeys: integer(env, "RATE_LIMIT_MAX_KEYS", DEFAULT_MAX_KEYS, 16, 100_000_000),
    passwordBackoff,
    trustProxy,
    // At most what one key-package claim answers (every device of a user must fit in one).
    maxDevicesPerUser: integer(env, "MAX_DEVICES_PER_USER", 10, 1, V2_LIMITS.devicesPerUser),
    deviceLinkTtlMs: integer(env, "DEVICE_LINK_TTL_SECONDS", 600, 5, 3600) * 1000,
    bounds: parseBounds(env),
    messagingBounds: parseMessagingBounds(env),
    webClient: parseWebClient(env),
  };
}

/** The browser client: the folder scripts/build-web.ts wrote, and whom its pages may connect to. */
export interface WebClientSettings {
  /** WEB_CLIENT_DIR: the built client served at /; null serves none (/ answers 404) */
  dir: string | null;
  /** WEB_CONNECT_SRC: CSP connect-src sources beyond 'self' (the user's own chain RPC) */
  connectSrc: string[];
}

/** What the page may call besides the relay: a chain RPC on this machine, or any over HTTPS. */
export const DEFAULT_WEB_CONNECT_SRC = ["http://127.0.0.1:*", "http://localhost:*", "https:"];

/**
 * One CSP source expression a page may connect to: a scheme (`https:`) or a scheme and host with an optional
 * port or `:*` (`https://rpc.example.org`, `http://127.0.0.1:*`, `https://*.example.org:8545`). Nothing that
 * could end the directive or widen it to every origin (`*`, quotes, `;`, `,`).
 */
const CONNECT_SOURCE = /^(?:(?:https?|wss?):|(?:https?|wss?):\/\/(?:\*\.)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::(?:\d{1,5}|\*))?\/?)$/;

function parseWebClient(env: Env): WebClientSettings {
  const dir = read(env, "WEB_CLIENT_DIR") ?? null;
  if (dir !== null && /[\0\r\n]/.test(dir)) throw new ConfigError("WEB_CLIENT_DIR", "not a folder path");
  const given = read(env, "WEB_CONNECT_SRC");
  const connectSrc = given === undefined ? DEFAULT_WEB_CONNECT_SRC : given.split(/\s+/);
  if (connectSrc.length > 32) throw new ConfigError("WEB_CONNECT_SRC", "at most 32 sources");
  for (const source of connectSrc) {
    const port = /:(\d+)\/?$/.exec(source)?.[1];
    if (!CONNECT_SOURCE.test(source) || (port !== undefined && Number(port) > 65535)) {
      throw new ConfigError(
        "WEB_CONNECT_SRC",
        `"${source.slice(0, 80)}" is not a CSP source the page may connect to; expected space-separated schemes (https:) or origins (https://rpc.example.org, http://127.0.0.1:*)`,
      );
    }
  }
  return { dir, connectSrc };
}

/**
 * Bounds on what a client can make the relay hold (descriptors, mailbox space) and who may read /metrics.
 * Each has a default that is safe on the open internet.
 */
export interface RelayBounds {
  /** MAILBOX_QUOTA_MESSAGES: waiting (unacknowledged) messages per recipient */
  mailboxQuotaMessages: number;
  /** MAILBOX_QUOTA_BYTES: waiting envelope bytes per recipient */
  mailboxQuotaBytes: number;
  /** MAILBOX_FULL_RETRY_AFTER_SECONDS: the retry hint a MAILBOX_FULL refusal carries */
  mailboxFullRetryAfterSeconds: number;
  /** METRICS_TOKEN: when set, GET /metrics needs `Authorization: Bearer <token>`; never logged */
  metricsToken: string | null;
  /** METRICS_DEPTH_REFRESH_SECONDS: the mailbox depth gauge is counted at most this often */
  metricsDepthRefreshMs: number;
  /** HTTP_HEADERS_TIMEOUT_SECONDS: a request's headers must arrive within this (slow-header clients are cut) */
  httpHeadersTimeoutMs: number;
  /** HTTP_REQUEST_TIMEOUT_SECONDS: a whole request (headers and body) must arrive within this */
  httpRequestTimeoutMs: number;
  /** HTTP_KEEP_ALIVE_TIMEOUT_SECONDS: an idle kept-alive connection is closed after this */
  httpKeepAliveTimeoutMs: number;
  /** HTTP_MAX_CONNECTIONS_PER_ADDRESS: open connections (WebSockets included) from one client address */
  httpMaxConnectionsPerAddress: number;
  /** HTTP_MAX_CONNECTIONS: open connections in all */
  httpMaxConnections: number;
}

function parseBounds(env: Env): RelayBounds {
  const metricsToken = read(env, "METRICS_TOKEN") ?? null;
  // The value itself is never echoed: it is a credential.
  if (metricsToken !== null && !/^[\x21-\x7e]{16,256}$/.test(metricsToken)) {
    throw new ConfigError("METRICS_TOKEN", "expected 16 to 256 printable characters without spaces, e.g. `openssl rand -hex 32`");
  }
  const httpHeadersTimeoutMs = integer(env, "HTTP_HEADERS_TIMEOUT_SECONDS", 10, 1, 600) * 1000;
  const httpRequestTimeoutMs = integer(env, "HTTP_REQUEST_TIMEOUT_SECONDS", 30, 1, 3600) * 1000;
  // Node refuses a header timeout longer than the request's, and the request timeout covers the headers anyway.
  if (httpHeadersTimeoutMs > httpRequestTimeoutMs) {
    throw new ConfigError("HTTP_HEADERS_TIMEOUT_SECONDS", "must not exceed HTTP_REQUEST_TIMEOUT_SECONDS");
  }
  return {
    mailboxQuotaMessages: integer(env, "MAILBOX_QUOTA_MESSAGES", 10_000, 1, 10_000_000),
    mailboxQuotaBytes: integer(env, "MAILBOX_QUOTA_BYTES", 64 * 1024 * 1024, 1024, 1024 ** 4),
    mailboxFullRetryAfterSeconds: integer(env, "MAILBOX_FULL_RETRY_AFTER_SECONDS", 60, 1, 86_400),
    metricsToken,
    metricsDepthRefreshMs: integer(env, "METRICS_DEPTH_REFRESH_SECONDS", 15, 1, 3600) * 1000,
    httpHeadersTimeoutMs,
    httpRequestTimeoutMs,
    httpKeepAliveTimeoutMs: integer(env, "HTTP_KEEP_ALIVE_TIMEOUT_SECONDS", 5, 1, 600) * 1000,
    httpMaxConnectionsPerAddress: integer(env, "HTTP_MAX_CONNECTIONS_PER_ADDRESS", 64, 1, 1_000_000),
    httpMaxConnections: integer(env, "HTTP_MAX_CONNECTIONS", 4096, 1, 1_000_000),
  };
}

/**
 * Bounds on what one WebSocket client, or one stream of junk names, can make the relay hold or ask the
 * chain. Each has a default that is safe on the open internet.
 */
export interface MessagingBounds {
  /** WS_MAX_CONNECTIONS: WebSocket connections on this instance; beyond it the upgrade answers 503 */
  maxConnections: number;
  /** WS_MAX_CONNECTIONS_PER_USER: connections of one user on this instance; beyond it 429 */
  maxConnectionsPerUser: number;
  /** WS_MAX_CONNECTIONS_PER_ADDRESS: connections (and upgrades being authenticated) from one address; beyond it 429 */
  maxConnectionsPerAddress: number;
  /** WS_MAX_BUFFERED_BYTES: unsent output of one connection beyond which it is closed with 1013 */
  maxBufferedBytes: number;
  /** WS_MAX_HELD_MESSAGES: live messages held while a connection reads its backlog; beyond it they are re-read from the mailbox */
  maxHeldMessages: number;
  /** WS_BACKLOG_TIMEOUT_SECONDS: the backlog must be sent within this, or the connection is closed with 1013 */
  backlogTimeoutMs: number;
  /** WS_REJECTED_FRAME_BURST: rejected frames answered before the connection is closed with 1008 */
  rejectedFrameBurst: number;
  /** WS_PING_INTERVAL_SECONDS: a connection that did not answer the previous ping by the next one is dropped */
  pingIntervalMs: number;
  /** UNKNOWN_USER_CACHE_SECONDS: how long a name the chain does not know is answered UNKNOWN_USER without asking again */
  unknownUserTtlMs: number;
  /** USER_DIRECTORY_MAX_ENTRIES: names remembered as registered, and as unknown (each) */
  userDirectoryMaxEntries: number;
  /** KEYS_MISSES_PER_ADDRESS: key lookups per RATE_LIMIT_WINDOW_SECONDS per address that must ask the chain */
  keysMissesPerAddress: number;
}

function parseMessagingBounds(env: Env): MessagingBounds {
  return {
    maxConnections: integer(env, "WS_MAX_CONNECTIONS", 10_000, 1, 1_000_000),
    maxConnectionsPerUser: integer(env, "WS_MAX_CONNECTIONS_PER_USER", 8, 1, 10_000),
    maxConnectionsPerAddress: integer(env, "WS_MAX_CONNECTIONS_PER_ADDRESS", 32, 1, 1_000_000),
    maxBufferedBytes: integer(env, "WS_MAX_BUFFERED_BYTES", 4 * 1024 * 1024, 64 * 1024, 1024 ** 3),
    maxHeldMessages: integer(env, "WS_MAX_HELD_MESSAGES", 1_000, 1, 1_000_000),
    backlogTimeoutMs: integer(env, "WS_BACKLOG_TIMEOUT_SECONDS", 60, 1, 3600) * 1000,
    rejectedFrameBurst: integer(env, "WS_REJECTED_FRAME_BURST", 20, 1, 10_000),
    pingIntervalMs: integer(env, "WS_PING_INTERVAL_SECONDS", 30, 1, 3600) * 1000,
    unknownUserTtlMs: integer(env, "UNKNOWN_USER_CACHE_SECONDS", 30, 1, 3600) * 1000,
    userDirectoryMaxEntries: integer(env, "USER_DIRECTORY_MAX_ENTRIES", 10_000, 16, 10_000_000),
    keysMissesPerAddress: integer(env, "KEYS_MISSES_PER_ADDRESS", 60, 1, 1_000_000),
  };
}

/**
 * How the relayer spends its gas. A transaction the contract would reject is never broadcast; one that
 * waits too long at a low fee is re-sent at the same nonce with higher fees, a bounded number of times.
 */
export interface RelayerGasSettings {
  /** RELAYER_BALANCE_WARN_WEI: below this balance /healthz says so and a warning is logged */
  balanceWarnWei: bigint;
  /** TX_DEADLINE_MARGIN_SECONDS: a signature deadline closer than this to the chain's time is refused before sending */
  deadlineMarginSeconds: number;
  /** TX_REPLACE_AFTER_SECONDS: a transaction not mined after this is re-sent with higher fees */
  replaceAfterMs: number;
  /** TX_FEE_BUMP_PERCENT: how much each replacement raises both fees (nodes require at least 12.5) */
  feeBumpPercent: number;
  /** TX_MAX_REPLACEMENTS: replacements of one transaction at most (then it waits for the receipt timeout) */
  maxReplacements: number;
}

export const DEFAULT_RELAYER_GAS: RelayerGasSettings = {
  // 0.05 ether: a few hundred registrations at typical L2 prices, a handful on a busy mainnet.
  balanceWarnWei: 50_000_000_000_000_000n,
  deadlineMarginSeconds: 60,
  replaceAfterMs: 30_000,
  feeBumpPercent: 25,
  maxReplacements: 5,
};

function parseRelayerGas(env: Env): RelayerGasSettings {
  const warn = read(env, "RELAYER_BALANCE_WARN_WEI");
  if (warn !== undefined && !/^\d{1,40}$/.test(warn)) throw new ConfigError("RELAYER_BALANCE_WARN_WEI", `expected a whole number of wei, got "${warn}"`);
  return {
    balanceWarnWei: warn === undefined ? DEFAULT_RELAYER_GAS.balanceWarnWei : BigInt(warn),
    deadlineMarginSeconds: integer(env, "TX_DEADLINE_MARGIN_SECONDS", DEFAULT_RELAYER_GAS.deadlineMarginSeconds, 0, 86_400),
    replaceAfterMs: integer(env, "TX_REPLACE_AFTER_SECONDS", DEFAULT_RELAYER_GAS.replaceAfterMs / 1000, 1, 3600) * 1000,
    // Nodes refuse a replacement raising either fee by less than 12.5 %; 13 is the least whole percent that passes.
    feeBumpPercent: integer(env, "TX_FEE_BUMP_PERCENT", DEFAULT_RELAYER_GAS.feeBumpPercent, 13, 1000),
    maxReplacements: integer(env, "TX_MAX_REPLACEMENTS", DEFAULT_RELAYER_GAS.maxReplacements, 0, 100),
  };
}

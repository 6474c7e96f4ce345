/**
 * Helpers of the accounts and sync tests (no tests here): a relay built in-process with createRelayStack
 * (plain HTTP on a free port) over the real MariaDB or memory stores, and a client that registers, logs in, rotates and resets the way the CLI does.
 */
import { tmpdir } from "node:os";
import path from "node:path";
import { Wallet } from "ethers";
import pino from "pino";
import type { RegistryDomain } from "../../protocol/eip712";
import { loginMessage } from "../../protocol/wire";
import { parseConfig, type RelayConfig } from "../../relay/config";
import { createRelayStack, type RelayStack } from "../../relay/stack";
import type { ChainFixture } from "../helpers/chain";
import { signRegister, signReset, signRotate, signUpdateCredential, type Identity } from "../helpers/signing";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { freePort } from "../helpers/ports";
import { relayEnv } from "../helpers/relay-process";
import type { TestUser } from "../helpers/users";

/**
 * The environment of an in-process relay: the relay processes' own (every setting explicit), on plain
 * HTTP (so DATA_DIR, where only a TLS certificate would go, stays unused), quiet, port chosen later.
 */
export function testEnv(chain: ChainFixture, extra: Record<string, string> = {}): Record<string, string> {
  return relayEnv({
    rpcUrl: chain.anvil.url,
    contractAddress: chain.deployed.address,
    deployBlock: chain.deployed.deployBlock,
    relayerKey: chain.deployed.relayerKey,
    dataDir: path.join(tmpdir(), "chat-relay-in-process"),
    port: 0,
    env: { INSECURE_HTTP: "1", LOG_LEVEL: "silent", ...extra },
  });
}

export interface RelayFixture {
  url: string;
  /** the relay's parts (pool, cache, chain, syncer, ...) */
  relay: RelayStack;
  config: RelayConfig;
  chain: RelayStack["chain"];
  pool: RelayStack["pool"];
  db: TestDatabase | null;
  close(): Promise<void>;
}

/** A relay in this process. `db` given: its MySQL cache and mailbox; none: memory stores. */
export async function startRelay(params: {
  chain: ChainFixture;
  env?: Record<string, string>;
  db?: TestDatabase | null;
  /** reuse a pepper/secret across restarts */
  config?: RelayConfig;
}): Promise<RelayFixture> {
  const config = params.config ?? parseConfig(testEnv(params.chain, { ...params.env }));
  config.port = await freePort();
  const db = params.db ?? null;
  config.mysqlUrl = db?.url ?? null;
  const logger = pino({ level: process.env.TEST_RELAY_LOG ?? "silent" });
  const relay = await createRelayStack({ config, logger, overrides: { poolConnectionLimit: 5, writeSyncWaitMs: 5_000, memoryMailbox: true } });
  try {
    const { url } = await relay.listen();
    return { url, relay, config, chain: relay.chain, pool: relay.pool, db, close: () => relay.close() };
  } catch (error) {
    await relay.close();
    throw error;
  }
}

export async function api(url: string, method: string, pathname: string, body?: unknown, token?: string): Promise<{ status: number; headers: Headers; body: any }> {
  const response = await fetch(`${url}${pathname}`, {
    method,
    headers: { ...(body === undefined ? {} : { "content-type": "application/json" }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : undefined };
}

export const deadline = () => Math.floor(Date.now() / 1000) + 3600;

export async function registerUser(url: string, domain: RegistryDomain, user: TestUser) {
  const hash = await api(url, "POST", "/v1/credential-hash", { username: user.username, credential: user.credential });
  if (hash.status !== 200) return hash;
  const d = deadline();
  const signature = signRegister({
    domain,
    signer: user.identity,
    username: user.username,
    credentialHash: hash.body.credentialHash,
    deadline: BigInt(d),
  });
  return api(url, "POST", "/v1/register", {
    username: user.username,
    credential: user.credential,
    publicKey: user.identity.publicKey,
    deadline: d,
    signature,
  });
}

export async function login(
  url: string,
  domain: RegistryDomain,
  user: TestUser,
  options: { credential?: string; signer?: Identity } = {},
) {
  const challenge = await api(url, "POST", "/v1/login/challenge", { username: user.username });
  if (challenge.status !== 200) return challenge;
  const message = loginMessage({
    username: user.username,
    challenge: challenge.body.challenge,
    chainId: domain.chainId.toString(),
    contractAddress: domain.verifyingContract,
  });
  const signature = await new Wallet((options.signer ?? user.identity).privateKey).signMessage(message);
  return api(url, "POST", "/v1/login", {
    username: user.username,
    credential: options.credential ?? user.credential,
    challenge: challenge.body.challenge,
    signature,
  });
}

export async function rotateUser(url: string, chain: ChainFixture, user: TestUser, next: Identity) {
  const nonce = await chain.registry.nonces(user.username);
  const d = deadline();
  const common = { domain: chain.domain, username: user.username, newPublicKey: next.publicKey, nonce, deadline: BigInt(d) };
  return api(url, "POST", "/v1/rotate", {
    username: user.username,
    newPublicKey: next.publicKey,
    deadline: d,
    currentKeySignature: signRotate({ ...common, signer: user.identity }),
    newKeySignature: signRotate({ ...common, signer: next }),
  });
}

export async function resetUser(url: string, chain: ChainFixture, user: TestUser, next: Identity, credential = user.credential) {
  const nonce = await chain.registry.nonces(user.username);
  const d = deadline();
  return api(url, "POST", "/v1/reset", {
    username: user.username,
    credential,
    newPublicKey: next.publicKey,
    deadline: d,
    newKeySignature: signReset({ domain: chain.domain, signer: next, username: user.username, newPublicKey: next.publicKey, nonce, deadline: BigInt(d) }),
  });
}

/** `token`: the user's session, without which the relay refuses a registered name's credential hash. */
export async function changeCredential(url: string, chain: ChainFixture, user: TestUser, credential: string, token?: string) {
  const hash = await api(url, "POST", "/v1/credential-hash", { username: user.username, credential }, token);
  if (hash.status !== 200) return hash;
  const nonce = await chain.registry.nonces(user.username);
  const d = deadline();
  return api(url, "POST", "/v1/credential", {
    username: user.username,
    credential,
    deadline: d,
    signature: signUpdateCredential({
      domain: chain.domain,
      signer: user.identity,
      username: user.username,
      credentialHash: hash.body.credentialHash,
      nonce,
      deadline: BigInt(d),
    }),
  });
}

export async function withDatabase(): Promise<TestDatabase> {
  return createTestDatabase("chat_accounts");
}

/**
 * The stack the browser tests run against (no tests here): a real anvil with ChatRegistry deployed, a
 * database of its own on the real MariaDB, and one relay process (TLS, its self-signed certificate) serving
 * a freshly built web client, as `npm start` runs it. The client is built once per test run (per output
 * folder) and shared by every stack. `registerAndLogin` makes a user over the relay's HTTPS API the way a
 * client does and returns its session token.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Wallet } from "ethers";
import { registryDomain, type RegistryDomain } from "../../protocol/eip712";
import { loginMessage } from "../../protocol/wire";
import { buildWebClient, type WebBuild } from "../../scripts/build-web";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { deployRegistry } from "../helpers/registry";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { signRegister } from "../helpers/signing";
import type { TestUser } from "../helpers/users";

const builds = new Map<string, Promise<WebBuild>>();
let defaultOutDir: string | null = null;

/** The web client built into `outDir` (default: a folder of this test run), once per folder and run. */
export function builtWebClient(outDir?: string): Promise<WebBuild> {
  if (outDir === undefined) {
    if (defaultOutDir === null) {
      const parent = mkdtempSync(path.join(tmpdir(), "eth-chat-web-"));
      defaultOutDir = path.join(parent, "web");
      process.once("exit", () => rmSync(parent, { recursive: true, force: true }));
    }
    outDir = defaultOutDir;
  }
  let build = builds.get(outDir);
  if (!build) {
    build = buildWebClient({ outDir });
    builds.set(outDir, build);
    build.catch(() => builds.delete(outDir!));
  }
  return build;
}

export interface WebStack {
  /** the page's address, https://127.0.0.1:<port>/ */
  url: string;
  rpcUrl: string;
  /** ChatRegistry's address */
  contract: string;
  chainId: bigint;
  domain: RegistryDomain;
  relayProcess: RelayProcess;
  build: WebBuild;
  stop(): Promise<void>;
}

export async function startWebStack(options: { env?: Record<string, string>; outDir?: string } = {}): Promise<WebStack> {
  const build = await builtWebClient(options.outDir);
  const cleanups: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    cleanups.length = 0;
  };
  try {
    const anvil: AnvilNode = await startAnvil();
    cleanups.push(() => anvil.stop());
    const deployed = await deployRegistry({ rpcUrl: anvil.url });
    const db: TestDatabase = await createTestDatabase("chat_web");
    cleanups.push(() => db.drop());
    const dataDir = mkdtempSync(path.join(tmpdir(), "eth-chat-web-relay-"));
    cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
    const relayProcess = await startRelayProcess({
      rpcUrl: anvil.url,
      contractAddress: deployed.address,
      deployBlock: deployed.deployBlock,
      relayerKey: deployed.relayerKey,
      mysqlUrl: db.url,
      dataDir,
      env: { WEB_CLIENT_DIR: build.outDir, LOG_LEVEL: "warn", ...options.env },
    });
    cleanups.push(() => relayProcess.stop());
    return {
      url: `${relayProcess.url}/`,
      rpcUrl: anvil.url,
      contract: deployed.address,
      chainId: deployed.chainId,
      domain: registryDomain({ chainId: deployed.chainId, verifyingContract: deployed.address }),
      relayProcess,
      build,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Registers `user` through the relay (which pays the gas) and logs in; returns the session token. */
export async function registerAndLogin(stack: WebStack, user: TestUser): Promise<string> {
  const relay = stack.relayProcess;
  const expectOk = (what: string, answer: { status: number; body: any }) => {
    if (answer.status !== 200) throw new Error(`${what} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    return answer.body;
  };
  const { credentialHash } = expectOk("credential-hash", await relay.request("POST", "/v1/credential-hash", { username: user.username, credential: user.credential }));
  const deadline = Math.floor(Date.now() / 1000) + 3600;
  const signature = signRegister({ domain: stack.domain, signer: user.identity, username: user.username, credentialHash, deadline: BigInt(deadline) });
  expectOk(
    "register",
    await relay.request("POST", "/v1/register", { username: user.username, credential: user.credential, publicKey: user.identity.publicKey, deadline, signature }),
  );
  const { challenge } = expectOk("login challenge", await relay.request("POST", "/v1/login/challenge", { username: user.username }));
  const message = loginMessage({ username: user.username, challenge, chainId: stack.chainId.toString(), contractAddress: stack.contract });
  const loginSignature = await new Wallet(user.identity.privateKey).signMessage(message);
  const { token } = expectOk(
    "login",
    await relay.request("POST", "/v1/login", { username: user.username, credential: user.credential, challenge, signature: loginSignature }),
  );
  return token as string;
}

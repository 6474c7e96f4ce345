/**
 * Helpers of the reliability tests (no tests here): a real anvil with ChatRegistry, relay processes
 * with fixed secrets (so that a restarted relay accepts the sessions and passwords of the first one),
 * users registered over the relay's HTTP API, and the CLI's own client code (cli/ Context, Messenger,
 * RelayConnection) driven in-process with its output captured.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { registryDomain, type RegistryDomain } from "../../protocol/eip712";
import type { ServerFrame } from "../../protocol/wire";
import { loginWithKeys } from "../../cli/auth";
import { RelayConnection } from "../../cli/connection";
import { Context } from "../../cli/context";
import { Messenger } from "../../cli/messaging";
import { MlsChat } from "../../cli/mls/chat";
import { Output, type Warning } from "../../cli/output";
import type { Session } from "../../cli/session";
import { signRegister } from "../helpers/signing";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { deployRegistry, type DeployedRegistry } from "../helpers/registry";
import { newTestUser, type TestUser } from "../helpers/users";
import { sleep, waitFor } from "../helpers/wait";

export { newTestUser, sleep, waitFor, type TestUser };
import type { RelayProcess, RelayProcessOptions } from "../helpers/relay-process";

export interface Chain {
  anvil: AnvilNode;
  deployed: DeployedRegistry;
  domain: RegistryDomain;
}

export async function startChain(options: { blockTime?: number } = {}): Promise<Chain> {
  const anvil = await startAnvil(options);
  const deployed = await deployRegistry({ rpcUrl: anvil.url });
  return { anvil, deployed, domain: registryDomain({ chainId: deployed.chainId, verifyingContract: deployed.address }) };
}

/** Secrets shared by every relay process of one test: a restart or a second instance accepts the same sessions. */
export function relaySecrets(): Record<string, string> {
  return { CREDENTIAL_PEPPER: randomBytes(32).toString("hex"), SESSION_SECRET: randomBytes(32).toString("hex") };
}

export function relayOptions(
  chain: Chain,
  params: { dataDir: string; secrets: Record<string, string>; mysqlUrl?: string; redisUrl?: string; rpcUrl?: string; port?: number; env?: Record<string, string> },
): RelayProcessOptions {
  return {
    rpcUrl: params.rpcUrl ?? chain.anvil.url,
    contractAddress: chain.deployed.address,
    deployBlock: chain.deployed.deployBlock,
    relayerKey: chain.deployed.relayerKey,
    mysqlUrl: params.mysqlUrl,
    redisUrl: params.redisUrl,
    dataDir: params.dataDir,
    port: params.port,
    env: { LOG_LEVEL: "warn", ...params.secrets, ...params.env },
  };
}

/** Registers over the relay's HTTP API (concurrently: the relay serialises its nonces); throws on failure. */
export async function registerUsers(relay: Pick<RelayProcess, "request">, domain: RegistryDomain, users: TestUser[]): Promise<void> {
  await Promise.all(
    users.map(async (user) => {
      const hash = await relay.request("POST", "/v1/credential-hash", { username: user.username, credential: user.credential });
      if (hash.status !== 200) throw new Error(`credential-hash ${user.username}: ${JSON.stringify(hash.body)}`);
      const deadline = Math.floor(Date.now() / 1000) + 3600;
      const signature = signRegister({ domain, signer: user.identity, username: user.username, credentialHash: hash.body.credentialHash, deadline: BigInt(deadline) });
      const answer = await relay.request("POST", "/v1/register", {
        username: user.username,
        credential: user.credential,
        publicKey: user.identity.publicKey,
        deadline,
        signature,
      });
      if (answer.status !== 200) throw new Error(`register ${user.username}: ${answer.status} ${JSON.stringify(answer.body)}`);
    }),
  );
}

/** What the in-process client printed: data objects (--json) and warnings. */
export interface Captured {
  data: any[];
  warnings: Warning[];
  text: string;
}

export interface CliClient {
  user: TestUser;
  home: string;
  ctx: Context;
  session: Session;
  messenger: Messenger;
  out: Captured;
  close(): void;
}

/**
 * A client context with the CLI's code, its output captured instead of printed. `contract` is the
 * deployment the client trusts (the test's own), as a user would pass --contract.
 */
export function cliContext(params: { relayUrl: string; rpcUrl: string; contract: string; home: string }): { ctx: Context; out: Captured } {
  mkdirSync(params.home, { recursive: true, mode: 0o700 });
  const ctx = new Context({ relay: params.relayUrl, rpc: params.rpcUrl, contract: params.contract, home: params.home, json: true }, {});
  const out: Captured = { data: [], warnings: [], text: "" };
  const sink = {
    isTTY: false,
    write(chunk: string) {
      out.text += chunk;
      for (const line of chunk.split("\n")) {
        if (!line.startsWith("{")) continue;
        const object = JSON.parse(line);
        if (object.type === "warning") out.warnings.push(object);
        else out.data.push(object);
      }
      return true;
    },
  } as unknown as NodeJS.WriteStream;
  (ctx as { out: Output }).out = new Output(true, sink, sink);
  return { ctx, out };
}

/** Logs `user` in with the CLI's own login (challenge signed by the key, session.json written in `home`). */
export async function loginCli(params: { relayUrl: string; rpcUrl: string; contract: string; home: string; user: TestUser }): Promise<CliClient> {
  const { ctx, out } = cliContext(params);
  const session = await loginWithKeys({
    ctx,
    username: params.user.username,
    credential: params.user.credential,
    keys: [{ index: 0, privateKey: params.user.identity.privateKey }],
  });
  return { user: params.user, home: params.home, ctx, session, messenger: new Messenger(ctx, session), out, close: () => ctx.close() };
}

/**
 * The client's MLS chat (cli/mls/chat.ts) with this device's key packages on the relay, as `chat login`
 * leaves it: others can then start a chat with this user while it is offline.
 */
export async function publishMls(client: CliClient): Promise<MlsChat> {
  const chat = await MlsChat.open(client.ctx, client.session);
  await chat.publishKeyPackages();
  return chat;
}

/**
 * A live receiver made of the CLI's code: opens each MessageFrame with Messenger.receive (checks,
 * history, ack) in arrival order, and records every message it shows.
 */
export function receiveLive(client: CliClient, conn: RelayConnection, shown: (inner: { id: string; sender: string; body: string }) => void) {
  let queue = Promise.resolve();
  conn.onFrame((frame: ServerFrame) => {
    if (frame.type !== "message") return;
    queue = queue.then(async () => {
      const inner = await client.messenger.receive(conn, frame);
      if (inner) shown(inner);
    });
  });
  return { idle: () => queue };
}

/**
 * A TCP proxy on a fixed loopback port: each connection goes to the first target that accepts (a
 * stand-in for a load balancer with health checks), or is refused like a dead service while `down()`.
 */
export interface TcpProxy {
  port: number;
  url(scheme: string): string;
  /** Stops listening and cuts every open connection (the service "goes away"). */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(targets: () => number[]): Promise<TcpProxy> {
  const { freePort } = await import("../helpers/ports");
  const net = await import("node:net");
  const port = await freePort();
  const sockets = new Set<import("node:net").Socket>();
  const track = (s: import("node:net").Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => s.destroy());
  };
  const connect = (client: import("node:net").Socket, list: number[]) => {
    if (list.length === 0) return client.destroy();
    const upstream = net.connect(list[0], "127.0.0.1");
    let connected = false;
    track(upstream);
    upstream.once("connect", () => {
      connected = true;
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      upstream.on("close", () => client.destroy());
      client.on("close", () => upstream.destroy());
    });
    // A target that refuses (a dead instance): try the next one.
    upstream.once("error", () => (connected ? client.destroy() : connect(client, list.slice(1))));
  };
  let server: import("node:net").Server | null = null;
  const up = () =>
    new Promise<void>((resolve, reject) => {
      const s = net.createServer({ pauseOnConnect: true }, (client) => {
        track(client);
        connect(client, targets());
      });
      s.once("error", reject);
      s.listen(port, "127.0.0.1", () => {
        server = s;
        resolve();
      });
    });
  const down = async () => {
    const s = server;
    server = null;
    for (const socket of sockets) socket.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  await up();
  return { port, url: (scheme) => `${scheme}://127.0.0.1:${port}`, down, up, close: down };
}

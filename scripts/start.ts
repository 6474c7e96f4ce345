/**
 * `npm start`: the whole stack on one machine, for a person trying the product.
 *
 * - No RPC_URL: a local anvil with persistent state in DATA_DIR/chain (survives restarts), ChatRegistry
 *   deployed there with Ignition once, its address remembered in DATA_DIR/local.env and recorded for the
 *   client in DATA_DIR/deployment.json (chain id, address, deploy block): on a local chain, `chat` trusts that
 *   deployment without --contract (cli/trust-anchor.ts).
 * - RPC_URL and CONTRACT_ADDRESS set: those are used as they are.
 * - Missing development settings (relayer account of the local chain, a random pepper and session secret)
 *   are created in DATA_DIR/local.env (mode 0600, never in git) and named on the console.
 * - The browser client is built into DATA_DIR/web (scripts/build-web.ts) and served by the relay at / (its
 *   bundle's SHA-256 is in the summary, to compare with a build of the same commit); a failed build stops here.
 * - Then the relay (it generates its TLS certificate into DATA_DIR itself), and a summary with the next step.
 * Ctrl-C stops the relay, then the chain (which writes its state), and exits.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { connect, createServer } from "node:net";
import { createInterface } from "node:readline";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parse as parseDotenv } from "dotenv";
import { HDNodeWallet, Wallet, isAddress } from "ethers";
import { connectRpc, fetchChainId, hasContractCode } from "../chain/rpc";
import { LOCAL_DEPLOYMENT_FILE_NAME, type LocalDeployment } from "../cli/trust-anchor";
import { buildWebClient } from "./build-web";
import { readableLogLine } from "./log-lines";

const ROOT = path.resolve(__dirname, "..");
const BIN = path.join(ROOT, "node_modules", ".bin");

/** anvil's public development mnemonic: its accounts are funded on the local chain only. */
const LOCAL_MNEMONIC = "test test test test test test test test test test test junk";

type Env = Record<string, string | undefined>;

/** What npm start runs, oldest first; stopped newest first. */
const children: ChildProcess[] = [];

function say(line: string): void {
  process.stderr.write(`${line}\n`);
}

function fail(line: string): never {
  say(`npm start: ${line}`);
  for (const child of children) if (child.exitCode === null) child.kill("SIGTERM");
  process.exit(1);
}

/** Settings: the environment wins over .env, which wins over generated local settings. */
function loadSettings(): { env: Env; dataDir: string; localEnvFile: string; local: Env } {
  const dotenvFile = path.join(ROOT, ".env");
  const fromFile: Env = existsSync(dotenvFile) ? parseDotenv(readFileSync(dotenvFile)) : {};
  const merged: Env = { ...fromFile };
  for (const [key, value] of Object.entries(process.env)) if (value !== undefined && value !== "") merged[key] = value;
  for (const key of Object.keys(merged)) if (merged[key] === "") delete merged[key];
  const dataDir = path.resolve(ROOT, merged.DATA_DIR ?? "data");
  const localEnvFile = path.join(dataDir, "local.env");
  const local: Env = existsSync(localEnvFile) ? parseDotenv(readFileSync(localEnvFile)) : {};
  return { env: merged, dataDir, localEnvFile, local };
}

function saveLocal(file: string, local: Env): void {
  const lines = [
    "# Local development settings made by `npm start`. Not for any real network. Delete to regenerate.",
    ...Object.entries(local)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${v}`),
  ];
  writeFileSync(file, `${lines.join("\n")}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
}

function portInUse(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(true));
    server.listen(port, host, () => server.close(() => resolve(false)));
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(what: string, probe: () => Promise<boolean>, child: ChildProcess, timeoutMs: number): Promise<void> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (child.exitCode !== null) fail(`${what} exited with code ${child.exitCode} (see its output above)`);
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  fail(`${what} did not come up within ${Math.round(timeoutMs / 1000)} s`);
}

async function rpcReady(url: string): Promise<boolean> {
  await fetchChainId(url, { timeoutMs: 2000 });
  return true;
}

let stopping = false;

function stopAll(code: number): void {
  if (stopping) return;
  stopping = true;
  say("stopping...");
  // The relay first (it finishes its requests), then the chain (anvil writes its state on exit).
  const ordered = [...children].reverse();
  const next = (): void => {
    const child = ordered.shift();
    if (!child) {
      releaseLock();
      say("stopped.");
      process.exit(code);
    }
    if (child.exitCode !== null || child.signalCode !== null) return next();
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => {
      clearTimeout(timer);
      next();
    });
    child.kill("SIGTERM");
  };
  next();
}

let lockFile = "";
function releaseLock(): void {
  if (lockFile && existsSync(lockFile)) {
    try {
      if (Number(readFileSync(lockFile, "utf8")) === process.pid) rmSync(lockFile);
    } catch {
      /* already gone */
    }
  }
}

async function main(): Promise<void> {
  const { env, dataDir, localEnvFile, local } = loadSettings();
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });

  // One stack per data folder: a second start says so instead of failing on a busy port.
  lockFile = path.join(dataDir, "start.pid");
  if (existsSync(lockFile)) {
    const pid = Number(readFileSync(lockFile, "utf8"));
    if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) {
      fail(`already running (pid ${pid}) with data folder ${dataDir}; stop it with Ctrl-C in its terminal first`);
    }
  }
  writeFileSync(lockFile, String(process.pid));
  process.on("exit", releaseLock);

  const host = env.HOST ?? "127.0.0.1";
  const port = Number(env.PORT ?? 8443);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) fail(`PORT must be a TCP port, got "${env.PORT}"`);
  if (await portInUse(host, port)) fail(`port ${port} on ${host} is in use (PORT); stop what uses it or set PORT`);

  say("compiling the contract (offline solc)...");
  const compiled = spawnSync(path.join(BIN, "hardhat"), ["compile", "--quiet"], { cwd: ROOT, stdio: "inherit", env: { ...process.env, HARDHAT_DISABLE_TELEMETRY_PROMPT: "true" } });
  if (compiled.status !== 0) fail("the contract did not compile");

  // Before the chain and the relay start, so that a broken client stops npm start with nothing to clean up.
  const webDir = path.join(dataDir, "web");
  say(`building the web client into ${webDir}...`);
  const web = await buildWebClient({ outDir: webDir }).catch((error: unknown) =>
    fail(`the web client did not build (nothing was started):\n${error instanceof Error ? error.message : String(error)}`),
  );

  const made: string[] = [];
  const relayEnv: Env = { ...env, DATA_DIR: dataDir, WEB_CLIENT_DIR: webDir };

  if (!env.RPC_URL) {
    const chainPort = Number(env.CHAIN_PORT ?? 8545);
    if (!Number.isInteger(chainPort) || chainPort <= 0 || chainPort > 65535) fail(`CHAIN_PORT must be a TCP port, got "${env.CHAIN_PORT}"`);
    if (await portInUse("127.0.0.1", chainPort)) {
      fail(`port ${chainPort} (CHAIN_PORT, the local chain) is in use; stop what uses it, set CHAIN_PORT, or set RPC_URL`);
    }
    const chainDir = path.join(dataDir, "chain");
    mkdirSync(chainDir, { recursive: true });
    const stateFile = path.join(chainDir, "state.json");
    const rpcUrl = `http://127.0.0.1:${chainPort}`;
    say(`starting the local chain (anvil) on ${rpcUrl}, state in ${stateFile}`);
    const anvil = spawn(
      path.join(BIN, "anvil"),
      ["--host", "127.0.0.1", "--port", String(chainPort), "--state", stateFile, "--state-interval", "1", "--silent"],
      { cwd: ROOT, stdio: ["ignore", "inherit", "inherit"], detached: false },
    );
    children.push(anvil);
    await waitFor("the local chain", () => rpcReady(rpcUrl), anvil, 30_000);
    relayEnv.RPC_URL = rpcUrl;

    if (!local.PRIVATE_KEY) {
      const relayer = HDNodeWallet.fromPhrase(LOCAL_MNEMONIC, undefined, "m/44'/60'/0'/0/0");
      local.PRIVATE_KEY = relayer.privateKey;
      local.ACCOUNT = relayer.address;
      made.push(`relayer account ${relayer.address} (anvil's development account 0)`);
    }

    // Deploy unless the remembered address still holds code (a deleted state file means a new chain).
    const { chainId, provider } = await connectRpc(rpcUrl);
    const deployed = local.CONTRACT_ADDRESS && isAddress(local.CONTRACT_ADDRESS) ? await hasContractCode(provider, local.CONTRACT_ADDRESS) : false;
    if (!deployed) {
      const deployBlock = await provider.getBlockNumber();
      const paramsFile = path.join(dataDir, "ignition-parameters.json");
      writeFileSync(paramsFile, JSON.stringify({ ChatRegistryModule: { relayer: local.ACCOUNT, resetDelay: 300 } }));
      say("deploying ChatRegistry with Ignition...");
      const deployment = spawnSync(
        path.join(BIN, "hardhat"),
        ["ignition", "deploy", "ignition/modules/ChatRegistry.ts", "--network", "localhost", "--parameters", paramsFile, "--reset"],
        {
          cwd: ROOT,
          encoding: "utf8",
          input: "y\n",
          env: { ...process.env, RPC_URL: rpcUrl, HARDHAT_DISABLE_TELEMETRY_PROMPT: "true" },
        },
      );
      if (deployment.status !== 0) {
        say(deployment.stdout + deployment.stderr);
        fail("deploying ChatRegistry failed");
      }
      const addresses = JSON.parse(
        readFileSync(path.join(ROOT, "ignition", "deployments", `chain-${chainId}`, "deployed_addresses.json"), "utf8"),
      ) as Record<string, string>;
      local.CONTRACT_ADDRESS = addresses["ChatRegistryModule#ChatRegistry"];
      local.DEPLOY_BLOCK = String(deployBlock);
      made.push(`ChatRegistry deployed at ${local.CONTRACT_ADDRESS}`);
    }
    provider.destroy();
    writeLocalDeployment(dataDir, { chainId: chainId.toString(), contractAddress: local.CONTRACT_ADDRESS!.toLowerCase(), deployBlock: Number(local.DEPLOY_BLOCK ?? 0) });
    relayEnv.CONTRACT_ADDRESS = local.CONTRACT_ADDRESS;
    relayEnv.DEPLOY_BLOCK = local.DEPLOY_BLOCK;
    relayEnv.PRIVATE_KEY ??= local.PRIVATE_KEY;
    relayEnv.ACCOUNT ??= local.ACCOUNT;
  } else if (!env.CONTRACT_ADDRESS) {
    fail("RPC_URL is set but CONTRACT_ADDRESS is not: deploy ChatRegistry there first (see README, Deployment)");
  }

  if (!relayEnv.PRIVATE_KEY) fail("PRIVATE_KEY (the relayer that pays gas) is not set for RPC_URL; see .env.example");
  if (!relayEnv.ACCOUNT) relayEnv.ACCOUNT = new Wallet(relayEnv.PRIVATE_KEY).address;
  for (const secret of ["CREDENTIAL_PEPPER", "SESSION_SECRET"] as const) {
    if (!relayEnv[secret]) {
      local[secret] ??= randomBytes(32).toString("hex");
      if (!existsSync(localEnvFile) || !parseDotenv(readFileSync(localEnvFile))[secret]) made.push(`a random ${secret}`);
      relayEnv[secret] = local[secret];
    }
  }
  saveLocal(localEnvFile, local);
  if (made.length > 0) say(`made local development settings in ${localEnvFile}:\n  - ${made.join("\n  - ")}`);

  say("starting the relay...");
  // One node process with tsx's loader (not the tsx launcher, which forks a second process), so that
  // signals reach the relay itself.
  // On a terminal the relay's JSON lines become one short readable line each; piped or with
  // LOG_FORMAT=json they pass through untouched, as log pipelines expect.
  const readableLogs = Boolean(process.stdout.isTTY) && env.LOG_FORMAT !== "json";
  const relay = spawn(process.execPath, ["--import", "tsx", path.join(ROOT, "relay", "main.ts")], {
    cwd: ROOT,
    stdio: ["ignore", readableLogs ? "pipe" : "inherit", "inherit"],
    env: relayEnv as NodeJS.ProcessEnv,
  });
  children.push(relay);
  if (readableLogs && relay.stdout) {
    createInterface({ input: relay.stdout }).on("line", (line) => process.stdout.write(`${readableLogLine(line)}\n`));
  }
  relay.once("exit", (code) => {
    if (!stopping) {
      say(`the relay exited (code ${code})`);
      stopAll(code ?? 1);
    }
  });
  const scheme = env.INSECURE_HTTP === "1" ? "http" : "https";
  const displayHost = host === "0.0.0.0" ? "127.0.0.1" : host;
  const relayUrl = `${scheme}://${displayHost}:${port}`;
  await waitFor(
    "the relay",
    async () => {
      // The certificate is self-signed and pinned by the client; this local probe only asks whether it answers.
      const response = await fetchInsecure(`${relayUrl}/healthz`);
      return response !== undefined;
    },
    relay,
    60_000,
  );

  const mysqlNearby = !env.MYSQL_URL && (await portAnswers("127.0.0.1", 3306));
  // The client finds the local deployment by itself only in the default data folder; otherwise it is told.
  const clientFindsDeployment = !env.RPC_URL && dataDir === path.resolve(ROOT, "data");
  const summary = [
    "",
    "eth-chat is running:",
    `  chain    ${relayEnv.RPC_URL}${env.RPC_URL ? "" : " (local anvil, persistent)"}`,
    `  contract ${relayEnv.CONTRACT_ADDRESS}`,
    `  relay    ${relayUrl}`,
    `  storage  ${env.MYSQL_URL ? "MySQL (MYSQL_URL)" : `waiting messages in ${path.join(dataDir, "mailbox")} (durable across restarts)`}`,
    ...(mysqlNearby ? ["           a MySQL/MariaDB answers on 127.0.0.1:3306: set MYSQL_URL (see .env.example) to use it instead"] : []),
    `  data     ${dataDir}`,
    "",
    `Web client: ${relayUrl}/`,
    `  bundle sha256: ${web.bundleSha256} (to check it against a build of this commit, see README "The web client")`,
    "",
    `next, in another terminal:  npx chat${relayUrl === "https://127.0.0.1:8443" ? "" : ` --relay ${relayUrl}`}` +
      `${relayEnv.RPC_URL === "http://127.0.0.1:8545" ? "" : ` --rpc ${relayEnv.RPC_URL}`}` +
      `${clientFindsDeployment ? "" : ` --contract ${relayEnv.CONTRACT_ADDRESS}`}`,
    `stop with Ctrl-C${process.stdin.isTTY ? "; press Enter to show this summary again" : ""}`,
    "",
  ];
  for (const line of summary) say(line);
  // The summary scrolls away under the relay's log lines; Enter brings it back.
  if (process.stdin.isTTY) createInterface({ input: process.stdin }).on("line", () => summary.forEach(say));
}

/** Whether something accepts TCP connections at host:port (within a second). */
function portAnswers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 1000 });
    const done = (answer: boolean) => {
      socket.destroy();
      resolve(answer);
    };
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
    socket.once("timeout", () => done(false));
  });
}

/**
 * Records the local chain's deployment where `chat` looks for it (DATA_DIR/deployment.json). Written on
 * every start, so that it always names what this stack serves.
 */
function writeLocalDeployment(dataDir: string, deployment: LocalDeployment): void {
  writeFileSync(path.join(dataDir, LOCAL_DEPLOYMENT_FILE_NAME), `${JSON.stringify(deployment, null, 2)}\n`);
}

/** GET over https without verifying the certificate; resolves undefined when nothing answers. */
function fetchInsecure(url: string): Promise<number | undefined> {
  const client = url.startsWith("https:") ? require("node:https") : require("node:http");
  return new Promise((resolve) => {
    const request = client.get(url, { rejectUnauthorized: false, timeout: 2000 }, (response: import("node:http").IncomingMessage) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.on("error", () => resolve(undefined));
    request.on("timeout", () => {
      request.destroy();
      resolve(undefined);
    });
  });
}

process.on("SIGINT", () => stopAll(0));
process.on("SIGTERM", () => stopAll(0));
main().catch((error: unknown) => {
  say(`npm start: ${error instanceof Error ? error.message : String(error)}`);
  stopAll(1);
});

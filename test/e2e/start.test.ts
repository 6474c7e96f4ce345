/**
 * The README's first command, as a person runs it: `npm start` as a real process (with its own data folder
 * and free ports), then the real `chat` CLI registers a user; Ctrl-C; start again and the user is still on
 * the (persisted) chain and can log in.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import https from "node:https";
import { connect } from "node:net";
import { expect } from "chai";
import { freePort } from "../helpers/ports";

const ROOT = path.resolve(__dirname, "..", "..");

interface Stack {
  process: ChildProcess;
  output: () => string;
}

function startStack(env: NodeJS.ProcessEnv): Stack {
  // detached: its own process group, so that SIGINT reaches npm, start.ts, anvil and the relay as Ctrl-C does.
  const child = spawn("npm", ["start", "--silent"], { cwd: ROOT, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk) => (output += chunk));
  child.stderr!.on("data", (chunk) => (output += chunk));
  return { process: child, output: () => output };
}

function healthz(url: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    // The stack's certificate is self-signed; this probe only asks whether the relay answers.
    const request = https.get(`${url}/healthz`, { rejectUnauthorized: false, timeout: 2000 }, (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.on("error", () => resolve(undefined));
    request.on("timeout", () => request.destroy());
  });
}

async function waitForRelay(stack: Stack, url: string, timeoutMs: number): Promise<void> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (stack.process.exitCode !== null) throw new Error(`npm start exited early:\n${stack.output()}`);
    if ((await healthz(url)) !== undefined && stack.output().includes("npx chat")) return;
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`the relay did not come up:\n${stack.output()}`);
}

/** Ctrl-C to the whole process group; resolves once npm has exited and nothing answers on the ports. */
async function stopStack(stack: Stack, ports: number[]): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const child = stack.process;
  const exited =
    child.exitCode !== null || child.signalCode !== null
      ? { code: child.exitCode, signal: child.signalCode }
      : await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
          child.once("exit", (code, signal) => resolve({ code, signal }));
          process.kill(-child.pid!, "SIGINT");
        });
  // npm itself may die of the SIGINT at once; start.ts then stops the relay and the chain in order.
  const started = Date.now();
  while (Date.now() - started < 30_000) {
    const open = await Promise.all(ports.map((port) => portOpen(port)));
    if (!open.includes(true)) return exited;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the stack did not stop:\n${stack.output()}`);
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

function chat(args: string[], input: string, env: NodeJS.ProcessEnv) {
  return spawnSync(process.execPath, [path.join(ROOT, "bin", "chat.js"), ...args], {
    cwd: ROOT,
    input,
    env,
    encoding: "utf8",
    timeout: 120_000,
  });
}

describe("npm start (the whole stack as a process)", function () {
  this.timeout(300_000);
  let dataDir: string;
  let homeDir: string;
  let env: NodeJS.ProcessEnv;
  let relayUrl: string;
  let rpcUrl: string;
  let stack: Stack | undefined;
  let ports: number[];

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "chat-start-data-"));
    homeDir = mkdtempSync(path.join(tmpdir(), "chat-start-home-"));
    const port = await freePort();
    const chainPort = await freePort();
    ports = [port, chainPort];
    relayUrl = `https://127.0.0.1:${port}`;
    rpcUrl = `http://127.0.0.1:${chainPort}`;
    env = { ...process.env, DATA_DIR: dataDir, PORT: String(port), CHAIN_PORT: String(chainPort), HARDHAT_DISABLE_TELEMETRY_PROMPT: "true" };
    // Settings of a developer's own .env must not leak into this run.
    for (const key of ["RPC_URL", "CONTRACT_ADDRESS", "MYSQL_URL", "REDIS_URL", "PRIVATE_KEY", "ACCOUNT", "INSECURE_HTTP", "HOST"]) env[key] = "";
  });

  after(async () => {
    if (stack) await stopStack(stack, ports);
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(homeDir, { recursive: true, force: true });
  });

  it("starts, registers a user through the CLI, stops on Ctrl-C, and keeps the user across a restart", async () => {
    stack = startStack(env);
    await waitForRelay(stack, relayUrl, 180_000);
    expect(stack.output()).to.include("made local development settings");
    expect(readFileSync(path.join(dataDir, "local.env"), "utf8")).to.match(/CONTRACT_ADDRESS=0x[0-9a-fA-F]{40}/);

    const cliEnv = { ...env, CHAT_HOME: "" };
    const common = ["--relay", relayUrl, "--rpc", rpcUrl, "--home", homeDir, "--password-stdin"];
    const registered = chat([...common, "register", "alice"], "correct horse battery staple\n", cliEnv);
    expect(registered.status, registered.stderr).to.equal(0);

    // A second start on the same data folder says so instead of failing obscurely.
    const second = spawnSync("npx", ["tsx", "scripts/start.ts"], { cwd: ROOT, env, encoding: "utf8", timeout: 120_000 });
    expect(second.status).to.not.equal(0);
    expect(second.stderr).to.include("already running");

    const stopped = await stopStack(stack, ports);
    expect(stopped.code === 0 || stopped.signal === "SIGINT", JSON.stringify(stopped)).to.equal(true);
    expect(stack.output()).to.include("stopping...");

    // Start again: the chain persisted, so alice still exists and logs in.
    stack = startStack(env);
    await waitForRelay(stack, relayUrl, 180_000);
    expect(stack.output()).to.not.include("ChatRegistry deployed");
    const login = chat([...common, "login", "alice"], "correct horse battery staple\n", cliEnv);
    expect(login.status, login.stderr).to.equal(0);
    const whois = chat(["--relay", relayUrl, "--rpc", rpcUrl, "--home", homeDir, "--json", "whois", "alice"], "", cliEnv);
    expect(whois.status, whois.stderr).to.equal(0);
    expect(whois.stdout).to.include("registered");

    await stopStack(stack, ports);
    stack = undefined;
  });
});

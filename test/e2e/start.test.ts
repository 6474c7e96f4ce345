/**
 * The README's first command, as a person runs it: `npm start` as a real process (with its own data folder
 * and free ports), then the real `chat` CLI registers users; Ctrl-C; start again and the users are still on
 * the (persisted) chain and can log in. Messages waiting for an offline user survive both a Ctrl-C and a
 * SIGKILLed relay (the default store, without MySQL, is the durable log in the data folder): the user's
 * `chat inbox` shows each exactly once.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { lstatSync, mkdtempSync, rmSync, readFileSync } from "node:fs";
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

/**
 * In a git worktree whose node_modules is a symlink to a shared install, the start script's `npm install`
 * would rewrite that shared folder under other users' feet: there it runs as a dry run. Everywhere else
 * it runs as it does for a person.
 */
function installEnv(): NodeJS.ProcessEnv {
  const shared = lstatSync(path.join(ROOT, "node_modules"), { throwIfNoEntry: false })?.isSymbolicLink() ?? false;
  return shared ? { npm_config_dry_run: "true" } : {};
}

function startStack(env: NodeJS.ProcessEnv): Stack {
  // detached: its own process group, so that SIGINT reaches npm, start.ts, anvil and the relay as Ctrl-C does.
  const child = spawn("npm", ["start", "--silent"], { cwd: ROOT, env: { ...env, ...installEnv() }, detached: true, stdio: ["ignore", "pipe", "pipe"] });
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

/** The processes of one process group (npm, start.ts, anvil, the relay), with their command lines. */
function processesInGroup(pgid: number): { pid: number; args: string }[] {
  const listing = spawnSync("ps", ["-eo", "pid=,pgid=,args="], { encoding: "utf8" }).stdout;
  return listing
    .split("\n")
    .map((line) => line.trim().match(/^(\d+)\s+(\d+)\s+(.*)$/))
    .filter((m): m is RegExpMatchArray => m !== null && Number(m[2]) === pgid)
    .map((m) => ({ pid: Number(m[1]), args: m[3] }));
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
  let aliceHome: string;
  let bobHome: string;
  let env: NodeJS.ProcessEnv;
  let relayUrl: string;
  let rpcUrl: string;
  let stack: Stack | undefined;
  let ports: number[];

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "chat-start-data-"));
    homeDir = mkdtempSync(path.join(tmpdir(), "chat-start-home-"));
    aliceHome = path.join(homeDir, "alice");
    bobHome = path.join(homeDir, "bob");
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

  /** `chat --json ...` as a person's script runs it; fails the test on a non-zero exit. */
  function chatJson(home: string, args: string[], input = ""): any[] {
    const result = chat(["--relay", relayUrl, "--rpc", rpcUrl, "--home", home, "--json", ...args], input, { ...env, CHAT_HOME: "" });
    expect(result.status, `chat ${args[0]}: ${result.stderr}`).to.equal(0);
    return result.stdout
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line));
  }

  /** Sends each text from alice to bob (who is offline) and returns their ids; the relay must store each. */
  function sendToOfflineBob(texts: string[]): string[] {
    return texts.map((text) => {
      const sent = chatJson(aliceHome, ["send", "bob", text]).filter((o) => o.type === "sent" && !o.resent);
      expect(sent.map((o) => [o.to, o.status]), text).to.deep.equal([["bob", "stored"]]);
      return sent[0].id as string;
    });
  }

  /** Bob's `chat inbox`: the messages it shows, as [id, from, body]. */
  function bobsInbox(): [string, string, string][] {
    return chatJson(bobHome, ["inbox"])
      .filter((o) => o.type === "message")
      .map((o) => [o.id, o.from, o.body]);
  }

  it("starts, registers users through the CLI, stops on Ctrl-C, and keeps users and waiting messages across a restart", async () => {
    stack = startStack(env);
    await waitForRelay(stack, relayUrl, 180_000);
    expect(stack.output()).to.include("made local development settings");
    expect(readFileSync(path.join(dataDir, "local.env"), "utf8")).to.match(/CONTRACT_ADDRESS=0x[0-9a-fA-F]{40}/);

    const cliEnv = { ...env, CHAT_HOME: "" };
    const common = ["--relay", relayUrl, "--rpc", rpcUrl, "--home", aliceHome, "--password-stdin"];
    const registered = chat([...common, "register", "alice"], "correct horse battery staple\n", cliEnv);
    expect(registered.status, registered.stderr).to.equal(0);
    const bobRegistered = chat(["--relay", relayUrl, "--rpc", rpcUrl, "--home", bobHome, "--password-stdin", "register", "bob"], "bob's own long passphrase\n", cliEnv);
    expect(bobRegistered.status, bobRegistered.stderr).to.equal(0);

    // Bob is offline (no client of his runs) while alice writes to him.
    const texts = ["before Ctrl-C #1", "before Ctrl-C #2"];
    const ids = sendToOfflineBob(texts);

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
    const whois = chat(["--relay", relayUrl, "--rpc", rpcUrl, "--home", aliceHome, "--json", "whois", "alice"], "", cliEnv);
    expect(whois.status, whois.stderr).to.equal(0);
    expect(whois.stdout).to.include("registered");

    // The messages stored before Ctrl-C are still waiting: bob sees each once, and nothing more on a second look.
    expect(bobsInbox()).to.deep.equal(ids.map((id, n) => [id, "alice", texts[n]]));
    expect(bobsInbox()).to.deep.equal([]);
    // The stack stays up for the next test.
  });

  it("loses no waiting message when the relay is SIGKILLed, and shows none twice after `npm start` again", async () => {
    expect(stack, "the stack of the previous test is running").to.not.equal(undefined);
    const texts = ["before the crash #1", "before the crash #2", "before the crash #3"];
    const ids = sendToOfflineBob(texts);

    // A crash of the relay alone (npm start's own process then stops the chain and exits, as it does when
    // its relay dies); the mailbox's folder keeps the lock of a process that no longer runs.
    const relayPid = processesInGroup(stack!.process.pid!).find((p) => p.args.includes(path.join("relay", "main.ts")))?.pid;
    expect(relayPid, JSON.stringify(processesInGroup(stack!.process.pid!))).to.be.a("number");
    const exited = new Promise<void>((resolve) => (stack!.process.exitCode !== null ? resolve() : stack!.process.once("exit", () => resolve())));
    process.kill(relayPid!, "SIGKILL");
    await exited;
    await stopStack(stack!, ports);
    expect(stack!.output()).to.match(/the relay exited/);

    stack = startStack(env);
    await waitForRelay(stack, relayUrl, 180_000);
    // Bob sees the messages sent before the crash once each, and not those he read before it (their
    // acknowledgement survived the crash as well).
    expect(bobsInbox()).to.deep.equal(ids.map((id, n) => [id, "alice", texts[n]]));
    expect(bobsInbox()).to.deep.equal([]);

    await stopStack(stack, ports);
    stack = undefined;
  });
});

/**
 * bench:connections — memory per idle authenticated connection and connect rate of one relay process.
 *
 *   npm run bench:connections -- [--connections 5000] [--concurrency 100] [--settle-seconds 3]
 *
 * The relay is the operator's process (relay/main.ts via test/helpers/relay-process.ts: TLS with its
 * generated certificate, MySQL mailbox and cache on a fresh database, anvil with ChatRegistry), with
 * default limits except the connection caps, raised to the count under test. Every connection is a
 * distinct user, registered on the chain before the relay starts (bench/accounts.ts) and holding a
 * session token minted by relay/sessions.ts with the relay's SESSION_SECRET for its registered key and
 * credential, checked at the upgrade (the relay's cache has synced the registrations before the first
 * connection); a connection counts once its "ready" frame
 * (backlog read from MySQL) has arrived. RSS is read from /proc/PID/status of the relay's Node process
 * before and after (after a pause, so that start-up garbage is gone).
 * File descriptors: the clients (this process) and the relay each need one per connection; the soft
 * limit (ulimit -n) is checked first. Last line: one JSON object.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import WebSocket from "ws";
import { startAnvil } from "../test/helpers/anvil";
import { createTestDatabase } from "../test/helpers/mysql";
import { deployRegistry } from "../test/helpers/registry";
import { startRelayProcess } from "../test/helpers/relay-process";
import { benchSessionToken, registerBenchUsers, waitForRelaySync } from "./accounts";
import { childPids, log, machine, options, percentile, procCpuMs, procMemory, result, round, sleep, sortedCopy } from "./lib";

const opts = options({ connections: 5_000, concurrency: 100, "settle-seconds": 3 });

function fdLimit(): number {
  const line = readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max open files"));
  return Number(line?.split(/\s+/)[3] ?? NaN);
}

async function main() {
  const limit = fdLimit();
  if (Number.isFinite(limit) && limit < opts.connections + 200) {
    throw new Error(`ulimit -n is ${limit}: raise it (ulimit -n ${opts.connections + 1000}) or lower --connections`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), "bench-conn-"));
  const cleanups: Array<() => Promise<unknown>> = [() => rm(dir, { recursive: true, force: true })];
  try {
    log("starting anvil, deploying ChatRegistry, creating the database, starting relay/main.ts ...");
    const anvil = await startAnvil();
    cleanups.push(() => anvil.stop());
    const deployed = await deployRegistry({ rpcUrl: anvil.url });
    const usernames = Array.from({ length: opts.connections }, (_, i) => `idle_${i}`);
    const { users, lastBlock, seconds: registerSeconds } = await registerBenchUsers({
      rpcUrl: anvil.url,
      contractAddress: deployed.address,
      relayerKey: deployed.relayerKey,
      usernames,
    });
    const db = await createTestDatabase("chat_bench");
    cleanups.push(() => db.drop());
    const secret = randomBytes(32);
    const relay = await startRelayProcess({
      rpcUrl: anvil.url,
      contractAddress: deployed.address,
      deployBlock: deployed.deployBlock,
      relayerKey: deployed.relayerKey,
      mysqlUrl: db.url,
      dataDir: dir,
      env: {
        SESSION_SECRET: secret.toString("hex"),
        LOG_LEVEL: "warn",
        // Every client here shares one loopback address: the per-address cap (64 by default) is a guard
        // against one abusive host, not a capacity, so it is raised to the count under test.
        HTTP_MAX_CONNECTIONS_PER_ADDRESS: String(opts.connections + 100),
        HTTP_MAX_CONNECTIONS: String(Math.max(4096, opts.connections + 100)),
      },
    });
    cleanups.push(() => relay.stop());
    await waitForRelaySync(async () => (await relay.request("GET", "/healthz")).body, lastBlock);
    // tsx's CLI runs the program in a child Node process: measure that one.
    const pid = childPids(relay.process.pid!)[0] ?? relay.process.pid!;
    await sleep(opts["settle-seconds"] * 1000);
    const before = procMemory(pid);
    log(`relay pid ${pid}: RSS before ${round(before.rss / 2 ** 20, 1)} MiB`);

    const url = `wss://127.0.0.1:${relay.port}/v1/ws`;
    const sockets: WebSocket[] = [];
    cleanups.push(async () => {
      for (const ws of sockets) ws.terminate();
    });
    const connectMs: number[] = [];
    const upgradeMs: number[] = [];
    const open = (i: number) =>
      new Promise<void>((resolve, reject) => {
        const token = benchSessionToken(secret, users.get(usernames[i])!);
        const started = performance.now();
        const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` }, ca: relay.certificate!, perMessageDeflate: false });
        sockets.push(ws);
        ws.once("open", () => upgradeMs.push(performance.now() - started));
        ws.once("message", (data) => {
          if (JSON.parse(data.toString()).type !== "ready") return reject(new Error(`connection ${i}: expected ready, got ${data}`));
          connectMs.push(performance.now() - started);
          resolve();
        });
        ws.once("error", reject);
        ws.once("unexpected-response", (_req, res) => reject(new Error(`connection ${i}: HTTP ${res.statusCode}`)));
      });

    let next = 0;
    const cpuBefore = procCpuMs(pid);
    const clientCpuBefore = process.cpuUsage();
    const started = performance.now();
    await Promise.all(
      Array.from({ length: Math.min(opts.concurrency, opts.connections) }, async () => {
        while (next < opts.connections) {
          const i = next++;
          await open(i);
          if ((i + 1) % 1000 === 0) log(`${i + 1} connected`);
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const relayCpuMs = procCpuMs(pid) - cpuBefore;
    const clientCpu = process.cpuUsage(clientCpuBefore);
    const clientCpuMs = (clientCpu.user + clientCpu.system) / 1000;
    const connected = procMemory(pid);
    await sleep(opts["settle-seconds"] * 1000);
    const after = procMemory(pid);
    const open_ = sockets.filter((ws) => ws.readyState === WebSocket.OPEN).length;
    const perConnKiB = (after.rss - before.rss) / 1024 / opts.connections;
    const sorted = sortedCopy(connectMs);
    const projected5000MiB = (before.rss + perConnKiB * 1024 * 5000) / 2 ** 20;

    result({
      bench: "connections",
      date: new Date().toISOString(),
      machine: machine(),
      connections: opts.connections,
      open_after_settle: open_,
      concurrency: opts.concurrency,
      relay: "relay/main.ts (separate process), TLS, MySQL, default limits but the connection caps raised",
      auth: "users registered on the chain first; session tokens minted with relay/sessions.ts and the relay's SESSION_SECRET for each user's key and credential",
      register_seconds: round(registerSeconds, 1),
      connect_per_s: round(opts.connections / seconds, 0),
      connect_p50_ms: round(percentile(sorted, 50), 1),
      connect_p99_ms: round(percentile(sorted, 99), 1),
      upgrade_p50_ms: round(percentile(sortedCopy(upgradeMs), 50), 1),
      relay_cpu_ms_per_connect: round(relayCpuMs / opts.connections, 2),
      relay_cpu_pct_while_connecting: round((100 * relayCpuMs) / (seconds * 1000), 0),
      client_cpu_ms_per_connect: round(clientCpuMs / opts.connections, 2),
      relay_rss_before_mib: round(before.rss / 2 ** 20, 1),
      relay_rss_connected_mib: round(connected.rss / 2 ** 20, 1),
      relay_rss_after_mib: round(after.rss / 2 ** 20, 1),
      relay_peak_rss_mib: round(after.hwm / 2 ** 20, 1),
      per_connection_kib: round(perConnKiB, 1),
      rss_at_5000_mib: round(projected5000MiB, 0),
      goal_5000_under_1gib_met: projected5000MiB < 1024,
      client_rss_mib: round(process.memoryUsage().rss / 2 ** 20, 0),
    });
  } finally {
    for (const f of cleanups.reverse()) await f().catch((error) => log(`cleanup: ${error?.message ?? error}`));
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);

/**
 * bench:relay — the real relay against a bare `ws` forwarder, same frames, same run, alternating rounds.
 *
 *   npm run bench:relay -- [--pairs 50] [--messages 20000] [--window 10] [--rounds 3]
 *                          [--rate 1000] [--rate-seconds 10] [--mailbox-messages 20000] [--profile 0]
 *
 * Set-up (all loopback): a real anvil with ChatRegistry deployed, a database created on the local
 * MariaDB (dropped at the end), one self-signed TLS certificate for both servers, and two child processes:
 * - the relay (bench/relay-server.ts: createRelay with the MySQL cache and mailbox, TLS, WebSocket auth,
 *   per-connection send rate limit raised, see that file), clients authenticated at the upgrade with
 *   session tokens minted by relay/sessions.ts with the relay's SESSION_SECRET; every user is registered
 *   on the chain before the relay starts (bench/accounts.ts: no HTTP register or login, which the
 *   benchmark does not measure), and the relay's cache has synced them before the first connection;
 * - the forwarder (bench/forwarder.ts): TLS, parse, forward, answer "accepted"; no auth, no storage.
 * The clients run in this process: `pairs` pairs of users, each user one connection, both directions.
 *
 * 1. Online path, closed loop: every connection keeps at most `window` of its messages undelivered and
 *    sends messages/(2·pairs) in all; the recipient acks each message (as the CLI does). Throughput is
 *    messages / (first send .. last delivery); latency is send .. delivery to the recipient's socket.
 *    After a warm-up round each, rounds alternate relay/forwarder (the first of each pair of rounds
 *    alternates too); the figures are medians over rounds.
 * 2. Fixed offered rate (open loop): `rate` msg/s for `rate-seconds` over all connections, p50/p99.
 * 3. Mailbox path (relay only): recipients offline; senders send `mailbox-messages` (window on
 *    "accepted"): stored/s; then the recipients connect and drain, acking every message: drained/s,
 *    and the time until the mailbox has no unacknowledged row.
 * `--profile 1` runs the relay under node --cpu-prof and summarises where its CPU time went.
 * Last line: one JSON object with all figures.
 */
import { execFileSync } from "node:child_process";
import https from "node:https";
import { randomBytes } from "node:crypto";
import { copyFile, mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Wallet } from "ethers";
import mysql from "mysql2/promise";
import WebSocket from "ws";
import { sealEnvelope } from "../protocol/envelope";
import { publicKeyOf } from "../protocol/keys";
import { loadOrCreateCertificate } from "../relay/tls";
import { startAnvil } from "../test/helpers/anvil";
import { createTestDatabase } from "../test/helpers/mysql";
import { deployRegistry } from "../test/helpers/registry";
import { relayEnv } from "../test/helpers/relay-process";
import { benchSessionToken, registerBenchUsers, waitForRelaySync, type BenchUser } from "./accounts";
import { log, machine, median, options, percentile, procCpuMs, procMemory, result, round, sleep, sortedCopy, startTsChild } from "./lib";
import { summarizeCpuProfile } from "./profile-summary";

const opts = options({
  pairs: 50,
  messages: 20_000,
  window: 10,
  rounds: 3,
  rate: 1_000,
  "rate-seconds": 10,
  "mailbox-messages": 20_000,
  profile: 0,
  "trace-sql": 0,
  "read-committed": 0,
});

type Frame = { type: string; id?: string; from?: string; code?: string; message?: string };

interface Client {
  name: string;
  ws: WebSocket;
  /** the frame handler of the current phase */
  onFrame: (frame: Frame) => void;
  errors: number;
  lastError?: string;
}

interface Target {
  kind: "relay" | "forwarder";
  port: number;
  pid: number;
  cert: string;
  headers(name: string): Record<string, string>;
  url(name: string): string;
}

const noop = () => undefined;

/** Opens one connection and resolves on its "ready" frame (the relay's backlog is sent by then). */
function connect(target: Target, name: string, onFrame: (frame: Frame) => void = noop): Promise<Client> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(target.url(name), {
      headers: target.headers(name),
      ca: target.cert,
      perMessageDeflate: false,
      maxPayload: 1 << 20,
    });
    const client: Client = { name, ws, onFrame, errors: 0 };
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as Frame;
      if (frame.type === "ready") return resolve(client);
      if (frame.type === "error") {
        client.errors++;
        client.lastError = `${frame.code}: ${frame.message}`;
      }
      client.onFrame(frame);
    });
    ws.once("error", reject);
    ws.once("unexpected-response", (_req, res) => reject(new Error(`${target.kind}: upgrade answered HTTP ${res.statusCode}`)));
  });
}

async function connectAll(target: Target, names: string[], onFrame?: (frame: Frame) => void, concurrency = 50): Promise<Client[]> {
  const out: Client[] = new Array(names.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, names.length) }, async () => {
      while (next < names.length) {
        const i = next++;
        out[i] = await connect(target, names[i], onFrame);
      }
    }),
  );
  return out;
}

const closeAll = (clients: Client[]) =>
  Promise.all(
    clients.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.ws.readyState === WebSocket.CLOSED) return resolve();
          c.ws.once("close", () => resolve());
          c.ws.close();
          setTimeout(() => {
            c.ws.terminate();
            resolve();
          }, 2_000).unref();
        }),
    ),
  );

function latencyStats(latencies: Float64Array) {
  const sorted = sortedCopy(latencies);
  return { p50_ms: round(percentile(sorted, 50), 2), p99_ms: round(percentile(sorted, 99), 2), max_ms: round(percentile(sorted, 100), 2) };
}

function waitFor(predicate: () => boolean, timeoutMs: number, what: string, onTimeout?: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const check = () => {
      if (predicate()) return resolve();
      if (performance.now() - started > timeoutMs) return reject(new Error(`${what}: timed out after ${timeoutMs} ms ${onTimeout?.() ?? ""}`));
      setTimeout(check, 1);
    };
    check();
  });
}

const errorSummary = (clients: Client[]) => {
  const bad = clients.filter((c) => c.errors > 0);
  return bad.length === 0 ? "" : `(${bad.reduce((n, c) => n + c.errors, 0)} error frames, e.g. ${bad[0].lastError})`;
};

/**
 * One closed-loop round over `clients` (pairs: 2i and 2i+1 talk to each other). Message ids carry the
 * message's index, so the receiving side finds its send time without a lookup table.
 */
async function closedLoopRound(target: Target, clients: Client[], total: number, window: number, tag: string, envelope: string) {
  const perConn = Math.max(1, Math.floor(total / clients.length));
  const count = perConn * clients.length;
  const sentAt = new Float64Array(count);
  const latency = new Float64Array(count);
  const seen = new Uint8Array(count);
  const sent = new Int32Array(clients.length);
  const inflight = new Int32Array(clients.length);
  let received = 0;
  let duplicates = 0;
  let lastDelivery = 0;

  const pump = (ci: number) => {
    const c = clients[ci];
    const peer = clients[ci ^ 1].name;
    while (inflight[ci] < window && sent[ci] < perConn) {
      const idx = ci * perConn + sent[ci]++;
      inflight[ci]++;
      sentAt[idx] = performance.now();
      c.ws.send(JSON.stringify({ type: "send", id: `${tag}${idx}`, to: peer, envelope }));
    }
  };
  clients.forEach((c) => {
    c.onFrame = (frame) => {
      if (frame.type !== "message" || !frame.id?.startsWith(tag)) return;
      const now = performance.now();
      c.ws.send(JSON.stringify({ type: "ack", id: frame.id, from: frame.from }));
      const idx = Number(frame.id.slice(tag.length));
      if (seen[idx]) {
        duplicates++;
        return;
      }
      seen[idx] = 1;
      latency[idx] = now - sentAt[idx];
      received++;
      lastDelivery = now;
      const from = Math.floor(idx / perConn);
      inflight[from]--;
      pump(from);
    };
  });
  const cpuBefore = procCpuMs(target.pid);
  const clientCpuBefore = process.cpuUsage();
  const started = performance.now();
  for (let ci = 0; ci < clients.length; ci++) pump(ci);
  await waitFor(() => received === count, 120_000, `${target.kind} round ${tag}`, () => `(${received}/${count} delivered) ${errorSummary(clients)}`);
  const seconds = (lastDelivery - started) / 1000;
  const cpuMs = procCpuMs(target.pid) - cpuBefore;
  const clientCpu = process.cpuUsage(clientCpuBefore);
  return {
    messages: count,
    msgs_per_s: round(count / seconds, 0),
    ...latencyStats(latency),
    server_cpu_pct: round((100 * cpuMs) / (seconds * 1000), 0),
    server_cpu_us_per_msg: round((cpuMs * 1000) / count, 1),
    client_cpu_pct: round((clientCpu.user + clientCpu.system) / 10 / (seconds * 1000), 0),
    duplicates,
  };
}

/** Open loop: `rate` messages a second spread over the connections, whatever the latency. */
async function fixedRateRound(target: Target, clients: Client[], rate: number, seconds: number, tag: string, envelope: string) {
  const count = Math.round(rate * seconds);
  const sentAt = new Float64Array(count);
  const scheduledAt = new Float64Array(count);
  const latency = new Float64Array(count);
  const fromSchedule = new Float64Array(count);
  let received = 0;
  clients.forEach((c) => {
    c.onFrame = (frame) => {
      if (frame.type !== "message" || !frame.id?.startsWith(tag)) return;
      const now = performance.now();
      c.ws.send(JSON.stringify({ type: "ack", id: frame.id, from: frame.from }));
      const idx = Number(frame.id.slice(tag.length));
      latency[idx] = now - sentAt[idx];
      fromSchedule[idx] = now - scheduledAt[idx];
      received++;
    };
  });
  let sent = 0;
  const started = performance.now();
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      const due = Math.min(count, Math.floor(((now - started) * rate) / 1000) + 1);
      while (sent < due) {
        const idx = sent++;
        const ci = idx % clients.length;
        scheduledAt[idx] = started + (idx * 1000) / rate;
        sentAt[idx] = performance.now();
        clients[ci].ws.send(JSON.stringify({ type: "send", id: `${tag}${idx}`, to: clients[ci ^ 1].name, envelope }));
      }
      if (sent < count) setTimeout(tick, 1);
      else resolve();
    };
    tick();
  });
  const sendSeconds = (performance.now() - started) / 1000;
  await waitFor(() => received >= count, 60_000, `${target.kind} fixed rate`, () => `(${received}/${count}) ${errorSummary(clients)}`);
  const fromScheduleStats = latencyStats(fromSchedule);
  return {
    offered_msgs_per_s: rate,
    achieved_send_rate: round(count / sendSeconds, 0),
    messages: count,
    ...latencyStats(latency),
    p99_from_schedule_ms: fromScheduleStats.p99_ms,
  };
}

async function mailboxPath(target: Target, pairs: number, total: number, window: number, envelope: string, pool: mysql.Pool) {
  const senders = await connectAll(target, Array.from({ length: pairs }, (_, i) => `mbox${i}_s`));
  const recipients = Array.from({ length: pairs }, (_, i) => `mbox${i}_r`);
  const perSender = Math.max(1, Math.floor(total / pairs));
  const count = perSender * pairs;
  const tag = "mailbox_";
  const sent = new Int32Array(pairs);
  const inflight = new Int32Array(pairs);
  let accepted = 0;
  let stored = 0;
  const pump = (si: number) => {
    while (inflight[si] < window && sent[si] < perSender) {
      const idx = si * perSender + sent[si]++;
      inflight[si]++;
      senders[si].ws.send(JSON.stringify({ type: "send", id: `${tag}${idx}`, to: recipients[si], envelope }));
    }
  };
  senders.forEach((c, si) => {
    c.onFrame = (frame) => {
      if (frame.type !== "accepted") return;
      accepted++;
      if ((frame as { status?: string }).status === "stored") stored++;
      inflight[si]--;
      pump(si);
    };
  });
  const storeStart = performance.now();
  for (let si = 0; si < pairs; si++) pump(si);
  await waitFor(() => accepted === count, 120_000, "mailbox store", () => `(${accepted}/${count}) ${errorSummary(senders)}`);
  const storeSeconds = (performance.now() - storeStart) / 1000;
  const [[depthRow]] = (await pool.query("SELECT COUNT(*) AS n FROM mailbox WHERE state = 0")) as any;
  log(`mailbox: ${count} stored in ${round(storeSeconds, 2)} s; ${depthRow.n} rows waiting`);

  let drained = 0;
  const seen = new Set<string>();
  const drainStart = performance.now();
  const onFrame = (clientName: () => Client) => (frame: Frame) => {
    if (frame.type !== "message") return;
    clientName().ws.send(JSON.stringify({ type: "ack", id: frame.id, from: frame.from }));
    if (!seen.has(frame.id!)) {
      seen.add(frame.id!);
      drained++;
    }
  };
  // The handler needs its own client, which exists only after connect: route through a late binding.
  const readers: Client[] = [];
  await Promise.all(
    recipients.map(async (name, i) => {
      let self: Client | undefined;
      const pending: Frame[] = [];
      const handler = onFrame(() => self!);
      const client = await connect(target, name, (frame) => (self ? handler(frame) : pending.push(frame)));
      self = client;
      readers[i] = client;
      for (const f of pending) handler(f);
      client.onFrame = handler;
    }),
  );
  await waitFor(() => drained === count, 120_000, "mailbox drain", () => `(${drained}/${count})`);
  const drainSeconds = (performance.now() - drainStart) / 1000;
  // Acks are group-committed after delivery: wait until the database shows none left.
  for (;;) {
    const [[row]] = (await pool.query("SELECT COUNT(*) AS n FROM mailbox WHERE state = 0")) as any;
    if (Number(row.n) === 0) break;
    if (performance.now() - drainStart > 120_000) throw new Error(`mailbox: ${row.n} messages never acknowledged`);
    await sleep(20);
  }
  const ackedSeconds = (performance.now() - drainStart) / 1000;
  await closeAll([...senders, ...readers]);
  return {
    messages: count,
    senders: pairs,
    stored_per_s: round(count / storeSeconds, 0),
    stored_status_ok: stored === count,
    drained_per_s: round(count / drainSeconds, 0),
    drained_and_acked_in_db_per_s: round(count / ackedSeconds, 0),
  };
}

/** GET of a JSON document over TLS, trusting exactly `ca` (the relay's self-signed certificate). */
function getJson(url: string, ca: string): Promise<any> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca }, (res) => {
        let body = "";
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => {
          try {
            resolve(JSON.parse(body));
          } catch (error) {
            reject(error);
          }
        });
      })
      .on("error", reject);
  });
}

/** MariaDB's CPU time; NaN if it went away (another job may restart the shared server). */
function dbCpu(pid: number): number {
  try {
    return procCpuMs(pid);
  } catch {
    return NaN;
  }
}

function mariadbPid(): number | null {
  try {
    const out = execFileSync("pidof", ["mariadbd"], { encoding: "utf8" }).trim().split(/\s+/)[0];
    return out ? Number(out) : null;
  } catch {
    return null;
  }
}

async function main() {
  const dir = await mkdtemp(path.join(os.tmpdir(), "bench-relay-"));
  const cleanups: Array<() => Promise<unknown>> = [async () => rm(dir, { recursive: true, force: true })];
  const cleanup = async () => {
    for (const f of cleanups.reverse()) await f().catch((error) => log(`cleanup: ${error?.message ?? error}`));
  };
  try {
    log("starting anvil, deploying ChatRegistry, creating the database ...");
    const anvil = await startAnvil();
    cleanups.push(() => anvil.stop());
    const deployed = await deployRegistry({ rpcUrl: anvil.url });
    const db = await createTestDatabase("chat_bench");
    cleanups.push(() => db.drop());
    const pool = mysql.createPool({ uri: db.url, connectionLimit: 2 });
    cleanups.push(() => pool.end());
    const tls = await loadOrCreateCertificate({ certFile: null, keyFile: null, dataDir: dir, host: "127.0.0.1" });
    const certFile = path.join(dir, "tls-cert.pem");
    const keyFile = path.join(dir, "tls-key.pem");
    const sessionSecret = randomBytes(32);

    const names = Array.from({ length: 2 * opts.pairs }, (_, i) => `pair${i >> 1}_${i & 1 ? "b" : "a"}`);
    const mailboxNames = Array.from({ length: opts.pairs }, (_, i) => [`mbox${i}_s`, `mbox${i}_r`]).flat();
    const { users, lastBlock } = await registerBenchUsers({
      rpcUrl: anvil.url,
      contractAddress: deployed.address,
      relayerKey: deployed.relayerKey,
      usernames: [...names, ...mailboxNames],
    });
    const userOf = (name: string): BenchUser => {
      const user = users.get(name);
      if (!user) throw new Error(`bench user ${name} was never registered`);
      return user;
    };

    const profileDir = path.join(dir, "profile");
    const relayChild = await startTsChild({
      script: "bench/relay-server.ts",
      nodeArgs: opts.profile ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [],
      env: {
        ...relayEnv({ rpcUrl: anvil.url, contractAddress: deployed.address, deployBlock: deployed.deployBlock, relayerKey: deployed.relayerKey, mysqlUrl: db.url, dataDir: dir, port: 0 }),
        SESSION_SECRET: sessionSecret.toString("hex"),
        TLS_CERT: certFile,
        TLS_KEY: keyFile,
        LOG_LEVEL: "warn",
        SYNC_POLL_MS: "", // the relay's default (relayEnv's 100 ms is for tests)
        // Every client shares one loopback address: the per-address cap (64 by default) guards against
        // one abusive host and is no capacity, so it is raised above the benchmark's connections.
        HTTP_MAX_CONNECTIONS_PER_ADDRESS: String(4 * opts.pairs + 100),
        HTTP_MAX_CONNECTIONS: String(Math.max(4096, 4 * opts.pairs + 100)),
        BENCH_TRACE_SQL: opts["trace-sql"] ? "1" : "",
        BENCH_READ_COMMITTED: opts["read-committed"] ? "1" : "",
      },
    });
    cleanups.push(() => relayChild.stop());
    await waitForRelaySync(() => getJson(`https://127.0.0.1:${relayChild.ready.port}/healthz`, tls.cert), lastBlock);
    const forwarderChild = await startTsChild({ script: "bench/forwarder.ts", env: { TLS_CERT: certFile, TLS_KEY: keyFile } });
    cleanups.push(() => forwarderChild.stop());

    const relay: Target = {
      kind: "relay",
      port: relayChild.ready.port,
      pid: relayChild.ready.pid,
      cert: tls.cert,
      url: () => `wss://127.0.0.1:${relayChild.ready.port}/v1/ws`,
      headers: (name) => ({
        Authorization: `Bearer ${benchSessionToken(sessionSecret, userOf(name))}`,
      }),
    };
    const forwarder: Target = {
      kind: "forwarder",
      port: forwarderChild.ready.port,
      pid: forwarderChild.ready.pid,
      cert: tls.cert,
      url: (name) => `wss://127.0.0.1:${forwarderChild.ready.port}/v1/ws?user=${name}`,
      headers: () => ({}),
    };

    // A real envelope v1 (a 120-byte body), so that frames have the size the CLI sends.
    const alice = Wallet.createRandom();
    const bob = Wallet.createRandom();
    const envelope = await sealEnvelope({
      inner: { v: 1, sender: "alice", recipient: "bob", id: "bench-envelope-0001", timestamp: Date.now(), senderKeyIndex: 0, recipientKeyIndex: 0, body: "x".repeat(120) },
      senderPrivateKey: alice.privateKey,
      recipientPublicKey: publicKeyOf(bob.privateKey),
    });

    log(`connecting ${names.length} clients to each server ...`);
    const relayClients = await connectAll(relay, names);
    const forwarderClients = await connectAll(forwarder, names);
    const clientsOf = (t: Target) => (t === relay ? relayClients : forwarderClients);

    const warm = Math.min(2_000, opts.messages);
    for (const t of [relay, forwarder]) await closedLoopRound(t, clientsOf(t), warm, opts.window, `warm_${t.kind}_`, envelope);

    const rounds: Record<"relay" | "forwarder", Awaited<ReturnType<typeof closedLoopRound>>[]> = { relay: [], forwarder: [] };
    const dbPid = mariadbPid();
    let dbCpuMs = 0;
    for (let r = 0; r < opts.rounds; r++) {
      const order = r % 2 === 0 ? [relay, forwarder] : [forwarder, relay];
      for (const t of order) {
        const dbBefore = dbPid ? dbCpu(dbPid) : 0;
        const out = await closedLoopRound(t, clientsOf(t), opts.messages, opts.window, `r${r}_${t.kind}_`, envelope);
        if (t === relay && dbPid) dbCpuMs += dbCpu(dbPid) - dbBefore;
        rounds[t.kind].push(out);
        log(`round ${r} ${t.kind}: ${JSON.stringify(out)}`);
      }
    }
    const summary = (list: typeof rounds.relay) => ({
      msgs_per_s: median(list.map((x) => x.msgs_per_s)),
      p50_ms: median(list.map((x) => x.p50_ms)),
      p99_ms: median(list.map((x) => x.p99_ms)),
      server_cpu_pct: median(list.map((x) => x.server_cpu_pct)),
      server_cpu_us_per_msg: median(list.map((x) => x.server_cpu_us_per_msg)),
      client_cpu_pct: median(list.map((x) => x.client_cpu_pct)),
      rounds_msgs_per_s: list.map((x) => x.msgs_per_s),
    });
    const relaySummary = summary(rounds.relay);
    const forwarderSummary = summary(rounds.forwarder);
    const ratios = rounds.relay.map((x, i) => x.msgs_per_s / rounds.forwarder[i].msgs_per_s);
    const relayMessages = rounds.relay.reduce((n, x) => n + x.messages, 0);

    log(`fixed rate ${opts.rate} msg/s for ${opts["rate-seconds"]} s ...`);
    const fixedRelay = await fixedRateRound(relay, relayClients, opts.rate, opts["rate-seconds"], "fixed_relay_", envelope);
    log(`fixed rate relay: ${JSON.stringify(fixedRelay)}`);
    const fixedForwarder = await fixedRateRound(forwarder, forwarderClients, opts.rate, opts["rate-seconds"], "fixed_fwd_", envelope);
    log(`fixed rate forwarder: ${JSON.stringify(fixedForwarder)}`);

    await closeAll([...relayClients, ...forwarderClients]);
    log(`mailbox path: ${opts["mailbox-messages"]} messages ...`);
    const mailbox = await mailboxPath(relay, opts.pairs, opts["mailbox-messages"], opts.window, envelope, pool);
    log(`mailbox: ${JSON.stringify(mailbox)}`);
    const relayMemory = procMemory(relay.pid);

    let profile: unknown = undefined;
    if (opts.profile || opts["trace-sql"]) {
      await relayChild.stop();
      const sqlLine = relayChild.output().split("\n").find((l) => l.startsWith('{"sql"'));
      if (sqlLine) log(`relay SQL trace: ${sqlLine}`);
    }
    if (opts.profile) {
      const file = (await readdir(profileDir)).find((f) => f.endsWith(".cpuprofile"));
      if (file) {
        const kept = path.join(os.tmpdir(), `bench-relay-${Date.now()}.cpuprofile`);
        await copyFile(path.join(profileDir, file), kept);
        log(`relay CPU profile kept at ${kept} (open it in Chrome DevTools or: tsx bench/profile-summary.ts ${kept})`);
        profile = summarizeCpuProfile(kept, 12);
        log(`relay CPU profile: ${JSON.stringify(profile, null, 1)}`);
      }
    }

    result({
      bench: "relay",
      date: new Date().toISOString(),
      machine: machine(),
      setup: {
        pairs: opts.pairs,
        connections_per_server: names.length,
        messages_per_round: rounds.relay[0]?.messages,
        window_per_connection: opts.window,
        rounds: opts.rounds,
        envelope_chars: envelope.length,
        tls: "TLS 1.3, self-signed ECDSA P-256, loopback",
        auth: "users registered on the chain first; session tokens minted with relay/sessions.ts and the relay's SESSION_SECRET for each user's key and credential, checked at the WebSocket upgrade",
        storage: "MySQL mailbox (MariaDB, fresh database, dropped after)",
        relay_process: "bench/relay-server.ts: createRelay, per-connection send rate limit raised",
        clients: "one Node process (this one)",
      },
      online: {
        relay: relaySummary,
        forwarder: forwarderSummary,
        throughput_ratio: round(median(ratios), 2),
        p99_ratio: round(relaySummary.p99_ms / forwarderSummary.p99_ms, 2),
        mariadb_cpu_us_per_msg: dbPid && Number.isFinite(dbCpuMs) ? round((dbCpuMs * 1000) / relayMessages, 1) : null,
      },
      fixed_rate: { relay: fixedRelay, forwarder: fixedForwarder, relay_p99_goal_ms: 50, relay_p99_met: fixedRelay.p99_ms < 50 },
      mailbox,
      relay_rss_mib: round(relayMemory.rss / 2 ** 20, 0),
      relay_peak_rss_mib: round(relayMemory.hwm / 2 ** 20, 0),
      goal_half_of_forwarder_met: median(ratios) >= 0.5,
      ...(profile ? { relay_profile: profile } : {}),
    });
  } finally {
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);

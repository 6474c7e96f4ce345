/**
 * bench:mls-relay — messages v2 through the relay's MLS Delivery Service (/v2 routes) against the bare
 * `ws` forwarder (bench/forwarder.ts), same bytes, same run, alternating rounds.
 *
 *   npm run bench:mls-relay -- [--members 100] [--fanout-messages 50] [--fanout-window 4]
 *                              [--pairs 20] [--messages 2000] [--window 10] [--rounds 3]
 *                              [--push 1] [--pool 0] [--profile 0] [--trace-sql 0]
 *
 * Set-up (all loopback): anvil with ChatRegistry, a fresh MariaDB database (dropped at the end), one
 * self-signed certificate, the relay (bench/relay-server.ts: MySQL Delivery Service store) and the
 * forwarder in processes of their own; every user registered on the chain first (bench/accounts.ts) and
 * authenticated with a session token bound to that registration. The bytes are real MLS: the groups
 * are built in this process with protocol/mls (credentials bound to the users' keys), and the message
 * is an application message of that group; one member joins from the Welcome and opens it, as proof.
 * The relay carries the bytes as opaque base64 (the forwarder carries the same base64 string).
 *
 * Relay clients talk HTTP/1.1 over TLS with keep-alive (one agent per device), as a long-running
 * client would. With `--push 1` (the default, as the CLI does: cli/mls/group-notifications.ts) each
 * member also holds the relay's WebSocket and reads its group's log (GET /log?after=cursor) when a
 * group notice names a seq beyond its cursor, then acknowledges with POST /cursor; with `--push 0` it
 * polls instead, reading again at once after each page.
 *
 * 1. Fan-out: one sender and `members`-1 recipients in one group. The sender keeps at most
 *    `fanout-window` messages not yet read by every recipient and sends `fanout-messages` in all;
 *    deliveries/s = messages × recipients / (first send .. last delivery). Forwarder: the recipients'
 *    connections share one user name, so one `send` frame goes to all of them.
 * 2. Online one-to-one: `pairs` two-member groups; each device sends its peer `messages`/(2·pairs)
 *    with at most `window` unread at once (the same closed loop as bench:relay for v1);
 *    messages/s and send-to-read latency; the forwarder runs the same loop over WebSockets.
 * Rounds alternate relay/forwarder (after a warm-up of each); figures are medians over rounds.
 * `--pool N` sizes the relay's MySQL pool (default: the relay's own).
 * `--profile 1` runs the relay under node --cpu-prof and summarises where its CPU time went;
 * `--trace-sql 1` has it time every SQL statement by kind (bench/relay-server.ts) and reports that.
 * Last line: one JSON object with all figures.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFile, mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import WebSocket from "ws";
import { WS_PATH } from "../protocol/wire";
import { encodeBase64 } from "../protocol/wire-v2";
import { loadOrCreateCertificate } from "../relay/tls";
import { startAnvil } from "../test/helpers/anvil";
import { createTestDatabase } from "../test/helpers/mysql";
import { deployRegistry } from "../test/helpers/registry";
import { relayEnv } from "../test/helpers/relay-process";
import { benchSessionToken, registerBenchUsers, waitForRelaySync, type BenchUser } from "./accounts";
import { log, machine, median, options, percentile, procCpuMs, procMemory, result, round, sortedCopy, startTsChild } from "./lib";
import { summarizeCpuProfile } from "./profile-summary";
import { buildRealGroup, registerGroupOnRelay, V2Client, type RealGroup } from "./v2-setup";

const opts = options({
  members: 100,
  "fanout-messages": 50,
  "fanout-window": 4,
  pairs: 20,
  messages: 2_000,
  window: 10,
  rounds: 3,
  push: 1,
  pool: 0,
  profile: 0,
  "trace-sql": 0,
});
if (opts.members < 2 || opts.members > 1000) throw new Error("--members must be 2 to 1000");
if (opts.pairs < 1 || opts.window < 1 || opts["fanout-window"] < 1) throw new Error("--pairs, --window and --fanout-window must be at least 1");

function latencyStats(latencies: Float64Array) {
  const sorted = sortedCopy(latencies);
  return { p50_ms: round(percentile(sorted, 50), 2), p99_ms: round(percentile(sorted, 99), 2) };
}

function waitFor(predicate: () => boolean, timeoutMs: number, what: string, failed: () => Error | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const check = () => {
      const error = failed();
      if (error) return reject(error);
      if (predicate()) return resolve();
      if (performance.now() - started > timeoutMs) return reject(new Error(`${what}: timed out after ${timeoutMs} ms`));
      setTimeout(check, 1);
    };
    check();
  });
}

type ReadLoop = { stop(): Promise<void>; failure(): Error | undefined; stats(): { polls: number; empty: number } };

/**
 * A device's read loop on the relay, polling: reads the group log after its cursor, hands every entry not
 * its own to `onEntry`, moves its cursor past what it read, and reads again at once, until `stop()`.
 */
function pollLoop(client: V2Client, groupId: string, self: string, startAfter: number, onEntry: (id: string, now: number) => void): ReadLoop {
  let running = true;
  let failure: Error | undefined;
  let polls = 0;
  let empty = 0;
  const done = (async () => {
    let cursor = startAfter;
    while (running) {
      const page = await client.request("GET", `/v2/groups/${groupId}/log?after=${cursor}&limit=1000`);
      polls++;
      if (page.entries.length === 0) {
        empty++;
        continue;
      }
      const now = performance.now();
      for (const entry of page.entries) if (entry.sender.username !== self) onEntry(entry.id, now);
      cursor = page.entries[page.entries.length - 1].seq;
      await client.request("POST", `/v2/groups/${groupId}/cursor`, { seq: cursor });
    }
  })().catch((error) => {
    failure = error;
  });
  return {
    stop: async () => {
      running = false;
      await done;
    },
    failure: () => failure,
    stats: () => ({ polls, empty }),
  };
}

/**
 * The same device woken by the relay's group notices instead: a notice naming a seq beyond the cursor
 * starts a read (one at a time; a notice heard meanwhile reads again after it), as the CLI's device does.
 */
function noticeLoop(client: V2Client, notices: NoticeSocket, groupId: string, self: string, startAfter: number, onEntry: (id: string, now: number) => void): ReadLoop {
  let running = true;
  let failure: Error | undefined;
  let polls = 0;
  let empty = 0;
  let cursor = startAfter;
  let heard = startAfter;
  let reading: Promise<void> | undefined;
  const read = async () => {
    while (running && heard > cursor) {
      const page = await client.request("GET", `/v2/groups/${groupId}/log?after=${cursor}&limit=1000`);
      polls++;
      if (page.entries.length === 0) {
        empty++;
        break;
      }
      const now = performance.now();
      for (const entry of page.entries) if (entry.sender.username !== self) onEntry(entry.id, now);
      cursor = page.entries[page.entries.length - 1].seq;
      await client.request("POST", `/v2/groups/${groupId}/cursor`, { seq: cursor });
    }
  };
  const wake = () => {
    if (reading || !running) return;
    reading = read()
      .catch((error) => {
        failure = error;
      })
      .finally(() => {
        reading = undefined;
        if (heard > cursor && !failure) wake();
      });
  };
  notices.onGroup = (noticeGroupId, seq) => {
    if (noticeGroupId !== groupId || seq <= heard) return;
    heard = seq;
    wake();
  };
  return {
    stop: async () => {
      running = false;
      notices.onGroup = () => undefined;
      await reading;
    },
    failure: () => failure ?? notices.failure(),
    stats: () => ({ polls, empty }),
  };
}

/** A member's WebSocket to the relay, for its group notices only. */
interface NoticeSocket {
  onGroup: (groupId: string, seq: number) => void;
  failure(): Error | undefined;
  ws: WebSocket;
}

/** Opens the relay's WebSocket with the member's session token; resolves on its "ready" frame. */
function connectNotices(port: number, ca: string, token: string): Promise<NoticeSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${port}${WS_PATH}`, { ca, headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false, maxPayload: 1 << 20 });
    let closed: Error | undefined;
    const socket: NoticeSocket = { onGroup: () => undefined, failure: () => closed, ws };
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as { type: string; groupId?: string; seq?: number };
      if (frame.type === "ready") resolve(socket);
      else if (frame.type === "group") socket.onGroup(frame.groupId!, frame.seq!);
    });
    ws.on("close", (code) => (closed = new Error(`the relay closed a member's WebSocket (${code})`)));
    ws.once("error", reject);
  });
}

/** MariaDB's cumulative CPU ms, or NaN (not found, or it went away: the server is shared). */
function mariadbCpuMs(): number {
  try {
    const pid = Number(execFileSync("pidof", ["mariadbd"], { encoding: "utf8" }).trim().split(/\s+/)[0]);
    return pid ? procCpuMs(pid) : NaN;
  } catch {
    return NaN;
  }
}

type Frame = { type: string; id?: string };

/** Opens a forwarder connection as `user`; resolves on its "ready" frame. */
function connectForwarder(port: number, ca: string, user: string, onFrame: (frame: Frame) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${port}/v1/ws?user=${user}`, { ca, perMessageDeflate: false, maxPayload: 1 << 20 });
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as Frame;
      if (frame.type === "ready") return resolve(ws);
      onFrame(frame);
    });
    ws.once("error", reject);
  });
}

async function main() {
  const dir = await mkdtemp(path.join(os.tmpdir(), "bench-mls-relay-"));
  const cleanups: Array<() => Promise<unknown>> = [async () => rm(dir, { recursive: true, force: true })];
  const cleanup = async () => {
    for (const f of cleanups.reverse()) await f().catch((error) => log(`cleanup: ${error?.message ?? error}`));
  };
  try {
    log("starting anvil, deploying ChatRegistry, creating the database ...");
    const anvil = await startAnvil();
    cleanups.push(() => anvil.stop());
    const deployed = await deployRegistry({ rpcUrl: anvil.url });
    const db = await createTestDatabase("chat_bench_mls");
    cleanups.push(() => db.drop());
    const tls = await loadOrCreateCertificate({ certFile: null, keyFile: null, dataDir: dir, host: "127.0.0.1" });
    const certFile = path.join(dir, "tls-cert.pem");
    const keyFile = path.join(dir, "tls-key.pem");
    const sessionSecret = randomBytes(32);

    const fanNames = Array.from({ length: opts.members }, (_, i) => `fan_${i}`);
    const pairNames = Array.from({ length: 2 * opts.pairs }, (_, i) => `duo${i >> 1}_${i & 1 ? "b" : "a"}`);
    const { users, lastBlock } = await registerBenchUsers({
      rpcUrl: anvil.url, contractAddress: deployed.address, relayerKey: deployed.relayerKey, usernames: [...fanNames, ...pairNames],
    });
    const userOf = (name: string): BenchUser => users.get(name)!;

    log(`building a real ${opts.members}-member MLS group (one add commit) and ${opts.pairs} one-to-one groups ...`);
    const fanGroup = await buildRealGroup(fanNames);
    log(`  the ${opts.members}-member add commit took ${round(fanGroup.commitMs, 0)} ms; Welcome ${fanGroup.welcome.length} bytes; message ${fanGroup.message.length} bytes`);
    const pairGroups: RealGroup[] = [];
    for (let p = 0; p < opts.pairs; p++) pairGroups.push(await buildRealGroup(pairNames.slice(2 * p, 2 * p + 2)));

    const profileDir = path.join(dir, "profile");
    const connections = 4 * (opts.members + 2 * opts.pairs) + 100;
    const relayChild = await startTsChild({
      script: "bench/relay-server.ts",
      nodeArgs: opts.profile ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [],
      env: {
        ...relayEnv({ rpcUrl: anvil.url, contractAddress: deployed.address, deployBlock: deployed.deployBlock, relayerKey: deployed.relayerKey, mysqlUrl: db.url, dataDir: dir, port: 0 }),
        SESSION_SECRET: sessionSecret.toString("hex"),
        TLS_CERT: certFile,
        TLS_KEY: keyFile,
        LOG_LEVEL: "warn",
        SYNC_POLL_MS: "",
        // Every client shares one loopback address: the per-address cap guards against one abusive host, no capacity.
        HTTP_MAX_CONNECTIONS_PER_ADDRESS: String(connections),
        HTTP_MAX_CONNECTIONS: String(Math.max(4096, connections)),
        BENCH_TRACE_SQL: opts["trace-sql"] ? "1" : "",
        BENCH_POOL_CONNECTIONS: opts.pool ? String(opts.pool) : "",
      },
    });
    cleanups.push(() => relayChild.stop());
    const port = relayChild.ready.port as number;
    const health = new V2Client(port, tls.cert, "", 2);
    await waitForRelaySync(() => health.request("GET", "/healthz"), lastBlock);
    health.close();
    const forwarderChild = await startTsChild({ script: "bench/forwarder.ts", env: { TLS_CERT: certFile, TLS_KEY: keyFile } });
    cleanups.push(() => forwarderChild.stop());
    const fwdPort = forwarderChild.ready.port as number;

    const clients = new Map<string, V2Client>();
    for (const name of [...fanNames, ...pairNames]) clients.set(name, new V2Client(port, tls.cert, benchSessionToken(sessionSecret, userOf(name)), 2));
    cleanups.push(async () => clients.forEach((c) => c.close()));
    const noticeSockets = new Map<string, NoticeSocket>();
    if (opts.push) {
      log(`connecting ${fanNames.length + pairNames.length} members to the relay's WebSocket for group notices ...`);
      cleanups.push(async () => noticeSockets.forEach((n) => n.ws.terminate()));
      for (const name of [...fanNames, ...pairNames]) noticeSockets.set(name, await connectNotices(port, tls.cert, benchSessionToken(sessionSecret, userOf(name))));
    }
    /** How a member reads its group: woken by notices, or polling (--push 0). */
    const readLoop = (name: string, groupId: string, startAfter: number, onEntry: (id: string, now: number) => void): ReadLoop =>
      opts.push
        ? noticeLoop(clients.get(name)!, noticeSockets.get(name)!, groupId, name, startAfter, onEntry)
        : pollLoop(clients.get(name)!, groupId, name, startAfter, onEntry);
    // The 100-member commit's welcomes (one per device) would exceed one request's body limit: the commit
    // goes without them (no device here joins through the relay); the one-to-one groups carry theirs.
    await registerGroupOnRelay(clients.get(fanNames[0])!, fanNames, fanGroup, { welcomes: false });
    for (let p = 0; p < opts.pairs; p++) await registerGroupOnRelay(clients.get(pairNames[2 * p])!, pairNames.slice(2 * p, 2 * p + 2), pairGroups[p], { welcomes: true });
    const lastSeq = new Map<string, number>([[fanGroup.groupId, 1], ...pairGroups.map((g) => [g.groupId, 1] as [string, number])]);

    // ---- 1. fan-out ----
    const fanBytes = encodeBase64(fanGroup.message);
    const recipients = fanNames.length - 1;
    const relayCpu = () => procCpuMs(relayChild.ready.pid);

    async function fanoutRelay(total: number, tag: string) {
      const sender = clients.get(fanNames[0])!;
      const sentAt = new Float64Array(total);
      const reads = new Int32Array(total);
      const latency: number[] = [];
      let delivered = 0;
      let complete = 0;
      let sent = 0;
      let lastDelivery = 0;
      let sendFailure: Error | undefined;
      const onEntry = (id: string, now: number) => {
        if (!id.startsWith(tag)) return;
        const idx = Number(id.slice(tag.length));
        latency.push(now - sentAt[idx]);
        delivered++;
        lastDelivery = now;
        if (++reads[idx] === recipients) {
          complete++;
          pump();
        }
      };
      const pump = () => {
        while (sent < total && sent - complete < opts["fanout-window"]) {
          const idx = sent++;
          sentAt[idx] = performance.now();
          sender
            .request("POST", `/v2/groups/${fanGroup.groupId}/messages`, { epoch: fanGroup.epoch, id: `${tag}${idx}`, bytes: fanBytes })
            .then((a) => {
              if (!a.accepted) throw new Error(`append refused: ${JSON.stringify(a)}`);
              lastSeq.set(fanGroup.groupId, Math.max(lastSeq.get(fanGroup.groupId)!, a.seq));
            })
            .catch((error) => (sendFailure = error));
        }
      };
      const startAfter = lastSeq.get(fanGroup.groupId)!;
      const loops = fanNames.slice(1).map((name) => readLoop(name, fanGroup.groupId, startAfter, onEntry));
      const cpuBefore = relayCpu();
      const dbBefore = mariadbCpuMs();
      const started = performance.now();
      pump();
      try {
        await waitFor(() => complete === total, 300_000, `relay fan-out ${tag} (${delivered}/${total * recipients})`, () => sendFailure ?? loops.find((l) => l.failure())?.failure());
      } finally {
        await Promise.all(loops.map((l) => l.stop()));
      }
      const seconds = (lastDelivery - started) / 1000;
      const polls = loops.reduce((n, l) => n + l.stats().polls, 0);
      const empty = loops.reduce((n, l) => n + l.stats().empty, 0);
      return {
        messages: total,
        deliveries: delivered,
        deliveries_per_s: round(delivered / seconds, 0),
        ...latencyStats(Float64Array.from(latency)),
        server_cpu_us_per_delivery: round(((relayCpu() - cpuBefore) * 1000) / delivered, 1),
        mariadb_cpu_us_per_delivery: round(((mariadbCpuMs() - dbBefore) * 1000) / delivered, 1),
        log_reads: polls,
        empty_log_reads_pct: round((100 * empty) / Math.max(1, polls), 0),
      };
    }

    log(`connecting ${recipients + 1} fan-out connections to the forwarder ...`);
    let fwdFanHandler: (frame: Frame, now: number) => void = () => undefined;
    const fwdFanSender = await connectForwarder(fwdPort, tls.cert, "fan_sender", () => undefined);
    const fwdFanRecipients: WebSocket[] = [];
    for (let i = 0; i < recipients; i++) fwdFanRecipients.push(await connectForwarder(fwdPort, tls.cert, "fan_group", (f) => fwdFanHandler(f, performance.now())));

    async function fanoutForwarder(total: number, tag: string) {
      const sentAt = new Float64Array(total);
      const reads = new Int32Array(total);
      const latency: number[] = [];
      let delivered = 0;
      let complete = 0;
      let sent = 0;
      let lastDelivery = 0;
      const pump = () => {
        while (sent < total && sent - complete < opts["fanout-window"]) {
          const idx = sent++;
          sentAt[idx] = performance.now();
          fwdFanSender.send(JSON.stringify({ type: "send", id: `${tag}${idx}`, to: "fan_group", envelope: fanBytes }));
        }
      };
      fwdFanHandler = (frame, now) => {
        if (frame.type !== "message" || !frame.id?.startsWith(tag)) return;
        const idx = Number(frame.id.slice(tag.length));
        latency.push(now - sentAt[idx]);
        delivered++;
        lastDelivery = now;
        if (++reads[idx] === recipients) {
          complete++;
          pump();
        }
      };
      const cpuBefore = procCpuMs(forwarderChild.ready.pid);
      const started = performance.now();
      pump();
      await waitFor(() => complete === total, 300_000, `forwarder fan-out ${tag}`, () => undefined);
      const seconds = (lastDelivery - started) / 1000;
      return {
        messages: total,
        deliveries: delivered,
        deliveries_per_s: round(delivered / seconds, 0),
        ...latencyStats(Float64Array.from(latency)),
        server_cpu_us_per_delivery: round(((procCpuMs(forwarderChild.ready.pid) - cpuBefore) * 1000) / delivered, 1),
      };
    }

    // ---- 2. online one-to-one ----
    const pairBytes = pairGroups.map((g) => encodeBase64(g.message));

    async function directRelay(totalWanted: number, tag: string) {
      const devices = pairNames.length;
      const perDevice = Math.max(1, Math.floor(totalWanted / devices));
      const total = perDevice * devices;
      const sentAt = new Float64Array(total);
      const latency = new Float64Array(total);
      const sent = new Int32Array(devices);
      const inflight = new Int32Array(devices);
      let received = 0;
      let lastDelivery = 0;
      let sendFailure: Error | undefined;
      const groupOf = (d: number) => pairGroups[d >> 1];
      const pump = (d: number) => {
        const group = groupOf(d);
        while (inflight[d] < opts.window && sent[d] < perDevice) {
          const idx = d * perDevice + sent[d]++;
          inflight[d]++;
          sentAt[idx] = performance.now();
          clients
            .get(pairNames[d])!
            .request("POST", `/v2/groups/${group.groupId}/messages`, { epoch: group.epoch, id: `${tag}${idx}`, bytes: pairBytes[d >> 1] })
            .then((a) => lastSeq.set(group.groupId, Math.max(lastSeq.get(group.groupId)!, a.seq)))
            .catch((error) => (sendFailure = error));
        }
      };
      const onEntry = (id: string, now: number) => {
        if (!id.startsWith(tag)) return;
        const idx = Number(id.slice(tag.length));
        latency[idx] = now - sentAt[idx];
        received++;
        lastDelivery = now;
        const from = Math.floor(idx / perDevice);
        inflight[from]--;
        pump(from);
      };
      const loops = pairNames.map((name, d) => readLoop(name, groupOf(d).groupId, lastSeq.get(groupOf(d).groupId)!, onEntry));
      const cpuBefore = relayCpu();
      const dbBefore = mariadbCpuMs();
      const started = performance.now();
      for (let d = 0; d < devices; d++) pump(d);
      try {
        await waitFor(() => received === total, 300_000, `relay one-to-one ${tag} (${received}/${total})`, () => sendFailure ?? loops.find((l) => l.failure())?.failure());
      } finally {
        await Promise.all(loops.map((l) => l.stop()));
      }
      const seconds = (lastDelivery - started) / 1000;
      const polls = loops.reduce((n, l) => n + l.stats().polls, 0);
      const empty = loops.reduce((n, l) => n + l.stats().empty, 0);
      return {
        messages: total,
        msgs_per_s: round(total / seconds, 0),
        ...latencyStats(latency),
        server_cpu_us_per_msg: round(((relayCpu() - cpuBefore) * 1000) / total, 1),
        mariadb_cpu_us_per_msg: round(((mariadbCpuMs() - dbBefore) * 1000) / total, 1),
        log_reads: polls,
        empty_log_reads_pct: round((100 * empty) / Math.max(1, polls), 0),
      };
    }

    log(`connecting ${pairNames.length} one-to-one connections to the forwarder ...`);
    let fwdDirectHandler: (d: number, frame: Frame, now: number) => void = () => undefined;
    const fwdDirect: WebSocket[] = [];
    for (let d = 0; d < pairNames.length; d++) fwdDirect.push(await connectForwarder(fwdPort, tls.cert, pairNames[d], (f) => fwdDirectHandler(d, f, performance.now())));
    cleanups.push(async () => [fwdFanSender, ...fwdFanRecipients, ...fwdDirect].forEach((ws) => ws.terminate()));

    async function directForwarder(totalWanted: number, tag: string) {
      const devices = pairNames.length;
      const perDevice = Math.max(1, Math.floor(totalWanted / devices));
      const total = perDevice * devices;
      const sentAt = new Float64Array(total);
      const latency = new Float64Array(total);
      const sent = new Int32Array(devices);
      const inflight = new Int32Array(devices);
      let received = 0;
      let lastDelivery = 0;
      const pump = (d: number) => {
        while (inflight[d] < opts.window && sent[d] < perDevice) {
          const idx = d * perDevice + sent[d]++;
          inflight[d]++;
          sentAt[idx] = performance.now();
          fwdDirect[d].send(JSON.stringify({ type: "send", id: `${tag}${idx}`, to: pairNames[d ^ 1], envelope: pairBytes[d >> 1] }));
        }
      };
      fwdDirectHandler = (d, frame, now) => {
        if (frame.type !== "message" || !frame.id?.startsWith(tag)) return;
        // The recipient reads and acknowledges, as it does on the relay (one frame, not one request).
        fwdDirect[d].send(JSON.stringify({ type: "ack", id: frame.id }));
        const idx = Number(frame.id.slice(tag.length));
        latency[idx] = now - sentAt[idx];
        received++;
        lastDelivery = now;
        const from = Math.floor(idx / perDevice);
        inflight[from]--;
        pump(from);
      };
      const cpuBefore = procCpuMs(forwarderChild.ready.pid);
      const started = performance.now();
      for (let d = 0; d < devices; d++) pump(d);
      await waitFor(() => received === total, 300_000, `forwarder one-to-one ${tag}`, () => undefined);
      const seconds = (lastDelivery - started) / 1000;
      return {
        messages: total,
        msgs_per_s: round(total / seconds, 0),
        ...latencyStats(latency),
        server_cpu_us_per_msg: round(((procCpuMs(forwarderChild.ready.pid) - cpuBefore) * 1000) / total, 1),
      };
    }

    log("warming up ...");
    await fanoutRelay(Math.min(10, opts["fanout-messages"]), "warmfan_");
    await fanoutForwarder(Math.min(10, opts["fanout-messages"]), "warmfan_");
    await directRelay(Math.min(200, opts.messages), "warmduo_");
    await directForwarder(Math.min(200, opts.messages), "warmduo_");

    const fan = { relay: [] as Awaited<ReturnType<typeof fanoutRelay>>[], forwarder: [] as Awaited<ReturnType<typeof fanoutForwarder>>[] };
    const duo = { relay: [] as Awaited<ReturnType<typeof directRelay>>[], forwarder: [] as Awaited<ReturnType<typeof directForwarder>>[] };
    for (let r = 0; r < opts.rounds; r++) {
      const relayFirst = r % 2 === 0;
      for (const kind of relayFirst ? ["relay", "forwarder"] : ["forwarder", "relay"]) {
        const out = kind === "relay" ? await fanoutRelay(opts["fanout-messages"], `r${r}fan_`) : await fanoutForwarder(opts["fanout-messages"], `r${r}fan_`);
        (fan as any)[kind].push(out);
        log(`round ${r} fan-out ${kind}: ${JSON.stringify(out)}`);
      }
      for (const kind of relayFirst ? ["relay", "forwarder"] : ["forwarder", "relay"]) {
        const out = kind === "relay" ? await directRelay(opts.messages, `r${r}duo_`) : await directForwarder(opts.messages, `r${r}duo_`);
        (duo as any)[kind].push(out);
        log(`round ${r} one-to-one ${kind}: ${JSON.stringify(out)}`);
      }
    }
    const med = <T>(list: T[], key: keyof T) => median(list.map((x) => Number(x[key])));
    const fanRatios = fan.relay.map((x, i) => x.deliveries_per_s / fan.forwarder[i].deliveries_per_s);
    const duoRatios = duo.relay.map((x, i) => x.msgs_per_s / duo.forwarder[i].msgs_per_s);
    const relayMemory = procMemory(relayChild.ready.pid);

    let profile: unknown = undefined;
    let sqlTrace: unknown = undefined;
    if (opts.profile || opts["trace-sql"]) {
      await relayChild.stop();
      const sqlLine = relayChild.output().split("\n").find((l) => l.startsWith('{"sql"'));
      if (sqlLine) {
        sqlTrace = JSON.parse(sqlLine);
        log(`relay SQL trace: ${sqlLine}`);
      }
    }
    if (opts.profile) {
      const file = (await readdir(profileDir)).find((f) => f.endsWith(".cpuprofile"));
      if (file) {
        const kept = path.join(os.tmpdir(), `bench-mls-relay-${Date.now()}.cpuprofile`);
        await copyFile(path.join(profileDir, file), kept);
        log(`relay CPU profile kept at ${kept} (tsx bench/profile-summary.ts ${kept})`);
        profile = summarizeCpuProfile(kept, 12);
        log(`relay CPU profile: ${JSON.stringify(profile, null, 1)}`);
      }
    }

    result({
      bench: "mls-relay",
      date: new Date().toISOString(),
      machine: machine(),
      setup: {
        group_members: opts.members,
        fanout_recipients: recipients,
        fanout_messages_per_round: opts["fanout-messages"],
        fanout_window: opts["fanout-window"],
        pairs: opts.pairs,
        direct_messages_per_round: duo.relay[0]?.messages,
        direct_window_per_device: opts.window,
        rounds: opts.rounds,
        mls_message_bytes: fanGroup.message.length,
        add_commit_ms: round(fanGroup.commitMs, 0),
        welcome_bytes: fanGroup.welcome.length,
        relay_transport: opts.push
          ? "HTTPS/1.1 keep-alive, one agent (2 sockets) per device; members read GET /log and POST /cursor when a group notice on the relay's WebSocket names a new seq"
          : "HTTPS/1.1 keep-alive, one agent (2 sockets) per device; members poll GET /log and POST /cursor (--push 0)",
        forwarder_transport: "WebSocket over TLS, push; fan-out connections share one user name",
        storage: "MySQL Delivery Service store (MariaDB, fresh database, dropped after)",
        mysql_pool_connections: opts.pool || "relay default",
      },
      fanout: {
        relay: { deliveries_per_s: med(fan.relay, "deliveries_per_s"), p50_ms: med(fan.relay, "p50_ms"), p99_ms: med(fan.relay, "p99_ms"), server_cpu_us_per_delivery: med(fan.relay, "server_cpu_us_per_delivery"), mariadb_cpu_us_per_delivery: med(fan.relay, "mariadb_cpu_us_per_delivery"), empty_log_reads_pct: med(fan.relay, "empty_log_reads_pct"), rounds: fan.relay.map((x) => x.deliveries_per_s) },
        forwarder: { deliveries_per_s: med(fan.forwarder, "deliveries_per_s"), p50_ms: med(fan.forwarder, "p50_ms"), p99_ms: med(fan.forwarder, "p99_ms"), server_cpu_us_per_delivery: med(fan.forwarder, "server_cpu_us_per_delivery"), rounds: fan.forwarder.map((x) => x.deliveries_per_s) },
        throughput_ratio: round(median(fanRatios), 2),
      },
      online_one_to_one: {
        relay: { msgs_per_s: med(duo.relay, "msgs_per_s"), p50_ms: med(duo.relay, "p50_ms"), p99_ms: med(duo.relay, "p99_ms"), server_cpu_us_per_msg: med(duo.relay, "server_cpu_us_per_msg"), mariadb_cpu_us_per_msg: med(duo.relay, "mariadb_cpu_us_per_msg"), empty_log_reads_pct: med(duo.relay, "empty_log_reads_pct"), rounds: duo.relay.map((x) => x.msgs_per_s) },
        forwarder: { msgs_per_s: med(duo.forwarder, "msgs_per_s"), p50_ms: med(duo.forwarder, "p50_ms"), p99_ms: med(duo.forwarder, "p99_ms"), server_cpu_us_per_msg: med(duo.forwarder, "server_cpu_us_per_msg"), rounds: duo.forwarder.map((x) => x.msgs_per_s) },
        throughput_ratio: round(median(duoRatios), 2),
        goal_half_of_forwarder_met: median(duoRatios) >= 0.5,
      },
      relay_rss_mib: round(relayMemory.rss / 2 ** 20, 0),
      ...(profile ? { relay_profile: profile } : {}),
      ...(sqlTrace ? { relay_sql: sqlTrace } : {}),
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

/**
 * bench:capacity — the relay's capacity on the v2 (MLS Delivery Service) path as the knee of its latency
 * curve, against the bare `ws` forwarder (bench/forwarder.ts) in the same run.
 *
 *   npm run bench:capacity -- [--start 50]  [--max 16000] [--step-seconds 5] [--lead-in-ms 1000] [--drain-seconds 3]
 *                             [--confirm 1] [--pairs 50] [--sockets 2] [--closed-seconds 4]
 *                             [--closed-window 1] [--profile 1] [--budget-seconds 480] [--refine 2]
 *                             [--notice-entries 1] [--cursor-ws 1] [--cursor-interval-ms 200] [--cursor-idle-ms 0] [--append-ws 1] [--early 1]
 *                             [--only 0] [--idle-groups 20000]
 *
 * OPEN LOOP: offered rates (deliveries/s) double from `start` to `max`; each step schedules its messages
 * at fixed times for `step-seconds`, whatever happens to earlier ones, after a lead-in of `lead-in-ms` at
 * the same rate whose messages are not measured (a server idle between steps, as each is while the other
 * runs, starts a step slower: the relay's first half second after idle ran at a full core), and latency
 * is measured from the
 * SCHEDULED send time to the delivery (so a stalled sender or server is charged for every message it
 * held up: no coordinated omission). A step passes when its p99 is under 50 ms and no backlog grew
 * (deliveries more than 50 ms overdue at the step's end exceed those at mid-step by more than
 * max(recipients per message, 0.5 % of the step's deliveries)) and everything arrived within
 * `drain-seconds` after it. With `confirm` 1 a failed step is run once more (the machine may be shared:
 * one stall of another job fails a p99), and the rate passes if that attempt does. A series stops at its
 * first failed rate; then `refine` steps halve the gap between its last passed rate and that one (the
 * first at 1.5 times the rate that passed, the next at 1.25 or 1.75 times), so that a knee, and the ratio
 * of two, is known within an eighth rather than a factor of two. The knee is the highest offered rate
 * that passed. Relay and forwarder steps alternate at each rate of the doubling, and at each round of
 * the halving (same machine load).
 *
 * Scenarios (all loopback, TLS):
 * - one_to_one: `pairs` two-member MLS groups, each device sends to its peer. Relay: the sender POSTs
 *   the message to /v2/groups/:id/messages; the recipient hears {type:"group"} on its WebSocket. With
 *   `notice-entries` 1 (the default) a notice that carries the entry right after the device's cursor is
 *   the delivery; otherwise (or with 0) the device reads GET /v2/groups/:id/log after its cursor:
 *   delivered = read. Then it moves its cursor: with `cursor-ws` 1 (the default) a {type:"cursor"} frame
 *   on its WebSocket, at most one per `cursor-interval-ms` (by default the client's CURSOR_FRAME_INTERVAL_MS:
 *   a move within it is held and the furthest goes when it ends, as client-core's DsClient does), with 0
 *   POST /v2/groups/:id/cursor; with `cursor-idle-ms` T > 0 a move waits until the device has had no new
 *   entry for T ms instead. Every member does so for every
 *   entry, its own included, as a real device does. With `append-ws` 1 (the default) the sender appends
 *   with an {type:"append"} frame on its WebSocket, answered {type:"appended"} once durable; with 0 it
 *   POSTs. With `early` 1 (the default, as `chat talk`) the recipient's WebSocket asks for early frames: a
 *   message handed on while the relay makes it durable is the delivery, and its entry with the seq then
 *   only moves the cursor. `--notice-entries 0 --cursor-ws 0 --append-ws 0` is the path before messages went over the
 *   WebSocket. A device's own append answered while it had taken every entry before it moves its cursor past
 *   it without a read, as a real device does (it skips its own messages); each read is counted (`log_reads`).
 *   Forwarder: a send frame, pushed to the peer's socket, which acknowledges it.
 * - fanout_10, fanout_100: one sender, N-1 recipients; one message = N-1 deliveries (rates are
 *   deliveries/s). Forwarder: the recipients' sockets share one user name, so one frame reaches them all.
 *   With append frames every sending device keeps at most MAX_APPENDS_WAITING unanswered on its socket (the
 *   relay refuses more) and sends the next over HTTP, as client-core's SocketAppends does (`append_http_fallbacks`).
 * `--only 2`, `10` or `100` runs that one scenario (by its member count).
 * `idle-groups` groups of two members and one stored message each are written straight into the relay's
 * database before the ladders: its store then works among as many groups as a deployment's, not only the
 * benchmark's few (a statement that reads every group would show here).
 * The bytes are real MLS: one application message per group sealed ahead (sealing is client CPU, not
 * relay capacity) and resent under fresh ids; the relay stores and serves them without parsing them.
 * Bounded: fixed connections (one WebSocket per recipient device, at most `sockets` HTTPS keep-alive
 * connections per device, 32 for a fan-out sender), each step time-boxed, the ladder cut at
 * `budget-seconds` of run time.
 *
 * Per step: achieved rates, p50/p99/max latency from schedule (for the relay also until the sender hears its
 * message is durable), backlog, CPU per message of the relay
 * (or forwarder) process, of the database server's threads serving the relay's connections (and of the
 * whole server, which other jobs on the machine may share), of this client process, and the machine's
 * busy share; for the relay also, from its /metrics counters, the frames it wrote per socket write (the frames
 * one socket gets in one turn of its event loop leave in one write), the appends per batch its store wrote,
 * and the share of the step's time such a batch was in flight (near 1: appends queue behind the store),
 * and its time in garbage collection; and this process's own pauses (GC time and longest pause, event-loop
 * delay): one process plays every device, so its pause holds up all of them and is charged to the server.
 * Also a CLOSED-loop figure (each device keeps `closed-window` messages in flight: not yet delivered or, on the relay, not yet answered durable) for comparison with
 * bench:mls-relay, the MySQL durability settings read from the server, and (`--profile 1`, the default)
 * where the relay's CPU time went: a CPU profile of one extra one-to-one step at the relay's knee, taken
 * after the ladders (a sampler running during them would cost the relay CPU the forwarder does not pay).
 * Last line: one JSON object.
 */
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import os from "node:os";
import https from "node:https";
import path from "node:path";
import { monitorEventLoopDelay, PerformanceObserver, performance } from "node:perf_hooks";
import mysql from "mysql2/promise";
import type WebSocket from "ws";
import { CURSOR_FRAME_INTERVAL_MS } from "../client-core/ds-client";
import { MAX_APPENDS_WAITING, WS_EARLY_PARAM } from "../protocol/wire";
import { encodeBase64 } from "../protocol/wire-v2";
import { loadOrCreateCertificate } from "../relay/tls";
import { startAnvil } from "../test/helpers/anvil";
import { createTestDatabase } from "../test/helpers/mysql";
import { deployRegistry } from "../test/helpers/registry";
import { relayEnv } from "../test/helpers/relay-process";
import { benchSessionToken, registerBenchUsers, waitForRelaySync } from "./accounts";
import {
  buildRealGroup,
  connectWebSocket,
  cpuMsOrNaN,
  DEVICE_ID,
  databaseConnectionThreads,
  databaseServerPid,
  machineCpuMs,
  registerGroupOnRelay,
  threadsCpuMs,
  V2Client,
  type Frame,
  type RealGroup,
} from "./v2-setup";
import { log, machine, options, percentile, procMemory, result, round, sleep, startTsChild } from "./lib";
import { summarizeCpuProfile } from "./profile-summary";

const opts = options({
  start: 50,
  max: 16_000,
  "step-seconds": 5,
  "lead-in-ms": 1_000,
  "drain-seconds": 3,
  confirm: 1,
  pairs: 50,
  sockets: 2,
  "closed-seconds": 4,
  "closed-window": 1,
  profile: 1,
  "budget-seconds": 480,
  /** steps that halve the gap between a series' last passed and first failed rate */
  refine: 2,
  "notice-entries": 1,
  "cursor-ws": 1,
  "cursor-interval-ms": CURSOR_FRAME_INTERVAL_MS,
  "cursor-idle-ms": 0,
  "append-ws": 1,
  early: 1,
  /** 0 runs every scenario; 2, 10 or 100 only the one with that many members */
  only: 0,
  "idle-groups": 20_000,
});
if (opts.start < 1 || opts.max < opts.start) throw new Error("--start must be at least 1 and --max at least --start");
if (opts.pairs < 1 || opts.sockets < 1 || opts["closed-window"] < 1) throw new Error("--pairs, --sockets and --closed-window must be at least 1");
if (opts["step-seconds"] <= 0) throw new Error("--step-seconds must be positive");
if (!Number.isInteger(opts.refine) || opts.refine < 0 || opts.refine > 4) throw new Error("--refine must be a whole number from 0 to 4");
if (!Number.isInteger(opts["idle-groups"]) || opts["idle-groups"] < 0) throw new Error("--idle-groups must be a whole number, 0 or more");

const P99_GOAL_MS = 50;
/** Deliveries scheduled longer ago than this and not yet made count as backlog. */
const OVERDUE_MS = 50;
const FANOUT_SENDER_SOCKETS = 8;
/** Early-taken ids a member remembers (every one meets its entry within the step in a run that passes). */
const MAX_TAKEN_EARLY = 100_000;
const WS_PATH = "/v1/ws";

type TargetKind = "relay" | "forwarder";

/** One scenario on one target: sends messages and reports each delivery by message id. */
interface Driver {
  target: TargetKind;
  scenario: string;
  /** deliveries one message makes */
  recipientsPerMessage: number;
  /** sending devices; a message goes out from slot idx % slots */
  slots: number;
  /** the server process whose CPU is measured */
  pid: number;
  onDelivery: (id: string, now: number) => void;
  /** the relay's answer that message `id` is durable (the forwarder stores nothing and never calls it) */
  onStored: (id: string) => void;
  send(slot: number, id: string): void;
  /** opens the connections a step will use before it starts (the relay closes idle ones after 5 s) */
  prepare(): Promise<void>;
  errors: { count: number; last?: string };
  /** log reads by members (a notice that could not be applied as it came) */
  logReads: number;
  /** appends sent over HTTP because MAX_APPENDS_WAITING of the sender's were waiting on its socket */
  httpFallbacks: number;
  /** the relay's running totals from its /metrics (the forwarder keeps none) */
  relayCounts?: () => Promise<RelayCounts>;
}

/** Frames written to WebSockets and the socket writes that carried them; the store's batches of appends. */
interface RelayCounts {
  frames: number;
  writes: number;
  appendBatches: number;
  appendBatchItems: number;
  appendBatchBusySeconds: number;
  /** time in garbage collection, all kinds */
  gcSeconds: number;
}

/** The relay's running totals (its /metrics). */
async function relayCounts(port: number, ca: string): Promise<RelayCounts> {
  const text = await new Promise<string>((resolve, reject) => {
    https
      .get({ host: "127.0.0.1", port, path: "/metrics", ca }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (body += chunk));
        res.on("end", () => resolve(body));
        res.on("error", reject);
      })
      .on("error", reject);
  });
  const value = (name: string) => Number(new RegExp(`^${name} ([0-9.e+-]+)$`, "m").exec(text)?.[1] ?? NaN);
  let gcSeconds = 0;
  for (const m of text.matchAll(/^chat_relay_nodejs_gc_duration_seconds_sum\{[^}]*\} ([0-9.e+-]+)$/gm)) gcSeconds += Number(m[1]);
  return {
    frames: value("chat_ws_frames_sent_total"),
    writes: value("chat_ws_socket_writes_total"),
    appendBatches: value("chat_ds_append_batches_total"),
    appendBatchItems: value("chat_ds_append_batch_items_total"),
    appendBatchBusySeconds: value("chat_ds_append_batch_busy_seconds_total"),
    gcSeconds,
  };
}

/** A relay step's share of the counts: frames per socket write, and how busy the store's batches kept it. */
function relayStepCounts(before: RelayCounts, after: RelayCounts, wallMs: number, messages: number) {
  const batches = after.appendBatches - before.appendBatches;
  return {
    relay_frames_per_write: round((after.frames - before.frames) / Math.max(1, after.writes - before.writes), 2),
    relay_writes_per_msg: round((after.writes - before.writes) / Math.max(1, messages), 2),
    append_batch_items_mean: round((after.appendBatchItems - before.appendBatchItems) / Math.max(1, batches), 1),
    append_batch_busy_share: round((1000 * (after.appendBatchBusySeconds - before.appendBatchBusySeconds)) / wallMs, 2),
    relay_gc_ms_per_s: round((1e6 * (after.gcSeconds - before.gcSeconds)) / wallMs, 0),
  };
}

/**
 * This process's own pauses while a step runs. One process plays every device, so a pause of its own (a
 * major GC, say) holds up every device at once, and the server it measures is charged for it: a failed step
 * whose generator stalled says as much.
 */
function watchGeneratorStalls(): () => { client_gc_ms_per_s: number; client_gc_max_ms: number; client_loop_delay_p99_ms: number; client_loop_delay_max_ms: number } {
  const started = performance.now();
  const delay = monitorEventLoopDelay({ resolution: 5 });
  let gcMs = 0;
  let gcMaxMs = 0;
  const gc = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gcMs += entry.duration;
      gcMaxMs = Math.max(gcMaxMs, entry.duration);
    }
  });
  gc.observe({ entryTypes: ["gc"] });
  delay.enable();
  return () => {
    delay.disable();
    gc.disconnect();
    return {
      client_gc_ms_per_s: round((1000 * gcMs) / Math.max(1, performance.now() - started), 0),
      client_gc_max_ms: round(gcMaxMs, 1),
      client_loop_delay_p99_ms: round(delay.percentile(99) / 1e6, 1),
      client_loop_delay_max_ms: round(delay.max / 1e6, 1),
    };
  };
}

/** Groups nobody in the benchmark uses, as a deployment holds them: rows only, written in chunks of 1,000. */
async function writeIdleGroups(conn: mysql.Connection, count: number): Promise<void> {
  if (count <= 0) return;
  log(`writing ${count} idle groups into the relay's database ...`);
  for (let first = 0; first < count; first += 1000) {
    const ids = Array.from({ length: Math.min(1000, count - first) }, () => randomBytes(32));
    await conn.query("INSERT INTO ds_groups (id, epoch, last_seq, created_at) VALUES ?", [ids.map((id) => [id, 1, 1, 0])]);
    await conn.query("INSERT INTO ds_members (group_id, username, device_id, cursor_seq) VALUES ?", [
      ids.flatMap((id, i) => [[id, `idle${first + i}_a`, DEVICE_ID, 1], [id, `idle${first + i}_b`, DEVICE_ID, 1]]),
    ]);
    await conn.query("INSERT INTO ds_log (group_id, seq, epoch, kind, sender_username, sender_device, message_id, bytes, received_at) VALUES ?", [
      ids.map((id, i) => [id, 1, 1, 1, `idle${first + i}_a`, DEVICE_ID, "idle", randomBytes(300), Date.now()]),
    ]);
  }
}

const noDelivery = () => undefined;
const noStored = () => undefined;

/**
 * A relay member device: its WebSocket hears that its group's log grew. A notice carrying the entry right
 * after its cursor is taken as it is (`notice-entries`); otherwise it reads the log after its cursor (one
 * read at a time; notices that arrive meanwhile are merged into the next read). It hands every entry not
 * its own to the driver, and moves its cursor past what it took (see `cursor-ws`, `cursor-idle-ms`).
 */
class RelayMember {
  private cursor = 0;
  private wanted = 0;
  private reading = false;
  /** the furthest cursor told to the relay */
  private told = 0;
  private cursorTimer: NodeJS.Timeout | null = null;
  private lastCursorFrameAt = -Infinity;
  ws: WebSocket | null = null;
  /** append frames sent on `ws` and not answered yet */
  appendsWaiting = 0;
  /** ids taken from early frames whose entry has not come with its seq yet */
  private readonly takenEarly = new Set<string>();

  constructor(
    readonly name: string,
    readonly client: V2Client,
    private readonly groupId: string,
    private readonly driver: () => Driver,
  ) {}

  async open(port: number, ca: string, token: string): Promise<void> {
    const query = opts.early ? `?${WS_EARLY_PARAM}=1` : "";
    this.ws = await connectWebSocket(`wss://127.0.0.1:${port}${WS_PATH}${query}`, ca, { authorization: `Bearer ${token}` }, (frame) => this.onFrame(frame));
    // Start after what the group holds already (its creation and add commit).
    const page = await this.client.request("GET", `/v2/groups/${this.groupId}/log?after=0&limit=1`);
    this.cursor = Math.max(this.cursor, page.lastSeq);
    this.told = this.cursor;
  }

  private onFrame(frame: Frame): void {
    if ((frame.type === "appended" || frame.type === "error") && frame.id !== undefined) this.appendsWaiting = Math.max(0, this.appendsWaiting - 1);
    if (frame.type === "error") {
      const errors = this.driver().errors;
      errors.count++;
      errors.last = `${frame.code}: ${frame.message}`;
      return;
    }
    if (frame.type === "appended" && frame.groupId === this.groupId && typeof frame.seq === "number" && typeof frame.cursor === "number") {
      this.driver().onStored(String(frame.id));
      // Its own append: no notice comes for it. The relay moved the cursor past it when this device was caught up.
      if (frame.seq > this.wanted) this.wanted = frame.seq;
      if (frame.cursor > this.cursor) this.cursor = this.told = frame.cursor;
      else if (!this.reading && this.cursor === frame.seq - 1) {
        // Caught up to just before its own message, which it skips: past it without a read. The relay's
        // cursor missed the append (a move of this device still on its way), so it is told.
        this.cursor = frame.seq;
        void this.moveCursor();
      }
      if (!this.reading && this.wanted > this.cursor) void this.read();
      return;
    }
    if (frame.type === "early" && frame.groupId === this.groupId && frame.entry && frame.entry.sender.username !== this.name) {
      // Taken at once, as a device in its epoch does; the entry with its seq only moves the cursor then.
      if (this.takenEarly.size < MAX_TAKEN_EARLY) this.takenEarly.add(frame.entry.id);
      this.driver().onDelivery(frame.entry.id, performance.now());
      return;
    }
    if (frame.type !== "group" || frame.groupId !== this.groupId || typeof frame.seq !== "number") return;
    if (frame.seq > this.wanted) this.wanted = frame.seq;
    const entry = frame.entry;
    if (opts["notice-entries"] && !this.reading && entry && entry.seq === this.cursor + 1) {
      if (entry.sender.username !== this.name) this.delivered(entry.id, performance.now());
      this.cursor = entry.seq;
      void this.moveCursor();
      return;
    }
    if (!this.reading && this.wanted > this.cursor) void this.read();
  }

  /** An entry with its seq: a delivery unless it came early already. */
  private delivered(id: string, now: number, driver = this.driver()): void {
    if (!this.takenEarly.delete(id)) driver.onDelivery(id, now);
  }

  /**
   * Tells the relay the cursor: now, or (frames) once `cursor-interval-ms` has passed since the last frame,
   * or once no entry came for `cursor-idle-ms`.
   */
  private moveCursor(): Promise<void> | void {
    const idle = opts["cursor-idle-ms"];
    if (idle > 0) {
      if (this.cursorTimer) clearTimeout(this.cursorTimer);
      this.cursorTimer = setTimeout(() => {
        this.cursorTimer = null;
        void this.tellCursor();
      }, idle);
      return;
    }
    const wait = opts["cursor-ws"] ? this.lastCursorFrameAt + opts["cursor-interval-ms"] - performance.now() : 0;
    if (wait > 0) {
      this.cursorTimer ??= setTimeout(() => {
        this.cursorTimer = null;
        void this.tellCursor();
      }, wait);
      return;
    }
    return this.tellCursor();
  }

  private async tellCursor(): Promise<void> {
    const seq = this.cursor;
    if (seq <= this.told) return;
    this.told = seq;
    try {
      if (opts["cursor-ws"]) {
        this.ws!.send(JSON.stringify({ type: "cursor", groupId: this.groupId, deviceId: DEVICE_ID, seq }));
        this.lastCursorFrameAt = performance.now();
      }
      else await this.client.request("POST", `/v2/groups/${this.groupId}/cursor`, { seq });
    } catch (error) {
      const errors = this.driver().errors;
      errors.count++;
      errors.last = error instanceof Error ? error.message : String(error);
    }
  }

  /** One cheap read on each of its HTTPS connections at once: they are open when the step starts. */
  async touch(): Promise<void> {
    await Promise.all(Array.from({ length: this.client.sockets }, () => this.client.request("GET", `/v2/groups/${this.groupId}/log?after=${this.cursor}&limit=1`)));
  }

  private async read(): Promise<void> {
    this.reading = true;
    try {
      while (this.wanted > this.cursor) {
        this.driver().logReads++;
        const page = await this.client.request("GET", `/v2/groups/${this.groupId}/log?after=${this.cursor}&limit=1000`);
        if (page.entries.length === 0) break;
        const now = performance.now();
        const driver = this.driver();
        for (const entry of page.entries) if (entry.sender.username !== this.name) this.delivered(entry.id, now, driver);
        this.cursor = page.entries[page.entries.length - 1].seq;
        await this.moveCursor();
      }
    } catch (error) {
      const errors = this.driver().errors;
      errors.count++;
      errors.last = error instanceof Error ? error.message : String(error);
    } finally {
      this.reading = false;
    }
  }
}

/** The database server's CPU: the whole process, and the threads of this benchmark's database's connections. */
interface DbProbe {
  pid: number;
  threads(): Promise<number[]>;
}

interface StepResult {
  attempt: number;
  offered_deliveries_per_s: number;
  offered_msgs_per_s: number;
  messages: number;
  achieved_send_msgs_per_s: number;
  achieved_deliveries_per_s: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  /** relay: from the scheduled send to the sender hearing that its message is durable (the answer to its append), of those answered by the drain's end */
  durable_p50_ms?: number;
  durable_p99_ms?: number;
  overdue_at_mid: number;
  overdue_at_end: number;
  backlog_grew: boolean;
  undelivered_after_drain: number;
  errors: number;
  log_reads: number;
  /** appends a device sent over HTTP, with MAX_APPENDS_WAITING of its own waiting on its socket */
  append_http_fallbacks: number;
  /** frames the relay wrote to WebSockets per socket write (the frames one socket gets in one turn leave together) */
  relay_frames_per_write?: number;
  /** socket writes per message sent (answers, early frames and notices together) */
  relay_writes_per_msg?: number;
  /** appends per batch the store wrote them in (one round trip and one commit each) */
  append_batch_items_mean?: number;
  /** the share of the step's time a batch of appends was in flight: near 1, appends queue behind the store */
  append_batch_busy_share?: number;
  /** milliseconds a second the relay spent in garbage collection */
  relay_gc_ms_per_s?: number;
  server_cpu_us_per_msg: number;
  server_cpu_us_per_delivery: number;
  server_cpu_share: number;
  db_cpu_us_per_msg: number | null;
  db_server_cpu_us_per_msg: number | null;
  db_threads: number;
  relay_tls_connections_opened: number;
  client_cpu_us_per_msg: number;
  /** this process's (the load generator's) own pauses during the step: see watchGeneratorStalls */
  client_gc_ms_per_s: number;
  client_gc_max_ms: number;
  client_loop_delay_p99_ms: number;
  client_loop_delay_max_ms: number;
  machine_busy_share: number;
  passed: boolean;
  last_error?: string;
}

let stepCounter = 0;

/** Sum of deliveries of messages scheduled before `before` that have not been made. */
function overdue(scheduledAt: Float64Array, left: Int32Array, before: number): number {
  let n = 0;
  for (let i = 0; i < scheduledAt.length && scheduledAt[i] <= before; i++) n += left[i];
  return n;
}

/** The passed step of the highest rate (the halving may pass a rate below one run after it). */
function highestPassed(steps: StepResult[]): StepResult | undefined {
  return steps.filter((x) => x.passed).reduce<StepResult | undefined>((best, x) => (best && best.offered_deliveries_per_s >= x.offered_deliveries_per_s ? best : x), undefined);
}

/** One open-loop step: `deliveriesPerSecond` offered for `seconds`, then up to `drainSeconds` to finish. */
async function openLoopStep(
  driver: Driver,
  deliveriesPerSecond: number,
  seconds: number,
  drainSeconds: number,
  db: DbProbe,
  attempt = 1,
  /** runs once the step's connections are open, just before its first send */
  atStart?: () => Promise<void>,
): Promise<StepResult> {
  const recipients = driver.recipientsPerMessage;
  const msgRate = deliveriesPerSecond / recipients;
  const count = Math.max(1, Math.round(msgRate * seconds));
  const tag = `s${++stepCounter}_`;
  const scheduledAt = new Float64Array(count);
  const left = new Int32Array(count).fill(recipients);
  const latencies = new Float64Array(count * recipients);
  let delivered = 0;
  driver.errors.count = 0;
  driver.errors.last = undefined;
  const logReadsBefore = driver.logReads;
  const fallbacksBefore = driver.httpFallbacks;
  const durable = new Float64Array(count);
  let answered = 0;
  driver.onStored = (id) => {
    if (!id.startsWith(tag) || answered >= count) return;
    const idx = Number(id.slice(tag.length));
    if (idx >= 0 && idx < count) durable[answered++] = performance.now() - scheduledAt[idx];
  };
  driver.onDelivery = (id, now) => {
    if (!id.startsWith(tag)) return;
    const idx = Number(id.slice(tag.length));
    if (!(idx >= 0 && idx < count) || left[idx] === 0) return;
    left[idx]--;
    latencies[delivered++] = now - scheduledAt[idx];
  };

  await driver.prepare();
  await atStart?.();
  const dbThreads = await db.threads();
  // The lead-in: the step's rate for `lead-in-ms` before the messages measured, under other ids.
  const leadCount = Math.round((msgRate * opts["lead-in-ms"]) / 1000);
  const leadAt = performance.now() + 2;
  const t0 = leadAt + (leadCount * 1000) / msgRate;
  for (let i = 0; i < count; i++) scheduledAt[i] = t0 + (i * 1000) / msgRate;
  const tEnd = t0 + seconds * 1000;
  // Taken as the first measured message goes out: the lead-in's work before it is not the step's.
  let countsBefore: Promise<RelayCounts> | undefined;
  let dbThreadsBefore = new Map<number, number>();
  let connectionsBefore = 0;
  let serverBefore = NaN;
  let dbBefore = NaN;
  let clientBefore = process.cpuUsage();
  let machineBefore = machineCpuMs();
  let generatorStalls = watchGeneratorStalls();
  const measureFromHere = () => {
    countsBefore = driver.relayCounts?.();
    dbThreadsBefore = threadsCpuMs(db.pid, dbThreads);
    connectionsBefore = V2Client.connectionsOpened;
    serverBefore = cpuMsOrNaN(driver.pid);
    dbBefore = cpuMsOrNaN(db.pid);
    clientBefore = process.cpuUsage();
    machineBefore = machineCpuMs();
    generatorStalls();
    generatorStalls = watchGeneratorStalls();
  };

  let leadSent = 0;
  let sent = 0;
  let sentByEnd = 0;
  let deliveredByEnd = 0;
  let overdueAtMid = 0;
  let overdueAtEnd = 0;
  await new Promise<void>((resolve) => {
    let midTaken = false;
    const tick = () => {
      const now = performance.now();
      while (leadSent < leadCount && leadAt + (leadSent * 1000) / msgRate <= now) {
        driver.send(leadSent % driver.slots, `${tag}lead${leadSent}`);
        leadSent++;
      }
      if (sent === 0 && scheduledAt[0] <= now) measureFromHere();
      while (sent < count && scheduledAt[sent] <= now) {
        driver.send((leadCount + sent) % driver.slots, `${tag}${sent}`);
        sent++;
      }
      if (!midTaken && now >= t0 + seconds * 500) {
        midTaken = true;
        overdueAtMid = overdue(scheduledAt, left, now - OVERDUE_MS);
      }
      if (now >= tEnd) {
        sentByEnd = sent;
        deliveredByEnd = delivered;
        overdueAtEnd = overdue(scheduledAt, left, now - OVERDUE_MS);
        return resolve();
      }
      setTimeout(tick, 1);
    };
    setTimeout(tick, Math.max(0, leadAt - performance.now()));
  });
  // Whatever the schedule still holds goes out now (the client fell behind), then the drain.
  while (sent < count) driver.send((leadCount + sent) % driver.slots, `${tag}${sent++}`);
  const total = count * recipients;
  const drainUntil = performance.now() + drainSeconds * 1000;
  while (delivered < total && performance.now() < drainUntil) await sleep(5);
  const finished = performance.now();
  const stalls = generatorStalls();
  const undelivered = total - delivered;
  // What never arrived counts with at least the time it waited: a lower bound that still fails the goal.
  let filled = delivered;
  for (let i = 0; i < count; i++) for (let k = 0; k < left[i]; k++) latencies[filled++] = finished - scheduledAt[i];
  driver.onDelivery = noDelivery;
  driver.onStored = noStored;
  const durableSorted = durable.subarray(0, answered).sort();

  const serverMs = cpuMsOrNaN(driver.pid) - serverBefore;
  const dbMs = cpuMsOrNaN(db.pid) - dbBefore;
  // Threads that served a connection all along; one opened during the step has no "before" and is left out.
  let dbThreadsMs = 0;
  for (const [tid, ms] of threadsCpuMs(db.pid, [...dbThreadsBefore.keys()])) dbThreadsMs += ms - dbThreadsBefore.get(tid)!;
  const clientUsage = process.cpuUsage(clientBefore);
  const machineAfter = machineCpuMs();
  const countsAfter = await driver.relayCounts?.();
  const countsAtStart = await countsBefore;
  const sorted = latencies.sort();
  const p99 = percentile(sorted, 99);
  const tolerance = Math.max(recipients, 0.005 * total);
  const backlogGrew = overdueAtEnd > overdueAtMid + tolerance;
  const wallMs = finished - t0;
  // Set by the send and read callbacks since the reset above (a narrowing TypeScript cannot see).
  const lastError = driver.errors.last as string | undefined;
  const out: StepResult = {
    attempt,
    offered_deliveries_per_s: deliveriesPerSecond,
    offered_msgs_per_s: round(msgRate, 2),
    messages: count,
    achieved_send_msgs_per_s: round(sentByEnd / seconds, 1),
    achieved_deliveries_per_s: round(deliveredByEnd / seconds, 0),
    p50_ms: round(percentile(sorted, 50), 1),
    p99_ms: round(p99, 1),
    max_ms: round(sorted[sorted.length - 1], 1),
    ...(answered > 0 ? { durable_p50_ms: round(percentile(durableSorted, 50), 1), durable_p99_ms: round(percentile(durableSorted, 99), 1) } : {}),
    overdue_at_mid: overdueAtMid,
    overdue_at_end: overdueAtEnd,
    backlog_grew: backlogGrew,
    undelivered_after_drain: undelivered,
    errors: driver.errors.count,
    log_reads: driver.logReads - logReadsBefore,
    append_http_fallbacks: driver.httpFallbacks - fallbacksBefore,
    ...(countsAtStart && countsAfter ? relayStepCounts(countsAtStart, countsAfter, wallMs, count) : {}),
    server_cpu_us_per_msg: round((serverMs * 1000) / count, 0),
    server_cpu_us_per_delivery: round((serverMs * 1000) / total, 1),
    server_cpu_share: round(serverMs / wallMs, 2),
    db_cpu_us_per_msg: dbThreadsBefore.size > 0 ? round((dbThreadsMs * 1000) / count, 0) : null,
    db_server_cpu_us_per_msg: Number.isFinite(dbMs) ? round((dbMs * 1000) / count, 0) : null,
    db_threads: dbThreadsBefore.size,
    relay_tls_connections_opened: V2Client.connectionsOpened - connectionsBefore,
    client_cpu_us_per_msg: round((clientUsage.user + clientUsage.system) / count, 0),
    ...stalls,
    machine_busy_share: round((machineAfter.busy - machineBefore.busy) / Math.max(1, machineAfter.total - machineBefore.total), 2),
    passed: p99 < P99_GOAL_MS && !backlogGrew && undelivered === 0 && driver.errors.count === 0,
    ...(lastError ? { last_error: lastError.slice(0, 200) } : {}),
  };
  return out;
}

/**
 * Closed loop on a one-to-one driver: each device keeps `window` messages in flight, sending for `seconds`.
 * A message is in flight until it is delivered and, on the relay, answered durable: with early frames it is
 * delivered first, and a loop on delivery alone would outrun the store.
 */
async function closedLoop(driver: Driver, window: number, seconds: number, drainSeconds: number) {
  const capacity = 2_000_000;
  const tag = `c${++stepCounter}_`;
  const sentAt = new Float64Array(capacity);
  const slotOf = new Int32Array(capacity);
  /** per message: what it still waits for (delivery, and the relay's answer) */
  const waitingFor = new Uint8Array(capacity);
  const settle = (idx: number) => {
    if (--waitingFor[idx] === 0) sendFrom(slotOf[idx]);
  };
  const latencies: number[] = [];
  let next = 0;
  let sending = true;
  let lastDelivery = 0;
  const t0 = performance.now();
  const sendFrom = (slot: number) => {
    if (!sending || next >= capacity) return;
    const idx = next++;
    sentAt[idx] = performance.now();
    slotOf[idx] = slot;
    waitingFor[idx] = driver.target === "relay" ? 2 : 1;
    driver.send(slot, `${tag}${idx}`);
  };
  driver.errors.count = 0;
  driver.errors.last = undefined;
  const indexOf = (id: string) => (id.startsWith(tag) ? Number(id.slice(tag.length)) : -1);
  driver.onDelivery = (id, now) => {
    const idx = indexOf(id);
    if (idx < 0) return;
    latencies.push(now - sentAt[idx]);
    lastDelivery = now;
    settle(idx);
  };
  driver.onStored = (id) => {
    const idx = indexOf(id);
    if (idx >= 0) settle(idx);
  };
  for (let slot = 0; slot < driver.slots; slot++) for (let w = 0; w < window; w++) sendFrom(slot);
  await sleep(seconds * 1000);
  sending = false;
  const drainUntil = performance.now() + drainSeconds * 1000;
  while (latencies.length < next && performance.now() < drainUntil) await sleep(5);
  driver.onDelivery = noDelivery;
  driver.onStored = noStored;
  const sorted = Float64Array.from(latencies).sort();
  return {
    window_per_device: window,
    devices: driver.slots,
    seconds,
    // Sending stops after `seconds`; the rate counts every delivery up to the last one.
    msgs_per_s: round((1000 * latencies.length) / Math.max(1, lastDelivery - t0), 0),
    p50_ms: round(percentile(sorted, 50), 1),
    p99_ms: round(percentile(sorted, 99), 1),
    undelivered: next - latencies.length,
    errors: driver.errors.count,
    ...(driver.errors.last ? { last_error: driver.errors.last } : {}),
  };
}

async function main() {
  const runStarted = performance.now();
  const elapsed = () => (performance.now() - runStarted) / 1000;
  const dir = await mkdtemp(path.join(os.tmpdir(), "bench-capacity-"));
  const cleanups: Array<() => Promise<unknown>> = [async () => rm(dir, { recursive: true, force: true })];
  const cleanup = async () => {
    for (const f of cleanups.reverse()) await f().catch((error) => log(`cleanup: ${error?.message ?? error}`));
  };
  try {
    log("starting anvil, deploying ChatRegistry, creating the database ...");
    const anvil = await startAnvil();
    cleanups.push(() => anvil.stop());
    const deployed = await deployRegistry({ rpcUrl: anvil.url });
    const db = await createTestDatabase("chat_bench_capacity");
    cleanups.push(() => db.drop());
    const durability = await (async () => {
      const conn = await mysql.createConnection(db.url);
      try {
        const [rows] = await conn.query(
          "SELECT @@innodb_flush_log_at_trx_commit AS flush, @@sync_binlog AS sync_binlog, @@log_bin AS log_bin, @@innodb_flush_method AS flush_method, @@version AS version",
        );
        const row = (rows as Record<string, unknown>[])[0];
        return {
          innodb_flush_log_at_trx_commit: Number(row.flush),
          sync_binlog: Number(row.sync_binlog),
          log_bin: Number(row.log_bin) === 1,
          innodb_flush_method: String(row.flush_method),
          server_version: String(row.version),
        };
      } finally {
        await conn.end();
      }
    })();
    log(`MySQL durability: ${JSON.stringify(durability)}`);
    const tls = await loadOrCreateCertificate({ certFile: null, keyFile: null, dataDir: dir, host: "127.0.0.1" });
    const certFile = path.join(dir, "tls-cert.pem");
    const keyFile = path.join(dir, "tls-key.pem");
    const ca = tls.cert;
    const sessionSecret = randomBytes(32);

    const pairNames = Array.from({ length: 2 * opts.pairs }, (_, i) => `cap${i >> 1}_${i & 1 ? "b" : "a"}`);
    const fan10Names = Array.from({ length: 10 }, (_, i) => `capten_${i}`);
    const fan100Names = Array.from({ length: 100 }, (_, i) => `caphundred_${i}`);
    const { users, lastBlock } = await registerBenchUsers({
      rpcUrl: anvil.url,
      contractAddress: deployed.address,
      relayerKey: deployed.relayerKey,
      usernames: [...pairNames, ...fan10Names, ...fan100Names],
    });
    const tokenOf = (name: string) => benchSessionToken(sessionSecret, users.get(name)!);

    log(`building real MLS groups: ${opts.pairs} of two, one of 10, one of 100, each with one sealed application message ...`);
    const pairGroups: RealGroup[] = [];
    for (let p = 0; p < opts.pairs; p++) pairGroups.push(await buildRealGroup(pairNames.slice(2 * p, 2 * p + 2)));
    const fan10Group = await buildRealGroup(fan10Names);
    const fan100Group = await buildRealGroup(fan100Names);
    log(`  application message: ${pairGroups[0].message.length} bytes (two members), ${fan100Group.message.length} bytes (100 members)`);

    const profileFile = path.join(dir, "relay.cpuprofile");
    const relaySockets = (2 * opts.pairs + 9 + 99) * (opts.sockets + 1) + 2 * FANOUT_SENDER_SOCKETS + 10;
    const relayChild = await startTsChild({
      script: "bench/relay-server.ts",
      env: {
        ...(opts.profile ? { BENCH_PROFILE_FILE: profileFile } : {}),
        ...relayEnv({ rpcUrl: anvil.url, contractAddress: deployed.address, deployBlock: deployed.deployBlock, relayerKey: deployed.relayerKey, mysqlUrl: db.url, dataDir: dir, port: 0 }),
        SESSION_SECRET: sessionSecret.toString("hex"),
        TLS_CERT: certFile,
        TLS_KEY: keyFile,
        LOG_LEVEL: "warn",
        SYNC_POLL_MS: "",
        // Every client shares one loopback address: the per-address caps guard against one abusive host, no capacity.
        HTTP_MAX_CONNECTIONS_PER_ADDRESS: String(relaySockets + 100),
        HTTP_MAX_CONNECTIONS: String(Math.max(4096, relaySockets + 100)),
        WS_MAX_CONNECTIONS_PER_ADDRESS: String(relaySockets + 100),
      },
    });
    cleanups.push(() => relayChild.stop());
    const relayPort = relayChild.ready.port as number;
    const relayPid = relayChild.ready.pid as number;
    const health = new V2Client(relayPort, ca, "", 1);
    await waitForRelaySync(() => health.request("GET", "/healthz"), lastBlock);
    health.close();
    const forwarderChild = await startTsChild({ script: "bench/forwarder.ts", env: { TLS_CERT: certFile, TLS_KEY: keyFile } });
    cleanups.push(() => forwarderChild.stop());
    const fwdPort = forwarderChild.ready.port as number;
    const fwdPid = forwarderChild.ready.pid as number;
    const dbAdmin = await mysql.createConnection(db.url);
    cleanups.push(() => dbAdmin.end());
    const dbProbe: DbProbe = { pid: databaseServerPid(), threads: () => databaseConnectionThreads(dbAdmin, db.name) };
    await writeIdleGroups(dbAdmin, opts["idle-groups"]);
    const dbPid = dbProbe.pid;

    const sockets: WebSocket[] = [];
    const clients: V2Client[] = [];
    cleanups.push(async () => {
      sockets.forEach((ws) => ws.terminate());
      clients.forEach((c) => c.close());
    });
    const client = (name: string, n: number) => {
      const c = new V2Client(relayPort, ca, tokenOf(name), n);
      clients.push(c);
      return c;
    };

    // ---- relay drivers ----
    log("registering the groups on the relay and connecting its devices ...");
    const newDriver = (
      target: TargetKind, scenario: string, recipientsPerMessage: number, slots: number, pid: number, send: Driver["send"], prepare: Driver["prepare"] = async () => undefined,
    ): Driver => ({
      target, scenario, recipientsPerMessage, slots, pid, send, prepare, onDelivery: noDelivery, onStored: noStored, errors: { count: 0 }, logReads: 0, httpFallbacks: 0,
      ...(target === "relay" ? { relayCounts: () => relayCounts(relayPort, ca) } : {}),
    });
    const touchAll = async (members: RelayMember[]) => {
      for (let i = 0; i < members.length; i += 25) await Promise.all(members.slice(i, i + 25).map((m) => m.touch()));
    };
    const failSend = (driver: () => Driver) => (error: unknown) => {
      const errors = driver().errors;
      errors.count++;
      errors.last = error instanceof Error ? error.message : String(error);
    };

    const pairMembers: RelayMember[] = [];
    for (let p = 0; p < opts.pairs; p++) {
      const names = pairNames.slice(2 * p, 2 * p + 2);
      const members = names.map((name) => new RelayMember(name, client(name, opts.sockets), pairGroups[p].groupId, () => relayDuo));
      await registerGroupOnRelay(members[0].client, names, pairGroups[p]);
      pairMembers.push(...members);
    }
    const pairBytes = pairGroups.map((g) => encodeBase64(g.message));
    /**
     * One application message from a device: an append frame on its WebSocket, or a POST (`append-ws`). As
     * client-core's SocketAppends, a device with MAX_APPENDS_WAITING of its appends waiting on its socket (the
     * relay refuses more) sends the next over HTTP.
     */
    const appendFrom = (client: V2Client, socket: { ws: WebSocket | null; appendsWaiting: number }, group: RealGroup, bytes: string, id: string, driver: () => Driver) => {
      if (opts["append-ws"] && socket.appendsWaiting < MAX_APPENDS_WAITING) {
        // The answer ("appended", or an error frame counted by the socket's frame handler) needs no waiting here.
        socket.appendsWaiting++;
        socket.ws!.send(JSON.stringify({ type: "append", groupId: group.groupId, deviceId: DEVICE_ID, epoch: group.epoch, id, bytes }));
        return;
      }
      if (opts["append-ws"]) driver().httpFallbacks++;
      client.request("POST", `/v2/groups/${group.groupId}/messages`, { epoch: group.epoch, id, bytes }).then(() => driver().onStored(id), failSend(driver));
    };
    const relayDuo: Driver = newDriver("relay", "one_to_one", 1, pairMembers.length, relayPid, (slot, id) => {
      const member = pairMembers[slot];
      appendFrom(member.client, member, pairGroups[slot >> 1], pairBytes[slot >> 1], id, () => relayDuo);
    }, () => touchAll(pairMembers));

    const relayFanout = async (names: string[], group: RealGroup, scenario: string) => {
      const sender = client(names[0], FANOUT_SENDER_SOCKETS);
      await registerGroupOnRelay(sender, names, group);
      const bytes = encodeBase64(group.message);
      const members = names.slice(1).map((name) => new RelayMember(name, client(name, opts.sockets), group.groupId, () => driver));
      // With append frames the sender holds a WebSocket as a device does (and hears its own group's notices).
      const senderSocket: { ws: WebSocket | null; appendsWaiting: number } = { ws: null, appendsWaiting: 0 };
      if (opts["append-ws"]) {
        senderSocket.ws = await connectWebSocket(`wss://127.0.0.1:${relayPort}${WS_PATH}`, ca, { authorization: `Bearer ${tokenOf(names[0])}` }, (frame) => {
          if ((frame.type === "appended" || frame.type === "error") && frame.id !== undefined) senderSocket.appendsWaiting = Math.max(0, senderSocket.appendsWaiting - 1);
          if (frame.type === "error") failSend(() => driver)(new Error(`${frame.code}: ${frame.message}`));
          else if (frame.type === "appended" && frame.id !== undefined) driver.onStored(String(frame.id));
        });
        sockets.push(senderSocket.ws);
      }
      const driver: Driver = newDriver(
        "relay", scenario, names.length - 1, 1, relayPid,
        (_slot, id) => appendFrom(sender, senderSocket, group, bytes, id, () => driver),
        async () => {
          await Promise.all(Array.from({ length: sender.sockets }, () => sender.request("GET", `/v2/groups/${group.groupId}/members`)));
          await touchAll(members);
        },
      );
      return { driver, members };
    };
    const relayFan10 = await relayFanout(fan10Names, fan10Group, "fanout_10");
    const relayFan100 = await relayFanout(fan100Names, fan100Group, "fanout_100");
    const allMembers = [...pairMembers, ...relayFan10.members, ...relayFan100.members];
    for (let i = 0; i < allMembers.length; i += 20) {
      await Promise.all(allMembers.slice(i, i + 20).map((m) => m.open(relayPort, ca, tokenOf(m.name))));
    }
    sockets.push(...allMembers.map((m) => m.ws!));

    // ---- forwarder drivers ----
    log("connecting the forwarder's devices ...");
    const fwdUrl = (user: string) => `wss://127.0.0.1:${fwdPort}${WS_PATH}?user=${user}`;
    const fwdSocket = async (user: string, driver: () => Driver) => {
      let ws: WebSocket | null = null;
      ws = await connectWebSocket(fwdUrl(user), ca, {}, (frame) => {
        if (frame.type !== "message" || !frame.id) return;
        // The recipient acknowledges, as it moves its cursor on the relay.
        ws!.send(JSON.stringify({ type: "ack", id: frame.id }));
        driver().onDelivery(frame.id, performance.now());
      });
      sockets.push(ws);
      return ws;
    };
    const fwdDuoSockets: WebSocket[] = [];
    for (const name of pairNames) fwdDuoSockets.push(await fwdSocket(name, () => fwdDuo));
    const fwdDuo: Driver = newDriver("forwarder", "one_to_one", 1, pairNames.length, fwdPid, (slot, id) => {
      fwdDuoSockets[slot].send(JSON.stringify({ type: "send", id, to: pairNames[slot ^ 1], envelope: pairBytes[slot >> 1] }));
    });
    const fwdFanout = async (names: string[], group: RealGroup, scenario: string) => {
      const groupUser = `${names[0]}_group`;
      const bytes = encodeBase64(group.message);
      const sender = await fwdSocket(names[0], () => driver);
      for (let i = 1; i < names.length; i++) await fwdSocket(groupUser, () => driver);
      const driver: Driver = newDriver("forwarder", scenario, names.length - 1, 1, fwdPid, (_slot, id) => {
        sender.send(JSON.stringify({ type: "send", id, to: groupUser, envelope: bytes }));
      });
      return driver;
    };
    const fwdFan10 = await fwdFanout(fan10Names, fan10Group, "fanout_10");
    const fwdFan100 = await fwdFanout(fan100Names, fan100Group, "fanout_100");

    const scenarios: { name: string; relay: Driver; forwarder: Driver }[] = [
      { name: "one_to_one", relay: relayDuo, forwarder: fwdDuo },
      { name: "fanout_10", relay: relayFan10.driver, forwarder: fwdFan10 },
      { name: "fanout_100", relay: relayFan100.driver, forwarder: fwdFan100 },
    ].filter((s) => opts.only === 0 || s.relay.recipientsPerMessage + 1 === opts.only);
    if (scenarios.length === 0) throw new Error("--only must be 0, 2, 10 or 100");

    log("warming up (TLS connections, JIT) ...");
    for (const s of scenarios) {
      for (const d of [s.relay, s.forwarder]) {
        const warm = await openLoopStep(d, Math.min(opts.start, 250), 1, Math.max(5, opts["drain-seconds"]), dbProbe);
        log(`  warm-up ${s.name} ${d.target}: p99 ${warm.p99_ms} ms, undelivered ${warm.undelivered_after_drain}, errors ${warm.errors}${warm.last_error ? ` (${warm.last_error})` : ""}`);
        if (warm.undelivered_after_drain > 0 || warm.errors > 0) throw new Error(`${s.name} ${d.target}: the warm-up did not deliver everything`);
      }
    }

    // CPU while no message flows: the relay's timers (pings, chain polling) and the other jobs on the database server.
    const idle = async (ms: number) => {
      const db = cpuMsOrNaN(dbPid);
      const relay = cpuMsOrNaN(relayPid);
      await sleep(ms);
      return { database_server: round(((cpuMsOrNaN(dbPid) - db) * 1000) / ms, 1), relay: round(((cpuMsOrNaN(relayPid) - relay) * 1000) / ms, 1) };
    };
    const idleBefore = await idle(2_000);
    log(`CPU ms/s while this benchmark sends nothing: ${JSON.stringify(idleBefore)}`);

    // ---- the ladders ----
    const stepCost = opts["step-seconds"] + opts["lead-in-ms"] / 1000 + 1;
    let cutByTimeBox = false;
    const ladders: Record<string, { relay: StepResult[]; forwarder: StepResult[] }> = {};
    for (const s of scenarios) {
      const steps = { relay: [] as StepResult[], forwarder: [] as StepResult[] };
      ladders[s.name] = steps;
      /** Runs `kind` at `rate` (once more on a failure with `confirm`); whether the rate passed, or null when the time box cut it. */
      const runRate = async (kind: TargetKind, rate: number): Promise<boolean | null> => {
        for (let attempt = 1; attempt <= 1 + opts.confirm; attempt++) {
          if (elapsed() + stepCost > opts["budget-seconds"]) {
            cutByTimeBox = true;
            return attempt === 1 ? null : false;
          }
          const step = await openLoopStep(s[kind], rate, opts["step-seconds"], opts["drain-seconds"], dbProbe, attempt);
          steps[kind].push(step);
          log(`${s.name} ${kind} ${rate}/s #${attempt}: ${step.passed ? "pass" : "FAIL"} ${JSON.stringify(step)}`);
          // Let the step's stragglers and cursor moves settle before the next one.
          await sleep(300);
          if (step.passed) return true;
        }
        return false;
      };
      // The doubling: each series up to its first failed rate. `gap` keeps its last passed and first failed rate.
      const gap: Record<TargetKind, { passed: number; failed: number } | null> = { relay: null, forwarder: null };
      const alive = { relay: true, forwarder: true };
      let turn = 0;
      for (let rate = opts.start; rate <= opts.max; rate *= 2, turn++) {
        const order: TargetKind[] = turn % 2 === 0 ? ["relay", "forwarder"] : ["forwarder", "relay"];
        for (const kind of order) {
          if (!alive[kind]) continue;
          const passed = await runRate(kind, rate);
          if (passed) continue;
          alive[kind] = false;
          if (passed === false && rate > opts.start) gap[kind] = { passed: rate / 2, failed: rate };
        }
        if (!alive.relay && !alive.forwarder) break;
      }
      // The halving: a midpoint that passes becomes the gap's lower end, one that fails its upper end.
      for (let round = 0; round < opts.refine; round++, turn++) {
        const order: TargetKind[] = turn % 2 === 0 ? ["relay", "forwarder"] : ["forwarder", "relay"];
        for (const kind of order) {
          const g = gap[kind];
          if (!g) continue;
          const rate = Math.round((g.passed + g.failed) / 2);
          const passed = await runRate(kind, rate);
          if (passed === null) gap[kind] = null;
          else if (passed) g.passed = rate;
          else g.failed = rate;
        }
      }
    }
    const idleAfter = await idle(2_000);

    log("closed loop, one-to-one ...");
    const closedRelay = await closedLoop(relayDuo, opts["closed-window"], opts["closed-seconds"], opts["drain-seconds"]);
    log(`closed loop relay: ${JSON.stringify(closedRelay)}`);
    const closedForwarder = await closedLoop(fwdDuo, opts["closed-window"], opts["closed-seconds"], opts["drain-seconds"]);
    log(`closed loop forwarder: ${JSON.stringify(closedForwarder)}`);

    // Where the relay's time goes: one more one-to-one step at its knee, profiled on its own.
    let profile: unknown = undefined;
    if (opts.profile) {
      const duoKnee = highestPassed(ladders.one_to_one?.relay ?? [])?.offered_deliveries_per_s ?? opts.start;
      const step = await openLoopStep(relayDuo, duoKnee, opts["step-seconds"], opts["drain-seconds"], dbProbe, 1, async () => {
        relayChild.child.kill("SIGUSR2");
        await sleep(100);
      });
      relayChild.child.kill("SIGUSR2");
      const until = performance.now() + 30_000;
      while (!relayChild.output().includes('"profileWritten"') && performance.now() < until) await sleep(100);
      if (relayChild.output().includes('"profileWritten":true')) {
        const kept = path.join(os.tmpdir(), `bench-capacity-${Date.now()}.cpuprofile`);
        await copyFile(profileFile, kept);
        log(`relay CPU profile of a one_to_one step at ${duoKnee}/s kept at ${kept} (tsx bench/profile-summary.ts ${kept})`);
        profile = { step: { scenario: "one_to_one", offered_deliveries_per_s: duoKnee, p99_ms: step.p99_ms, server_cpu_us_per_msg: step.server_cpu_us_per_msg }, ...summarizeCpuProfile(kept, 10) };
      } else log("the relay wrote no CPU profile");
    }

    const kneeOf = (steps: StepResult[]) => {
      const knee = highestPassed(steps);
      const failedAbove = steps.some((x) => x.offered_deliveries_per_s > (knee?.offered_deliveries_per_s ?? 0) && !x.passed);
      // What one core of the server would carry at the CPU cost per delivery of the knee (or lowest) step.
      const costStep = knee ?? steps[0];
      return {
        deliveries_per_s: knee?.offered_deliveries_per_s ?? null,
        below_lowest_step: !knee && steps.length > 0,
        msgs_per_s: knee?.offered_msgs_per_s ?? null,
        // No failed step above it (the ladder's top or the time box): the knee is only a lower bound.
        lower_bound_only: !failedAbove,
        server_cpu_us_per_msg: knee?.server_cpu_us_per_msg ?? null,
        db_cpu_us_per_msg: knee?.db_cpu_us_per_msg ?? null,
        client_cpu_us_per_msg: knee?.client_cpu_us_per_msg ?? null,
        p99_ms: knee?.p99_ms ?? null,
        one_core_deliveries_per_s: costStep && costStep.server_cpu_us_per_delivery > 0 ? round(1e6 / costStep.server_cpu_us_per_delivery, 0) : null,
      };
    };
    const summary = Object.fromEntries(
      scenarios.map((s) => {
        const relay = kneeOf(ladders[s.name].relay);
        const forwarder = kneeOf(ladders[s.name].forwarder);
        const ratio = relay.deliveries_per_s && forwarder.deliveries_per_s ? round(relay.deliveries_per_s / forwarder.deliveries_per_s, 2) : null;
        const cpuRatio = relay.one_core_deliveries_per_s && forwarder.one_core_deliveries_per_s ? round(relay.one_core_deliveries_per_s / forwarder.one_core_deliveries_per_s, 3) : null;
        return [
          s.name,
          { relay_knee: relay, forwarder_knee: forwarder, knee_ratio: ratio, ratio_is_upper_bound: forwarder.lower_bound_only && ratio !== null, one_core_ratio: cpuRatio },
        ];
      }),
    );

    const relayRss = round(procMemory(relayPid).hwm / 2 ** 20, 0);

    result({
      bench: "capacity",
      date: new Date().toISOString(),
      machine: machine(),
      run_seconds: round(elapsed(), 0),
      setup: {
        path: "v2 (MLS Delivery Service over HTTPS; {type:'group'} notices over the relay's WebSocket)",
        notice_entries: opts["notice-entries"] === 1,
        appends: opts["append-ws"] ? "append frames on the sender's WebSocket" : "POST /v2/groups/:id/messages",
        early_frames: opts.early
          ? "asked for: a message handed on to the recipient's WebSocket before it is durable is the delivery (its durable entry only moves the cursor)"
          : "not asked for: the delivery is the notice of the durable entry (or a log read)",
        cursor_moves: `${opts["cursor-ws"] ? "cursor frames on the WebSocket" : "POST /v2/groups/:id/cursor"}${
          opts["cursor-idle-ms"] > 0
            ? `, after ${opts["cursor-idle-ms"]} ms without a new entry`
            : opts["cursor-ws"] && opts["cursor-interval-ms"] > 0
              ? `, after every entry, at most one frame per ${opts["cursor-interval-ms"]} ms per device (the furthest held move goes when it ends)`
              : ", after every entry"
        }`,
        loop: "open: fixed send schedule per step; latency from the scheduled send time to the read (relay) or push (forwarder)",
        rates: `deliveries/s doubling from ${opts.start} to at most ${opts.max}; a series stops at its first failed rate, then ${opts.refine} step(s) halve the gap between its last passed and first failed rate`,
        failed_step_rerun_once: opts.confirm === 1,
        step_seconds: opts["step-seconds"],
        drain_seconds: opts["drain-seconds"],
        pass_rule: `p99 < ${P99_GOAL_MS} ms, no backlog growth (deliveries > ${OVERDUE_MS} ms overdue at the end vs mid-step, tolerance max(recipients, 0.5% of deliveries)), all delivered, no errors`,
        bytes: "real MLS: one application message per group sealed ahead, resent under fresh ids (the relay stores and serves it without parsing it)",
        mls_message_bytes: { two_members: pairGroups[0].message.length, ten_members: fan10Group.message.length, hundred_members: fan100Group.message.length },
        pairs: opts.pairs,
        idle_groups: opts["idle-groups"],
        https_sockets_per_device: `${opts.sockets} (FIFO, opened before each step; the relay closes idle ones after its 5 s keep-alive timeout)`,
        fanout_sender_sockets: FANOUT_SENDER_SOCKETS,
        relay_websockets: allMembers.length,
        relay_max_client_connections: relaySockets,
        relay_process: "bench/relay-server.ts: relay/stack.ts with the MySQL stores, per-connection send rate limit raised",
        forwarder_process: "bench/forwarder.ts: ws over TLS, parse and push, nothing stored; fan-out recipients share one user name",
        relay_profiled: opts.profile === 1 ? "one extra one_to_one step at the relay's knee, after the ladders (the ladders run unprofiled)" : false,
        cut_by_time_box: cutByTimeBox,
      },
      mysql_durability: durability,
      idle_cpu_ms_per_s: {
        before_ladders: idleBefore,
        after_ladders: idleAfter,
        note: "db_cpu_us_per_msg: the server threads of the relay's connections only; db_server_cpu_us_per_msg: the whole server, other jobs' load included",
      },
      knees: summary,
      ladders,
      closed_loop_one_to_one: { relay: closedRelay, forwarder: closedForwarder },
      relay_peak_rss_mib: relayRss,
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

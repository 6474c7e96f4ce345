/**
 * Building blocks of bench:capacity: real MLS groups sealed ahead, the relay's /v2 groups registered from
 * them, a keep-alive HTTPS client per device, WebSocket connections to the relay or the forwarder, and
 * the machine's and MariaDB's CPU counters from /proc.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import https from "node:https";
import { Wallet } from "ethers";
import WebSocket from "ws";
import {
  acceptPendingCommit,
  addMembers,
  authorizeDevice,
  createMlsGroup,
  deviceAuthenticationService,
  generateDeviceKeyPackage,
  generateDeviceSignatureKey,
  joinFromWelcome,
  memoryKeyBook,
  mlsClientConfig,
  newPayloadId,
  processIncomingMessage,
  sealApplicationMessage,
} from "../protocol/mls";
import { encodeBase64 } from "../protocol/wire-v2";
import { procCpuMs } from "./lib";

export const DEVICE_ID = "bench-device";
const CHAIN_ID = 31337n;
/** Any address does for the credentials: the relay never checks MLS credentials, the members do. */
const CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const REQUEST_TIMEOUT_MS = 60_000;

/** One device's keep-alive HTTPS JSON client for the /v2 routes, with at most `sockets` connections. */
export class V2Client {
  /** TLS connections this client opened (a kept-alive one is reused): every TLS handshake costs the relay CPU */
  static connectionsOpened = 0;
  private readonly agent: https.Agent;
  readonly sockets: number;
  constructor(
    private readonly port: number,
    private readonly ca: string,
    private readonly token: string,
    sockets: number,
  ) {
    // FIFO: requests take turns on the open sockets, so none idles past the relay's keep-alive timeout
    // while the device is busy (LIFO would leave the spare ones idle, closed, and reopened at every burst).
    this.agent = new https.Agent({ keepAlive: true, maxSockets: sockets, ca, scheduling: "fifo" });
    this.sockets = sockets;
  }

  /**
   * One request; a kept-alive socket the relay closed as idle just as it was reused (ECONNRESET) is retried
   * once on a fresh one. Safe for every call here: reads and cursor moves are idempotent, and a retried append
   * carries the same id, which the relay stores once.
   */
  async request(method: "GET" | "POST", route: string, body?: unknown): Promise<any> {
    try {
      return await this.once(method, route, body);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ECONNRESET") throw error;
      return this.once(method, route, body);
    }
  }

  private once(method: "GET" | "POST", route: string, body?: unknown): Promise<any> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: "127.0.0.1",
          port: this.port,
          path: route,
          method,
          agent: this.agent,
          timeout: REQUEST_TIMEOUT_MS,
          headers: {
            authorization: `Bearer ${this.token}`,
            "x-device-id": DEVICE_ID,
            accept: "application/json",
            ...(payload ? { "content-type": "application/json", "content-length": String(payload.length) } : {}),
          },
        },
        (res) => {
          if (!req.reusedSocket) V2Client.connectionsOpened++;
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            if ((res.statusCode ?? 0) >= 400) return reject(new Error(`${method} ${route}: HTTP ${res.statusCode} ${text.slice(0, 300)}`));
            try {
              resolve(JSON.parse(text));
            } catch {
              reject(new Error(`${method} ${route}: not JSON (HTTP ${res.statusCode})`));
            }
          });
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${method} ${route}: timed out`)));
      req.on("error", reject);
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export type Frame = {
  type: string;
  id?: string;
  groupId?: string;
  seq?: number;
  /** an `appended` answer's cursor of the sending device */
  cursor?: number;
  code?: string;
  message?: string;
  /** a group notice's carried log entry (the fields read here) */
  entry?: { seq: number; id: string; sender: { username: string; deviceId: string } };
};

/** Opens a WebSocket and resolves on its "ready" frame; every later frame goes to `onFrame`. */
export function connectWebSocket(url: string, ca: string, headers: Record<string, string>, onFrame: (frame: Frame) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ca, headers, perMessageDeflate: false, maxPayload: 1 << 20 });
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as Frame;
      if (frame.type === "ready") return resolve(ws);
      onFrame(frame);
    });
    ws.once("error", reject);
    ws.once("unexpected-response", (_req, res) => reject(new Error(`${url}: upgrade answered HTTP ${res.statusCode}`)));
  });
}

export interface RealGroup {
  groupId: string;
  commit: Uint8Array;
  welcome: Uint8Array;
  /** one application message of the group, sealed by its first member */
  message: Uint8Array;
  epoch: number;
  /** how long the creator took to build the add commit */
  commitMs: number;
}

/**
 * A real MLS group of `names` (one commit adding everyone but the creator) and one application message
 * of it; the last member joins from the Welcome and opens the message, as proof that the bytes are real.
 */
export async function buildRealGroup(names: string[]): Promise<RealGroup> {
  const keyBook = memoryKeyBook();
  const config = (policy: "strict" | "lenient") =>
    mlsClientConfig(deviceAuthenticationService({ keyBook, policy, chainId: CHAIN_ID, contract: CONTRACT }));
  const strict = config("strict");
  const devices = [];
  for (const username of names) {
    const wallet = Wallet.createRandom();
    keyBook.append(username, { address: wallet.address, kind: "registered", timestamp: Math.floor(Date.now() / 1000) });
    const signatureKey = await generateDeviceSignatureKey();
    const credential = await authorizeDevice({
      username,
      keyIndex: 0,
      chainId: CHAIN_ID,
      contract: CONTRACT,
      devicePublicKey: signatureKey.publicKey,
      sign: (text) => wallet.signMessage(text),
    });
    devices.push({ username, ...(await generateDeviceKeyPackage({ credential, signatureKey, lifetimeSeconds: 3600 })) });
  }
  const [creator, ...others] = devices;
  const base = await createMlsGroup({ keyPackage: creator.publicPackage, privatePackage: creator.privatePackage, clientConfig: strict });
  const started = performance.now();
  const pending = await addMembers({ state: base, keyPackages: others.map((d) => d.publicPackage) });
  const commitMs = performance.now() - started;
  const creatorState = acceptPendingCommit(pending);
  // A chat message of ordinary length: what the relay stores and hands out is this many bytes.
  const sealed = await sealApplicationMessage({ state: creatorState, payload: { id: newPayloadId(), sentAt: Date.now(), body: "x".repeat(120) } });
  const reader = others[others.length - 1];
  const readerState = await joinFromWelcome({
    welcome: pending.welcome!,
    keyPackage: reader.publicPackage,
    privatePackage: reader.privatePackage,
    joinConfig: config("lenient"),
    memberConfig: strict,
  });
  const opened = await processIncomingMessage({ state: readerState, message: sealed.message });
  if (opened.kind !== "application" || opened.sender.username !== creator.username) throw new Error("the benchmark's MLS message does not open");
  return {
    groupId: Buffer.from(base.groupContext.groupId).toString("hex"),
    commit: pending.commit,
    welcome: pending.welcome!,
    message: sealed.message,
    epoch: Number(sealed.state.groupContext.epoch),
    commitMs,
  };
}

/**
 * Registers the group on the relay: created by its first member, then its add commit. Welcomes go only with
 * small groups: a 100-member commit's welcomes would pass one request's body limit, and no device here joins
 * through the relay.
 */
export async function registerGroupOnRelay(creator: V2Client, names: string[], group: RealGroup, options: { welcomes?: boolean } = {}): Promise<void> {
  await creator.request("POST", "/v2/groups", { groupId: group.groupId, members: [{ username: names[0], deviceId: DEVICE_ID }] });
  const others = names.slice(1).map((username) => ({ username, deviceId: DEVICE_ID }));
  const answer = await creator.request("POST", `/v2/groups/${group.groupId}/commits`, {
    epoch: 0,
    id: `commit-${group.groupId.slice(0, 16)}`,
    bytes: encodeBase64(group.commit),
    add: others,
    welcomes: (options.welcomes ?? others.length <= 10) ? others.map((o) => ({ ...o, bytes: encodeBase64(group.welcome) })) : [],
  });
  if (!answer.accepted || answer.epoch !== 0) throw new Error(`commit not accepted: ${JSON.stringify(answer)}`);
}

/** The machine's CPU counters (all cores, ms): busy (not idle, not iowait) and total, from /proc/stat. */
export function machineCpuMs(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0];
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = ticks.reduce((a, b) => a + b, 0);
  const idle = ticks[3] + ticks[4];
  return { busy: ((total - idle) * 1000) / 100, total: (total * 1000) / 100 };
}

/** The database server's PID (mariadbd, or mysqld), or 0 when none runs here. */
export function databaseServerPid(): number {
  for (const name of ["mariadbd", "mysqld"]) {
    try {
      const pid = Number(execFileSync("pidof", [name], { encoding: "utf8" }).trim().split(/\s+/)[0]);
      if (pid) return pid;
    } catch {
      // not running under this name
    }
  }
  return 0;
}

/** Cumulative CPU ms of `pid`, or NaN when it is gone (the database server is shared with other jobs). */
export function cpuMsOrNaN(pid: number): number {
  try {
    return pid ? procCpuMs(pid) : NaN;
  } catch {
    return NaN;
  }
}

/**
 * The database server's threads that serve connections to database `name` (MariaDB runs one thread per
 * connection and shows its Linux thread id in PROCESSLIST.TID), the asking connection left out: their CPU
 * is this benchmark's share of a server other jobs may be using too. InnoDB's background threads (purge,
 * page cleaner) are not among them.
 */
export async function databaseConnectionThreads(admin: { query(sql: string, values?: unknown[]): Promise<unknown> }, name: string): Promise<number[]> {
  const [rows] = (await admin.query("SELECT TID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()", [name])) as [
    Array<{ TID: number | string | null }>,
  ];
  return rows.map((r) => Number(r.TID)).filter((tid) => Number.isSafeInteger(tid) && tid > 0);
}

/**
 * Cumulative CPU ms of each thread of process `pid`, from /proc/PID/task/TID/stat (/proc/TID/stat would be
 * the whole process's); gone ones are left out.
 */
export function threadsCpuMs(pid: number, tids: number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(tid, ((Number(fields[11]) + Number(fields[12])) * 1000) / 100); // utime + stime, USER_HZ 100
    } catch {
      // the thread ended (its connection closed)
    }
  }
  return out;
}

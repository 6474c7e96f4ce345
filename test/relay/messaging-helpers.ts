/**
 * Helpers of the messaging tests: the messaging half alone (attachMessaging on a plain-HTTP server on a
 * free loopback port, with the mailbox, bus, clock and limits each test chooses), and a small `ws`
 * client that queues the frames it receives. Not a test file (no describe).
 */
import http from "node:http";
import { randomBytes } from "node:crypto";
import pino from "pino";
import { Registry } from "prom-client";
import WebSocket from "ws";
import { DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAILBOX_TTL_MS } from "../../protocol/wire";
import { attachMessaging, type Messaging, type MessagingLimits } from "../../relay/ws/attach";
import type { Mailbox } from "../../relay/storage/mailbox";
import type { MessageBus } from "../../relay/bus/bus";
import { issueSessionToken, verifySessionToken } from "../../relay/sessions";
import { createMysqlPool } from "../../relay/storage/mysql-pool";
import { createRedisBus } from "../../relay/bus/redis";
import { createMysqlMailbox } from "../../relay/storage/mailbox-mysql";
import { createTestDatabase } from "../helpers/mysql";

export const SECRET = randomBytes(32);
export const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

/** The relay's own pool (BIGINTs read as strings, exact beyond 2^53), small for tests. */
export function createTestPool(url: string) {
  return createMysqlPool(url, { connectionLimit: 5 });
}

export function tokenFor(username: string, options: { now?: number; ttlMs?: number; secret?: Uint8Array } = {}) {
  return issueSessionToken({
    secret: options.secret ?? SECRET,
    username,
    keyIndex: 0,
    credentialHash: `0x${"00".repeat(32)}`,
    now: options.now ?? Date.now(),
    ttlMs: options.ttlMs,
  }).token;
}

export interface TestRelay {
  url: string;
  server: http.Server;
  messaging: Messaging;
  registry: Registry;
  close(): Promise<void>;
}

export async function startTestRelay(params: {
  mailbox: Mailbox;
  bus?: MessageBus;
  clock?: () => number;
  limits?: Partial<MessagingLimits>;
}): Promise<TestRelay> {
  const server = http.createServer((_req, res) => {
    res.statusCode = 404;
    res.end();
  });
  const registry = new Registry();
  const messaging = attachMessaging({
    server,
    // No chain here: a token stands on its MAC and expiry alone (session ends are tested against real relays).
    sessions: {
      authenticate: async (token) => verifySessionToken({ secret: SECRET, token, now: (params.clock ?? Date.now)() }),
      current: async () => true,
    },
    mailbox: params.mailbox,
    bus: params.bus,
    logger: pino({ level: "silent" }),
    clock: params.clock ?? Date.now,
    metrics: registry,
    limits: { maxFrameBytes: DEFAULT_MAX_FRAME_BYTES, mailboxTtlMs: DEFAULT_MAILBOX_TTL_MS, ...params.limits },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `ws://127.0.0.1:${port}/v1/ws`,
    server,
    messaging,
    registry,
    async close() {
      await messaging.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface TestClient {
  ws: WebSocket;
  send(frame: unknown): void;
  sendRaw(data: string | Buffer): void;
  /** The next received frame that matches (frames before it that do not match stay queued). */
  next(match?: (frame: any) => boolean, timeoutMs?: number): Promise<any>;
  /** Resolves with the close code and reason. */
  closed: Promise<{ code: number; reason: string }>;
  close(): Promise<void>;
}

/** Opens a connection; rejects with the HTTP status and body when the upgrade is refused. */
export function connectClient(url: string, token?: string): Promise<TestClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: token === undefined ? {} : { Authorization: `Bearer ${token}` } });
    const queue: any[] = [];
    const waiters: Array<{ match: (f: any) => boolean; resolve: (f: any) => void }> = [];
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      const i = waiters.findIndex((w) => w.match(frame));
      if (i >= 0) waiters.splice(i, 1)[0].resolve(frame);
      else queue.push(frame);
    });
    const closed = new Promise<{ code: number; reason: string }>((resolveClose) =>
      ws.on("close", (code, reason) => resolveClose({ code, reason: reason.toString() })),
    );
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body: JSON.parse(body || "null"), headers: res.headers })));
    });
    ws.on("error", (error) => reject(error));
    ws.on("open", () =>
      resolve({
        ws,
        send: (frame) => ws.send(JSON.stringify(frame)),
        sendRaw: (data) => ws.send(data),
        next(match = () => true, timeoutMs = 5_000) {
          const i = queue.findIndex(match);
          if (i >= 0) return Promise.resolve(queue.splice(i, 1)[0]);
          return new Promise((resolveFrame, rejectFrame) => {
            const waiter = {
              match,
              resolve: (f: any) => {
                clearTimeout(timer);
                resolveFrame(f);
              },
            };
            const timer = setTimeout(() => {
              waiters.splice(waiters.indexOf(waiter), 1);
              rejectFrame(new Error(`no matching frame within ${timeoutMs} ms (queued: ${JSON.stringify(queue).slice(0, 300)})`));
            }, timeoutMs);
            waiters.push(waiter);
          });
        },
        closed,
        async close() {
          if (ws.readyState === WebSocket.CLOSED) return;
          ws.close();
          await Promise.race([closed, new Promise((r) => setTimeout(r, 1_000))]);
          ws.terminate();
        },
      }),
    );
  });
}

export const isType = (type: string) => (f: any) => f.type === type;
export const isAccepted = (id: string) => (f: any) => f.type === "accepted" && f.id === id;
export const isError = (f: any) => f.type === "error";

/** Connects, waits for the backlog and ready frame, and returns the backlog's messages in order. */
export async function connectReady(url: string, username: string): Promise<{ client: TestClient; backlog: any[]; ready: any }> {
  const client = await connectClient(url, tokenFor(username));
  const backlog: any[] = [];
  for (;;) {
    const frame = await client.next((f) => f.type === "message" || f.type === "ready");
    if (frame.type === "ready") return { client, backlog, ready: frame };
    backlog.push(frame);
  }
}

export function envelope(n: number | string) {
  return JSON.stringify({ v: 1, ciphertext: `opaque-${n}` });
}

/** Two messaging relays over one MariaDB mailbox database and one Redis: a user on one reaches a user on the other. */
export interface RelayPair {
  mailboxes: Mailbox[];
  /** Connects `username` to relay 0 or 1 and waits for its backlog; closed with the pair. */
  open(relay: number, username: string): ReturnType<typeof connectReady>;
  close(): Promise<void>;
}

export async function startRelayPair(databaseName: string): Promise<RelayPair> {
  const db = await createTestDatabase(databaseName);
  const pool = createTestPool(db.url);
  const mailboxes: Mailbox[] = [];
  const buses: MessageBus[] = [];
  const relays: TestRelay[] = [];
  const clients: TestClient[] = [];
  const close = async () => {
    await Promise.all(clients.map((c) => c.close()));
    for (const r of relays) await r.close();
    for (const b of buses) await b.close();
    for (const m of mailboxes) await m.close();
    await pool.end();
    await db.drop();
  };
  try {
    for (let i = 0; i < 2; i++) {
      const mailbox = createMysqlMailbox(pool);
      mailboxes.push(mailbox);
      await mailbox.migrate();
      const bus = createRedisBus(REDIS_URL);
      buses.push(bus);
      await bus.ping();
      relays.push(await startTestRelay({ mailbox, bus }));
    }
  } catch (error) {
    await close();
    throw error;
  }
  return {
    mailboxes,
    open: async (relay, username) => {
      const ready = await connectReady(relays[relay].url, username);
      clients.push(ready.client);
      return ready;
    },
    close,
  };
}

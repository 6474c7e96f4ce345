/**
 * What one WebSocket client can make the relay hold or answer: a reader that never reads is closed 1013
 * once its unsent output passes the bound; rejected input is answered in a burst, then closed 1008; live
 * messages held during the backlog are bounded (re-read from the mailbox instead); the backlog read times
 * out; connections per user and per address are refused on upgrade with 429 and Retry-After; a send to a
 * name nobody registered is refused with UNKNOWN_USER and nothing is stored.
 */
import { expect } from "chai";
import http from "node:http";
import pino from "pino";
import { Registry } from "prom-client";
import { DEFAULT_MAILBOX_TTL_MS, DEFAULT_MAX_FRAME_BYTES } from "../../protocol/wire";
import { ConfigError, parseConfig } from "../../relay/config";
import { verifySessionToken } from "../../relay/sessions";
import type { Mailbox } from "../../relay/storage/mailbox";
import { createMemoryMailbox } from "../../relay/storage/mailbox-memory";
import { attachMessaging } from "../../relay/ws/attach";
import { createUserDirectory } from "../../relay/ws/user-directory";
import { createMemoryCache } from "../../relay/storage/cache-memory";
import { SECRET, connectClient, connectReady, envelope, isAccepted, isError, startTestRelay, tokenFor, type TestClient } from "./messaging-helpers";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const id = (n: number) => `msg-${String(n).padStart(6, "0")}`;

async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const value = (metric?.values ?? []).find((v) => Object.entries(labels).every(([k, l]) => String((v.labels as Record<string, unknown>)[k]) === l));
  return value?.value ?? 0;
}

describe("messaging bounds: one client cannot make the relay hold or answer without bound", function () {
  this.timeout(30_000);
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
  });
  const relayWith = async (params: Parameters<typeof startTestRelay>[0]) => {
    const relay = await startTestRelay(params);
    closers.push(() => relay.close());
    return relay;
  };
  const ready = async (url: string, username: string) => {
    const r = await connectReady(url, username);
    closers.push(() => r.client.close());
    return r.client;
  };

  it("closes a connection that does not read with 1013 once its unsent output passes the bound", async () => {
    const relay = await relayWith({ mailbox: createMemoryMailbox(), limits: { maxBufferedBytes: 64 * 1024, messagesPerSecond: 1000 } });
    const sleeper = await ready(relay.url, "bound_sleeper");
    // The client stops reading: the kernel buffers fill, then the relay's.
    (sleeper.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const flooder = await ready(relay.url, "bound_flooder");
    const big = "x".repeat(30_000);
    let n = 0;
    const deadline = Date.now() + 20_000;
    while ((await metricValue(relay.registry, "chat_ws_closed_by_relay_total", { code: "1013" })) === 0) {
      expect(Date.now(), "the relay never closed the reader that does not read").to.be.lessThan(deadline);
      for (let i = 0; i < 20; i++) flooder.send({ type: "send", id: id(n++), to: "bound_sleeper", envelope: JSON.stringify({ v: 1, ciphertext: big }) });
      await sleep(20);
    }
    // The flooder keeps its connection; the slow reader is gone from the relay (cut 1 s after the close frame it never reads).
    await sleep(1_500);
    expect(relay.messaging.connectionCount()).to.equal(1);
  });

  it("answers a burst of malformed frames up to the budget, then closes 1008", async () => {
    const relay = await relayWith({ mailbox: createMemoryMailbox(), limits: { rejectedFrameBurst: 5 } });
    const client = await ready(relay.url, "bound_garbage");
    for (let i = 0; i < 50; i++) client.sendRaw("not json");
    const { code } = await client.closed;
    expect(code).to.equal(1008);
    const errors: unknown[] = [];
    for (;;) {
      try {
        errors.push(await client.next(isError, 50));
      } catch {
        break;
      }
    }
    expect(errors).to.have.length(5);
  });

  it("answers a frame flood with one RATE_LIMITED, then closes 1008 if it goes on", async () => {
    const relay = await relayWith({ mailbox: createMemoryMailbox(), limits: { messagesPerSecond: 1, framesPerSecond: 5 } });
    const client = await ready(relay.url, "bound_flood");
    for (let i = 0; i < 100; i++) client.send({ type: "presence", user: "bound_other" });
    const { code } = await client.closed;
    expect(code).to.equal(1008);
    const limited: unknown[] = [];
    for (;;) {
      try {
        limited.push(await client.next((f) => f.type === "error" && f.code === "RATE_LIMITED", 50));
      } catch {
        break;
      }
    }
    expect(limited).to.have.length(1);
  });

  it("drops live messages beyond the held bound while the backlog is read, and delivers them from the mailbox once", async () => {
    const inner = createMemoryMailbox();
    let slowReads = 1;
    // The first backlog read is slow, so that live messages arrive while the connection is still syncing.
    const mailbox: Mailbox = Object.assign(Object.create(inner), {
      pending: async (params: Parameters<Mailbox["pending"]>[0]) => {
        if (slowReads-- > 0) await sleep(600);
        return inner.pending(params);
      },
    });
    const relay = await relayWith({ mailbox, limits: { maxHeldMessages: 3, messagesPerSecond: 1000 } });
    const sender = await ready(relay.url, "bound_sender");
    slowReads = 1;
    const recipient = await connectClient(relay.url, tokenFor("bound_held"));
    closers.push(() => recipient.close());
    for (let i = 0; i < 20; i++) sender.send({ type: "send", id: id(i), to: "bound_held", envelope: envelope(i) });
    for (let i = 0; i < 20; i++) await sender.next(isAccepted(id(i)));
    const got: string[] = [];
    for (;;) {
      const frame = await recipient.next((f) => f.type === "message" || f.type === "ready");
      if (frame.type === "ready") break;
      got.push(frame.id);
    }
    await sleep(200);
    for (;;) {
      try {
        got.push((await recipient.next((f) => f.type === "message", 50)).id);
      } catch {
        break;
      }
    }
    expect(got.sort()).to.deep.equal(Array.from({ length: 20 }, (_, i) => id(i)));
  });

  it("closes 1013 when the backlog cannot be read within its timeout", async () => {
    const inner = createMemoryMailbox();
    const mailbox: Mailbox = Object.assign(Object.create(inner), { pending: () => new Promise<never>(() => undefined) });
    const relay = await relayWith({ mailbox, limits: { backlogTimeoutMs: 300 } });
    const client = await connectClient(relay.url, tokenFor("bound_stuck"));
    const started = Date.now();
    const { code } = await client.closed;
    expect(code).to.equal(1013);
    expect(Date.now() - started).to.be.lessThan(3_000);
  });

  it("refuses connections beyond the per-user and per-address caps on upgrade with 429 and Retry-After", async () => {
    const relay = await relayWith({ mailbox: createMemoryMailbox(), limits: { maxConnectionsPerUser: 2, maxConnectionsPerAddress: 4 } });
    await ready(relay.url, "bound_many");
    await ready(relay.url, "bound_many");
    const third = await connectClient(relay.url, tokenFor("bound_many")).then(
      () => expect.fail("a third connection of one user was accepted"),
      (error) => error,
    );
    expect(third.status).to.equal(429);
    expect(third.headers["retry-after"]).to.match(/^\d+$/);
    expect(third.body.error.code).to.equal("RATE_LIMITED");
    await ready(relay.url, "bound_other1");
    await ready(relay.url, "bound_other2");
    const fifth = await connectClient(relay.url, tokenFor("bound_other3")).then(
      () => expect.fail("a fifth connection from one address was accepted"),
      (error) => error,
    );
    expect(fifth.status).to.equal(429);
    expect(relay.messaging.connectionCount()).to.equal(4);
    expect(await metricValue(relay.registry, "chat_ws_upgrades_refused_total", { cap: "user" })).to.equal(1);
    expect(await metricValue(relay.registry, "chat_ws_upgrades_refused_total", { cap: "address" })).to.equal(1);
  });

  it("refuses a send to a name nobody registered with UNKNOWN_USER and stores nothing", async () => {
    const mailbox = createMemoryMailbox();
    const cache = createMemoryCache();
    let chainCalls = 0;
    // The chain knows one user; the cache knows none yet (a user newer than the last sync).
    const users = createUserDirectory({
      cache,
      chain: { keyCount: async (name: string) => (chainCalls++, name === "dir_known" ? 1 : 0) },
      clock: Date.now,
      settings: { missingTtlMs: 60_000 },
    });
    const server = http.createServer();
    const messaging = attachMessaging({
      server,
      sessions: { authenticate: async (token) => verifySessionToken({ secret: SECRET, token, now: Date.now() }), current: async () => true },
      mailbox,
      logger: pino({ level: "silent" }),
      clock: Date.now,
      metrics: new Registry(),
      limits: { maxFrameBytes: DEFAULT_MAX_FRAME_BYTES, mailboxTtlMs: DEFAULT_MAILBOX_TTL_MS, rejectedFrameBurst: 50 },
      users,
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    closers.push(async () => {
      await messaging.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    const url = `ws://127.0.0.1:${(server.address() as { port: number }).port}/v1/ws`;
    const client: TestClient = await ready(url, "dir_sender");
    for (let i = 0; i < 10; i++) client.send({ type: "send", id: id(i), to: "dir_ghost", envelope: envelope(i) });
    for (let i = 0; i < 10; i++) expect(await client.next((f) => f.id === id(i))).to.include({ type: "error", code: "UNKNOWN_USER" });
    client.send({ type: "send", id: id(99), to: "dir_known", envelope: envelope(99) });
    expect((await client.next(isAccepted(id(99)))).status).to.equal("stored");
    expect(await mailbox.pending({ recipient: "dir_ghost", now: Date.now(), limit: 100 })).to.have.length(0);
    // Ten sends to one junk name asked the chain once (remembered as missing); the known name once.
    expect(chainCalls).to.equal(2);
  });
});

describe("messaging bounds settings", () => {
  const base = {
    RPC_URL: "http://127.0.0.1:8545",
    CONTRACT_ADDRESS: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    PRIVATE_KEY: "0x" + "11".repeat(32),
    CREDENTIAL_PEPPER: "22".repeat(32),
    SESSION_SECRET: "33".repeat(32),
  };

  it("applies the documented defaults", () => {
    expect(parseConfig(base).messagingBounds).to.deep.equal({
      maxConnections: 10_000,
      maxConnectionsPerUser: 8,
      maxConnectionsPerAddress: 32,
      maxBufferedBytes: 4 * 1024 * 1024,
      maxHeldMessages: 1_000,
      backlogTimeoutMs: 60_000,
      rejectedFrameBurst: 20,
      pingIntervalMs: 30_000,
      unknownUserTtlMs: 30_000,
      userDirectoryMaxEntries: 10_000,
      keysMissesPerAddress: 60,
    });
  });

  for (const [name, value] of [
    ["WS_MAX_CONNECTIONS_PER_USER", "0"],
    ["WS_MAX_CONNECTIONS_PER_ADDRESS", "lots"],
    ["WS_MAX_BUFFERED_BYTES", "1000"],
    ["WS_BACKLOG_TIMEOUT_SECONDS", "0"],
    ["WS_PING_INTERVAL_SECONDS", "0"],
    ["KEYS_MISSES_PER_ADDRESS", "-1"],
  ] as const) {
    it(`rejects ${name}=${JSON.stringify(value)} naming it`, () => {
      expect(() => parseConfig({ ...base, [name]: value }))
        .to.throw(ConfigError)
        .with.property("setting", name);
    });
  }
});

import { expect } from "chai";
import type { Pool } from "mysql2/promise";
import { CLOSE_CODES, DEFAULT_MAX_FRAME_BYTES } from "../../protocol/wire";
import { createMysqlMailbox } from "../../relay/storage/mailbox-mysql";
import type { Mailbox } from "../../relay/storage/mailbox";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { freePort } from "../helpers/ports";
import { waitFor } from "../helpers/wait";
import {
  connectClient,
  connectReady,
  createTestPool,
  envelope,
  isAccepted,
  isError,
  isType,
  startTestRelay,
  tokenFor,
  type TestClient,
  type TestRelay,
} from "./messaging-helpers";

/** Messaging through a relay on the real MariaDB: mailbox, acks, restarts, limits and bad frames. */
describe("messaging: relay with a MySQL mailbox", function () {
  let db: TestDatabase;
  let pool: Pool;
  let mailbox: Mailbox;
  let relay: TestRelay;
  const clients: TestClient[] = [];
  let userCounter = 0;
  // Fresh usernames per test: the database is shared by the whole describe.
  const users = () => {
    userCounter++;
    return [`alice_${userCounter}`, `bob_${userCounter}`, `carol_${userCounter}`] as const;
  };
  const open = async (username: string) => {
    const r = await connectReady(relay.url, username);
    clients.push(r.client);
    return r;
  };

  before(async () => {
    db = await createTestDatabase("chat_messaging");
    pool = createTestPool(db.url);
    mailbox = createMysqlMailbox(pool);
    await mailbox.migrate();
    relay = await startTestRelay({ mailbox, limits: { messagesPerSecond: 1_000 } });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  after(async () => {
    await relay?.close();
    await mailbox?.close();
    await pool?.end();
    await db?.drop();
  });

  it("an offline recipient gets its mailbox in order on reconnect, and its acks empty it", async () => {
    const [alice, bob] = users();
    const { client: a } = await open(alice);
    const ids = Array.from({ length: 20 }, (_, i) => `m-${bob}-${String(i).padStart(3, "0")}`);
    for (const [i, id] of ids.entries()) a.send({ type: "send", id, to: bob, envelope: envelope(i) });
    for (const id of ids) expect(await a.next(isAccepted(id))).to.deep.equal({ type: "accepted", id, status: "stored" });

    const first = await open(bob);
    expect(first.ready.pending).to.equal(20);
    expect(first.backlog.map((m) => m.id)).to.deep.equal(ids);
    expect(first.backlog[3]).to.include({ type: "message", from: alice, envelope: envelope(3) });
    expect(first.backlog[0].receivedAt).to.be.a("number");
    // Ack only the first half, then reconnect: the other half comes again, in order.
    for (const m of first.backlog.slice(0, 10)) first.client.send({ type: "ack", id: m.id, from: m.from });
    await waitFor("ten messages in the mailbox", async () => (await mailbox.pending({ recipient: bob, now: Date.now(), limit: 100 })).length === 10, 5_000, 20);
    await first.client.close();

    const second = await open(bob);
    expect(second.backlog.map((m) => m.id)).to.deep.equal(ids.slice(10));
    for (const m of second.backlog) second.client.send({ type: "ack", id: m.id, from: m.from });
    await waitFor("an empty mailbox", async () => (await mailbox.pending({ recipient: bob, now: Date.now(), limit: 100 })).length === 0, 5_000, 20);
    await second.client.close();
    expect((await open(bob)).ready.pending).to.equal(0);
  });

  it("delivers live to every connection of an online recipient; the ack of one device empties the mailbox", async () => {
    const [alice, bob] = users();
    const { client: a } = await open(alice);
    const { client: b1 } = await open(bob);
    const { client: b2 } = await open(bob);
    a.send({ type: "send", id: "live-0001", to: bob, envelope: envelope("live") });
    expect((await a.next(isAccepted("live-0001"))).status).to.equal("stored");
    const [m1, m2] = await Promise.all([b1.next(isType("message")), b2.next(isType("message"))]);
    expect(m1).to.deep.equal(m2);
    expect(m1).to.include({ id: "live-0001", from: alice, envelope: envelope("live") });
    b1.send({ type: "ack", id: m1.id, from: m1.from });
    await waitFor("an empty mailbox", async () => (await mailbox.pending({ recipient: bob, now: Date.now(), limit: 10 })).length === 0, 5_000, 20);
  });

  it("a relay restart (a new attachMessaging on the same database) keeps the mailbox", async () => {
    const [alice, bob] = users();
    const { client: a } = await open(alice);
    a.send({ type: "send", id: "restart-01", to: bob, envelope: envelope("before restart") });
    await a.next(isAccepted("restart-01"));
    await a.close();
    await relay.close();
    await mailbox.close();

    mailbox = createMysqlMailbox(pool);
    await mailbox.migrate();
    relay = await startTestRelay({ mailbox, limits: { messagesPerSecond: 1_000 } });
    const { backlog } = await open(bob);
    expect(backlog.map((m) => [m.id, m.from, m.envelope])).to.deep.equal([["restart-01", alice, envelope("before restart")]]);
  });

  it("the sender cannot spoof `from`: the relay stamps the session's user", async () => {
    const [alice, bob, mallory] = users();
    const { client: m } = await open(mallory);
    const { client: b } = await open(bob);
    m.send({ type: "send", id: "spoof-0001", to: bob, from: alice, envelope: envelope("i am alice") });
    await m.next(isAccepted("spoof-0001"));
    const got = await b.next(isType("message"));
    expect(got.from).to.equal(mallory);
    // nor acknowledge (erase) messages of another user's mailbox
    m.send({ type: "ack", id: "spoof-0001", from: mallory });
    m.send({ type: "send", id: "spoof-0002", to: mallory, envelope: envelope("flush") });
    await m.next(isAccepted("spoof-0002"));
    await mailbox.close();
    expect((await mailbox.pending({ recipient: bob, now: Date.now(), limit: 10 })).map((x) => x.id)).to.deep.equal(["spoof-0001"]);
  });

  it("a re-sent message (same from, id) is stored and delivered once", async () => {
    const [alice, bob] = users();
    const { client: a } = await open(alice);
    for (let i = 0; i < 3; i++) a.send({ type: "send", id: "dup-000001", to: bob, envelope: envelope("dup") });
    for (let i = 0; i < 3; i++) expect((await a.next(isAccepted("dup-000001"))).status).to.equal("stored");
    const { client: b, backlog } = await open(bob);
    expect(backlog.map((m) => m.id)).to.deep.equal(["dup-000001"]);
    // Re-sent while bob is online and has not acked yet: no second push.
    a.send({ type: "send", id: "dup-000001", to: bob, envelope: envelope("dup") });
    expect((await a.next(isAccepted("dup-000001"))).status).to.equal("stored");
    b.send({ type: "ack", id: "dup-000001", from: alice });
    await waitFor("an empty mailbox", async () => (await mailbox.pending({ recipient: bob, now: Date.now(), limit: 10 })).length === 0, 5_000, 20);
    // Re-sent after the ack (the sender never saw "accepted"): answered "delivered", not delivered again.
    a.send({ type: "send", id: "dup-000001", to: bob, envelope: envelope("dup") });
    expect((await a.next(isAccepted("dup-000001"))).status).to.equal("delivered");
    a.send({ type: "send", id: "dup-000002", to: bob, envelope: envelope("next") });
    expect((await b.next(isType("message"))).id).to.equal("dup-000002"); // the next push is the new message
  });

  it("a malformed frame gets an error frame and the socket lives on", async () => {
    const [alice, bob] = users();
    const { client: a } = await open(alice);
    const cases: Array<[string | Buffer, string, RegExp]> = [
      ["{not json", "BAD_REQUEST", /JSON/],
      [JSON.stringify({ type: "shout", id: "x-00000001" }), "BAD_REQUEST", /type/],
      [JSON.stringify({ type: "send", id: "x-00000002", envelope: "e" }), "INVALID_USERNAME", /^to/],
      [JSON.stringify({ type: "send", id: "x-00000003", to: "Bob!", envelope: "e" }), "INVALID_USERNAME", /^to/],
      [JSON.stringify({ type: "send", id: "x-00000004", to: bob, envelope: 42 }), "BAD_REQUEST", /^envelope/],
      [JSON.stringify({ type: "send", id: "bad id!", to: bob, envelope: "e" }), "BAD_REQUEST", /^id/],
      [JSON.stringify({ type: "ack", id: "x-00000005" }), "INVALID_USERNAME", /^from/],
      [JSON.stringify(null), "BAD_REQUEST", /frame/],
      [JSON.stringify([1, 2]), "BAD_REQUEST", /frame/],
      [Buffer.from([1, 2, 3]), "BAD_REQUEST", /binary/],
    ];
    for (const [raw, code, message] of cases) {
      a.sendRaw(raw);
      const e = await a.next(isError);
      expect(e.code, String(raw)).to.equal(code);
      expect(e.message, String(raw)).to.match(message);
    }
    // the error names the frame when its id was readable
    a.sendRaw(JSON.stringify({ type: "send", id: "x-00000006", to: "NO", envelope: "e" }));
    expect((await a.next(isError)).id).to.equal("x-00000006");
    a.send({ type: "send", id: "after-bad1", to: bob, envelope: envelope("fine") });
    expect((await a.next(isAccepted("after-bad1"))).status).to.equal("stored");
  });

  it("an oversized frame closes the socket with 1009", async () => {
    const [alice, bob] = users();
    const { client: a } = await open(alice);
    a.send({ type: "send", id: "big-000001", to: bob, envelope: "x".repeat(DEFAULT_MAX_FRAME_BYTES) });
    expect((await a.closed).code).to.equal(CLOSE_CODES.tooBig);
    // a frame just under the limit is fine
    const { client: a2 } = await open(alice);
    const frame = { type: "send", id: "big-000002", to: bob, envelope: "" };
    frame.envelope = "x".repeat(DEFAULT_MAX_FRAME_BYTES - JSON.stringify(frame).length);
    a2.send(frame);
    expect((await a2.next(isAccepted("big-000002"))).status).to.equal("stored");
  });
});

describe("messaging: limits, expiry and failures", function () {
  let db: TestDatabase;
  let pool: Pool;
  const closers: Array<() => Promise<void>> = [];
  before(async () => {
    db = await createTestDatabase("chat_messaging_limits");
    pool = createTestPool(db.url);
  });
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  const relayWith = async (params: Parameters<typeof startTestRelay>[0]) => {
    const relay = await startTestRelay(params);
    closers.push(() => relay.close());
    return relay;
  };
  const client = async (url: string, username: string) => {
    const r = await connectReady(url, username);
    closers.push(() => r.client.close());
    return r;
  };

  it("rate-limits send frames per connection with a retryable RATE_LIMITED", async () => {
    const mailbox = createMysqlMailbox(pool);
    await mailbox.migrate();
    const relay = await relayWith({ mailbox, limits: { messagesPerSecond: 5, messageBurst: 5 } });
    const { client: a } = await client(relay.url, "rate_alice");
    for (let i = 0; i < 8; i++) a.send({ type: "send", id: `rate-${String(i).padStart(4, "0")}`, to: "rate_bob", envelope: envelope(i) });
    const answers = [];
    for (let i = 0; i < 8; i++) answers.push(await a.next((f) => f.type === "accepted" || f.type === "error"));
    const limited = answers.filter((f) => f.type === "error");
    expect(answers.filter((f) => f.type === "accepted")).to.have.length(5);
    expect(limited).to.have.length(3);
    expect(limited[0]).to.include({ code: "RATE_LIMITED", retryable: true });
    expect(limited[0].id).to.match(/^rate-/);
    expect(limited[0].retryAfterMs).to.be.greaterThan(0);
    await new Promise((r) => setTimeout(r, limited[0].retryAfterMs + 50));
    a.send({ type: "send", id: "rate-again", to: "rate_bob", envelope: envelope("later") });
    expect((await a.next(isAccepted("rate-again"))).status).to.equal("stored");
  });

  it("purges expired messages and never delivers them", async () => {
    let now = Date.now();
    const mailbox = createMysqlMailbox(pool);
    await mailbox.migrate();
    // The session tokens live in real time; the relay's clock is ours to move.
    const relay = await relayWith({ mailbox, clock: () => now, limits: { mailboxTtlMs: 60_000 } });
    const { client: a } = await client(relay.url, "ttl_alice");
    a.send({ type: "send", id: "ttl-000001", to: "ttl_bob", envelope: envelope("old") });
    await a.next(isAccepted("ttl-000001"));
    now += 30_000;
    a.send({ type: "send", id: "ttl-000002", to: "ttl_bob", envelope: envelope("young") });
    await a.next(isAccepted("ttl-000002"));
    now += 45_000; // the first is 75 s old (expired), the second 45 s
    const { backlog } = await client(relay.url, "ttl_bob");
    expect(backlog.map((m) => m.id)).to.deep.equal(["ttl-000002"]);
    expect(await relay.messaging.purgeExpired()).to.equal(1);
    const [rows] = await pool.query<any[]>("SELECT id FROM mailbox WHERE recipient = 'ttl_bob'");
    expect(rows.map((r) => r.id)).to.deep.equal(["ttl-000002"]);
  });

  it("storage down: the sender gets a retryable STORAGE_UNAVAILABLE and the relay stays up", async () => {
    // A real connection failure: a pool pointed at a port where nothing listens.
    const deadPool = createTestPool(`mysql://root@127.0.0.1:${await freePort()}/nothing`);
    closers.push(() => deadPool.end());
    const mailbox = createMysqlMailbox(deadPool);
    const relay = await relayWith({ mailbox });
    const a = await connectClient(relay.url, tokenFor("down_alice"));
    closers.push(() => a.close());
    // the backlog cannot be read: the client is told and asked to come back
    expect(await a.next(isError)).to.include({ code: "STORAGE_UNAVAILABLE", retryable: true });
    expect((await a.closed).code).to.equal(CLOSE_CODES.tryAgainLater);

    // a sender whose backlog was read (same relay code, healthy reads) but whose write fails
    const healthy = createMysqlMailbox(pool);
    await healthy.migrate();
    const failingWrites: typeof healthy = { ...healthy, put: (m) => mailbox.put(m) };
    const relay2 = await relayWith({ mailbox: failingWrites });
    const { client: s } = await client(relay2.url, "down_sender");
    s.send({ type: "send", id: "down-00001", to: "down_bob", envelope: envelope("x") });
    expect(await s.next(isError)).to.include({ code: "STORAGE_UNAVAILABLE", retryable: true, id: "down-00001" });
    s.send({ type: "send", id: "down-00002", to: "down_bob", envelope: envelope("y") });
    expect((await s.next(isError)).id).to.equal("down-00002");
    expect(relay2.messaging.connectionCount()).to.equal(1);
  });

  it("counts connections and messages on the metrics registry", async () => {
    const mailbox = createMysqlMailbox(pool);
    await mailbox.migrate();
    const relay = await relayWith({ mailbox });
    const { client: a } = await client(relay.url, "metric_alice");
    const { client: b } = await client(relay.url, "metric_bob");
    a.send({ type: "send", id: "metric-001", to: "metric_bob", envelope: envelope(1) });
    await a.next(isAccepted("metric-001"));
    await b.next(isType("message"));
    const text = await relay.registry.metrics();
    expect(text).to.match(/^chat_ws_connections 2$/m);
    expect(text).to.match(/^chat_messages_stored_total 1$/m);
    expect(text).to.match(/^chat_messages_delivered_total 1$/m);
    expect(text).to.match(/^chat_mailbox_depth [1-9]\d*$/m);
  });

  it("closes peers that stop answering pings", async () => {
    const mailbox = createMysqlMailbox(pool);
    await mailbox.migrate();
    const relay = await relayWith({ mailbox, limits: { pingIntervalMs: 100 } });
    const { client: a } = await client(relay.url, "ping_alice");
    // ws clients answer pings automatically; silence this one by pausing its socket reads.
    (a.ws as any)._socket.pause();
    await waitFor("every connection closed", () => relay.messaging.connectionCount() === 0, 3_000, 20);
  });

  it("pings each connection once an interval, spread over it rather than all in one turn, and still drops the silent one", async () => {
    const mailbox = createMysqlMailbox(pool);
    await mailbox.migrate();
    // 1 s interval: four slices of 250 ms.
    const relay = await relayWith({ mailbox, limits: { pingIntervalMs: 1_000 } });
    const COUNT = 12;
    const pings: number[][] = [];
    const connected: TestClient[] = [];
    for (let i = 0; i < COUNT; i++) {
      const { client: c } = await client(relay.url, `spread_${i}`);
      const times: number[] = [];
      c.ws.on("ping", () => times.push(Date.now()));
      pings.push(times);
      connected.push(c);
    }
    const silent = connected[5];
    (silent.ws as any)._socket.pause();
    await waitFor("every answering connection pinged three times", () => pings.every((t, i) => i === 5 || t.length >= 3), 10_000, 20);

    // Each answering connection: one ping an interval (a busy machine may delay a tick, never double it).
    for (const [i, times] of pings.entries()) {
      if (i === 5) continue;
      for (let k = 1; k < times.length; k++) expect(times[k] - times[k - 1], `connection ${i}`).to.be.within(700, 1_900);
    }
    // Spread: the first pings came in at least three ticks, not one turn for all.
    const firstPings = pings.filter((_, i) => i !== 5).map((t) => t[0]);
    const ticks = new Set(firstPings.map((t) => Math.round((t - Math.min(...firstPings)) / 250)));
    expect(ticks.size, JSON.stringify(firstPings.map((t) => t - Math.min(...firstPings)))).to.be.at.least(3);
    // The silent one is dropped, the others stay.
    await waitFor("the silent connection closed", () => relay.messaging.connectionCount() === COUNT - 1, 5_000, 20);
    expect(connected.filter((c, i) => i !== 5 && c.ws.readyState !== c.ws.OPEN)).to.have.length(0);
  });
});

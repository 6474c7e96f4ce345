/**
 * Faults on real processes, each with the CLI's own client code or the `chat` command:
 *  - two relays behind a TCP load balancer share MariaDB and Redis; one is SIGKILLed; its clients
 *    reconnect to the other and nothing is lost (envelope v1 sends);
 *  - the relay's MariaDB (a server of the test's own) stops and comes back: the relay stays up,
 *    /healthz says degraded, appends to the MLS Delivery Service are refused as retryable, the messages
 *    wait in the outbox, the next `chat send` re-sends them, and each arrives once;
 *  - the chain's JSON-RPC goes away (a TCP proxy in front of anvil is closed): registration answers
 *    503 CHAIN_UNAVAILABLE, cached keys are served as unverified, the CLI still sends in an existing MLS
 *    chat, a new chat (a key package to check on chain) waits in the outbox until the chain is back, a
 *    never-verified key gets nothing, and the relay catches up when the chain is back.
 */
import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Wallet, JsonRpcProvider } from "ethers";
import { RelayConnection } from "../../cli/connection";
import { ChatRegistry__factory } from "../../typechain-types";
import { runChat } from "../helpers/chat-process";
import { startMariaDbServer, type MariaDbServer } from "../helpers/mariadb-server";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { newIdentity, signRegister } from "../helpers/signing";
import {
  loginCli,
  newTestUser,
  publishMls,
  receiveLive,
  registerUsers,
  relayOptions,
  relaySecrets,
  sleep,
  startChain,
  startTcpProxy,
  waitFor,
  type Chain,
  type CliClient,
  type TcpProxy,
} from "./stack";

const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

/** Sends `count` messages with the CLI's Messenger, yielding between them as a person typing would. */
async function sendSeries(client: CliClient, conn: () => RelayConnection, to: string, count: number, label: string, onEach?: (n: number) => void) {
  const ids: string[] = [];
  const attempts: Promise<unknown>[] = [];
  for (let n = 0; n < count; n++) {
    const entry = await client.messenger.prepare(to, `${label} #${n}`);
    ids.push(entry.id);
    const c = conn();
    if (c.isOpen) attempts.push(client.messenger.flushOutbox(c, new Set([entry.id])));
    onEach?.(n);
    await sleep(5);
  }
  return { ids, attempts };
}

/** The client's retry: re-send the outbox until it is empty (what every `chat send`/`inbox` run does). */
async function drainOutbox(client: CliClient, conn: RelayConnection, timeoutMs = 30_000) {
  await waitFor(
    `${client.user.username}'s outbox to empty`,
    async () => {
      await client.messenger.flushOutbox(conn);
      return client.ctx.outbox.list(client.user.username).length === 0;
    },
    timeoutMs,
    250,
  );
}

describe("fault: two relays with Redis, one is killed", function () {
  this.timeout(180_000);
  let chain: Chain;
  let db: TestDatabase;
  let tmp: string;
  let relayA: RelayProcess;
  let relayB: RelayProcess;
  let lb: TcpProxy;
  const conns: RelayConnection[] = [];
  const clients: CliClient[] = [];

  before(async () => {
    chain = await startChain();
    db = await createTestDatabase("chat_rel_scale");
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-scale-"));
  });
  after(async () => {
    for (const c of conns) await c.close();
    for (const c of clients) c.close();
    await lb?.close();
    await relayA?.stop();
    await relayB?.stop();
    await chain?.anvil.stop();
    await db?.drop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("the clients of the killed relay reconnect through the balancer to the other; nothing is lost or doubled", async () => {
    const started = Date.now();
    const secrets = relaySecrets();
    // Same data folder: B reuses the certificate A generated, as instances behind one name do.
    const options = relayOptions(chain, { dataDir: path.join(tmp, "relay"), secrets, mysqlUrl: db.url, redisUrl: REDIS_URL });
    relayA = await startRelayProcess(options);
    relayB = await startRelayProcess(options);
    lb = await startTcpProxy(() => [relayA.port, relayB.port]);
    const lbUrl = lb.url("https");
    const [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map((n) => newTestUser(`${n}_scale`));
    await registerUsers(relayA, chain.domain, [alice, bob, carol, dave]);
    // alice (receiving) and carol (sending) reach A through the balancer; bob sends through B directly.
    const a = await loginCli({ relayUrl: lbUrl, contract: chain.deployed.address, rpcUrl: chain.anvil.url, home: path.join(tmp, "alice"), user: alice });
    const c = await loginCli({ relayUrl: lbUrl, contract: chain.deployed.address, rpcUrl: chain.anvil.url, home: path.join(tmp, "carol"), user: carol });
    const b = await loginCli({ relayUrl: relayB.url, contract: chain.deployed.address, rpcUrl: chain.anvil.url, home: path.join(tmp, "bob"), user: bob });
    const d = await loginCli({ relayUrl: lbUrl, contract: chain.deployed.address, rpcUrl: chain.anvil.url, home: path.join(tmp, "dave"), user: dave });
    clients.push(a, b, c, d);

    const shownToAlice: string[] = [];
    let aliceConn = await RelayConnection.open(a.ctx, a.session);
    let carolConn = await RelayConnection.open(c.ctx, c.session);
    const bobConn = await RelayConnection.open(b.ctx, b.session);
    conns.push(aliceConn, carolConn, bobConn);
    receiveLive(a, aliceConn, (inner) => shownToAlice.push(inner.id));

    let killing: Promise<void> | undefined;
    const [fromBob, fromCarol] = await Promise.all([
      sendSeries(b, () => bobConn, alice.username, 100, "bob to alice across instances", (n) => {
        if (n === 40) killing = relayA.kill();
      }),
      sendSeries(c, () => carolConn, dave.username, 100, "carol to offline dave"),
    ]);
    await killing;
    expect(relayA.process.signalCode).to.equal("SIGKILL");

    // The person's client reconnects: the balancer now sends it to B. (Handlers go on at once: frames
    // that arrive before a handler is attached are not seen by this connection.)
    aliceConn = await RelayConnection.open(a.ctx, a.session);
    receiveLive(a, aliceConn, (inner) => shownToAlice.push(inner.id));
    carolConn = await RelayConnection.open(c.ctx, c.session);
    conns.push(aliceConn, carolConn);
    await Promise.all([drainOutbox(b, bobConn), drainOutbox(c, carolConn)]);
    await waitFor("alice to see bob's 100 messages", () => shownToAlice.length >= 100, 30_000);
    await sleep(300); // a late duplicate would show up here
    await Promise.all([...fromBob.attempts, ...fromCarol.attempts]);

    const daveInbox = await runChat({ home: d.home, relay: lbUrl, rpc: chain.anvil.url, args: ["--json", "inbox"] });
    expect(daveInbox.code, daveInbox.stderr).to.equal(0);
    const daveIds = daveInbox.json.filter((o) => o.type === "message").map((m) => m.id);

    const lostAlice = fromBob.ids.filter((id) => !shownToAlice.includes(id)).length;
    const lostDave = fromCarol.ids.filter((id) => !daveIds.includes(id)).length;
    const duplicates = shownToAlice.length - new Set(shownToAlice).size + daveIds.length - new Set(daveIds).size;
    console.log(`      two relays, one killed: ${JSON.stringify({ lostAlice, lostDave, shown: shownToAlice.length, dave: daveIds.length, sent: 200, delivered: new Set(shownToAlice).size + new Set(daveIds).size, lost: lostAlice + lostDave, duplicates_shown: duplicates, ms: Date.now() - started })}`);
    expect(lostAlice + lostDave).to.equal(0);
    expect(duplicates).to.equal(0);
    // A key lookup cut by the kill is reported and the message kept on the relay (it arrived later, above).
    const unexpected = [...a.out.warnings, ...b.out.warnings, ...c.out.warnings].filter((w) => !(w.code === "RELAY_UNREACHABLE" && /kept on the relay/.test(w.message)));
    expect(unexpected).to.deep.equal([]);
  });
});

describe("fault: MySQL stops and comes back", function () {
  this.timeout(180_000);
  let chain: Chain;
  let mariadb: MariaDbServer;
  let relay: RelayProcess;
  let tmp: string;
  const clients: CliClient[] = [];
  const conns: RelayConnection[] = [];

  before(async () => {
    [chain, mariadb] = await Promise.all([startChain(), startMariaDbServer()]);
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-mysql-down-"));
  });
  after(async () => {
    for (const c of conns) await c.close();
    for (const c of clients) c.close();
    await relay?.stop();
    await chain?.anvil.stop();
    await mariadb?.destroy();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("the relay stays up and says degraded; senders get a retryable error, retry, and everything arrives", async () => {
    const started = Date.now();
    relay = await startRelayProcess(relayOptions(chain, { dataDir: path.join(tmp, "relay"), secrets: relaySecrets(), mysqlUrl: mariadb.url }));
    const [alice, bob] = [newTestUser("alice_db"), newTestUser("bob_db")];
    await registerUsers(relay, chain.domain, [alice, bob]);
    const a = await loginCli({ relayUrl: relay.url, contract: chain.deployed.address, rpcUrl: chain.anvil.url, home: path.join(tmp, "alice"), user: alice });
    const b = await loginCli({ relayUrl: relay.url, contract: chain.deployed.address, rpcUrl: chain.anvil.url, home: path.join(tmp, "bob"), user: bob });
    clients.push(a, b);
    // Both devices publish key packages (as `chat login` does); alice starts the chat with bob before the outage.
    const aliceChat = await publishMls(a);
    await publishMls(b);
    const before = aliceChat.queue(bob.username, "before the outage");
    const first = await aliceChat.flushOutbox();
    expect(first.map((r) => [r.status, r.error?.code])).to.deep.equal([["stored", undefined]]);

    await mariadb.stop();
    const health = await waitFor("/healthz to say degraded", async () => {
      const h = await relay.request("GET", "/healthz");
      return h.status === 503 && h;
    });
    expect(health.body).to.deep.include({ status: "degraded" });
    expect(health.body.storage.ok).to.equal(false);

    // The client sends during the outage: the relay's Delivery Service (MySQL too) refuses each append as
    // retryable, and every message stays in the outbox, in order.
    const during: string[] = [];
    for (let n = 0; n < 10; n++) during.push(aliceChat.queue(bob.username, `during the outage #${n}`).id);
    const results = await aliceChat.flushOutbox();
    expect(results.map((r) => r.error?.code)).to.deep.equal(Array(10).fill("STORAGE_UNAVAILABLE"));
    expect(results.every((r) => r.error?.details?.status === 503)).to.equal(true);
    expect(a.ctx.outbox.list(alice.username).map((e) => e.id)).to.deep.equal(during);
    // A new `chat send` process fails with one clear line, no stack trace.
    const refused = await runChat({ home: a.home, relay: relay.url, rpc: chain.anvil.url, args: ["send", bob.username, "from a new process"] });
    expect(refused.code).to.equal(1);
    expect(refused.stderr.trim().split("\n")).to.have.length(1);
    expect(refused.stderr).to.match(/^chat: STORAGE_UNAVAILABLE: /);
    expect(relay.process.exitCode, "the relay process is still running").to.equal(null);
    expect(a.ctx.outbox.list(alice.username).map((e) => e.id), "still waiting after the refused process").to.deep.equal(during);

    await sleep(1_000);
    await mariadb.start();
    await waitFor("/healthz ok again", async () => (await relay.request("GET", "/healthz")).status === 200, 30_000);
    // The next `chat send` re-sends the outbox first, under the first ids, then sends its own message.
    const after = await runChat({ home: a.home, relay: relay.url, rpc: chain.anvil.url, args: ["--json", "send", bob.username, "after the outage"] });
    expect(after.code, after.stderr).to.equal(0);
    const sent = after.json.filter((o) => o.type === "sent");
    expect(sent.map((o) => [o.id, o.resent])).to.deep.equal([...during.map((id) => [id, true]), [sent[sent.length - 1]?.id, false]]);
    expect(a.ctx.outbox.list(alice.username)).to.deep.equal([]);

    const inbox = await runChat({ home: b.home, relay: relay.url, rpc: chain.anvil.url, args: ["--json", "inbox"] });
    expect(inbox.code, inbox.stderr).to.equal(0);
    const messages = inbox.json.filter((o) => o.type === "message");
    const bodies = messages.map((m) => m.body);
    expect(bodies).to.deep.equal(["before the outage", ...during.map((_, n) => `during the outage #${n}`), "after the outage"]);
    expect(messages.map((m) => m.id)).to.deep.equal([before.id, ...during, sent[sent.length - 1].id]);
    expect(messages.every((m) => m.from === alice.username && m.v === 2)).to.equal(true);
    // Read once: a second inbox shows nothing again.
    const again = await runChat({ home: b.home, relay: relay.url, rpc: chain.anvil.url, args: ["--json", "inbox"] });
    expect(again.code, again.stderr).to.equal(0);
    expect(again.json.filter((o) => o.type === "message")).to.deep.equal([]);
    console.log(`      MySQL outage (v2): ${JSON.stringify({ sent: bodies.length, refused_retryable: 10, delivered: bodies.length, lost: 0, duplicates_shown: 0, ms: Date.now() - started })}`);
  });
});

describe("fault: the chain's JSON-RPC is down", function () {
  this.timeout(180_000);
  let chain: Chain;
  let rpc: TcpProxy;
  let db: TestDatabase;
  let relay: RelayProcess;
  let tmp: string;

  before(async () => {
    chain = await startChain();
    rpc = await startTcpProxy(() => [chain.anvil.port]);
    db = await createTestDatabase("chat_rel_chain");
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-chain-down-"));
  });
  after(async () => {
    await relay?.stop();
    await rpc?.close();
    await chain?.anvil.stop();
    await db?.drop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("503 on registration, unverified cached keys, the CLI encrypts only to a key verified earlier, the relay catches up", async () => {
    const started = Date.now();
    const rpcUrl = rpc.url("http");
    relay = await startRelayProcess(relayOptions(chain, { dataDir: path.join(tmp, "relay"), secrets: relaySecrets(), mysqlUrl: db.url, rpcUrl }));
    const [alice, bob, carol, frank] = [newTestUser("alice_rpc"), newTestUser("bob_rpc"), newTestUser("carol_rpc"), newTestUser("frank_rpc")];
    await registerUsers(relay, chain.domain, [alice, bob, carol, frank]);
    const homes = { alice: path.join(tmp, "alice"), bob: path.join(tmp, "bob"), carol: path.join(tmp, "carol") };
    // Logged in with devices on messages v2 (key packages published), as `chat login` leaves them.
    for (const [home, user] of [[homes.alice, alice], [homes.bob, bob], [homes.carol, carol]] as const) {
      const client = await loginCli({ relayUrl: relay.url, contract: chain.deployed.address, rpcUrl, home, user });
      await publishMls(client);
      client.close();
    }
    const chat = (home: string, args: string[]) => runChat({ home, relay: relay.url, rpc: rpcUrl, args });
    const outboxOf = (home: string, user: string) => JSON.parse(readFileSync(path.join(home, "users", user, "outbox.json"), "utf8") || "[]") as { id: string; to: string; body: string }[];
    for (const peer of [bob, carol]) {
      const verified = await chat(homes.alice, ["--yes", "verify", peer.username]);
      expect(verified.code, verified.stderr).to.equal(0);
    }
    // An existing chat: alice started it and bob joined it while the chain was up.
    const started1 = await chat(homes.alice, ["send", bob.username, "before the chain went down"]);
    expect(started1.code, started1.stderr).to.equal(0);
    const joined = await chat(homes.bob, ["--json", "inbox"]);
    expect(joined.code, joined.stderr).to.equal(0);
    expect(joined.json.filter((o) => o.type === "message").map((m) => m.body)).to.deep.equal(["before the chain went down"]);

    await rpc.down();
    const dave = newTestUser("dave_rpc");
    const hash = await relay.request("POST", "/v1/credential-hash", { username: dave.username, credential: dave.credential });
    // The relay cannot confirm on chain that the name is free, so it gives no hash (no oracle while blind).
    expect(hash.status).to.equal(503);
    const deadline = Math.floor(Date.now() / 1000) + 3600;
    const registration = await relay.request("POST", "/v1/register", {
      username: dave.username,
      credential: dave.credential,
      publicKey: dave.identity.publicKey,
      deadline,
      signature: signRegister({ domain: chain.domain, signer: dave.identity, username: dave.username, credentialHash: `0x${"11".repeat(32)}`, deadline: BigInt(deadline) }),
    });
    expect(registration.status).to.equal(503);
    expect(registration.body.error.code).to.equal("CHAIN_UNAVAILABLE");
    // Once the relay has noticed (a few sync polls), cached keys are served, marked unverified.
    const health = await waitFor("/healthz degraded", async () => {
      const h = await relay.request("GET", "/healthz");
      return h.status === 503 && h;
    });
    expect(health.body.chain.ok).to.equal(false);
    const keys = await relay.request("GET", `/v1/users/${bob.username}/keys`);
    expect(keys.status).to.equal(200);
    expect(keys.body).to.include({ source: "cache", verified: false });

    // The CLI, in the existing chat with bob (members checked when it began): the message goes.
    const toBob = await chat(homes.alice, ["--json", "send", bob.username, "sent while the chain is down"]);
    expect(toBob.code, toBob.stderr).to.equal(0);
    expect(toBob.json.find((o) => o.type === "sent")).to.include({ to: bob.username, resent: false, v: 2 });
    expect(toBob.stderr).to.match(/verified/);
    // A new chat with carol needs her key package checked against the chain: refused for now, one clear
    // line, and the message waits in the outbox (her key was verified earlier, so it is not dropped).
    const toCarol = await chat(homes.alice, ["send", carol.username, "a new chat while the chain is down"]);
    expect(toCarol.code).to.equal(1);
    const carolErrors = toCarol.stderr.trim().split("\n").filter((line) => line.startsWith("chat: "));
    expect(carolErrors).to.have.length(1);
    expect(carolErrors[0]).to.match(/^chat: CHAIN_UNAVAILABLE: /);
    expect(toCarol.stderr).to.not.match(/\n\s+at /); // no stack trace
    const waiting = outboxOf(homes.alice, alice.username);
    expect(waiting.map((e) => [e.to, e.body])).to.deep.equal([[carol.username, "a new chat while the chain is down"]]);
    // frank's key was never verified: nothing is sealed for an unchecked key, one clear line, nothing kept.
    const toFrank = await chat(homes.alice, ["send", frank.username, "must not be encrypted to an unchecked key"]);
    expect(toFrank.code).to.equal(1);
    expect(toFrank.stderr.trim().split("\n")).to.have.length(1);
    expect(toFrank.stderr).to.match(/^chat: (CHAIN_UNAVAILABLE|KEY_UNVERIFIED): .*frank_rpc/);
    expect(outboxOf(homes.alice, alice.username).map((e) => e.id)).to.deep.equal(waiting.map((e) => e.id));

    // Meanwhile the chain moves on without the relay: erin registers directly with the relayer account.
    const provider = new JsonRpcProvider(chain.anvil.url, undefined, { staticNetwork: true });
    try {
      const registry = ChatRegistry__factory.connect(chain.deployed.address, new Wallet(chain.deployed.relayerKey, provider));
      const erin = newIdentity();
      const credentialHash = "0x" + "ab".repeat(32);
      const d = BigInt(Math.floor(Date.now() / 1000) + 3600);
      await (
        await registry.register("erin_rpc", credentialHash, erin.publicKey, d, signRegister({ domain: chain.domain, signer: erin, username: "erin_rpc", credentialHash, deadline: d }))
      ).wait();
    } finally {
      provider.destroy();
    }

    await rpc.up();
    await waitFor("/healthz ok again", async () => (await relay.request("GET", "/healthz")).status === 200, 30_000);
    const erinKeys = await waitFor("the relay to sync erin", async () => {
      const k = await relay.request("GET", "/v1/users/erin_rpc/keys");
      return k.status === 200 && k.body.source === "cache" && k;
    });
    expect(erinKeys.body.verified).to.equal(true);
    expect((await relay.request("GET", `/v1/users/${bob.username}/keys`)).body.verified).to.equal(true);
    const inbox = await chat(homes.bob, ["--json", "inbox"]);
    expect(inbox.code, inbox.stderr).to.equal(0);
    expect(inbox.json.filter((o) => o.type === "message").map((m) => m.body)).to.deep.equal(["sent while the chain is down"]);
    // The chain is back: alice's next send starts the chat with carol with the waiting message, first and once.
    const later = await chat(homes.alice, ["--json", "send", carol.username, "after the chain came back"]);
    expect(later.code, later.stderr).to.equal(0);
    expect(later.json.filter((o) => o.type === "sent").map((o) => [o.id, o.to, o.resent])).to.deep.equal([
      [waiting[0].id, carol.username, true],
      [later.json.filter((o) => o.type === "sent")[1]?.id, carol.username, false],
    ]);
    expect(outboxOf(homes.alice, alice.username)).to.deep.equal([]);
    const carolInbox = await chat(homes.carol, ["--json", "inbox"]);
    expect(carolInbox.code, carolInbox.stderr).to.equal(0);
    const toCarolShown = carolInbox.json.filter((o) => o.type === "message");
    expect(toCarolShown.map((m) => [m.from, m.body])).to.deep.equal([
      [alice.username, "a new chat while the chain is down"],
      [alice.username, "after the chain came back"],
    ]);
    expect(toCarolShown[0].id).to.equal(waiting[0].id);
    console.log(`      chain outage: ${JSON.stringify({ ms: Date.now() - started })}`);
  });
});

/**
 * Live notices of MLS activity over the relay's WebSocket, against real relay processes: two instances
 * sharing one MariaDB and Redis (a notice crosses instances on the bus), and one alone without Redis.
 * An append or a welcome reaches the member users' sockets as a small frame (a small application message
 * with its entry, across instances too: test/relay/ds-notice-entry.test.ts covers the entry); nobody else
 * hears of it; a reader that does not read gets one waiting notice per group, not one per append.
 * The MLS bytes are opaque to the relay, so random bytes stand in for them.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { RelayConnection } from "../../cli/connection";
import { Context } from "../../cli/context";
import { onGroupNotifications } from "../../cli/mls/group-notifications";
import { GroupFrame, WelcomeFrame, WS_PATH } from "../../protocol/wire";
import { encodeBase64 } from "../../protocol/wire-v2";
import { startChain, type ChainFixture } from "../helpers/chain";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { newTestUser, uniqueUsername, type TestUser } from "../helpers/users";
import { waitFor } from "../helpers/wait";
import { login, registerUser } from "./accounts-fixture";
import { REDIS_URL } from "./messaging-helpers";

type Session = TestUser & { token: string };

/** A raw socket that records every frame it receives. */
interface Listener {
  ws: WebSocket;
  frames: any[];
  closed: { code: number } | null;
  groupFrames(groupId: string): any[];
}

function listen(relay: RelayProcess, token: string): Promise<Listener> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(relay.url.replace(/^http/, "ws") + WS_PATH, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
    const listener: Listener = {
      ws,
      frames: [],
      closed: null,
      groupFrames: (groupId) => listener.frames.filter((f) => f.type === "group" && f.groupId === groupId),
    };
    ws.on("message", (data) => listener.frames.push(JSON.parse(data.toString())));
    ws.on("close", (code) => (listener.closed = { code }));
    ws.on("error", reject);
    // Ready means the bus subscription is active (or timed out): notices from other instances reach it.
    ws.on("open", () => waitFor("ready frame", () => listener.frames.some((f) => f.type === "ready"), 30_000, 20).then(() => resolve(listener), reject));
  });
}

const bytes = (n = 64) => encodeBase64(new Uint8Array(randomBytes(n)));
const newGroupId = () => randomBytes(32).toString("hex");
const device = (u: Session, deviceId: string) => ({ username: u.username, deviceId });

describe("relay: live notices of MLS group activity over the WebSocket", function () {
  this.timeout(300_000);
  let chain: ChainFixture;
  let db: TestDatabase;
  const pair: RelayProcess[] = [];
  let alone: RelayProcess | undefined;
  const sockets: WebSocket[] = [];
  const connections: RelayConnection[] = [];

  before(async () => {
    chain = await startChain();
    db = await createTestDatabase("chat_ds_push");
    const base = { rpcUrl: chain.anvil.url, contractAddress: chain.deployed.address, deployBlock: chain.deployed.deployBlock, relayerKey: chain.deployed.relayerKey };
    // One session secret and pepper: a token from one instance is valid on the other.
    const shared = {
      INSECURE_HTTP: "1",
      SESSION_SECRET: randomBytes(32).toString("hex"),
      CREDENTIAL_PEPPER: randomBytes(32).toString("hex"),
      LOG_LEVEL: "warn",
      // Room for the slow reader's backlog of filler messages (the default would close it, as it should).
      WS_MAX_BUFFERED_BYTES: String(32 * 1024 * 1024),
      // The paused reader answers no ping while the burst runs, however long a busy machine takes over it.
      WS_PING_INTERVAL_SECONDS: "600",
    };
    for (let i = 0; i < 2; i++) {
      pair.push(
        await startRelayProcess({ ...base, mysqlUrl: db.url, redisUrl: REDIS_URL, dataDir: mkdtempSync(path.join(tmpdir(), "chat-ds-push-")), env: shared }),
      );
    }
  });
  after(async () => {
    for (const ws of sockets) ws.terminate();
    for (const conn of connections) await conn.close();
    for (const relay of [...pair, ...(alone ? [alone] : [])]) await relay.stop();
    await db?.drop();
    await chain?.close();
  });

  async function user(relay: RelayProcess, prefix: string): Promise<Session> {
    const u = newTestUser(uniqueUsername(prefix));
    const registered = await registerUser(relay.url, chain.domain, u);
    expect(registered.status, JSON.stringify(registered.body)).to.equal(200);
    const session = await login(relay.url, chain.domain, u);
    expect(session.status).to.equal(200);
    return { ...u, token: session.body.token };
  }

  async function call(relay: RelayProcess, who: Session, deviceId: string, method: string, pathname: string, body?: unknown) {
    const headers: Record<string, string> = { authorization: `Bearer ${who.token}`, "x-device-id": deviceId };
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(`${relay.url}${pathname}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    const parsed = text ? JSON.parse(text) : undefined;
    expect(response.status, `${method} ${pathname}: ${text.slice(0, 300)}`).to.equal(200);
    return parsed;
  }

  async function socket(relay: RelayProcess, who: Session): Promise<Listener> {
    const listener = await listen(relay, who.token);
    sockets.push(listener.ws);
    return listener;
  }

  /** A group of `owner` (device o1) with `members` added by its first commit, welcomes included. */
  async function groupOf(relay: RelayProcess, owner: Session, members: Session[]): Promise<string> {
    const groupId = newGroupId();
    await call(relay, owner, "o1", "POST", "/v2/groups", { groupId, members: [device(owner, "o1")] });
    const added = members.map((m) => device(m, "m1"));
    const commit = await call(relay, owner, "o1", "POST", `/v2/groups/${groupId}/commits`, {
      epoch: 0,
      id: `add-${randomBytes(4).toString("hex")}`,
      bytes: bytes(),
      add: added,
      welcomes: added.map((d) => ({ ...d, bytes: bytes(200) })),
    });
    expect(commit).to.include({ accepted: true, seq: 1 });
    return groupId;
  }

  const send = (relay: RelayProcess, who: Session, deviceId: string, groupId: string, epoch = 1) =>
    call(relay, who, deviceId, "POST", `/v2/groups/${groupId}/messages`, { epoch, id: `m-${randomBytes(6).toString("hex")}`, bytes: bytes() });

  it("a member on the other instance hears of a welcome and of each append at once; a non-member hears nothing", async () => {
    const [a, b] = pair;
    const alice = await user(a, "pa");
    const bob = await user(a, "pb");
    const carol = await user(a, "pc");

    // bob listens on instance B through the CLI's own connection and its notification helper.
    const home = mkdtempSync(path.join(tmpdir(), "chat-ds-push-home-"));
    const ctx = new Context({ relay: b.url, home, json: true }, {});
    const conn = await RelayConnection.open(ctx, { relay: b.url, username: bob.username, token: bob.token, expiresAt: Date.now() + 3_600_000, keyIndex: 0, keys: [] });
    connections.push(conn);
    const heard: string[] = [];
    let ready = false;
    conn.onFrame((frame) => frame.type === "ready" && (ready = true));
    onGroupNotifications(conn, { group: (groupId, seq) => heard.push(`group ${groupId} ${seq}`), welcome: (groupId) => heard.push(`welcome ${groupId}`) });
    await waitFor("bob's ready frame", () => ready, 30_000, 20);
    // carol, in no group, listens on both instances; alice's own second socket listens on B.
    const carolB = await socket(b, carol);
    const carolA = await socket(a, carol);
    const aliceB = await socket(b, alice);

    // alice, through A, creates a group and adds bob: bob's sockets hear of the welcome and the commit.
    const groupId = await groupOf(a, alice, [bob]);
    await waitFor("bob hears of the welcome and the commit", () => heard.includes(`welcome ${groupId}`) && heard.includes(`group ${groupId} 1`), 10_000, 20);

    // Each application message reaches bob on B within seconds, and alice's own other socket.
    const started = Date.now();
    expect((await send(a, alice, "o1", groupId)).seq).to.equal(2);
    await waitFor("bob hears of seq 2", () => heard.includes(`group ${groupId} 2`), 10_000, 10);
    const latencyMs = Date.now() - started;
    await waitFor("alice's other socket hears of seq 2", () => aliceB.groupFrames(groupId).some((f) => f.seq === 2), 10_000, 20);
    // Frames as the protocol defines them: the group, the seq and the epoch, and the small entry itself,
    // carried across instances on the bus.
    const frame = aliceB.groupFrames(groupId).find((f) => f.seq === 2);
    expect(GroupFrame.strict().safeParse(frame).success, JSON.stringify(frame)).to.equal(true);
    expect(frame).to.deep.include({ type: "group", groupId, seq: 2, epoch: 1 });
    expect(frame.entry).to.deep.include({ seq: 2, epoch: 1, kind: "application", sender: device(alice, "o1") });

    // bob answers through B: alice hears of it on B (the same instance) too.
    expect((await send(b, bob, "m1", groupId)).seq).to.equal(3);
    await waitFor("alice hears of seq 3", () => aliceB.groupFrames(groupId).some((f) => f.seq === 3), 10_000, 20);
    await waitFor("bob hears of seq 3", () => heard.includes(`group ${groupId} 3`), 10_000, 20);

    // By now every notice of this group has reached B and A: carol heard of none of them.
    for (const listener of [carolA, carolB]) {
      expect(listener.frames.filter((f) => f.type === "group" || f.type === "welcome")).to.deep.equal([]);
      expect(listener.closed).to.equal(null);
    }
    console.log(`      (notice latency through instance A to B: ${latencyMs} ms)`);
  });

  it("a welcome frame reaches a user added later, on either instance; a removed user hears of its removal, then nothing", async () => {
    const [a, b] = pair;
    const alice = await user(a, "ra");
    const bob = await user(a, "rb");
    const dave = await user(a, "rd");
    const groupId = await groupOf(a, alice, [bob]);
    const bobB = await socket(b, bob);
    const daveA = await socket(a, dave);
    const aliceA = await socket(a, alice);

    // bob, through B, adds dave (connected to A only).
    const add = await call(b, bob, "m1", "POST", `/v2/groups/${groupId}/commits`, {
      epoch: 1,
      id: "add-dave",
      bytes: bytes(),
      add: [device(dave, "m1")],
      welcomes: [{ ...device(dave, "m1"), bytes: bytes(300) }],
    });
    expect(add).to.include({ accepted: true, seq: 2 });
    await waitFor("dave's welcome frame", () => daveA.frames.some((f) => f.type === "welcome" && f.groupId === groupId), 10_000, 20);
    expect(WelcomeFrame.strict().safeParse(daveA.frames.find((f) => f.type === "welcome")).success).to.equal(true);
    await waitFor("dave hears of the commit that added him", () => daveA.groupFrames(groupId).some((f) => f.seq === 2), 10_000, 20);

    // alice removes bob: bob's socket hears of that commit (seq 3), then of nothing after it.
    const remove = await call(a, alice, "o1", "POST", `/v2/groups/${groupId}/commits`, { epoch: 2, id: "remove-bob", bytes: bytes(), remove: [device(bob, "m1")] });
    expect(remove).to.include({ accepted: true, seq: 3 });
    await waitFor("bob hears of the commit that removed him", () => bobB.groupFrames(groupId).some((f) => f.seq === 3), 10_000, 20);
    expect((await send(a, alice, "o1", groupId, 3)).seq).to.equal(4);
    expect((await send(a, dave, "m1", groupId, 3)).seq).to.equal(5);
    await waitFor("alice hears of seq 5", () => aliceA.groupFrames(groupId).some((f) => f.seq === 5), 10_000, 20);
    await waitFor("dave hears of seq 5", () => daveA.groupFrames(groupId).some((f) => f.seq === 5), 10_000, 20);
    // bob heard of his own commit (seq 2) and of his removal (seq 3), and perhaps of seq 1 and of the welcome
    // that added him (their notices follow the answer that made the group, so they can reach B after bob's
    // socket opened), never of what came after his removal.
    const bobSeqs = bobB.groupFrames(groupId).map((f) => f.seq);
    expect(bobSeqs).to.include.members([2, 3]);
    expect(Math.max(...bobSeqs)).to.equal(3);
    const removedAt = bobB.frames.findIndex((f) => f.type === "group" && f.groupId === groupId && f.seq === 3);
    const welcomesAt = bobB.frames.flatMap((f, i) => (f.type === "welcome" ? [i] : []));
    expect(welcomesAt.length, "bob's welcomes: only the one that added him").to.be.at.most(1);
    for (const i of welcomesAt) expect(i, "a welcome after bob's removal").to.be.below(removedAt);
  });

  it("a burst of 500 appends leaves a reader that does not read one waiting notice per group, not 500", async () => {
    const [a, b] = pair;
    const alice = await user(a, "sa");
    const bob = await user(a, "sb");
    const groupId = await groupOf(a, alice, [bob]);
    const fast = await socket(b, bob);
    const slow = await socket(b, bob);
    const aliceWs = await socket(a, alice);
    const before = await metric(b, "chat_ws_group_notices_coalesced_total");

    // The slow reader stops reading, and its socket is backed up with v1 messages well beyond what the
    // kernel buffers (about 4 MB on loopback here): from here on the relay itself holds what it sends to
    // that socket. All of it must happen within the relay's ping interval (set long for these relays), or the
    // relay drops the silent reader, as it should.
    slow.ws.pause();
    const pausedAt = Date.now();
    const FILLERS = 180;
    const filler = "x".repeat(60_000);
    for (let i = 0; i < FILLERS; i++) aliceWs.ws.send(JSON.stringify({ type: "send", id: `filler-${i}-${randomBytes(4).toString("hex")}`, to: bob.username, envelope: filler }));
    await waitFor("the fast reader has every filler message", () => fast.frames.filter((f) => f.type === "message").length >= FILLERS, 60_000, 20);

    // 500 appends through A, a few at a time.
    const TOTAL = 500;
    let next = 0;
    const burstStarted = Date.now();
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        while (next < TOTAL) {
          next++;
          await send(a, alice, "o1", groupId);
        }
      }),
    );
    const burstMs = Date.now() - burstStarted;
    const lastSeq = 1 + TOTAL;
    await waitFor("the fast reader hears of the last append", () => fast.groupFrames(groupId).some((f) => f.seq === lastSeq), 30_000, 20);
    const coalesced = (await metric(b, "chat_ws_group_notices_coalesced_total")) - before;

    slow.ws.resume();
    const pausedMs = Date.now() - pausedAt;
    await waitFor("the slow reader hears of the last append once it reads", () => slow.groupFrames(groupId).some((f) => f.seq === lastSeq), 60_000, 20);
    expect(slow.closed, `the slow reader was closed after ${pausedMs} ms paused`).to.equal(null);
    expect(slow.frames.filter((f) => f.type === "message").length).to.equal(FILLERS);
    const slowFrames = slow.groupFrames(groupId).length;
    const fastFrames = fast.groupFrames(groupId).length;
    console.log(
      `      (500 appends in ${burstMs} ms; paused ${pausedMs} ms; group frames: slow reader ${slowFrames}, fast reader ${fastFrames}; coalesced on B: ${coalesced})`,
    );
    // Out-of-order stragglers (each append's members are read after its answer) may add a few frames.
    expect(slowFrames).to.be.at.most(10);
    expect(coalesced).to.be.at.least(TOTAL - 20);
  });

  it("a single instance without Redis pushes the same notices", async () => {
    alone = await startRelayProcess({
      rpcUrl: chain.anvil.url,
      contractAddress: chain.deployed.address,
      deployBlock: chain.deployed.deployBlock,
      relayerKey: chain.deployed.relayerKey,
      dataDir: mkdtempSync(path.join(tmpdir(), "chat-ds-push-alone-")),
      env: { INSECURE_HTTP: "1", LOG_LEVEL: "warn" },
    });
    const alice = await user(alone, "la");
    const bob = await user(alone, "lb");
    const carol = await user(alone, "lc");
    const bobSocket = await socket(alone, bob);
    const carolSocket = await socket(alone, carol);
    const groupId = await groupOf(alone, alice, [bob]);
    await waitFor("bob's welcome frame", () => bobSocket.frames.some((f) => f.type === "welcome" && f.groupId === groupId), 10_000, 20);
    expect((await send(alone, alice, "o1", groupId)).seq).to.equal(2);
    await waitFor("bob hears of seq 2", () => bobSocket.groupFrames(groupId).some((f) => f.seq === 2), 10_000, 20);
    expect(carolSocket.frames.filter((f) => f.type === "group" || f.type === "welcome")).to.deep.equal([]);
  });
});

/** A counter's value from the relay's /metrics (0 when absent). */
async function metric(relay: RelayProcess, name: string): Promise<number> {
  const answer = await relay.request("GET", "/metrics");
  const line = String(answer.body)
    .split("\n")
    .find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

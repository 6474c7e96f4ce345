/**
 * A hostile relay: a test double in front of the real relay process (HTTP forwarded as is, WebSocket
 * frames passed through a tamper function), and the relay operator's own key used against the contract.
 *  (1) a substituted key: test/cli/chat.e2e.test.ts ("a relay that hands out a substituted key ...");
 *  (2) an old envelope v1 replayed: `chat inbox` drops it as a duplicate (same id) or rejects it (new id);
 *  (3) a rotation without the user's signature, sent to the contract with the relayer's key: reverts;
 *  (4) the sender of an envelope v1 changed or stripped: `chat inbox` refuses it with a clear warning;
 *  and on messages v2 (MLS), through the double's /v2 routes:
 *  (2) an old log entry re-served under a new seq: shown once at most;
 *  (4) a log entry's `sender` changed or stripped: the message is shown from its true MLS sender, or not at all.
 * The v1 envelopes are sent with the CLI's own v1 code (Messenger), as a client before messages v2 did:
 * `chat inbox` still reads what waits in v1 mailboxes.
 */
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { JsonRpcProvider, Wallet } from "ethers";
import WebSocket, { WebSocketServer } from "ws";
import { ChatRegistry__factory } from "../../typechain-types";
import { RelayConnection } from "../../cli/connection";
import { runChat } from "../helpers/chat-process";
import { newIdentity, signRotate } from "../helpers/signing";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { freePort } from "../helpers/ports";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { loginCli, newTestUser, registerUsers, relayOptions, relaySecrets, startChain, type Chain, type CliClient } from "./stack";

type Tamper = (frame: any) => any[];

/** A log entry of the Delivery Service, as GET /v2/groups/:groupId/log answers it. */
type LogEntry = { seq: number; epoch: number; kind: string; sender?: { username: string; deviceId: string }; id: string; bytes: string; receivedAt: number };

/**
 * The double's view of one group's log with an entry the relay never stored shown at seq `at`: the real
 * entries from `at` on appear one seq later, and the client's cursor is translated back, so the replay sits
 * in an otherwise consistent log (as a relay that inserted it into its own table would serve it).
 */
interface LogInsertion {
  groupId: string;
  at: number;
  entry: LogEntry;
}

const toViewSeq = (insertion: LogInsertion | undefined, groupId: string, seq: number) => (insertion?.groupId === groupId && seq >= insertion.at ? seq + 1 : seq);
const toRealSeq = (insertion: LogInsertion | undefined, groupId: string, seq: number) =>
  insertion?.groupId !== groupId || seq < insertion.at ? seq : seq === insertion.at ? insertion.at - 1 : seq - 1;

/**
 * The double: forwards HTTP and WebSocket to the real relay; `tamper` rewrites relay->client frames; `inject`
 * adds frames to the backlog. On the Delivery Service's /v2 routes: `tamperEntry` rewrites each log entry
 * served, `insertion` adds an entry to a group's log, and `served` records the entries served per group.
 */
async function startHostileProxy(relay: RelayProcess) {
  const port = await freePort();
  const state: {
    tamper: Tamper;
    inject: any[];
    seen: any[];
    tamperEntry: (entry: LogEntry) => LogEntry;
    insertion?: LogInsertion;
    served: Map<string, { entries: LogEntry[]; lastSeq: number }>;
  } = { tamper: (f) => [f], inject: [], seen: [], tamperEntry: (e) => e, served: new Map() };
  const tlsTo = { ca: relay.certificate!, checkServerIdentity: () => undefined };
  /** Rewrites a /v2 request (path and body) into the real relay's seqs; undefined: forwarded as is. */
  const rewriteRequest = (method: string, url: string, body: Buffer): { url: string; body: Buffer; answer: (json: any) => any } | undefined => {
    const log = /^\/v2\/groups\/([0-9a-f]{64})\/log\?(.*)$/.exec(url);
    if (method === "GET" && log) {
      const groupId = log[1];
      const query = new URLSearchParams(log[2]);
      const after = Number(query.get("after") ?? 0);
      query.set("after", String(toRealSeq(state.insertion, groupId, after)));
      return {
        url: `/v2/groups/${groupId}/log?${query}`,
        body,
        answer: (page) => {
          const insertion = state.insertion?.groupId === groupId ? state.insertion : undefined;
          const realLast = page.lastSeq;
          let entries: LogEntry[] = page.entries.map((e: LogEntry) => ({ ...e, seq: toViewSeq(insertion, groupId, e.seq) }));
          if (insertion && after < insertion.at && realLast >= insertion.at - 1) entries = [...entries, { ...insertion.entry, seq: insertion.at }].sort((x, y) => x.seq - y.seq);
          entries = entries.map((e) => state.tamperEntry(e));
          const lastSeq = insertion && realLast >= insertion.at - 1 ? realLast + 1 : realLast;
          const record = state.served.get(groupId) ?? { entries: [], lastSeq: 0 };
          state.served.set(groupId, { entries: [...record.entries, ...page.entries], lastSeq: realLast });
          return { ...page, entries, lastSeq };
        },
      };
    }
    const cursor = /^\/v2\/groups\/([0-9a-f]{64})\/cursor$/.exec(url);
    if (method === "POST" && cursor) {
      const request = JSON.parse(body.toString());
      return { url, body: Buffer.from(JSON.stringify({ ...request, seq: toRealSeq(state.insertion, cursor[1], request.seq) })), answer: (json) => json };
    }
    if (method === "GET" && url === "/v2/sync") {
      return {
        url,
        body,
        answer: (sync) => ({
          ...sync,
          groups: sync.groups.map((g: { groupId: string; cursor: number; lastSeq: number }) => {
            const insertion = state.insertion?.groupId === g.groupId ? state.insertion : undefined;
            return { ...g, cursor: toViewSeq(insertion, g.groupId, g.cursor), lastSeq: insertion && g.lastSeq >= insertion.at - 1 ? g.lastSeq + 1 : g.lastSeq };
          }),
        }),
      };
    }
    return undefined;
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const rewrite = rewriteRequest(req.method ?? "GET", req.url ?? "/", body);
      const headers = { ...req.headers, host: `127.0.0.1:${relay.port}` };
      if (rewrite && req.headers["content-length"] !== undefined) headers["content-length"] = String(rewrite.body.length);
      const upstream = https.request(`${relay.url}${rewrite?.url ?? req.url}`, { method: req.method, headers, ...tlsTo }, (answer) => {
        if (!rewrite || answer.statusCode !== 200) {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
          return;
        }
        const parts: Buffer[] = [];
        answer.on("data", (c) => parts.push(c));
        answer.on("end", () => {
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify(rewrite.answer(JSON.parse(Buffer.concat(parts).toString()))));
        });
      });
      upstream.on("error", () => res.destroy());
      upstream.end(rewrite?.body ?? body);
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  const sockets = new Set<WebSocket>();
  server.on("upgrade", (req, socket, head) => {
    const upstream = new WebSocket(`${relay.url.replace("https", "wss")}${req.url}`, { headers: { authorization: req.headers.authorization ?? "" }, ...tlsTo });
    upstream.on("error", () => socket.destroy());
    upstream.on("open", () =>
      wss.handleUpgrade(req, socket, head, (client) => {
        sockets.add(client).add(upstream);
        upstream.on("message", (data) => {
          const frame = JSON.parse(data.toString());
          if (frame.type === "message") state.seen.push(frame);
          // injected frames join the backlog, just before the relay's "ready"
          const out = frame.type === "ready" ? [...state.inject, ...state.tamper(frame)] : state.tamper(frame);
          for (const f of out) client.send(JSON.stringify(f));
        });
        client.on("message", (data) => upstream.readyState === WebSocket.OPEN && upstream.send(data.toString()));
        client.on("close", () => upstream.close());
        upstream.on("close", () => client.close());
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    close: async () => {
      for (const s of sockets) s.terminate();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("a hostile relay is caught", function () {
  this.timeout(120_000);
  let chain: Chain;
  let db: TestDatabase;
  let relay: RelayProcess;
  let proxy: Awaited<ReturnType<typeof startHostileProxy>>;
  let tmp: string;
  const alice = newTestUser("alice_h");
  const bob = newTestUser("bob_h");
  const carol = newTestUser("carol_h");
  const homes: Record<string, string> = {};
  let aliceV1: CliClient;

  const chatAlice = (args: string[]) => runChat({ home: homes.alice, relay: relay.url, rpc: chain.anvil.url, args });
  /** bob reads through the double */
  const bobInboxRun = () => runChat({ home: homes.bob, relay: proxy.url, rpc: chain.anvil.url, args: ["--json", "inbox"] });
  const bobInbox = async () => {
    const result = await bobInboxRun();
    expect(result.code, result.stderr).to.equal(0);
    return {
      messages: result.json.filter((o) => o.type === "message"),
      // The double is plain http on loopback, which chat warns about on every run: not what is tested here.
      warnings: result.json.filter((o) => o.type === "warning" && o.code !== "INSECURE_RELAY"),
      stdout: result.stdout,
      stderr: result.stderr,
    };
  };

  /** alice sends an envelope v1 to bob with the CLI's v1 code (straight to the relay, bob offline: stored). */
  const sendV1 = async (body: string) => {
    const conn = await RelayConnection.open(aliceV1.ctx, aliceV1.session);
    try {
      const entry = await aliceV1.messenger.prepare(bob.username, body);
      const results = await aliceV1.messenger.flushOutbox(conn, new Set([entry.id]));
      expect(results.map((r) => [r.status, r.error?.code])).to.deep.equal([["stored", undefined]]);
    } finally {
      await conn.close();
    }
  };

  before(async () => {
    chain = await startChain();
    db = await createTestDatabase("chat_rel_hostile");
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-hostile-"));
    relay = await startRelayProcess(relayOptions(chain, { dataDir: path.join(tmp, "relay"), secrets: relaySecrets(), mysqlUrl: db.url }));
    proxy = await startHostileProxy(relay);
    await registerUsers(relay, chain.domain, [alice, bob, carol]);
    for (const [name, user, url] of [["alice", alice, relay.url], ["bob", bob, proxy.url], ["carol", carol, relay.url]] as const) {
      homes[name] = path.join(tmp, name);
      const client = await loginCli({ relayUrl: url, contract: chain.deployed.address, rpcUrl: chain.anvil.url, home: homes[name], user });
      if (name === "alice") aliceV1 = client;
      else client.close();
    }
  });
  after(async () => {
    aliceV1?.close();
    await proxy?.close();
    await relay?.stop();
    await chain?.anvil.stop();
    await db?.drop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("(2) an old envelope replayed is dropped as a duplicate, and rejected under a new id", async () => {
    await sendV1("pay 10 to carol");
    const first = await bobInbox();
    expect(first.messages.map((m) => m.body)).to.deep.equal(["pay 10 to carol"]);
    const old = proxy.state.seen.find((f) => f.id === first.messages[0].id);
    expect(old, "the double saw the frame").to.not.equal(undefined);

    // The relay replays the very frame on the next connection: the client has seen that id from alice.
    proxy.state.inject = [old];
    const replay = await bobInbox();
    expect(replay.messages).to.deep.equal([]);
    expect(replay.warnings).to.deep.equal([]);
    // Under a fresh id the signed id inside no longer matches: refused, loudly.
    proxy.state.inject = [{ ...old, id: "replayed-under-a-new-id" }];
    const renamed = await bobInbox();
    expect(renamed.messages).to.deep.equal([]);
    expect(renamed.warnings.map((w) => w.code)).to.deep.equal(["MESSAGE_REJECTED"]);
    expect(renamed.stderr).to.match(/rejected message replayed-under-a-new-id from alice_h: message id differs/);
    proxy.state.inject = [];
  });

  it("(4) an envelope whose sender the relay changed or stripped is refused with a clear warning", async () => {
    proxy.state.tamper = (f) => (f.type === "message" ? [{ ...f, from: carol.username }] : [f]);
    await sendV1("it is really alice");
    const changed = await bobInbox();
    expect(changed.messages).to.deep.equal([]);
    expect(changed.warnings.map((w) => w.code)).to.deep.equal(["MESSAGE_REJECTED"]);
    expect(changed.stderr).to.match(/message claims sender alice_h but the relay says carol_h/);

    proxy.state.tamper = (f) => {
      if (f.type !== "message") return [f];
      const { from: _stripped, ...rest } = f;
      return [rest];
    };
    await sendV1("who sent this?");
    const stripped = await bobInbox();
    expect(stripped.messages).to.deep.equal([]);
    // both: the one whose sender was changed was not acknowledged under alice's name, so it came again
    expect(stripped.warnings.map((w) => w.code)).to.deep.equal(["MESSAGE_REJECTED", "MESSAGE_REJECTED"]);
    expect(stripped.stderr).to.match(/rejected a message frame from the relay: from: /);

    // An honest relay again: neither was acknowledged under alice's name, so both arrive intact, once.
    proxy.state.tamper = (f) => [f];
    const honest = await bobInbox();
    expect(honest.messages.map((m) => [m.from, m.body])).to.deep.equal([
      [alice.username, "it is really alice"],
      [alice.username, "who sent this?"],
    ]);
    expect((await bobInbox()).messages).to.deep.equal([]);
  });

  it("(3) a rotation without the user's signature, sent to the contract with the relayer's key, reverts", async () => {
    const provider = new JsonRpcProvider(chain.anvil.url, undefined, { staticNetwork: true });
    try {
      const registry = ChatRegistry__factory.connect(chain.deployed.address, new Wallet(chain.deployed.relayerKey, provider));
      const mallory = newIdentity();
      const nonce = await registry.nonces(bob.username);
      const deadline = BigInt(Math.floor(Date.now() / 1000) + 3600);
      const message = { domain: chain.domain, username: bob.username, newPublicKey: mallory.publicKey, nonce, deadline };
      const byMallory = signRotate({ ...message, signer: mallory });
      const relayerIdentity = { privateKey: chain.deployed.relayerKey, publicKey: "", address: new Wallet(chain.deployed.relayerKey).address };
      for (const currentKeySignature of [byMallory, signRotate({ ...message, signer: relayerIdentity })]) {
        let reverted = "";
        try {
          await (await registry.rotateKey(bob.username, mallory.publicKey, deadline, currentKeySignature, byMallory)).wait();
        } catch (error) {
          reverted = registry.interface.parseError((error as { data?: string }).data ?? "0x")?.name ?? String(error);
        }
        expect(reverted).to.equal("ChatRegistryInvalidSigner");
      }
      expect(await registry.keyCount(bob.username)).to.equal(1n);
      expect(await registry.nonces(bob.username)).to.equal(nonce);
      // and through the relay's own API, the same refusal as a stable code
      const viaRelay = await relay.request("POST", "/v1/rotate", {
        username: bob.username,
        newPublicKey: mallory.publicKey,
        deadline: Number(deadline),
        currentKeySignature: byMallory,
        newKeySignature: byMallory,
      });
      expect(viaRelay.status).to.equal(400);
      expect(viaRelay.body.error.code).to.equal("INVALID_SIGNATURE");
    } finally {
      provider.destroy();
    }
  });

  /** alice sends on messages v2 (`chat send`, straight to the relay); returns the MLS group of the chat. */
  const sendV2 = async (body: string) => {
    const sent = await chatAlice(["--json", "send", bob.username, body]);
    expect(sent.code, sent.stderr).to.equal(0);
    const mine = sent.json.find((o) => o.type === "sent" && !o.resent);
    expect(mine).to.include({ v: 2 });
    return mine.groupId as string;
  };

  it("(2, v2) an old MLS log entry re-served under a new seq is shown once at most", async () => {
    // bob's device is on messages v2 (his inbox publishes its key packages), so alice's chat send uses MLS.
    await bobInbox();
    const groupId = await sendV2("v2: pay 10 to carol");
    const first = await bobInbox();
    expect(first.messages.map((m) => [m.from, m.body, m.v])).to.deep.equal([[alice.username, "v2: pay 10 to carol", 2]]);
    const served = proxy.state.served.get(groupId)!;
    const old = served.entries.filter((e) => e.kind === "application").at(-1)!;
    expect(old, "the double served the entry").to.not.equal(undefined);

    // The relay puts the very entry in its log again, after everything bob has read; alice writes on.
    proxy.state.insertion = { groupId, at: served.lastSeq + 1, entry: old };
    await sendV2("v2: a new message");
    const replay = await bobInbox();
    expect(replay.messages.map((m) => m.body)).to.deep.equal(["v2: a new message"]);
    // MLS consumed that message's key: the replay cannot be opened again, and it says so.
    expect(replay.warnings.map((w) => [w.code, w.reason])).to.deep.equal([["GROUP_ENTRY_REFUSED", "ENVELOPE_INVALID"]]);
    expect((await bobInbox()).messages).to.deep.equal([]);
  });

  it("(4, v2) an MLS log entry whose sender the relay changed is shown from its true sender; one stripped is refused", async () => {
    // The relay claims carol's device sent it: the sender data inside the MLS message says alice.
    proxy.state.tamperEntry = (e) => (e.kind === "application" ? { ...e, sender: { username: carol.username, deviceId: e.sender!.deviceId } } : e);
    await sendV2("v2: it is really alice");
    const changed = await bobInbox();
    expect(changed.messages.map((m) => [m.from, m.body])).to.deep.equal([[alice.username, "v2: it is really alice"]]);
    expect(changed.stdout + changed.stderr).to.not.include(carol.username);
    expect(changed.warnings).to.deep.equal([]);

    // The relay strips the sender: the answer is malformed, refused as a whole, and nothing moves on.
    proxy.state.tamperEntry = (e) => {
      const { sender: _stripped, ...rest } = e;
      return rest;
    };
    await sendV2("v2: who sent this?");
    const stripped = await bobInboxRun();
    expect(stripped.code).to.equal(1);
    expect(stripped.json.filter((o) => o.type === "message")).to.deep.equal([]);
    expect(stripped.stderr).to.match(/^chat: RELAY_UNREACHABLE: relay sent a malformed answer to \/v2\/groups\/[0-9a-f]{64}\/log.*: entries\.0\.sender: /m);

    // An honest relay again: the message arrives intact, from alice, once.
    proxy.state.tamperEntry = (e) => e;
    const honest = await bobInbox();
    expect(honest.messages.map((m) => [m.from, m.body])).to.deep.equal([[alice.username, "v2: who sent this?"]]);
    expect((await bobInbox()).messages).to.deep.equal([]);
  });
});

/**
 * A hostile relay: a test double in front of the real relay process (HTTP forwarded as is, WebSocket
 * frames passed through a tamper function), and the relay operator's own key used against the contract.
 *  (1) a substituted key: test/cli/chat.e2e.test.ts ("a relay that hands out a substituted key ...");
 *  (2) an old envelope replayed: `chat inbox` drops it as a duplicate (same id) or rejects it (new id);
 *  (3) a rotation without the user's signature, sent to the contract with the relayer's key: reverts;
 *  (4) the sender of an envelope changed or stripped: `chat inbox` refuses it with a clear warning.
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
import { runChat } from "../helpers/chat-process";
import { newIdentity, signRotate } from "../helpers/signing";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { freePort } from "../helpers/ports";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { loginCli, newTestUser, registerUsers, relayOptions, relaySecrets, startChain, type Chain } from "./stack";

type Tamper = (frame: any) => any[];

/** The double: forwards HTTP and WebSocket to the real relay; `tamper` rewrites relay->client frames; `inject` adds frames to the backlog. */
async function startHostileProxy(relay: RelayProcess) {
  const port = await freePort();
  const state: { tamper: Tamper; inject: any[]; seen: any[] } = { tamper: (f) => [f], inject: [], seen: [] };
  const tlsTo = { ca: relay.certificate!, checkServerIdentity: () => undefined };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const upstream = https.request(`${relay.url}${req.url}`, { method: req.method, headers: { ...req.headers, host: `127.0.0.1:${relay.port}` }, ...tlsTo }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on("error", () => res.destroy());
      upstream.end(Buffer.concat(chunks));
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

  const chatAlice = (args: string[]) => runChat({ home: homes.alice, relay: relay.url, rpc: chain.anvil.url, args });
  /** bob reads through the double */
  const bobInbox = async () => {
    const result = await runChat({ home: homes.bob, relay: proxy.url, rpc: chain.anvil.url, args: ["--json", "inbox"] });
    expect(result.code, result.stderr).to.equal(0);
    return {
      messages: result.json.filter((o) => o.type === "message"),
      // The double is plain http on loopback, which chat warns about on every run: not what is tested here.
      warnings: result.json.filter((o) => o.type === "warning" && o.code !== "INSECURE_RELAY"),
      stderr: result.stderr,
    };
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
      (await loginCli({ relayUrl: url, contract: chain.deployed.address, rpcUrl: chain.anvil.url, home: homes[name], user })).close();
    }
  });
  after(async () => {
    await proxy?.close();
    await relay?.stop();
    await chain?.anvil.stop();
    await db?.drop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("(2) an old envelope replayed is dropped as a duplicate, and rejected under a new id", async () => {
    const sent = await chatAlice(["send", bob.username, "pay 10 to carol"]);
    if (sent.code !== 0) console.log(`      chat send failed (${sent.code}); relay output:\n${relay.output().slice(-3000)}`);
    expect(sent.code, sent.stderr + sent.stdout).to.equal(0);
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
    expect((await chatAlice(["send", bob.username, "it is really alice"])).code).to.equal(0);
    const changed = await bobInbox();
    expect(changed.messages).to.deep.equal([]);
    expect(changed.warnings.map((w) => w.code)).to.deep.equal(["MESSAGE_REJECTED"]);
    expect(changed.stderr).to.match(/message claims sender alice_h but the relay says carol_h/);

    proxy.state.tamper = (f) => {
      if (f.type !== "message") return [f];
      const { from: _stripped, ...rest } = f;
      return [rest];
    };
    expect((await chatAlice(["send", bob.username, "who sent this?"])).code).to.equal(0);
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
});

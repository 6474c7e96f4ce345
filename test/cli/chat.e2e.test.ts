/**
 * End to end: the real `chat` command as separate processes, against a real relay process, a real
 * anvil chain and a MariaDB database of its own. Real KDF parameters (argon2id 64 MiB, scrypt 2^17).
 * One stack per file; each test asks `given` for the state it needs (each step runs once, in order), so
 * that any test runs alone with --grep as well as in the whole file.
 */
import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync, statSync, cpSync, readdirSync } from "node:fs";
import { spawn } from "node:child_process";
import http from "node:http";
import https from "node:https";
import os from "node:os";
import type tls from "node:tls";
import path from "node:path";
import WebSocket from "ws";
import EthCrypto from "eth-crypto";
import { Wallet } from "ethers";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { deployRegistry } from "../helpers/registry";
import { registryInterface } from "../../chain/registry";
import { freePort } from "../helpers/ports";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { sealEnvelope, signInner } from "../../protocol/envelope";
import { publicKeyOf } from "../../protocol/keys";
import { WS_PATH } from "../../protocol/wire";
import { contractServedBy, runChat, type ChatResult } from "./chat-process";

const PASSWORDS = { alice: "alice-Secret-pw-1", bob: "bob-Secret-pw-2", carol: "carol-Secret-pw-3" };
const RESET_DELAY_S = 60; // test/helpers/registry.ts deploys with this delay
const KEY_COUNT_OF_BOB = registryInterface.encodeFunctionData("keyCount", ["bob"]);

describe("chat CLI end to end (real processes, relay, anvil, MariaDB)", function () {
  this.timeout(300_000); // the reset step waits out the contract's delay on a loaded machine
  let anvil: AnvilNode;
  let db: TestDatabase;
  let relay: RelayProcess;
  let tmp: string;
  let homes: Record<string, string>;
  const cleanups: (() => Promise<void> | void)[] = [];

  const chat = (who: string, args: string[], input?: string, relayUrl?: string) =>
    runChat({ home: homes[who], relay: relayUrl ?? relay.url, rpc: anvil.url, args, input });

  const ok = (result: ChatResult, what: string) => {
    expect(result.code, `${what} failed:\n${result.stderr}`).to.equal(0);
    return result;
  };

  /** No password, private key or session token in anything a command printed. */
  const expectNoSecrets = (result: ChatResult, who: keyof typeof PASSWORDS) => {
    const printed = result.stdout + result.stderr;
    expect(printed).to.not.include(PASSWORDS[who]);
    const session = JSON.parse(readFileSync(path.join(homes[who], "session.json"), "utf8"));
    expect(printed).to.not.include(session.token);
    for (const key of session.keys) expect(printed).to.not.include(key.privateKey.slice(2));
  };

  let currentTest: Mocha.Runnable | undefined;
  beforeEach(function () {
    currentTest = this.currentTest;
  });

  /**
   * A step that runs at most once per file, however many tests need it. Each step gets the test's time
   * budget afresh: a test run alone may first build several steps with real KDF parameters.
   */
  const once = <T>(step: () => Promise<T>): (() => Promise<T>) => {
    let running: Promise<T> | undefined;
    return () =>
      (running ??= (async () => {
        currentTest?.resetTimeout();
        const result = await step();
        currentTest?.resetTimeout();
        return result;
      })());
  };

  /** The shared states the tests build on, each with the steps before it. */
  const given = {
    registered: once(async () => {
      const [alice, bob] = await Promise.all([
        chat("alice", ["--password-stdin", "--json", "register", "alice"], `${PASSWORDS.alice}\n`),
        chat("bob", ["--password-stdin", "register", "bob"], `${PASSWORDS.bob}\n`),
      ]);
      return { alice: ok(alice, "register alice"), bob: ok(bob, "register bob") };
    }),
    carolRegistered: once(async () => ok(await chat("carol", ["--password-stdin", "register", "carol"], `${PASSWORDS.carol}\n`), "register carol")),
    /** alice has pinned bob's first key (so that his later changes are announced to her). */
    alicePinnedBob: once(async () => {
      await given.registered();
      ok(await chat("alice", ["whois", "bob"]), "alice pins bob's key");
    }),
    bobRotated: once(async () => {
      await given.alicePinnedBob();
      return ok(await chat("bob", ["--password-stdin", "--json", "rotate-key"], `${PASSWORDS.bob}\n`), "rotate");
    }),
    aliceVerifiedBob: once(async () => {
      await given.bobRotated();
      ok(await chat("alice", ["--yes", "verify", "bob"]), "verify");
    }),
    /**
     * bob resets from a fresh home folder (bob_new): the request, then (with anvil's clock moved past the
     * delay and the relay completing it) the same command again logs in; alice writes to him there and he reads it.
     */
    bobReset: once(async () => {
      await given.aliceVerifiedBob();
      const requested = ok(await chat("bob_new", ["--password-stdin", "--json", "reset", "bob"], `${PASSWORDS.bob}\n`), "reset request");
      currentTest?.resetTimeout(); // two resets with the real KDF parameters in one step
      await rpc("evm_increaseTime", [RESET_DELAY_S + 5]);
      await rpc("evm_mine", []);
      const until = Date.now() + 20_000;
      while (BigInt(await rpc("eth_call", [{ to: registryAddress, data: KEY_COUNT_OF_BOB }, "latest"])) < 3n) {
        if (Date.now() > until) throw new Error("the relay did not complete bob's reset after the delay");
        await new Promise((r) => setTimeout(r, 200));
      }
      const reset = ok(await chat("bob_new", ["--password-stdin", "--json", "reset", "bob"], `${PASSWORDS.bob}\n`), "reset completion");
      currentTest?.resetTimeout();
      expect(requested.json.find((o) => o.type === "reset")).to.include({ status: "requested", keyIndex: 2 });
      const sent = ok(await chat("alice", ["--json", "send", "bob", "Are you on a new device?"]), "send after reset");
      const inbox = ok(await chat("bob_new", ["--json", "inbox"]), "inbox on the new device");
      return { reset, sent, inbox };
    }),
  };

  /** A JSON-RPC call to anvil (moving its clock, reading the registry). */
  const rpc = async (method: string, params: unknown[]): Promise<string> => {
    const response = await fetch(anvil.url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
    });
    return ((await response.json()) as { result: string }).result;
  };
  let registryAddress: string;

  before(async () => {
    anvil = await startAnvil();
    const registry = await deployRegistry({ rpcUrl: anvil.url });
    registryAddress = registry.address;
    db = await createTestDatabase("chat_cli_e2e");
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-e2e-"));
    homes = Object.fromEntries(["alice", "bob", "bob_new", "carol", "alice_proxy"].map((name) => [name, path.join(tmp, name)]));
    relay = await startRelayProcess({
      rpcUrl: anvil.url,
      contractAddress: registry.address,
      deployBlock: registry.deployBlock,
      relayerKey: registry.relayerKey,
      mysqlUrl: db.url,
      dataDir: path.join(tmp, "relay"),
    });
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    await relay?.stop();
    await anvil?.stop();
    await db?.drop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("alice and bob register (keys made locally, files 0600 in 0700 folders, nothing secret printed)", async () => {
    const { alice, bob } = await given.registered();
    expect(alice.json.find((o) => o.type === "registered")).to.include({ username: "alice" });
    expect(bob.stdout).to.match(/Registered bob in block \d+/);
    expectNoSecrets(alice, "alice");
    expectNoSecrets(bob, "bob");
    // every file in the home folder is readable by the user only
    const walk = (dir: string): void => {
      expect(statSync(dir).mode & 0o777, dir).to.equal(0o700);
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(full);
        else expect(statSync(full).mode & 0o777, full).to.equal(0o600);
      }
    };
    walk(homes.alice);
    const keystore = JSON.parse(readFileSync(path.join(homes.alice, "users/alice/keys/0.json"), "utf8"));
    expect(keystore.version).to.equal(3);
    const crypto = keystore.crypto ?? keystore.Crypto; // Web3 Secret Storage allows either spelling
    expect(crypto.kdf).to.equal("scrypt");
    expect(crypto.kdfparams.n).to.equal(131072);
  });

  it("a taken or invalid username fails with one clear line", async () => {
    await given.registered();
    const taken = await chat("carol", ["--password-stdin", "register", "alice"], "whatever-pw\n");
    expect(taken.code).to.not.equal(0);
    // (carol's first contact also notes the pinned certificate and chain on stderr; the error is one line)
    expect(taken.stderr.split("\n").filter((line) => line.startsWith("chat:"))).to.deep.equal(["chat: USERNAME_TAKEN: username taken: alice"]);
    const invalid = await chat("carol", ["--password-stdin", "register", "Carol!"], "whatever-pw\n");
    expect(invalid.code).to.not.equal(0);
    expect(invalid.stderr.trim()).to.match(/^chat: INVALID_USERNAME: .*3 to 32 characters of a-z, 0-9 and _$/);
  });

  it("alice sends to bob while bob is offline; bob logs in and `chat inbox` prints exactly her messages, once", async () => {
    await given.registered();
    ok(await chat("bob", ["logout"]), "logout bob");
    const first = ok(await chat("alice", ["--json", "send", "bob", "Hello Bob, this is Alice."]), "send 1");
    const second = ok(await chat("alice", ["--json", "send", "bob", "Second message: ünïcödé ✓"]), "send 2");
    // on MLS: the first message starts the one-to-one chat with bob's key package, while bob is offline
    expect(first.json[0]).to.include({ type: "sent", to: "bob", status: "stored", v: 2 });
    expect(second.json[0]).to.include({ type: "sent", to: "bob", status: "stored" });
    const notLoggedIn = await chat("bob", ["inbox"]);
    expect(notLoggedIn.code).to.not.equal(0);
    expect(notLoggedIn.stderr).to.match(/not logged in/);

    ok(await chat("bob", ["--password-stdin", "login", "bob"], `${PASSWORDS.bob}\n`), "login bob");
    const inbox = ok(await chat("bob", ["--json", "inbox"]), "inbox");
    const messages = inbox.json.filter((o) => o.type === "message");
    expect(messages.map((m) => [m.from, m.body])).to.deep.equal([
      ["alice", "Hello Bob, this is Alice."],
      ["alice", "Second message: ünïcödé ✓"],
    ]);
    expect(messages.map((m) => m.id)).to.deep.equal([first.json[0].id, second.json[0].id]);
    const text = ok(await chat("bob", ["inbox"]), "second inbox");
    expect(text.stdout).to.equal("");
    // the history keeps them, readable only by bob
    const history = readFileSync(path.join(homes.bob, "users/bob/history/alice.jsonl"), "utf8").trim().split("\n");
    expect(history).to.have.length(2);
  });

  it("a wrong password fails cleanly: non-zero exit, one line, no secret", async () => {
    await given.registered();
    const wrong = await chat("alice", ["--password-stdin", "login", "alice"], "not-the-password\n");
    expect(wrong.code).to.equal(1);
    expect(wrong.stdout).to.equal("");
    expect(wrong.stderr.trim().split("\n")).to.deep.equal(["chat: WRONG_PASSWORD: wrong password for alice"]);
    expect(wrong.stderr).to.not.include("not-the-password");
  });

  it("bob rotates his key; alice's next send warns her and uses the new key", async () => {
    const rotated = await given.bobRotated();
    expect(rotated.json[0]).to.include({ type: "rotated", keyIndex: 1 });
    const sent = ok(await chat("alice", ["--json", "send", "bob", "After your rotation"]), "send after rotate");
    const warning = sent.json.find((o) => o.type === "warning");
    expect(warning).to.include({ code: "KEY_ROTATED", user: "bob", index: 1 });
    expect(sent.stderr).to.match(/WARNING: bob changed keys/);
    expect(sent.json.find((o) => o.type === "sent")).to.include({ v: 2 });
    // warned once: the next send is quiet
    const again = ok(await chat("alice", ["send", "bob", "Quiet now"]), "send again");
    expect(again.stderr).to.not.match(/WARNING/);
    const inbox = ok(await chat("bob", ["--json", "inbox"]), "inbox after rotate");
    expect(inbox.json.filter((o) => o.type === "message").map((m) => m.body)).to.deep.equal(["After your rotation", "Quiet now"]);
  });

  it("`whois` shows bob's history from the chain and the safety number both sides compute alike; `verify` pins it", async () => {
    await given.bobRotated();
    const whois = ok(await chat("alice", ["--json", "whois", "bob"]), "whois");
    const record = whois.json.find((o) => o.type === "whois");
    expect(record.keys.map((k: { kind: string }) => k.kind)).to.deep.equal(["registered", "rotated"]);
    expect(record.verified).to.equal(false);
    const mirror = ok(await chat("bob", ["--json", "whois", "alice"]), "whois mirror").json.find((o) => o.type === "whois");
    expect(mirror.safetyNumber).to.match(/^(\d{5} ){11}\d{5}$/);
    expect(mirror.safetyNumber).to.equal(record.safetyNumber);
    await given.aliceVerifiedBob();
    expect(ok(await chat("alice", ["--json", "whois", "bob"]), "whois 2").json.find((o) => o.type === "whois").verified).to.equal(true);
  });

  it("bob resets from a fresh home folder; alice is warned of a reset, loudly, and bob reads her message there", async () => {
    const { reset, sent, inbox } = await given.bobReset();
    expect(reset.json.find((o) => o.type === "reset")).to.include({ status: "completed", keyIndex: 2 });
    expect(sent.json.find((o) => o.type === "warning")).to.include({ code: "KEY_RESET", user: "bob", index: 2 });
    expect(sent.stderr).to.match(/!!! WARNING: bob's key was RESET/);
    expect(sent.stderr).to.match(/The key you verified is no longer current/);
    expect(inbox.json.filter((o) => o.type === "message").map((m) => m.body)).to.deep.equal(["Are you on a new device?"]);
    // the old device's session is stale now: it says so instead of sending with a replaced key
    const stale = await chat("bob", ["send", "alice", "from the old device"]);
    expect(stale.code).to.not.equal(0);
    expect(stale.stderr).to.match(/WRONG_KEY: your key on chain is now key 2/);
  });

  it("a relay that hands out a substituted key for bob makes alice's send fail with KEY_MISMATCH", async () => {
    await given.registered();
    // A test double of the relay: a proxy in front of the real one that rewrites GET /v1/users/bob/keys.
    const mallory = Wallet.createRandom();
    const proxyPort = await freePort();
    const proxy = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => {
        const upstream = https.request(
          `${relay.url}${req.url}`,
          { method: req.method, headers: { ...req.headers, host: `127.0.0.1:${relay.port}` }, ca: relay.certificate!, checkServerIdentity: () => undefined },
          (answer) => {
            const body: Buffer[] = [];
            answer.on("data", (c) => body.push(c));
            answer.on("end", () => {
              let text = Buffer.concat(body).toString("utf8");
              if (req.url === "/v1/users/bob/keys" && answer.statusCode === 200) {
                const keys = JSON.parse(text);
                const last = keys.keys[keys.keys.length - 1];
                last.publicKey = publicKeyOf(mallory.privateKey);
                last.address = mallory.address;
                text = JSON.stringify(keys);
              }
              res.writeHead(answer.statusCode ?? 502, { "content-type": "application/json" });
              res.end(text);
            });
          },
        );
        upstream.on("error", () => res.destroy());
        upstream.end(Buffer.concat(chunks));
      });
    });
    await new Promise<void>((resolve) => proxy.listen(proxyPort, "127.0.0.1", resolve));
    cleanups.push(() => new Promise<void>((resolve) => proxy.close(() => resolve())));
    const proxyUrl = `http://127.0.0.1:${proxyPort}`;

    // alice on a copy of her device, logged in through the double
    cpSync(homes.alice, homes.alice_proxy, { recursive: true });
    ok(await chat("alice_proxy", ["--password-stdin", "login", "alice"], `${PASSWORDS.alice}\n`, proxyUrl), "login via proxy");
    const send = await chat("alice_proxy", ["send", "bob", "this must not be encrypted to mallory"], undefined, proxyUrl);
    expect(send.code).to.equal(1);
    // One error line (the double is plain http on loopback, which chat also warns about).
    const errorLines = send.stderr.trim().split("\n").filter((line) => line.startsWith("chat: "));
    expect(errorLines).to.have.length(1);
    expect(errorLines[0]).to.match(/^chat: KEY_MISMATCH: key mismatch for bob: .*not the one on chain/);
    const outbox = JSON.parse(readFileSync(path.join(homes.alice_proxy, "users/alice/outbox.json"), "utf8") || "[]");
    expect(outbox).to.deep.equal([]);
  });

  it("an envelope whose ciphertext or signature was altered is rejected by bob's inbox (and dropped)", async () => {
    await given.bobReset(); // bob reads on bob_new
    await given.carolRegistered();
    const session = JSON.parse(readFileSync(path.join(homes.carol, "session.json"), "utf8"));
    const carolKey = session.keys[0].privateKey as string;
    const bobKeys = await relay.request("GET", "/v1/users/bob/keys");
    const bobCurrent = bobKeys.body.keys[bobKeys.body.keys.length - 1];
    const inner = (id: string, body: string) => ({
      v: 1 as const,
      sender: "carol",
      recipient: "bob",
      id,
      timestamp: Date.now(),
      senderKeyIndex: 0,
      recipientKeyIndex: bobCurrent.index,
      body,
    });
    // 1. ciphertext altered in transit
    const sealed = JSON.parse(await sealEnvelope({ inner: inner("tampered-ciphertext-1", "altered"), senderPrivateKey: carolKey, recipientPublicKey: bobCurrent.publicKey }));
    const middle = Math.floor(sealed.c.length / 2);
    sealed.c = sealed.c.slice(0, middle) + (sealed.c[middle] === "0" ? "1" : "0") + sealed.c.slice(middle + 1);
    // 2. signature altered (then encrypted properly for bob)
    const badInner = inner("tampered-signature-1", "forged");
    const signature = signInner({ inner: badInner, privateKey: carolKey });
    const altered = signature.slice(0, 20) + (signature[20] === "a" ? "b" : "a") + signature.slice(21);
    const encrypted = await EthCrypto.encryptWithPublicKey(bobCurrent.publicKey.slice(2), JSON.stringify({ m: badInner, s: altered }));
    // 3. a genuine one
    const genuine = await sealEnvelope({ inner: inner("genuine-message-1", "the real one"), senderPrivateKey: carolKey, recipientPublicKey: bobCurrent.publicKey });
    const frames = [
      { id: "tampered-ciphertext-1", envelope: JSON.stringify(sealed) },
      { id: "tampered-signature-1", envelope: JSON.stringify({ v: 1, c: EthCrypto.cipher.stringify(encrypted) }) },
      { id: "genuine-message-1", envelope: genuine },
    ];
    const pinned: tls.ConnectionOptions = { ca: relay.certificate!, checkServerIdentity: () => undefined };
    const ws = new WebSocket(relay.url.replace("https", "wss") + WS_PATH, { headers: { authorization: `Bearer ${session.token}` }, ...pinned });
    cleanups.push(() => void ws.terminate());
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    const accepted = new Set<string>();
    const allAccepted = new Promise<void>((resolve) =>
      ws.on("message", (data) => {
        const frame = JSON.parse(data.toString());
        if (frame.type === "accepted") accepted.add(frame.id);
        if (accepted.size === frames.length) resolve();
      }),
    );
    for (const frame of frames) ws.send(JSON.stringify({ type: "send", to: "bob", ...frame }));
    await allAccepted;
    ws.close();

    const inbox = ok(await chat("bob_new", ["--json", "inbox"]), "inbox with tampered envelopes");
    expect(inbox.json.filter((o) => o.type === "message").map((m) => [m.from, m.body])).to.deep.equal([["carol", "the real one"]]);
    const rejected = inbox.json.filter((o) => o.type === "warning" && o.code === "MESSAGE_REJECTED");
    expect(rejected.map((w) => w.id).sort()).to.deep.equal(["tampered-ciphertext-1", "tampered-signature-1"]);
    expect(inbox.stderr).to.match(/rejected message tampered-ciphertext-1 from carol: cannot decrypt/);
    expect(inbox.stderr).to.match(/rejected message tampered-signature-1 from carol: signature/);
    expect(inbox.stdout + inbox.stderr).to.not.include("forged");
    // dropped: they do not come back
    const again = ok(await chat("bob_new", ["--json", "inbox"]), "inbox again");
    expect(again.json).to.deep.equal([]);
  });

  it("`chat talk` on MLS: history first, incoming lines appear live, typed lines are sent and stored", async () => {
    await given.registered();
    await given.carolRegistered();
    // alice starts a one-to-one chat with carol; carol's inbox puts it in her history
    ok(await chat("alice", ["send", "carol", "Hello carol, this is alice."]), "alice writes to carol");
    expect(ok(await chat("carol", ["inbox"]), "carol reads it").stdout).to.include("alice: Hello carol, this is alice.");
    const child = spawn(
      process.execPath,
      [path.resolve(__dirname, "../../bin/chat.js"), "--home", homes.carol, "--relay", relay.url, "--rpc", anvil.url, "--contract", registryAddress, "talk", "alice"],
      { env: { PATH: process.env.PATH ?? "", HOME: homes.carol }, stdio: ["pipe", "pipe", "pipe"] },
    );
    cleanups.push(() => void child.kill("SIGKILL"));
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => (stdout += c));
    child.stderr.on("data", (c) => (stderr += c));
    const waitFor = async (test: () => boolean, what: string) => {
      const started = Date.now();
      while (!test()) {
        if (Date.now() - started > 30_000 || child.exitCode !== null) throw new Error(`timed out waiting for ${what}:\n${stdout}\n${stderr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await waitFor(() => stderr.includes("Talking with alice"), "talk to start");
    expect(stdout).to.include("alice: Hello carol, this is alice."); // recent history first
    const sent = ok(await chat("alice", ["--json", "send", "carol", "live hello"]), "send while carol talks");
    expect(sent.json.find((o) => o.type === "sent")).to.include({ v: 2 });
    // from the sender's process ending (accepted by the relay) to carol's screen, through the group notice
    const accepted = Date.now();
    await waitFor(() => stdout.includes("alice: live hello"), "the live message");
    console.log(`      shown in carol's talk ${Date.now() - accepted} ms after alice's chat send exited (0: before it exited)`);
    child.stdin.write("hi alice, live\n");
    await waitFor(() => stdout.includes("carol: hi alice, live"), "the sent line");
    await waitFor(() => stdout.includes(`✓ stored on the relay for alice: "hi alice, live"`) || stdout.includes(`delivered to alice's device: "hi alice, live"`), "the stored state");
    child.stdin.end("/quit\n");
    await new Promise((resolve) => child.once("close", resolve));
    expect(child.exitCode).to.equal(0);
    expect(stdout.split("alice: live hello").length - 1, "shown once").to.equal(1);
    const inbox = ok(await chat("alice", ["--json", "inbox"]), "alice inbox");
    expect(inbox.json.filter((o) => o.type === "message").map((m) => [m.from, m.body, m.v])).to.deep.equal([["carol", "hi alice, live", 2]]);
  });

  it("session expired, message too long, relay or chain unreachable: one line each, naming what was tried", async () => {
    await given.registered();
    const sessionFile = path.join(homes.alice, "session.json");
    const original = readFileSync(sessionFile, "utf8");
    const expiredHome = path.join(tmp, "alice_expired");
    cpSync(homes.alice, expiredHome, { recursive: true });
    const expired = JSON.parse(original);
    expired.expiresAt = Date.now() - 1000;
    require("node:fs").writeFileSync(path.join(expiredHome, "session.json"), JSON.stringify(expired), { mode: 0o600 });
    const late = await runChat({ home: expiredHome, relay: relay.url, rpc: anvil.url, args: ["send", "bob", "hi"] });
    expect(late.code).to.equal(1);
    expect(late.stderr.trim()).to.equal("chat: SESSION_EXPIRED: session expired: log in again");

    const long = await chat("alice", ["send", "bob", "x".repeat(70_000)]);
    expect(long.code).to.equal(1);
    expect(long.stderr.trim()).to.match(/^chat: MESSAGE_TOO_LONG: message too long: 70000 bytes/);

    const deadPort = await freePort();
    const noRelay = await runChat({ home: homes.alice, relay: `https://127.0.0.1:${deadPort}`, rpc: anvil.url, args: ["whois", "bob"] });
    expect(noRelay.code).to.equal(1);
    expect(noRelay.stderr.trim()).to.equal(`chat: RELAY_UNREACHABLE: relay unreachable at https://127.0.0.1:${deadPort} (ECONNREFUSED)`);
    const noChain = await runChat({ home: homes.alice, relay: relay.url, rpc: `http://127.0.0.1:${deadPort}`, args: ["whois", "bob"] });
    expect(noChain.code).to.equal(1);
    expect(noChain.stderr.trim()).to.equal(`chat: CHAIN_UNAVAILABLE: chain unreachable at http://127.0.0.1:${deadPort} (ECONNREFUSED)`);
  });

  it("`passwd` changes carol's password on chain: the old one stops working, the new one logs in; `logout` and `status`", async () => {
    await given.carolRegistered();
    const newPassword = "carol-New-pw-4";
    const changed = ok(await chat("carol", ["--password-stdin", "passwd"], `${PASSWORDS.carol}\n${newPassword}\n`), "passwd");
    expect(changed.stdout + changed.stderr).to.not.include(newPassword);
    ok(await chat("carol", ["logout"]), "logout");
    expect(() => statSync(path.join(homes.carol, "session.json"))).to.throw();
    const loggedOut = ok(await chat("carol", ["--json", "status"]), "status after logout");
    expect(loggedOut.json.find((o) => o.type === "status")?.user ?? null).to.equal(null);

    const old = await chat("carol", ["--password-stdin", "login", "carol"], `${PASSWORDS.carol}\n`);
    expect(old.code).to.equal(1);
    expect(old.stderr.trim()).to.equal("chat: WRONG_PASSWORD: wrong password for carol");
    ok(await chat("carol", ["--password-stdin", "login", "carol"], `${newPassword}\n`), "login with the new password");
    const status = ok(await chat("carol", ["--json", "status"]), "status");
    expect(status.json.find((o) => o.type === "status")?.user).to.equal("carol");
  });

  it("`chat` alone opens the interactive menu on a terminal (a real pseudo-terminal through script(1))", async () => {
    await given.registered();
    const contract = (await contractServedBy(relay.url))!;
    const command = [process.execPath, path.join(__dirname, "../../bin/chat.js"), "--home", homes.alice, "--relay", relay.url, "--rpc", anvil.url, "--contract", contract]
      .map((part) => `'${part}'`)
      .join(" ");
    const child = spawn("script", ["-qec", command, "/dev/null"], { env: { PATH: process.env.PATH ?? "", HOME: homes.alice, TERM: "dumb" } });
    cleanups.push(() => void child.kill("SIGKILL"));
    let screen = "";
    child.stdout.on("data", (chunk) => (screen += chunk));
    const waitFor = async (text: string, after: number) => {
      const started = Date.now();
      while (screen.indexOf(text, after) < 0) {
        if (Date.now() - started > 30_000) throw new Error(`menu never showed "${text}":\n${screen}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return screen.indexOf(text, after) + text.length;
    };
    let at = await waitFor("Choose:", 0);
    expect(screen).to.include("(logged in as alice)");
    child.stdin.write("3\r");
    at = await waitFor("Username:", at);
    child.stdin.write("bob\r");
    at = await waitFor("Choose:", at);
    expect(screen).to.match(/bob: \d+ keys? on chain/);
    expect(screen).to.include("Safety number of alice and bob");
    child.stdin.write("q\r");
    const code = await new Promise((resolve) => child.once("exit", resolve));
    expect(code).to.equal(0);
  });
});

/**
 * `chat talk` a person can live in, on MLS, against real processes: the relay (its Delivery Service and
 * mailbox in files under its DATA_DIR), an anvil chain, and `chat` on a real pseudo-terminal through
 * script(1). The relay is stopped and started again on the same address while alice keeps typing; bob's
 * side is a second `chat talk`. A group conversation runs three `chat talk --group` at once.
 */
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { freePort } from "../helpers/ports";
import { deployRegistry, type DeployedRegistry } from "../helpers/registry";
import { WatchedProcess } from "../helpers/watched-process";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { runChat, startChat, type ChatResult } from "../helpers/chat-process";
import { Context } from "../../cli/context";
import { MlsChat } from "../../cli/mls/chat";

const ROOT = path.resolve(__dirname, "../..");
const CHAT = path.join(ROOT, "bin/chat.js");
const PASSWORDS = { alice: "alice-Secret-pw-1", bob: "bob-Secret-pw-2", carol: "carol-Secret-pw-3" };
/** Test-only fast key derivation for the client: the subject here is the conversation, not the KDF. */
const CLIENT_ENV = { CHAT_INSECURE_FAST_KDF: "1" };

describe("chat talk across a relay restart (real relay, anvil, pseudo-terminal)", function () {
  this.timeout(240_000);
  let anvil: AnvilNode;
  let registry: DeployedRegistry;
  let relay: RelayProcess;
  let tmp: string;
  let homes: Record<string, string>;
  let relayOptions: Parameters<typeof startRelayProcess>[0];
  const children: ChildProcess[] = [];

  const chat = (who: string, args: string[], input?: string) => runChat({ home: homes[who], relay: relay.url, rpc: anvil.url, args, input, env: CLIENT_ENV });
  const ok = (result: ChatResult, what: string) => {
    expect(result.code, `${what} failed:\n${result.stderr}`).to.equal(0);
    return result;
  };

  before(async () => {
    anvil = await startAnvil();
    registry = await deployRegistry({ rpcUrl: anvil.url });
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-talk-"));
    homes = { alice: path.join(tmp, "alice"), bob: path.join(tmp, "bob"), carol: path.join(tmp, "carol") };
    relayOptions = {
      rpcUrl: anvil.url,
      contractAddress: registry.address,
      deployBlock: registry.deployBlock,
      relayerKey: registry.relayerKey,
      dataDir: path.join(tmp, "relay"),
      port: await freePort(),
      // The same secrets after the restart: sessions and credentials stay valid, as with a real restart.
      env: { CREDENTIAL_PEPPER: randomBytes(32).toString("hex"), SESSION_SECRET: randomBytes(32).toString("hex") },
    };
    relay = await startRelayProcess(relayOptions);
    ok(await chat("alice", ["--password-stdin", "register", "alice"], `${PASSWORDS.alice}\n`), "register alice");
    ok(await chat("bob", ["--password-stdin", "register", "bob"], `${PASSWORDS.bob}\n`), "register bob");
    ok(await chat("carol", ["--password-stdin", "register", "carol"], `${PASSWORDS.carol}\n`), "register carol");
  });

  /** `chat talk ARGS` as `who`, reading standard input (a script, not a terminal). */
  const talkProcess = (who: string, args: string[]) => {
    const watched = startChat({ home: homes[who], relay: relay.url, rpc: anvil.url, contract: registry.address, args: ["talk", ...args], env: CLIENT_ENV });
    children.push(watched.child);
    return watched;
  };

  // A test that failed half-way leaves its talks running: they would read the next test's messages.
  afterEach(() => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await relay?.stop();
    await anvil?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("lines typed during the outage arrive after it, in order; states go sending → stored → delivered; presence; own line once", async () => {
    // bob: a plain `chat talk alice` reading standard input; there is no chat between them yet
    const bob = talkProcess("bob", ["alice"]);
    const bobChild = bob.child;
    await bob.waitFor("Talking with alice");

    // alice: `chat talk bob` on a pseudo-terminal
    const command = [process.execPath, CHAT, "--home", homes.alice, "--relay", relay.url, "--rpc", anvil.url, "--contract", registry.address, "talk", "bob"].map((p) => `'${p}'`).join(" ");
    const aliceChild = spawn("script", ["-qec", command, "/dev/null"], { cwd: ROOT, env: { PATH: process.env.PATH ?? "", HOME: homes.alice, TERM: "dumb", ...CLIENT_ENV } });
    children.push(aliceChild);
    const alice = new WatchedProcess(aliceChild, [aliceChild.stdout!]);
    await alice.waitFor("Talking with bob");
    await alice.waitFor("bob is online.");

    // The first line starts the one-to-one MLS chat; bob's talk joins it on the relay's welcome notice.
    aliceChild.stdin!.write("first line\r");
    const sending = await alice.waitFor("alice: first line  (sending…)");
    const stored = await alice.waitFor(`✓ stored on the relay for bob: "first line"`, sending);
    await alice.waitFor(`✓✓ delivered to bob's device: "first line"`, stored);
    await bob.waitFor("alice: first line");
    await bob.waitFor("-- new chat with alice");

    // Latency from typing to the other side's screen, with the group notices (printed, not asserted: a busy machine).
    const latencies: number[] = [];
    for (let i = 1; i <= 3; i++) {
      const mark = bob.text.length;
      aliceChild.stdin!.write(`ping ${i}\r`);
      latencies.push(await bob.timeTo(`alice: ping ${i}`, mark));
    }
    console.log(`      talk latency, typed -> shown on the peer's talk (ms): ${latencies.join(", ")}`);

    // The relay goes away: talk stays, says so, and keeps what alice types.
    await relay.stop();
    const lost = await alice.waitFor("reconnecting…");
    await bob.waitFor("reconnecting…");
    aliceChild.stdin!.write("during the outage 1\r");
    await alice.waitFor("alice: during the outage 1  (waiting for the relay…)", lost);
    aliceChild.stdin!.write("during the outage 2\r");
    await alice.waitFor("alice: during the outage 2  (waiting for the relay…)", lost);
    expect(aliceChild.exitCode, "talk must not end with the relay").to.equal(null);

    relay = await startRelayProcess(relayOptions);
    const back = await alice.waitFor("reconnected.", lost);
    const first = await bob.waitFor("alice: during the outage 1");
    const second = await bob.waitFor("alice: during the outage 2");
    expect(first).to.be.lessThan(second);
    const stored1 = await alice.waitFor(`stored on the relay for bob: "during the outage 1"`, back);
    const stored2 = await alice.waitFor(`stored on the relay for bob: "during the outage 2"`, back);
    expect(stored1).to.be.lessThan(stored2);
    await alice.waitFor(`✓✓ delivered to bob's device: "during the outage 1"`, stored1);
    await alice.waitFor(`✓✓ delivered to bob's device: "during the outage 2"`, stored2);

    // bob answers; alice sees it live on the reconnected conversation
    bobChild.stdin!.write("welcome back\n");
    await alice.waitFor("bob: welcome back", back);

    // Each line alice typed is shown once as a message, not echoed and printed again.
    for (const line of ["first line", "ping 1", "during the outage 1", "during the outage 2"]) {
      expect(alice.text.split(`alice: ${line}  (`).length - 1, line).to.equal(1);
    }

    aliceChild.stdin!.write("/quit\r");
    expect(await alice.exited()).to.equal(0);
    bobChild.stdin!.end("/quit\n");
    expect(await bob.exited()).to.equal(0);
    const bobLines = bob.text.split("\n").filter((line) => /^\[[^\]]+\] alice: /.test(line)).map((line) => line.replace(/^.*alice: /, ""));
    expect(bobLines).to.deep.equal(["first line", "ping 1", "ping 2", "ping 3", "during the outage 1", "during the outage 2"]);
  });

  it("hostile bodies through the real relay print inert in `chat inbox`; --json keeps them exact", async () => {
    // One message with every trick (each chat process costs seconds on a busy machine).
    const bodies = ["\x1b[2J\x1b[31mcleared?\x1b[0m two lines\n[2026-01-01 00:00:00] mallory: forged\r\nbidi \u202egnp.exe\u202c and C1 \x9b31m"];
    for (const body of bodies) ok(await chat("alice", ["send", "bob", body]), "send a hostile body");
    const inbox = ok(await chat("bob", ["inbox"]), "bob inbox");
    expect(inbox.stdout).to.not.match(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/);
    const lines = inbox.stdout.trim().split("\n");
    expect(lines.filter((line) => !line.startsWith(" ")).every((line) => /^\[[^\]]+\] alice: /.test(line))).to.equal(true);
    expect(inbox.stdout).to.include("\n    [2026-01-01 00:00:00] mallory: forged");
    expect(inbox.stdout).to.include("\\x1b[2J");
    // once acknowledged they are gone; send them again to read them as JSON
    for (const body of bodies) ok(await chat("alice", ["send", "bob", body]), "send again");
    const json = ok(await chat("bob", ["--json", "inbox"]), "bob inbox --json");
    expect(json.stdout).to.not.match(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/);
    expect(json.json.filter((o) => o.type === "message").map((o) => o.body)).to.deep.equal(bodies);
  });

  it("a message sent while bob is away says stored; bob's next talk shows it after the history; the v1 status route needs a session", async () => {
    const sent = ok(await chat("alice", ["--json", "send", "bob", "are you there?"]), "send while bob is away");
    expect(sent.json.find((o) => o.type === "sent")).to.include({ status: "stored", v: 2 });
    const bob = talkProcess("bob", ["alice"]);
    await bob.waitFor("Talking with alice");
    await bob.waitFor("alice: are you there?");
    bob.child.stdin!.end("/quit\n");
    expect(await bob.exited()).to.equal(0);
    // shown once (the catch-up saves it to the history and prints it; the notices and polls find nothing more)
    expect(bob.text.split("alice: are you there?").length - 1).to.equal(1);
    // and the next talk shows it once more, as history
    const again = talkProcess("bob", ["alice"]);
    await again.waitFor("Talking with alice");
    again.child.stdin!.end("/quit\n");
    expect(await again.exited()).to.equal(0);
    expect(again.text.split("alice: are you there?").length - 1).to.equal(1);
    // the relay's status query (envelope v1) answers only with a session
    const anonymous = await relay.request("POST", "/v1/messages/status", { to: "bob", ids: ["abcdefgh"] });
    expect(anonymous.status).to.equal(401);
  });

  it("a key bob rotates during the conversation is noticed before alice's next line, which bob's device reads", async () => {
    const alice = talkProcess("alice", ["bob"]);
    await alice.waitFor("Talking with bob");
    ok(await chat("bob", ["--password-stdin", "rotate-key"], `${PASSWORDS.bob}\n`), "bob rotates");
    alice.child.stdin!.write("after your rotation\n");
    const warned = await alice.waitFor("bob changed keys");
    await alice.waitFor("alice: after your rotation", warned);
    alice.child.stdin!.end("/quit\n");
    expect(await alice.exited()).to.equal(0);
    const inbox = ok(await chat("bob", ["--json", "inbox"]), "bob reads after his rotation");
    const message = inbox.json.find((o) => o.type === "message" && o.body === "after your rotation");
    expect(message, "bob's device reads the line sent after his rotation").to.include({ from: "alice", v: 2 });
  });

  it("`chat talk --group`: three members talk live; each line reaches the two others once, in order; delivered to everyone", async () => {
    // The group is made with the client's own code on alice's home (no `chat group create` yet).
    const ctx = new Context({ relay: relay.url, rpc: anvil.url, contract: registry.address, home: homes.alice, json: true }, {});
    let groupId: string;
    try {
      const creator = await MlsChat.open(ctx, ctx.sessions.read()!);
      groupId = await creator.device.createGroup(["bob", "carol"], "team");
    } finally {
      ctx.close();
    }
    // bob and carol join from the welcome at start and learn the name from the group's log
    const bob = talkProcess("bob", ["--group", "team"]);
    const carol = talkProcess("carol", ["--group", "team"]);
    const alice = talkProcess("alice", ["--group", "team"]);
    await Promise.all([bob.waitFor("Talking with #team"), carol.waitFor("Talking with #team"), alice.waitFor("Talking with #team")]);
    await bob.waitFor("alice named the group #team");

    const latencies: { bob: number; carol: number }[] = [];
    for (let i = 1; i <= 3; i++) {
      const [markBob, markCarol] = [bob.text.length, carol.text.length];
      alice.child.stdin!.write(`team line ${i}\n`);
      const [toBob, toCarol] = await Promise.all([bob.timeTo(`#team alice: team line ${i}`, markBob), carol.timeTo(`#team alice: team line ${i}`, markCarol)]);
      latencies.push({ bob: toBob, carol: toCarol });
    }
    console.log(`      talk --group latency, typed -> shown (ms): ${latencies.map((l) => `bob ${l.bob} / carol ${l.carol}`).join(", ")}`);
    await alice.waitFor(`✓✓ delivered to everyone in #team: "team line 3"`);

    bob.child.stdin!.write("bob here\n");
    await alice.waitFor("#team bob: bob here");
    await carol.waitFor("#team bob: bob here");

    for (const member of [alice, bob, carol]) member.child.stdin!.end("/quit\n");
    for (const member of [alice, bob, carol]) expect(await member.exited()).to.equal(0);
    const shownTo = (w: WatchedProcess, from: string) => w.text.split("\n").filter((l) => l.includes(`#team ${from}: `)).map((l) => l.replace(/^.*#team \w+: /, "").replace(/  \(.*\)$/, ""));
    expect(shownTo(bob, "alice")).to.deep.equal(["team line 1", "team line 2", "team line 3"]);
    expect(shownTo(carol, "alice")).to.deep.equal(["team line 1", "team line 2", "team line 3"]);
    expect(shownTo(carol, "bob")).to.deep.equal(["bob here"]);
    // the histories keep it under the group's key, with the sender
    const history = readFileSync(path.join(homes.carol, `users/carol/history/group-${groupId}.jsonl`), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(history.map((e) => [e.from, e.body])).to.deep.equal([
      ["alice", "team line 1"],
      ["alice", "team line 2"],
      ["alice", "team line 3"],
      ["bob", "bob here"],
    ]);
  });
});

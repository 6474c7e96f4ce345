/**
 * `chat talk` a person can live in, against real processes: the relay (durable file mailbox under its
 * DATA_DIR), an anvil chain, and `chat` on a real pseudo-terminal through script(1). The relay is stopped
 * and started again on the same address while alice keeps typing; bob's side is a second `chat talk`.
 */
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { freePort } from "../helpers/ports";
import { deployRegistry, type DeployedRegistry } from "../helpers/registry";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { runChat, type ChatResult } from "../helpers/chat-process";

const ROOT = path.resolve(__dirname, "../..");
const CHAT = path.join(ROOT, "bin/chat.js");
const PASSWORDS = { alice: "alice-Secret-pw-1", bob: "bob-Secret-pw-2" };
/** Test-only fast key derivation for the client: the subject here is the conversation, not the KDF. */
const CLIENT_ENV = { CHAT_INSECURE_FAST_KDF: "1" };

/** A process whose output is watched: waits for text after a position, in order. */
class Watched {
  text = "";
  constructor(readonly child: ChildProcess, streams: NodeJS.ReadableStream[]) {
    for (const stream of streams) stream.on("data", (chunk) => (this.text += chunk));
  }
  async waitFor(needle: string, after = 0, ms = 45_000): Promise<number> {
    const started = Date.now();
    while (this.text.indexOf(needle, after) < 0) {
      if (Date.now() - started > ms) throw new Error(`never saw ${JSON.stringify(needle)} after ${after}:\n${this.text}`);
      if (this.child.exitCode !== null) throw new Error(`exited (${this.child.exitCode}) before ${JSON.stringify(needle)}:\n${this.text}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return this.text.indexOf(needle, after);
  }
  exited(): Promise<number | null> {
    return this.child.exitCode !== null ? Promise.resolve(this.child.exitCode) : new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
  }
}

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
    homes = { alice: path.join(tmp, "alice"), bob: path.join(tmp, "bob") };
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
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await relay?.stop();
    await anvil?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("lines typed during the outage arrive after it, in order; states go sending → stored → delivered; presence; own line once", async () => {
    // bob: a plain `chat talk alice` reading standard input (it acknowledges alice's messages as they arrive)
    const bobChild = spawn(process.execPath, [CHAT, "--home", homes.bob, "--relay", relay.url, "--rpc", anvil.url, "--contract", registry.address, "talk", "alice"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: homes.bob, ...CLIENT_ENV },
      stdio: ["pipe", "pipe", "pipe"],
    });
    children.push(bobChild);
    const bob = new Watched(bobChild, [bobChild.stdout!, bobChild.stderr!]);
    await bob.waitFor("Talking with alice");

    // alice: `chat talk bob` on a pseudo-terminal
    const command = [process.execPath, CHAT, "--home", homes.alice, "--relay", relay.url, "--rpc", anvil.url, "--contract", registry.address, "talk", "bob"].map((p) => `'${p}'`).join(" ");
    const aliceChild = spawn("script", ["-qec", command, "/dev/null"], { cwd: ROOT, env: { PATH: process.env.PATH ?? "", HOME: homes.alice, TERM: "dumb", ...CLIENT_ENV } });
    children.push(aliceChild);
    const alice = new Watched(aliceChild, [aliceChild.stdout!]);
    await alice.waitFor("Talking with bob");
    await alice.waitFor("bob is online.");

    aliceChild.stdin!.write("first line\r");
    const sending = await alice.waitFor("alice: first line  (sending…)");
    const stored = await alice.waitFor(`✓ stored on the relay for bob: "first line"`, sending);
    await alice.waitFor(`✓✓ delivered to bob's device: "first line"`, stored);
    await bob.waitFor("alice: first line");

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
    for (const line of ["first line", "during the outage 1", "during the outage 2"]) {
      expect(alice.text.split(`alice: ${line}  (`).length - 1, line).to.equal(1);
    }

    aliceChild.stdin!.write("/quit\r");
    expect(await alice.exited()).to.equal(0);
    bobChild.stdin!.end("/quit\n");
    expect(await bob.exited()).to.equal(0);
    const bobLines = bob.text.split("\n").filter((line) => /^\[[^\]]+\] alice: /.test(line)).map((line) => line.replace(/^.*alice: /, ""));
    expect(bobLines).to.deep.equal(["first line", "during the outage 1", "during the outage 2"]);
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

  it("the sender learns which accepted messages wait on the relay (POST /v1/messages/status)", async () => {
    ok(await chat("alice", ["send", "bob", "are you there?"]), "send while bob is away");
    const inbox = ok(await chat("alice", ["inbox"]), "alice inbox");
    expect(inbox.stderr).to.match(/your message to bob of .* \("are you there\?"\) is on the relay, not yet on bob's device/);
    ok(await chat("bob", ["inbox"]), "bob reads it");
    const after = ok(await chat("alice", ["inbox"]), "alice inbox after");
    expect(after.stderr).to.not.include("are you there?");
    // the route answers only with a session, and only about the caller's own messages
    const anonymous = await relay.request("POST", "/v1/messages/status", { to: "bob", ids: ["abcdefgh"] });
    expect(anonymous.status).to.equal(401);
  });

  it("a key bob rotates during the conversation is noticed before alice's next line, which bob's new key opens", async () => {
    const aliceChild = spawn(process.execPath, [CHAT, "--home", homes.alice, "--relay", relay.url, "--rpc", anvil.url, "--contract", registry.address, "talk", "bob"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: homes.alice, ...CLIENT_ENV },
      stdio: ["pipe", "pipe", "pipe"],
    });
    children.push(aliceChild);
    const alice = new Watched(aliceChild, [aliceChild.stdout!, aliceChild.stderr!]);
    await alice.waitFor("Talking with bob");
    ok(await chat("bob", ["--password-stdin", "rotate-key"], `${PASSWORDS.bob}\n`), "bob rotates");
    aliceChild.stdin!.write("after your rotation\n");
    const warned = await alice.waitFor("bob changed keys");
    await alice.waitFor("alice: after your rotation", warned);
    aliceChild.stdin!.end("/quit\n");
    expect(await alice.exited()).to.equal(0);
    const inbox = ok(await chat("bob", ["--json", "inbox"]), "bob reads with the new key");
    const message = inbox.json.find((o) => o.type === "message" && o.body === "after your rotation");
    expect(message?.keyIndex, "sealed to bob's new key").to.equal(1);
  });
});

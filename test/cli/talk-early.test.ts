/**
 * `chat talk` asks the relay for early frames and shows the lines they carry at once, each once: real relay
 * (plain HTTP on loopback, its Delivery Service in MariaDB), anvil, two `chat talk` processes. A line shown
 * from an early frame is saved to the history before it has a log position (no seq), and its log entry,
 * met later, is passed over without a refusal.
 */
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { runChat, type ChatResult } from "../helpers/chat-process";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { deployRegistry, type DeployedRegistry } from "../helpers/registry";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { WatchedProcess } from "../helpers/watched-process";

const ROOT = path.resolve(__dirname, "../..");
const CHAT = path.join(ROOT, "bin/chat.js");
const PASSWORDS = { alice: "alice-Secret-pw-1", bob: "bob-Secret-pw-2" };
/** Test-only fast key derivation for the client: the subject here is the conversation, not the KDF. */
const CLIENT_ENV = { CHAT_INSECURE_FAST_KDF: "1" };
const LINES = ["first line", "second line", "third line", "fourth line", "fifth line", "sixth line"];

describe("chat talk shows the lines early frames carry, once", function () {
  this.timeout(240_000);
  let anvil: AnvilNode;
  let registry: DeployedRegistry;
  let db: TestDatabase;
  let relay: RelayProcess;
  let tmp: string;
  let homes: Record<string, string>;
  const children: ChildProcess[] = [];

  const ok = (result: ChatResult, what: string) => {
    expect(result.code, `${what} failed:\n${result.stderr}`).to.equal(0);
    return result;
  };

  before(async () => {
    anvil = await startAnvil();
    registry = await deployRegistry({ rpcUrl: anvil.url });
    db = await createTestDatabase("chat_talk_early");
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-talk-early-"));
    homes = { alice: path.join(tmp, "alice"), bob: path.join(tmp, "bob") };
    relay = await startRelayProcess({
      rpcUrl: anvil.url,
      contractAddress: registry.address,
      deployBlock: registry.deployBlock,
      relayerKey: registry.relayerKey,
      mysqlUrl: db.url,
      dataDir: path.join(tmp, "relay"),
      env: { INSECURE_HTTP: "1", LOG_LEVEL: "warn" },
    });
    for (const who of ["alice", "bob"] as const) {
      ok(await runChat({ home: homes[who], relay: relay.url, rpc: anvil.url, args: ["--password-stdin", "register", who], input: `${PASSWORDS[who]}\n`, env: CLIENT_ENV, contract: registry.address }), `register ${who}`);
    }
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await relay?.stop();
    await db?.drop();
    await anvil?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  const talk = (who: string, peer: string) => {
    const child = spawn(process.execPath, [CHAT, "--home", homes[who], "--relay", relay.url, "--rpc", anvil.url, "--contract", registry.address, "talk", peer], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: homes[who], ...CLIENT_ENV },
      stdio: ["pipe", "pipe", "pipe"],
    });
    children.push(child);
    return new WatchedProcess(child);
  };

  it("each of alice's lines is shown once on bob's talk, some from early frames, and nothing is refused", async () => {
    const bob = talk("bob", "alice");
    await bob.waitFor("Talking with alice");
    const alice = talk("alice", "bob");
    await alice.waitFor("Talking with bob");
    for (const line of LINES) {
      alice.child.stdin!.write(`${line}\n`);
      await bob.waitFor(`alice: ${line}`);
    }
    // bob answers, so that the log entries of alice's lines are surely read (or passed over) before leaving.
    bob.child.stdin!.write("got them\n");
    await alice.waitFor("bob: got them");
    await bob.waitFor(`✓✓ delivered to alice's device: "got them"`);
    alice.child.stdin!.end("/quit\n");
    bob.child.stdin!.end("/quit\n");
    expect(await alice.exited()).to.equal(0);
    expect(await bob.exited()).to.equal(0);

    const shown = bob.text
      .split("\n")
      .filter((line) => /^\[[^\]]+\] alice: /.test(line))
      .map((line) => line.replace(/^.*alice: /, ""));
    expect(shown).to.deep.equal(LINES);
    expect(bob.text).to.not.include("GROUP_ENTRY_REFUSED");
    const history = readFileSync(path.join(homes.bob, "users/bob/history/alice.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((e) => e.direction === "in");
    expect(history.map((e) => e.body)).to.deep.equal(LINES);
    // The relay hands a group's messages on early once it has stored one since its last commit: the first
    // line came by the log (it has a seq); of the others, those shown early have none.
    expect(history[0].seq).to.be.a("number");
    expect(history.filter((e) => e.seq === undefined).length, "lines shown from early frames").to.be.greaterThan(0);
  });
});

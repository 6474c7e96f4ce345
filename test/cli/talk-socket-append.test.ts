/**
 * `chat talk` sends its lines over the WebSocket it holds, and a socket that drops in the middle of an
 * append loses nothing and shows nothing twice: real relay (plain HTTP on loopback, its stores in files),
 * anvil, two `chat talk` processes. alice reaches the relay through a proxy that sees her frames and
 * requests, and cuts her socket right after the relay stored a line, before its answer reaches her.
 * `chat talk` also asks for early frames: a line it shows from one, before the relay stored it, is saved
 * without a log position, and its log entry, met later, is passed over without a refusal.
 */
import { expect } from "chai";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { runChat, startChat, type ChatResult } from "../helpers/chat-process";
import { deployRegistry, type DeployedRegistry } from "../helpers/registry";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { waitFor } from "../helpers/wait";
import { startCutProxy, type CutProxy } from "../helpers/ws-cut-proxy";

const PASSWORDS = { alice: "alice-Secret-pw-1", bob: "bob-Secret-pw-2" };
/** Test-only fast key derivation for the client: the subject here is the conversation, not the KDF. */
const CLIENT_ENV = { CHAT_INSECURE_FAST_KDF: "1" };

describe("chat talk sends over its WebSocket (a socket cut mid-append falls back to HTTP with the same id) and shows early frames", function () {
  this.timeout(240_000);
  let anvil: AnvilNode;
  let registry: DeployedRegistry;
  let relay: RelayProcess;
  let proxy: CutProxy;
  let tmp: string;
  let homes: Record<string, string>;
  /** each user's way to the relay: alice's goes through the proxy */
  let relayOf: Record<string, string>;
  const children: ChildProcess[] = [];

  const ok = (result: ChatResult, what: string) => {
    expect(result.code, `${what} failed:\n${result.stderr}`).to.equal(0);
    return result;
  };

  before(async () => {
    anvil = await startAnvil();
    registry = await deployRegistry({ rpcUrl: anvil.url });
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-talk-socket-"));
    homes = { alice: path.join(tmp, "alice"), bob: path.join(tmp, "bob") };
    relay = await startRelayProcess({
      rpcUrl: anvil.url,
      contractAddress: registry.address,
      deployBlock: registry.deployBlock,
      relayerKey: registry.relayerKey,
      dataDir: path.join(tmp, "relay"),
      // Plain HTTP on loopback, so that the proxy can read the frames it cuts.
      env: { INSECURE_HTTP: "1", LOG_LEVEL: "warn" },
    });
    proxy = await startCutProxy(relay.url);
    relayOf = { alice: proxy.url, bob: relay.url };
    for (const who of ["alice", "bob"] as const) {
      ok(await runChat({ home: homes[who], relay: relayOf[who], rpc: anvil.url, args: ["--password-stdin", "register", who], input: `${PASSWORDS[who]}\n`, env: CLIENT_ENV, contract: registry.address }), `register ${who}`);
    }
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await proxy?.close();
    await relay?.stop();
    await anvil?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** `chat talk PEER` as `who`, reading standard input. */
  const talk = (who: string, peer: string) => {
    const watched = startChat({ home: homes[who], relay: relayOf[who], rpc: anvil.url, contract: registry.address, args: ["talk", peer], env: CLIENT_ENV });
    children.push(watched.child);
    return watched;
  };

  it("lines go as append frames, not POSTs; the line whose answer is cut is POSTed with the same id, stored once, shown once", async () => {
    const bob = talk("bob", "alice");
    await bob.waitFor("Talking with alice");
    const alice = talk("alice", "bob");
    await alice.waitFor("Talking with bob");

    // The first line starts the chat (its commit goes over HTTP), the line itself over the socket.
    alice.child.stdin!.write("first line\n");
    await bob.waitFor("alice: first line");
    await alice.waitFor(`✓✓ delivered to bob's device: "first line"`);
    const appends = () => proxy.frames.filter((f) => f.type === "append");
    expect(appends()).to.have.length(1);
    expect(proxy.postedIds, "no line went over HTTP while the socket was open").to.deep.equal([]);

    // The socket is cut once the relay has stored the next line and answered; the answer never arrives.
    proxy.armCut();
    alice.child.stdin!.write("cut mid-way\n");
    await waitFor("the cut", () => proxy.cut.length === 1, 30_000, 20);
    const cutId = proxy.cut[0].id;
    await waitFor("the same id over HTTP", () => proxy.postedIds.includes(cutId), 30_000, 20);
    expect(proxy.postedIds).to.deep.equal([cutId]);
    await alice.waitFor(`✓ stored on the relay for bob: "cut mid-way"`);
    await bob.waitFor("alice: cut mid-way");
    const back = await alice.waitFor("reconnected.");
    await alice.waitFor(`✓✓ delivered to bob's device: "cut mid-way"`);

    // Reconnected: the next line goes over the new socket again.
    alice.child.stdin!.write("after the cut\n");
    await bob.waitFor("alice: after the cut");
    await alice.waitFor(`✓✓ delivered to bob's device: "after the cut"`, back);
    expect(appends().map((f) => f.id)).to.include(cutId).and.to.have.length(3);
    expect(proxy.postedIds).to.deep.equal([cutId]);

    // bob's reply reaches alice; her device's cursor moves as a frame on her socket.
    const cursorsBefore = proxy.frames.filter((f) => f.type === "cursor").length;
    bob.child.stdin!.write("got them\n");
    await alice.waitFor("bob: got them");
    await waitFor("alice's cursor frame", () => proxy.frames.filter((f) => f.type === "cursor").length > cursorsBefore, 15_000, 20);

    alice.child.stdin!.end("/quit\n");
    bob.child.stdin!.end("/quit\n");
    expect(await alice.exited()).to.equal(0);
    expect(await bob.exited()).to.equal(0);
    // Each line shown once on bob's side, in order; each shown once on alice's.
    const bobLines = bob.text.split("\n").filter((line) => /^\[[^\]]+\] alice: /.test(line)).map((line) => line.replace(/^.*alice: /, ""));
    expect(bobLines).to.deep.equal(["first line", "cut mid-way", "after the cut"]);
    for (const line of ["first line", "cut mid-way", "after the cut"]) expect(alice.count(`alice: ${line}  (`), line).to.equal(1);
    // And once in bob's next inbox-less look at the history: the relay's log holds it once.
    const history = ok(await runChat({ home: homes.bob, relay: relayOf.bob, rpc: anvil.url, args: ["--json", "talk", "alice"], input: "/quit\n", env: CLIENT_ENV, contract: registry.address }), "bob's history");
    expect(history.json.filter((o) => o.type === "history" && o.body === "cut mid-way")).to.have.length(1);
  });

  it("talk asks for early frames: each of alice's lines shows on bob's talk once, some before the relay stored them, nothing refused", async () => {
    const lines = ["early one", "early two", "early three", "early four", "early five", "early six"];
    const bob = talk("bob", "alice");
    const live = await bob.waitFor("Talking with alice");
    const alice = talk("alice", "bob");
    await alice.waitFor("Talking with bob");
    for (const line of lines) {
      alice.child.stdin!.write(`${line}\n`);
      await bob.waitFor(`alice: ${line}`, live);
    }
    // bob answers, so that the log entries of alice's lines are surely read (or passed over) before leaving.
    bob.child.stdin!.write("got the early ones\n");
    await alice.waitFor("bob: got the early ones");
    await bob.waitFor(`✓✓ delivered to alice's device: "got the early ones"`, live);
    alice.child.stdin!.end("/quit\n");
    bob.child.stdin!.end("/quit\n");
    expect(await alice.exited()).to.equal(0);
    expect(await bob.exited()).to.equal(0);

    const shown = bob.text
      .slice(live)
      .split("\n")
      .filter((line) => /^\[[^\]]+\] alice: early /.test(line))
      .map((line) => line.replace(/^.*alice: /, ""));
    expect(shown).to.deep.equal(lines);
    expect(bob.text).to.not.include("GROUP_ENTRY_REFUSED");
    // A line shown from an early frame is saved before it has a log position: its history entry has no seq.
    const received = readFileSync(path.join(homes.bob, "users/bob/history/alice.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((e) => e.direction === "in" && lines.includes(e.body));
    expect(received.map((e) => e.body)).to.deep.equal(lines);
    expect(received.filter((e) => e.seq === undefined).length, "lines shown from early frames").to.be.greaterThan(0);
  });
});

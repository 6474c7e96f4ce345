/**
 * The file-backed Delivery Service store across restarts: everything survives close and reopen (also
 * after compaction), a torn tail is cut off, a second opener is refused, and a process SIGKILLed in the
 * middle of a burst of appends loses nothing it had reported as stored and never reuses a seq.
 */
import { expect } from "chai";
import { spawn } from "node:child_process";
import { appendFileSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { MailboxError } from "../../relay/storage/mailbox";
import { createFileDeliveryServiceStore, type FileDeliveryServiceEvent } from "../../relay/storage/ds-file";
import type { DeliveryServiceStore, DeviceRef } from "../../relay/storage/ds-types";

const ROOT = path.resolve(__dirname, "../..");
const NOW = 1_700_000_000_000;
const DAY = 24 * 3600 * 1000;
const alice: DeviceRef = { username: "alice", deviceId: "d1" };
const bob: DeviceRef = { username: "bob", deviceId: "d1" };
const carol: DeviceRef = { username: "carol", deviceId: "d1" };
const GROUP = new Uint8Array(32).fill(7);
const bytes = (text: string) => new TextEncoder().encode(text);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** Everything a client could observe, as plain data, to compare a store before and after a reopen. */
async function observe(ds: DeliveryServiceStore) {
  return {
    group: await ds.group(GROUP),
    members: await ds.members(GROUP),
    log: (await ds.read({ groupId: GROUP, afterSeq: 0, limit: 1000 })).map((e) => ({ ...e, bytes: text(e.bytes) })),
    pendingBob: await ds.pendingFor(bob),
    welcomesCarol: (await ds.welcomes({ device: carol, now: NOW, limit: 10 })).map((w) => ({ ...w, bytes: text(w.bytes) })),
    bobKeys: await ds.keyPackageCounts({ device: bob, now: NOW }),
  };
}

async function fill(ds: DeliveryServiceStore, messages: number) {
  await ds.putKeyPackages({ device: bob, oneTime: [1, 2, 3].map((i) => ({ bytes: bytes(`kp${i}`), notAfter: NOW + DAY })), lastResort: { bytes: bytes("last"), notAfter: NOW + DAY }, now: NOW });
  await ds.claimKeyPackages({ username: "bob", now: NOW });
  await ds.createGroup({ groupId: GROUP, members: [alice, bob], now: NOW });
  for (let i = 0; i < messages; i++) await ds.appendApplication({ groupId: GROUP, epoch: 0, sender: alice, messageId: `m${i}`, bytes: bytes(`message ${i} ${"x".repeat(200)}`), receivedAt: NOW });
  await ds.appendCommit({
    groupId: GROUP,
    epoch: 0,
    sender: alice,
    messageId: "add-carol",
    bytes: bytes("commit"),
    receivedAt: NOW,
    addMembers: [carol],
    welcomes: [{ recipient: carol, bytes: bytes("welcome"), expiresAt: NOW + DAY }],
  });
  await ds.advanceCursor({ device: bob, groupId: GROUP, seq: 3 });
}

describe("delivery service in a file: restarts", function () {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "chat-ds-file-"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps everything across close and reopen, including what was claimed and what was sent", async () => {
    const first = createFileDeliveryServiceStore({ dir });
    await first.migrate();
    await fill(first, 20);
    const before = await observe(first);
    await first.close();
    expect(await codeOf(first.group(GROUP))).to.equal("DS_CLOSED");

    const second = createFileDeliveryServiceStore({ dir });
    await second.migrate();
    expect(await observe(second)).to.deep.equal(before);
    expect(before.bobKeys).to.deep.equal({ oneTime: 2, lastResort: true });
    expect(before.group).to.deep.include({ epoch: 1, lastSeq: 21 });
    // alice sent all 20 messages caught up, so they moved her cursor (her commit did not): kept too
    expect(before.members.map((m) => `${m.username}@${m.cursor}`)).to.have.members(["alice@20", "bob@3", "carol@21"]);
    // the idempotency of appends survives too, and seqs continue
    expect(await second.appendApplication({ groupId: GROUP, epoch: 1, sender: alice, messageId: "m0", bytes: bytes("again"), receivedAt: NOW })).to.deep.equal({
      accepted: true,
      seq: 1,
      epoch: 0,
      duplicate: true,
      senderCursor: 20,
    });
    // carol starts after the commit that added her: caught up, her message moves her cursor
    expect(await second.appendApplication({ groupId: GROUP, epoch: 1, sender: carol, messageId: "hello", bytes: bytes("hi"), receivedAt: NOW })).to.deep.equal({
      accepted: true,
      seq: 22,
      epoch: 1,
      duplicate: false,
      senderCursor: 22,
    });
    await second.close();
  });

  it("compacts the log into the live state and reads it back the same", async () => {
    const events: FileDeliveryServiceEvent[] = [];
    const first = createFileDeliveryServiceStore({ dir, compactMinBytes: 16 * 1024, onEvent: (e) => events.push(e) });
    await first.migrate();
    await fill(first, 200);
    // garbage: cursor moves and a purge make the operation log longer than the state
    for (let seq = 4; seq <= 150; seq++) await first.advanceCursor({ device: bob, groupId: GROUP, seq });
    // alice's own 200 messages moved her cursor with them: a late move does not take it back
    expect(await first.advanceCursor({ device: alice, groupId: GROUP, seq: 150 })).to.equal(200);
    // bob, at 150, is the member furthest behind
    expect((await first.purge({ now: NOW + 2 * DAY, logTtlMs: DAY })).logEntries).to.equal(150);
    await first.group(GROUP); // a queue round after the purge, so a compaction it triggered has run
    const before = await observe(first);
    await first.close();
    const compactions = events.filter((e) => e.type === "compacted");
    expect(compactions.length).to.be.greaterThan(0);
    expect(events.filter((e) => e.type === "compaction-failed")).to.deep.equal([]);

    const second = createFileDeliveryServiceStore({ dir });
    await second.migrate();
    const after = await observe(second);
    expect(after).to.deep.equal(before);
    expect(after.log.map((e) => e.seq)).to.deep.equal(Array.from({ length: 51 }, (_, i) => i + 151));
    expect(after.members.map((m) => `${m.username}@${m.cursor}`)).to.have.members(["alice@200", "bob@150", "carol@201"]);
    await second.close();
  });

  it("cuts a torn tail off on open and refuses a second opener", async () => {
    const first = createFileDeliveryServiceStore({ dir });
    await first.migrate();
    await fill(first, 5);
    const before = await observe(first);
    expect(await lockCode(createFileDeliveryServiceStore({ dir }).migrate())).to.equal("MAILBOX_LOCKED");
    await first.close();
    const logPath = path.join(dir, "delivery-service.log");
    const size = statSync(logPath).size;
    appendFileSync(logPath, Buffer.from([200, 0, 0, 0, 1, 2, 3, 4, 5, 6])); // a frame header promising 200 bytes, then a crash

    const events: FileDeliveryServiceEvent[] = [];
    const second = createFileDeliveryServiceStore({ dir, onEvent: (e) => events.push(e) });
    await second.migrate();
    expect(events).to.deep.equal([{ type: "tail-truncated", file: logPath, validBytes: size, truncatedBytes: 10 }]);
    expect(await observe(second)).to.deep.equal(before);
    await second.close();

    writeFileSync(logPath, "not a log");
    expect(await codeOf(createFileDeliveryServiceStore({ dir }).migrate())).to.equal("DS_UNREADABLE");
  });

  it("loses nothing it reported stored when SIGKILLed mid-burst, and never hands a seq out twice", async function () {
    this.timeout(120_000);
    const setup = createFileDeliveryServiceStore({ dir: path.join(dir, "ds") });
    await setup.migrate();
    await setup.createGroup({ groupId: GROUP, members: [alice, bob], now: NOW });
    await setup.close();

    // A real child process appends in bursts of 50 concurrent messages and prints "messageId seq" for
    // each append only after it resolved.
    const writer = path.join(dir, "writer.ts");
    writeFileSync(
      writer,
      `import { createFileDeliveryServiceStore } from ${JSON.stringify(path.join(ROOT, "relay/storage/ds-file"))};
       const ds = createFileDeliveryServiceStore({ dir: process.argv[2], compactMinBytes: 64 * 1024 });
       const group = new Uint8Array(32).fill(7);
       (async () => {
         await ds.migrate();
         for (let round = 0; ; round++) {
           await Promise.all(Array.from({ length: 50 }, async (_, i) => {
             const messageId = "r" + round + "-" + i;
             const r = await ds.appendApplication({ groupId: group, epoch: 0, sender: { username: "alice", deviceId: "d1" }, messageId, bytes: new Uint8Array(300).fill(i), receivedAt: ${NOW} });
             if (!r.accepted) throw new Error("refused");
             process.stdout.write(messageId + " " + r.seq + "\\n");
           }));
         }
       })().catch((e) => { console.error(e); process.exit(2); });`,
    );
    const child = spawn(process.execPath, ["--import", "tsx", writer, path.join(dir, "ds")], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const reported = new Map<string, number>();
    let buffered = "";
    await new Promise<void>((resolve, reject) => {
      child.on("exit", () => reject(new Error(`writer exited before the kill: ${stderr}`)));
      child.stdout.on("data", (chunk: Buffer) => {
        buffered += chunk.toString("utf8");
        const lines = buffered.split("\n");
        buffered = lines.pop()!;
        for (const line of lines) {
          const [id, seq] = line.split(" ");
          reported.set(id, Number(seq));
        }
        if (reported.size >= 1_500) {
          child.kill("SIGKILL");
          resolve();
        }
      });
    });
    await new Promise((resolve) => child.on("exit", resolve));

    const ds = createFileDeliveryServiceStore({ dir: path.join(dir, "ds") });
    await ds.migrate();
    const group = await ds.group(GROUP);
    const log = [];
    for (let after = 0; ; ) {
      const page = await ds.read({ groupId: GROUP, afterSeq: after, limit: 1000 });
      if (page.length === 0) break;
      log.push(...page);
      after = page[page.length - 1].seq;
    }
    expect(log.map((e) => e.seq)).to.deep.equal(Array.from({ length: group!.lastSeq }, (_, i) => i + 1));
    const stored = new Map(log.map((e) => [e.messageId, e.seq]));
    expect(stored.size).to.equal(log.length); // nothing twice
    for (const [id, seq] of reported) expect(stored.get(id), id).to.equal(seq);
    expect(log.length).to.be.at.least(reported.size);
    // alice alone sent, caught up throughout: each stored append moved her cursor with it, replay included
    expect(await ds.members(GROUP)).to.deep.include({ ...alice, cursor: group!.lastSeq });
    // the store takes new messages after the crash, after the last seq
    expect(await ds.appendApplication({ groupId: GROUP, epoch: 0, sender: bob, messageId: "after-crash", bytes: bytes("x"), receivedAt: NOW })).to.deep.include({ seq: group!.lastSeq + 1 });
    await ds.close();
    console.log(`      ds-file crash: ${reported.size} reported, ${log.length} on disk after SIGKILL`);
  });
});

async function codeOf(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  return (error as { code?: string })?.code ?? "no error";
}

async function lockCode(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).to.be.instanceOf(MailboxError);
  return (error as MailboxError).code;
}

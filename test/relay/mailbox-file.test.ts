import { expect } from "chai";
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { MailboxError, type Mailbox, type MailboxMessage } from "../../relay/storage/mailbox";
import { createFileMailbox, type FileMailboxEvent, type FileMailboxOptions } from "../../relay/storage/mailbox-file";

const msg = (n: number, over: Partial<MailboxMessage> = {}): MailboxMessage => ({
  recipient: "bob",
  sender: "alice",
  id: `msg-${String(n).padStart(6, "0")}`,
  envelope: `envelope ${n} ✓ 𝄞 ${"y".repeat(n * 13)}`,
  receivedAt: 1_000 + n,
  expiresAt: 10_000,
  ...over,
});

async function rejection(promise: Promise<unknown>): Promise<MailboxError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected a rejection").to.be.instanceOf(MailboxError);
  return error as MailboxError;
}

describe("mailbox in a directory: durability and recovery", function () {
  let root: string;
  let dir: string;
  let count = 0;
  const open: Mailbox[] = [];
  let events: FileMailboxEvent[];

  const openMailbox = async (options: Partial<FileMailboxOptions> = {}) => {
    const mailbox = createFileMailbox({ dir, onEvent: (e) => events.push(e), ...options });
    open.push(mailbox);
    await mailbox.migrate();
    return mailbox;
  };
  const ids = async (mailbox: Mailbox, recipient = "bob") =>
    (await mailbox.pending({ recipient, now: 5_000, limit: 10_000 })).map((m) => m.id);
  const logPath = () => path.join(dir, "mailbox.log");

  before(() => {
    root = mkdtempSync(path.join(os.tmpdir(), "chat-mailbox-file-"));
  });
  beforeEach(() => {
    dir = path.join(root, `m${++count}`);
    events = [];
  });
  afterEach(async () => {
    for (const mailbox of open.splice(0)) await mailbox.close();
  });
  after(() => {
    rmSync(root, { recursive: true, force: true });
  });

  it("keeps messages, acknowledgements and purges across a restart, and seq keeps growing", async () => {
    const first = await openMailbox();
    for (let n = 1; n <= 5; n++) await first.put(msg(n));
    await first.put(msg(6, { expiresAt: 2_000 }));
    await first.ack({ recipient: "bob", sender: "alice", id: "msg-000002" });
    expect(await first.purgeExpired(2_000)).to.equal(1);
    const last = await first.put(msg(7));
    await first.close();

    const second = await openMailbox();
    expect(await ids(second)).to.deep.equal(["msg-000001", "msg-000003", "msg-000004", "msg-000005", "msg-000007"]);
    expect((await second.pending({ recipient: "bob", now: 5_000, limit: 1 }))[0]).to.deep.include(msg(1));
    expect((await second.put(msg(2))).outcome).to.equal("acked");
    expect((await second.put(msg(3))).outcome).to.equal("pending");
    expect(await second.depth()).to.equal(5);
    const fresh = await second.put(msg(8));
    expect(fresh.outcome).to.equal("new");
    expect(BigInt(fresh.seq) > BigInt(last.seq)).to.equal(true);
    expect(events).to.deep.equal([]);
  });

  it("cuts a torn tail (a crash mid-append) and keeps every earlier record", async () => {
    const first = await openMailbox();
    for (let n = 1; n <= 10; n++) await first.put(msg(n));
    const before = statSync(logPath()).size;
    await first.put(msg(11));
    await first.close();
    const after = statSync(logPath()).size;
    truncateSync(logPath(), after - 5); // the last record loses its end

    const second = await openMailbox();
    expect(events).to.deep.equal([{ type: "tail-truncated", file: logPath(), validBytes: before, truncatedBytes: after - 5 - before }]);
    expect(statSync(logPath()).size).to.equal(before);
    expect(await ids(second)).to.deep.equal(Array.from({ length: 10 }, (_, i) => msg(i + 1).id));
    expect((await second.put(msg(11))).outcome).to.equal("new"); // the file is usable: appends after the cut
    await second.close();
    const third = await openMailbox();
    expect(await ids(third)).to.have.length(11);
  });

  it("cuts a damaged record (checksum) and a zero-filled tail", async () => {
    const first = await openMailbox();
    for (let n = 1; n <= 4; n++) await first.put(msg(n));
    const before = statSync(logPath()).size;
    await first.put(msg(5));
    await first.close();
    const bytes = readFileSync(logPath());
    bytes[bytes.length - 3] ^= 0x40; // one flipped bit inside the last envelope
    writeFileSync(logPath(), bytes);
    appendFileSync(logPath(), Buffer.alloc(4096)); // file systems may leave zeroes after a crash

    const second = await openMailbox();
    expect(events.map((e) => e.type)).to.deep.equal(["tail-truncated"]);
    expect(statSync(logPath()).size).to.equal(before);
    expect(await ids(second)).to.deep.equal(["msg-000001", "msg-000002", "msg-000003", "msg-000004"]);
  });

  it("refuses a file that is not a mailbox log, without touching it", async () => {
    const first = await openMailbox();
    await first.close();
    writeFileSync(logPath(), "name,value\nnot,a mailbox\n");
    const error = await rejection(openMailbox());
    expect(error.code).to.equal("MAILBOX_UNREADABLE");
    expect(readFileSync(logPath(), "utf8")).to.equal("name,value\nnot,a mailbox\n");
    expect(existsSync(path.join(dir, "LOCK"))).to.equal(false); // the failed open let go of the directory
  });

  it("one mailbox per directory: a second opener fails until the first closes", async () => {
    const first = await openMailbox();
    await first.put(msg(1));
    const error = await rejection(openMailbox());
    expect(error.code).to.equal("MAILBOX_LOCKED");
    await first.close();
    const second = await openMailbox();
    expect(await ids(second)).to.deep.equal(["msg-000001"]);
  });

  it("takes over a lock whose process is gone", async () => {
    const first = await openMailbox();
    await first.close();
    writeFileSync(path.join(dir, "LOCK"), "2147483646\n"); // no such process
    const second = await openMailbox();
    expect(await ids(second)).to.deep.equal([]);
    expect(readFileSync(path.join(dir, "LOCK"), "utf8").trim()).to.equal(String(process.pid));
  });

  it("is unusable before migrate() and after close()", async () => {
    const mailbox = createFileMailbox({ dir });
    expect((await rejection(mailbox.put(msg(1)))).code).to.equal("MAILBOX_CLOSED");
    expect((await rejection(mailbox.ping())).code).to.equal("MAILBOX_CLOSED");
    await mailbox.migrate();
    await mailbox.ping();
    await mailbox.close();
    await mailbox.close(); // idempotent
    expect((await rejection(mailbox.pending({ recipient: "bob", now: 1, limit: 1 }))).code).to.equal("MAILBOX_CLOSED");
  });

  it("refuses a message that would not read back as written", async () => {
    const mailbox = await openMailbox();
    expect((await rejection(mailbox.put(msg(1, { expiresAt: Number.POSITIVE_INFINITY })))).code).to.equal("MAILBOX_BAD_REQUEST");
    expect((await rejection(mailbox.put(msg(1, { envelope: undefined as unknown as string })))).code).to.equal("MAILBOX_BAD_REQUEST");
    expect(await mailbox.depth()).to.equal(0);
  });

  it("compacts when acknowledged garbage dominates, and the compacted log replays to the same state", async () => {
    const mailbox = await openMailbox({ compactMinBytes: 4 * 1024 });
    for (let n = 1; n <= 200; n++) await mailbox.put(msg(n));
    const grown = statSync(logPath()).size;
    for (let n = 1; n <= 200; n++) if (n % 20 !== 0) await mailbox.ack({ recipient: "bob", sender: "alice", id: msg(n).id });
    await mailbox.put(msg(201)); // queued behind any compaction the acks started
    expect(events.some((e) => e.type === "compacted")).to.equal(true);
    const compacted = statSync(logPath()).size;
    expect(compacted).to.be.lessThan(grown / 4);
    const before = { pending: await ids(mailbox), depth: await mailbox.depth() };
    await mailbox.close();

    const reopened = await openMailbox();
    expect(await ids(reopened)).to.deep.equal(before.pending);
    expect(await reopened.depth()).to.equal(before.depth).and.to.equal(11);
    expect((await reopened.put(msg(1))).outcome).to.equal("acked"); // tombstones survive compaction
    const fresh = await reopened.put(msg(300));
    expect(Number(fresh.seq)).to.equal(202); // seq never goes back
  });

  it("seq survives a compaction that leaves nothing alive", async () => {
    const mailbox = await openMailbox({ compactMinBytes: 512 });
    for (let n = 1; n <= 20; n++) await mailbox.put(msg(n, { expiresAt: 2_000 }));
    expect(await mailbox.purgeExpired(2_000)).to.equal(20);
    await mailbox.close(); // waits for the compaction the purge queued
    expect(events.some((e) => e.type === "compacted")).to.equal(true);
    const reopened = await openMailbox();
    expect((await reopened.put(msg(21))).seq).to.equal("21");
  });
});

import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Pool } from "mysql2/promise";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { MAX_PENDING_IDS, MailboxError, type Mailbox, type MailboxMessage, type MailboxQuota } from "../../relay/storage/mailbox";
import { createFileMailbox } from "../../relay/storage/mailbox-file";
import { createMemoryMailbox } from "../../relay/storage/mailbox-memory";
import { createMysqlMailbox } from "../../relay/storage/mailbox-mysql";
import { createMysqlPool } from "../../relay/storage/mysql-pool";
import { createTestPool } from "./messaging-helpers";

const msg = (n: number, over: Partial<MailboxMessage> = {}): MailboxMessage => ({
  recipient: "bob",
  sender: "alice",
  id: `msg-${String(n).padStart(6, "0")}`,
  envelope: `envelope ${n} ✓ 𝄞`,
  receivedAt: 1_000 + n,
  expiresAt: 10_000,
  ...over,
});

/** The same contract for every mailbox: the relay's correctness rests on it, whichever store it runs on. */
function mailboxContract(name: string, make: (quota?: MailboxQuota) => Promise<Mailbox>) {
  describe(`mailbox contract: ${name}`, function () {
    let mailbox: Mailbox;

    beforeEach(async () => {
      mailbox = await make();
    });
    afterEach(async () => {
      await mailbox.close();
    });

    it("keeps order, pages by seq, and skips other recipients", async () => {
      const results = await Promise.all([1, 2, 3, 4, 5].map((n) => mailbox.put(msg(n))));
      expect(results.map((r) => r.outcome)).to.deep.equal(["new", "new", "new", "new", "new"]);
      await mailbox.put(msg(9, { recipient: "carol" }));
      const first = await mailbox.pending({ recipient: "bob", now: 5_000, limit: 3 });
      expect(first.map((m) => m.id)).to.deep.equal(["msg-000001", "msg-000002", "msg-000003"]);
      expect(first[0]).to.deep.include({ envelope: "envelope 1 ✓ 𝄞", sender: "alice", receivedAt: 1_001, expiresAt: 10_000 });
      const rest = await mailbox.pending({ recipient: "bob", now: 5_000, limit: 3, afterSeq: first[2].seq });
      expect(rest.map((m) => m.id)).to.deep.equal(["msg-000004", "msg-000005"]);
      expect(await mailbox.pending({ recipient: "bob", now: 5_000, limit: 3, afterSeq: rest[1].seq })).to.deep.equal([]);
      expect(await mailbox.depth()).to.equal(6);
    });

    it("is idempotent on (recipient, sender, id) and remembers acknowledged messages", async () => {
      const first = await mailbox.put(msg(1));
      const again = await mailbox.put(msg(1, { envelope: "other", receivedAt: 2_000 }));
      expect(again).to.deep.equal({ outcome: "pending", seq: first.seq, receivedAt: first.receivedAt });
      // same id from another sender is another message
      expect((await mailbox.put(msg(1, { sender: "carol" }))).outcome).to.equal("new");
      await mailbox.ack({ recipient: "bob", sender: "alice", id: "msg-000001" });
      await mailbox.ack({ recipient: "bob", sender: "alice", id: "msg-000001" }); // twice: harmless
      await mailbox.ack({ recipient: "bob", sender: "nobody", id: "msg-000001" }); // unknown: ignored
      expect((await mailbox.put(msg(1))).outcome).to.equal("acked");
      const left = await mailbox.pending({ recipient: "bob", now: 5_000, limit: 10 });
      expect(left.map((m) => m.sender)).to.deep.equal(["carol"]);
      expect(await mailbox.depth()).to.equal(1);
    });

    it("a duplicate inside one batch is stored once", async () => {
      const [a, b] = await Promise.all([mailbox.put(msg(7)), mailbox.put(msg(7))]);
      expect([a.outcome, b.outcome].sort()).to.deep.equal(["new", "pending"]);
      expect(a.seq).to.equal(b.seq);
      expect(await mailbox.depth()).to.equal(1);
    });

    it("never lists expired messages and purges them with their tombstones", async () => {
      await mailbox.put(msg(1, { expiresAt: 2_000 }));
      await mailbox.put(msg(2, { expiresAt: 3_000 }));
      await mailbox.ack({ recipient: "bob", sender: "alice", id: "msg-000002" });
      await mailbox.put(msg(3, { expiresAt: 9_000 }));
      expect((await mailbox.pending({ recipient: "bob", now: 2_500, limit: 10 })).map((m) => m.id)).to.deep.equal(["msg-000003"]);
      expect(await mailbox.purgeExpired(3_000)).to.equal(2);
      expect(await mailbox.purgeExpired(3_000)).to.equal(0);
      expect((await mailbox.put(msg(2, { expiresAt: 9_000 }))).outcome).to.equal("new"); // tombstone gone
    });

    it("answers which of a sender's ids are pending, delivered or unknown", async () => {
      await mailbox.put(msg(1));
      await mailbox.put(msg(2));
      await mailbox.put(msg(3, { expiresAt: 4_000 }));
      await mailbox.put(msg(4, { sender: "carol" }));
      await mailbox.ack({ recipient: "bob", sender: "alice", id: "msg-000002" });
      const asked = ["msg-000004", "msg-000002", "msg-000001", "msg-000003", "never-sent", "msg-000001"];
      expect(await mailbox.pendingIds({ recipient: "bob", sender: "alice", ids: asked, now: 5_000 })).to.deep.equal({
        pending: ["msg-000001"],
        delivered: ["msg-000002"],
        // msg-000004 was sent by carol; msg-000003 has expired (not yet purged); each id once, in asked order
        unknown: ["msg-000004", "msg-000003", "never-sent"],
      });
      expect(await mailbox.pendingIds({ recipient: "carol", sender: "alice", ids: ["msg-000001"], now: 5_000 })).to.deep.equal({
        pending: [],
        delivered: [],
        unknown: ["msg-000001"],
      });
      expect(await mailbox.pendingIds({ recipient: "bob", sender: "alice", ids: [], now: 5_000 })).to.deep.equal({ pending: [], delivered: [], unknown: [] });
      const tooMany = Array.from({ length: MAX_PENDING_IDS + 1 }, (_, i) => `id-${i}`);
      const error = await mailbox.pendingIds({ recipient: "bob", sender: "alice", ids: tooMany, now: 5_000 }).catch((e: unknown) => e);
      expect(error).to.be.instanceOf(MailboxError);
      expect((error as MailboxError).code).to.equal("MAILBOX_BAD_REQUEST");
      const most = Array.from({ length: MAX_PENDING_IDS }, (_, i) => `msg-${String(i).padStart(6, "0")}`);
      const answer = await mailbox.pendingIds({ recipient: "bob", sender: "alice", ids: most, now: 5_000 });
      expect(answer.pending).to.deep.equal(["msg-000001"]);
      expect(answer.unknown).to.have.length(MAX_PENDING_IDS - 2);
    });

    describe("quota per recipient", function () {
      let small: Mailbox;
      afterEach(async () => {
        await small?.close();
      });

      it("refuses a new message beyond the message quota with MAILBOX_FULL, stores nothing, and takes re-sends", async () => {
        await mailbox.close();
        mailbox = small = await make({ maxMessages: 3, maxBytes: 1_000_000, retryAfterSeconds: 7 });
        for (const n of [1, 2, 3]) expect((await small.put(msg(n))).outcome).to.equal("new");
        const refused = await small.put(msg(4)).catch((e: unknown) => e);
        expect(refused).to.be.instanceOf(MailboxError);
        expect(refused).to.include({ code: "MAILBOX_FULL", retryAfterSeconds: 7 });
        expect((await small.pendingIds({ recipient: "bob", sender: "alice", ids: ["msg-000004"], now: 5_000 })).unknown).to.deep.equal(["msg-000004"]);
        // a re-send of a stored message takes no new room; another recipient has a quota of its own
        expect((await small.put(msg(2))).outcome).to.equal("pending");
        expect((await small.put(msg(4, { recipient: "carol" }))).outcome).to.equal("new");
        expect(await small.depth()).to.equal(4);
        // an acknowledgement makes room for exactly one
        await small.ack({ recipient: "bob", sender: "alice", id: "msg-000001" });
        expect((await small.put(msg(1))).outcome).to.equal("acked");
        expect((await small.put(msg(4))).outcome).to.equal("new");
        expect((await small.put(msg(5)).catch((e: MailboxError) => e.code))).to.equal("MAILBOX_FULL");
        // so does the purge of expired messages
        await small.put(msg(6, { recipient: "dave", expiresAt: 2_000 }));
        await small.put(msg(7, { recipient: "dave", expiresAt: 2_000 }));
        await small.put(msg(8, { recipient: "dave", expiresAt: 9_000 }));
        expect((await small.put(msg(9, { recipient: "dave" })).catch((e: MailboxError) => e.code))).to.equal("MAILBOX_FULL");
        await small.purgeExpired(3_000);
        expect((await small.put(msg(9, { recipient: "dave" }))).outcome).to.equal("new");
        expect((await small.pending({ recipient: "bob", now: 5_000, limit: 10 })).map((m) => m.id)).to.deep.equal(["msg-000002", "msg-000003", "msg-000004"]);
      });

      it("counts envelope bytes as UTF-8", async () => {
        await mailbox.close();
        mailbox = small = await make({ maxMessages: 100, maxBytes: 10, retryAfterSeconds: 60 });
        expect((await small.put(msg(1, { envelope: "✓✓" }))).outcome).to.equal("new"); // 6 bytes, 2 characters
        expect((await small.put(msg(2, { envelope: "abcde" })).catch((e: MailboxError) => e.code))).to.equal("MAILBOX_FULL");
        expect((await small.put(msg(3, { envelope: "abcd" }))).outcome).to.equal("new"); // exactly 10
        expect((await small.put(msg(4, { envelope: "a" })).catch((e: MailboxError) => e.code))).to.equal("MAILBOX_FULL");
        await small.ack({ recipient: "bob", sender: "alice", id: "msg-000001" });
        expect((await small.put(msg(4, { envelope: "abcdef" }))).outcome).to.equal("new");
      });

      it("concurrent puts (one batch) to a recipient with room for 2 store exactly 2", async () => {
        await mailbox.close();
        mailbox = small = await make({ maxMessages: 2, maxBytes: 1_000_000, retryAfterSeconds: 60 });
        const settled = await Promise.allSettled([1, 2, 3, 4, 5, 6].map((n) => small.put(msg(n))));
        const stored = settled.filter((r) => r.status === "fulfilled" && r.value.outcome === "new");
        const full = settled.filter((r) => r.status === "rejected" && (r.reason as MailboxError).code === "MAILBOX_FULL");
        expect([stored.length, full.length]).to.deep.equal([2, 4]);
        expect(await small.depth()).to.equal(2);
      });
    });

    it("group-commits a burst: 1,000 concurrent puts, all stored once, in push order; close waits for writes", async () => {
      const n = 1_000;
      const id = (i: number) => `burst-${String(i).padStart(5, "0")}`;
      const started = performance.now();
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) => mailbox.put({ recipient: "bob", sender: "alice", id: id(i), envelope: "x".repeat(500), receivedAt: 1, expiresAt: 2 ** 50 })),
      );
      const ms = performance.now() - started;
      expect(results.every((r) => r.outcome === "new")).to.equal(true);
      const seqs = results.map((r) => BigInt(r.seq));
      expect(seqs.every((s, i) => i === 0 || s > seqs[i - 1])).to.equal(true);
      const listed = await mailbox.pending({ recipient: "bob", now: 2, limit: 2_000 });
      expect(listed.map((m) => m.id)).to.deep.equal(results.map((_, i) => id(i)));
      console.log(`      mailbox-${name}: ${n} puts in ${ms.toFixed(0)} ms (${((n / ms) * 1000).toFixed(0)} msg/s)`);

      const late = mailbox.put(msg(1));
      await mailbox.close();
      expect((await late).outcome).to.equal("new");
    });
  });
}

mailboxContract("memory", async (quota) => createMemoryMailbox({ quota }));

describe("mailbox on MySQL", function () {
  let db: TestDatabase;
  let pool: Pool;
  before(async () => {
    db = await createTestDatabase("chat_mailbox");
    pool = createTestPool(db.url);
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  mailboxContract("mysql", async (quota) => {
    await pool.query("DROP TABLE IF EXISTS mailbox");
    const mailbox = createMysqlMailbox(pool, { quota });
    await mailbox.migrate();
    await mailbox.migrate(); // idempotent
    return mailbox;
  });

  it("20 relay processes' concurrent puts to a recipient at quota - 1 store exactly 1", async () => {
    await pool.query("DROP TABLE IF EXISTS mailbox");
    const quota = { maxMessages: 10, maxBytes: 1_000_000, retryAfterSeconds: 60 };
    const first = createMysqlMailbox(pool, { quota });
    await first.migrate();
    for (let n = 1; n < quota.maxMessages; n++) await first.put(msg(n));
    // One mailbox (own batcher, own connection) per simulated relay process, all sharing the table.
    const wide = createMysqlPool(db.url, { connectionLimit: 20 });
    const mailboxes = Array.from({ length: 20 }, () => createMysqlMailbox(wide, { quota }));
    try {
      const settled = await Promise.allSettled(mailboxes.map((m, i) => m.put(msg(100 + i))));
      const stored = settled.filter((r) => r.status === "fulfilled" && r.value.outcome === "new");
      const full = settled.filter((r) => r.status === "rejected" && (r.reason as MailboxError).code === "MAILBOX_FULL");
      expect([stored.length, full.length]).to.deep.equal([1, 19]);
      const [rows] = await pool.query<any[]>("SELECT COUNT(*) AS n FROM mailbox WHERE recipient = 'bob' AND state = 0");
      expect(Number(rows[0].n)).to.equal(quota.maxMessages);
    } finally {
      await Promise.all(mailboxes.map((m) => m.close()));
      await first.close();
      await wide.end();
    }
  });
});

describe("mailbox in a directory", function () {
  let root: string;
  let count = 0;
  before(() => {
    root = mkdtempSync(path.join(os.tmpdir(), "chat-mailbox-conformance-"));
  });
  after(() => {
    rmSync(root, { recursive: true, force: true });
  });

  mailboxContract("file", async (quota) => {
    const mailbox = createFileMailbox({ dir: path.join(root, `m${++count}`), quota });
    await mailbox.migrate();
    await mailbox.migrate(); // idempotent
    return mailbox;
  });

  it("counts the quota again from the log after a restart", async () => {
    const dir = path.join(root, "quota-restart");
    const quota = { maxMessages: 3, maxBytes: 1_000_000, retryAfterSeconds: 60 };
    const before = createFileMailbox({ dir, quota });
    await before.migrate();
    for (const n of [1, 2, 3]) await before.put(msg(n));
    await before.ack({ recipient: "bob", sender: "alice", id: "msg-000002" });
    await before.close();
    const after = createFileMailbox({ dir, quota });
    await after.migrate();
    try {
      expect((await after.put(msg(4))).outcome).to.equal("new");
      expect((await after.put(msg(5)).catch((e: MailboxError) => e.code))).to.equal("MAILBOX_FULL");
      expect(await after.depth()).to.equal(3);
    } finally {
      await after.close();
    }
  });
});

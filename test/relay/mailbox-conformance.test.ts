import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Pool } from "mysql2/promise";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { MAX_PENDING_IDS, MailboxError, type Mailbox, type MailboxMessage } from "../../relay/storage/mailbox";
import { createFileMailbox } from "../../relay/storage/mailbox-file";
import { createMemoryMailbox } from "../../relay/storage/mailbox-memory";
import { createMysqlMailbox } from "../../relay/storage/mailbox-mysql";
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
function mailboxContract(name: string, make: () => Promise<Mailbox>) {
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

mailboxContract("memory", async () => createMemoryMailbox());

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

  mailboxContract("mysql", async () => {
    await pool.query("DROP TABLE IF EXISTS mailbox");
    const mailbox = createMysqlMailbox(pool);
    await mailbox.migrate();
    await mailbox.migrate(); // idempotent
    return mailbox;
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

  mailboxContract("file", async () => {
    const mailbox = createFileMailbox({ dir: path.join(root, `m${++count}`) });
    await mailbox.migrate();
    await mailbox.migrate(); // idempotent
    return mailbox;
  });
});

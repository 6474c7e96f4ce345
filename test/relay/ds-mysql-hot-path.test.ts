/**
 * The MySQL Delivery Service store's hot path under concurrency, against a real MariaDB: cursor moves that
 * arrive together are written as one batch, each judged on its own (a refused move never fails the others,
 * a late one never moves a cursor back), and concurrent application appends from two instances get dense,
 * distinct seqs. The store contract itself is in ds-conformance.test.ts.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import type { Pool } from "mysql2/promise";
import { BATCHED_APPEND_MAX_BYTES, createMysqlDeliveryServiceStore } from "../../relay/storage/ds-mysql";
import type { AppendResult, DeliveryServiceStore, DeviceRef } from "../../relay/storage/ds-types";
import { createMysqlPool } from "../../relay/storage/mysql-pool";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { createTestPool } from "./messaging-helpers";

const device = (i: number): DeviceRef => ({ username: `member${i}`, deviceId: "d1" });
const seqOf = (r: AppendResult) => (r.accepted ? r.seq : -1);

// Batches of appends go to one of two procedures by their shape: each is run alone here, and by its rule.
for (const setBasedBatches of ["auto", "never", "always"] as const) describe(`delivery service on MySQL: the hot path under concurrency (set-based batches: ${setBasedBatches})`, function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let pools: Pool[] = [];
  let one: DeliveryServiceStore;
  let two: DeliveryServiceStore;

  before(async () => {
    db = await createTestDatabase("chat_ds_hot");
    pools = [createTestPool(db.url), createTestPool(db.url)];
    one = createMysqlDeliveryServiceStore(pools[0], undefined, { setBasedBatches });
    two = createMysqlDeliveryServiceStore(pools[1], undefined, { setBasedBatches });
    await one.migrate();
    await two.migrate();
  });
  after(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await db?.drop();
  });

  it("moves 40 cursors given at once, each judged on its own, never backwards", async () => {
    const groupId = new Uint8Array(randomBytes(32));
    const members = Array.from({ length: 40 }, (_, i) => device(i));
    // The messages come from a device whose cursor none of the moves below touch: a caught-up sender's
    // own messages move its cursor.
    const sender = device(40);
    await one.createGroup({ groupId, members: [...members, sender], now: 1 });
    for (let i = 0; i < 5; i++) {
      const r = await one.appendApplication({ groupId, epoch: 0, sender, messageId: `m${i}`, bytes: new Uint8Array([i + 1]), receivedAt: 2 });
      expect(r).to.deep.equal({ accepted: true, seq: i + 1, epoch: 0, duplicate: false, senderCursor: i + 1 });
    }
    const moves = members.map((d, i) => one.advanceCursor({ device: d, groupId, seq: 1 + (i % 5) }));
    // In the same batch: a later move of member 0 and an earlier one of member 4, a move beyond the end,
    // one by a non-member, one in a group that does not exist.
    const later = one.advanceCursor({ device: members[0], groupId, seq: 4 });
    const earlier = one.advanceCursor({ device: members[4], groupId, seq: 2 });
    const refused = [
      one.advanceCursor({ device: members[1], groupId, seq: 6 }),
      one.advanceCursor({ device: device(99), groupId, seq: 1 }),
      one.advanceCursor({ device: members[2], groupId: new Uint8Array(randomBytes(32)), seq: 1 }),
    ].map((p) => p.then(() => "moved", (error) => error.code));
    // Concurrent moves of one device may answer the further one's cursor (they were written together).
    const answers = await Promise.all(moves);
    expect(answers.slice(1)).to.deep.equal(members.slice(1).map((_, i) => 1 + ((i + 1) % 5)));
    expect(answers[0]).to.be.oneOf([1, 4]);
    expect(await later).to.equal(4);
    expect(await earlier).to.be.oneOf([2, 5]);
    expect(await Promise.all(refused)).to.deep.equal(["DS_BAD_REQUEST", "DS_NOT_MEMBER", "DS_UNKNOWN_GROUP"]);

    const cursors = new Map((await two.members(groupId)).map((m) => [m.username, m.cursor]));
    members.forEach((d, i) => expect(cursors.get(d.username), d.username).to.equal(i === 0 ? 4 : 1 + (i % 5)));
    expect(cursors.get(sender.username)).to.equal(5);
    // A late acknowledgement alone does not move a cursor back either.
    expect(await two.advanceCursor({ device: members[3], groupId, seq: 1 })).to.equal(4);
  });

  it("gives 60 concurrent appends from two instances the seqs 1..60, each stored once, and tells the member users", async () => {
    const groupId = new Uint8Array(randomBytes(32));
    const members = [device(0), device(1), { username: "member1", deviceId: "d2" }];
    await one.createGroup({ groupId, members, now: 1 });
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        (i % 2 ? two : one).appendApplication({
          groupId,
          epoch: 0,
          sender: members[i % 3],
          messageId: `m${i}`,
          bytes: new Uint8Array([i]),
          receivedAt: 2,
          withMemberUsernames: true,
        }),
      ),
    );
    const seqs = results.map((r) => (r.accepted ? r.seq : -1)).sort((a, b) => a - b);
    expect(seqs).to.deep.equal(Array.from({ length: 60 }, (_, i) => i + 1));
    for (const r of results) expect(r.accepted && [...(r.memberUsernames ?? [])].sort()).to.deep.equal(["member0", "member1"]);
    // The appends took the group's lock in seq order, each reading its sender's cursor there: replayed in
    // that order, a device's cursor moves exactly at the appends that found it right before their seq.
    const key = (d: DeviceRef) => `${d.username}/${d.deviceId}`;
    const cursor = new Map(members.map((d) => [key(d), 0]));
    const expected = new Map<number, number>();
    for (const i of results.map((_, i) => i).sort((a, b) => seqOf(results[a]) - seqOf(results[b]))) {
      const sender = key(members[i % 3]);
      if (cursor.get(sender) === seqOf(results[i]) - 1) cursor.set(sender, seqOf(results[i]));
      expected.set(i, cursor.get(sender)!);
    }
    results.forEach((r, i) => expect(r.accepted && r.senderCursor, `m${i}`).to.equal(expected.get(i)));
    expect(new Map((await two.members(groupId)).map((m) => [key(m), m.cursor]))).to.deep.equal(cursor);
    // A retry is the same entry, not a new one; it reports the sender's cursor as it is now.
    const retry = await two.appendApplication({ groupId, epoch: 0, sender: members[0], messageId: "m0", bytes: new Uint8Array([0]), receivedAt: 3 });
    expect(retry).to.deep.equal({ accepted: true, seq: seqOf(results[0]), epoch: 0, duplicate: true, senderCursor: cursor.get(key(members[0])) });
    const page = await one.readAsMember({ device: members[2], groupId, afterSeq: 0, limit: 1000 });
    expect(page).to.include({ epoch: 0, lastSeq: 60 });
    expect(page.entries.map((e) => e.seq)).to.deep.equal(seqs);
    const refused = await one.readAsMember({ device: device(7), groupId, afterSeq: 0, limit: 10 }).then(() => "read", (error) => error.code);
    expect(refused).to.equal("DS_NOT_MEMBER");
  });

  it("gives every append of one batch across 20 groups its own verdict: seqs per group in call order, a repeated id, an unknown group, a stranger, a stale epoch", async () => {
    const groups = Array.from({ length: 20 }, () => new Uint8Array(randomBytes(32)));
    for (const groupId of groups) await one.createGroup({ groupId, members: [device(0), device(1)], now: 1 });
    const append = (groupId: Uint8Array, sender: DeviceRef, messageId: string, epoch = 0) =>
      one.appendApplication({ groupId, epoch, sender, messageId, bytes: new Uint8Array(Buffer.from(messageId)), receivedAt: 2 }).then(
        (r) => r,
        (error) => error.code as string,
      );
    const before = one.appendBatchStats!();
    // Pushed in one turn: one batch of 44, two appends per group (two rounds) and four odd ones.
    const pending = [
      ...groups.flatMap((g, i) => [append(g, device(0), `a${i}`), append(g, device(1), `b${i}`)]),
      append(groups[0], device(0), "a0"),
      append(new Uint8Array(randomBytes(32)), device(0), "nowhere"),
      append(groups[1], device(7), "stranger"),
      append(groups[2], device(0), "stale", 5),
    ];
    const results = await Promise.all(pending);
    const after = one.appendBatchStats!();
    expect([after.items - before.items, after.flushes - before.flushes]).to.deep.equal([44, 1]);
    groups.forEach((_, i) => {
      // The first sender was caught up (cursor 0 at seq 0): its cursor moves past its message; the second's stays.
      expect(results[2 * i], `a${i}`).to.deep.equal({ accepted: true, seq: 1, epoch: 0, duplicate: false, senderCursor: 1 });
      expect(results[2 * i + 1], `b${i}`).to.deep.equal({ accepted: true, seq: 2, epoch: 0, duplicate: false, senderCursor: 0 });
    });
    expect(results.slice(40)).to.deep.equal([
      { accepted: true, seq: 1, epoch: 0, duplicate: true, senderCursor: 1 },
      "DS_UNKNOWN_GROUP",
      "DS_NOT_MEMBER",
      { accepted: false, currentEpoch: 0 },
    ]);
    for (const [i, groupId] of groups.entries()) {
      const page = await two.readAsMember({ device: device(1), groupId, afterSeq: 0, limit: 10 });
      expect(page.entries.map((e) => [e.seq, e.messageId, Buffer.from(e.bytes).toString()])).to.deep.equal([
        [1, `a${i}`, `a${i}`],
        [2, `b${i}`, `b${i}`],
      ]);
    }
  });

  it("stores messages up to the batch bound byte for byte in batches, larger ones alone, all in call order", async () => {
    const groupId = new Uint8Array(randomBytes(32));
    const members = [device(0), device(1)];
    await one.createGroup({ groupId, members, now: 1 });
    // Around the bound (each base64 padding), and beyond it, interleaved so that batches hold both kinds.
    const max = BATCHED_APPEND_MAX_BYTES;
    const sizes = [1, max - 2, max + 1, max - 1, max, 4 * max, max, 3, max + 2];
    const sent = sizes.map((n) => new Uint8Array(randomBytes(n)));
    const results = await Promise.all(
      sent.map((bytes, i) => one.appendApplication({ groupId, epoch: 0, sender: members[i % 2], messageId: `s${i}`, bytes, receivedAt: 2 })),
    );
    expect(results.map(seqOf)).to.deep.equal(sizes.map((_, i) => i + 1));
    const page = await two.readAsMember({ device: members[1], groupId, afterSeq: 0, limit: 100 });
    expect(page.entries.map((e) => e.messageId)).to.deep.equal(sizes.map((_, i) => `s${i}`));
    page.entries.forEach((e, i) => expect(Buffer.from(e.bytes).equals(Buffer.from(sent[i])), `s${i} (${sizes[i]} bytes)`).to.equal(true));
  });

  it("stores 200 appends sent together, more than one INSERT of items holds, each once and in call order per group", async () => {
    const groups = Array.from({ length: 10 }, () => new Uint8Array(randomBytes(32)));
    for (const groupId of groups) await one.createGroup({ groupId, members: [device(0), device(1)], now: 1 });
    const batchesBefore = one.appendBatchStats!();
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        one.appendApplication({ groupId: groups[i % 10], epoch: 0, sender: device(i % 2), messageId: `w${i}`, bytes: new Uint8Array([i % 256, 7]), receivedAt: 2 }),
      ),
    );
    // Group g got appends g, g + 10, g + 20, ...: seqs 1 to 20 in that order.
    expect(results.map(seqOf)).to.deep.equal(Array.from({ length: 200 }, (_, i) => Math.floor(i / 10) + 1));
    const batches = one.appendBatchStats!();
    expect(batches.items - batchesBefore.items).to.equal(200);
    expect(batches.flushes - batchesBefore.flushes, "flushes for 200 appends").to.be.at.most(2);
    for (const [g, groupId] of groups.entries()) {
      const page = await two.readAsMember({ device: device(1), groupId, afterSeq: 0, limit: 100 });
      expect(page.entries.map((e) => e.messageId)).to.deep.equal(Array.from({ length: 20 }, (_, n) => `w${g + 10 * n}`));
      expect(page.entries.map((e) => [...e.bytes])).to.deep.equal(Array.from({ length: 20 }, (_, n) => [(g + 10 * n) % 256, 7]));
    }
  });

  it("stores a batch by its own groups alone: among 3,000 other groups, one held by another transaction, it reads few rows and waits for none but its own", async () => {
    // One connection, so that the session's row counters are the batch's.
    const pool = createMysqlPool(db.url, { connectionLimit: 1 });
    const holder = await pools[1].getConnection();
    try {
      const store = createMysqlDeliveryServiceStore(pool, undefined, { setBasedBatches });
      await store.migrate();
      const others = Array.from({ length: 3000 }, () => [randomBytes(32), 1, 0, 1]);
      await pool.query("INSERT INTO ds_groups (id, epoch, last_seq, created_at) VALUES ?", [others]);
      const groups = Array.from({ length: 6 }, () => new Uint8Array(randomBytes(32)));
      const members = [device(0), device(1)];
      for (const groupId of groups) await store.createGroup({ groupId, members, now: 1 });
      // As a commit in flight on another group holds its row.
      await holder.query("START TRANSACTION");
      await holder.query("SELECT epoch FROM ds_groups WHERE id = ? FOR UPDATE", [others[0][0]]);
      const rowsRead = async () => {
        const [found] = (await pool.query("SHOW SESSION STATUS LIKE 'Handler_read%'")) as unknown as [{ Value: string }[]];
        return found.reduce((sum, r) => sum + Number(r.Value), 0);
      };
      const before = await rowsRead();
      // Pushed in one turn: one batch of 8, two groups with two items each (two rounds: set-based under "auto").
      const appended = Promise.all(
        [0, 1, 2, 3, 4, 5, 0, 1].map((g, i) =>
          store.appendApplication({ groupId: groups[g], epoch: 0, sender: members[i < 6 ? 0 : 1], messageId: `m${i}`, bytes: new Uint8Array([i]), receivedAt: 2 }),
        ),
      );
      const waited = new Promise<"waited">((resolve) => setTimeout(() => resolve("waited"), 5_000).unref());
      const results = await Promise.race([appended, waited]);
      expect(results, "answered while an unrelated group is held").to.not.equal("waited");
      expect((results as AppendResult[]).map(seqOf)).to.deep.equal([1, 1, 1, 1, 1, 1, 2, 2]);
      const read = (await rowsRead()) - before;
      // A few dozen per item; a scan of the groups would read thousands.
      expect(read, "rows the batch read").to.be.below(1_000);
      await holder.query("ROLLBACK");

      // Its own groups it locks before it reads them: another instance's append to one of them, in flight
      // (row locked, entry 3 written, not committed), is waited for, and the batch's entry comes after it.
      await holder.query("START TRANSACTION");
      await holder.query("SELECT last_seq FROM ds_groups WHERE id = ? FOR UPDATE", [Buffer.from(groups[0])]);
      await holder.query(
        "INSERT INTO ds_log (group_id, seq, epoch, kind, sender_username, sender_device, message_id, bytes, received_at) VALUES (?, 3, 0, 1, ?, 'd1', 'elsewhere', x'00', 2)",
        [Buffer.from(groups[0]), members[1].username],
      );
      await holder.query("UPDATE ds_groups SET last_seq = 3 WHERE id = ?", [Buffer.from(groups[0])]);
      let settled = false;
      const later = Promise.all(
        [0, 1, 2, 3].map((g) => store.appendApplication({ groupId: groups[g], epoch: 0, sender: members[0], messageId: `later${g}`, bytes: new Uint8Array([g]), receivedAt: 3 })),
      ).finally(() => (settled = true));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(settled, "answered while one of its groups is held").to.equal(false);
      await holder.query("COMMIT");
      expect((await later).map(seqOf)).to.deep.equal([4, 3, 2, 2]);
    } finally {
      await holder.query("ROLLBACK");
      holder.release();
      await pool.end();
    }
  });

  it("stores only a batch's own items: rows another batch left on its connection are neither stored nor answered, and are cleared", async () => {
    // One connection, so that this test reaches the temporary table the store's batches pass their items in.
    const pool = createMysqlPool(db.url, { connectionLimit: 1 });
    try {
      const store = createMysqlDeliveryServiceStore(pool, undefined, { setBasedBatches });
      await store.migrate();
      const groupId = new Uint8Array(randomBytes(32));
      const members = [device(0), device(1)];
      await store.createGroup({ groupId, members, now: 1 });
      const batch = (prefix: string) =>
        Promise.all([0, 1, 2].map((i) => store.appendApplication({ groupId, epoch: 0, sender: members[i % 2], messageId: `${prefix}${i}`, bytes: new Uint8Array([i + 1]), receivedAt: 2 })));
      expect((await batch("a")).map(seqOf)).to.deep.equal([1, 2, 3]);
      const [[{ used }]] = (await pool.query("SELECT COUNT(*) AS used FROM ds_append_items")) as unknown as [[{ used: number }]];
      expect(Number(used), "a batch empties the table").to.equal(0);
      // As a batch whose CALL never ran would leave them: valid items of a batch number that is not the next one's.
      for (let k = 1; k <= 3; k++) {
        await pool.execute("INSERT INTO ds_append_items (batch, k, g, e, u, d, m, b, r) VALUES (0, ?, ?, 0, ?, 'd1', ?, x'ff', 2)", [k, Buffer.from(groupId), members[0].username, `left${k}`]);
      }
      expect((await batch("b")).map(seqOf)).to.deep.equal([4, 5, 6]);
      const page = await store.readAsMember({ device: members[1], groupId, afterSeq: 0, limit: 100 });
      expect(page.entries.map((e) => e.messageId)).to.deep.equal(["a0", "a1", "a2", "b0", "b1", "b2"]);
      const [[{ n: left }]] = (await pool.query("SELECT COUNT(*) AS n FROM ds_append_items")) as unknown as [[{ n: number }]];
      expect(Number(left)).to.equal(0);
    } finally {
      await pool.end();
    }
  });
});

describe("delivery service on MySQL: the log's purge beside appends in flight", function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let pool: Pool;
  let store: DeliveryServiceStore;
  const members = [device(0), device(1)];
  const NOW = 100_000;
  const DAY = 50_000;

  before(async () => {
    db = await createTestDatabase("chat_ds_purge");
    pool = createTestPool(db.url);
    store = createMysqlDeliveryServiceStore(pool);
    await store.migrate();
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  const seqsOf = async (groupId: Uint8Array) => (await store.read({ groupId, afterSeq: 0, limit: 1000 })).map((e) => e.seq);
  const appendOld = (groupId: Uint8Array, messageId: string, sender = members[0]) =>
    store.appendApplication({ groupId, epoch: 0, sender, messageId, bytes: new Uint8Array([1]), receivedAt: 1_000 });

  it("waits for no append or cursor move in flight, and deletes only what every member has read", async () => {
    const read = new Uint8Array(randomBytes(32));
    const busy = new Uint8Array(randomBytes(32));
    for (const groupId of [read, busy]) await store.createGroup({ groupId, members, now: 1 });
    for (let i = 0; i < 5; i++) await appendOld(read, `r${i}`);
    await appendOld(busy, "b0");
    for (const d of members) {
      await store.advanceCursor({ device: d, groupId: read, seq: 3 });
      await store.advanceCursor({ device: d, groupId: busy, seq: 1 });
    }
    // As another instance holds them mid-transaction: an append to `busy` (its row, a member's cursor and an
    // entry as old as the rest, not committed) and a cursor move in `read`.
    const holder = await pool.getConnection();
    try {
      await holder.query("START TRANSACTION");
      await holder.query("SELECT last_seq FROM ds_groups WHERE id = ? FOR UPDATE", [Buffer.from(busy)]);
      await holder.query(
        "INSERT INTO ds_log (group_id, seq, epoch, kind, sender_username, sender_device, message_id, bytes, received_at) VALUES (?, 2, 0, 1, ?, 'd1', 'b1', x'01', 1000)",
        [Buffer.from(busy), members[0].username],
      );
      await holder.query("UPDATE ds_groups SET last_seq = 2 WHERE id = ?", [Buffer.from(busy)]);
      await holder.query("UPDATE ds_members SET cursor_seq = 2 WHERE group_id = ? AND username = ?", [Buffer.from(busy), members[0].username]);
      await holder.query("UPDATE ds_members SET cursor_seq = 4 WHERE group_id = ? AND username = ?", [Buffer.from(read), members[1].username]);
      const purged = store.purge({ now: NOW, logTtlMs: DAY });
      const waited = new Promise<"waited">((resolve) => setTimeout(() => resolve("waited"), 5_000).unref());
      const result = await Promise.race([purged, waited]);
      expect(result, "purged while others hold rows").to.deep.equal({ keyPackages: 0, welcomes: 0, logEntries: 4 });
      await holder.query("COMMIT");
    } finally {
      await holder.query("ROLLBACK").catch(() => undefined);
      holder.release();
    }
    expect(await seqsOf(read), "4 and 5 are unread by one member").to.deep.equal([4, 5]);
    expect(await seqsOf(busy), "the entry stored meanwhile stays").to.deep.equal([2]);
    // Young entries stay whoever read them.
    await store.advanceCursor({ device: members[0], groupId: read, seq: 5 });
    await store.advanceCursor({ device: members[1], groupId: read, seq: 5 });
    expect((await store.purge({ now: 1_000 + DAY, logTtlMs: DAY })).logEntries).to.equal(0);
    expect((await store.purge({ now: NOW, logTtlMs: DAY })).logEntries).to.equal(2);
    expect(await seqsOf(read)).to.deep.equal([]);
  });

  it("goes past a run of older entries nobody may delete: the ones after it still go", async () => {
    const unread = new Uint8Array(randomBytes(32));
    const done = new Uint8Array(randomBytes(32));
    for (const groupId of [unread, done]) await store.createGroup({ groupId, members, now: 1 });
    // More entries than one chunk reads, older than the rest and unread by one member.
    const rows = Array.from({ length: 700 }, (_, i) => [Buffer.from(unread), i + 1, 0, 1, members[0].username, "d1", `u${i}`, Buffer.from([1]), 500]);
    await pool.query("INSERT INTO ds_log (group_id, seq, epoch, kind, sender_username, sender_device, message_id, bytes, received_at) VALUES ?", [rows]);
    await pool.query("UPDATE ds_groups SET last_seq = 700 WHERE id = ?", [Buffer.from(unread)]);
    await store.advanceCursor({ device: members[0], groupId: unread, seq: 700 });
    for (let i = 0; i < 3; i++) await appendOld(done, `d${i}`);
    for (const d of members) await store.advanceCursor({ device: d, groupId: done, seq: 3 });
    expect((await store.purge({ now: NOW, logTtlMs: DAY })).logEntries).to.equal(3);
    expect(await seqsOf(done)).to.deep.equal([]);
    expect((await seqsOf(unread)).length).to.equal(700);
  });
});

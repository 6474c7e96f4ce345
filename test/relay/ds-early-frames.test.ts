/**
 * Early frames, against a real relay process (MariaDB, anvil with ChatRegistry): a small application
 * message handed to the other members' sockets on this instance that asked for them, while the relay is
 * still making it durable. The bytes are opaque, as the relay never parses MLS. Another client of the
 * database holds the group's row, so the append is shown to be still in flight when its early frame arrives.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import mysql from "mysql2/promise";
import { EarlyFrame, NOTICE_ENTRY_MAX_BYTES } from "../../protocol/wire";
import { waitFor } from "../helpers/wait";
import { bytes, device, useRawDs, type Listener } from "./ds-raw-fixture";

const messageId = (prefix = "e") => `${prefix}-${randomBytes(6).toString("hex")}`;
const append = (groupId: string, deviceId: string, epoch: number, id: string, b: string) => ({ type: "append", groupId, deviceId, epoch, id, bytes: b });
const earlyIds = (l: Listener) => l.frames.filter((f) => f.type === "early").map((f) => f.entry.id);

describe("relay: early frames hand small messages on before they are durable", function () {
  this.timeout(120_000);
  const ds = useRawDs("ds_early_frames");
  const { user, call, listen, groupOf } = ds;

  /** Holds group `groupId`'s row, as a slow database would: every append to it waits until `release`. */
  async function holdGroup(groupId: string) {
    const holder = await mysql.createConnection(ds.database().url);
    await holder.query("START TRANSACTION");
    await holder.query("SELECT id FROM ds_groups WHERE id = UNHEX(?) FOR UPDATE", [groupId]);
    return {
      release: async () => {
        await holder.query("ROLLBACK");
        await holder.end();
      },
    };
  }

  /**
   * A group of an owner and a member; the owner's socket and two of the member's, one asking for early frames
   * and one not; and the group's first message stored. The relay learns a group's members and epoch from a
   * stored message, so the first goes out durable only: none of the sockets has an early frame yet.
   */
  async function groupWithSockets(prefix: string) {
    const owner = await user(`${prefix}_o`);
    const member = await user(`${prefix}_m`);
    const groupId = await groupOf(owner, [member]);
    const ownerSocket = await listen(owner.token, { early: true });
    const asked = await listen(member.token, { early: true });
    const notAsked = await listen(member.token);
    const first = messageId();
    ownerSocket.send(append(groupId, "o1", 1, first, bytes(100)));
    await waitFor("the first message's notice", () => asked.groupFrames(groupId).some((f) => f.entry?.id === first), 15_000, 10);
    return { owner, member, groupId, ownerSocket, asked, notAsked };
  }

  it("a member's socket that asked hears the message while it is in flight; its notice with the seq follows with the same entry", async () => {
    const { owner, member, groupId, ownerSocket, asked, notAsked } = await groupWithSockets("ef");
    expect(earlyIds(asked)).to.deep.equal([]);

    const id = messageId();
    const b = bytes(300);
    const held = await holdGroup(groupId);
    try {
      ownerSocket.send(append(groupId, "o1", 1, id, b));
      const early = await waitFor("the early frame", () => asked.frames.find((f) => f.type === "early" && f.entry.id === id), 15_000, 10);
      expect(EarlyFrame.safeParse(early).success, JSON.stringify(early)).to.equal(true);
      expect(early.groupId).to.equal(groupId);
      expect(early.entry).to.deep.include({ epoch: 1, kind: "application", sender: device(owner, "o1"), id, bytes: b });
      expect(early.entry).not.to.have.property("seq");
      // Still in flight: not answered, not in the log.
      expect(ownerSocket.frames.some((f) => f.id === id)).to.equal(false);
      const log = await call(member, "m1", "GET", `/v2/groups/${groupId}/log?after=0&limit=100`);
      expect(log.entries.map((e: { id: string }) => e.id)).not.to.include(id);
    } finally {
      await held.release();
    }
    const appended = await waitFor("the answer", () => ownerSocket.frames.find((f) => f.type === "appended" && f.id === id), 15_000, 10);
    const notice = await waitFor("the notice with the seq", () => asked.groupFrames(groupId).find((f) => f.entry?.id === id), 15_000, 10);
    const early = asked.frames.find((f) => f.type === "early" && f.entry.id === id);
    // The entry with its seq is the early one, field for field.
    expect(notice.entry).to.deep.equal({ ...early.entry, seq: appended.seq });
    expect(asked.frames.indexOf(early)).to.be.below(asked.frames.indexOf(notice));

    // A socket that did not ask, and the appending socket, hear none; the socket that asked hears each once.
    expect(earlyIds(notAsked)).to.deep.equal([]);
    expect(notAsked.groupFrames(groupId).some((f) => f.entry?.id === id)).to.equal(true);
    expect(earlyIds(ownerSocket)).to.deep.equal([]);
    expect(earlyIds(asked)).to.deep.equal([id]);

    // Over HTTP too: the sender has no socket to skip there, so its own socket that asked hears it as well.
    const overHttp = messageId();
    await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: overHttp, bytes: bytes(80) });
    await waitFor("the HTTP message's early frame", () => earlyIds(asked).includes(overHttp), 15_000, 10);
    expect(await metricAtLeast("chat_ws_early_entries_sent_total", 2)).to.equal(true);
  });

  it("in a burst, each message's notice follows its early frame, the notices in seq order, none lost or repeated", async () => {
    const { groupId, ownerSocket, asked, notAsked } = await groupWithSockets("eb");

    // A burst: early frames and notices of many messages in flight at once interleave on the socket.
    const ids = Array.from({ length: 12 }, () => messageId("b"));
    for (const id of ids) ownerSocket.send(append(groupId, "o1", 1, id, bytes(120)));
    await waitFor("every notice", () => ids.every((id) => asked.groupFrames(groupId).some((f) => f.entry?.id === id)), 15_000, 10);
    const answers = ownerSocket.frames.filter((f) => f.type === "appended" && ids.includes(f.id));
    expect(answers.map((f) => f.id)).to.deep.equal(ids);
    const seqOf = new Map(answers.map((f) => [f.id, f.seq]));
    const heard = asked.frames.filter((f) => (f.type === "early" || f.type === "group") && f.groupId === groupId && ids.includes(f.entry?.id));
    for (const id of ids) {
      const early = heard.findIndex((f) => f.type === "early" && f.entry.id === id);
      const notice = heard.findIndex((f) => f.type === "group" && f.entry.id === id);
      expect(early, `${id}: early frame first`).to.be.at.least(0);
      expect(notice, `${id}: then its notice`).to.be.above(early);
      expect(heard[notice].seq).to.equal(seqOf.get(id));
    }
    // No notice is overtaken by a later message's: the seqs the socket hears only grow.
    expect(heard.filter((f) => f.type === "group").map((f) => f.seq)).to.deep.equal([...seqOf.values()]);
    // Each socket hears each notice once.
    expect(notAsked.groupFrames(groupId).filter((f) => ids.includes(f.entry?.id)).map((f) => f.entry.id)).to.deep.equal(ids);
    expect(asked.groupFrames(groupId).filter((f) => ids.includes(f.entry?.id)).map((f) => f.entry.id)).to.deep.equal(ids);
  });

  /** Whether a counter of the relay's /metrics is at least `n`. */
  async function metricAtLeast(name: string, n: number): Promise<boolean> {
    const text = await (await fetch(`${ds.relay().url}/metrics`)).text();
    return Number(new RegExp(`^${name} ([0-9.e+-]+)$`, "m").exec(text)?.[1]) >= n;
  }

  describe("attacks and edges: no early frame for what the store would refuse or the relay cannot vouch for", () => {
    it("a user outside the group appending to it, under a member's device id, hands nothing on", async () => {
      const owner = await user("eg_o");
      const member = await user("eg_m");
      const stranger = await user("eg_s");
      const groupId = await groupOf(owner, [member]);
      await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: messageId(), bytes: bytes() });
      const asked = await listen(member.token, { early: true });
      const strangerSocket = await listen(stranger.token, { early: true });

      const forged = messageId("forged");
      strangerSocket.send(append(groupId, "o1", 1, forged, bytes()));
      const refusal = await waitFor("the stranger's refusal", () => strangerSocket.frames.find((f) => f.type === "error" && f.id === forged), 15_000, 10);
      expect(refusal.code).to.equal("NOT_GROUP_MEMBER");
      // The owner's next message is handed on; the stranger's never was (it would have gone first).
      const next = messageId();
      await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: next, bytes: bytes() });
      await waitFor("the owner's early frame", () => earlyIds(asked).includes(next), 15_000, 10);
      expect(earlyIds(asked)).to.deep.equal([next]);
    });

    it("after a commit nothing is handed on until the new epoch's first message is stored; a late, refused or large message never is", async () => {
      const owner = await user("eh_o");
      const member = await user("eh_m");
      const groupId = await groupOf(owner, [member]);
      await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: messageId(), bytes: bytes() });
      const asked = await listen(member.token, { early: true });
      const ownerSocket = await listen(owner.token);
      const sendOver = async (epoch: number, id: string) => {
        ownerSocket.send(append(groupId, "o1", epoch, id, bytes()));
        return waitFor(`the answer to ${id}`, () => ownerSocket.frames.find((f) => (f.type === "appended" || f.type === "error") && f.id === id), 15_000, 10);
      };
      const before = messageId("before");
      expect(await sendOver(1, before)).to.include({ type: "appended" });
      await waitFor("the early frame before the commit", () => earlyIds(asked).includes(before), 15_000, 10);

      await call(owner, "o1", "POST", `/v2/groups/${groupId}/commits`, { epoch: 1, id: `c-${randomBytes(4).toString("hex")}`, bytes: bytes(200) });
      // A sender still in epoch 1: stored as a late message, not handed on (the relay no longer vouches for the group).
      const late = messageId("late");
      expect(await sendOver(1, late)).to.include({ type: "appended", epoch: 1 });
      // Ahead of the group: refused, and not handed on.
      const ahead = messageId("ahead");
      expect(await sendOver(3, ahead)).to.include({ type: "error", code: "EPOCH_CONFLICT", currentEpoch: 2 });
      // The new epoch's first message teaches the relay the group again; the next is handed on, a large one never.
      const firstOfEpoch = messageId("e2a");
      expect(await sendOver(2, firstOfEpoch)).to.include({ type: "appended", epoch: 2 });
      const large = messageId("large");
      await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 2, id: large, bytes: bytes(NOTICE_ENTRY_MAX_BYTES + 1) });
      const second = messageId("e2b");
      expect(await sendOver(2, second)).to.include({ type: "appended", epoch: 2 });
      const lateAgain = messageId("late2");
      expect(await sendOver(1, lateAgain)).to.include({ type: "appended", epoch: 1 });
      const third = messageId("e2c");
      expect(await sendOver(2, third)).to.include({ type: "appended", epoch: 2 });
      await waitFor("the third message of epoch 2 handed on", () => earlyIds(asked).includes(third), 15_000, 10);
      expect(earlyIds(asked)).to.deep.equal([before, second, third]);
      expect(asked.frames.filter((f) => f.type === "early").map((f) => f.entry.epoch)).to.deep.equal([1, 2, 2]);
    });
  });
});

/**
 * Group notices that carry their log entry, and cursor moves over the WebSocket, against a real relay
 * process (MariaDB, anvil with ChatRegistry). The raw half sends opaque bytes, as the relay never parses
 * MLS; the MLS half runs real devices (client-core's MlsDevice over the CLI's DsClient) and shows that a
 * device applying a handed entry ends where one reading the log ends, and that a handed entry is never
 * trusted more than the log: one that is not next, or that MLS refuses, is replaced by a log read.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { ChainReader } from "../../client-core/chain-reader";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { MlsDevice } from "../../client-core/mls-device";
import { Home } from "../../cli/home";
import { homeDeviceStorage } from "../../cli/mls/device-files";
import { DsClient } from "../../cli/mls/ds-client";
import { CURSOR_FRAME_INTERVAL_MS } from "../../client-core/ds-client";
import mysql from "mysql2/promise";
import { openRelaySocket } from "../helpers/mls-socket";
import { GroupFrame, NOTICE_ENTRY_MAX_BYTES } from "../../protocol/wire";
import { LogEntrySchema, encodeBase64, type LogEntryWire } from "../../protocol/wire-v2";
import { waitFor } from "../helpers/wait";
import { bytes, device, useRawDs, type Listener, type Session } from "./ds-raw-fixture";

/** A DsClient that counts its log reads: a handed entry applied is a read saved. */
class CountingDsClient extends DsClient {
  logReads = 0;
  override log(groupId: string, after: number, limit: number) {
    this.logReads++;
    return super.log(groupId, after, limit);
  }
}

describe("relay: group notices carry small log entries; cursor moves over the WebSocket", function () {
  this.timeout(300_000);
  const ds = useRawDs("ds_notice_entry");
  const { user, call, listen, groupOf, cursorOf } = ds;
  let reader: ChainReader;

  before(async () => {
    reader = await ChainReader.connect(ds.chain().anvil.url);
  });
  after(() => reader?.close());

  it("a small application message rides in its notice as the log holds it; a large one, a commit or a retry does not", async () => {
    const owner = await user("ne_o");
    const member = await user("ne_m");
    const groupId = await groupOf(owner, [member]);
    const heard = await listen(member.token);

    const id = `m-${randomBytes(6).toString("hex")}`;
    const small = bytes(300);
    const sent = await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id, bytes: small });
    await waitFor("the notice of the small message", () => heard.groupFrames(groupId).some((f) => f.seq === sent.seq), 15_000, 20);
    const notice = heard.groupFrames(groupId).find((f) => f.seq === sent.seq);
    expect(GroupFrame.safeParse(notice).success).to.equal(true);
    const page = await call(member, "m1", "GET", `/v2/groups/${groupId}/log?after=${sent.seq - 1}&limit=1`);
    // The carried entry is the log's entry, field for field, and a valid LogEntryWire.
    expect(notice.entry).to.deep.equal(page.entries[0]);
    expect(LogEntrySchema.safeParse(notice.entry).success).to.equal(true);
    expect(notice.entry).to.deep.include({ seq: sent.seq, epoch: 1, kind: "application", id, bytes: small, sender: device(owner, "o1") });

    // Just past the bound: the notice is the bare hint, the log has the entry.
    const large = await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: `m-${randomBytes(6).toString("hex")}`, bytes: bytes(NOTICE_ENTRY_MAX_BYTES + 1) });
    await waitFor("the notice of the large message", () => heard.groupFrames(groupId).some((f) => f.seq === large.seq), 15_000, 20);
    const bare = heard.groupFrames(groupId).find((f) => f.seq === large.seq);
    expect(bare).to.deep.equal({ type: "group", groupId, seq: large.seq, epoch: 1 });
    const largeEntry = await call(member, "m1", "GET", `/v2/groups/${groupId}/log?after=${large.seq - 1}&limit=1`);
    expect(largeEntry.entries[0].seq).to.equal(large.seq);

    // A retried append (same id) stored nothing new: its notice carries no entry (the stored one is the first's).
    const count = heard.groupFrames(groupId).length;
    const retried = await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id, bytes: small });
    expect(retried).to.include({ duplicate: true, seq: sent.seq });
    await waitFor("the retry's notice", () => heard.groupFrames(groupId).length > count, 15_000, 20);
    expect(heard.groupFrames(groupId).slice(count).every((f) => f.entry === undefined)).to.equal(true);

    // A commit's notice is the bare hint (its readers take commits from the log).
    const commit = await call(owner, "o1", "POST", `/v2/groups/${groupId}/commits`, { epoch: 1, id: `c-${randomBytes(4).toString("hex")}`, bytes: bytes(200) });
    await waitFor("the commit's notice", () => heard.groupFrames(groupId).some((f) => f.seq === commit.seq), 15_000, 20);
    expect(heard.groupFrames(groupId).find((f) => f.seq === commit.seq).entry).to.equal(undefined);
  });

  it("a cursor frame moves the socket user's own member device; another device is refused with an error frame and nothing moves", async () => {
    const owner = await user("nc_o");
    const member = await user("nc_m");
    const stranger = await user("nc_s");
    const groupId = await groupOf(owner, [member]);
    for (let i = 0; i < 3; i++) await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: `m-${i}-${randomBytes(4).toString("hex")}`, bytes: bytes() });
    const mine = await listen(member.token);
    const startCursor = await cursorOf(owner, "o1", groupId, device(member, "m1"));
    expect(startCursor).to.equal(1);

    mine.ws.send(JSON.stringify({ type: "cursor", groupId, deviceId: "m1", seq: 3 }));
    await waitFor("the cursor moved by the frame", async () => (await cursorOf(owner, "o1", groupId, device(member, "m1"))) === 3, 15_000, 50);
    // Never back: a late, lower move leaves it.
    mine.ws.send(JSON.stringify({ type: "cursor", groupId, deviceId: "m1", seq: 2 }));

    // A device of this user that is not in the group: refused, nothing moved.
    mine.ws.send(JSON.stringify({ type: "cursor", groupId, deviceId: "m2", seq: 4 }));
    await waitFor("the refusal of device m2", () => mine.frames.some((f) => f.type === "error"), 15_000, 20);
    expect(mine.frames.filter((f) => f.type === "error").map((f) => f.code)).to.deep.equal(["NOT_GROUP_MEMBER"]);

    // Another user naming the member's device id acts as its own (non-member) device: refused, the member's cursor untouched.
    const theirs = await listen(stranger.token);
    theirs.ws.send(JSON.stringify({ type: "cursor", groupId, deviceId: "m1", seq: 4 }));
    await waitFor("the stranger's refusal", () => theirs.frames.some((f) => f.type === "error"), 15_000, 20);
    expect(theirs.frames.find((f) => f.type === "error").code).to.equal("NOT_GROUP_MEMBER");

    // Beyond the log's end, and a malformed frame: refused as the HTTP route refuses them.
    mine.ws.send(JSON.stringify({ type: "cursor", groupId, deviceId: "m1", seq: 99 }));
    mine.ws.send(JSON.stringify({ type: "cursor", groupId: "not-a-group", deviceId: "m1", seq: 4 }));
    await waitFor("two more refusals", () => mine.frames.filter((f) => f.type === "error").length >= 3, 15_000, 20);
    expect(mine.frames.filter((f) => f.type === "error").map((f) => f.code)).to.have.members(["NOT_GROUP_MEMBER", "BAD_REQUEST", "BAD_REQUEST"]);
    expect(await cursorOf(owner, "o1", groupId, device(member, "m1"))).to.equal(3);
    expect(mine.ws.readyState).to.equal(WebSocket.OPEN);
  });

  it(`a client sends at most one cursor frame per group each ${CURSOR_FRAME_INTERVAL_MS} ms: a burst of moves goes as its first and then its furthest`, async () => {
    const owner = await user("nf_o");
    const member = await user("nf_m");
    const groupId = await groupOf(owner, [member]);
    for (let i = 0; i < 6; i++) await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: `f-${i}-${randomBytes(4).toString("hex")}`, bytes: bytes() });
    const socket = await openRelaySocket(ds.relay().url, member.token);
    try {
      const client = new DsClient({ url: ds.relay().url, token: member.token, deviceId: "m1", socket: socket.appends });
      const started = Date.now();
      for (let seq = 2; seq <= 7; seq++) expect(await client.advanceCursor(groupId, seq)).to.deep.equal({ cursor: seq });
      // The burst took less than the interval (else more than one frame would rightly have gone).
      expect(Date.now() - started).to.be.below(CURSOR_FRAME_INTERVAL_MS);
      expect(socket.counts.cursorFrames).to.equal(1);
      await waitFor("the held move taken", async () => (await cursorOf(owner, "o1", groupId, device(member, "m1"))) === 7, 15_000, 20);
      expect(socket.counts.cursorFrames).to.equal(2);
      // A move after a quiet interval goes at once.
      await new Promise((resolve) => setTimeout(resolve, CURSOR_FRAME_INTERVAL_MS + 20));
      await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: `f-last-${randomBytes(4).toString("hex")}`, bytes: bytes() });
      await client.advanceCursor(groupId, 8);
      expect(socket.counts.cursorFrames).to.equal(3);
      await waitFor("the last move taken", async () => (await cursorOf(owner, "o1", groupId, device(member, "m1"))) === 8, 15_000, 20);
    } finally {
      socket.close();
    }
  });

  describe("MLS devices", () => {
    async function mlsDevice(u: Session) {
      const dir = mkdtempSync(path.join(tmpdir(), "chat-notice-home-"));
      let client: CountingDsClient | undefined;
      const d = await MlsDevice.open({
        storage: homeDeviceStorage(new Home(dir), u.username),
        username: u.username,
        identityKeys: [{ index: 0, privateKey: u.identity.privateKey }],
        chainId: ds.chain().deployed.chainId,
        contract: ds.chain().deployed.address,
        keyBook: chainKeyBook(reader.registry(ds.chain().deployed.address)),
        connect: (deviceId) => (client = new CountingDsClient({ url: ds.relay().url, token: u.token, deviceId })),
        oneTimeKeyPackages: 2,
      });
      await d.ensureKeyPackages();
      return { device: d, client: client! };
    }
    const bodies = (r: { messages: { body: string }[] }) => r.messages.map((m) => m.body);

    let alice: Awaited<ReturnType<typeof mlsDevice>>;
    let bob: Awaited<ReturnType<typeof mlsDevice>>;
    let carol: Awaited<ReturnType<typeof mlsDevice>>;
    let bobUser: Session;
    let bobSocket: Listener;
    let groupId: string;

    /** alice sends `text`; bob's socket hears its notice, which carries the entry. */
    async function sendAndHear(text: string): Promise<LogEntryWire> {
      const { seq } = await alice.device.send(groupId, text);
      await waitFor("bob's notice", () => bobSocket.groupFrames(groupId).some((f) => f.seq === seq), 15_000, 20);
      const entry = bobSocket.groupFrames(groupId).find((f) => f.seq === seq).entry;
      expect(entry, "the notice carries the entry").to.not.equal(undefined);
      return entry;
    }

    before(async () => {
      const [a, b, c] = [await user("nm_a"), await user("nm_b"), await user("nm_c")];
      bobUser = b;
      [alice, bob, carol] = [await mlsDevice(a), await mlsDevice(b), await mlsDevice(c)];
      groupId = await alice.device.createGroup([b.username, c.username]);
      for (const d of [bob, carol]) await d.device.sync();
      expect(bob.device.epoch(groupId)).to.equal(alice.device.epoch(groupId));
      bobSocket = await listen(bobUser.token);
    });

    it("a device applying the handed entry, without a log read, ends where a device reading the log ends", async () => {
      const entry = await sendAndHear("handed over");
      const reads = bob.client.logReads;
      const byNotice = await bob.device.applyNotice(groupId, [entry]);
      expect(bob.client.logReads, "no log read").to.equal(reads);
      const byLog = await carol.device.catchUp(groupId);
      expect(bodies(byNotice)).to.deep.equal(["handed over"]);
      expect(byNotice.messages.map(({ id, from, seq, sentAt }) => ({ id, from, seq, sentAt }))).to.deep.equal(
        byLog.messages.map(({ id, from, seq, sentAt }) => ({ id, from, seq, sentAt })),
      );
      expect(byNotice.events).to.deep.equal(byLog.events);
      expect(bob.device.epoch(groupId)).to.equal(carol.device.epoch(groupId));
      // The relay's cursors agree too, and neither has more to read.
      expect(await cursorOf(bobUser, bob.client.deviceId, groupId, { username: bobUser.username, deviceId: bob.client.deviceId })).to.equal(entry.seq);
      expect(bodies(await bob.device.catchUp(groupId))).to.deep.equal([]);
      // Applying the same entry again shows nothing twice (it is no longer next: an ordinary catch-up).
      expect(bodies(await bob.device.applyNotice(groupId, [entry]))).to.deep.equal([]);
      // Both go on working in the group: bob's reply opens for alice and carol.
      await bob.device.send(groupId, "from bob");
      expect(bodies(await alice.device.catchUp(groupId))).to.deep.equal(["from bob"]);
      expect(bodies(await carol.device.catchUp(groupId))).to.deep.equal(["from bob"]);
    });

    it("an entry that is not next falls back to the log", async () => {
      const first = await sendAndHear("first of two");
      const second = await sendAndHear("second of two");
      const reads = bob.client.logReads;
      // Only the second is handed: one is missing before it, so the log is read and both are shown in order.
      const got = await bob.device.applyNotice(groupId, [second]);
      expect(bob.client.logReads).to.be.greaterThan(reads);
      expect(bodies(got)).to.deep.equal(["first of two", "second of two"]);
      expect(first.seq + 1).to.equal(second.seq);
      await carol.device.catchUp(groupId);
      await bob.device.catchUp(groupId);
    });

    it("a sync finds the relay's cursor behind what the device read (a move lost with its process) and moves it, so the group stops being news", async () => {
      await sendAndHear("read before the loss");
      await bob.device.catchUp(groupId);
      const bobDevice = { username: bobUser.username, deviceId: bob.client.deviceId };
      const read = await cursorOf(bobUser, bob.client.deviceId, groupId, bobDevice);
      // The loss itself: a cursor frame that never reached the relay, made by moving the row back.
      const db = await mysql.createConnection(ds.database().url);
      try {
        await db.query("UPDATE ds_members SET cursor_seq = ? WHERE group_id = UNHEX(?) AND username = ? AND device_id = ?", [read! - 1, groupId, bobDevice.username, bobDevice.deviceId]);
      } finally {
        await db.end();
      }
      expect((await bob.client.sync()).groups.map((g) => g.groupId)).to.include(groupId);
      expect(bodies(await bob.device.sync())).to.deep.equal([]);
      expect(await cursorOf(bobUser, bob.client.deviceId, groupId, bobDevice)).to.equal(read);
      expect((await bob.client.sync()).groups.map((g) => g.groupId)).to.not.include(groupId);
      await carol.device.catchUp(groupId);
    });

    it("a forged handed entry is refused by the MLS checks and the log is read instead: nothing forged is shown or skipped", async () => {
      const earlier = await sendAndHear("an earlier one");
      await bob.device.applyNotice(groupId, [earlier]);
      const forge: Record<string, (next: LogEntryWire) => LogEntryWire> = {
        "garbage bytes": (next) => ({ ...next, bytes: bytes(200) }),
        // an earlier message replayed under the next seq: its generation is used up
        "a replay": (next) => ({ ...next, bytes: earlier.bytes, id: earlier.id }),
        "a bit flipped": (next) => ({ ...next, bytes: encodeBase64(flipLastByte(next.bytes)) }),
      };
      const texts: string[] = ["an earlier one"];
      let next: LogEntryWire | undefined;
      for (const [what, make] of Object.entries(forge)) {
        const text = `after ${what}`;
        texts.push(text);
        next = await sendAndHear(text);
        const reads = bob.client.logReads;
        const got = await bob.device.applyNotice(groupId, [make(next)]);
        expect(bob.client.logReads, `${what}: the log is read instead`).to.be.greaterThan(reads);
        // The log's genuine entry is what is shown, once; the forgery is neither shown nor reported as the entry.
        expect(bodies(got), what).to.deep.equal([text]);
        expect(got.events.filter((e) => e.kind === "refused"), what).to.deep.equal([]);
      }
      // carol, reading the log, got the same texts, and bob's state is hers.
      expect(bodies(await carol.device.catchUp(groupId))).to.deep.equal(texts);
      expect(bob.device.epoch(groupId)).to.equal(carol.device.epoch(groupId));

      // A forged entry for a seq the log does not have yet: refused, nothing to read, the cursor stays.
      const lastSeq = next!.seq;
      const reads = bob.client.logReads;
      const got = await bob.device.applyNotice(groupId, [{ ...next!, seq: lastSeq + 1, bytes: bytes(120) }]);
      expect(bob.client.logReads).to.be.greaterThan(reads);
      expect(got).to.deep.equal({ messages: [], events: [] });
      expect(await cursorOf(bobUser, bob.client.deviceId, groupId, { username: bobUser.username, deviceId: bob.client.deviceId })).to.equal(lastSeq);
      // The genuine next message still opens after all that.
      const after = await sendAndHear("still in step");
      expect(bodies(await bob.device.applyNotice(groupId, [after]))).to.deep.equal(["still in step"]);
    });
  });
});

function flipLastByte(base64: string): Uint8Array {
  const raw = new Uint8Array(Buffer.from(base64, "base64"));
  raw[raw.length - 1] ^= 0x01;
  return raw;
}

/**
 * Early frames against a real relay process (MariaDB, anvil with ChatRegistry) and real MLS devices
 * (client-core's MlsDevice over the CLI's DsClient, each holding a socket that asks for early frames, as
 * `chat talk` does): another member's small application message reaches the socket before the relay has
 * stored it; the device applies it with every check of a log read and remembers its id, so the log entry
 * that comes later with that id (read, or handed with a notice) is passed over: shown once, nothing
 * refused. What a device cannot apply at once (another epoch, another payload kind, altered bytes, a relay
 * that renames the message or its sender) is dropped with nothing saved, and the log brings it as usual.
 * A message applied early whose append was then refused, or lost with the relay, and re-sent under the same
 * id, is shown once too. The relay hands a group's messages on early only once it has stored one since the
 * group's last commit, so each part starts with a message that may come without one.
 */
import { expect } from "chai";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ChainReader } from "../../client-core/chain-reader";
import { MAX_EARLY_IDS, type GroupFile } from "../../client-core/device-store";
import type { GroupEvent, MlsDevice, ReceivedMessage } from "../../client-core/mls-device";
import { Home } from "../../cli/home";
import { homeDeviceStore } from "../../cli/mls/device-files";
import { ChatError } from "../../protocol/errors";
import { newPayloadId } from "../../protocol/mls";
import { EarlyEntry } from "../../protocol/wire";
import { encodeBase64 } from "../../protocol/wire-v2";
import { APPLICATION_EPOCH_WINDOW } from "../../relay/storage/ds-types";
import { openMlsDevice, type ObservedDsClient } from "../helpers/mls-device";
import { openRelaySocket, type RelaySocket } from "../helpers/mls-socket";
import { waitFor } from "../helpers/wait";
import { newGroupId, useRawDs, type Listener, type Session } from "./ds-raw-fixture";

interface Member {
  session: Session;
  home: string;
  device: MlsDevice;
  ds: ObservedDsClient;
  socket: RelaySocket;
  /** every message the device handed to its deliver callback */
  shown: ReceivedMessage[];
}

type Applied = { messages: ReceivedMessage[]; events: GroupEvent[] };
const nothing: Applied = { messages: [], events: [] };
const bodies = (r: Applied) => r.messages.map((m) => m.body);
const refusals = (r: Applied) => r.events.filter((e) => e.kind === "refused");

describe("relay: early frames, applied at once by MLS devices and passed over when their log entries come", function () {
  this.timeout(300_000);
  const ds = useRawDs("ds_early_entries");
  let reader: ChainReader;
  let alice: Member;
  let bob: Member;
  let carol: Member;
  /** bob's plain socket, which hears the group notices (and the entries they carry) */
  let bobNotices: Listener;
  let groupId: string;

  async function member(prefix: string): Promise<Member> {
    const session = await ds.user(prefix);
    const home = mkdtempSync(path.join(tmpdir(), "chat-early-home-"));
    const socket = await openRelaySocket(ds.relay().url, session.token, { early: true });
    const shown: ReceivedMessage[] = [];
    const { device, ds: client } = await openMlsDevice({
      owner: { ...session, home },
      relayUrl: ds.relay().url,
      chainId: ds.chain().deployed.chainId,
      contract: ds.chain().deployed.address,
      reader,
      deliver: (messages) => void shown.push(...messages),
      socket: socket.appends,
    });
    return { session, home, device, ds: client, socket, shown };
  }

  const fileOf = (m: Member): GroupFile => homeDeviceStore(new Home(m.home), m.session.username).readGroup(groupId)!;
  const self = (m: Member) => ({ username: m.session.username, deviceId: m.device.deviceId });
  const relayCursor = (m: Member) => ds.cursorOf(m.session, m.device.deviceId, groupId, self(m));
  const shownBodies = (m: Member, from = 0) => m.shown.slice(from).map((s) => s.body);

  /** `from` sends `text`; the early frame `to`'s socket got for it, and the seq the relay gave the message. */
  async function sendEarly(from: Member, to: Member, text: string): Promise<{ entry: EarlyEntry; seq: number; id: string }> {
    const { id, seq } = await from.device.send(groupId, text);
    const frame = await waitFor(`${to.session.username}'s early frame of "${text}"`, () => to.socket.earlyFrames.find((f) => f.groupId === groupId && f.entry.id === `m${id}`), 15_000, 20);
    return { entry: frame.entry, seq, id };
  }

  /** Everyone reads the group to its end, so the next part starts in step (and the relay's early cache is warm). */
  async function settle(): Promise<void> {
    const { seq } = await alice.device.send(groupId, "settling");
    for (const m of [alice, bob, carol]) await m.device.catchUp(groupId);
    for (const m of [bob, carol]) expect(fileOf(m).cursor).to.equal(seq);
    for (const m of [bob, carol]) expect(fileOf(m).early ?? []).to.deep.equal([]);
  }

  before(async () => {
    reader = await ChainReader.connect(ds.chain().anvil.url);
    [alice, bob, carol] = [await member("ee_a"), await member("ee_b"), await member("ee_c")];
    bobNotices = await ds.listen(bob.session.token);
    groupId = await alice.device.createGroup([bob.session.username, carol.session.username]);
    for (const m of [bob, carol]) await m.device.sync();
    expect(bob.device.epoch(groupId)).to.equal(alice.device.epoch(groupId));
    await settle();
  });
  after(() => {
    for (const m of [alice, bob, carol]) m?.socket.close();
    reader?.close();
  });

  it("a message applied from its early frame is shown once; its log entry, read or handed with a notice, is passed over", async () => {
    const shownBefore = bob.shown.length;
    const { entry, seq, id } = await sendEarly(alice, bob, "early one");
    // The frame is the log's entry without a seq, from alice's device, in the group's epoch.
    expect(EarlyEntry.safeParse(entry).success).to.equal(true);
    expect(entry).to.not.have.property("seq");
    expect(entry).to.deep.include({ kind: "application", epoch: alice.device.epoch(groupId), id: `m${id}`, sender: self(alice) });
    // The appending socket hears its own message by its answer only.
    expect(alice.socket.earlyFrames.some((f) => f.entry.id === entry.id)).to.equal(false);

    const cursor = fileOf(bob).cursor;
    expect(cursor).to.be.below(seq);
    const early = await bob.device.applyEarly(groupId, entry);
    expect(bodies(early)).to.deep.equal(["early one"]);
    expect(early.messages[0]).to.deep.include({ id, from: alice.session.username, fromDeviceId: alice.device.deviceId });
    expect(early.messages[0].seq, "no seq before the relay gave it one").to.equal(undefined);
    expect(shownBodies(bob, shownBefore)).to.deep.equal(["early one"]);
    // Remembered, and the cursor has not moved: the entries before it are still to be read.
    expect(fileOf(bob).early).to.deep.equal([entry.id]);
    expect(fileOf(bob).cursor).to.equal(cursor);
    // The same frame again is nothing new.
    expect(await bob.device.applyEarly(groupId, entry)).to.deep.equal(nothing);

    // The log read passes over it: nothing shown again, nothing refused, the cursor at its seq, the id forgotten.
    expect(await bob.device.catchUp(groupId)).to.deep.equal(nothing);
    expect(shownBodies(bob, shownBefore)).to.deep.equal(["early one"]);
    expect(fileOf(bob).cursor).to.equal(seq);
    expect(fileOf(bob).early).to.equal(undefined);
    await waitFor("bob's cursor at the relay", async () => (await relayCursor(bob)) === seq, 15_000, 50);
    // carol, reading the log, gets the same message once.
    expect(bodies(await carol.device.catchUp(groupId))).to.deep.equal(["early one"]);

    // The same through the entry a notice hands along.
    const second = await sendEarly(alice, bob, "early two");
    expect(bodies(await bob.device.applyEarly(groupId, second.entry))).to.deep.equal(["early two"]);
    const notice = await waitFor("bob's notice of the second", () => bobNotices.groupFrames(groupId).find((f) => f.seq === second.seq && f.entry), 15_000, 20);
    expect(await bob.device.applyNotice(groupId, [notice.entry])).to.deep.equal(nothing);
    expect(shownBodies(bob, shownBefore)).to.deep.equal(["early one", "early two"]);
    expect(fileOf(bob).cursor).to.equal(second.seq);
    expect(fileOf(bob).early).to.equal(undefined);

    // Both go on in step: bob's reply opens for alice (early too) and carol.
    const reply = await sendEarly(bob, alice, "bob replies");
    expect(bodies(await alice.device.applyEarly(groupId, reply.entry))).to.deep.equal(["bob replies"]);
    expect(await alice.device.catchUp(groupId)).to.deep.equal(nothing);
    expect(bodies(await carol.device.catchUp(groupId))).to.deep.equal(["early two", "bob replies"]);
    await settle();
  });

  it("an early entry the device cannot apply now is dropped with nothing saved, and the log brings its message once", async () => {
    const forgeries: Record<string, (entry: EarlyEntry) => EarlyEntry> = {
      "labelled with another epoch": (entry) => ({ ...entry, epoch: entry.epoch + 1 }),
      "with a bit flipped": (entry) => ({ ...entry, bytes: flipLastByte(entry.bytes) }),
      // Opened, but under another id it would later pass over another message: refused, its key not used up.
      "renamed by the relay": (entry) => ({ ...entry, id: `m${newPayloadId()}` }),
      "said to come from carol": (entry) => ({ ...entry, sender: self(carol) }),
    };
    for (const [what, forge] of Object.entries(forgeries)) {
      const text = `a message ${what}`;
      const { entry, seq } = await sendEarly(alice, bob, text);
      const before = fileOf(bob);
      expect(await bob.device.applyEarly(groupId, forge(entry)), what).to.deep.equal(nothing);
      expect(fileOf(bob), `${what}: nothing saved`).to.deep.equal(before);
      const read = await bob.device.catchUp(groupId);
      expect(bodies(read), what).to.deep.equal([text]);
      expect(refusals(read), what).to.deep.equal([]);
      expect(fileOf(bob).cursor).to.equal(seq);
    }

    // A real one of another epoch: carol commits while bob has not read it; alice's messages after it are
    // of the new epoch, and bob, still in the old one, reads them from the log.
    const epoch = bob.device.epoch(groupId);
    await carol.device.updateKeys(groupId);
    await alice.device.send(groupId, "first after the commit");
    const { entry } = await sendEarly(alice, bob, "second after the commit");
    expect(entry.epoch).to.equal(epoch + 1);
    const before = fileOf(bob);
    expect(await bob.device.applyEarly(groupId, entry)).to.deep.equal(nothing);
    expect(fileOf(bob)).to.deep.equal(before);
    const read = await bob.device.catchUp(groupId);
    expect(bodies(read)).to.deep.equal(["first after the commit", "second after the commit"]);
    expect(read.events.map((e) => e.kind)).to.deep.equal(["commit"]);
    expect(bob.device.epoch(groupId)).to.equal(epoch + 1);

    // Not a text (the group's name): left for the log, with its key unused.
    const count = bob.socket.earlyFrames.length;
    await alice.device.rename(groupId, "early birds");
    const named = await waitFor("the early frame of the name", () => bob.socket.earlyFrames.slice(count).find((f) => f.groupId === groupId), 15_000, 20);
    const unnamed = fileOf(bob);
    expect(await bob.device.applyEarly(groupId, named.entry)).to.deep.equal(nothing);
    expect(fileOf(bob)).to.deep.equal(unnamed);
    const renamed = await bob.device.catchUp(groupId);
    expect(renamed.events).to.deep.include({ kind: "named", groupId, seq: fileOf(bob).cursor, by: alice.session.username, name: "early birds" });
    expect(refusals(renamed)).to.deep.equal([]);
    await carol.device.catchUp(groupId);
    await settle();
  });

  it("a message applied early whose append was refused for its epoch is re-sent under the same id in the new one, and shown once", async () => {
    const shownBefore = bob.shown.length;
    const conflicts = alice.ds.applications.epochConflicts;
    const commits = APPLICATION_EPOCH_WINDOW + 1;
    let handedEarly: EarlyEntry | undefined;
    // As a relay would hand it on while carol's commits move the group past the epochs it still takes
    // messages of: bob applies it, then the append is refused.
    alice.ds.beforeApplication = async (relayId, offered) => {
      alice.ds.beforeApplication = undefined;
      handedEarly = { epoch: offered.epoch, kind: "application", sender: self(alice), id: relayId, bytes: encodeBase64(offered.bytes), receivedAt: Date.now() };
      expect(bodies(await bob.device.applyEarly(groupId, handedEarly))).to.deep.equal(["raced by commits"]);
      for (let i = 0; i < commits; i++) await carol.device.updateKeys(groupId);
    };
    const { id, seq } = await alice.device.send(groupId, "raced by commits");
    expect(alice.ds.applications.epochConflicts).to.equal(conflicts + 1);
    expect(handedEarly!.id).to.equal(`m${id}`);
    // The log holds the re-sealed message, of the next epoch, under the same id.
    const stored = (await bob.ds.log(groupId, seq - 1, 1)).entries[0];
    expect(stored).to.deep.include({ id: handedEarly!.id, epoch: handedEarly!.epoch + commits });
    expect(stored.bytes).to.not.equal(handedEarly!.bytes);

    const read = await bob.device.catchUp(groupId);
    expect(read.messages).to.deep.equal([]);
    expect(read.events.map((e) => e.kind)).to.deep.equal(Array(commits).fill("commit"));
    expect(shownBodies(bob, shownBefore)).to.deep.equal(["raced by commits"]);
    expect(fileOf(bob).cursor).to.equal(seq);
    expect(fileOf(bob).early).to.equal(undefined);
    expect(bodies(await carol.device.catchUp(groupId))).to.deep.equal(["raced by commits"]);
    await settle();
  });

  it("a message applied early and lost with the relay is re-sent under the same id in the same epoch, and shown once", async () => {
    const shownBefore = bob.shown.length;
    let handedEarly: EarlyEntry | undefined;
    alice.ds.beforeApplication = async (relayId, offered) => {
      alice.ds.beforeApplication = undefined;
      handedEarly = { epoch: offered.epoch, kind: "application", sender: self(alice), id: relayId, bytes: encodeBase64(offered.bytes), receivedAt: Date.now() };
      await bob.device.applyEarly(groupId, handedEarly);
      // The relay died before storing it: the sender hears nothing.
      throw new ChatError("RELAY_UNREACHABLE", "the relay went away");
    };
    const error = await alice.device.send(groupId, "lost with the relay").catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ChatError).with.property("code", "RELAY_UNREACHABLE");
    const early = bob.shown.slice(shownBefore);
    expect(early.map((m) => m.body)).to.deep.equal(["lost with the relay"]);
    // The outbox's retry: the first attempt's id and time, sealed again.
    const { seq } = await alice.device.send(groupId, "lost with the relay", { id: early[0].id, sentAt: early[0].sentAt });
    const stored = (await bob.ds.log(groupId, seq - 1, 1)).entries[0];
    expect(stored).to.deep.include({ id: handedEarly!.id, epoch: handedEarly!.epoch });
    expect(stored.bytes).to.not.equal(handedEarly!.bytes);

    expect(await bob.device.catchUp(groupId)).to.deep.equal(nothing);
    expect(shownBodies(bob, shownBefore)).to.deep.equal(["lost with the relay"]);
    expect(fileOf(bob).cursor).to.equal(seq);
    expect(fileOf(bob).early).to.equal(undefined);
    expect(bodies(await carol.device.catchUp(groupId))).to.deep.equal(["lost with the relay"]);
    await settle();
  });

  it("the re-send of a message read already, handed on early before the relay finds its id stored, carries the same payload id and refuses nothing", async () => {
    const shownBefore = bob.shown.length;
    const { entry, seq, id } = await sendEarly(alice, bob, "sent twice");
    expect(bodies(await bob.device.catchUp(groupId))).to.deep.equal(["sent twice"]);
    const first = bob.shown[bob.shown.length - 1];
    // The sender's retry after a lost answer: sealed again, so its bytes open once more.
    const count = bob.socket.earlyFrames.length;
    const retried = await alice.device.send(groupId, "sent twice", { id, sentAt: first.sentAt });
    expect(retried.seq, "the relay holds the first copy").to.equal(seq);
    const again = await waitFor("the re-send's early frame", () => bob.socket.earlyFrames.slice(count).find((f) => f.entry.id === entry.id), 15_000, 20);
    expect(again.entry.bytes).to.not.equal(entry.bytes);
    const applied = await bob.device.applyEarly(groupId, again.entry);
    // Handed over again under the first's payload id and time, which a history drops as seen.
    expect(applied.messages.map(({ id, sentAt, body }) => ({ id, sentAt, body }))).to.deep.equal([{ id, sentAt: first.sentAt, body: "sent twice" }]);
    expect(shownBodies(bob, shownBefore)).to.deep.equal(["sent twice", "sent twice"]);
    // Its log entry was read already: the id stays among the remembered ones (bounded), nothing is refused.
    expect(await bob.device.catchUp(groupId)).to.deep.equal(nothing);
    expect(fileOf(bob)).to.deep.include({ cursor: seq, early: [entry.id] });
    homeDeviceStore(new Home(bob.home), bob.session.username).writeGroup({ ...fileOf(bob), early: undefined });
    await carol.device.catchUp(groupId);
    await settle();
  });

  it("malformed entries, a device's own message, a replay, and other groups are ignored with nothing saved", async () => {
    const { entry, seq } = await sendEarly(alice, bob, "the genuine one");
    const bobBefore = fileOf(bob);
    const malformed: Record<string, unknown> = {
      "an empty object": {},
      "no bytes": { ...entry, bytes: undefined },
      "bytes that are not base64": { ...entry, bytes: "not base64!" },
      "a handshake": { ...entry, kind: "handshake" },
      "a negative epoch": { ...entry, epoch: -1 },
      "a sender with a bad device id": { ...entry, sender: { username: alice.session.username, deviceId: "../x" } },
      "an id that is no relay message id": { ...entry, id: "" },
    };
    for (const [what, bad] of Object.entries(malformed)) {
      expect(await bob.device.applyEarly(groupId, bad as EarlyEntry), what).to.deep.equal(nothing);
    }
    // A group this device does not have, and a group id that is not one.
    expect(await bob.device.applyEarly(newGroupId(), entry)).to.deep.equal(nothing);
    expect(await bob.device.applyEarly("../groups/x", entry)).to.deep.equal(nothing);
    expect(fileOf(bob)).to.deep.equal(bobBefore);

    // alice's own message, as her other sockets would hear it: this very device never applies it.
    const aliceBefore = fileOf(alice);
    expect(await alice.device.applyEarly(groupId, entry)).to.deep.equal(nothing);
    expect(fileOf(alice)).to.deep.equal(aliceBefore);

    // Nothing above touched bob's state: the genuine frame still applies, and the log passes it over.
    expect(bodies(await bob.device.applyEarly(groupId, entry))).to.deep.equal(["the genuine one"]);
    expect(await bob.device.catchUp(groupId)).to.deep.equal(nothing);
    expect(fileOf(bob).cursor).to.equal(seq);

    // A replay of a message read already: its key is used up, so it is dropped, with no event and nothing saved.
    const read = await sendEarly(alice, bob, "read from the log first");
    expect(bodies(await bob.device.catchUp(groupId))).to.deep.equal(["read from the log first"]);
    const afterRead = fileOf(bob);
    expect(await bob.device.applyEarly(groupId, read.entry)).to.deep.equal(nothing);
    expect(await bob.device.applyEarly(groupId, entry)).to.deep.equal(nothing);
    expect(fileOf(bob)).to.deep.equal(afterRead);
    await carol.device.catchUp(groupId);
    await settle();
  });

  it(`at most ${MAX_EARLY_IDS} ids are remembered per group, the oldest dropped first`, async () => {
    // Ids of early messages whose log entries never came (their senders gave up), as a long run leaves them.
    const store = homeDeviceStore(new Home(bob.home), bob.session.username);
    const stale = Array.from({ length: MAX_EARLY_IDS }, () => `m${newPayloadId()}`);
    store.writeGroup({ ...fileOf(bob), early: stale });
    const { entry, seq } = await sendEarly(alice, bob, "one more");
    expect(bodies(await bob.device.applyEarly(groupId, entry))).to.deep.equal(["one more"]);
    expect(fileOf(bob).early).to.deep.equal([...stale.slice(1), entry.id]);
    expect(await bob.device.catchUp(groupId)).to.deep.equal(nothing);
    expect(fileOf(bob)).to.deep.include({ cursor: seq, early: stale.slice(1) });
    store.writeGroup({ ...fileOf(bob), early: undefined });
    await settle();
  });
});

/** `base64` with its last byte's low bit flipped, base64 again. */
function flipLastByte(base64: string): string {
  const raw = new Uint8Array(Buffer.from(base64, "base64"));
  raw[raw.length - 1] ^= 0x01;
  return encodeBase64(raw);
}

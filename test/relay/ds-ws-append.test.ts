/**
 * Small MLS application messages appended over the WebSocket (AppendFrame, answered AppendedFrame), against
 * a real relay process (MariaDB, anvil with ChatRegistry). The bytes are opaque, as the relay never parses
 * MLS. The append is the one of POST /v2/groups/:groupId/messages: durable before its answer, deduplicated
 * across both paths, announced to the members with the entry; and the socket's session decides who sends,
 * whatever the frame names.
 */
import { expect } from "chai";
import { generateKeyPairSync, randomBytes, sign as ed25519Sign } from "node:crypto";
import { Wallet } from "ethers";
import mysql from "mysql2/promise";
import WebSocket from "ws";
import { authorizeDevice } from "../../protocol/mls/authorize-device";
import { AppendedFrame, ErrorFrame, GroupFrame, MAX_APPENDS_WAITING, NOTICE_ENTRY_MAX_BYTES } from "../../protocol/wire";
import { deviceLoginText } from "../../protocol/wire-devices";
import { encodeBase64 } from "../../protocol/wire-v2";
import { waitFor } from "../helpers/wait";
import { bytes, device, newGroupId, useRawDs, type Listener, type Session } from "./ds-raw-fixture";

const messageId = (prefix = "w") => `${prefix}-${randomBytes(6).toString("hex")}`;
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("relay: small application messages appended over the WebSocket", function () {
  this.timeout(120_000);
  const ds = useRawDs("ds_ws_append");
  const { user, call, request, listen, groupOf } = ds;

  const append = (groupId: string, deviceId: string, epoch: number, id: string, b: string) => ({ type: "append", groupId, deviceId, epoch, id, bytes: b });

  /** The answer to the append `id` on this socket, among the frames from `from` on: its appended frame or its error frame. */
  const answerTo = (l: Listener, id: string, from: number) =>
    waitFor(`the answer to append ${id}`, () => l.frames.slice(from).find((f) => (f.type === "appended" || f.type === "error") && f.id === id), 15_000, 10);

  /** Sends the append and returns its answer (not an earlier answer to a frame with the same id). */
  async function appendOver(l: Listener, frame: ReturnType<typeof append>) {
    const from = l.frames.length;
    l.send(frame);
    return answerTo(l, frame.id, from);
  }

  /** One counter of the relay's /metrics. */
  const metric = async (name: string) => Number(new RegExp(`^${name} ([0-9.e+-]+)$`, "m").exec(await (await fetch(`${ds.relay().url}/metrics`)).text())?.[1]);

  /** The whole log of a small group, read as `who`'s member device. */
  const logOf = async (who: Session, deviceId: string, groupId: string): Promise<any[]> =>
    (await call(who, deviceId, "GET", `/v2/groups/${groupId}/log?after=0&limit=500`)).entries;

  it("an append frame is durable and ordered: answered with its seq, logged as the socket's user sent it, handed to the other members in their notice", async () => {
    const owner = await user("wa_o");
    const member = await user("wa_m");
    const groupId = await groupOf(owner, [member]);
    const ownerSocket = await listen(owner.token);
    const memberSocket = await listen(member.token);

    const sent: { id: string; bytes: string; seq: number; from: Session; deviceId: string }[] = [];
    // Nobody here has read what came before its message (o1 not even its own commit at seq 1; m1 starts
    // after it, then misses the owner's): every sender's cursor stays where it was.
    for (const [from, socket, deviceId, cursor] of [
      [owner, ownerSocket, "o1", 0],
      [owner, ownerSocket, "o1", 0],
      [member, memberSocket, "m1", 1],
      [owner, ownerSocket, "o1", 0],
    ] as const) {
      const id = messageId();
      const b = bytes(200 + sent.length);
      const answer = await appendOver(socket, append(groupId, deviceId, 1, id, b));
      expect(AppendedFrame.safeParse(answer).success, JSON.stringify(answer)).to.equal(true);
      expect(answer).to.deep.equal({ type: "appended", groupId, id, seq: 2 + sent.length, epoch: 1, duplicate: false, cursor });
      sent.push({ id, bytes: b, seq: answer.seq, from, deviceId });
    }

    // Durable and in answer order: the log holds each one at its seq, sent by the socket's user.
    const log = await logOf(member, "m1", groupId);
    expect(log.map((e) => e.seq)).to.deep.equal([1, 2, 3, 4, 5]);
    for (const s of sent) {
      expect(log[s.seq - 1]).to.deep.include({ seq: s.seq, epoch: 1, kind: "application", id: s.id, bytes: s.bytes, sender: device(s.from, s.deviceId) });
    }

    // Every other member's socket hears each one, the notice carrying the log's entry field for field.
    for (const s of sent) {
      const other = s.from === owner ? memberSocket : ownerSocket;
      await waitFor(`the notice of seq ${s.seq}`, () => other.groupFrames(groupId).some((f) => f.seq === s.seq), 15_000, 10);
      const notice = other.groupFrames(groupId).find((f) => f.seq === s.seq);
      expect(GroupFrame.safeParse(notice).success).to.equal(true);
      expect(notice.entry).to.deep.equal(log[s.seq - 1]);
    }
  });

  it("HTTP and the WebSocket share one dedupe: a re-send over either path is a duplicate with the first seq, and the log keeps one entry, the first", async () => {
    const owner = await user("wd_o");
    const member = await user("wd_m");
    const groupId = await groupOf(owner, [member]);
    const socket = await listen(owner.token);

    // HTTP first, then the frame (with other bytes: the stored ones are never replaced).
    const viaHttp = messageId("h");
    const first = bytes(100);
    // o1 has not read its commit at seq 1: its cursor stays at 0 throughout.
    const stored = await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: viaHttp, bytes: first });
    expect(stored).to.deep.equal({ accepted: true, seq: 2, epoch: 1, duplicate: false, cursor: 0 });
    const again = await appendOver(socket, append(groupId, "o1", 1, viaHttp, bytes(100)));
    expect(again).to.deep.equal({ type: "appended", groupId, id: viaHttp, seq: stored.seq, epoch: 1, duplicate: true, cursor: 0 });

    // The frame first, then HTTP, then the frame again.
    const viaWs = messageId("s");
    const wsBytes = bytes(120);
    const appended = await appendOver(socket, append(groupId, "o1", 1, viaWs, wsBytes));
    expect(appended).to.deep.equal({ type: "appended", groupId, id: viaWs, seq: stored.seq + 1, epoch: 1, duplicate: false, cursor: 0 });
    const retried = await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: viaWs, bytes: wsBytes });
    expect(retried).to.deep.equal({ accepted: true, seq: appended.seq, epoch: 1, duplicate: true, cursor: 0 });
    const count = socket.frames.length;
    socket.send(append(groupId, "o1", 1, viaWs, wsBytes));
    await waitFor("the second frame answer", () => socket.frames.slice(count).find((f) => f.type === "appended" && f.id === viaWs), 15_000, 10).then((f) =>
      expect(f).to.include({ seq: appended.seq, duplicate: true, cursor: 0 }),
    );

    const log = await logOf(owner, "o1", groupId);
    expect(log.map((e) => e.id)).to.deep.equal([log[0].id, viaHttp, viaWs]);
    expect(log[1].bytes).to.equal(first);
    expect(log[2].bytes).to.equal(wsBytes);
  });

  it("the answer carries the sending device's cursor: a caught-up device's moves past its own message, a behind one's stays, a retry reports it as it is", async () => {
    const owner = await user("wc_o");
    const member = await user("wc_m");
    const groupId = await groupOf(owner, [member]);
    const socket = await listen(owner.token);
    const moveCursor = async (who: Session, deviceId: string, seq: number) =>
      expect(await call(who, deviceId, "POST", `/v2/groups/${groupId}/cursor`, { seq })).to.deep.equal({ cursor: seq });
    const cursors = async () => ({ o1: await ds.cursorOf(owner, "o1", groupId, device(owner, "o1")), m1: await ds.cursorOf(owner, "o1", groupId, device(member, "m1")) });
    const answered = (id: string, seq: number, cursor: number, duplicate = false) => ({ type: "appended", groupId, id, seq, epoch: 1, duplicate, cursor });

    // o1 reads its commit: caught up, so each of its messages moves its cursor onto it, as the relay stores it.
    await moveCursor(owner, "o1", 1);
    const [a1, a2, a3] = [messageId("a1"), messageId("a2"), messageId("a3")];
    expect(await appendOver(socket, append(groupId, "o1", 1, a1, bytes()))).to.deep.equal(answered(a1, 2, 2));
    expect(await appendOver(socket, append(groupId, "o1", 1, a2, bytes()))).to.deep.equal(answered(a2, 3, 3));
    expect(await cursors()).to.deep.equal({ o1: 3, m1: 1 });
    // m1 has not read 2 and 3: its message (over HTTP, which answers the same) leaves it at 1.
    const b1 = messageId("b1");
    expect(await call(member, "m1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: b1, bytes: bytes() })).to.deep.equal({
      accepted: true,
      seq: 4,
      epoch: 1,
      duplicate: false,
      cursor: 1,
    });
    // ...and now o1 is behind (4 is m1's).
    expect(await appendOver(socket, append(groupId, "o1", 1, a3, bytes()))).to.deep.equal(answered(a3, 5, 3));
    // A retry moves nothing and reports the cursor now, even one standing right before the retried entry.
    await moveCursor(owner, "o1", 4);
    expect(await appendOver(socket, append(groupId, "o1", 1, a3, bytes()))).to.deep.equal(answered(a3, 5, 4, true));
    expect(await appendOver(socket, append(groupId, "o1", 1, a1, bytes()))).to.deep.equal(answered(a1, 2, 4, true));
    expect(await cursors()).to.deep.equal({ o1: 4, m1: 1 });
    // m1 catches up and its next message moves it.
    await moveCursor(member, "m1", 5);
    const b2 = messageId("b2");
    expect(await call(member, "m1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: b2, bytes: bytes() })).to.deep.include({ seq: 6, cursor: 6 });
    expect(await cursors()).to.deep.equal({ o1: 4, m1: 6 });
  });

  it("the socket that appended hears of its entry by its answer only; the user's other socket and the other member get the notice", async () => {
    const owner = await user("wq_o");
    const member = await user("wq_m");
    const groupId = await groupOf(owner, [member]);
    const appending = await listen(owner.token);
    const second = await listen(owner.token);
    const memberSocket = await listen(member.token);
    const seqsOf = (l: Listener) => l.groupFrames(groupId).map((f) => f.seq);
    const noticed = (l: Listener, seq: number, what: string) => waitFor(`${what} hears of seq ${seq}`, () => seqsOf(l).includes(seq), 15_000, 10);

    const id = messageId();
    expect(await appendOver(appending, append(groupId, "o1", 1, id, bytes()))).to.include({ type: "appended", seq: 2 });
    await noticed(second, 2, "the owner's second socket");
    await noticed(memberSocket, 2, "the member");
    expect(second.groupFrames(groupId)[0].entry).to.include({ seq: 2, id });
    // The notices of an entry go out to all sockets at once: once a later notice reaches the appending
    // socket, the notice of its own entry would have been before it on the same connection.
    const later = await call(member, "m1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: messageId("later"), bytes: bytes() });
    expect(later.seq).to.equal(3);
    await noticed(appending, 3, "the appending socket");
    await noticed(second, 3, "the owner's second socket");
    await noticed(memberSocket, 3, "the member");
    // An append over HTTP has no socket of origin: both of the owner's sockets hear of it.
    const overHttp = await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: messageId("http"), bytes: bytes() });
    expect(overHttp.seq).to.equal(4);
    await noticed(appending, 4, "the appending socket");
    await noticed(second, 4, "the owner's second socket");
    await noticed(memberSocket, 4, "the member");

    expect(seqsOf(appending)).to.deep.equal([3, 4]);
    expect(seqsOf(second)).to.deep.equal([2, 3, 4]);
    expect(seqsOf(memberSocket)).to.deep.equal([2, 3, 4]);
    expect(appending.frames.filter((f) => f.type === "appended").map((f) => f.id)).to.deep.equal([id]);
  });

  it("appends sent back to back on one socket are stored in the order they were sent, each group in its own order", async () => {
    const owner = await user("wt_o");
    const member = await user("wt_m");
    const [first, other] = [await groupOf(owner, [member]), await groupOf(owner, [member])];
    const socket = await listen(owner.token);
    // o1 is caught up in the first group: in send order, each append finds its cursor right before its seq.
    await call(owner, "o1", "POST", `/v2/groups/${first}/cursor`, { seq: 1 });

    // 30 to one group interleaved with 10 to another, all written before any answer (within the send burst).
    const firstIds = Array.from({ length: 30 }, (_, i) => `t-${String(i).padStart(2, "0")}-${randomBytes(3).toString("hex")}`);
    const otherIds = Array.from({ length: 10 }, (_, i) => `u-${String(i).padStart(2, "0")}-${randomBytes(3).toString("hex")}`);
    for (let i = 0; i < firstIds.length; i++) {
      socket.send(append(first, "o1", 1, firstIds[i], bytes(48)));
      if (i % 3 === 0) socket.send(append(other, "o1", 1, otherIds[i / 3], bytes(48)));
    }
    const answers = await waitFor(
      "an answer to each append",
      () => {
        const got = socket.frames.filter((f) => f.type === "appended" || f.type === "error");
        return got.length >= firstIds.length + otherIds.length && got;
      },
      30_000,
      10,
    );
    expect(answers.filter((f) => f.type === "error")).to.deep.equal([]);
    const answersIn = (groupId: string) => answers.filter((f) => f.groupId === groupId).map((f) => ({ id: f.id, seq: f.seq, cursor: f.cursor }));
    expect(answersIn(first)).to.deep.equal(firstIds.map((id, i) => ({ id, seq: i + 2, cursor: i + 2 })));
    // o1 never read the other group's commit: behind there, its cursor stays at 0.
    expect(answersIn(other)).to.deep.equal(otherIds.map((id, i) => ({ id, seq: i + 2, cursor: 0 })));
    expect((await logOf(member, "m1", first)).slice(1).map((e) => e.id)).to.deep.equal(firstIds);
    expect((await logOf(member, "m1", other)).slice(1).map((e) => e.id)).to.deep.equal(otherIds);
    expect(await ds.cursorOf(owner, "o1", first, device(owner, "o1"))).to.equal(31);
  });

  it("the answers and notices of appends stored together leave in one write per socket, whole and in order", async () => {
    const owner = await user("wk_o");
    const member = await user("wk_m");
    const groupId = await groupOf(owner, [member]);
    const ownerSocket = await listen(owner.token);
    const memberSocket = await listen(member.token);
    const framesBefore = await metric("chat_ws_frames_sent_total");
    const writesBefore = await metric("chat_ws_socket_writes_total");
    // Reads of each socket's TLS stream, counted from here on (a read may carry several frames).
    const reads = (l: Listener) => {
      const counter = { n: 0 };
      (l.ws as unknown as { _socket: NodeJS.EventEmitter })._socket.on("data", () => counter.n++);
      return counter;
    };
    const ownerReads = reads(ownerSocket);
    const memberReads = reads(memberSocket);

    // Ten appends in one write: the relay reads them in one turn and stores them in one batch.
    const ids = Array.from({ length: 10 }, (_, i) => `k-${i}-${randomBytes(3).toString("hex")}`);
    const transport = (ownerSocket.ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
    transport.cork();
    for (const id of ids) ownerSocket.send(append(groupId, "o1", 1, id, bytes(100)));
    transport.uncork();

    const answers = await waitFor("the ten answers", () => ownerSocket.frames.filter((f) => f.type === "appended").length >= 10 && ownerSocket.frames.filter((f) => f.type === "appended"), 15_000, 10);
    await waitFor("the ten notices", () => memberSocket.groupFrames(groupId).length >= 10, 15_000, 10);
    expect(answers.map((f) => [f.id, f.seq])).to.deep.equal(ids.map((id, i) => [id, i + 2]));
    expect(memberSocket.groupFrames(groupId).map((f) => f.entry.id)).to.deep.equal(ids);
    // One write each way would arrive as one read; a write per frame would mostly arrive as several.
    expect(ownerReads.n, "reads of the owner's ten answers").to.be.at.most(2);
    expect(memberReads.n, "reads of the member's ten notices").to.be.at.most(2);
    expect((await metric("chat_ws_frames_sent_total")) - framesBefore).to.equal(20);
    expect((await metric("chat_ws_socket_writes_total")) - writesBefore).to.be.at.most(4);
  });

  it("counts the store's batches of appends in /metrics: appends sent together share a batch, and its time in flight is added", async () => {
    const owner = await user("wb_o");
    const member = await user("wb_m");
    const groupId = await groupOf(owner, [member]);
    const ownerSocket = await listen(owner.token);
    const totals = async () => ({
      batches: await metric("chat_ds_append_batches_total"),
      items: await metric("chat_ds_append_batch_items_total"),
      busy: await metric("chat_ds_append_batch_busy_seconds_total"),
    });
    const before = await totals();
    const ids = Array.from({ length: 8 }, (_, i) => `b-${i}-${randomBytes(3).toString("hex")}`);
    const transport = (ownerSocket.ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
    transport.cork();
    for (const id of ids) ownerSocket.send(append(groupId, "o1", 1, id, bytes(100)));
    transport.uncork();
    await waitFor("the eight answers", () => ownerSocket.frames.filter((f) => f.type === "appended").length >= 8, 15_000, 10);
    const after = await totals();
    expect(after.items - before.items, "appends written in batches").to.equal(8);
    // Read in one turn (or two, if the stream was split), they share a batch: fewer batches than appends.
    expect(after.batches - before.batches).to.be.within(1, 2);
    expect(after.busy - before.busy, "seconds a batch was in flight").to.be.above(0);
  });

  it("a socket hears of a group's entries in seq order, its own answers and the others' notices alike, also when members' appends are stored together", async () => {
    const users = [await user("wq_a"), await user("wq_b"), await user("wq_c")];
    const groupId = await groupOf(users[0], users.slice(1));
    const sockets = await Promise.all(users.map((u) => listen(u.token)));
    const devices = ["o1", "m1", "m1"];
    // All send without waiting. Each socket has one append in flight at a time, and while one batch is
    // being stored the next gathers the others': two members' appends are stored together again and again.
    const perSocket = 20;
    for (let i = 0; i < perSocket; i++) sockets.forEach((socket, k) => socket.send(append(groupId, devices[k], 1, messageId(`q${k}`), bytes(64))));
    const total = users.length * perSocket;
    // Own entries come as answers, the others' as notices: every seq after the commit, each once, in order.
    const heard = (l: Listener) =>
      l.frames.filter((f) => (f.type === "appended" || (f.type === "group" && f.entry)) && f.groupId === groupId).map((f) => (f.type === "appended" ? f.seq : f.entry.seq));
    for (const socket of sockets) {
      await waitFor("every entry heard", () => heard(socket).length >= total, 30_000, 10);
      expect(socket.frames.filter((f) => f.type === "error")).to.deep.equal([]);
      expect(heard(socket)).to.deep.equal(Array.from({ length: total }, (_, i) => i + 2));
    }
  });

  it("an append at an epoch the group cannot take is answered EPOCH_CONFLICT with its id and the current epoch, and nothing is stored", async () => {
    const owner = await user("we_o");
    const member = await user("we_m");
    const groupId = await groupOf(owner, [member]);
    const socket = await listen(owner.token);

    // Ahead of the group (at epoch 1).
    const ahead = messageId();
    const conflict = await appendOver(socket, append(groupId, "o1", 2, ahead, bytes()));
    expect(ErrorFrame.safeParse(conflict).success, JSON.stringify(conflict)).to.equal(true);
    expect(conflict).to.include({ type: "error", code: "EPOCH_CONFLICT", id: ahead, currentEpoch: 1 });

    // Four commits later (epoch 5), epoch 1 is too old; epoch 2 is still taken (a late application message).
    for (let epoch = 1; epoch < 5; epoch++) {
      await call(owner, "o1", "POST", `/v2/groups/${groupId}/commits`, { epoch, id: `c-${epoch}-${randomBytes(4).toString("hex")}`, bytes: bytes() });
    }
    const stale = messageId();
    expect(await appendOver(socket, append(groupId, "o1", 1, stale, bytes()))).to.include({ code: "EPOCH_CONFLICT", id: stale, currentEpoch: 5 });
    // The HTTP route answers the same.
    const overHttp = await request(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: stale, bytes: bytes() });
    expect(overHttp.status).to.equal(409);
    expect(overHttp.body.error).to.include({ code: "EPOCH_CONFLICT", currentEpoch: 5 });
    const late = messageId();
    expect(await appendOver(socket, append(groupId, "o1", 2, late, bytes()))).to.include({ type: "appended", epoch: 2, seq: 6, duplicate: false });

    const ids = (await logOf(owner, "o1", groupId)).map((e) => e.id);
    expect(ids).to.have.length(6);
    expect(ids).to.include(late);
    expect(ids).to.not.include.members([ahead]);
    expect(ids).to.not.include(stale);
    // A refusal the client can act on: the socket stays open.
    expect(socket.ws.readyState).to.equal(WebSocket.OPEN);
  });

  describe("attacks", () => {
    it("a user outside the group cannot append, under any device id; an unknown group is refused; members hear nothing", async () => {
      const owner = await user("wn_o");
      const member = await user("wn_m");
      const stranger = await user("wn_s");
      const groupId = await groupOf(owner, [member]);
      const heard = await listen(member.token);
      const theirs = await listen(stranger.token);

      for (const deviceId of ["m1", "o1", "s1"]) {
        const id = messageId();
        const refused = await appendOver(theirs, append(groupId, deviceId, 1, id, bytes()));
        expect(refused, deviceId).to.include({ type: "error", code: "NOT_GROUP_MEMBER", id });
      }
      const unknown = messageId();
      expect(await appendOver(theirs, append(newGroupId(), "s1", 0, unknown, bytes()))).to.include({ code: "UNKNOWN_GROUP", id: unknown });

      expect((await logOf(owner, "o1", groupId)).map((e) => e.seq)).to.deep.equal([1]);
      // A later genuine message's notice is the first the member hears after the group's creation.
      const genuine = await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: messageId(), bytes: bytes() });
      await waitFor("the genuine notice", () => heard.groupFrames(groupId).some((f) => f.seq === genuine.seq), 15_000, 10);
      expect(heard.groupFrames(groupId).every((f) => f.seq === 1 || f.seq === genuine.seq)).to.equal(true);
    });

    it("a member naming another user's device id, and claiming that user in the frame, appends as itself: the log's sender is the socket's user", async () => {
      const owner = await user("wi_o");
      const member = await user("wi_m");
      // The member has a device called o1 too, so the name alone says nothing about the user.
      const groupId = newGroupId();
      await call(owner, "o1", "POST", "/v2/groups", { groupId, members: [device(owner, "o1")] });
      await call(owner, "o1", "POST", `/v2/groups/${groupId}/commits`, { epoch: 0, id: messageId("add"), bytes: bytes(), add: [device(member, "o1")] });
      const ownerId = messageId();
      const ownerBytes = bytes(80);
      const ownerMessage = await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: ownerId, bytes: ownerBytes });

      const socket = await listen(member.token);
      const forged = bytes(80);
      // The same message id as the owner's, and the owner named every way a frame could: not a re-send of the owner's.
      const answer = await appendOver(socket, {
        ...append(groupId, "o1", 1, ownerId, forged),
        username: owner.username,
        from: owner.username,
        sender: device(owner, "o1"),
      } as ReturnType<typeof append>);
      expect(answer).to.include({ type: "appended", duplicate: false, seq: ownerMessage.seq + 1 });

      const log = await logOf(owner, "o1", groupId);
      expect(log[ownerMessage.seq - 1]).to.deep.include({ id: ownerId, bytes: ownerBytes, sender: device(owner, "o1") });
      expect(log[answer.seq - 1]).to.deep.include({ id: ownerId, bytes: forged, sender: device(member, "o1") });
      expect(log).to.have.length(3);
    });

    it("oversize or malformed frames are refused BAD_REQUEST and store nothing; exactly NOTICE_ENTRY_MAX_BYTES is taken", async () => {
      const owner = await user("wo_o");
      const member = await user("wo_m");
      const groupId = await groupOf(owner, [member]);
      const socket = await listen(owner.token);

      const oversize = messageId("big");
      expect(await appendOver(socket, append(groupId, "o1", 1, oversize, bytes(2 * NOTICE_ENTRY_MAX_BYTES)))).to.include({ type: "error", code: "BAD_REQUEST", id: oversize });
      // Refused for the bytes' size, not the text's: a longer text that is not base64 is refused the same way.
      const padded = messageId("pad");
      expect(await appendOver(socket, append(groupId, "o1", 1, padded, "=" + bytes(64)))).to.include({ code: "BAD_REQUEST", id: padded });
      const badGroup = messageId("grp");
      expect(await appendOver(socket, append(groupId.toUpperCase(), "o1", 1, badGroup, bytes()))).to.include({ code: "BAD_REQUEST", id: badGroup });
      const count = socket.frames.length;
      socket.send(append(groupId, "o1", 1, "not a valid id!", bytes()));
      const badId = await waitFor("the refusal of a bad id", () => socket.frames.slice(count).find((f) => f.type === "error"), 15_000, 10);
      expect(badId.code).to.equal("BAD_REQUEST");
      expect((await logOf(owner, "o1", groupId)).map((e) => e.seq)).to.deep.equal([1]);

      const largest = messageId("max");
      const maxBytes = bytes(NOTICE_ENTRY_MAX_BYTES);
      expect(await appendOver(socket, append(groupId, "o1", 1, largest, maxBytes))).to.include({ type: "appended", seq: 2 });
      expect((await logOf(owner, "o1", groupId))[1]).to.deep.include({ id: largest, bytes: maxBytes });
      expect(socket.ws.readyState).to.equal(WebSocket.OPEN);
    });

    it("one byte over NOTICE_ENTRY_MAX_BYTES is refused BAD_REQUEST and stores nothing (its base64 is as long as the bound's)", async () => {
      const owner = await user("wb_o");
      const member = await user("wb_m");
      const groupId = await groupOf(owner, [member]);
      const socket = await listen(owner.token);
      const over = messageId("over");
      const text = bytes(NOTICE_ENTRY_MAX_BYTES + 1);
      // 8193 bytes take as many base64 characters as 8192 (one group of four without padding instead of one with it).
      expect(text.length).to.equal(bytes(NOTICE_ENTRY_MAX_BYTES).length);
      expect(await appendOver(socket, append(groupId, "o1", 1, over, text))).to.include({ type: "error", code: "BAD_REQUEST", id: over });
      expect((await logOf(owner, "o1", groupId)).map((e) => e.seq)).to.deep.equal([1]);
    });

    it(`while storage is stuck, a socket has at most MAX_APPENDS_WAITING (${MAX_APPENDS_WAITING}) appends waiting: the rest are refused RATE_LIMITED at once, and the waiting ones are stored once it moves`, async () => {
      const owner = await user("wb_o");
      const member = await user("wb_m");
      const groupId = await groupOf(owner, [member]);
      const socket = await listen(owner.token);
      // Another client of the database holds the group's row: every append to it waits for the lock.
      const holder = await mysql.createConnection(ds.database().url);
      try {
        await holder.query("START TRANSACTION");
        await holder.query("SELECT id FROM ds_groups WHERE id = UNHEX(?) FOR UPDATE", [groupId]);
        const ids = Array.from({ length: MAX_APPENDS_WAITING + 10 }, (_, i) => `stuck-${String(i).padStart(3, "0")}-${randomBytes(3).toString("hex")}`);
        for (const id of ids) socket.send(append(groupId, "o1", 1, id, bytes(32)));
        const refused = await waitFor("the refusals beyond the bound", () => {
          const got = socket.frames.filter((f) => f.type === "error" && ids.includes(f.id));
          return got.length >= 10 && got;
        }, 15_000, 10);
        expect(refused.map((f) => f.id)).to.deep.equal(ids.slice(MAX_APPENDS_WAITING));
        for (const f of refused) expect(f).to.include({ code: "RATE_LIMITED", retryable: true }).and.to.have.property("retryAfterMs").that.is.greaterThan(0);
        expect(socket.frames.filter((f) => f.type === "appended")).to.deep.equal([]);
        await holder.query("ROLLBACK");
        const appended = await waitFor("the waiting appends stored", () => {
          const got = socket.frames.filter((f) => f.type === "appended" && ids.includes(f.id));
          return got.length >= MAX_APPENDS_WAITING && got;
        }, 30_000, 20);
        expect(appended.map((f) => f.id)).to.deep.equal(ids.slice(0, MAX_APPENDS_WAITING));
        expect((await logOf(owner, "o1", groupId)).slice(1).map((e) => e.id)).to.deep.equal(ids.slice(0, MAX_APPENDS_WAITING));
      } finally {
        await holder.end();
      }
    });

    it("a burst of appends beyond the connection's send rate gets RATE_LIMITED with each refused id; only the answered appends are stored", async () => {
      const owner = await user("wr_o");
      const member = await user("wr_m");
      const groupId = await groupOf(owner, [member]);
      const socket = await listen(owner.token);

      // The relay takes 100 sends a second per connection with a burst of 200 (relay/ws/attach.ts): 300 within
      // a second exceed it. They go in waves of 50, each once the one before is answered, so that no more than
      // MAX_APPENDS_WAITING wait to be stored at once (that bound has a test of its own).
      const ids = Array.from({ length: 300 }, (_, i) => `burst-${String(i).padStart(3, "0")}-${randomBytes(3).toString("hex")}`);
      const answered = () => socket.frames.filter((f) => (f.type === "appended" || f.type === "error") && ids.includes(f.id)).length;
      for (let wave = 0; wave < ids.length; wave += 50) {
        for (const id of ids.slice(wave, wave + 50)) socket.send(append(groupId, "o1", 1, id, bytes(32)));
        await waitFor(`the answers to the wave from ${wave}`, () => answered() >= wave + 50, 15_000, 5);
      }
      const answers = await waitFor(
        "an answer to every append of the burst",
        () => {
          const got = socket.frames.filter((f) => (f.type === "appended" || f.type === "error") && ids.includes(f.id));
          return got.length >= ids.length && got;
        },
        30_000,
        20,
      );
      expect(answers).to.have.length(ids.length);
      const limited = answers.filter((f) => f.type === "error");
      const appended = answers.filter((f) => f.type === "appended");
      expect(limited.length, "some appends are refused").to.be.greaterThan(0);
      expect(appended.length, "the burst is taken").to.be.at.least(200);
      for (const f of limited) expect(f).to.include({ code: "RATE_LIMITED", retryable: true }).and.to.have.property("retryAfterMs").that.is.greaterThan(0);
      expect(new Set(answers.map((f) => f.id)).size).to.equal(ids.length);

      const log = await logOf(owner, "o1", groupId);
      expect(log.slice(1).map((e) => e.id)).to.have.members(appended.map((f) => f.id));
      expect(log.map((e) => e.seq)).to.deep.equal(Array.from({ length: appended.length + 1 }, (_, i) => i + 1));

      // Once the wait is over, a refused id goes through.
      const retry = limited[0];
      await new Promise((r) => setTimeout(r, retry.retryAfterMs + 50));
      const count = socket.frames.length;
      socket.send(append(groupId, "o1", 1, retry.id, bytes(32)));
      const later = await waitFor("the retry's answer", () => socket.frames.slice(count).find((f) => f.id === retry.id), 15_000, 10);
      expect(later).to.include({ type: "appended", duplicate: false, seq: appended.length + 2 });
    });

    it("a linked device's session appends only as its own device: naming another device of its user is FORBIDDEN", async () => {
      const owner = await user("wl_o");
      const member = await user("wl_m");
      const groupId = await groupOf(owner, [member]);
      const linked = await linkDevice(member);
      await call(owner, "o1", "POST", `/v2/groups/${groupId}/commits`, { epoch: 1, id: messageId("add"), bytes: bytes(), add: [device(member, linked.deviceId)] });
      const socket = await listen(linked.token);

      // m1 is the member's other device, in the group: this session may not speak for it.
      const asOther = messageId();
      expect(await appendOver(socket, append(groupId, "m1", 2, asOther, bytes()))).to.include({ type: "error", code: "FORBIDDEN", id: asOther });
      // HTTP refuses the same.
      const overHttp = await request(linked, "m1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 2, id: asOther, bytes: bytes() });
      expect(overHttp.status).to.equal(403);
      expect((await logOf(owner, "o1", groupId)).map((e) => e.id)).to.not.include(asOther);

      const asItself = messageId();
      const answer = await appendOver(socket, append(groupId, linked.deviceId, 2, asItself, bytes()));
      expect(answer).to.include({ type: "appended", duplicate: false });
      expect((await logOf(owner, "o1", groupId))[answer.seq - 1]).to.deep.include({ id: asItself, sender: device(member, linked.deviceId) });
    });
  });

  /**
   * Links a new device for `who` as the clients do (a link request, approved with a credential signed by
   * the identity key) and logs it in with its own Ed25519 key: a session bound to that device.
   */
  async function linkDevice(who: Session): Promise<{ deviceId: string; token: string }> {
    const url = ds.relay().url;
    const { deployed } = ds.chain();
    const post = async (pathname: string, body: unknown, token?: string) => {
      const response = await fetch(`${url}${pathname}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(body),
      });
      const answer = await response.json();
      expect(response.status, `${pathname}: ${JSON.stringify(answer)}`).to.equal(200);
      return answer;
    };
    const { publicKey, privateKey } = generateKeyPairSync("ed25519");
    const devicePublicKey = new Uint8Array(Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url"));
    const link = await post("/v2/device-links", { username: who.username, devicePublicKey: hex(devicePublicKey), deviceName: "laptop" });
    const credential = await authorizeDevice({
      username: who.username,
      keyIndex: 0,
      chainId: deployed.chainId,
      contract: deployed.address,
      devicePublicKey,
      sign: (text) => new Wallet(who.identity.privateKey).signMessage(text),
    });
    const approved = await post(`/v2/device-links/${link.code}/approve`, { credential: encodeBase64(credential.identity) }, who.token);
    const { challenge } = await post("/v1/login/challenge", { username: who.username });
    const text = deviceLoginText({ username: who.username, challenge, chainId: deployed.chainId, contract: deployed.address, deviceId: approved.deviceId });
    const signature = hex(ed25519Sign(null, Buffer.from(text, "utf8"), privateKey));
    const session = await post("/v1/login/device", { username: who.username, deviceId: approved.deviceId, credential: encodeBase64(credential.identity), challenge, signature });
    return { deviceId: approved.deviceId, token: session.token };
  }
});

/**
 * client-core's SocketAppends and DeliveryServiceClient over a real relay process (MariaDB, anvil with
 * ChatRegistry), through a raw WebSocket: small application messages appended by frame are the HTTP
 * append (same answers, same refusals, one entry per id across both paths), and a socket that drops after
 * the relay stored a message, or never answers, leaves the client to send the same id over HTTP, which the
 * relay answers as the first copy. The bytes are opaque: the relay never parses MLS.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import WebSocket from "ws";
import { DsClient } from "../../cli/mls/ds-client";
import { SocketAppends, SocketAppendUnavailable } from "../../client-core/socket-appends";
import { ChatError } from "../../protocol/errors";
import { NOTICE_ENTRY_MAX_BYTES, WS_PATH } from "../../protocol/wire";
import { encodeBase64 } from "../../protocol/wire-v2";
import { sleep, waitFor } from "../helpers/wait";
import { startCutProxy, type CutProxy } from "../helpers/ws-cut-proxy";
import { device, newGroupId, useRawDs, type Session } from "./ds-raw-fixture";

const rawBytes = (n = 64) => new Uint8Array(randomBytes(n));
const newId = (prefix = "m") => `${prefix}-${randomBytes(6).toString("hex")}`;

/** A socket of `token`'s user at `base`, wired to a SocketAppends as a client would wire it. */
interface Wired {
  ws: WebSocket;
  appends: SocketAppends;
  /** frames the correlator did not take */
  others: any[];
}

describe("client-core SocketAppends: appends and cursor moves over a real relay's WebSocket", function () {
  this.timeout(300_000);
  const ds = useRawDs("socket_appends");
  const { user, call, groupOf, cursorOf } = ds;
  let proxy: CutProxy;
  const sockets: WebSocket[] = [];

  before(async () => {
    proxy = await startCutProxy(ds.relay().url);
  });
  after(async () => {
    for (const ws of sockets) ws.terminate();
    await proxy?.close();
  });

  /** Opens a socket (directly, or through the cutting proxy) and wires a SocketAppends to it. */
  function wire(who: Session, options: { base?: string; timeoutMs?: number; maxPending?: number } = {}): Promise<Wired> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket((options.base ?? ds.relay().url).replace(/^http/, "ws") + WS_PATH, { headers: { authorization: `Bearer ${who.token}` }, perMessageDeflate: false });
      sockets.push(ws);
      const appends = new SocketAppends({
        send: (text) => {
          if (ws.readyState !== WebSocket.OPEN) return false;
          ws.send(text);
          return true;
        },
        timeoutMs: options.timeoutMs,
        maxPending: options.maxPending,
      });
      const wired: Wired = { ws, appends, others: [] };
      let ready = false;
      ws.on("message", (data) => {
        const frame = JSON.parse(data.toString());
        if (appends.handle(frame)) return;
        wired.others.push(frame);
        if (frame.type === "ready" && !ready) {
          ready = true;
          resolve(wired);
        }
      });
      ws.on("close", () => appends.closed());
      ws.on("error", reject);
    });
  }

  const logIds = async (who: Session, deviceId: string, groupId: string) => (await call(who, deviceId, "GET", `/v2/groups/${groupId}/log?after=0&limit=100`)).entries.map((e: any) => e.id);

  /** What an append does, as the code of its refusal or its result: the same over both paths. */
  const outcome = (task: Promise<unknown>): Promise<{ result?: unknown; code?: string }> =>
    task.then((result) => ({ result }), (error) => ({ code: error instanceof ChatError ? error.code : `not a ChatError: ${error}` }));

  it("an append frame is answered with the seq; a re-send of its id, by frame or by POST, is the same entry (duplicate)", async () => {
    const owner = await user("sa_o");
    const member = await user("sa_m");
    const groupId = await groupOf(owner, [member]);
    const { appends } = await wire(owner);
    const id = newId();
    const bytes = encodeBase64(rawBytes(300));
    const first = await appends.append(groupId, { deviceId: "o1", epoch: 1, id, bytes });
    // The owner's device has not moved past the group's first entry: its cursor stays where it was.
    expect(first).to.deep.equal({ accepted: true, seq: 2, epoch: 1, duplicate: false, cursor: 0 });
    expect(await appends.append(groupId, { deviceId: "o1", epoch: 1, id, bytes })).to.deep.equal({ ...first, duplicate: true });
    const posted = await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id, bytes });
    expect(posted).to.include({ accepted: true, seq: 2, duplicate: true });
    const ids = await logIds(member, "m1", groupId);
    expect(ids).to.have.length(2);
    expect(ids[1]).to.equal(id);
    // The member reads the same bytes the frame carried.
    const entry = (await call(member, "m1", "GET", `/v2/groups/${groupId}/log?after=1&limit=1`)).entries[0];
    expect(entry).to.deep.include({ seq: 2, epoch: 1, kind: "application", id, bytes, sender: device(owner, "o1") });
    expect(appends.waiting).to.equal(0);
  });

  it("refusals and epoch conflicts are what the HTTP path gives for the same append", async () => {
    const owner = await user("sr_o");
    const member = await user("sr_m");
    const stranger = await user("sr_s");
    const groupId = await groupOf(owner, [member]);
    const [own, theirs] = [await wire(owner), await wire(stranger)];
    const http = (who: Session, deviceId: string) => new DsClient({ url: ds.relay().url, token: who.token, deviceId });
    const cases: { what: string; who: Session; wired: Wired; deviceId: string; groupId: string; epoch: number }[] = [
      { what: "the previous epoch", who: owner, wired: own, deviceId: "o1", groupId, epoch: 0 },
      { what: "a future epoch", who: owner, wired: own, deviceId: "o1", groupId, epoch: 7 },
      { what: "a device of the user that is not in the group", who: owner, wired: own, deviceId: "o2", groupId, epoch: 1 },
      { what: "a user who is not a member", who: stranger, wired: theirs, deviceId: "m1", groupId, epoch: 1 },
      { what: "a group that does not exist", who: owner, wired: own, deviceId: "o1", groupId: newGroupId(), epoch: 0 },
    ];
    const outcomes: string[] = [];
    for (const c of cases) {
      const bytes = rawBytes(100);
      const bySocket = await outcome(c.wired.appends.append(c.groupId, { deviceId: c.deviceId, epoch: c.epoch, id: newId(), bytes: encodeBase64(bytes) }));
      const byHttp = await outcome(http(c.who, c.deviceId).sendApplication(c.groupId, { epoch: c.epoch, id: newId(), bytes }));
      // Each stored message has its own seq; all else is the same.
      const noSeq = (o: { result?: unknown; code?: string }) => (o.result && typeof o.result === "object" && "seq" in o.result ? { result: { ...o.result, seq: "any" } } : o);
      expect(noSeq(bySocket), c.what).to.deep.equal(noSeq(byHttp));
      outcomes.push(`${c.what}: ${bySocket.code ?? JSON.stringify(noSeq(bySocket).result)}`);
    }
    console.log(`      ${outcomes.join("; ")}`);
    // Both sockets are still open.
    expect([own.ws.readyState, theirs.ws.readyState]).to.deep.equal([WebSocket.OPEN, WebSocket.OPEN]);
  });

  it("a socket cut after the relay stored the message: DeliveryServiceClient sends the same id over HTTP and gets the first seq; one entry", async () => {
    const owner = await user("sc_o");
    const member = await user("sc_m");
    const groupId = await groupOf(owner, [member]);
    const cutOne = await wire(owner, { base: proxy.url });
    const client = new DsClient({ url: proxy.url, token: owner.token, deviceId: "o1", socket: cutOne.appends });

    // While the socket is open, a small message goes over it and not over HTTP.
    const firstId = newId();
    const overSocket = await client.sendApplication(groupId, { epoch: 1, id: firstId, bytes: rawBytes(200) });
    expect(overSocket).to.include({ accepted: true, seq: 2, duplicate: false });
    expect(proxy.frames.filter((f) => f.type === "append").map((f) => f.id)).to.deep.equal([firstId]);
    expect(proxy.postedIds).to.not.include(firstId);

    proxy.armCut();
    const id = newId();
    const result = await client.sendApplication(groupId, { epoch: 1, id, bytes: rawBytes(200) });
    // The relay stored the frame's copy before the cut; the POST with the same id is answered as that one.
    expect(proxy.cut.map((f) => f.id)).to.deep.equal([id]);
    expect(proxy.postedIds).to.include(id);
    expect(result).to.deep.equal({ accepted: true, seq: 3, epoch: 1, duplicate: true, cursor: 0 });
    expect((await logIds(member, "m1", groupId)).filter((x: string) => x === id)).to.have.length(1);
    expect(cutOne.ws.readyState).to.be.oneOf([WebSocket.CLOSING, WebSocket.CLOSED]);

    // With the socket gone, the next message goes straight to HTTP.
    const after = await client.sendApplication(groupId, { epoch: 1, id: newId(), bytes: rawBytes(200) });
    expect(after).to.include({ accepted: true, seq: 4, duplicate: false });
    // A large message never rides the socket, even an open one.
    const open = await wire(owner);
    const large = await new DsClient({ url: ds.relay().url, token: owner.token, deviceId: "o1", socket: open.appends }).sendApplication(groupId, { epoch: 1, id: newId(), bytes: rawBytes(NOTICE_ENTRY_MAX_BYTES + 1) });
    expect(large).to.include({ accepted: true, seq: 5, duplicate: false });
    expect(open.appends.waiting).to.equal(0);
  });

  it("an append the socket never answers times out to HTTP; past the cap an append is refused at once, to go over HTTP", async () => {
    const owner = await user("st_o");
    const member = await user("st_m");
    const groupId = await groupOf(owner, [member]);
    // A socket that takes frames and never delivers them: the relay hears nothing.
    const sent: string[] = [];
    const silent = new SocketAppends({ send: (text) => (sent.push(text), true), timeoutMs: 300, maxPending: 1 });
    const client = new DsClient({ url: ds.relay().url, token: owner.token, deviceId: "o1", socket: silent });
    const id = newId();
    const result = await client.sendApplication(groupId, { epoch: 1, id, bytes: rawBytes(100) });
    expect(result).to.include({ accepted: true, seq: 2, duplicate: false });
    expect(JSON.parse(sent[0])).to.include({ type: "append", groupId, deviceId: "o1", epoch: 1, id });
    expect(silent.waiting).to.equal(0);

    const waiting = silent.append(groupId, { deviceId: "o1", epoch: 1, id: newId(), bytes: encodeBase64(rawBytes()) }).catch((error) => error);
    const refused = await silent.append(groupId, { deviceId: "o1", epoch: 1, id: newId(), bytes: encodeBase64(rawBytes()) }).catch((error) => error);
    expect(refused).to.be.instanceOf(SocketAppendUnavailable).with.property("reason", "busy");
    expect(await waiting).to.be.instanceOf(SocketAppendUnavailable).with.property("reason", "timeout");
    // A closed socket: refused at once, nothing pending.
    const closed = await new SocketAppends({ send: () => false }).append(groupId, { deviceId: "o1", epoch: 1, id: newId(), bytes: encodeBase64(rawBytes()) }).catch((error) => error);
    expect(closed).to.be.instanceOf(SocketAppendUnavailable).with.property("reason", "closed");
  });

  it("cursor moves go as frames; one lost with its socket is sent again by the next sync that finds the relay short of it", async () => {
    const owner = await user("sk_o");
    const member = await user("sk_m");
    const groupId = await groupOf(owner, [member]);
    for (let i = 0; i < 3; i++) await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: newId(), bytes: encodeBase64(rawBytes()) });
    const { ws, appends } = await wire(member);
    const client = new DsClient({ url: ds.relay().url, token: member.token, deviceId: "m1", socket: appends });
    expect(await client.advanceCursor(groupId, 2)).to.deep.equal({ cursor: 2 });
    await waitFor("the framed cursor move", async () => (await cursorOf(owner, "o1", groupId, device(member, "m1"))) === 2, 15_000, 50);

    // The next frame is lost on the way (a socket that drops it), the relay's cursor stays behind.
    let lose = true;
    const lossy = new SocketAppends({ send: (text) => (lose ? ((lose = false), true) : (ws.send(text), true)) });
    const lossyClient = new DsClient({ url: ds.relay().url, token: member.token, deviceId: "m1", socket: lossy });
    expect(await lossyClient.advanceCursor(groupId, 4)).to.deep.equal({ cursor: 4 });
    await sleep(300);
    expect(await cursorOf(owner, "o1", groupId, device(member, "m1"))).to.equal(2);
    // A sync right away leaves a move just sent to arrive; one a while later sends it again.
    expect((await lossyClient.sync()).groups.find((g) => g.groupId === groupId)).to.include({ cursor: 2, lastSeq: 4 });
    await sleep(2_100);
    await lossyClient.sync();
    await waitFor("the re-sent cursor move", async () => (await cursorOf(owner, "o1", groupId, device(member, "m1"))) === 4, 15_000, 50);
    expect((await lossyClient.sync()).groups.find((g) => g.groupId === groupId)).to.equal(undefined);
  });
});

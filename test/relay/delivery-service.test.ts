/**
 * The relay's /v2 Delivery Service routes over real HTTP: authentication per (user, device), membership,
 * first-come-wins commits with their welcomes, idempotent appends, paging, cursors and sync. The MLS bytes
 * are opaque to the relay, so random bytes stand in for them here; the MLS side is test/cli/mls-client.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { encodeBase64 } from "../../protocol/wire-v2";
import { login, registerUser, startRelay, type RelayFixture } from "./accounts-fixture";
import { startChain, type ChainFixture } from "../helpers/chain";
import { newTestUser, uniqueUsername, type TestUser } from "../helpers/users";

describe("relay: MLS Delivery Service over HTTP (/v2)", function () {
  this.timeout(120_000);
  let chain: ChainFixture;
  let relay: RelayFixture;

  before(async () => {
    chain = await startChain();
    relay = await startRelay({ chain });
  });
  after(async () => {
    await relay?.close();
    await chain?.close();
  });

  async function session(prefix: string): Promise<TestUser & { token: string }> {
    const u = newTestUser(uniqueUsername(prefix));
    expect((await registerUser(relay.url, chain.domain, u)).status).to.equal(200);
    const answer = await login(relay.url, chain.domain, u);
    expect(answer.status).to.equal(200);
    return { ...u, token: answer.body.token };
  }

  async function call(who: { token: string } | null, deviceId: string | null, method: string, pathname: string, body?: unknown) {
    const headers: Record<string, string> = {};
    if (who) headers.authorization = `Bearer ${who.token}`;
    if (deviceId !== null) headers["x-device-id"] = deviceId;
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(`${relay.url}${pathname}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : undefined };
  }

  const bytes = (n = 64) => encodeBase64(new Uint8Array(randomBytes(n)));
  const groupId = () => randomBytes(32).toString("hex");
  const notAfter = () => Date.now() + 24 * 3600 * 1000;

  it("refuses requests without a valid session or device id, with stable codes", async () => {
    const alice = await session("da");
    expect((await call(null, "d1", "GET", "/v2/sync")).body.error.code).to.equal("UNAUTHORIZED");
    expect((await call({ token: `${alice.token}x` }, "d1", "GET", "/v2/sync")).status).to.equal(401);
    const noDevice = await call(alice, null, "GET", "/v2/sync");
    expect(noDevice.status).to.equal(400);
    expect(noDevice.body.error.code).to.equal("BAD_REQUEST");
    expect((await call(alice, "bad device!", "GET", "/v2/sync")).status).to.equal(400);
    expect((await call(alice, "d1", "GET", "/v2/sync")).body).to.deep.equal({ groups: [], welcomes: [] });
  });

  it("stores key packages per device and hands each one-time package out once, then the last resort", async () => {
    const bob = await session("db");
    const claimer = await session("dc");
    const put = await call(bob, "phone", "POST", "/v2/key-packages", {
      oneTime: [{ bytes: bytes(), notAfter: notAfter() }, { bytes: bytes(), notAfter: notAfter() }],
      lastResort: { bytes: bytes(), notAfter: notAfter() },
    });
    expect(put.body).to.deep.equal({ oneTime: 2, lastResort: true });
    expect((await call(bob, "phone", "GET", "/v2/key-packages/count")).body).to.deep.equal({ oneTime: 2, lastResort: true });
    const claims = [];
    for (let i = 0; i < 3; i++) claims.push((await call(claimer, "c1", "POST", `/v2/users/${bob.username}/key-packages/claim`, {})).body.keyPackages);
    expect(claims.map((c) => c.length)).to.deep.equal([1, 1, 1]);
    expect(claims.map((c) => c[0].lastResort)).to.deep.equal([false, false, true]);
    expect(new Set(claims.map((c) => c[0].bytes)).size).to.equal(3);
    expect(claims.every((c) => c[0].deviceId === "phone")).to.equal(true);
    expect((await call(bob, "phone", "GET", "/v2/key-packages/count")).body.oneTime).to.equal(0);
    const bad = await call(bob, "phone", "POST", "/v2/key-packages", { oneTime: [{ bytes: "not base64!", notAfter: notAfter() }] });
    expect(bad.status).to.equal(400);
    const unknown = await call(claimer, "c1", "POST", `/v2/users/nobody_here/key-packages/claim`, {});
    expect(unknown.body.error.code).to.equal("NOT_FOUND");
  });

  it("orders commits first come first served per epoch, delivers welcomes, and gates the log by membership", async () => {
    const alice = await session("ga");
    const bob = await session("gb");
    const carol = await session("gc");
    const id = groupId();
    const notCreator = await call(alice, "a1", "POST", "/v2/groups", { groupId: id, members: [{ username: bob.username, deviceId: "b1" }] });
    expect(notCreator.status).to.equal(400);
    expect((await call(alice, "a1", "POST", "/v2/groups", { groupId: id, members: [{ username: alice.username, deviceId: "a1" }] })).body).to.deep.equal({
      groupId: id,
      epoch: 0,
      lastSeq: 0,
    });
    expect((await call(alice, "a1", "POST", "/v2/groups", { groupId: id, members: [{ username: alice.username, deviceId: "a1" }] })).body.error.code).to.equal(
      "GROUP_EXISTS",
    );

    // a non-member can neither commit nor read
    const intruder = await call(carol, "c1", "POST", `/v2/groups/${id}/commits`, { epoch: 0, id: "x1", bytes: bytes() });
    expect(intruder.status).to.equal(403);
    expect(intruder.body.error.code).to.equal("NOT_GROUP_MEMBER");
    expect((await call(carol, "c1", "GET", `/v2/groups/${id}/log`)).body.error.code).to.equal("NOT_GROUP_MEMBER");

    const welcome = bytes(200);
    const add = await call(alice, "a1", "POST", `/v2/groups/${id}/commits`, {
      epoch: 0,
      id: "commit-1",
      bytes: bytes(),
      add: [{ username: bob.username, deviceId: "b1" }],
      welcomes: [{ username: bob.username, deviceId: "b1", bytes: welcome }],
    });
    expect(add.body).to.deep.equal({ accepted: true, seq: 1, epoch: 0, duplicate: false });
    // the same commit retried is not stored twice
    expect((await call(alice, "a1", "POST", `/v2/groups/${id}/commits`, { epoch: 0, id: "commit-1", bytes: bytes() })).body.duplicate).to.equal(true);

    const sync = await call(bob, "b1", "GET", "/v2/sync");
    expect(sync.body.welcomes.map((w: { bytes: string; groupId: string }) => [w.groupId, w.bytes])).to.deep.equal([[id, welcome]]);
    // another device of bob gets nothing
    expect((await call(bob, "b2", "GET", "/v2/sync")).body.welcomes).to.deep.equal([]);
    expect((await call(bob, "b1", "POST", `/v2/welcomes/${sync.body.welcomes[0].id}/ack`, {})).body).to.deep.equal({ ok: true });
    expect((await call(bob, "b1", "GET", "/v2/sync")).body.welcomes).to.deep.equal([]);

    // both commit in epoch 1: bob first wins, alice gets EPOCH_CONFLICT with the current epoch
    expect((await call(bob, "b1", "POST", `/v2/groups/${id}/commits`, { epoch: 1, id: "b-commit", bytes: bytes() })).body.seq).to.equal(2);
    const lost = await call(alice, "a1", "POST", `/v2/groups/${id}/commits`, { epoch: 1, id: "a-commit", bytes: bytes() });
    expect(lost.status).to.equal(409);
    expect(lost.body.error).to.include({ code: "EPOCH_CONFLICT", currentEpoch: 2 });

    // application messages: idempotent on id, refused from a future epoch
    const message = { epoch: 2, id: "m-1", bytes: bytes() };
    expect((await call(alice, "a1", "POST", `/v2/groups/${id}/messages`, message)).body.seq).to.equal(3);
    expect((await call(alice, "a1", "POST", `/v2/groups/${id}/messages`, message)).body).to.include({ seq: 3, duplicate: true });
    expect((await call(alice, "a1", "POST", `/v2/groups/${id}/messages`, { ...message, id: "m-2", epoch: 9 })).body.error.code).to.equal("EPOCH_CONFLICT");

    // bob's cursor starts at the commit that added him; sync lists the group while he is behind
    const behind = await call(bob, "b1", "GET", "/v2/sync");
    expect(behind.body.groups).to.deep.equal([{ groupId: id, cursor: 1, lastSeq: 3, epoch: 2 }]);
    const page = await call(bob, "b1", "GET", `/v2/groups/${id}/log?after=1&limit=1`);
    expect(page.body.entries.map((e: { seq: number; kind: string; id: string }) => [e.seq, e.kind, e.id])).to.deep.equal([[2, "handshake", "b-commit"]]);
    expect((await call(bob, "b1", "GET", `/v2/groups/${id}/log?after=0&limit=5000`)).status).to.equal(400);
    expect((await call(bob, "b1", "POST", `/v2/groups/${id}/cursor`, { seq: 3 })).body).to.deep.equal({ cursor: 3 });
    expect((await call(bob, "b1", "GET", "/v2/sync")).body.groups).to.deep.equal([]);
    const members = await call(alice, "a1", "GET", `/v2/groups/${id}/members`);
    expect(members.body.members.map((m: { username: string }) => m.username).sort()).to.deep.equal([alice.username, bob.username].sort());

    // a removed device loses access at once
    expect(
      (await call(alice, "a1", "POST", `/v2/groups/${id}/commits`, { epoch: 2, id: "rm", bytes: bytes(), remove: [{ username: bob.username, deviceId: "b1" }] }))
        .body.accepted,
    ).to.equal(true);
    expect((await call(bob, "b1", "GET", `/v2/groups/${id}/log`)).status).to.equal(403);
    expect((await call(bob, "b1", "POST", `/v2/groups/${id}/messages`, { epoch: 3, id: "late", bytes: bytes() })).status).to.equal(403);
  });

  it("takes commit bodies larger than the v1 limit (a welcome for a large group)", async () => {
    const alice = await session("la");
    const id = groupId();
    await call(alice, "a1", "POST", "/v2/groups", { groupId: id, members: [{ username: alice.username, deviceId: "a1" }] });
    const big = await call(alice, "a1", "POST", `/v2/groups/${id}/commits`, {
      epoch: 0,
      id: "big",
      bytes: bytes(100_000),
      welcomes: [{ username: alice.username, deviceId: "a2", bytes: bytes(300_000) }],
    });
    expect(big.body.accepted).to.equal(true);
    expect((await call(alice, "a1", "POST", `/v2/groups/${id}/messages`, { epoch: 1, id: "huge", bytes: bytes(300_000) })).status).to.equal(400);
  });
});

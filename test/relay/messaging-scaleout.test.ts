import { expect } from "chai";
import Redis from "ioredis";
import { waitFor } from "../helpers/wait";
import { envelope, isAccepted, isType, REDIS_URL, startRelayPair, type RelayPair } from "./messaging-helpers";

/** Two relay instances, one database, one Redis: a user on one reaches a user on the other. */
describe("messaging: two relays through Redis", function () {
  let pair: RelayPair;

  before(async () => {
    pair = await startRelayPair("chat_scaleout");
  });
  after(async () => pair?.close());

  const open = (relay: number, username: string) => pair.open(relay, username);

  it("delivers live across instances, to each device, in order and once", async () => {
    const { client: alice } = await open(0, "x_alice");
    const { client: bobOnOther } = await open(1, "x_bob");
    const { client: bobOnSame } = await open(0, "x_bob");
    const ids = Array.from({ length: 50 }, (_, i) => `x-${String(i).padStart(6, "0")}`);
    for (const [i, id] of ids.entries()) alice.send({ type: "send", id, to: "x_bob", envelope: envelope(i) });
    for (const id of ids) await alice.next(isAccepted(id));
    for (const bob of [bobOnOther, bobOnSame]) {
      const got = [];
      for (let i = 0; i < ids.length; i++) got.push(await bob.next(isType("message")));
      expect(got.map((m) => m.id)).to.deep.equal(ids);
      expect(got.every((m) => m.from === "x_alice")).to.equal(true);
      // exactly once: nothing else arrives
      let extra = null;
      try {
        extra = await bob.next(isType("message"), 200);
      } catch {}
      expect(extra).to.equal(null);
    }
    // the ack on one instance empties the shared mailbox
    for (const id of ids) bobOnOther.send({ type: "ack", id, from: "x_alice" });
    await waitFor("the shared mailbox emptied", async () => (await pair.mailboxes[1].pending({ recipient: "x_bob", now: Date.now(), limit: 100 })).length === 0, 5_000, 20);
  });

  it("a message stored through one instance is in the backlog on the other", async () => {
    const { client: alice } = await open(1, "y_alice");
    alice.send({ type: "send", id: "y-000001", to: "y_bob", envelope: envelope("offline") });
    await alice.next(isAccepted("y-000001"));
    const { backlog } = await open(0, "y_bob");
    expect(backlog.map((m) => m.id)).to.deep.equal(["y-000001"]);
  });

  it("a user who left an instance gets what was sent meanwhile from the mailbox, on the other", async () => {
    const { client: bob } = await open(1, "z_bob");
    await bob.close();
    const { client: alice } = await open(0, "z_alice");
    alice.send({ type: "send", id: "z-000001", to: "z_bob", envelope: envelope("later") });
    expect((await alice.next(isAccepted("z-000001"))).status).to.equal("stored");
    const { backlog } = await open(1, "z_bob");
    expect(backlog.map((m) => m.id)).to.deep.equal(["z-000001"]);
  });

  it("nothing is missed while an instance's Redis subscription reconnects", async () => {
    const { client: bob } = await open(1, "r_bob");
    const { client: alice } = await open(0, "r_alice");
    // A real outage of relay 1's subscriber: Redis drops that connection (only ours, found by its name).
    const admin = new Redis(REDIS_URL);
    try {
      const list = String(await admin.client("LIST"));
      const ids = list
        .split("\n")
        .filter((line) => /name=eth-chat-bus-/.test(line) && /sub=[1-9]/.test(line))
        .map((line) => /id=(\d+)/.exec(line)![1]);
      expect(ids.length).to.be.greaterThan(0);
      for (const id of ids) await admin.client("KILL", "ID", id);
    } finally {
      admin.disconnect();
    }
    const sent = Array.from({ length: 5 }, (_, i) => `r-${String(i).padStart(6, "0")}`);
    for (const id of sent) alice.send({ type: "send", id, to: "r_bob", envelope: envelope(id) });
    for (const id of sent) await alice.next(isAccepted(id));
    const got = [];
    for (let i = 0; i < sent.length; i++) got.push((await bob.next(isType("message"), 8_000)).id);
    expect(got.sort()).to.deep.equal(sent);
  });
});

/**
 * Delivery receipts and presence: when the recipient acknowledges, the sender's connections hear
 * {type:"receipt"} on this instance and, through Redis, on another; a presence query answers for this
 * instance only. Two relay instances, one MariaDB mailbox, one Redis.
 */
import { expect } from "chai";
import { envelope, isAccepted, isType, startRelayPair, type RelayPair } from "./messaging-helpers";

describe("messaging: delivery receipts and presence", function () {
  let pair: RelayPair;

  before(async () => {
    pair = await startRelayPair("chat_receipts");
  });
  after(async () => pair?.close());

  const open = async (relay: number, username: string) => (await pair.open(relay, username)).client;

  it("the recipient's ack reaches every connection of the sender, here and on the other instance, as a receipt", async () => {
    const aliceHere = await open(0, "r_alice");
    const aliceThere = await open(1, "r_alice");
    const bob = await open(1, "r_bob");
    aliceHere.send({ type: "send", id: "receipt-0001", to: "r_bob", envelope: envelope(1) });
    expect((await aliceHere.next(isAccepted("receipt-0001"))).status).to.equal("stored");
    const message = await bob.next(isType("message"));
    bob.send({ type: "ack", id: message.id, from: message.from });
    for (const alice of [aliceHere, aliceThere]) {
      expect(await alice.next(isType("receipt"))).to.deep.equal({ type: "receipt", id: "receipt-0001", to: "r_bob", status: "delivered" });
    }
    // the recipient gets no receipt of its own ack
    let extra = null;
    try {
      extra = await bob.next(isType("receipt"), 300);
    } catch {}
    expect(extra).to.equal(null);
  });

  it("presence: online when connected to this instance; another instance's connection is not seen (documented limit)", async () => {
    const asker = await open(0, "p_alice");
    asker.send({ type: "presence", user: "p_bob" });
    expect(await asker.next(isType("presence"))).to.deep.equal({ type: "presence", user: "p_bob", online: false });
    await open(1, "p_bob");
    asker.send({ type: "presence", user: "p_bob" });
    expect((await asker.next(isType("presence"))).online).to.equal(false);
    await open(0, "p_bob");
    asker.send({ type: "presence", user: "p_bob" });
    expect((await asker.next(isType("presence"))).online).to.equal(true);
    asker.send({ type: "presence", user: "Not A Name" });
    expect((await asker.next(isType("error"))).code).to.equal("BAD_REQUEST");
  });
});

/**
 * Delivery receipts and presence: when the recipient acknowledges, the sender's connections hear
 * {type:"receipt"} on this instance and, through Redis, on another; a presence query answers for this
 * instance only. Two relay instances, one MariaDB mailbox, one Redis.
 */
import { expect } from "chai";
import type { Pool } from "mysql2/promise";
import type { MessageBus } from "../../relay/bus/bus";
import { createRedisBus } from "../../relay/bus/redis";
import { createMysqlMailbox } from "../../relay/storage/mailbox-mysql";
import type { Mailbox } from "../../relay/storage/mailbox";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { connectReady, createTestPool, envelope, isAccepted, isType, REDIS_URL, startTestRelay, type TestClient, type TestRelay } from "./messaging-helpers";

describe("messaging: delivery receipts and presence", function () {
  let db: TestDatabase;
  let pool: Pool;
  const mailboxes: Mailbox[] = [];
  const buses: MessageBus[] = [];
  const relays: TestRelay[] = [];
  const clients: TestClient[] = [];

  before(async () => {
    db = await createTestDatabase("chat_receipts");
    pool = createTestPool(db.url);
    for (let i = 0; i < 2; i++) {
      const mailbox = createMysqlMailbox(pool);
      await mailbox.migrate();
      const bus = createRedisBus(REDIS_URL);
      await bus.ping();
      mailboxes.push(mailbox);
      buses.push(bus);
      relays.push(await startTestRelay({ mailbox, bus }));
    }
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    for (const r of relays) await r.close();
    for (const b of buses) await b.close();
    for (const m of mailboxes) await m.close();
    await pool?.end();
    await db?.drop();
  });

  const open = async (relay: number, username: string) => {
    const r = await connectReady(relays[relay].url, username);
    clients.push(r.client);
    return r.client;
  };

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

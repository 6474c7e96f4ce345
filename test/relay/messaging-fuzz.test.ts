import { expect } from "chai";
import fc from "fast-check";
import { createMemoryMailbox } from "../../relay/storage/mailbox-memory";
import { connectClient, connectReady, envelope, isAccepted, tokenFor, startTestRelay, type TestRelay } from "./messaging-helpers";

/** Random frames never crash the relay or close the socket; each bad one is answered with an error code. */
describe("messaging: random frames", function () {
  let relay: TestRelay;
  before(async () => {
    relay = await startTestRelay({ mailbox: createMemoryMailbox(), limits: { messagesPerSecond: 100_000, rejectedFrameBurst: 100_000 } });
  });
  after(async () => {
    await relay.close();
  });

  it("answers 2,000 random frames (seed printed) and stays usable", async () => {
    const seed = 20_240_601;
    console.log(`      fast-check seed ${seed}`);
    const frame = fc.oneof(
      fc.string(),
      fc.json(),
      fc.record(
        {
          type: fc.constantFrom("send", "ack", "message", "ready", "SEND", ""),
          id: fc.oneof(fc.string(), fc.stringMatching(/^[A-Za-z0-9_-]{8,64}$/), fc.integer()),
          to: fc.oneof(fc.string(), fc.constantFrom("bob", "b'; DROP TABLE mailbox;--", "bоb", "BOB", "b\u0000b")),
          from: fc.oneof(fc.string(), fc.constant("bob")),
          envelope: fc.oneof(fc.string(), fc.integer(), fc.constant(null)),
        },
        { requiredKeys: [] },
      ).map((o) => JSON.stringify(o)),
    );
    const samples = fc.sample(frame, { numRuns: 2_000, seed });
    const { client } = await connectReady(relay.url, "fuzzer");
    const bystander = await connectReady(relay.url, "bystander");
    let answers = 0;
    client.ws.on("message", () => answers++);
    for (const raw of samples) client.sendRaw(raw);
    client.send({ type: "send", id: "fuzz-final", to: "bystander", envelope: envelope("ok") });
    expect((await client.next(isAccepted("fuzz-final"), 10_000)).status).to.equal("stored");
    const codes = new Set<string>();
    for (;;) {
      try {
        const e = await client.next((f) => f.type === "error", 10);
        codes.add(e.code);
      } catch {
        break;
      }
    }
    expect([...codes].every((c) => ["BAD_REQUEST", "INVALID_USERNAME"].includes(c))).to.equal(true, [...codes].join());
    expect(answers).to.be.greaterThan(samples.length / 2);
    // the other connection was served throughout
    expect((await bystander.client.next((f) => f.type === "message")).id).to.equal("fuzz-final");
    await client.close();
    await bystander.client.close();
  });

  it("closes a text frame with invalid UTF-8 with 1007, other connections unaffected", async () => {
    const bad = await connectClient(relay.url, tokenFor("utf8_bad"));
    bad.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
    expect((await bad.closed).code).to.equal(1007);
    const { client, ready } = await connectReady(relay.url, "utf8_good");
    expect(ready.type).to.equal("ready");
    await client.close();
  });
});

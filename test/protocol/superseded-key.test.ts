import { expect } from "chai";
import { SUPERSEDED_KEY_GRACE_MS, supersededAtReceipt } from "../../protocol/envelope";

describe("protocol: messages signed with a replaced key", () => {
  // bob: key 0 registered at t=1000 s, rotated to key 1 at t=2000 s, reset to key 2 at t=3000 s
  const history = [
    { index: 0, kind: "registered", timestamp: 1000 },
    { index: 1, kind: "rotated", timestamp: 2000 },
    { index: 2, kind: "reset", timestamp: 3000 },
  ];

  it("accepts the current key whenever the message arrived", () => {
    expect(supersededAtReceipt({ senderKeyIndex: 2, history, receivedAt: 9_999_000 })).to.equal(undefined);
  });

  it("accepts a replaced key for messages the relay received before the replacement (within the grace)", () => {
    expect(supersededAtReceipt({ senderKeyIndex: 0, history, receivedAt: 1_999_000 })).to.equal(undefined);
    expect(supersededAtReceipt({ senderKeyIndex: 0, history, receivedAt: 2_000_000 + SUPERSEDED_KEY_GRACE_MS })).to.equal(undefined);
  });

  it("refuses a replaced key for messages that arrived after the replacement, naming its kind", () => {
    expect(supersededAtReceipt({ senderKeyIndex: 0, history, receivedAt: 2_000_001 + SUPERSEDED_KEY_GRACE_MS })).to.deep.equal(history[1]);
    expect(supersededAtReceipt({ senderKeyIndex: 1, history, receivedAt: 3_000_001 + SUPERSEDED_KEY_GRACE_MS })?.kind).to.equal("reset");
  });
});

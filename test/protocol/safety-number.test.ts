import { expect } from "chai";
import { formatSafetyNumber, partyDigits, safetyNumber } from "../../protocol/safety-number";
import { publicKeyOf } from "../../protocol/keys";

const alice = { username: "alice", publicKey: publicKeyOf("0x" + "11".repeat(32)) };
const bob = { username: "bob", publicKey: publicKeyOf("0x" + "22".repeat(32)) };

describe("protocol/safety-number", () => {
  it("known answer for a fixed pair, 60 digits in 12 groups of 5", () => {
    const digits = safetyNumber({ a: alice, b: bob });
    expect(digits).to.match(/^\d{60}$/);
    expect(formatSafetyNumber(digits)).to.equal(
      "00898 82966 25788 12262 21522 20119 61966 44255 73909 36134 26536 13157",
    );
    expect(formatSafetyNumber(digits, { lines: true }).split("\n")).to.have.length(3);
  });

  it("both parties compute the same number, and it is made of both parties' digits", () => {
    expect(safetyNumber({ a: bob, b: alice })).to.equal(safetyNumber({ a: alice, b: bob }));
    const digits = safetyNumber({ a: alice, b: bob });
    expect([digits.slice(0, 30), digits.slice(30)].sort()).to.deep.equal([partyDigits(alice), partyDigits(bob)].sort());
  });

  it("changes when either key or either username changes", () => {
    const base = safetyNumber({ a: alice, b: bob });
    expect(safetyNumber({ a: alice, b: { ...bob, publicKey: publicKeyOf("0x" + "33".repeat(32)) } })).to.not.equal(base);
    expect(safetyNumber({ a: { ...alice, username: "alice2" }, b: bob })).to.not.equal(base);
  });
});

import fc from "fast-check";
import { BASE64_PATTERN, ClientFrame, NOTICE_ENTRY_MAX_BYTES, isStandardBase64, parseAppendOrCursorFrame } from "../../protocol/wire";
import { expect } from "../helpers/chai";

const base64Of = (length: number) => Buffer.alloc(length, 0xa5).toString("base64");

describe("append and cursor frames checked without zod", () => {
  it("isStandardBase64 takes exactly the strings BASE64_PATTERN matches", () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(..."Aa0+/=-_ "), maxLength: 14 }), (text) => {
        expect(isStandardBase64(text), JSON.stringify(text)).to.equal(BASE64_PATTERN.test(text));
      }),
      { numRuns: 5_000 },
    );
  });

  it("parseAppendOrCursorFrame gives what ClientFrame parses for every append and cursor frame it takes, and takes every one ClientFrame does", () => {
    const hex = fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: 64, maxLength: 64 });
    // Each field is well-formed most of the time, so that whole frames often are.
    const groupId = fc.oneof(
      { arbitrary: hex, weight: 6 },
      hex.map((h) => h.toUpperCase()),
      fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: 62, maxLength: 66 }),
      fc.constantFrom(42, null, ""),
    );
    const name = fc.oneof({ arbitrary: fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/), weight: 6 }, fc.string({ maxLength: 70 }), fc.constantFrom("", "a".repeat(65), 7));
    const count = fc.oneof(
      { arbitrary: fc.nat(), weight: 6 },
      fc.constantFrom(0, -0, -1, 1.5, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 1, Number.NaN, Number.POSITIVE_INFINITY, "3", null),
    );
    const bytes = fc.oneof(
      { arbitrary: fc.uint8Array({ maxLength: 48 }).map((b) => Buffer.from(b).toString("base64")), weight: 6 },
      // Around the bound: its text is as long as one byte more's, and padding decides.
      fc.constantFrom(...[1, 2, 3, NOTICE_ENTRY_MAX_BYTES - 2, NOTICE_ENTRY_MAX_BYTES - 1, NOTICE_ENTRY_MAX_BYTES, NOTICE_ENTRY_MAX_BYTES + 1, NOTICE_ENTRY_MAX_BYTES + 2].map(base64Of)),
      fc.string({ unit: fc.constantFrom(..."AB+/=9-_"), maxLength: 12 }),
      fc.constantFrom(5, null, ""),
    );
    const frame = fc.record(
      {
        type: fc.oneof({ arbitrary: fc.constantFrom("append", "cursor"), weight: 4 }, fc.constantFrom("send", "ack", "presence", "Append", "early")),
        groupId,
        deviceId: name,
        epoch: count,
        seq: count,
        id: name,
        bytes,
        to: fc.constant("bob_1"),
        extra: fc.jsonValue({ maxDepth: 1 }),
      },
      { requiredKeys: [] },
    );
    const taken = { append: 0, cursor: 0 };
    fc.assert(
      fc.property(fc.oneof(frame, fc.jsonValue({ maxDepth: 2 })), (json) => {
        const fast = parseAppendOrCursorFrame(json);
        const parsed = ClientFrame.safeParse(json);
        if (fast) {
          expect(parsed.success, JSON.stringify(json).slice(0, 300)).to.equal(true);
          expect(fast).to.deep.equal(parsed.data);
          taken[fast.type]++;
        } else if (parsed.success) {
          expect(parsed.data.type, JSON.stringify(json).slice(0, 300)).to.not.be.oneOf(["append", "cursor"]);
        }
      }),
      { numRuns: 20_000 },
    );
    // The generator reaches well-formed frames of both kinds, not only refusals.
    expect(taken.append).to.be.greaterThan(20);
    expect(taken.cursor).to.be.greaterThan(20);
  });

  it("takes a frame at the size bound and drops unknown keys, as ClientFrame does", () => {
    const groupId = "ab".repeat(32);
    const at = { type: "append", groupId, deviceId: "phone", epoch: 2, id: "m-1", bytes: base64Of(NOTICE_ENTRY_MAX_BYTES), note: "x" };
    expect(parseAppendOrCursorFrame(at)).to.deep.equal({ type: "append", groupId, deviceId: "phone", epoch: 2, id: "m-1", bytes: at.bytes });
    expect(parseAppendOrCursorFrame({ ...at, bytes: base64Of(NOTICE_ENTRY_MAX_BYTES + 1) })).to.equal(undefined);
    expect(parseAppendOrCursorFrame({ type: "cursor", groupId, deviceId: "phone", seq: 9, id: "m-1" })).to.deep.equal({ type: "cursor", groupId, deviceId: "phone", seq: 9 });
  });
});

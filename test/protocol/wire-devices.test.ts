/**
 * The pure parts of device linking: the link code (Crockford base32, as typed by a person), the device
 * fingerprint and the device login text, with known answers so that a second client can check itself.
 */
import { createHash, generateKeyPairSync, sign, verify } from "node:crypto";
import { expect } from "chai";
import {
  CreateDeviceLinkRequest,
  DeviceLoginRequest,
  deviceFingerprint,
  deviceLinkCodeFromBytes,
  deviceLoginText,
  normalizeDeviceLinkCode,
} from "../../protocol/wire-devices";

describe("protocol: device linking (wire-devices)", () => {
  it("draws codes of 8 Crockford base32 characters, 5 bits each, most significant first", () => {
    expect(deviceLinkCodeFromBytes(new Uint8Array(5))).to.equal("00000000");
    expect(deviceLinkCodeFromBytes(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff))).to.equal("ZZZZZZZZ");
    // 0x0842108421 = 00001 00001 00001 ... : every character is the alphabet's second one
    expect(deviceLinkCodeFromBytes(Uint8Array.of(0x08, 0x42, 0x10, 0x84, 0x21))).to.equal("11111111");
    expect(deviceLinkCodeFromBytes(Uint8Array.of(0x01, 0x23, 0x45, 0x67, 0x89))).to.equal("04HMASW9");
    expect(() => deviceLinkCodeFromBytes(new Uint8Array(4))).to.throw(TypeError);
  });

  it("reads a typed code in its canonical form, and refuses what is not a code", () => {
    expect(normalizeDeviceLinkCode("04hm-asw9")).to.equal("04HMASW9");
    expect(normalizeDeviceLinkCode(" 04HM ASW9 ")).to.equal("04HMASW9");
    expect(normalizeDeviceLinkCode("o4hmasw9")).to.equal("04HMASW9");
    expect(normalizeDeviceLinkCode("IL000000")).to.equal("11000000");
    expect(normalizeDeviceLinkCode("U0000000"), "U is not in the alphabet").to.equal(null);
    expect(normalizeDeviceLinkCode("0000000")).to.equal(null);
    expect(normalizeDeviceLinkCode("000000000")).to.equal(null);
  });

  it("fingerprints a device key as the first 16 bytes of its SHA-256 in groups of four hex digits", () => {
    const key = Uint8Array.from({ length: 32 }, (_, i) => i);
    const digest = createHash("sha256").update(key).digest("hex").slice(0, 32);
    expect(deviceFingerprint(key)).to.equal(digest.match(/.{4}/g)!.join(" "));
    expect(deviceFingerprint(key)).to.match(/^([0-9a-f]{4} ){7}[0-9a-f]{4}$/);
    expect(() => deviceFingerprint(new Uint8Array(31))).to.throw(TypeError);
  });

  it("builds the device login text, which an Ed25519 signature covers byte for byte", () => {
    const text = deviceLoginText({
      username: "alice",
      deviceId: "0a1b2c3d4e5f6a7b",
      challenge: `0x${"AB".repeat(32)}`,
      chainId: 31337n,
      contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    });
    expect(text).to.equal(
      [
        "eth-chat device login",
        "version: 1",
        "username: alice",
        "device id: 0a1b2c3d4e5f6a7b",
        `challenge: 0x${"ab".repeat(32)}`,
        "chain id: 31337",
        "contract: 0x5fbdb2315678afecb367f032d93f642f64180aa3",
      ].join("\n"),
    );
    const { publicKey, privateKey } = generateKeyPairSync("ed25519");
    const signature = sign(null, Buffer.from(text, "utf8"), privateKey);
    expect(verify(null, Buffer.from(text, "utf8"), publicKey, signature)).to.equal(true);
    expect(verify(null, Buffer.from(text.replace("alice", "alicf"), "utf8"), publicKey, signature)).to.equal(false);
  });

  it("validates the request bodies and names the bad field", () => {
    expect(CreateDeviceLinkRequest.safeParse({ username: "alice", devicePublicKey: "ab".repeat(32), deviceName: "phone" }).success).to.equal(true);
    const upper = CreateDeviceLinkRequest.safeParse({ username: "alice", devicePublicKey: "AB".repeat(32) });
    expect(upper.success).to.equal(false);
    expect(upper.error!.issues[0].path).to.deep.equal(["devicePublicKey"]);
    const control = CreateDeviceLinkRequest.safeParse({ username: "alice", devicePublicKey: "ab".repeat(32), deviceName: "a\u0000b" });
    expect(control.error!.issues[0].path).to.deep.equal(["deviceName"]);
    const login = DeviceLoginRequest.safeParse({ username: "alice", deviceId: "d1", credential: "AAAA", challenge: `0x${"00".repeat(32)}`, signature: "00".repeat(63) });
    expect(login.error!.issues[0].path).to.deep.equal(["signature"]);
  });
});

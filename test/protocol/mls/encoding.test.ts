import { expect } from "chai";
import { Wallet } from "ethers";
import { ChatError } from "../../../protocol/errors";
import {
  authorizeDevice,
  decodeApplicationPayload,
  decodeDeviceIdentity,
  deviceAuthorizationText,
  encodeApplicationPayload,
  encodeDeviceIdentity,
  generateDeviceSignatureKey,
  MAX_DEVICE_IDENTITY_BYTES,
  verifyDeviceCredential,
  type DeviceIdentity,
} from "../../../protocol/mls";
import { CHAIN_ID, CONTRACT } from "./fixture";

const IDENTITY: DeviceIdentity = {
  version: 1,
  cipherSuite: 1,
  username: "alice",
  keyIndex: 3,
  chainId: 31337n,
  contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
  signature: `0x${"11".repeat(65)}`,
};

function fieldOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    expect(error).to.be.instanceOf(ChatError);
    return (error as ChatError).details?.field as string;
  }
  expect.fail("expected a ChatError");
}

describe("MLS encodings", function () {
  it("device identity: fixed vector, round trip, and strict decoding that names the bad field", function () {
    const bytes = encodeDeviceIdentity(IDENTITY);
    // version 1, suite 0x0001, "alice", index 3, chain id 0x7a69, contract, signature
    expect(Buffer.from(bytes.subarray(0, 16)).toString("hex")).to.equal("01" + "0001" + "05" + "616c696365" + "00000003" + "02" + "7a69");
    expect(bytes.length).to.equal(3 + 1 + 5 + 4 + 1 + 2 + 20 + 65);
    expect(decodeDeviceIdentity(bytes)).to.deep.equal(IDENTITY);

    expect(fieldOf(() => decodeDeviceIdentity(bytes.subarray(0, bytes.length - 1)))).to.equal("signature");
    expect(fieldOf(() => decodeDeviceIdentity(Uint8Array.of(...bytes, 0)))).to.equal("bytes");
    expect(fieldOf(() => decodeDeviceIdentity(Uint8Array.of(2, ...bytes.subarray(1))))).to.equal("version");
    expect(fieldOf(() => decodeDeviceIdentity(Uint8Array.of(1, 0, 2, ...bytes.subarray(3))))).to.equal("cipherSuite");
    const upper = bytes.slice();
    upper[4] = "A".charCodeAt(0);
    expect(fieldOf(() => decodeDeviceIdentity(upper))).to.equal("username");
    expect(fieldOf(() => decodeDeviceIdentity(new Uint8Array(MAX_DEVICE_IDENTITY_BYTES + 1)))).to.equal("bytes");
    expect(fieldOf(() => encodeDeviceIdentity({ ...IDENTITY, keyIndex: -1 }))).to.equal("keyIndex");
    expect(fieldOf(() => encodeDeviceIdentity({ ...IDENTITY, chainId: 0n }))).to.equal("chainId");
    expect(fieldOf(() => encodeDeviceIdentity({ ...IDENTITY, contract: "0x1234" }))).to.equal("contract");
  });

  it("device credential: the signer is recovered from the text rebuilt with the leaf's own key", async function () {
    const wallet = Wallet.createRandom();
    const device = await generateDeviceSignatureKey();
    const texts: string[] = [];
    const credential = await authorizeDevice({
      username: "alice", keyIndex: 0, chainId: CHAIN_ID, contract: CONTRACT, devicePublicKey: device.publicKey,
      sign: (text) => {
        texts.push(text);
        return wallet.signMessage(text);
      },
    });
    expect(texts).to.have.length(1);
    expect(texts[0]).to.equal(
      deviceAuthorizationText({ username: "alice", keyIndex: 0, chainId: CHAIN_ID, contract: CONTRACT, cipherSuite: 1, devicePublicKey: device.publicKey }),
    );
    expect(texts[0]).to.contain("chain id: 31337").and.to.contain("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519");
    const verified = verifyDeviceCredential({ credential, signaturePublicKey: device.publicKey, chainId: CHAIN_ID, contract: CONTRACT });
    expect(verified.signer).to.equal(wallet.address);
    expect(verified.username).to.equal("alice");

    const otherLeaf = await generateDeviceSignatureKey();
    const moved = verifyDeviceCredential({ credential, signaturePublicKey: otherLeaf.publicKey, chainId: CHAIN_ID, contract: CONTRACT });
    expect(moved.signer).to.not.equal(wallet.address);
    expect(fieldOf(() => verifyDeviceCredential({ credential, signaturePublicKey: device.publicKey, chainId: 1n, contract: CONTRACT }))).to.equal("chainId");
    expect(fieldOf(() => verifyDeviceCredential({ credential, signaturePublicKey: device.publicKey, chainId: CHAIN_ID, contract: Wallet.createRandom().address }))).to.equal("contract");
  });

  it("application payload: canonical round trip and strict decoding", function () {
    const payload = { id: "00112233445566778899aabbccddeeff", sentAt: 1_700_000_000_123, body: "héllo ✓" };
    const bytes = encodeApplicationPayload(payload);
    expect(Buffer.from(bytes.subarray(0, 18)).toString("hex")).to.equal("020000112233445566778899aabbccddeeff");
    expect(decodeApplicationPayload(bytes)).to.deep.equal(payload);
    // version 1 (no kind byte) is still read, as a text
    expect(decodeApplicationPayload(Uint8Array.of(1, ...bytes.subarray(2)))).to.deep.equal(payload);
    // a leading U+FEFF is text the sender typed, not a byte-order mark to drop
    const bom = { ...payload, body: "\uFEFF\uFEFFbom first" };
    expect(decodeApplicationPayload(encodeApplicationPayload(bom))).to.deep.equal(bom);
    const named = { kind: "group-name" as const, id: payload.id, sentAt: 1, body: "team ✓" };
    expect(decodeApplicationPayload(encodeApplicationPayload(named))).to.deep.equal(named);
    const leave = { kind: "leave" as const, id: payload.id, sentAt: 1, body: "" };
    expect(decodeApplicationPayload(encodeApplicationPayload(leave))).to.deep.equal(leave);
    expect(fieldOf(() => encodeApplicationPayload({ ...leave, body: "x" }))).to.equal("body");
    expect(fieldOf(() => encodeApplicationPayload({ ...named, body: "" }))).to.equal("body");
    expect(fieldOf(() => decodeApplicationPayload(Uint8Array.of(2, 7, ...bytes.subarray(2))))).to.equal("kind");
    expect(fieldOf(() => decodeApplicationPayload(Uint8Array.of(...bytes, 0)))).to.equal("body");
    expect(fieldOf(() => decodeApplicationPayload(Uint8Array.of(9, ...bytes.subarray(1))))).to.equal("version");
    expect(fieldOf(() => encodeApplicationPayload({ ...payload, id: "not-hex" }))).to.equal("id");
    expect(fieldOf(() => encodeApplicationPayload({ ...payload, body: "x".repeat(64 * 1024 + 1) }))).to.equal("body");
  });
});

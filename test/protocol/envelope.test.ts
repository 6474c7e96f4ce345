import EthCrypto from "eth-crypto";
import fc from "fast-check";
import { Wallet } from "ethers";
import {
  assertFitsFrame,
  innerSigningText,
  maxBodyBytes,
  memoryDedupStore,
  openEnvelope,
  sealEnvelope,
  signInner,
  type InnerMessageV1,
} from "../../protocol/envelope";
import { ChatError } from "../../protocol/errors";
import { publicKeyOf, publicKeyToAddress } from "../../protocol/keys";
import { expect, expectRejectedCode } from "../helpers/chai";

const ALICE = "0x" + "11".repeat(32);
const BOB = "0x" + "22".repeat(32);
const BOB_OLD = "0x" + "33".repeat(32);
const MALLORY = "0x" + "44".repeat(32);

const INNER: InnerMessageV1 = {
  v: 1,
  sender: "alice",
  recipient: "bob",
  id: "0123456789abcdef",
  timestamp: 1700000000000,
  senderKeyIndex: 0,
  recipientKeyIndex: 1,
  body: "hello bob",
};

// The chain as the caller has checked it: alice's key 0, bob's keys 0 (old) and 1 (current).
const CHAIN: Record<string, string[]> = {
  alice: [publicKeyOf(ALICE)],
  bob: [publicKeyOf(BOB_OLD), publicKeyOf(BOB)],
};
async function lookup(username: string, index: number): Promise<string> {
  const key = CHAIN[username]?.[index];
  if (!key) throw new ChatError("KEY_MISMATCH", `no key ${index} for ${username}`);
  return key;
}
const BOB_KEYS = [
  { index: 1, privateKey: BOB },
  { index: 0, privateKey: BOB_OLD },
];

function open(envelope: string, overrides: Partial<Parameters<typeof openEnvelope>[0]> = {}) {
  return openEnvelope({
    envelope,
    from: "alice",
    frameId: INNER.id,
    me: "bob",
    privateKeys: BOB_KEYS,
    lookupSenderKey: lookup,
    dedup: memoryDedupStore(),
    ...overrides,
  });
}

/** Encrypts an arbitrary signed payload for bob, as a forger with bob's public key could. */
async function encryptRaw(payload: unknown, publicKey = publicKeyOf(BOB)): Promise<string> {
  const encrypted = await EthCrypto.encryptWithPublicKey(publicKey.slice(2), JSON.stringify(payload));
  return JSON.stringify({ v: 1, c: EthCrypto.cipher.stringify(encrypted) });
}

describe("protocol/envelope v1", () => {
  it("known answer: fixed keys, iv and ephemeral key give this exact envelope (RFC 6979 signatures are deterministic)", async () => {
    const envelope = await sealEnvelope({
      inner: INNER,
      senderPrivateKey: ALICE,
      recipientPublicKey: publicKeyOf(BOB),
      deterministic: { iv: new Uint8Array(16).fill(7), ephemPrivateKey: new Uint8Array(32).fill(9) },
    });
    expect(envelope).to.equal(
      '{"v":1,"c":"0x070707070707070707070707070707070256b328b30c8bf5839e24058747879408bdb36241dc9c2e7c619faa12b2920967c0cbc0a799f6515ccea55d4eb84e7cb977236a392e60268060b5b3161cb776355f30dd13fee045a81bfbf6f38ab1f1b7f4dc878b46ddb250d2f940eb9d60255e86126f44c14cf7007f93e7a2b88617127474ec55ab937689e2e898686a2fc8936c4e1badff015f0aa4ef49c5cb4d8fab8205fc6f77eb1e4e506f6c46e6f0fc480de7beb0a1612d86978295a5cbf7a2667d0ce717e99cac66db887721e9a49b8419787832b615ede34a0aa4881ac3b4e2093c4895fedc2107b259e4ba8e3fed1f373624444f2fe7510e3fdaf27160ae174a87ac0960fdeeef8f85515157c3dd0b42481c496d824fcf9c21bc1851490ceaf2774874adf00c1751769249915a03d50dcbbb61ddd9ba0f0401a048344089e443c2cc9edeb98dc5d63f408c52e4d38ca574766a627cf14a97b7e26441f4d72dac3916fe94efead2c96e6cd587a35412765c429cf65dd47053887c8979744c91"}',
    );
    const opened = await open(envelope);
    expect(opened.inner).to.deep.equal(INNER);
    expect(opened.signer).to.equal(publicKeyToAddress(publicKeyOf(ALICE)));
  });

  it("writes c as 0x-prefixed lowercase hex, and still opens v1 envelopes whose c has no 0x (the first clients' form)", async () => {
    const envelope = await sealEnvelope({ inner: INNER, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) });
    const { c } = JSON.parse(envelope) as { c: string };
    expect(c).to.match(/^0x([0-9a-f]{2})+$/);
    // the same bytes in the old form: no prefix
    const legacy = JSON.stringify({ v: 1, c: c.slice(2) });
    expect((await open(legacy)).inner).to.deep.equal(INNER);
    // and written by eth-crypto directly, as the first clients did
    expect((await open(await encryptRaw({ m: INNER, s: signInner({ inner: INNER, privateKey: ALICE }) }))).inner).to.deep.equal(INNER);
  });

  it("the signature is an EIP-191 personal message that any wallet library can check", async () => {
    const signature = signInner({ inner: INNER, privateKey: ALICE });
    expect(await new Wallet(ALICE).signMessage(innerSigningText(INNER))).to.equal(signature);
    expect(innerSigningText(INNER)).to.equal(
      'eth-chat envelope v1\n[1,"alice","bob","0123456789abcdef",1700000000000,0,1,"hello bob"]',
    );
  });

  it("the envelope carries only the version and the ciphertext (nothing names the plaintext)", async () => {
    const envelope = await sealEnvelope({ inner: INNER, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) });
    const parsed = JSON.parse(envelope);
    expect(Object.keys(parsed).sort()).to.deep.equal(["c", "v"]);
    expect(parsed.v).to.equal(1);
    for (const visible of ["alice", "bob", INNER.id, "hello", Buffer.from("hello").toString("hex")]) {
      expect(envelope).to.not.include(visible);
    }
  });

  it("round trip: any body and id seal and open to the same inner message (property)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 200 }), fc.stringMatching(/^[A-Za-z0-9_-]{8,64}$/), async (body, id) => {
        const inner = { ...INNER, body, id };
        const envelope = await sealEnvelope({ inner, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) });
        const opened = await open(envelope, { frameId: id });
        expect(opened.inner).to.deep.equal(inner);
      }),
      { numRuns: 25 },
    );
  });

  it("opens a message encrypted to an older key of this device that the message names", async () => {
    const inner = { ...INNER, recipientKeyIndex: 0 };
    const envelope = await sealEnvelope({ inner, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB_OLD) });
    expect((await open(envelope)).inner.recipientKeyIndex).to.equal(0);
    // ... but not when the signed index names another key than the one that decrypts
    const lying = await sealEnvelope({ inner: INNER, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB_OLD) });
    await expectRejectedCode(open(lying), "ENVELOPE_INVALID", /recipient key 1/);
  });

  it("rejects an altered ciphertext (every region: iv, ephemeral key, body, mac)", async () => {
    const envelope = await sealEnvelope({ inner: INNER, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) });
    const { c } = JSON.parse(envelope) as { c: string };
    for (const position of [3, 40, Math.floor(c.length / 2), c.length - 3]) {
      const flipped = c.slice(0, position) + (c[position] === "0" ? "1" : "0") + c.slice(position + 1);
      await expectRejectedCode(open(JSON.stringify({ v: 1, c: flipped })), "ENVELOPE_INVALID");
    }
    await expectRejectedCode(open(JSON.stringify({ v: 1, c: c.slice(0, -2) })), "ENVELOPE_INVALID");
  });

  it("rejects an altered signature, a signature by another key, and an altered signed field", async () => {
    const signature = signInner({ inner: INNER, privateKey: ALICE });
    // one bit of s flipped
    const altered = signature.slice(0, 70) + (signature[70] === "a" ? "b" : "a") + signature.slice(71);
    await expectRejectedCode(open(await encryptRaw({ m: INNER, s: altered })), "ENVELOPE_INVALID", /signature/);
    // mallory signs a message that claims to come from alice
    const forged = signInner({ inner: INNER, privateKey: MALLORY });
    await expectRejectedCode(open(await encryptRaw({ m: INNER, s: forged })), "ENVELOPE_INVALID", /does not match alice's key 0/);
    // alice's real signature over another body
    await expectRejectedCode(open(await encryptRaw({ m: { ...INNER, body: "pay mallory" }, s: signature })), "ENVELOPE_INVALID", /signature/);
  });

  it("checks the signature against the key at the claimed index, as the caller's chain-checked lookup gives it", async () => {
    const inner = { ...INNER, senderKeyIndex: 1 };
    const envelope = await sealEnvelope({ inner, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) });
    await expectRejectedCode(open(envelope), "KEY_MISMATCH", /no key 1 for alice/);
    const chainWithRotation = async (username: string, index: number) =>
      index === 1 ? publicKeyToAddress(publicKeyOf(MALLORY)) : lookup(username, index);
    await expectRejectedCode(open(envelope, { lookupSenderKey: chainWithRotation }), "ENVELOPE_INVALID", /key 1/);
  });

  it("rejects a message for someone else, a sender that is not the relay's `from`, and another id", async () => {
    const envelope = await sealEnvelope({ inner: INNER, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) });
    await expectRejectedCode(open(envelope, { me: "carol" }), "ENVELOPE_INVALID", /addressed to bob/);
    await expectRejectedCode(open(envelope, { from: "mallory" }), "ENVELOPE_INVALID", /claims sender alice/);
    await expectRejectedCode(open(envelope, { frameId: "another-id-123" }), "ENVELOPE_INVALID", /id/);
  });

  it("drops duplicates by (sender, id) through the dedup store", async () => {
    const dedup = memoryDedupStore();
    const envelope = await sealEnvelope({ inner: INNER, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) });
    await open(envelope, { dedup });
    const again = await sealEnvelope({ inner: INNER, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) });
    await expectRejectedCode(open(again, { dedup }), "DUPLICATE");
    expect(dedup.size()).to.equal(1);
  });

  it("refuses unknown versions and malformed envelopes", async () => {
    await expectRejectedCode(open(JSON.stringify({ v: 2, c: "00" })), "ENVELOPE_INVALID", /version 2/);
    await expectRejectedCode(open("not json"), "ENVELOPE_INVALID");
    await expectRejectedCode(open(JSON.stringify({ v: 1, c: "XYZ" })), "ENVELOPE_INVALID");
    await expectRejectedCode(open(JSON.stringify({ v: 1, c: "0x" })), "ENVELOPE_INVALID", /0x-prefixed hex/);
    await expectRejectedCode(open(JSON.stringify({ v: 1, c: "0x" + "ab".repeat(40) + "a" })), "ENVELOPE_INVALID", /whole bytes/);
    await expectRejectedCode(open(JSON.stringify({ v: 1, c: "0x" + "ab".repeat(96) })), "ENVELOPE_INVALID", /too short/);
    await expectRejectedCode(open(await encryptRaw({ m: { ...INNER, v: 7 }, s: "0x00" })), "ENVELOPE_INVALID", /malformed/);
  });

  it("refuses bodies whose frame would exceed the relay's maxFrameBytes with MESSAGE_TOO_LONG", async () => {
    const maxFrameBytes = 4096;
    const fits = { ...INNER, body: "x".repeat(maxBodyBytes(maxFrameBytes)) };
    const ok = await sealEnvelope({ inner: fits, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) });
    assertFitsFrame({ id: INNER.id, to: "bob", envelope: ok, maxFrameBytes });
    const tooLong = { ...INNER, body: "x".repeat(maxFrameBytes) };
    const big = await sealEnvelope({ inner: tooLong, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) });
    expect(() => assertFitsFrame({ id: INNER.id, to: "bob", envelope: big, maxFrameBytes })).to.throw(ChatError, /message too long/);
  });

  it("validates the inner message and names the bad field", async () => {
    await expectRejectedCode(sealEnvelope({ inner: { ...INNER, id: "short" }, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) }), "BAD_REQUEST", /inner\.id/);
    // a lone surrogate would become U+FFFD on the way to UTF-8 and break the signature: refused up front
    await expectRejectedCode(
      sealEnvelope({ inner: { ...INNER, body: "a\ud800b" }, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) }),
      "BAD_REQUEST",
      /inner\.body/,
    );
    await expectRejectedCode(
      sealEnvelope({ inner: INNER, senderPrivateKey: ALICE, recipientPublicKey: "0x1234" }),
      "INVALID_PUBLIC_KEY",
      /recipientPublicKey/,
    );
  });
});

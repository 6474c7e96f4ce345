/**
 * protocol/ecies.ts against eth-crypto itself (the library the first v1 clients used): the same inputs give the
 * same bytes, and each side opens what the other sealed, so v1 histories and mailboxes stay readable.
 */
import EthCrypto from "eth-crypto";
import fc from "fast-check";
import { bytesToHex, hexToBytes } from "../../protocol/bytes";
import { eciesDecrypt, eciesEncrypt, parseEcies, serializeEcies } from "../../protocol/ecies";
import { memoryDedupStore, openEnvelope, sealEnvelope, signInner, type InnerMessageV1 } from "../../protocol/envelope";
import { publicKeyOf } from "../../protocol/keys";
import { expect } from "../helpers/chai";

const ALICE = "0x" + "11".repeat(32);
const BOB = "0x" + "22".repeat(32);
const encoder = new TextEncoder();

/** eth-crypto's envelope `c` (its compact layout, no 0x) for a plaintext, optionally with fixed iv and ephemeral key. */
async function ethCryptoSeal(publicKey: string, plaintext: string, fixed?: { iv: Uint8Array; ephemPrivateKey: Uint8Array }): Promise<string> {
  const options = fixed ? { iv: Buffer.from(fixed.iv), ephemPrivateKey: Buffer.from(fixed.ephemPrivateKey) } : undefined;
  return EthCrypto.cipher.stringify(await EthCrypto.encryptWithPublicKey(publicKey.slice(2), plaintext, options));
}

const secretKey = fc.uint8Array({ minLength: 32, maxLength: 32 }).filter((bytes) => {
  const value = BigInt("0x" + bytesToHex(bytes));
  return value > 0n && value < 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
});
// Unicode text (all planes) and lengths around the AES block size.
const plaintextArbitrary = fc.oneof(fc.string({ unit: "grapheme", maxLength: 200 }), fc.integer({ min: 0, max: 49 }).map((n) => "x".repeat(n)));

describe("protocol/ecies against eth-crypto", () => {
  it("fixed iv and ephemeral key: byte for byte the same ciphertext as eth-crypto (property)", async () => {
    await fc.assert(
      fc.asyncProperty(secretKey, secretKey, fc.uint8Array({ minLength: 16, maxLength: 16 }), plaintextArbitrary, async (recipient, ephemeral, iv, text) => {
        const recipientPublicKey = publicKeyOf("0x" + bytesToHex(recipient));
        const ours = bytesToHex(serializeEcies(eciesEncrypt(hexToBytes(recipientPublicKey), encoder.encode(text), { iv, ephemPrivateKey: ephemeral })));
        expect(ours).to.equal(await ethCryptoSeal(recipientPublicKey, text, { iv, ephemPrivateKey: ephemeral }));
      }),
      { numRuns: 60 },
    );
  });

  it("opens what eth-crypto sealed with its own randomness, and eth-crypto opens what this code sealed (property)", async () => {
    await fc.assert(
      fc.asyncProperty(secretKey, plaintextArbitrary, async (recipient, text) => {
        const privateKey = "0x" + bytesToHex(recipient);
        const publicKey = publicKeyOf(privateKey);
        const fromEthCrypto = parseEcies(hexToBytes(await ethCryptoSeal(publicKey, text)));
        expect(new TextDecoder().decode(eciesDecrypt(privateKey, fromEthCrypto))).to.equal(text);
        const toEthCrypto = bytesToHex(serializeEcies(eciesEncrypt(hexToBytes(publicKey), encoder.encode(text))));
        expect(await EthCrypto.decryptWithPrivateKey(privateKey, EthCrypto.cipher.parse(toEthCrypto))).to.equal(text);
      }),
      { numRuns: 40 },
    );
  });

  it("takes the recipient key raw (x || y), compressed or uncompressed, and the private key with or without 0x", () => {
    const fixed = { iv: new Uint8Array(16).fill(7), ephemPrivateKey: new Uint8Array(32).fill(9) };
    const raw = hexToBytes(publicKeyOf(BOB));
    const uncompressed = new Uint8Array([4, ...raw]);
    const compressed = new Uint8Array([2 + (raw[63] & 1), ...raw.subarray(0, 32)]);
    const expected = bytesToHex(serializeEcies(eciesEncrypt(raw, encoder.encode("hi"), fixed)));
    for (const key of [uncompressed, compressed]) expect(bytesToHex(serializeEcies(eciesEncrypt(key, encoder.encode("hi"), fixed)))).to.equal(expected);
    const parsed = parseEcies(hexToBytes(expected));
    expect(new TextDecoder().decode(eciesDecrypt(BOB, parsed))).to.equal("hi");
    expect(new TextDecoder().decode(eciesDecrypt(BOB.slice(2), parsed))).to.equal("hi");
  });

  it("refuses a recipient key off the curve, an invalid ephemeral key, a wrong key and every altered byte", () => {
    const raw = hexToBytes(publicKeyOf(BOB));
    const offCurve = raw.slice();
    offCurve[63] ^= 1;
    expect(() => eciesEncrypt(offCurve, encoder.encode("hi"))).to.throw();
    expect(() => eciesEncrypt(raw, encoder.encode("hi"), { iv: new Uint8Array(16), ephemPrivateKey: new Uint8Array(32) })).to.throw(/valid secp256k1/);
    const sealed = serializeEcies(eciesEncrypt(raw, encoder.encode("a message of two blocks")));
    expect(() => eciesDecrypt(ALICE, parseEcies(sealed))).to.throw(/bad MAC/);
    for (let i = 0; i < sealed.length; i++) {
      const altered = sealed.slice();
      altered[i] ^= 0x01;
      // an altered compressed key may not be a curve point (parse throws) or is another point (the MAC fails)
      expect(() => eciesDecrypt(BOB, parseEcies(altered)), `byte ${i}`).to.throw();
    }
  });

  it("envelopes: eth-crypto opens a sealed envelope's ciphertext, and openEnvelope accepts one that eth-crypto encrypted", async () => {
    const inner: InnerMessageV1 = {
      v: 1,
      sender: "alice",
      recipient: "bob",
      id: "interop-1",
      timestamp: 1700000000000,
      senderKeyIndex: 0,
      recipientKeyIndex: 0,
      body: "héllo 👋 bob",
    };
    const envelope = await sealEnvelope({ inner, senderPrivateKey: ALICE, recipientPublicKey: publicKeyOf(BOB) });
    const { c } = JSON.parse(envelope) as { c: string };
    const decrypted = JSON.parse(await EthCrypto.decryptWithPrivateKey(BOB, EthCrypto.cipher.parse(c.slice(2)))) as { m: InnerMessageV1; s: string };
    expect(decrypted.m).to.deep.equal(inner);
    expect(decrypted.s).to.equal(signInner({ inner, privateKey: ALICE }));

    const written = await ethCryptoSeal(publicKeyOf(BOB), JSON.stringify({ m: inner, s: signInner({ inner, privateKey: ALICE }) }));
    for (const form of [written, `0x${written}`]) {
      const opened = await openEnvelope({
        envelope: JSON.stringify({ v: 1, c: form }),
        from: "alice",
        me: "bob",
        privateKeys: [{ index: 0, privateKey: BOB }],
        lookupSenderKey: async () => publicKeyOf(ALICE),
        dedup: memoryDedupStore(),
      });
      expect(opened.inner).to.deep.equal(inner);
    }
  });
});

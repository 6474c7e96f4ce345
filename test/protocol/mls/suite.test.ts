import { expect } from "../../helpers/chai";
import { defaultCryptoProvider, getCiphersuiteFromName, getCiphersuiteImpl } from "ts-mls";
import { MLS_CIPHER_SUITE_NAME, mlsCipherSuite } from "../../../protocol/mls";
import { hmacSha256, sha256 } from "../../../protocol/mls/sha256";
import { webCryptoEd25519 } from "../../../protocol/mls/webcrypto-ed25519";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const bytes = (h: string) => new Uint8Array(Buffer.from(h, "hex"));
const ascii = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));
const random = (n: number) => globalThis.crypto.getRandomValues(new Uint8Array(n));
const webCryptoSha256 = async (data: Uint8Array) => new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));

describe("MLS cipher suite 1", function () {
  describe("SHA-256 and HMAC-SHA256", function () {
    it("SHA-256 matches the FIPS 180-4 examples", function () {
      expect(hex(sha256(new Uint8Array(0)))).to.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
      expect(hex(sha256(ascii("abc")))).to.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
      expect(hex(sha256(ascii("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))).to.equal(
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      );
      expect(hex(sha256(ascii("a".repeat(1_000_000))))).to.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    });

    it("SHA-256 equals WebCrypto's for every length around the padding and block boundaries", async function () {
      for (let length = 0; length <= 300; length++) {
        const data = random(length);
        expect(hex(sha256(data)), `length ${length}`).to.equal(hex(await webCryptoSha256(data)));
      }
      // A view into a larger buffer hashes only its own bytes.
      const big = random(200);
      expect(hex(sha256(big.subarray(7, 140)))).to.equal(hex(await webCryptoSha256(big.slice(7, 140))));
    });

    it("HMAC-SHA256 matches RFC 4231 test cases 1, 2, 4 and 6 (a key longer than the block)", function () {
      expect(hex(hmacSha256(bytes("0b".repeat(20)), ascii("Hi There")))).to.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
      expect(hex(hmacSha256(ascii("Jefe"), ascii("what do ya want for nothing?")))).to.equal(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      );
      expect(hex(hmacSha256(bytes("0102030405060708090a0b0c0d0e0f10111213141516171819"), bytes("cd".repeat(50))))).to.equal(
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
      );
      expect(hex(hmacSha256(bytes("aa".repeat(131)), ascii("Test Using Larger Than Block-Size Key - Hash Key First")))).to.equal(
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
      );
    });
  });

  it("HKDF-SHA256 matches RFC 5869 test cases 1, 2 and 3", async function () {
    const cs = await mlsCipherSuite();
    const prk = await cs.kdf.extract(bytes("000102030405060708090a0b0c"), bytes("0b".repeat(22)));
    expect(hex(prk)).to.equal("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5");
    const okm = await cs.kdf.expand(prk, bytes("f0f1f2f3f4f5f6f7f8f9"), 42);
    expect(hex(okm)).to.equal("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");

    const range = (from: number, to: number) => Uint8Array.from({ length: to - from + 1 }, (_, i) => from + i);
    const prk2 = await cs.kdf.extract(range(0x60, 0xaf), range(0x00, 0x4f));
    expect(hex(prk2)).to.equal("06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244");
    expect(hex(await cs.kdf.expand(prk2, range(0xb0, 0xff), 82))).to.equal(
      "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
    );

    const prk3 = await cs.kdf.extract(new Uint8Array(0), bytes("0b".repeat(22)));
    expect(hex(prk3)).to.equal("19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04");
    expect(hex(await cs.kdf.expand(prk3, new Uint8Array(0), 42))).to.equal(
      "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    );
    await expect(cs.kdf.expand(prk3, new Uint8Array(0), 255 * 32 + 1)).to.be.rejectedWith(/255\*HashLen/);
  });

  it("its hash, MAC and KDF give the same bytes as the library's WebCrypto ones", async function () {
    const ours = await mlsCipherSuite();
    const library = await getCiphersuiteImpl(getCiphersuiteFromName(MLS_CIPHER_SUITE_NAME), defaultCryptoProvider);
    expect(ours.name).to.equal(library.name);
    for (const size of [0, 1, 32, 63, 64, 65, 200]) {
      const data = random(size);
      const key = random(32);
      expect(hex(await ours.hash.digest(data))).to.equal(hex(await library.hash.digest(data)));
      const mac = await ours.hash.mac(key, data);
      expect(hex(mac)).to.equal(hex(await library.hash.mac(key, data)));
      expect(await ours.hash.verifyMac(key, mac, data)).to.equal(true);
      const forged = mac.slice();
      forged[31] ^= 1;
      expect(await ours.hash.verifyMac(key, forged, data)).to.equal(false);
      expect(await ours.hash.verifyMac(key, mac.subarray(0, 31), data)).to.equal(false);
      expect(hex(await ours.kdf.extract(key, data))).to.equal(hex(await library.kdf.extract(key, data)));
      for (const length of [0, 12, 16, 32, 48, 100]) {
        expect(hex(await ours.kdf.expand(key, data, length))).to.equal(hex(await library.kdf.expand(key, data, length)));
      }
    }
  });

  describe("Ed25519 over WebCrypto with kept keys", function () {
    // RFC 8032 §7.1, test 2 (one-byte message).
    const rfcSecret = bytes("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb");
    const rfcPublic = bytes("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
    const rfcMessage = bytes("72");
    const rfcSignature = bytes(
      "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    );

    it("signs and verifies the RFC 8032 vector, from a raw key and from its PKCS#8 form", async function () {
      const ed = webCryptoEd25519();
      expect(hex(await ed.sign(rfcSecret, rfcMessage))).to.equal(hex(rfcSignature));
      const pkcs8 = new Uint8Array([...bytes("302e020100300506032b657004220420"), ...rfcSecret]);
      expect(hex(await ed.sign(pkcs8, rfcMessage))).to.equal(hex(rfcSignature));
      expect(await ed.verify(rfcPublic, rfcMessage, rfcSignature)).to.equal(true);
      const forged = rfcSignature.slice();
      forged[5] ^= 1;
      expect(await ed.verify(rfcPublic, rfcMessage, forged)).to.equal(false);
      expect(await ed.verify(rfcPublic, bytes("73"), rfcSignature)).to.equal(false);
    });

    it("a malformed key or signature is a failed verification, not an exception", async function () {
      const ed = webCryptoEd25519();
      expect(await ed.verify(rfcPublic.subarray(0, 31), rfcMessage, rfcSignature)).to.equal(false);
      expect(await ed.verify(rfcPublic, rfcMessage, rfcSignature.subarray(0, 63))).to.equal(false);
      expect(await ed.verify(new Uint8Array(0), rfcMessage, rfcSignature)).to.equal(false);
    });

    it("a key array changed in place signs with the new key, never with the kept one", async function () {
      const ed = webCryptoEd25519();
      const first = await ed.keygen();
      const second = await ed.keygen();
      const key = first.signKey.slice();
      const message = random(100);
      expect(await ed.verify(first.publicKey, message, await ed.sign(key, message))).to.equal(true);
      key.set(second.signKey);
      const signature = await ed.sign(key, message);
      expect(await ed.verify(second.publicKey, message, signature)).to.equal(true);
      expect(await ed.verify(first.publicKey, message, signature)).to.equal(false);
    });

    it("keys and signatures interoperate with the library's default Ed25519", async function () {
      const ours = await mlsCipherSuite();
      const library = await getCiphersuiteImpl(getCiphersuiteFromName(MLS_CIPHER_SUITE_NAME), defaultCryptoProvider);
      const message = random(300);
      const fromLibrary = await library.signature.keygen();
      const fromOurs = await ours.signature.keygen();
      expect(await library.signature.verify(fromOurs.publicKey, message, await ours.signature.sign(fromOurs.signKey, message))).to.equal(true);
      expect(await ours.signature.verify(fromLibrary.publicKey, message, await library.signature.sign(fromLibrary.signKey, message))).to.equal(true);
      expect(await library.signature.verify(fromLibrary.publicKey, message, await ours.signature.sign(fromLibrary.signKey, message))).to.equal(true);
      // Ed25519 is deterministic (RFC 8032 §5.1.6): the same key and message give the same bytes.
      expect(hex(await ours.signature.sign(fromLibrary.signKey, message))).to.equal(hex(await library.signature.sign(fromLibrary.signKey, message)));
    });
  });
});

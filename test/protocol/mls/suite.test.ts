import { expect } from "chai";
import { defaultCryptoProvider, getCiphersuiteFromName, getCiphersuiteImpl } from "ts-mls";
import { MLS_CIPHER_SUITE_NAME, mlsCipherSuite } from "../../../protocol/mls";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const bytes = (h: string) => new Uint8Array(Buffer.from(h, "hex"));

describe("MLS cipher suite 1", function () {
  it("HKDF-SHA256 matches RFC 5869 test case 1", async function () {
    const cs = await mlsCipherSuite();
    const prk = await cs.kdf.extract(bytes("000102030405060708090a0b0c"), bytes("0b".repeat(22)));
    expect(hex(prk)).to.equal("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5");
    const okm = await cs.kdf.expand(prk, bytes("f0f1f2f3f4f5f6f7f8f9"), 42);
    expect(hex(okm)).to.equal("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
  });

  it("its hash, MAC and KDF give the same bytes as the library's WebCrypto ones", async function () {
    const ours = await mlsCipherSuite();
    const library = await getCiphersuiteImpl(getCiphersuiteFromName(MLS_CIPHER_SUITE_NAME), defaultCryptoProvider);
    expect(ours.name).to.equal(library.name);
    for (const size of [0, 1, 32, 200]) {
      const data = globalThis.crypto.getRandomValues(new Uint8Array(size));
      const key = globalThis.crypto.getRandomValues(new Uint8Array(32));
      expect(hex(await ours.hash.digest(data))).to.equal(hex(await library.hash.digest(data)));
      const mac = await ours.hash.mac(key, data);
      expect(hex(mac)).to.equal(hex(await library.hash.mac(key, data)));
      expect(await ours.hash.verifyMac(key, mac, data)).to.equal(true);
      const forged = mac.slice();
      forged[31] ^= 1;
      expect(await ours.hash.verifyMac(key, forged, data)).to.equal(false);
      expect(hex(await ours.kdf.extract(key, data))).to.equal(hex(await library.kdf.extract(key, data)));
      expect(hex(await ours.kdf.expand(key, data, 48))).to.equal(hex(await library.kdf.expand(key, data, 48)));
    }
  });
});

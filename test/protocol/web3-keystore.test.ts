/**
 * protocol/web3-keystore: the keystore a client writes has its cipher section under lowercase `crypto`,
 * whichever spelling it came with, and still opens with ethers; the CLI uses the same function.
 */
import { decryptKeystoreJson, encryptKeystoreJson, Wallet } from "ethers";
import { toWeb3SecretStorage } from "../../protocol/web3-keystore";
import { toWeb3SecretStorage as cliToWeb3SecretStorage } from "../../cli/keystore";
import { ChatError } from "../../protocol/errors";
import { expect } from "../helpers/chai";

describe("protocol/web3-keystore", () => {
  it("renames `Crypto` to `crypto`, keeping every other field and their order", () => {
    const input = { address: "ab", id: "x", version: 3, Crypto: { cipher: "aes-128-ctr" }, "x-ethers": { client: "ethers" } };
    const out = toWeb3SecretStorage(input);
    expect(Object.keys(out)).to.deep.equal(["address", "id", "version", "crypto", "x-ethers"]);
    expect(out.crypto).to.deep.equal({ cipher: "aes-128-ctr" });
    expect(out).to.not.have.property("Crypto");
  });

  it("leaves a keystore already written with `crypto` as it is", () => {
    const input = { version: 3, crypto: { cipher: "aes-128-ctr" }, id: "y" };
    expect(toWeb3SecretStorage(input)).to.deep.equal(input);
    expect(JSON.stringify(toWeb3SecretStorage(input))).to.equal(JSON.stringify(input));
  });

  it("refuses a keystore with no crypto section, or with both spellings, or that is not an object", () => {
    expect(() => toWeb3SecretStorage({ version: 3 })).to.throw(ChatError, /crypto/);
    expect(() => toWeb3SecretStorage({ version: 3, crypto: {}, Crypto: {} })).to.throw(ChatError, /crypto/);
    expect(() => toWeb3SecretStorage([] as unknown as Record<string, unknown>)).to.throw(ChatError, /object/);
    expect(() => toWeb3SecretStorage(null as unknown as Record<string, unknown>)).to.throw(ChatError, /object/);
  });

  it("a real ethers keystore opens with either spelling, and the converted one decrypts to the same key", async function () {
    this.timeout(30_000);
    const wallet = Wallet.createRandom();
    const json = await encryptKeystoreJson({ address: wallet.address, privateKey: wallet.privateKey }, "pässword", { scrypt: { N: 1 << 10 } });
    const raw = JSON.parse(json) as Record<string, unknown>;
    expect(raw).to.have.property("Crypto");
    const converted = toWeb3SecretStorage(raw);
    expect(converted).to.have.property("crypto");
    for (const text of [json, JSON.stringify(converted)]) {
      const account = await decryptKeystoreJson(text, "pässword");
      expect(account.privateKey).to.equal(wallet.privateKey);
    }
    await expect(decryptKeystoreJson(JSON.stringify(converted), "wrong")).to.be.rejectedWith(/incorrect password/);
  });

  it("is the very function the CLI's keystore uses", () => {
    expect(cliToWeb3SecretStorage).to.equal(toWeb3SecretStorage);
  });
});

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Wallet, encryptKeystoreJson } from "ethers";
import { Home } from "../../cli/home";
import { storeKey, toWeb3SecretStorage, unlockKey } from "../../cli/keystore";
import { ChatError } from "../../protocol/errors";
import { publicKeyOf } from "../../protocol/keys";
import { expect, expectRejectedCode } from "../helpers/chai";

const PRIVATE_KEY = "0x" + "5a".repeat(32);
const PASSWORD = "correct horse battery staple";

describe("cli/keystore", () => {
  let root: string;
  let home: Home;
  beforeEach(() => {
    root = mkdtempSync(path.join(os.tmpdir(), "chat-keystore-"));
    home = new Home(root);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const keystoreFile = (index: number) => path.join(root, "users", "alice", "keys", `${index}.json`);

  it("writes the lowercase `crypto` section of the Web3 Secret Storage definition, and ethers opens it", async () => {
    const stored = await storeKey({ home, username: "alice", index: 0, privateKey: PRIVATE_KEY, password: PASSWORD, fastKdf: true, pending: false });
    const text = readFileSync(keystoreFile(0), "utf8");
    const json = JSON.parse(text) as Record<string, unknown>;
    expect(json.version).to.equal(3);
    expect(Object.keys(json)).to.include("crypto").and.not.include("Crypto");
    const section = json.crypto as { kdf: string; cipher: string; kdfparams: { n: number } };
    expect(section.kdf).to.equal("scrypt");
    expect(section.cipher).to.equal("aes-128-ctr");
    expect(section.kdfparams.n).to.equal(1 << 10);
    expect(text).to.not.include(PRIVATE_KEY.slice(2));

    const wallet = await Wallet.fromEncryptedJson(text, PASSWORD);
    expect(wallet.privateKey).to.equal(PRIVATE_KEY);
    expect(wallet.address).to.equal(stored.address);
    expect(stored.publicKey).to.equal(publicKeyOf(PRIVATE_KEY));
    expect((await unlockKey({ home, username: "alice", index: 0, password: PASSWORD })).privateKey).to.equal(PRIVATE_KEY);
  });

  it("opens a keystore written by ethers' Wallet.encrypt (capitalised `Crypto`, default scrypt N=2^17)", async function () {
    this.timeout(60_000);
    const text = await new Wallet(PRIVATE_KEY).encrypt(PASSWORD);
    expect(Object.keys(JSON.parse(text))).to.include("Crypto");
    home.dir("users", "alice", "keys");
    writeFileSync(keystoreFile(3), text, { mode: 0o600 });
    const unlocked = await unlockKey({ home, username: "alice", index: 3, password: PASSWORD });
    expect(unlocked).to.deep.equal({ index: 3, privateKey: PRIVATE_KEY });
  });

  it("opens a keystore written by ethers' encryptKeystoreJson with fast scrypt, and refuses a wrong password", async () => {
    const account = { address: new Wallet(PRIVATE_KEY).address, privateKey: PRIVATE_KEY };
    home.dir("users", "alice", "keys");
    writeFileSync(keystoreFile(1), await encryptKeystoreJson(account, PASSWORD, { scrypt: { N: 1 << 10 } }), { mode: 0o600 });
    expect((await unlockKey({ home, username: "alice", index: 1, password: PASSWORD })).privateKey).to.equal(PRIVATE_KEY);
    const refused = await expectRejectedCode(unlockKey({ home, username: "alice", index: 1, password: "not the password" }), "WRONG_PASSWORD");
    expect(refused.message).to.not.include("not the password");
  });

  it("renames only the crypto section, keeps every other field, and refuses a keystore without exactly one", () => {
    const converted = toWeb3SecretStorage({ address: "ab", id: "x", version: 3, Crypto: { cipher: "aes-128-ctr" } });
    expect(converted).to.deep.equal({ address: "ab", id: "x", version: 3, crypto: { cipher: "aes-128-ctr" } });
    expect(Object.keys(converted)).to.deep.equal(["address", "id", "version", "crypto"]);
    expect(() => toWeb3SecretStorage({ version: 3 })).to.throw(ChatError, /crypto/);
    expect(() => toWeb3SecretStorage({ version: 3, crypto: {}, Crypto: {} })).to.throw(ChatError, /crypto/);
  });
});

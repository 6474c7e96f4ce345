import { argon2id as nobleArgon2id } from "@noble/hashes/argon2.js";
import { argon2id as wasmArgon2id } from "hash-wasm";
import {
  CREDENTIAL_ARGON2_PARAMS,
  INSECURE_TEST_ARGON2_PARAMS,
  credentialSalt,
  deriveCredential,
} from "../../protocol/credential-derive";
import { expect, expectRejectedCode } from "../helpers/chai";

const CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const BASE = { username: "alice", chainId: 31337n, contractAddress: CONTRACT };
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

describe("protocol/credential-derive", () => {
  it("uses at least 64 MiB, 3 passes, 1 lane and a 32-byte tag in production", () => {
    expect(CREDENTIAL_ARGON2_PARAMS).to.deep.equal({ memoryKiB: 65536, iterations: 3, parallelism: 1, hashLength: 32 });
  });

  it("the independent reference (noble) reproduces RFC 9106 §5.3's Argon2id vector", () => {
    const tag = nobleArgon2id(new Uint8Array(32).fill(1), new Uint8Array(16).fill(2), {
      t: 3,
      m: 32,
      p: 4,
      key: new Uint8Array(8).fill(3),
      personalization: new Uint8Array(12).fill(4),
      dkLen: 32,
    });
    expect(hex(tag)).to.equal("0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659");
  });

  it("hash-wasm agrees with the reference implementation (RFC 9106 inputs without associated data)", async () => {
    const input = { password: new Uint8Array(32).fill(1), salt: new Uint8Array(16).fill(2), secret: new Uint8Array(8).fill(3) };
    const wasm = await wasmArgon2id({ ...input, iterations: 3, memorySize: 32, parallelism: 4, hashLength: 32, outputType: "hex" });
    const noble = nobleArgon2id(input.password, input.salt, { t: 3, m: 32, p: 4, key: input.secret, dkLen: 32 });
    expect(wasm).to.equal(hex(noble));
    expect(wasm).to.equal("0034de3c8a75efc1148100eaf5ba9b1ce6d50ba5cdf6ae4018c54a4fc03ac10d");
  });

  it("salt: SHA-256 of the length-prefixed domain, username, chain id and lowercase contract (vector)", () => {
    expect(hex(credentialSalt(BASE))).to.equal("c777b5592a68d6833edf3f53c17d3a52565822b5b9e3fafc60e7181599122290");
    // the address's case does not matter; every bound field does
    expect(hex(credentialSalt({ ...BASE, contractAddress: CONTRACT.toLowerCase() }))).to.equal(hex(credentialSalt(BASE)));
    expect(hex(credentialSalt({ ...BASE, username: "alicf" }))).to.not.equal(hex(credentialSalt(BASE)));
    expect(hex(credentialSalt({ ...BASE, chainId: 1n }))).to.not.equal(hex(credentialSalt(BASE)));
    expect(hex(credentialSalt({ ...BASE, contractAddress: "0x" + "00".repeat(20) }))).to.not.equal(hex(credentialSalt(BASE)));
  });

  it("known answer with the production parameters", async function () {
    this.timeout(20_000);
    const credential = await deriveCredential({ ...BASE, password: "correct horse battery staple" });
    expect(credential).to.equal("0x63b5ccbc36bbeae46c3f88ca0cb065fa2f708fbe4b6050fe0293ad5f228364f7");
  });

  it("the test-only parameters match the reference implementation over the same salt", async () => {
    const credential = await deriveCredential({
      ...BASE,
      password: "correct horse battery staple",
      argon2: INSECURE_TEST_ARGON2_PARAMS,
      allowInsecureParams: true,
    });
    const noble = nobleArgon2id("correct horse battery staple", credentialSalt(BASE), { t: 1, m: 256, p: 1, dkLen: 32 });
    expect(credential).to.equal(`0x${hex(noble)}`);
    expect(credential).to.equal("0xdad92958dd996cb32e93181ed941895562c9b3c654c8b696ad4bae4d25a79613");
  });

  it("normalises the password to NFC (composed and decomposed accents give one credential)", async () => {
    const fast = { ...BASE, argon2: INSECURE_TEST_ARGON2_PARAMS, allowInsecureParams: true };
    const composed = await deriveCredential({ ...fast, password: "caf\u00e9" });
    const decomposed = await deriveCredential({ ...fast, password: "cafe\u0301" });
    expect(composed).to.equal(decomposed);
  });

  it("refuses weak parameters unless explicitly allowed, and bad inputs naming the field", async () => {
    await expectRejectedCode(deriveCredential({ ...BASE, password: "pw", argon2: INSECURE_TEST_ARGON2_PARAMS }), "BAD_REQUEST", /tests only/);
    await expectRejectedCode(deriveCredential({ ...BASE, password: "" }), "BAD_REQUEST", /password/);
    await expectRejectedCode(deriveCredential({ ...BASE, username: "Alice!", password: "pw" }), "INVALID_USERNAME", /a-z/);
    await expectRejectedCode(deriveCredential({ ...BASE, contractAddress: "0x1234", password: "pw" }), "BAD_REQUEST", /contractAddress/);
    await expectRejectedCode(deriveCredential({ ...BASE, chainId: "x", password: "pw" }), "BAD_REQUEST", /chainId/);
  });
});

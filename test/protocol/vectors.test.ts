/**
 * Checks test/vectors/protocol-v1.json two ways: against this repository's protocol code (compute and
 * compare), and against independent re-implementations written from protocol/README.md with node:crypto
 * and ethers' primitives only, as another client would write them. The EIP-712 signatures are also
 * submitted to the real ChatRegistry, deployed at the vectors' address.
 */
import { expect } from "chai";
import { ECDH, createCipheriv, createDecipheriv, createECDH, createHash, createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { argon2id as referenceArgon2id } from "@noble/hashes/argon2.js";
import { AbiCoder, Signature, TypedDataEncoder, Wallet, concat, getBytes, hashMessage, keccak256, recoverAddress, toUtf8Bytes } from "ethers";
import { ethers, network } from "hardhat";
import { pepperCredential } from "../../protocol/credential";
import { credentialSalt, deriveCredential, type Argon2Params } from "../../protocol/credential-derive";
import {
  CANCEL_RESET_TYPES,
  REGISTER_TYPES,
  RESET_KEY_TYPES,
  ROTATE_KEY_TYPES,
  UPDATE_CREDENTIAL_TYPES,
  registryDigest,
  registryDomain,
  signRegistryTypedData,
  type RegistryTypedData,
} from "../../protocol/eip712";
import { innerSigningText, memoryDedupStore, openEnvelope, sealEnvelope, signInner, type InnerMessageV1 } from "../../protocol/envelope";
import { publicKeyOf, publicKeyToAddress } from "../../protocol/keys";
import { formatSafetyNumber, partyDigits, safetyNumber } from "../../protocol/safety-number";
import { ChatRegistry__factory } from "../../typechain-types";

type Hex = string;
interface KeyInfo {
  privateKey: Hex;
  publicKey: Hex;
  address: string;
}
interface Vectors {
  deployer: KeyInfo;
  credential: {
    salt: { username: string; chainId: string; contractAddress: string; preimage: Hex; salt: Hex }[];
    argon2id: { username: string; chainId: string; contractAddress: string; password: string; passwordUtf8: Hex; passwordNfcUtf8: Hex; argon2: Argon2Params; credential: Hex }[];
    pepper: { pepper: Hex; username: string; credential: Hex; hmacInput: Hex; hmacSha256: Hex; credentialHash: Hex }[];
  };
  eip712: {
    domain: { name: string; version: string; chainId: string; verifyingContract: string };
    domainTypeString: string;
    domainSeparator: Hex;
    types: Record<string, { typeString: string; typeHash: Hex; fields: { name: string; type: string }[] }>;
    keys: KeyInfo[];
    cases: {
      primaryType: RegistryTypedData["primaryType"];
      message: Record<string, string>;
      structHash: Hex;
      digest: Hex;
      signatures: { signer: string; full: Hex; compact: [Hex, Hex] }[];
    }[];
  };
  envelope: {
    sender: KeyInfo;
    recipient: KeyInfo;
    cases: {
      inner: InnerMessageV1;
      signingText: string;
      signingTextUtf8Length: number;
      signingDigest: Hex;
      signature: Hex;
      plaintext: string;
      ecies: Record<"iv" | "ephemeralPrivateKey" | "ephemeralPublicKeyUncompressed" | "ephemeralPublicKeyCompressed" | "sharedX" | "encryptionKey" | "macKey" | "mac" | "ciphertext", Hex>;
      envelope: string;
      legacyEnvelope: string;
    }[];
  };
  safetyNumber: { a: { username: string; publicKey: Hex }; b: { username: string; publicKey: Hex }; aDigits: string; bDigits: string; safetyNumber: string; formatted: string }[];
}

const VECTORS = JSON.parse(readFileSync(path.join(__dirname, "..", "vectors", "protocol-v1.json"), "utf8")) as Vectors;

const bytes = (value: Hex) => Buffer.from(value.slice(2), "hex");
const hex = (value: Uint8Array) => `0x${Buffer.from(value).toString("hex")}`;

/** The README's length prefix: 4-byte big-endian length of the UTF-8 bytes, then the bytes. */
function lengthPrefixed(text: string): Buffer {
  const utf8 = Buffer.from(text, "utf8");
  const length = Buffer.alloc(4);
  length.writeUInt32BE(utf8.length);
  return Buffer.concat([length, utf8]);
}

/** EIP-712 hashStruct for the registry's flat structs, written from the specification (no typed-data library). */
function referenceStructHash(typeString: string, fields: { name: string; type: string }[], message: Record<string, string>): Hex {
  const types: string[] = ["bytes32"];
  const values: unknown[] = [keccak256(toUtf8Bytes(typeString))];
  for (const field of fields) {
    const value = message[field.name];
    if (field.type === "string") values.push(keccak256(toUtf8Bytes(value)));
    else if (field.type === "bytes") values.push(keccak256(value));
    else values.push(field.type === "uint256" ? BigInt(value) : value);
    types.push(field.type === "string" || field.type === "bytes" ? "bytes32" : field.type);
  }
  return keccak256(AbiCoder.defaultAbiCoder().encode(types, values));
}

/** ECIES decryption of `c` as the README describes it, with node:crypto only. */
function referenceDecrypt(c: string, recipientPrivateKey: Hex): { plaintext: string; sharedX: Buffer; kdf: Buffer } {
  const data = Buffer.from(c.replace(/^0x/, ""), "hex");
  const iv = data.subarray(0, 16);
  const ephemeralCompressed = data.subarray(16, 49);
  const mac = data.subarray(49, 81);
  const ciphertext = data.subarray(81);
  // the MAC covers the ephemeral key's 65-byte uncompressed form, c carries the 33-byte compressed one
  const ephemeral = ECDH.convertKey(ephemeralCompressed, "secp256k1", undefined, undefined, "uncompressed") as Buffer;
  const ecdh = createECDH("secp256k1");
  ecdh.setPrivateKey(bytes(recipientPrivateKey));
  const sharedX = ecdh.computeSecret(ephemeral);
  const kdf = createHash("sha512").update(sharedX).digest();
  const expectedMac = createHmac("sha256", kdf.subarray(32)).update(Buffer.concat([iv, ephemeral, ciphertext])).digest();
  if (!timingSafeEqual(mac, expectedMac)) throw new Error("bad MAC");
  const decipher = createDecipheriv("aes-256-cbc", kdf.subarray(0, 32), iv);
  return { plaintext: Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString("utf8"), sharedX, kdf };
}

/** ECIES encryption with a given iv and ephemeral key, as the README describes it, with node:crypto only. */
function referenceEncrypt(plaintext: string, recipientPublicKey: Hex, iv: Buffer, ephemeralPrivateKey: Buffer): string {
  const ecdh = createECDH("secp256k1");
  ecdh.setPrivateKey(ephemeralPrivateKey);
  const sharedX = ecdh.computeSecret(Buffer.concat([Buffer.from([4]), bytes(recipientPublicKey)]));
  const kdf = createHash("sha512").update(sharedX).digest();
  const cipher = createCipheriv("aes-256-cbc", kdf.subarray(0, 32), iv);
  const ciphertext = Buffer.concat([cipher.update(Buffer.from(plaintext, "utf8")), cipher.final()]);
  const mac = createHmac("sha256", kdf.subarray(32)).update(Buffer.concat([iv, ecdh.getPublicKey(), ciphertext])).digest();
  return `0x${Buffer.concat([iv, ecdh.getPublicKey(null, "compressed"), mac, ciphertext]).toString("hex")}`;
}

describe("protocol v1 known-answer vectors (test/vectors/protocol-v1.json)", () => {
  describe("credential", () => {
    it("salt: SHA-256 of the length-prefixed domain, username, decimal chain id and lowercase address", () => {
      for (const vector of VECTORS.credential.salt) {
        const preimage = Buffer.concat([
          lengthPrefixed("eth-chat credential v1"),
          lengthPrefixed(vector.username),
          lengthPrefixed(BigInt(vector.chainId).toString(10)),
          lengthPrefixed(vector.contractAddress.toLowerCase()),
        ]);
        expect(hex(preimage)).to.equal(vector.preimage);
        expect(hex(createHash("sha256").update(preimage).digest())).to.equal(vector.salt);
        expect(hex(credentialSalt(vector))).to.equal(vector.salt);
      }
    });

    it("argon2id over the NFC password and that salt gives the credential (code and reference implementation)", async function () {
      this.timeout(60_000);
      for (const vector of VECTORS.credential.argon2id) {
        expect(hex(Buffer.from(vector.password, "utf8"))).to.equal(vector.passwordUtf8);
        expect(hex(Buffer.from(vector.password.normalize("NFC"), "utf8"))).to.equal(vector.passwordNfcUtf8);
        expect(await deriveCredential({ ...vector, allowInsecureParams: true })).to.equal(vector.credential);
        // noble's pure-JS argon2id is too slow for 64 MiB here; the production vector is checked by the code above
        if (vector.argon2.memoryKiB > 4096) continue;
        const salt = credentialSalt(vector);
        const tag = referenceArgon2id(bytes(vector.passwordNfcUtf8), salt, { t: vector.argon2.iterations, m: vector.argon2.memoryKiB, p: vector.argon2.parallelism, dkLen: vector.argon2.hashLength });
        expect(hex(tag)).to.equal(vector.credential);
      }
      expect(VECTORS.credential.argon2id.some((v) => v.argon2.memoryKiB === 65536 && v.argon2.iterations === 3)).to.equal(true);
    });

    it("the on-chain credential hash: keccak256(HMAC-SHA256(pepper, len32(username) || username || credential))", () => {
      for (const vector of VECTORS.credential.pepper) {
        const name = Buffer.from(vector.username, "utf8");
        const length = Buffer.alloc(4);
        length.writeUInt32BE(name.length);
        const input = Buffer.concat([length, name, bytes(vector.credential)]);
        expect(hex(input)).to.equal(vector.hmacInput);
        const mac = createHmac("sha256", bytes(vector.pepper)).update(input).digest();
        expect(hex(mac)).to.equal(vector.hmacSha256);
        expect(keccak256(mac)).to.equal(vector.credentialHash);
        expect(pepperCredential({ pepper: bytes(vector.pepper), username: vector.username, credential: vector.credential })).to.equal(vector.credentialHash);
      }
    });
  });

  describe("EIP-712", () => {
    const { domain: domainVector } = VECTORS.eip712;
    const domain = registryDomain({ chainId: BigInt(domainVector.chainId), verifyingContract: domainVector.verifyingContract });

    it("type strings and type hashes match protocol/eip712.ts's types", () => {
      const protocolTypes: Record<string, readonly { name: string; type: string }[]> = {
        Register: REGISTER_TYPES.Register,
        RotateKey: ROTATE_KEY_TYPES.RotateKey,
        ResetKey: RESET_KEY_TYPES.ResetKey,
        CancelReset: CANCEL_RESET_TYPES.CancelReset,
        UpdateCredential: UPDATE_CREDENTIAL_TYPES.UpdateCredential,
      };
      expect(Object.keys(VECTORS.eip712.types).sort()).to.deep.equal(Object.keys(protocolTypes).sort());
      for (const [name, vector] of Object.entries(VECTORS.eip712.types)) {
        expect(vector.fields).to.deep.equal(protocolTypes[name]);
        expect(vector.typeString).to.equal(`${name}(${vector.fields.map((f) => `${f.type} ${f.name}`).join(",")})`);
        expect(keccak256(toUtf8Bytes(vector.typeString))).to.equal(vector.typeHash);
        expect(TypedDataEncoder.from({ [name]: vector.fields }).encodeType(name)).to.equal(vector.typeString);
      }
    });

    it("domain separator: hashStruct(EIP712Domain) with name, version, chainId, verifyingContract and no salt", () => {
      const reference = keccak256(
        AbiCoder.defaultAbiCoder().encode(
          ["bytes32", "bytes32", "bytes32", "uint256", "address"],
          [keccak256(toUtf8Bytes(VECTORS.eip712.domainTypeString)), keccak256(toUtf8Bytes(domainVector.name)), keccak256(toUtf8Bytes(domainVector.version)), BigInt(domainVector.chainId), domainVector.verifyingContract],
        ),
      );
      expect(reference).to.equal(VECTORS.eip712.domainSeparator);
      expect(TypedDataEncoder.hashDomain(domain)).to.equal(VECTORS.eip712.domainSeparator);
    });

    it("struct hashes, digests and RFC 6979 signatures of every case", () => {
      for (const vector of VECTORS.eip712.cases) {
        const type = VECTORS.eip712.types[vector.primaryType];
        expect(referenceStructHash(type.typeString, type.fields, vector.message)).to.equal(vector.structHash);
        const digest = keccak256(concat(["0x1901", VECTORS.eip712.domainSeparator, vector.structHash]));
        expect(digest).to.equal(vector.digest);

        const message = Object.fromEntries(Object.entries(vector.message).map(([k, v]) => [k, k === "nonce" || k === "deadline" ? BigInt(v) : v]));
        const data = { primaryType: vector.primaryType, message } as unknown as RegistryTypedData;
        expect(registryDigest(domain, data)).to.equal(vector.digest);
        for (const signature of vector.signatures) {
          const signer = VECTORS.eip712.keys.find((k) => k.address === signature.signer)!;
          expect(signRegistryTypedData({ privateKey: signer.privateKey, domain, data })).to.deep.equal(signature.compact);
          const parsed = Signature.from(signature.full);
          expect([parsed.r, parsed.yParityAndS]).to.deep.equal(signature.compact);
          expect(recoverAddress(vector.digest, signature.full)).to.equal(signature.signer);
        }
      }
    });

    it("the real ChatRegistry at the vectors' address reports that domain (fields 0x0f, no salt) and accepts the signatures", async () => {
      const { deployer } = VECTORS;
      expect(new Wallet(deployer.privateKey).address).to.equal(deployer.address);
      const chainId = (await ethers.provider.getNetwork()).chainId;
      expect(chainId.toString()).to.equal(domainVector.chainId);
      await network.provider.send("hardhat_setBalance", [deployer.address, "0x56bc75e2d63100000"]);
      const wallet = new Wallet(deployer.privateKey, ethers.provider);
      const registry = await new ChatRegistry__factory(wallet).deploy(deployer.address, 60);
      await registry.waitForDeployment();
      expect(await registry.getAddress()).to.equal(domainVector.verifyingContract);

      const reported = await registry.eip712Domain();
      expect(reported.fields).to.equal("0x0f");
      expect([reported.name, reported.version, reported.chainId.toString(), reported.verifyingContract]).to.deep.equal([
        domainVector.name,
        domainVector.version,
        domainVector.chainId,
        domainVector.verifyingContract,
      ]);
      expect(reported.salt).to.equal("0x" + "00".repeat(32));
      expect(reported.extensions).to.deep.equal([]);

      const byType = (primaryType: string) => VECTORS.eip712.cases.find((c) => c.primaryType === primaryType)!;
      const register = byType("Register");
      await (await registry.register(register.message.username, register.message.credentialHash, register.message.publicKey, register.message.deadline, register.signatures[0].compact)).wait();
      expect(await registry.nonces("alice")).to.equal(BigInt(byType("RotateKey").message.nonce));
      const rotate = byType("RotateKey");
      await (await registry.rotateKey(rotate.message.username, rotate.message.newPublicKey, rotate.message.deadline, rotate.signatures[0].compact, rotate.signatures[1].compact)).wait();
      const update = byType("UpdateCredential");
      expect(await registry.nonces("alice")).to.equal(BigInt(update.message.nonce));
      await (await registry.updateCredential(update.message.username, update.message.credentialHash, update.message.deadline, update.signatures[0].compact)).wait();
      expect(await registry.nonces("alice")).to.equal(BigInt(byType("ResetKey").message.nonce));
      const [currentKey, index] = await registry.currentKey("alice");
      expect([currentKey, index]).to.deep.equal([rotate.signatures[1].signer, 1n]);
    });
  });

  describe("envelope v1", () => {
    const { sender, recipient, cases } = VECTORS.envelope;

    it("test keys: public keys are x || y without 0x04, addresses keccak256(x || y)[12:]", () => {
      for (const key of [sender, recipient, ...VECTORS.eip712.keys, VECTORS.deployer]) {
        expect(publicKeyOf(key.privateKey)).to.equal(key.publicKey);
        expect(publicKeyToAddress(key.publicKey)).to.equal(key.address);
        expect(new Wallet(key.privateKey).address).to.equal(key.address);
      }
    });

    it("the signed text, its EIP-191 digest and the RFC 6979 signature", async () => {
      for (const vector of cases) {
        const text = innerSigningText(vector.inner);
        expect(text).to.equal(vector.signingText);
        const reference = `eth-chat envelope v1\n${JSON.stringify([vector.inner.v, vector.inner.sender, vector.inner.recipient, vector.inner.id, vector.inner.timestamp, vector.inner.senderKeyIndex, vector.inner.recipientKeyIndex, vector.inner.body])}`;
        expect(reference).to.equal(vector.signingText);
        expect(Buffer.byteLength(text, "utf8")).to.equal(vector.signingTextUtf8Length);
        const prefixed = Buffer.concat([Buffer.from(`\x19Ethereum Signed Message:\n${vector.signingTextUtf8Length}`, "utf8"), Buffer.from(text, "utf8")]);
        expect(keccak256(prefixed)).to.equal(vector.signingDigest);
        expect(hashMessage(text)).to.equal(vector.signingDigest);
        expect(signInner({ inner: vector.inner, privateKey: sender.privateKey })).to.equal(vector.signature);
        expect(await new Wallet(sender.privateKey).signMessage(text)).to.equal(vector.signature);
        expect(JSON.parse(vector.plaintext)).to.deep.equal({ m: vector.inner, s: vector.signature });
      }
    });

    it("sealing with the fixed iv and ephemeral key gives the envelope byte for byte (code and reference)", async () => {
      for (const vector of cases) {
        const envelope = await sealEnvelope({
          inner: vector.inner,
          senderPrivateKey: sender.privateKey,
          recipientPublicKey: recipient.publicKey,
          deterministic: { iv: bytes(vector.ecies.iv), ephemPrivateKey: bytes(vector.ecies.ephemeralPrivateKey) },
        });
        expect(envelope).to.equal(vector.envelope);
        const c = referenceEncrypt(vector.plaintext, recipient.publicKey, bytes(vector.ecies.iv), bytes(vector.ecies.ephemeralPrivateKey));
        expect(JSON.stringify({ v: 1, c })).to.equal(vector.envelope);
        expect(vector.legacyEnvelope).to.equal(JSON.stringify({ v: 1, c: c.slice(2) }));
      }
    });

    it("the reference decryption gives the stated intermediates and plaintext", () => {
      for (const vector of cases) {
        const { c } = JSON.parse(vector.envelope) as { c: string };
        expect(c.slice(2, 34)).to.equal(vector.ecies.iv.slice(2));
        expect(`0x${c.slice(34, 100)}`).to.equal(vector.ecies.ephemeralPublicKeyCompressed);
        expect(`0x${c.slice(100, 164)}`).to.equal(vector.ecies.mac);
        expect(`0x${c.slice(164)}`).to.equal(vector.ecies.ciphertext);
        const opened = referenceDecrypt(c, recipient.privateKey);
        expect(hex(opened.sharedX)).to.equal(vector.ecies.sharedX);
        expect(hex(opened.kdf.subarray(0, 32))).to.equal(vector.ecies.encryptionKey);
        expect(hex(opened.kdf.subarray(32))).to.equal(vector.ecies.macKey);
        expect(opened.plaintext).to.equal(vector.plaintext);
        const ephemeral = createECDH("secp256k1");
        ephemeral.setPrivateKey(bytes(vector.ecies.ephemeralPrivateKey));
        expect(hex(ephemeral.getPublicKey())).to.equal(vector.ecies.ephemeralPublicKeyUncompressed);
      }
    });

    it("openEnvelope accepts the envelope and its legacy form (c without 0x), and checks the frame id", async () => {
      for (const vector of cases) {
        for (const envelope of [vector.envelope, vector.legacyEnvelope]) {
          const opened = await openEnvelope({
            envelope,
            from: vector.inner.sender,
            frameId: vector.inner.id,
            me: vector.inner.recipient,
            privateKeys: [{ index: vector.inner.recipientKeyIndex, privateKey: recipient.privateKey }],
            lookupSenderKey: async () => sender.publicKey,
            dedup: memoryDedupStore(),
          });
          expect(opened.inner).to.deep.equal(vector.inner);
          expect(opened.signer).to.equal(sender.address);
        }
      }
    });
  });

  it("safety numbers", () => {
    for (const vector of VECTORS.safetyNumber) {
      expect(partyDigits(vector.a)).to.equal(vector.aDigits);
      expect(partyDigits(vector.b)).to.equal(vector.bDigits);
      expect(safetyNumber({ a: vector.a, b: vector.b })).to.equal(vector.safetyNumber);
      expect(safetyNumber({ a: vector.b, b: vector.a })).to.equal(vector.safetyNumber);
      expect(formatSafetyNumber(vector.safetyNumber)).to.equal(vector.formatted);
    }
  });
});

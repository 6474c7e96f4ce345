/**
 * Prints the known-answer vectors of protocol v1 (protocol-v1.json beside this file) from this repository's
 * code. The vectors are a specification: regenerate them only for a deliberate protocol change, and review
 * the difference. Usage: npx ts-node test/vectors/generate.ts > test/vectors/protocol-v1.json
 * (Hardhat's mocha loads every .ts under test/; the guard at the bottom keeps this from running there.)
 */
import { createECDH, createHash, createHmac } from "node:crypto";
import { SigningKey, TypedDataEncoder, getCreateAddress, hashMessage, keccak256, toUtf8Bytes } from "ethers";
import { pepperCredential } from "../../protocol/credential";
import { CREDENTIAL_ARGON2_PARAMS, INSECURE_TEST_ARGON2_PARAMS, credentialSalt, deriveCredential } from "../../protocol/credential-derive";
import {
  CANCEL_RESET_TYPES,
  RESET_KEY_TYPES,
  REGISTER_TYPES,
  ROTATE_KEY_TYPES,
  UPDATE_CREDENTIAL_TYPES,
  registryDigest,
  registryDomain,
  signRegistryTypedData,
  type RegistryTypedData,
} from "../../protocol/eip712";
import { innerSigningText, sealEnvelope, signInner, type InnerMessageV1 } from "../../protocol/envelope";
import { publicKeyOf, publicKeyToAddress } from "../../protocol/keys";
import { formatSafetyNumber, partyDigits, safetyNumber } from "../../protocol/safety-number";

const hex = (bytes: Uint8Array) => `0x${Buffer.from(bytes).toString("hex")}`;
const key = (byte: string) => `0x${byte.repeat(32)}`;

/** Everything about one secp256k1 test key that a checker needs. */
function keyInfo(privateKey: string) {
  const publicKey = publicKeyOf(privateKey);
  return { privateKey, publicKey, address: publicKeyToAddress(publicKey) };
}

function lengthPrefixed(value: string): Buffer {
  const bytes = Buffer.from(value, "utf8");
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

const VECTOR_DEPLOYER = keyInfo(key("d0"));
const CHAIN_ID = "31337";
// The registry's address when VECTOR_DEPLOYER deploys it as its first transaction, so a test can put the
// real contract at the vectors' address and submit the vectors' signatures to it.
const CONTRACT = getCreateAddress({ from: VECTOR_DEPLOYER.address, nonce: 0 });
const DEADLINE = "4102444800"; // 2100-01-01T00:00:00Z

async function credentialVectors() {
  const base = { username: "alice", chainId: CHAIN_ID, contractAddress: CONTRACT };
  const salts = [base, { username: "bob_2", chainId: "1", contractAddress: "0x" + "ab".repeat(20) }].map((input) => {
    const preimage = Buffer.concat([
      lengthPrefixed("eth-chat credential v1"),
      lengthPrefixed(input.username),
      lengthPrefixed(BigInt(input.chainId).toString(10)),
      lengthPrefixed(input.contractAddress.toLowerCase()),
    ]);
    const salt = hex(credentialSalt(input));
    if (salt !== hex(createHash("sha256").update(preimage).digest())) throw new Error("salt preimage disagrees");
    return { ...input, preimage: hex(preimage), salt };
  });
  const argon2id = [];
  for (const [password, params, label] of [
    ["correct horse battery staple", CREDENTIAL_ARGON2_PARAMS, "production"],
    ["correct horse battery staple", INSECURE_TEST_ARGON2_PARAMS, "tests only"],
    ["cafe\u0301 \u00fcber \u{1F511}", INSECURE_TEST_ARGON2_PARAMS, "tests only; the password is NFC-normalised first"],
  ] as const) {
    const credential = await deriveCredential({ ...base, password, argon2: params, allowInsecureParams: true });
    argon2id.push({
      comment: label,
      ...base,
      password,
      passwordUtf8: hex(Buffer.from(password, "utf8")),
      passwordNfcUtf8: hex(Buffer.from(password.normalize("NFC"), "utf8")),
      argon2: { ...params },
      credential,
    });
  }
  const pepper = key("70");
  const credential = argon2id[0].credential;
  const username = argon2id[0].username;
  // The HMAC message spelled out byte by byte: len32(username) || username || credential.
  const name = Buffer.from(username, "utf8");
  const length = Buffer.alloc(4);
  length.writeUInt32BE(name.length);
  const hmacInput = Buffer.concat([length, name, Buffer.from(credential.slice(2), "hex")]);
  const peppered = {
    pepper,
    username,
    credential,
    hmacInput: hex(hmacInput),
    hmacSha256: hex(createHmac("sha256", Buffer.from(pepper.slice(2), "hex")).update(hmacInput).digest()),
    credentialHash: pepperCredential({ pepper: Buffer.from(pepper.slice(2), "hex"), username, credential }),
  };
  return { salt: salts, argon2id, pepper: [peppered], credentialHashForSigning: peppered.credentialHash };
}

function typeString(types: Record<string, readonly { name: string; type: string }[]>): string {
  const [name, fields] = Object.entries(types)[0];
  return `${name}(${fields.map((f) => `${f.type} ${f.name}`).join(",")})`;
}

function eip712Vectors(credentialHash: string) {
  const domain = registryDomain({ chainId: BigInt(CHAIN_ID), verifyingContract: CONTRACT });
  const key0 = keyInfo(key("11"));
  const key1 = keyInfo(key("33"));
  const key2 = keyInfo(key("44"));
  const newCredentialHash = keccak256(toUtf8Bytes("a new credential hash"));
  const cases: { comment: string; data: RegistryTypedData; signers: string[] }[] = [
    {
      comment: "register alice with key 0 (the nonce of an unregistered user is 0); signed by key 0",
      data: { primaryType: "Register", message: { username: "alice", credentialHash, publicKey: key0.publicKey, nonce: 0n, deadline: BigInt(DEADLINE) } },
      signers: [key0.privateKey],
    },
    {
      comment: "rotate alice to key 1 at nonce 1 (after the registration); signed by the current key 0, then by the new key 1",
      data: { primaryType: "RotateKey", message: { username: "alice", newPublicKey: key1.publicKey, nonce: 1n, deadline: BigInt(DEADLINE) } },
      signers: [key0.privateKey, key1.privateKey],
    },
    {
      comment: "change alice's credential hash at nonce 2 (after the rotation); signed by the current key 1",
      data: { primaryType: "UpdateCredential", message: { username: "alice", credentialHash: newCredentialHash, nonce: 2n, deadline: BigInt(DEADLINE) } },
      signers: [key1.privateKey],
    },
    {
      comment: "reset alice to key 2 at nonce 3; signed by the new key 2",
      data: { primaryType: "ResetKey", message: { username: "alice", newPublicKey: key2.publicKey, nonce: 3n, deadline: BigInt(DEADLINE) } },
      signers: [key2.privateKey],
    },
    {
      comment: "cancel alice's pending reset (to key 2) at nonce 4 (the request consumed nonce 3); signed by the current key 1",
      data: { primaryType: "CancelReset", message: { username: "alice", nonce: 4n, deadline: BigInt(DEADLINE) } },
      signers: [key1.privateKey],
    },
  ];
  const typesByName = {
    Register: REGISTER_TYPES,
    RotateKey: ROTATE_KEY_TYPES,
    ResetKey: RESET_KEY_TYPES,
    CancelReset: CANCEL_RESET_TYPES,
    UpdateCredential: UPDATE_CREDENTIAL_TYPES,
  };
  return {
    domain: { name: domain.name, version: domain.version, chainId: CHAIN_ID, verifyingContract: CONTRACT },
    domainTypeString: "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
    domainSeparator: TypedDataEncoder.hashDomain(domain),
    types: Object.fromEntries(
      Object.entries(typesByName).map(([name, types]) => [name, { typeString: typeString(types), typeHash: keccak256(toUtf8Bytes(typeString(types))), fields: types[name as keyof typeof types] }]),
    ),
    keys: [key0, key1, key2],
    cases: cases.map(({ comment, data, signers }) => {
      const types = typesByName[data.primaryType] as unknown as Record<string, { name: string; type: string }[]>;
      const message = Object.fromEntries(Object.entries(data.message).map(([k, v]) => [k, typeof v === "bigint" ? v.toString() : v]));
      return {
        comment,
        primaryType: data.primaryType,
        message,
        structHash: TypedDataEncoder.from(types).hashStruct(data.primaryType, data.message as unknown as Record<string, unknown>),
        digest: registryDigest(domain, data),
        signatures: signers.map((privateKey) => {
          const compact = signRegistryTypedData({ privateKey, domain, data });
          return { signer: keyInfo(privateKey).address, full: new SigningKey(privateKey).sign(registryDigest(domain, data)).serialized, compact };
        }),
      };
    }),
  };
}

async function envelopeVectors() {
  const sender = keyInfo(key("11"));
  const recipient = keyInfo(key("22"));
  const inners: InnerMessageV1[] = [
    { v: 1, sender: "alice", recipient: "bob", id: "0123456789abcdef", timestamp: 1700000000000, senderKeyIndex: 0, recipientKeyIndex: 1, body: "hello bob" },
    {
      v: 1,
      sender: "alice",
      recipient: "bob",
      id: "0b6f8c1e-5d1a-4a57-9d3f-2f8e7c0b9a11",
      timestamp: 1767225600123,
      senderKeyIndex: 2,
      recipientKeyIndex: 1,
      body: 'h\u00e9llo \u{1F44B} "quoted" \\ back\nline\ttab \u0001 </script> \u2028',
    },
  ];
  const cases = [];
  for (const [n, inner] of inners.entries()) {
    const iv = new Uint8Array(16).map((_, i) => i + n);
    const ephemeralPrivateKey = new Uint8Array(32).fill(9 + n);
    const signature = signInner({ inner, privateKey: sender.privateKey });
    const plaintext = JSON.stringify({ m: inner, s: signature });
    const envelope = await sealEnvelope({ inner, senderPrivateKey: sender.privateKey, recipientPublicKey: recipient.publicKey, deterministic: { iv, ephemPrivateKey: ephemeralPrivateKey } });
    // The ECIES intermediates, recomputed with node:crypto so the vector shows each step.
    const ecdh = createECDH("secp256k1");
    ecdh.setPrivateKey(Buffer.from(ephemeralPrivateKey));
    const sharedX = ecdh.computeSecret(Buffer.from("04" + recipient.publicKey.slice(2), "hex"));
    const kdf = createHash("sha512").update(sharedX).digest();
    const c = (JSON.parse(envelope) as { c: string }).c;
    const bytes = Buffer.from(c.slice(2), "hex");
    cases.push({
      inner,
      signingText: innerSigningText(inner),
      signingTextUtf8Length: Buffer.byteLength(innerSigningText(inner), "utf8"),
      signingDigest: hashMessage(innerSigningText(inner)),
      signature,
      plaintext,
      ecies: {
        iv: hex(iv),
        ephemeralPrivateKey: hex(ephemeralPrivateKey),
        ephemeralPublicKeyUncompressed: hex(ecdh.getPublicKey()),
        ephemeralPublicKeyCompressed: hex(ecdh.getPublicKey(null, "compressed")),
        sharedX: hex(sharedX),
        encryptionKey: hex(kdf.subarray(0, 32)),
        macKey: hex(kdf.subarray(32)),
        mac: hex(bytes.subarray(49, 81)),
        ciphertext: hex(bytes.subarray(81)),
      },
      envelope,
      legacyEnvelope: JSON.stringify({ v: 1, c: c.slice(2) }),
    });
  }
  return { sender, recipient, cases };
}

function safetyNumberVectors() {
  const alice = { username: "alice", publicKey: publicKeyOf(key("11")) };
  const bob = { username: "bob", publicKey: publicKeyOf(key("22")) };
  const digits = safetyNumber({ a: alice, b: bob });
  return [{ a: alice, b: bob, aDigits: partyDigits(alice), bDigits: partyDigits(bob), safetyNumber: digits, formatted: formatSafetyNumber(digits) }];
}

async function generateVectors() {
  const credential = await credentialVectors();
  return {
    name: "eth-chat protocol v1 known-answer vectors",
    about:
      "Every binary value is 0x-prefixed lowercase hex, every integer that may exceed 2^53 is a decimal string, every text is as written. protocol/README.md says how each value is computed and how to check these with another implementation. All keys here are test keys: never use them.",
    deployer: VECTOR_DEPLOYER,
    credential,
    eip712: eip712Vectors(credential.credentialHashForSigning),
    envelope: await envelopeVectors(),
    safetyNumber: safetyNumberVectors(),
  };
}

if (require.main === module) {
  generateVectors().then((vectors) => process.stdout.write(`${JSON.stringify(vectors, null, 2)}\n`));
}

/**
 * Per-message cost of envelope v1 (protocol/envelope.ts) on the client: seal (EIP-191 sign, then ECIES
 * encrypt) and open (ECIES decrypt, then recover and check the signer), against raw node:crypto
 * AES-256-GCM (NIST SP 800-38D) on the same plaintext as the floor of any authenticated encryption.
 * Also the signature alone (sign, recover) so that the ECIES share can be read off, and node:crypto's
 * native secp256k1 ECDH as the cost a native ECIES would pay.
 *
 *   npm run bench:envelope -- [--batches 7] [--ops 40] [--body-bytes 120]
 * Each figure is the median over batches of (batch time / ops), in microseconds.
 * Last line: {"bench":"envelope","seal_us":..,"open_us":..,"aes_gcm_seal_us":..,"aes_gcm_open_us":..,...}
 */
import { createCipheriv, createDecipheriv, createECDH, randomBytes, randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { Wallet, recoverAddress } from "ethers";
import { innerDigest, openEnvelope, sealEnvelope, signInner, type DedupStore, type InnerMessageV1 } from "../protocol/envelope";
import { publicKeyOf } from "../protocol/keys";
import { log, machine, median, options, result, round } from "./lib";

const opts = options({ batches: 7, ops: 40, "body-bytes": 120 });

async function timeBatches(label: string, op: (i: number) => unknown | Promise<unknown>): Promise<number> {
  const perOp: number[] = [];
  for (let i = 0; i < 3; i++) await op(i); // warm up (JIT, lazy tables)
  for (let b = 0; b < opts.batches; b++) {
    const started = performance.now();
    for (let i = 0; i < opts.ops; i++) await op(i);
    perOp.push(((performance.now() - started) * 1000) / opts.ops);
  }
  const us = median(perOp);
  log(`${label}: ${round(us, 1)} µs/op (batches: ${perOp.map((x) => round(x, 0)).join(", ")})`);
  return us;
}

async function main() {
  const sender = Wallet.createRandom();
  const recipient = Wallet.createRandom();
  const recipientPublicKey = publicKeyOf(recipient.privateKey);
  const senderPublicKey = publicKeyOf(sender.privateKey);
  const body = "x".repeat(opts["body-bytes"]);
  const innerOf = (): InnerMessageV1 => ({
    v: 1,
    sender: "alice",
    recipient: "bob",
    id: randomUUID(),
    timestamp: Date.now(),
    senderKeyIndex: 0,
    recipientKeyIndex: 0,
    body,
  });
  // Every id is fresh, so a dedup store that remembers nothing measures the same work without growing.
  const dedup: DedupStore = { has: () => false, add: () => undefined };

  const sealed: { envelope: string; id: string }[] = [];
  const seal = await timeBatches("seal (sign + ECIES encrypt)", async () => {
    const inner = innerOf();
    const envelope = await sealEnvelope({ inner, senderPrivateKey: sender.privateKey, recipientPublicKey });
    if (sealed.length < opts.ops) sealed.push({ envelope, id: inner.id });
  });
  const open = await timeBatches("open (ECIES decrypt + recover + checks)", async (i) => {
    const { envelope, id } = sealed[i % sealed.length];
    await openEnvelope({
      envelope,
      from: "alice",
      frameId: id,
      me: "bob",
      privateKeys: [{ index: 0, privateKey: recipient.privateKey }],
      lookupSenderKey: async () => senderPublicKey,
      dedup,
    });
  });

  const sampleInner = innerOf();
  const signature = signInner({ inner: sampleInner, privateKey: sender.privateKey });
  const sign = await timeBatches("sign only (EIP-191, secp256k1)", () => signInner({ inner: sampleInner, privateKey: sender.privateKey }));
  const recover = await timeBatches("recover only", () => recoverAddress(innerDigest(sampleInner), signature));

  // The floor: AES-256-GCM with a 96-bit random nonce (SP 800-38D §8.2.2) over the same plaintext the
  // envelope encrypts ({m, s} JSON), key already agreed (no key exchange, no signature).
  const plaintext = Buffer.from(JSON.stringify({ m: sampleInner, s: signature }));
  const key = randomBytes(32);
  let last = { iv: randomBytes(12), ct: Buffer.alloc(0), tag: Buffer.alloc(0) };
  const gcmSeal = await timeBatches("AES-256-GCM encrypt", () => {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", key, iv);
    const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    last = { iv, ct, tag: cipher.getAuthTag() };
  });
  const gcmOpen = await timeBatches("AES-256-GCM decrypt", () => {
    const decipher = createDecipheriv("aes-256-gcm", key, last.iv);
    decipher.setAuthTag(last.tag);
    Buffer.concat([decipher.update(last.ct), decipher.final()]);
  });

  // What a native ECIES could cost: node:crypto (OpenSSL) ephemeral secp256k1 key and ECDH, the asymmetric
  // half of SEC 1 ECIES that protocol/ecies.ts does in JavaScript (noble).
  const recipientEcdh = createECDH("secp256k1");
  recipientEcdh.generateKeys();
  const recipientPoint = recipientEcdh.getPublicKey();
  const nativeEcdh = await timeBatches("node:crypto secp256k1 ephemeral key + ECDH", () => {
    const ephemeral = createECDH("secp256k1");
    ephemeral.generateKeys();
    ephemeral.computeSecret(recipientPoint);
  });

  result({
    bench: "envelope",
    date: new Date().toISOString(),
    machine: machine(),
    batches: opts.batches,
    ops_per_batch: opts.ops,
    body_bytes: opts["body-bytes"],
    plaintext_bytes: plaintext.length,
    envelope_chars: sealed[0].envelope.length,
    seal_us: round(seal, 1),
    open_us: round(open, 1),
    sign_us: round(sign, 1),
    recover_us: round(recover, 1),
    ecies_encrypt_us_est: round(seal - sign, 1),
    aes_gcm_seal_us: round(gcmSeal, 2),
    aes_gcm_open_us: round(gcmOpen, 2),
    native_ecdh_us: round(nativeEcdh, 1),
    seal_vs_gcm: round(seal / gcmSeal, 0),
    open_vs_gcm: round(open / gcmOpen, 0),
    seals_per_second: round(1e6 / seal, 0),
    opens_per_second: round(1e6 / open, 0),
  });
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});

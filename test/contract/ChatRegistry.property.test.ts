/**
 * Property-based test of ChatRegistry (issue 7, the contract part): random sequences of register, rotateKey,
 * resetKey and updateCredential by honest and dishonest callers, run against the real contract on Hardhat's
 * in-process network and against a small model. After every step:
 *  - the outcome (success or the exact custom error) is the model's;
 *  - only a signature by the current key rotates (and only a relayer resets);
 *  - every user's key history only grows, its old records never change;
 *  - usernames stay unique (a second registration of a name always fails);
 *  - nonces only increase, and by exactly one on each success.
 * The seed is fixed and printed; set FC_SEED to replay another one. The hot loop asserts with node:assert:
 * hardhat-chai-matchers' overloads resolve optional modules on every comparison and tripled the run time.
 */
import assert from "node:assert/strict";
import { expect } from "chai";
import fc from "fast-check";
import hre from "hardhat";
import { takeSnapshot, type SnapshotRestorer } from "@nomicfoundation/hardhat-toolbox/network-helpers";
import { Wallet, ZeroHash as ZERO, keccak256, toUtf8Bytes, type BytesLike } from "ethers";
import type { HardhatEthersSigner } from "@nomicfoundation/hardhat-ethers/signers";
import type { RegistryDomain } from "../../protocol/eip712";
import { publicKeyOf } from "../../protocol/keys";
import type { ChatRegistry } from "../../typechain-types";
import { domainOf, signRegister, signReset, signRotate, signUpdateCredential, type Identity } from "./signing";

const SEED = Number(process.env.FC_SEED ?? 20261129);
const RUNS = 200;
const USERNAMES = ["alice", "bob", "carol"] as const;
const OPS = ["register", "rotate", "reset", "update"] as const;
/** How a step misbehaves; "none" is an honest step. */
const FAULTS = ["none", "wrongKey", "formerKey", "staleNonce", "noNewKeyProof", "notRelayer", "hostileRelay"] as const;
const KIND = { Registered: 1n, Rotated: 2n, Reset: 3n } as const;
const DEADLINE = 2n ** 40n; // far in the future: deadlines are tested elsewhere

// A fixed pool of identities, so that steps reuse keys across users and hit "unchanged key" naturally.
const POOL: Identity[] = Array.from({ length: 8 }, (_, i) => {
  const wallet = new Wallet(keccak256(toUtf8Bytes(`chat-registry-property-key-${i}`)));
  return { privateKey: wallet.privateKey, publicKey: publicKeyOf(wallet.privateKey), address: wallet.address };
});

type Op = (typeof OPS)[number];
type Fault = (typeof FAULTS)[number];
interface Step {
  op: Op;
  user: (typeof USERNAMES)[number];
  key: number;
  fault: Fault;
}
interface ModelUser {
  keys: Identity[];
  kinds: bigint[];
  nonce: bigint;
  credential: string;
}
interface ChainUser {
  registered: boolean;
  nonce: bigint;
  credential: string;
  records: { key: string; timestamp: bigint; kind: bigint }[];
}

const stepArbitrary: fc.Arbitrary<Step> = fc.record({
  op: fc.constantFrom(...OPS),
  user: fc.constantFrom(...USERNAMES),
  key: fc.nat(POOL.length - 1),
  // About half the steps are honest, so that sequences get deep enough to rotate and reset.
  fault: fc.oneof({ arbitrary: fc.constant("none" as const), weight: 6 }, fc.constantFrom(...FAULTS.slice(1))),
});

const credentialOf = (n: number) => keccak256(toUtf8Bytes(`property-credential-${n}`));
const other = (index: number, by: number) => POOL[(index + by) % POOL.length];

describe("ChatRegistry property: random honest and dishonest sequences", function () {
  let registry: ChatRegistry;
  let domain: RegistryDomain;
  let relayer: HardhatEthersSigner;
  let stranger: HardhatEthersSigner;
  let clean: SnapshotRestorer;

  before(async function () {
    const signers = await hre.ethers.getSigners();
    relayer = signers[1];
    stranger = signers[2];
    registry = (await hre.ethers.deployContract("ChatRegistry", [relayer.address], signers[0])) as unknown as ChatRegistry;
    await registry.waitForDeployment();
    domain = await domainOf(registry);
    clean = await takeSnapshot();
  });

  after(async function () {
    await clean.restore();
  });

  /** "ok", or the name of the custom error the call reverted with. */
  async function outcome(call: Promise<{ wait(): Promise<unknown> }>): Promise<string> {
    try {
      await (await call).wait();
      return "ok";
    } catch (error) {
      const data = (error as { data?: BytesLike }).data;
      const parsed = data ? registry.interface.parseError(data) : null;
      if (!parsed) throw error;
      return parsed.name;
    }
  }

  async function readChain(username: string): Promise<ChainUser> {
    // Concurrent reads: the in-process node answers them in one go instead of one await each.
    const [count, registered, nonce, credential] = await Promise.all([
      registry.keyCount(username),
      registry.isRegistered(username),
      registry.nonces(username),
      registry.credentialHash(username),
    ]);
    const records = await Promise.all(
      Array.from({ length: Number(count) }, (_, i) =>
        registry.keyRecord(username, i).then((r) => ({ key: r.key, timestamp: r.timestamp, kind: r.kind })),
      ),
    );
    return { registered, nonce, credential, records };
  }

  /** Plays one step on chain and on the model; returns what happened, and who signed as the current key. */
  async function play(step: Step, model: Map<string, ModelUser>, n: number) {
    const newKey = POOL[step.key];
    const user = model.get(step.user);
    const current = user?.keys.at(-1);
    const former = user && user.keys.length > 1 ? user.keys.at(-2)! : other(step.key, 3);
    const nonce = user?.nonce ?? 0n;
    const signedNonce = step.fault === "staleNonce" ? (nonce === 0n ? 1n : nonce - 1n) : nonce;
    const base = { domain, username: step.user, nonce: signedNonce, deadline: DEADLINE };
    let expected: string;
    let currentSigner: Identity | undefined;

    switch (step.op) {
      case "register": {
        const signer = step.fault === "wrongKey" ? other(step.key, 1) : newKey;
        const credential = credentialOf(n);
        const caller = step.fault === "notRelayer" ? stranger : relayer;
        const sig = signRegister({ ...base, signer, credentialHash: credential, publicKey: newKey.publicKey });
        expected =
          caller !== relayer ? "ChatRegistryUnauthorizedRelayer"
          : user ? "ChatRegistryUsernameTaken"
          : signer.address !== newKey.address || signedNonce !== 0n ? "ChatRegistryInvalidSigner"
          : "ok";
        const got = await outcome(registry.connect(caller).register(step.user, credential, newKey.publicKey, DEADLINE, sig));
        assert.equal(got, expected, `register ${JSON.stringify(step)}`);
        if (got === "ok") model.set(step.user, { keys: [newKey], kinds: [KIND.Registered], nonce: 1n, credential });
        break;
      }
      case "rotate": {
        // A hostile relay signs the "current key" part with the key it wants to install.
        currentSigner =
          step.fault === "wrongKey" ? other(step.key, 1)
          : step.fault === "formerKey" ? former
          : step.fault === "hostileRelay" ? newKey
          : current ?? newKey;
        const newSigner = step.fault === "noNewKeyProof" ? other(step.key, 2) : newKey;
        const message = { ...base, newPublicKey: newKey.publicKey };
        const caller = step.fault === "hostileRelay" || n % 2 === 0 ? relayer : stranger; // anyone may submit
        expected =
          !user ? "ChatRegistryUnknownUser"
          : newKey.address === current!.address ? "ChatRegistryKeyUnchanged"
          : currentSigner.address !== current!.address || newSigner.address !== newKey.address || signedNonce !== nonce
            ? "ChatRegistryInvalidSigner"
          : "ok";
        const got = await outcome(
          registry.connect(caller).rotateKey(step.user, newKey.publicKey, DEADLINE,
            signRotate({ ...message, signer: currentSigner }), signRotate({ ...message, signer: newSigner })),
        );
        assert.equal(got, expected, `rotate ${JSON.stringify(step)}`);
        if (got === "ok") {
          user!.keys.push(newKey);
          user!.kinds.push(KIND.Rotated);
          user!.nonce += 1n;
        }
        break;
      }
      case "reset": {
        const signer = step.fault === "wrongKey" || step.fault === "noNewKeyProof" ? other(step.key, 1) : newKey;
        const caller = step.fault === "notRelayer" ? stranger : relayer;
        expected =
          caller !== relayer ? "ChatRegistryUnauthorizedRelayer"
          : !user ? "ChatRegistryUnknownUser"
          : newKey.address === current!.address ? "ChatRegistryKeyUnchanged"
          : signer.address !== newKey.address || signedNonce !== nonce ? "ChatRegistryInvalidSigner"
          : "ok";
        const sig = signReset({ ...base, signer, newPublicKey: newKey.publicKey });
        const got = await outcome(registry.connect(caller).resetKey(step.user, newKey.publicKey, DEADLINE, sig));
        assert.equal(got, expected, `reset ${JSON.stringify(step)}`);
        if (got === "ok") {
          user!.keys.push(newKey);
          user!.kinds.push(KIND.Reset);
          user!.nonce += 1n;
        }
        break;
      }
      case "update": {
        currentSigner =
          step.fault === "wrongKey" || step.fault === "hostileRelay" ? other(step.key, 1)
          : step.fault === "formerKey" ? former
          : current ?? newKey;
        const credential = credentialOf(n);
        const caller = step.fault === "hostileRelay" ? relayer : stranger;
        expected =
          !user ? "ChatRegistryUnknownUser"
          : currentSigner.address !== current!.address || signedNonce !== nonce ? "ChatRegistryInvalidSigner"
          : "ok";
        const sig = signUpdateCredential({ ...base, signer: currentSigner, credentialHash: credential });
        const got = await outcome(registry.connect(caller).updateCredential(step.user, credential, DEADLINE, sig));
        assert.equal(got, expected, `update ${JSON.stringify(step)}`);
        if (got === "ok") {
          user!.credential = credential;
          user!.nonce += 1n;
        }
        break;
      }
    }
    return { ok: expected === "ok", currentSigner };
  }

  it(`holds the invariants over ${RUNS} random sequences (fast-check)`, async function () {
    console.log(`      fast-check seed ${SEED}, ${RUNS} runs (replay: FC_SEED=${SEED})`);
    let steps = 0;
    let successes = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(stepArbitrary, { minLength: 1, maxLength: 6 }), async (sequence) => {
        await clean.restore(); // each run starts from the freshly deployed contract
        const model = new Map<string, ModelUser>();
        let before = new Map<string, ChainUser>();
        for (const name of USERNAMES) before.set(name, { registered: false, nonce: 0n, credential: ZERO, records: [] });

        for (const [n, step] of sequence.entries()) {
          const { ok, currentSigner } = await play(step, model, n);
          steps++;
          if (ok) successes++;
          const after = new Map<string, ChainUser>();
          const reads = await Promise.all(USERNAMES.map((name) => readChain(name)));
          for (const [i, name] of USERNAMES.entries()) {
            const was = before.get(name)!;
            const now = reads[i];
            after.set(name, now);
            const m = model.get(name);

            // The chain equals the model (which is append-only by construction).
            assert.equal(now.registered, m !== undefined);
            assert.deepEqual(now.records.map((r) => r.key), (m?.keys ?? []).map((k) => k.address));
            assert.deepEqual(now.records.map((r) => r.kind), m?.kinds ?? []);
            assert.equal(now.nonce, m?.nonce ?? 0n);
            assert.equal(now.credential, m?.credential ?? ZERO);

            // History only grows: old records never change.
            assert.ok(now.records.length >= was.records.length, "history shrank");
            assert.deepEqual(now.records.slice(0, was.records.length), was.records, "an old record changed");
            // Nonces only increase; by one exactly for the user of a successful step, never for others.
            const touched = name === step.user && ok;
            assert.equal(now.nonce, touched ? was.nonce + 1n : was.nonce, "nonce did not move by exactly the step");

            // Only a signature by the current key rotates; only a relayer resets.
            if (now.records.length > was.records.length && was.records.length > 0) {
              assert.ok(touched, "a key changed without a successful step for that user");
              const added = now.records.at(-1)!;
              if (added.kind === KIND.Rotated) {
                assert.equal(step.op, "rotate");
                assert.equal(currentSigner!.address, was.records.at(-1)!.key, "rotated without the current key");
              } else {
                assert.equal(added.kind, KIND.Reset);
                assert.equal(step.op, "reset");
                assert.notEqual(step.fault, "notRelayer", "a non-relayer reset a key");
              }
            }
          }
          // Usernames stay unique: one registration per name, ever.
          const registeredNames = USERNAMES.filter((name) => after.get(name)!.registered);
          for (const name of registeredNames) {
            assert.equal(after.get(name)!.records.filter((r) => r.kind === KIND.Registered).length, 1);
            assert.equal(after.get(name)!.records[0].kind, KIND.Registered);
          }
          before = after;
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
    console.log(`      ${steps} steps, ${successes} succeeded, ${steps - successes} refused as the model predicted`);
    expect(successes).to.be.greaterThan(0);
    expect(steps - successes).to.be.greaterThan(0);
  });
});

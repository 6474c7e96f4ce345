/**
 * Property-based test of ChatRegistry: random sequences of register, rotateKey, the time-locked reset
 * (requestReset, cancelReset, completeReset), moves of the chain's clock and updateCredential, by honest and
 * dishonest callers, run against the real contract on Hardhat's in-process network and against a small model.
 * After every step:
 *  - the outcome (success or the exact custom error) is the model's, and so is each user's pending reset;
 *  - only a signature by the current key rotates;
 *  - only a relayer starts a reset; a pending reset's key becomes current only through completeReset, never
 *    before its effectiveAt, and never once cancelled (by cancelReset or a rotation);
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
import { takeSnapshot, time, type SnapshotRestorer } from "@nomicfoundation/hardhat-toolbox/network-helpers";
import { Wallet, ZeroAddress, ZeroHash as ZERO, keccak256, toUtf8Bytes, type BytesLike } from "ethers";
import type { HardhatEthersSigner } from "@nomicfoundation/hardhat-ethers/signers";
import type { RegistryDomain } from "../../protocol/eip712";
import { publicKeyOf } from "../../protocol/keys";
import type { ChatRegistry } from "../../typechain-types";
import {
  domainOf,
  signCancelReset,
  signRegister,
  signReset,
  signRotate,
  signUpdateCredential,
  type Identity,
} from "../helpers/signing";

const SEED = Number(process.env.FC_SEED ?? 20261129);
const RUNS = 200;
const USERNAMES = ["alice", "bob", "carol"] as const;
const OPS = ["register", "rotate", "reset", "cancel", "complete", "wait", "update"] as const;
/** How a step misbehaves; "none" is an honest step. */
const FAULTS = ["none", "wrongKey", "formerKey", "staleNonce", "noNewKeyProof", "notRelayer", "hostileRelay"] as const;
const KIND = { Registered: 1n, Rotated: 2n, Reset: 3n } as const;
const DEADLINE = 2n ** 40n; // far in the future: deadlines are tested elsewhere
const RESET_DELAY = 10n;

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
interface Pending {
  key: string;
  effectiveAt: bigint;
}
interface ModelUser {
  keys: Identity[];
  kinds: bigint[];
  nonce: bigint;
  credential: string;
  pending?: { key: Identity; effectiveAt: bigint };
}
interface ChainUser {
  registered: boolean;
  nonce: bigint;
  credential: string;
  records: { key: string; timestamp: bigint; kind: bigint }[];
  pending: Pending;
}
const NO_PENDING: Pending = { key: ZeroAddress, effectiveAt: 0n };

/** Relative frequency of each operation: the reset's three steps and the clock come up often enough for a
 * sequence to request, wait and complete (or cancel) a reset of the same user. */
const OP_WEIGHTS: Record<Op, number> = { register: 2, rotate: 2, reset: 3, cancel: 2, complete: 3, wait: 3, update: 1 };

const stepArbitrary: fc.Arbitrary<Step> = fc.record({
  op: fc.oneof(...OPS.map((op) => ({ arbitrary: fc.constant(op), weight: OP_WEIGHTS[op] }))),
  // Mostly one user, so that sequences go deep; the others check that users stay apart.
  user: fc.oneof({ arbitrary: fc.constant(USERNAMES[0]), weight: 4 }, fc.constantFrom(...USERNAMES.slice(1))),
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
    registry = (await hre.ethers.deployContract("ChatRegistry", [relayer.address, RESET_DELAY], signers[0])) as unknown as ChatRegistry;
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
    const [count, registered, nonce, credential, pending] = await Promise.all([
      registry.keyCount(username),
      registry.isRegistered(username),
      registry.nonces(username),
      registry.credentialHash(username),
      registry.pendingReset(username),
    ]);
    const records = await Promise.all(
      Array.from({ length: Number(count) }, (_, i) =>
        registry.keyRecord(username, i).then((r) => ({ key: r.key, timestamp: r.timestamp, kind: r.kind })),
      ),
    );
    return { registered, nonce, credential, records, pending: { key: pending.key, effectiveAt: pending.effectiveAt } };
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
          user!.pending = undefined; // the current key acted: a pending reset is dropped
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
          : user.pending ? "ChatRegistryResetPending"
          : signer.address !== newKey.address || signedNonce !== nonce ? "ChatRegistryInvalidSigner"
          : "ok";
        const sig = signReset({ ...base, signer, newPublicKey: newKey.publicKey });
        const got = await outcome(registry.connect(caller).requestReset(step.user, newKey.publicKey, DEADLINE, sig));
        assert.equal(got, expected, `reset ${JSON.stringify(step)}`);
        if (got === "ok") {
          user!.nonce += 1n;
          user!.pending = { key: newKey, effectiveAt: BigInt(await time.latest()) + RESET_DELAY };
        }
        break;
      }
      case "cancel": {
        // A hostile relay signs with the key it asked to install.
        currentSigner =
          step.fault === "wrongKey" ? other(step.key, 1)
          : step.fault === "formerKey" ? former
          : step.fault === "hostileRelay" ? user?.pending?.key ?? newKey
          : current ?? newKey;
        const caller = step.fault === "hostileRelay" || n % 2 === 0 ? relayer : stranger; // anyone may submit
        expected =
          !user ? "ChatRegistryUnknownUser"
          : !user.pending ? "ChatRegistryNoPendingReset"
          : currentSigner.address !== current!.address || signedNonce !== nonce ? "ChatRegistryInvalidSigner"
          : "ok";
        const sig = signCancelReset({ ...base, signer: currentSigner });
        const got = await outcome(registry.connect(caller).cancelReset(step.user, DEADLINE, sig));
        assert.equal(got, expected, `cancel ${JSON.stringify(step)}`);
        if (got === "ok") {
          user!.nonce += 1n;
          user!.pending = undefined;
        }
        break;
      }
      case "complete": {
        // A dishonest completer names another key than the pending one.
        const honest = step.fault === "none" || step.fault === "staleNonce";
        const named = honest ? user?.pending?.key ?? newKey : newKey;
        // The block time of this call is fixed, so that the model knows whether the reset is due.
        const at = BigInt(await time.latest()) + 1n;
        await time.setNextBlockTimestamp(at);
        expected =
          !user ? "ChatRegistryUnknownUser"
          : !user.pending ? "ChatRegistryNoPendingReset"
          : at < user.pending.effectiveAt ? "ChatRegistryResetNotDue"
          : named.address !== user.pending.key.address ? "ChatRegistryPendingKeyMismatch"
          : "ok";
        const got = await outcome(registry.connect(n % 2 === 0 ? relayer : stranger).completeReset(step.user, named.publicKey));
        assert.equal(got, expected, `complete ${JSON.stringify(step)}`);
        if (got === "ok") {
          user!.keys.push(user!.pending!.key);
          user!.kinds.push(KIND.Reset);
          user!.nonce += 1n;
          user!.pending = undefined;
        }
        break;
      }
      case "wait": {
        // From 1 second to 1.75 delays (each mined step adds a second or more): crosses effectiveAt in some runs and stops short of it in others.
        await time.increase(1n + (BigInt(step.key) * RESET_DELAY) / 4n);
        expected = "none";
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
    // About 1,500 transactions: some 30 s alone, but 2 minutes and more under `npm run coverage` (an instrumented
    // contract) on a busy machine, past the suite's 120 s default; a run cut by the timeout goes on against the
    // shared chain and breaks the fixtures of the tests after it.
    this.timeout(600_000);
    console.log(`      fast-check seed ${SEED}, ${RUNS} runs (replay: FC_SEED=${SEED})`);
    let steps = 0;
    let successes = 0;
    const succeededBy = Object.fromEntries(OPS.map((op) => [op, 0])) as Record<Op, number>;
    await fc.assert(
      fc.asyncProperty(fc.array(stepArbitrary, { minLength: 1, maxLength: 12 }), async (randomSteps) => {
        // Every run starts with alice registered honestly, so that short sequences still reach the reset's states.
        const sequence: Step[] = [{ op: "register", user: "alice", key: 0, fault: "none" }, ...randomSteps];
        await clean.restore(); // each run starts from the freshly deployed contract
        const model = new Map<string, ModelUser>();
        const cancelled: ({ user: string } & Pending)[] = [];
        let before = new Map<string, ChainUser>();
        for (const name of USERNAMES) {
          before.set(name, { registered: false, nonce: 0n, credential: ZERO, records: [], pending: NO_PENDING });
        }

        for (const [n, step] of sequence.entries()) {
          const { ok, currentSigner } = await play(step, model, n);
          steps++;
          if (ok) {
            successes++;
            succeededBy[step.op]++;
          }
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
            assert.deepEqual(
              now.pending,
              m?.pending ? { key: m.pending.key.address, effectiveAt: m.pending.effectiveAt } : NO_PENDING,
            );

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
                // A reset key becomes current only from the pending entry a relayer made, at or after its
                // effectiveAt, and only if that entry was never cancelled.
                assert.equal(added.kind, KIND.Reset);
                assert.equal(step.op, "complete");
                assert.equal(added.key, was.pending.key, "a reset installed a key that was not pending");
                assert.ok(added.timestamp >= was.pending.effectiveAt, "a reset took effect before its effectiveAt");
                assert.ok(
                  !cancelled.some((c) => c.user === name && c.key === was.pending.key && c.effectiveAt === was.pending.effectiveAt),
                  "a cancelled reset took effect",
                );
              }
            }

            // A pending reset appears only by a relayer's request, and goes only by a cancel or a rotation
            // (signed by the current key) or by its completion.
            if (now.pending.key !== was.pending.key || now.pending.effectiveAt !== was.pending.effectiveAt) {
              assert.ok(touched, "a pending reset changed without a successful step for that user");
              if (now.pending.key !== ZeroAddress) {
                assert.equal(was.pending.key, ZeroAddress, "a pending reset was replaced");
                assert.equal(step.op, "reset");
                assert.notEqual(step.fault, "notRelayer", "a non-relayer started a reset");
              } else if (step.op === "complete") {
                assert.equal(now.records.at(-1)!.key, was.pending.key);
              } else {
                assert.ok(step.op === "cancel" || step.op === "rotate", `a pending reset dropped by ${step.op}`);
                assert.equal(currentSigner!.address, was.records.at(-1)!.key, "cancelled without the current key");
                cancelled.push({ user: name, ...was.pending });
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
    console.log(`      ${steps} steps, ${successes} succeeded, ${steps - successes} refused or waits, as the model predicted`);
    console.log(`      successes by operation: ${JSON.stringify(succeededBy)}`);
    expect(successes).to.be.greaterThan(0);
    expect(steps - successes).to.be.greaterThan(0);
    // The sequences reach every transition of the reset at least once.
    for (const op of ["rotate", "reset", "cancel", "complete"] as const) expect(succeededBy[op]).to.be.greaterThan(0);
  });
});

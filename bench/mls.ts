/**
 * Cost of messages v2 (MLS, RFC 9420, through ts-mls with cipher suite 1) on the client, against
 * envelope v1 (protocol/envelope.ts) in the same run:
 *  - per application message: v2 seal and open against v1 seal and open (median of batch means; v2
 *    and v1 batches alternate, so that load from other jobs on the machine falls on both alike);
 *  - per group size (2, 10, 100 by default): a commit adding one member, the Welcome's size, the join
 *    from that Welcome, a commit removing one member, and an existing member processing each commit
 *    (medians over repetitions from the same state: a pending commit leaves the state untouched).
 * Credentials are real: every device is authorised by a secp256k1 identity key, and every check goes
 * through the authentication service over an in-memory key book, as a client would.
 *
 *   npm run bench:mls -- [--batches 7] [--ops 40] [--body-bytes 120] [--reps 5] [--max-group 100]
 * Last line: {"bench":"mls","v2_seal_us":..,"v1_seal_us":..,"seal_speedup":..,"groups":[...],...}
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { Wallet } from "ethers";
import { decodeGroupState, encodeGroupState, type ClientConfig, type ClientState } from "ts-mls";
import { openEnvelope, sealEnvelope, type DedupStore, type InnerMessageV1 } from "../protocol/envelope";
import { publicKeyOf } from "../protocol/keys";
import {
  acceptPendingCommit,
  addMembers,
  authorizeDevice,
  createMlsGroup,
  deviceAuthenticationService,
  generateDeviceKeyPackage,
  generateDeviceSignatureKey,
  groupMembers,
  joinFromWelcome,
  memoryKeyBook,
  mlsClientConfig,
  newPayloadId,
  processIncomingMessage,
  removeMembers,
  sealApplicationMessage,
} from "../protocol/mls";
import { log, machine, median, options, result, round } from "./lib";

const opts = options({ batches: 7, ops: 40, "body-bytes": 120, reps: 5, "max-group": 100 });
const CHAIN_ID = 31337n;
const CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

type TimedOp = { label: string; op: (i: number) => unknown | Promise<unknown> };

/**
 * Median µs per op of two operations measured in alternating batches (A B, B A, A B, ...), so that a
 * change in the machine's load (these VMs are shared) falls on both sides of a comparison alike.
 */
async function timeInterleaved(a: TimedOp, b: TimedOp): Promise<[number, number]> {
  const sides = [a, b].map((side) => ({ ...side, next: 0, perOp: [] as number[] }));
  for (const side of sides) for (let w = 0; w < 3; w++) await side.op(side.next++); // warm up (JIT, lazy tables)
  for (let batch = 0; batch < opts.batches; batch++) {
    for (const side of batch % 2 === 0 ? sides : [...sides].reverse()) {
      const started = performance.now();
      for (let k = 0; k < opts.ops; k++) await side.op(side.next++);
      side.perOp.push(((performance.now() - started) * 1000) / opts.ops);
    }
  }
  return sides.map((side) => {
    const us = median(side.perOp);
    log(`${side.label}: ${round(us, 1)} µs/op (batches: ${side.perOp.map((x) => round(x, 0)).join(", ")})`);
    return us;
  }) as [number, number];
}

/** Median wall time in ms of `reps` runs of `op`, each given a fresh `prepare()` made outside the clock. */
async function timeReps<T>(label: string, prepare: () => T | Promise<T>, op: (input: T) => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r < opts.reps; r++) {
    const input = await prepare();
    const started = performance.now();
    await op(input);
    times.push(performance.now() - started);
  }
  const ms = median(times);
  log(`${label}: ${round(ms, 1)} ms (runs: ${times.map((x) => round(x, 1)).join(", ")})`);
  return ms;
}

function world() {
  const keyBook = memoryKeyBook();
  const config = (policy: "strict" | "lenient"): ClientConfig =>
    mlsClientConfig(deviceAuthenticationService({ keyBook, policy, chainId: CHAIN_ID, contract: CONTRACT }));
  const strict = config("strict");
  const lenient = config("lenient");
  async function device(username: string) {
    const wallet = Wallet.createRandom();
    keyBook.append(username, { address: wallet.address, kind: "registered", timestamp: Math.floor(Date.now() / 1000) });
    const signatureKey = await generateDeviceSignatureKey();
    const credential = await authorizeDevice({
      username, keyIndex: 0, chainId: CHAIN_ID, contract: CONTRACT, devicePublicKey: signatureKey.publicKey,
      sign: (text) => wallet.signMessage(text),
    });
    return { username, ...(await generateDeviceKeyPackage({ credential, signatureKey, lifetimeSeconds: 3600 })) };
  }
  return { strict, lenient, device };
}

/** A copy of a state as a process would load it, so repeated runs never share mutable secrets. */
function copyOf(state: ClientState): ClientState {
  return { ...decodeGroupState(encodeGroupState(state), 0)![0], clientConfig: state.clientConfig };
}

async function perMessage() {
  const w = world();
  const alice = await w.device("alice");
  const bob = await w.device("bob");
  let aliceState = await createMlsGroup({ keyPackage: alice.publicPackage, privatePackage: alice.privatePackage, clientConfig: w.strict });
  const pending = await addMembers({ state: aliceState, keyPackages: [bob.publicPackage] });
  aliceState = acceptPendingCommit(pending);
  let bobState = await joinFromWelcome({
    welcome: pending.welcome!, keyPackage: bob.publicPackage, privatePackage: bob.privatePackage, joinConfig: w.lenient, memberConfig: w.strict,
  });
  const body = "x".repeat(opts["body-bytes"]);

  const wire: Uint8Array[] = [];
  const v2Seal: TimedOp = {
    label: "v2 seal (MLS application message)",
    op: async () => {
      const sealed = await sealApplicationMessage({ state: aliceState, payload: { id: newPayloadId(), sentAt: Date.now(), body } });
      aliceState = sealed.state;
      wire.push(sealed.message);
    },
  };
  const v2Open: TimedOp = {
    label: "v2 open (MLS application message + sender)",
    op: async (i) => {
      const opened = await processIncomingMessage({ state: bobState, message: wire[i] });
      if (opened.kind !== "application" || opened.payload.body !== body || opened.sender.username !== "alice") throw new Error("v2 open failed");
      bobState = opened.state;
    },
  };

  const sender = Wallet.createRandom();
  const recipient = Wallet.createRandom();
  const recipientPublicKey = publicKeyOf(recipient.privateKey);
  const senderPublicKey = publicKeyOf(sender.privateKey);
  const dedup: DedupStore = { has: () => false, add: () => undefined };
  const sealed: { envelope: string; id: string }[] = [];
  const v1Seal: TimedOp = {
    label: "v1 seal (sign + ECIES)",
    op: async () => {
      const inner: InnerMessageV1 = {
        v: 1, sender: "alice", recipient: "bob", id: randomUUID(), timestamp: Date.now(), senderKeyIndex: 0, recipientKeyIndex: 0, body,
      };
      sealed.push({ envelope: await sealEnvelope({ inner, senderPrivateKey: sender.privateKey, recipientPublicKey }), id: inner.id });
    },
  };
  const v1Open: TimedOp = {
    label: "v1 open (ECIES + recover)",
    op: async (i) => {
      const { envelope, id } = sealed[i];
      await openEnvelope({
        envelope, from: "alice", frameId: id, me: "bob",
        privateKeys: [{ index: 0, privateKey: recipient.privateKey }],
        lookupSenderKey: async () => senderPublicKey, dedup,
      });
    },
  };
  const [v2SealUs, v1SealUs] = await timeInterleaved(v2Seal, v1Seal);
  const [v2OpenUs, v1OpenUs] = await timeInterleaved(v2Open, v1Open);
  return {
    v2_seal_us: round(v2SealUs, 1),
    v2_open_us: round(v2OpenUs, 1),
    v1_seal_us: round(v1SealUs, 1),
    v1_open_us: round(v1OpenUs, 1),
    seal_speedup: round(v1SealUs / v2SealUs, 2),
    open_speedup: round(v1OpenUs / v2OpenUs, 2),
    v2_message_bytes: wire[0].length,
    v1_envelope_chars: sealed[0].envelope.length,
  };
}

async function groupOf(size: number) {
  log(`group of ${size}: building`);
  const w = world();
  const devices = [];
  for (let i = 0; i < size + 1; i++) devices.push(await w.device(`member_${i}`));
  const [creator, observer, ...others] = devices.slice(0, size);
  const newcomer = devices[size];
  const base = await createMlsGroup({ keyPackage: creator.publicPackage, privatePackage: creator.privatePackage, clientConfig: w.strict });
  const setup = await addMembers({ state: base, keyPackages: [observer, ...others].map((d) => d.publicPackage) });
  const creatorState = acceptPendingCommit(setup);
  const observerState = await joinFromWelcome({
    welcome: setup.welcome!, keyPackage: observer.publicPackage, privatePackage: observer.privatePackage, joinConfig: w.lenient, memberConfig: w.strict,
  });

  const add = await timeReps(`n=${size} commit adding one`, () => copyOf(creatorState), (state) => addMembers({ state, keyPackages: [newcomer.publicPackage] }));
  const addPending = await addMembers({ state: copyOf(creatorState), keyPackages: [newcomer.publicPackage] });
  const addProcess = await timeReps(`n=${size} member processes the add`, () => copyOf(observerState), async (state) => {
    const r = await processIncomingMessage({ state, message: addPending.commit });
    if (r.kind !== "commit") throw new Error("add not processed");
  });
  const join = await timeReps(`n=${size} join from the Welcome`, () => undefined, () =>
    joinFromWelcome({
      welcome: addPending.welcome!, keyPackage: newcomer.publicPackage, privatePackage: newcomer.privatePackage, joinConfig: w.lenient, memberConfig: w.strict,
    }),
  );
  // Remove the last member other than the observer (for n = 2, the observer itself: the group shrinks to one).
  const members = groupMembers(creatorState);
  const victim = members[members.length - 1].leafIndex;
  const remove = await timeReps(`n=${size} commit removing one`, () => copyOf(creatorState), (state) => removeMembers({ state, leafIndexes: [victim] }));
  const removePending = await removeMembers({ state: copyOf(creatorState), leafIndexes: [victim] });
  const removeProcess = await timeReps(`n=${size} member processes the remove`, () => copyOf(observerState), async (state) => {
    const r = await processIncomingMessage({ state, message: removePending.commit });
    if (r.kind !== "commit" && r.kind !== "removed") throw new Error("remove not processed");
  });
  return {
    members: size,
    add_commit_ms: round(add, 1),
    add_process_ms: round(addProcess, 1),
    welcome_bytes: addPending.welcome!.length,
    add_commit_bytes: addPending.commit.length,
    join_ms: round(join, 1),
    remove_commit_ms: round(remove, 1),
    remove_process_ms: round(removeProcess, 1),
    remove_commit_bytes: removePending.commit.length,
    state_bytes: encodeGroupState(creatorState).length,
  };
}

async function main() {
  const message = await perMessage();
  const groups = [];
  for (const size of [2, 10, 100].filter((n) => n <= opts["max-group"])) groups.push(await groupOf(size));
  result({
    bench: "mls",
    date: new Date().toISOString(),
    machine: machine(),
    cipher_suite: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
    batches: opts.batches,
    ops_per_batch: opts.ops,
    body_bytes: opts["body-bytes"],
    reps: opts.reps,
    ...message,
    groups,
  });
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});

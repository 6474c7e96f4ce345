import { expect } from "chai";
import { decodeGroupState, encodeGroupState, type ClientState } from "ts-mls";
import { ChatError } from "../../../protocol/errors";
import {
  acceptPendingCommit,
  addMembers,
  createEpochBuffer,
  createMlsGroup,
  groupMembers,
  processIncomingMessage,
  rejectPendingCommit,
  removeMembers,
  RETAINED_EPOCHS,
  selfUpdate,
} from "../../../protocol/mls";
import { createWorld, deliverCommit, receive, send, type Device, type Member } from "./fixture";

/** A group of `names` (all registered), created by the first. */
async function groupOf(world: ReturnType<typeof createWorld>, names: string[]): Promise<Member[]> {
  for (const name of names) world.register(name);
  const devices: Device[] = [];
  for (const name of names) devices.push(await world.device(name));
  const creator: Member = {
    device: devices[0],
    state: await createMlsGroup({ keyPackage: devices[0].publicPackage, privatePackage: devices[0].privatePackage, clientConfig: world.strict }),
  };
  const pending = await addMembers({ state: creator.state, keyPackages: devices.slice(1).map((d) => d.publicPackage) });
  return deliverCommit(world, [creator], creator, pending, devices.slice(1));
}

/** What a thief gets by copying a device's saved state (the serialised form, with the config re-attached). */
function copyOf(state: ClientState): ClientState {
  const [decoded] = decodeGroupState(encodeGroupState(state), 0)!;
  return { ...decoded, clientConfig: state.clientConfig };
}

/** Asserts `state` cannot read `message`; returns why (the refusal's message, or the result kind). */
async function expectUnreadable(state: ClientState, message: Uint8Array): Promise<string> {
  let result;
  try {
    result = await processIncomingMessage({ state, message });
  } catch (error) {
    expect(error).to.be.instanceOf(ChatError);
    return (error as ChatError).message;
  }
  expect(result.kind).to.not.equal("application");
  return result.kind;
}

describe("MLS security properties (in process)", function () {
  it("forward secrecy: a state saved some epochs later cannot open earlier captured ciphertexts", async function () {
    const world = createWorld();
    let [alice, bob] = await groupOf(world, ["alice", "bob"]);
    const captured = [await send(alice, "epoch one, first"), await send(alice, "epoch one, second")];
    for (const wire of captured) await receive(bob, wire);
    // Within the epoch, a message key is erased once used: the same state cannot open it twice.
    await expectUnreadable(copyOf(bob.state), captured[0]);

    // A message bob has not read yet stays readable for RETAINED_EPOCHS epochs (a late arrival)...
    const late = await send(alice, "late but in time");
    [alice, bob] = await deliverCommit(world, [alice, bob], alice, await selfUpdate({ state: alice.state }));
    expect(await receive(bob, late)).to.deep.equal({ body: "late but in time", from: "alice" });

    // ...and after more epochs than that, everything from epoch one is gone from the saved state.
    const stillLate = await send(bob, "never read");
    for (let i = 0; i < RETAINED_EPOCHS + 1; i++) {
      [alice, bob] = await deliverCommit(world, [alice, bob], bob, await selfUpdate({ state: bob.state }));
    }
    expect(alice.state.groupContext.epoch).to.equal(BigInt(RETAINED_EPOCHS + 3));
    const saved = copyOf(alice.state);
    for (const wire of [...captured, stillLate]) {
      expect(await expectUnreadable(copyOf(saved), wire)).to.match(/epoch [12] is no longer readable/);
    }
    // The saved state itself works: it reads the current epoch.
    expect(await receive({ device: alice.device, state: saved }, await send(bob, "now"))).to.deep.equal({ body: "now", from: "bob" });
  });

  it("a removed member cannot read what is sent after its removal, even when the relay hands it over", async function () {
    const world = createWorld();
    let members = await groupOf(world, ["alice", "bob", "carol"]);
    const [alice, , carol] = members;
    const carolBefore = copyOf(carol.state);
    const carolLeaf = groupMembers(alice.state).find((m) => m.username === "carol")!.leafIndex;
    const pending = await removeMembers({ state: alice.state, leafIndexes: [carolLeaf] });

    const removal = await processIncomingMessage({ state: carol.state, message: pending.commit });
    if (removal.kind !== "removed") expect.fail(`expected removal, got ${removal.kind}`);
    members = await deliverCommit(world, members.slice(0, 2), alice, pending);
    const secret = await send(members[0], "carol must not see this");
    expect(await receive(members[1], secret)).to.deep.equal({ body: "carol must not see this", from: "alice" });

    await expectUnreadable(removal.state, secret);
    await expectUnreadable(carolBefore, secret);
  });

  it("post-compromise security: a copied state cannot read after the victim's self-update", async function () {
    const world = createWorld();
    let [alice, bob] = await groupOf(world, ["alice", "bob"]);
    const thief: Member = { device: bob.device, state: copyOf(bob.state) };
    // The copy works until the victim heals.
    expect(await receive(thief, await send(alice, "before"))).to.deep.equal({ body: "before", from: "alice" });

    const update = await selfUpdate({ state: bob.state });
    [alice, bob] = await deliverCommit(world, [alice, bob], bob, update);
    const after = await send(alice, "after the update");
    expect(await receive(bob, after)).to.deep.equal({ body: "after the update", from: "alice" });

    // The thief sees the commit on the wire too, and still cannot follow into the new epoch.
    let thiefState = thief.state;
    try {
      const r = await processIncomingMessage({ state: thiefState, message: update.commit });
      if (r.kind === "commit") thiefState = r.state;
    } catch {
      // expected: a member cannot process its own commit from the outside
    }
    await expectUnreadable(thiefState, after);
  });

  it("a pending commit dropped on rejection leaves the state usable, and the change can be redone", async function () {
    const world = createWorld();
    let [alice, bob] = await groupOf(world, ["alice", "bob"]);
    world.register("carol");
    const carol = await world.device("carol");

    // Both commit in epoch 1; the relay accepts bob's first.
    const alicePending = await selfUpdate({ state: alice.state });
    const bobPending = await addMembers({ state: bob.state, keyPackages: [carol.publicPackage] });
    expect(alicePending.epoch).to.equal(1n);
    expect(bobPending.epoch).to.equal(1n);
    const lateInEpochOne = await send(bob, "sent before the race");

    alice.state = rejectPendingCommit(alicePending);
    expect(alice.state.groupContext.epoch).to.equal(1n);
    expect(await receive(alice, lateInEpochOne)).to.deep.equal({ body: "sent before the race", from: "bob" });
    let members = await deliverCommit(world, [alice, bob], bob, bobPending, [carol]);
    expect(members.map((m) => m.state.groupContext.epoch)).to.deep.equal([2n, 2n, 2n]);

    // alice retries on the new epoch.
    const retry = await selfUpdate({ state: members[0].state });
    members = await deliverCommit(world, members, members[0], retry);
    const wire = await send(members[0], "all in epoch 3");
    for (const m of members.slice(1)) expect(await receive(m, wire)).to.deep.equal({ body: "all in epoch 3", from: "alice" });
  });

  it("a message of epoch n+1 is buffered until its commit arrives", async function () {
    const world = createWorld();
    const [alice, bob] = await groupOf(world, ["alice", "bob"]);
    const update = await selfUpdate({ state: alice.state });
    alice.state = acceptPendingCommit(update);
    const early = await send(alice, "from epoch 2");

    const buffer = createEpochBuffer();
    const first = await processIncomingMessage({ state: bob.state, message: early });
    expect(first).to.deep.equal({ kind: "future-epoch", epoch: 2n });
    buffer.hold(early, first.kind === "future-epoch" ? first.epoch : 0n);
    expect(buffer.takeReady(bob.state.groupContext.epoch)).to.deep.equal([]);
    expect(buffer.size).to.equal(1);

    const commit = await processIncomingMessage({ state: bob.state, message: update.commit });
    if (commit.kind !== "commit") throw new Error("expected a commit");
    bob.state = commit.state;
    const ready = buffer.takeReady(bob.state.groupContext.epoch);
    expect(ready).to.have.length(1);
    expect(await receive(bob, ready[0])).to.deep.equal({ body: "from epoch 2", from: "alice" });
    expect(buffer.size).to.equal(0);
  });
});

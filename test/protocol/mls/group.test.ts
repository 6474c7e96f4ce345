import { expect } from "chai";
import {
  addMembers,
  createMlsGroup,
  groupMembers,
  removeMembers,
  type PendingCommit,
} from "../../../protocol/mls";
import { createWorld, deliverCommit, receive, send, type Member } from "./fixture";

describe("MLS groups (in process)", function () {
  it("a one-to-one group carries messages both ways, with the sender read from the leaf", async function () {
    const world = createWorld();
    world.register("alice");
    world.register("bob");
    const aliceDevice = await world.device("alice");
    const bobDevice = await world.device("bob");
    const alice: Member = {
      device: aliceDevice,
      state: await createMlsGroup({ keyPackage: aliceDevice.publicPackage, privatePackage: aliceDevice.privatePackage, clientConfig: world.strict }),
    };
    expect(alice.state.groupContext.groupId).to.have.length(32);
    const pending = await addMembers({ state: alice.state, keyPackages: [bobDevice.publicPackage] });
    expect(pending.welcome).to.be.instanceOf(Uint8Array);
    const [a, b] = await deliverCommit(world, [alice], alice, pending, [bobDevice]);
    expect(a.state.groupContext.epoch).to.equal(1n);
    expect(b.state.groupContext.epoch).to.equal(1n);
    expect(groupMembers(b.state).map((m) => m.username)).to.deep.equal(["alice", "bob"]);

    expect(await receive(b, await send(a, "hi bob"))).to.deep.equal({ body: "hi bob", from: "alice" });
    expect(await receive(a, await send(b, "hi alice"))).to.deep.equal({ body: "hi alice", from: "bob" });
    expect(await receive(a, await send(b, "again"))).to.deep.equal({ body: "again", from: "bob" });
  });

  it("a group grows to 3 then 10 members and shrinks again; every member reads every message", async function () {
    const world = createWorld();
    const names = Array.from({ length: 10 }, (_, i) => `user_${i}`);
    for (const name of names) world.register(name);
    const devices = await Promise.all(names.map((name) => world.device(name)));
    const creator: Member = {
      device: devices[0],
      state: await createMlsGroup({ keyPackage: devices[0].publicPackage, privatePackage: devices[0].privatePackage, clientConfig: world.strict }),
    };
    let members = await deliverCommit(
      world,
      [creator],
      creator,
      await addMembers({ state: creator.state, keyPackages: [devices[1].publicPackage, devices[2].publicPackage] }),
      devices.slice(1, 3),
    );
    expect(members).to.have.length(3);
    await everyoneReadsFrom(members, members[2], "three of us");

    // The third member (not the creator) adds the other seven.
    const adder = members[2];
    members = await deliverCommit(
      world,
      members,
      adder,
      await addMembers({ state: adder.state, keyPackages: devices.slice(3).map((d) => d.publicPackage) }),
      devices.slice(3),
    );
    expect(members).to.have.length(10);
    for (const m of members) expect(m.state.groupContext.epoch).to.equal(2n);
    expect(groupMembers(members[9].state).map((m) => m.username).sort()).to.deep.equal([...names].sort());
    await everyoneReadsFrom(members, members[7], "ten of us");

    // user_5 removes user_1 and user_8.
    const remover = members.find((m) => m.device.username === "user_5")!;
    const leaves = groupMembers(remover.state).filter((m) => ["user_1", "user_8"].includes(m.username)).map((m) => m.leafIndex);
    const pending: PendingCommit = await removeMembers({ state: remover.state, leafIndexes: leaves });
    members = await deliverCommit(world, members, remover, pending);
    expect(members.map((m) => m.device.username).sort()).to.deep.equal(names.filter((n) => n !== "user_1" && n !== "user_8").sort());
    expect(groupMembers(members[0].state)).to.have.length(8);
    await everyoneReadsFrom(members, members[3], "eight of us");
  });
});

async function everyoneReadsFrom(members: Member[], sender: Member, body: string): Promise<void> {
  const wire = await send(sender, body);
  for (const member of members) {
    if (member === sender) continue;
    expect(await receive(member, wire)).to.deep.equal({ body, from: sender.device.username });
  }
}

import { addMembers, createMlsGroup, openGroupState, sealGroupState } from "../../../protocol/mls";
import { createWorld, deliverCommit, receive, send } from "./fixture";
import { expect, expectThrownCode } from "../../helpers/chai";

describe("MLS group state at rest", function () {
  it("seals and opens a state that keeps working; the wrong key, another group or a changed byte fail", async function () {
    const world = createWorld();
    world.register("alice");
    world.register("bob");
    const aliceDevice = await world.device("alice");
    const bobDevice = await world.device("bob");
    const creator = {
      device: aliceDevice,
      state: await createMlsGroup({ keyPackage: aliceDevice.publicPackage, privatePackage: aliceDevice.privatePackage, clientConfig: world.strict }),
    };
    const [alice, bob] = await deliverCommit(world, [creator], creator, await addMembers({ state: creator.state, keyPackages: [bobDevice.publicPackage] }), [bobDevice]);
    await receive(bob, await send(alice, "before saving"));

    const key = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const groupId = bob.state.groupContext.groupId;
    const sealed = sealGroupState({ state: bob.state, key });
    // The plaintext state contains the member's signature private key; the sealed bytes must not.
    expect(Buffer.from(sealed).includes(Buffer.from(bob.state.signaturePrivateKey))).to.equal(false);

    const reopened = openGroupState({ sealed, key, groupId, clientConfig: world.strict });
    expect(reopened.clientConfig).to.equal(world.strict);
    expect(reopened.groupContext.epoch).to.equal(bob.state.groupContext.epoch);
    const restored = { device: bob.device, state: reopened };
    expect(await receive(restored, await send(alice, "after reopening"))).to.deep.equal({ body: "after reopening", from: "alice" });
    expect(await receive(alice, await send(restored, "reply from the reopened state"))).to.deep.equal({
      body: "reply from the reopened state",
      from: "bob",
    });

    const wrongKey = globalThis.crypto.getRandomValues(new Uint8Array(32));
    expectThrownCode(() => openGroupState({ sealed, key: wrongKey, groupId, clientConfig: world.strict }), "KEY_MISMATCH");
    const otherGroup = new Uint8Array(32).fill(7);
    expectThrownCode(() => openGroupState({ sealed, key, groupId: otherGroup, clientConfig: world.strict }), "KEY_MISMATCH");
    const tampered = sealed.slice();
    tampered[tampered.length - 20] ^= 1;
    expectThrownCode(() => openGroupState({ sealed: tampered, key, groupId, clientConfig: world.strict }), "KEY_MISMATCH");
    // A forged header naming another group id breaks the AAD even with the right key.
    const relabelled = sealed.slice();
    relabelled[2] ^= 1;
    const relabelledId = relabelled.subarray(2, 2 + relabelled[1]).slice();
    expectThrownCode(() => openGroupState({ sealed: relabelled, key, groupId: relabelledId, clientConfig: world.strict }), "KEY_MISMATCH");
    expectThrownCode(() => sealGroupState({ state: bob.state, key: new Uint8Array(16) }), "BAD_REQUEST");
  });
});

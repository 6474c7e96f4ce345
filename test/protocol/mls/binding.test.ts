import { Wallet } from "ethers";
import { defaultAuthenticationService } from "ts-mls";
import { ChatError } from "../../../protocol/errors";
import {
  addMembers,
  authorizeDevice,
  createMlsGroup,
  deviceAuthenticationService,
  generateDeviceKeyPackage,
  generateDeviceSignatureKey,
  joinFromWelcome,
  outdatedMembers,
  processIncomingMessage,
  removeMembers,
  ROTATION_GRACE_SECONDS,
} from "../../../protocol/mls";
import { CHAIN_ID, CONTRACT, createWorld, deliverCommit, receive, send, type Device, type Member } from "./fixture";
import { expect, expectRejectedCode } from "../../helpers/chai";

async function creatorOf(world: ReturnType<typeof createWorld>, name: string): Promise<Member> {
  world.register(name);
  const device = await world.device(name);
  return {
    device,
    state: await createMlsGroup({ keyPackage: device.publicPackage, privatePackage: device.privatePackage, clientConfig: world.strict }),
  };
}

async function expectRefusedAdd(member: Member, device: Device): Promise<void> {
  await expect(addMembers({ state: member.state, keyPackages: [device.publicPackage] }), "the add should have been refused").to.be.rejectedWith(Error, /credential/i);
}

describe("MLS device binding to the on-chain key", function () {
  it("refuses a key package authorised by another user's key", async function () {
    const world = createWorld();
    const alice = await creatorOf(world, "alice");
    world.register("bob");
    const mallory = world.register("mallory");
    const forged = await world.device("bob", { signer: mallory });
    await expectRefusedAdd(alice, forged);
    expect(world.refusals.at(-1)).to.match(/^KEY_MISMATCH/);
  });

  it("refuses a key package authorised by a key that a reset replaced, and accepts the new key's", async function () {
    const world = createWorld();
    const alice = await creatorOf(world, "alice");
    world.register("bob");
    const oldDevice = await world.device("bob");
    world.changeKey("bob", "reset");
    await expectRefusedAdd(alice, oldDevice);
    expect(world.refusals.at(-1)).to.match(/was reset/);
    const newDevice = await world.device("bob");
    expect(newDevice.keyIndex).to.equal(1);
    const pending = await addMembers({ state: alice.state, keyPackages: [newDevice.publicPackage] });
    expect(pending.welcome).to.be.instanceOf(Uint8Array);
  });

  it("refuses a bad signature, a malformed one, and a credential moved onto another device key", async function () {
    const world = createWorld();
    const alice = await creatorOf(world, "alice");
    const bobWallet = world.register("bob");

    // Signed by bob's real key, but over another device key: recovers an unrelated address.
    const signatureKey = await generateDeviceSignatureKey();
    const otherKey = await generateDeviceSignatureKey();
    const wrongText = await authorizeDevice({
      username: "bob", keyIndex: 0, chainId: CHAIN_ID, contract: CONTRACT, devicePublicKey: otherKey.publicKey,
      sign: (text) => bobWallet.signMessage(text),
    });
    const moved = await generateDeviceKeyPackage({ credential: wrongText, signatureKey, lifetimeSeconds: 3600 });
    await expectRefusedAdd(alice, { publicPackage: moved.publicPackage } as Device);
    expect(world.refusals.at(-1)).to.match(/^KEY_MISMATCH/);

    const garbage = await authorizeDevice({
      username: "bob", keyIndex: 0, chainId: CHAIN_ID, contract: CONTRACT, devicePublicKey: signatureKey.publicKey,
      sign: async () => `0x${"ab".repeat(65)}`,
    });
    const bad = await generateDeviceKeyPackage({ credential: garbage, signatureKey, lifetimeSeconds: 3600 });
    await expectRefusedAdd(alice, { publicPackage: bad.publicPackage } as Device);
    expect(world.refusals.at(-1)).to.match(/^(INVALID_SIGNATURE|KEY_MISMATCH)/);
  });

  it("every member refuses a commit that adds a forged device, even from a member that skipped its checks", async function () {
    const world = createWorld();
    const alice = await creatorOf(world, "alice");
    world.register("bob");
    const bobDevice = await world.device("bob");
    let [a, b] = await deliverCommit(world, [alice], alice, await addMembers({ state: alice.state, keyPackages: [bobDevice.publicPackage] }), [bobDevice]);
    world.register("carol");
    const forged = await world.device("carol", { signer: Wallet.createRandom() as unknown as Wallet });
    // alice's client is compromised: it adds without checking credentials.
    const careless = { ...a.state, clientConfig: { ...a.state.clientConfig, authService: defaultAuthenticationService } };
    const pending = await addMembers({ state: careless, keyPackages: [forged.publicPackage] });
    await expectRejectedCode(processIncomingMessage({ state: b.state, message: pending.commit }), "ENVELOPE_INVALID");
    // bob's state is untouched and still reads alice.
    expect(await receive(b, await send(a, "still here"))).to.deep.equal({ body: "still here", from: "alice" });
  });

  it("strict accepts a key replaced by a rotation only within the grace period; lenient accepts any past key", async function () {
    let now = Math.floor(Date.now() / 1000);
    const world = createWorld({ now: () => now });
    world.register("bob");
    const oldDevice = await world.device("bob");
    world.changeKey("bob", "rotated", now);
    const leaf = oldDevice.publicPackage.leafNode;
    const check = (policy: "strict" | "lenient") =>
      deviceAuthenticationService({ keyBook: world.keyBook, policy, chainId: CHAIN_ID, contract: CONTRACT, now: () => now })
        .validateCredential(leaf.credential, leaf.signaturePublicKey);
    expect(await check("strict")).to.equal(true);
    now += ROTATION_GRACE_SECONDS + 1;
    expect(await check("strict")).to.equal(false);
    expect(await check("lenient")).to.equal(true);
    // Another deployment's credential is refused by both.
    const elsewhere = deviceAuthenticationService({ keyBook: world.keyBook, policy: "lenient", chainId: 1n, contract: CONTRACT });
    expect(await elsewhere.validateCredential(leaf.credential, leaf.signaturePublicKey)).to.equal(false);
  });

  it("a commit read from the log is judged at the time the relay received it: before a reset it stands, after it not", async function () {
    const now = Math.floor(Date.now() / 1000);
    const world = createWorld({ now: () => now });
    world.register("bob");
    const oldDevice = await world.device("bob");
    world.changeKey("bob", "reset", now - 100);
    const leaf = oldDevice.publicPackage.leafNode;
    let receivedAt: number | undefined;
    const strict = deviceAuthenticationService({ keyBook: world.keyBook, policy: "strict", chainId: CHAIN_ID, contract: CONTRACT, now: () => now, judgedAt: () => receivedAt });
    const check = () => strict.validateCredential(leaf.credential, leaf.signaturePublicKey);
    expect(await check()).to.equal(false); // judged now: the key was reset
    receivedAt = now - 101; // made while the key was current: every member applies it alike
    expect(await check()).to.equal(true);
    receivedAt = now - 99; // after the reset: refused, as a thief's commit with the old key would be
    expect(await check()).to.equal(false);
  });

  it("a joiner accepts a tree whose existing leaves predate their owner's rotation (lenient join)", async function () {
    let now = Math.floor(Date.now() / 1000);
    const world = createWorld({ now: () => now });
    const alice = await creatorOf(world, "alice");
    world.register("bob");
    const bobDevice = await world.device("bob");
    let members = await deliverCommit(world, [alice], alice, await addMembers({ state: alice.state, keyPackages: [bobDevice.publicPackage] }), [bobDevice]);
    world.changeKey("alice", "rotated", now - 3600);
    world.register("carol");
    const carol = await world.device("carol");
    const pending = await addMembers({ state: members[1].state, keyPackages: [carol.publicPackage] });
    // Strict checks at join would refuse alice's leaf, authorised by her replaced key.
    await expect(
      joinFromWelcome({ welcome: pending.welcome!, keyPackage: carol.publicPackage, privatePackage: carol.privatePackage, joinConfig: world.strict, memberConfig: world.strict }),
    ).to.be.rejectedWith(ChatError);
    members = await deliverCommit(world, members, members[1], pending, [carol]);
    expect(await receive(members[2], await send(members[0], "old leaf, still alice"))).to.deep.equal({ body: "old leaf, still alice", from: "alice" });
  });

  it("after a reset on chain, the reset user's old leaves are found and removed; the new device re-joins", async function () {
    const world = createWorld();
    const alice = await creatorOf(world, "alice");
    world.register("bob");
    world.register("carol");
    const bobOld = await world.device("bob");
    const carol = await world.device("carol");
    let members = await deliverCommit(world, [alice], alice, await addMembers({ state: alice.state, keyPackages: [bobOld.publicPackage, carol.publicPackage] }), [bobOld, carol]);
    expect(await outdatedMembers({ state: members[0].state, authService: world.strict.authService })).to.deep.equal([]);

    world.changeKey("bob", "reset");
    const outdated = await outdatedMembers({ state: members[0].state, authService: world.strict.authService });
    expect(outdated.map((m) => m.username)).to.deep.equal(["bob"]);
    const bobNew = await world.device("bob");
    const pending = await removeMembers({ state: members[0].state, leafIndexes: outdated.map((m) => m.leafIndex) });
    members = await deliverCommit(world, members, members[0], pending);
    members = await deliverCommit(world, members, members[1], await addMembers({ state: members[1].state, keyPackages: [bobNew.publicPackage] }), [bobNew]);
    expect(await receive(members[2], await send(members[0], "welcome back"))).to.deep.equal({ body: "welcome back", from: "alice" });
    expect(members[2].device.keyIndex).to.equal(1);
  });
});

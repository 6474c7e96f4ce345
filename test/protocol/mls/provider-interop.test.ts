import { Wallet } from "ethers";
import { expect } from "../../helpers/chai";
import {
  createApplicationMessage,
  createCommit,
  decodeMlsMessage,
  defaultCryptoProvider,
  emptyPskIndex,
  encodeMlsMessage,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  processPrivateMessage,
  type CiphersuiteImpl,
  type ClientState,
} from "ts-mls";
import {
  addMembers,
  authorizeDevice,
  createMlsGroup,
  decodeApplicationPayload,
  encodeApplicationPayload,
  generateDeviceKeyPackage,
  MLS_CIPHER_SUITE_NAME,
  newPayloadId,
  openGroupState,
  sealGroupState,
} from "../../../protocol/mls";
import { CHAIN_ID, CONTRACT, createWorld, deliverCommit, receive, send, type Device, type Member } from "./fixture";

/**
 * The project's crypto provider (protocol/mls/suite.ts) replaces the library's hash, KDF and signature
 * with faster equivalents. A device still running the library's default, or a state written by one,
 * must keep working with it: these tests cross the two in both directions on real groups.
 */
describe("MLS crypto provider interop with the library's default", function () {
  this.timeout(60_000);
  let library: CiphersuiteImpl;
  before(async function () {
    library = await getCiphersuiteImpl(getCiphersuiteFromName(MLS_CIPHER_SUITE_NAME), defaultCryptoProvider);
  });

  /** Seals `body` for the group with the library's default provider, as an older client would. */
  async function sealWithLibrary(member: Member, body: string): Promise<Uint8Array> {
    const payload = encodeApplicationPayload({ id: newPayloadId(), sentAt: Date.now(), body });
    const result = await createApplicationMessage(member.state, payload, library);
    member.state = result.newState;
    return encodeMlsMessage({ version: "mls10", wireformat: "mls_private_message", privateMessage: result.privateMessage });
  }

  /** Opens `message` with the library's default provider; returns the body. */
  async function openWithLibrary(member: Member, message: Uint8Array): Promise<string> {
    const decoded = decodeMlsMessage(message, 0)![0];
    if (decoded.wireformat !== "mls_private_message") throw new Error("not a private message");
    const result = await processPrivateMessage(member.state, decoded.privateMessage, emptyPskIndex, library);
    if (result.kind !== "applicationMessage") throw new Error(`expected an application message, got ${result.kind}`);
    member.state = result.newState;
    return decodeApplicationPayload(result.message).body;
  }

  it("application messages sealed by either provider open with the other", async function () {
    const world = createWorld();
    world.register("alice");
    world.register("bob");
    const aliceDevice = await world.device("alice");
    const bobDevice = await world.device("bob");
    const alice: Member = {
      device: aliceDevice,
      state: await createMlsGroup({ keyPackage: aliceDevice.publicPackage, privatePackage: aliceDevice.privatePackage, clientConfig: world.strict }),
    };
    const [a, b] = await deliverCommit(world, [alice], alice, await addMembers({ state: alice.state, keyPackages: [bobDevice.publicPackage] }), [bobDevice]);

    for (let i = 0; i < 3; i++) {
      expect(await receive(b, await sealWithLibrary(a, `library to ours ${i}`))).to.deep.equal({ body: `library to ours ${i}`, from: "alice" });
      expect(await openWithLibrary(a, await send(b, `ours to library ${i}`))).to.equal(`ours to library ${i}`);
    }
    // Either side's own provider still reads it after the crossings (the ratchets stayed in step).
    expect(await receive(a, await send(b, "ours again"))).to.deep.equal({ body: "ours again", from: "bob" });
  });

  it("a commit made with the library's default is processed with ours, and a saved state moves between them", async function () {
    const world = createWorld();
    for (const name of ["alice", "bob", "carol"]) world.register(name);
    const aliceDevice = await world.device("alice");
    const bobDevice = await world.device("bob");
    // Carol's device key comes from the library's own key generation (a PKCS#8 key from its WebCrypto path).
    const carolKey = await library.signature.keygen();
    const carolWallet = Wallet.createRandom();
    world.keyBook.append("carol", { address: carolWallet.address, kind: "rotated", timestamp: Math.floor(Date.now() / 1000) });
    const carolCredential = await authorizeDevice({
      username: "carol", keyIndex: 1, chainId: CHAIN_ID, contract: CONTRACT, devicePublicKey: carolKey.publicKey,
      sign: (text) => carolWallet.signMessage(text),
    });
    const carolPackage = await generateDeviceKeyPackage({ credential: carolCredential, signatureKey: carolKey, lifetimeSeconds: 3600 });

    const alice: Member = {
      device: aliceDevice,
      state: await createMlsGroup({ keyPackage: aliceDevice.publicPackage, privatePackage: aliceDevice.privatePackage, clientConfig: world.strict }),
    };
    let [a, b] = await deliverCommit(world, [alice], alice, await addMembers({ state: alice.state, keyPackages: [bobDevice.publicPackage] }), [bobDevice]);

    // Alice commits the add of Carol with the library's default provider; Bob processes it with ours.
    const commit = await createCommit(
      { state: a.state, cipherSuite: library },
      { extraProposals: [{ proposalType: "add", add: { keyPackage: carolPackage.publicPackage } }], ratchetTreeExtension: true },
    );
    const pending = {
      current: a.state,
      next: commit.newState,
      commit: encodeMlsMessage(commit.commit),
      welcome: encodeMlsMessage({ version: "mls10", wireformat: "mls_welcome", welcome: commit.welcome! }),
      epoch: a.state.groupContext.epoch,
      consumed: commit.consumed,
    };
    const carolDevice: Device = {
      username: "carol", keyIndex: 1, signatureKey: carolKey, credential: carolCredential, ...carolPackage,
      newKeyPackage: () => generateDeviceKeyPackage({ credential: carolCredential, signatureKey: carolKey, lifetimeSeconds: 3600 }),
    };
    const members = await deliverCommit(world, [a, b], a, pending, [carolDevice]);
    [a, b] = members;
    const c = members[2];
    expect(c.state.groupContext.epoch).to.equal(2n);
    expect(await receive(b, await send(c, "carol signs with a library-made key"))).to.deep.equal({ body: "carol signs with a library-made key", from: "carol" });
    expect(await openWithLibrary(a, await send(b, "bob to alice"))).to.equal("bob to alice");

    // A state saved by a process on our provider is loaded and used with the library's, and back.
    const key = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const reload = (state: ClientState) =>
      openGroupState({ sealed: sealGroupState({ state, key }), key, groupId: state.groupContext.groupId, clientConfig: world.strict });
    a.state = reload(a.state);
    c.state = reload(c.state);
    expect(await receive(c, await sealWithLibrary(a, "after a reload"))).to.deep.equal({ body: "after a reload", from: "alice" });
    expect(await openWithLibrary(a, await send(c, "and back"))).to.equal("and back");
  });
});
